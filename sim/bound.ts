// The liveness bound of a run, derived from the job and the step model rather than fixed.
//
//   bound = SLACK + T_job (+ one recurrence period for a recurring job)
//
//   T_job = Σ_g T_g for sequential groups, max_g T_g for parallel ones, where for group g of
//   n nodes with batch size k (batchSizeFor), L = ceil(n / k) turns and H the hand-off time:
//     ungated (k ≥ n):  T_g = Q(1 - 1e-4) + H
//     batching:         T_g = L · (Q(1 - 1e-3) + H)        (each batch waits for its slowest run)
//     rolling:          T_g = L · (μ + H) + 5 σ √L, at least Q(1 - 1e-4) + H
//                        (each of the k slots runs ~L runs in series: the sum concentrates)
//   each capped by the group's time budget: T_g ≤ timeoutSeconds_g + H (past it the waiting
//   nodes skip, and the skips still have to be reported).
//
//   μ, σ and Q(p) are the mean, standard deviation and quantiles of ONE run's duration under
//   the step model, including every retry and its backoff: a fixed-seed Monte Carlo of
//   RUN_SAMPLES runs (attempt durations log-normal(median, σ) capped at the step timeout, each
//   attempt failing with probability failure_rate, retries per the step's retryCount and
//   backoff, the run stopping at a failed step unless it is retryThenIgnore). The draws use
//   their own PRNG: computing the bound does not change the world's trace.
//
//   H = HANDOFF_MS: a done reaching the next node: the result reaching the coordinator, which
//   answers the next node's held watch; when that watch was lost, its resend (WATCH_RETRY_MS = 15 s).
//   SLACK = BASE_SLACK_MS: everything that is not the job: agents redialling (≤ 10 s), result
//   resends backing off to 30 s, the periodic sync (60 s), a coordinator restart. It is the
//   fixed bound the simulator used before, which small ungated jobs always met.
import { backoffDelayMs, batchSizeFor } from '../protocol/rollout.js'
import { nextOccurrences, parseScheduleRule } from '../protocol/schedule.js'
import type { JobTemplate } from '../protocol/template.js'
import { Prng } from './prng.js'
import type { StepModel } from './world.js'

export const BASE_SLACK_MS = 300_000
export const HANDOFF_MS = 20_000
export const RUN_SAMPLES = 20_000

export interface RunStats { mean: number; sd: number; q999: number; q9999: number }

export interface LivenessBound {
  ms: number
  formula: string
  groups: { nodes: number; batch: number; method: string; turns: number; ms: number; capped: boolean }[]
  run: RunStats
}

/** Duration statistics of one run of `template` under `model`, from a fixed-seed Monte Carlo. */
export function runStats(template: JobTemplate, model: StepModel): RunStats {
  const prng = new Prng(0x5eed)
  const samples = new Float64Array(RUN_SAMPLES)
  const steps = template.actions.steps
  for (let i = 0; i < RUN_SAMPLES; i++) {
    let t = 0
    for (const step of steps) {
      const timeout = (step.limits?.timeoutSeconds ?? 0) * 1000
      let ok = false
      for (let attempt = 1; attempt <= step.retryCount + 1; attempt++) {
        t += backoffDelayMs(step.failureBehavior.retryBackoffStrategy, attempt)
        let d = prng.logNormal(model.duration_ms_median, model.duration_sigma)
        const failed = prng.chance(model.failure_rate) || (timeout > 0 && d > timeout)
        if (timeout > 0) d = Math.min(d, timeout)
        t += d
        if (!failed) { ok = true; break }
      }
      if (!ok && step.failureBehavior.action !== 'retryThenIgnore') break
    }
    samples[i] = t
  }
  samples.sort()
  let sum = 0
  for (const x of samples) sum += x
  const mean = sum / RUN_SAMPLES
  let v = 0
  for (const x of samples) v += (x - mean) ** 2
  const q = (p: number) => samples[Math.min(RUN_SAMPLES - 1, Math.floor(p * RUN_SAMPLES))]!
  return { mean, sd: Math.sqrt(v / RUN_SAMPLES), q999: q(0.999), q9999: q(0.9999) }
}

/** The bound for `template` when its groups hold `groupSizes` nodes. */
export function livenessBound(template: JobTemplate, model: StepModel, groupSizes: number[]): LivenessBound {
  const run = runStats(template, model)
  const groups = template.target.groups.map((g, i) => {
    const n = Math.max(1, groupSizes[i] ?? 1)
    const k = batchSizeFor(g.batchSize, n)
    const turns = Math.ceil(n / k)
    let ms: number
    const ungated = k >= n && template.target.executionType !== 'sequential' && !template.chorus?.quorum
    if (k >= n) ms = run.q9999 + HANDOFF_MS
    else if (g.distributionMethod === 'batching') ms = turns * (run.q999 + HANDOFF_MS)
    else ms = Math.max(run.q9999 + HANDOFF_MS, turns * (run.mean + HANDOFF_MS) + 5 * run.sd * Math.sqrt(turns))
    const cap = g.timeoutSeconds * 1000 + HANDOFF_MS
    const capped = ms > cap
    void ungated
    return { nodes: n, batch: k, method: k >= n ? 'all at once' : g.distributionMethod, turns, ms: Math.min(ms, cap), capped }
  })
  const job = template.target.executionType === 'sequential' ? groups.reduce((a, g) => a + g.ms, 0) : Math.max(0, ...groups.map((g) => g.ms))
  let period = 0
  if (template.scheduleRule !== 'immediate') {
    const parsed = parseScheduleRule(template.scheduleRule, { defaultStartMs: 0 })
    if (parsed.ok) {
      const [a, b] = nextOccurrences(parsed.schedule, 1_700_000_000_000, 2)
      if (a !== undefined && b !== undefined) period = b - a
    }
  }
  const quorum = template.chorus?.quorum ? (template.chorus.quorumTimeoutSeconds ?? 30) * 1000 : 0
  const ms = Math.round(BASE_SLACK_MS + quorum + job + period)
  const formula = `${BASE_SLACK_MS / 1000} s slack + ${template.target.executionType === 'sequential' ? 'sum' : 'max'} over groups of min(timeout + H, turns × per-turn quantile + H) ` +
    `[run: mean ${(run.mean / 1000).toFixed(1)} s, sd ${(run.sd / 1000).toFixed(1)} s, q99.9 ${(run.q999 / 1000).toFixed(1)} s, q99.99 ${(run.q9999 / 1000).toFixed(1)} s; H ${HANDOFF_MS / 1000} s; ` +
    `groups ${groups.map((g) => `${g.nodes} nodes ${g.method} ${g.batch} → ${g.turns} turns ${(g.ms / 1000).toFixed(0)} s${g.capped ? ' (time budget)' : ''}`).join(', ')}]` +
    `${quorum ? ` + quorum timeout ${quorum / 1000} s` : ''}${period ? ` + one recurrence period ${period / 1000} s` : ''}`
  return { ms, formula, groups, run }
}
