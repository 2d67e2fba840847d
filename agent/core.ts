// The agent core: a deterministic state machine. `agentStep(state, event, now)` updates the
// state it is given and returns the effects the runtime must carry out, in order. The core
// never reads a clock, a timer, randomness, the network or the disk: the runtime (and sim/)
// feed it events and the time, and carry out its effects. The state object is owned by the
// caller and updated in place (copying a 10,000-agent simulation on every event would cost
// more than it proves); the same (state, event, now) always yields the same state and effects.
import type { Identity } from '../protocol/keys.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { backoffDelayMs, batchSizeFor } from '../protocol/rollout.js'
import {
  MAX_OUTPUT_VALUE_CHARS, MAX_REASON_CHARS, MAX_STEP_OUTPUT_CHARS, PROTOCOL_VERSION, open, seal,
  type JobBody, type ResultBody, type SignedEnvelope, type StepOutcome,
} from '../protocol/wire.js'

export type Os = 'linux' | 'darwin' | 'windows'

export interface AgentConfig {
  nodeId: string
  /** The only key whose job definitions and replies this agent accepts. */
  coordinatorKey: string
  /** Signs this agent's results and hellos (ed25519 signatures are deterministic). */
  identity: Identity
  os: Os
  /** First resend delay for an unacknowledged result; doubles up to resendMaxMs. */
  resendInitialMs: number
  resendMaxMs: number
  /** Job definitions are kept this long after they expire, then forgotten. */
  jobRetentionMs: number
}

export const DEFAULT_AGENT_TIMING = {
  resendInitialMs: 1_000,
  resendMaxMs: 30_000,
  jobRetentionMs: 24 * 3_600_000,
} as const

/** A run of one job instance on this node, as persisted under `run/<runId>`. */
export interface AgentRun {
  runId: string
  jobId: string
  instanceId: string
  group: number
  batch: number
  status: 'running' | 'success' | 'failure'
  startedAt: number
  finishedAt?: number
  reason?: string
  /** Index into the template's steps of the step being executed. */
  stepIndex: number
  /** Attempt number of that step, from 1. */
  attempt: number
  /**
   * True from the moment the attempt is handed to the runtime until its result is recorded.
   * It is persisted before the attempt starts: an agent that restarts and finds it set knows
   * the attempt may have run and records it as failed instead of running it again.
   */
  inFlight: boolean
  steps: StepOutcome[]
}

export interface OutboxEntry {
  runId: string
  envelope: SignedEnvelope
  nextSendAt: number
  intervalMs: number
}

export interface KnownJob {
  body: JobBody
  envelope: SignedEnvelope
}

export interface AgentState {
  jobs: Map<string, KnownJob>
  runs: Map<string, AgentRun>
  /** Results stored locally and re-sent until the coordinator acknowledges them. */
  outbox: Map<string, OutboxEntry>
}

export interface StepAttemptResult {
  status: 'success' | 'failure'
  exitCode: number | null
  stdout: string
  stderr: string
  reason?: string
}

export type AgentEvent =
  | { type: 'job'; envelope: unknown; via: 'gossip' | 'sync' }
  | { type: 'step_done'; runId: string; stepNumber: number; attempt: number; result: StepAttemptResult }
  /** A signed reply from the coordinator (acks, jobs to sync). */
  | { type: 'reply'; envelope: unknown }
  /** The coordinator became reachable: resend everything now and ask for missed jobs. */
  | { type: 'connected' }
  | { type: 'tick' }

export interface StepRunRequest {
  runId: string
  jobId: string
  stepNumber: number
  attempt: number
  interpreter: string
  command: unknown
  inputs: Record<string, string>
  os: Os
  /** 0 means no limit. */
  timeoutMs: number
}

export type AgentEffect =
  | { type: 'persist'; puts: { key: string; value: unknown }[]; dels: string[] }
  | { type: 'run_step'; notBefore: number; request: StepRunRequest }
  | { type: 'send'; kind: 'result'; runId: string; envelope: SignedEnvelope }
  | { type: 'send'; kind: 'sync'; envelope: SignedEnvelope }
  | { type: 'log'; level: 'debug' | 'info' | 'warn'; msg: string; fields?: Record<string, unknown> }

export function emptyAgentState(): AgentState {
  return { jobs: new Map(), runs: new Map(), outbox: new Map() }
}

const key = {
  job: (id: string) => `job/${id}`,
  run: (id: string) => `run/${id}`,
  outbox: (id: string) => `outbox/${id}`,
}

/**
 * Rebuilds the state from persisted records. An attempt that was in flight when the agent
 * stopped is recorded as failed, never run again (at most once per (instance, step, attempt));
 * the step's retry policy then decides what happens next.
 */
export function restoreAgent(records: Iterable<[string, unknown]>, config: AgentConfig, now: number): { state: AgentState; effects: AgentEffect[] } {
  const state = emptyAgentState()
  for (const [k, v] of records) {
    if (k.startsWith('job/')) {
      const job = v as KnownJob
      state.jobs.set(job.body.jobId, job)
    } else if (k.startsWith('run/')) {
      const run = v as AgentRun
      state.runs.set(run.runId, run)
    } else if (k.startsWith('outbox/')) {
      const entry = v as OutboxEntry
      state.outbox.set(entry.runId, { ...entry, nextSendAt: now, intervalMs: config.resendInitialMs })
    }
  }
  const effects: AgentEffect[] = []
  for (const run of state.runs.values()) {
    if (run.status !== 'running') continue
    const job = state.jobs.get(run.jobId)
    if (!job) {
      finishRun(state, config, run, 'failure', now, effects, 'job definition lost')
      continue
    }
    if (run.inFlight) {
      effects.push({ type: 'log', level: 'warn', msg: 'attempt interrupted by agent restart; recorded as failed, not run again', fields: { runId: run.runId, step: run.stepIndex + 1, attempt: run.attempt } })
      recordAttempt(state, config, job, run, {
        status: 'failure', exitCode: null, stdout: '', stderr: '',
        reason: 'agent restarted while this attempt was running; not run again (at most once)',
      }, now, effects)
    } else {
      effects.push(...attemptEffects(config, job, run, now, now))
    }
  }
  return { state, effects }
}

export function agentStep(state: AgentState, config: AgentConfig, event: AgentEvent, now: number): AgentEffect[] {
  const effects: AgentEffect[] = []
  switch (event.type) {
    case 'job':
      onJob(state, config, event.envelope, event.via, now, effects)
      break
    case 'step_done': {
      const run = state.runs.get(event.runId)
      const job = run && state.jobs.get(run.jobId)
      if (!run || !job || run.status !== 'running' || !run.inFlight || run.stepIndex + 1 !== event.stepNumber || run.attempt !== event.attempt) {
        effects.push({ type: 'log', level: 'warn', msg: 'ignoring a step result that matches no attempt in flight', fields: { runId: event.runId, step: event.stepNumber, attempt: event.attempt } })
        break
      }
      recordAttempt(state, config, job, run, event.result, now, effects)
      break
    }
    case 'reply':
      onReply(state, config, event.envelope, now, effects)
      break
    case 'connected':
      for (const entry of state.outbox.values()) {
        entry.nextSendAt = now + entry.intervalMs
        effects.push({ type: 'send', kind: 'result', runId: entry.runId, envelope: entry.envelope })
      }
      effects.push({ type: 'send', kind: 'sync', envelope: seal(config.identity, { type: 'sync', v: PROTOCOL_VERSION, nodeId: config.nodeId, sentAt: now }) })
      break
    case 'tick':
      for (const entry of state.outbox.values()) {
        if (entry.nextSendAt > now) continue
        entry.intervalMs = Math.min(config.resendMaxMs, entry.intervalMs * 2)
        entry.nextSendAt = now + entry.intervalMs
        effects.push({ type: 'send', kind: 'result', runId: entry.runId, envelope: entry.envelope })
      }
      pruneJobs(state, config, now, effects)
      break
  }
  return effects
}

function onJob(state: AgentState, config: AgentConfig, envelope: unknown, via: string, now: number, effects: AgentEffect[]): void {
  const opened = open(envelope, [config.coordinatorKey])
  if (!opened.ok) {
    effects.push({ type: 'log', level: 'warn', msg: `refused job message: ${opened.reason}`, fields: { via } })
    return
  }
  if (opened.body.type !== 'job') {
    effects.push({ type: 'log', level: 'warn', msg: `refused message on the job path: type ${opened.body.type}`, fields: { via } })
    return
  }
  const body = opened.body
  if (state.jobs.has(body.jobId)) {
    effects.push({ type: 'log', level: 'debug', msg: 'job already known (duplicate or replay); ignored', fields: { jobId: body.jobId, via } })
    return
  }
  if (body.expiresAt <= now) {
    effects.push({ type: 'log', level: 'warn', msg: 'refused stale job definition (past its expiry)', fields: { jobId: body.jobId, expiresAt: body.expiresAt, via } })
    return
  }
  const job: KnownJob = { body, envelope: envelope as SignedEnvelope }
  state.jobs.set(body.jobId, job)
  const puts: { key: string; value: unknown }[] = [{ key: key.job(body.jobId), value: job }]

  const group = body.resolved.groups.findIndex((g) => g.nodes.includes(config.nodeId))
  if (group < 0) {
    effects.push({ type: 'persist', puts, dels: [] })
    effects.push({ type: 'log', level: 'info', msg: 'job accepted; this node is not targeted', fields: { jobId: body.jobId, via } })
    return
  }
  const instanceId = instanceIdFor(body.jobId, body.issuedAt)
  const runId = runIdFor(instanceId, config.nodeId)
  if (state.runs.has(runId)) {
    effects.push({ type: 'persist', puts, dels: [] })
    return
  }
  const groupSpec = body.template.target.groups[group]!
  const members = body.resolved.groups[group]!.nodes
  const batch = Math.floor(members.indexOf(config.nodeId) / batchSizeFor(groupSpec.batchSize, members.length))
  const run: AgentRun = {
    runId, jobId: body.jobId, instanceId, group, batch,
    status: 'running', startedAt: now, stepIndex: 0, attempt: 1, inFlight: true, steps: [],
  }
  state.runs.set(runId, run)
  puts.push({ key: key.run(runId), value: run })
  effects.push({ type: 'persist', puts, dels: [] })
  effects.push({ type: 'log', level: 'info', msg: 'job accepted; run started', fields: { jobId: body.jobId, runId, group, batch, via } })
  effects.push(...attemptEffects(config, job, run, now, now))
}

/** The effects that start the current attempt of `run`; the caller has persisted inFlight. */
function attemptEffects(config: AgentConfig, job: KnownJob, run: AgentRun, notBefore: number, now: number): AgentEffect[] {
  const template = job.body.template
  const step = template.actions.steps[run.stepIndex]!
  const groupTimeoutMs = template.target.groups[run.group]!.timeoutSeconds * 1000
  const stepTimeoutMs = (step.limits?.timeoutSeconds ?? 0) * 1000
  const timeoutMs = stepTimeoutMs > 0 ? Math.min(stepTimeoutMs, groupTimeoutMs || stepTimeoutMs) : groupTimeoutMs
  const inputs: Record<string, string> = {}
  for (const [k, v] of Object.entries(step.inputs ?? {})) inputs[k] = String(v)
  void now
  return [{
    type: 'run_step',
    notBefore,
    request: {
      runId: run.runId, jobId: run.jobId, stepNumber: run.stepIndex + 1, attempt: run.attempt,
      interpreter: step.interpreter.name, command: step.command, inputs, os: config.os, timeoutMs,
    },
  }]
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : text.slice(text.length - max)
}

function recordAttempt(state: AgentState, config: AgentConfig, job: KnownJob, run: AgentRun, result: StepAttemptResult, now: number, effects: AgentEffect[]): void {
  const steps = job.body.template.actions.steps
  const step = steps[run.stepIndex]!
  const outcome: StepOutcome = {
    number: run.stepIndex + 1,
    name: step.name.slice(0, 256),
    status: result.status,
    attempts: run.attempt,
    exitCode: result.exitCode,
    outputs: {},
    stdout: clip(result.stdout, MAX_STEP_OUTPUT_CHARS),
    stderr: clip(result.stderr, MAX_STEP_OUTPUT_CHARS),
    ...(result.reason ? { reason: result.reason.slice(0, MAX_REASON_CHARS) } : {}),
    finishedAt: now,
  }
  void MAX_OUTPUT_VALUE_CHARS
  run.inFlight = false
  if (result.status === 'failure' && run.attempt <= step.retryCount) {
    // Retry: a new attempt number, so at-most-once per (instance, step, attempt) still holds.
    run.attempt += 1
    run.inFlight = true
    const delay = backoffDelayMs(step.failureBehavior.retryBackoffStrategy, run.attempt)
    run.steps[run.stepIndex] = outcome
    effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }], dels: [] })
    effects.push({ type: 'log', level: 'info', msg: 'step attempt failed; retrying', fields: { runId: run.runId, step: outcome.number, nextAttempt: run.attempt, delayMs: delay, reason: result.reason } })
    effects.push(...attemptEffects(config, job, run, now + delay, now))
    return
  }
  run.steps[run.stepIndex] = outcome
  const ignored = result.status === 'failure' && step.failureBehavior.action === 'retryThenIgnore'
  if (result.status === 'failure' && !ignored) {
    for (let i = run.stepIndex + 1; i < steps.length; i++) {
      run.steps[i] = { number: i + 1, name: steps[i]!.name.slice(0, 256), status: 'not_run', attempts: 0, exitCode: null, outputs: {}, stdout: '', stderr: '', reason: `step ${outcome.number} failed` }
    }
    finishRun(state, config, run, 'failure', now, effects, `step ${outcome.number} (${step.name}) failed: ${result.reason ?? 'exit code ' + String(result.exitCode)}`)
    return
  }
  if (run.stepIndex + 1 < steps.length) {
    run.stepIndex += 1
    run.attempt = 1
    run.inFlight = true
    effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }], dels: [] })
    effects.push(...attemptEffects(config, job, run, now, now))
    return
  }
  finishRun(state, config, run, 'success', now, effects)
}

function finishRun(state: AgentState, config: AgentConfig, run: AgentRun, status: 'success' | 'failure', now: number, effects: AgentEffect[], reason?: string): void {
  run.status = status
  run.finishedAt = now
  run.inFlight = false
  if (reason) run.reason = reason.slice(0, MAX_REASON_CHARS)
  const body: ResultBody = {
    type: 'result', v: PROTOCOL_VERSION, runId: run.runId, jobId: run.jobId, instanceId: run.instanceId,
    nodeId: config.nodeId, group: run.group, batch: run.batch, status,
    ...(run.reason ? { reason: run.reason } : {}),
    startedAt: run.startedAt, finishedAt: now, steps: run.steps,
  }
  const envelope = seal(config.identity, body)
  const entry: OutboxEntry = { runId: run.runId, envelope, nextSendAt: now + config.resendInitialMs, intervalMs: config.resendInitialMs }
  state.outbox.set(run.runId, entry)
  // The result is durable before it is sent: a crash after this point re-sends it on restart.
  effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }, { key: key.outbox(run.runId), value: entry }], dels: [] })
  effects.push({ type: 'log', level: 'info', msg: `run finished: ${status}`, fields: { runId: run.runId, jobId: run.jobId, reason: run.reason } })
  effects.push({ type: 'send', kind: 'result', runId: run.runId, envelope })
}

function onReply(state: AgentState, config: AgentConfig, envelope: unknown, now: number, effects: AgentEffect[]): void {
  const opened = open(envelope, [config.coordinatorKey])
  if (!opened.ok || opened.body.type !== 'reply') {
    effects.push({ type: 'log', level: 'warn', msg: `refused reply: ${opened.ok ? 'type ' + opened.body.type : opened.reason}` })
    return
  }
  const reply = opened.body
  const dels: string[] = []
  for (const runId of reply.ackRunIds) {
    if (state.outbox.delete(runId)) dels.push(key.outbox(runId))
  }
  if (dels.length > 0) effects.push({ type: 'persist', puts: [], dels })
  if (!reply.ok) effects.push({ type: 'log', level: 'warn', msg: `coordinator refused a request: ${reply.error ?? 'no reason given'}` })
  for (const job of reply.jobs) onJob(state, config, job, 'sync', now, effects)
}

function pruneJobs(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  const dels: string[] = []
  for (const [jobId, job] of state.jobs) {
    if (job.body.expiresAt + config.jobRetentionMs > now) continue
    const runsOpen = [...state.runs.values()].some((r) => r.jobId === jobId && (r.status === 'running' || state.outbox.has(r.runId)))
    if (runsOpen) continue
    state.jobs.delete(jobId)
    dels.push(key.job(jobId))
    for (const [runId, run] of state.runs) {
      if (run.jobId === jobId) {
        state.runs.delete(runId)
        dels.push(key.run(runId))
      }
    }
  }
  if (dels.length > 0) effects.push({ type: 'persist', puts: [], dels })
}
