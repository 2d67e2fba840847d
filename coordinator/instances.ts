// Instances in memory: a job's history counts, the tick (acks written, occurrences due, watches
// expired, release and quorum windows, deadlines), finished instances written and dropped, and
// retention's pruning.
import { nextOccurrences } from '../protocol/schedule.js'
import { tickOccurrences } from './jobs.js'
import { setRunStatus, settleInstance } from './results.js'
import { type CoordinatorConfig, type CoordinatorEffect, type CoordinatorEvent, type CoordinatorState, type InstanceRecord, type InstanceStatus, type JobHistory, type JobRecord, type RunRecord, TERMINAL } from './state.js'
import { AUDIT_PREFIX, IDX, historyKeysOf, key } from './storekeys.js'
import { answerWatcher, failQuorum, quorumOf, releaseVanished, wake } from './tally.js'
import { expired, forgetInstance } from './watch.js'

/** Adds `delta` instances of a status to a job's counts. */
export function countInstance(h: JobHistory, status: InstanceStatus, delta: number): void {
  h.count += delta
  h.byStatus[status] = (h.byStatus[status] ?? 0) + delta
  if (h.byStatus[status]! <= 0) delete h.byStatus[status]
}

/** Runs of an instance by status (what lists show without reading every run). */
export function runCounts(state: CoordinatorState, instance: InstanceRecord): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const id of instance.runIds) {
    const status = state.runs.get(id)?.status
    if (status) counts[status] = (counts[status] ?? 0) + 1
  }
  return counts
}

/**
 * Instances that finished in this step: their final record (with its run counts and acks),
 * their status index entries and their job's counts go in one persist, the last of the step
 * (the runtime commits a step's persists as one batch). With dropFinished they leave memory at
 * the next tick.
 */
export function flushSettled(state: CoordinatorState, config: CoordinatorConfig, effects: CoordinatorEffect[]): void {
  const flushed = new Set<string>()
  if (state.settled.size > 0) flushInstances(state, config, effects, flushed)
  if (config.dropFinished) copyLateRuns(state, effects, flushed)
}

function flushInstances(state: CoordinatorState, config: CoordinatorConfig, effects: CoordinatorEffect[], flushed: Set<string>): void {
  const puts: { key: string; value: unknown }[] = []
  const dels: string[] = []
  const jobs = new Set<JobRecord>()
  for (const id of state.settled) {
    const inst = state.instances.get(id)
    if (!inst || inst.status === 'running') continue
    inst.counts = runCounts(state, inst)
    state.dirty.delete(id)
    puts.push({ key: key.instance(id), value: inst })
    puts.push({ key: IDX.status(inst.status, inst.createdAt, id), value: 1 }, { key: IDX.jobStatus(inst.jobId, inst.status, inst.occurrenceAt, id), value: 1 })
    dels.push(IDX.status('running', inst.createdAt, id), IDX.jobStatus(inst.jobId, 'running', inst.occurrenceAt, id))
    const job = state.jobs.get(inst.jobId)
    if (job) {
      countInstance(job.history, 'running', -1)
      countInstance(job.history, inst.status, 1)
      if (job.history.latest?.id === id) job.history.latest = { id, status: inst.status }
      jobs.add(job)
    }
    if (config.dropFinished) {
      state.finished.add(id)
      // Its runs under it (IDX.instanceRun, a covering index): what its report reads as one range once it left memory.
      for (const runId of inst.runIds) {
        const run = state.runs.get(runId)
        if (run) puts.push({ key: IDX.instanceRun(id, runId), value: run })
      }
      flushed.add(id)
    }
  }
  state.settled.clear()
  for (const job of jobs) puts.push({ key: key.job(job.jobId), value: job })
  effects.push({ type: 'persist', puts, dels })
}

/**
 * A run of a finished instance written after it settled (a late result, for an instance still
 * in memory or read from the store) is written under its instance too, in the same persist:
 * the copy never lags the record. `flushed`: instances whose runs this step copied whole.
 */
function copyLateRuns(state: CoordinatorState, effects: CoordinatorEffect[], flushed: ReadonlySet<string>): void {
  for (const e of effects) {
    if (e.type !== 'persist') continue
    const copies: { key: string; value: unknown }[] = []
    for (const p of e.puts) {
      if (!p.key.startsWith(RUN_KEY_PREFIX)) continue
      const run = p.value as RunRecord
      if (flushed.has(run.instanceId) || state.instances.get(run.instanceId)?.status === 'running') continue
      copies.push({ key: IDX.instanceRun(run.instanceId, run.runId), value: run })
    }
    e.puts.push(...copies)
  }
}

const RUN_KEY_PREFIX = key.run('')

/** Finished instances leave memory with their runs (dropFinished): from here on they are read from the store. */
export function dropFinished(state: CoordinatorState): void {
  for (const id of state.finished) {
    const inst = state.instances.get(id)
    state.finished.delete(id)
    if (inst && inst.status !== 'running') dropInstance(state, inst)
  }
}

export function dropInstance(state: CoordinatorState, inst: InstanceRecord): void {
  for (const runId of inst.runIds) state.runs.delete(runId)
  state.instances.delete(inst.id)
  state.live.delete(inst.id)
  state.openRuns.delete(inst.id)
  state.tallies.delete(inst.id)
  state.dirty.delete(inst.id)
  state.finished.delete(inst.id)
  state.derived.acks.delete(inst.id)
  forgetInstance(state.watches, inst.id)
}

/** Retention: deletes finished instances (never a live one) with their runs and index entries, and audit records. */
export function onPrune(state: CoordinatorState, event: Extract<CoordinatorEvent, { type: 'prune' }>, effects: CoordinatorEffect[]): void {
  const dels: string[] = []
  const jobs = new Set<JobRecord>()
  let instances = 0
  for (const { instance, runs } of event.items) {
    const held = state.instances.get(instance.id)
    if (state.live.has(instance.id) || instance.status === 'running' || (held && held.status === 'running')) continue
    dels.push(...historyKeysOf(instance, runs))
    instances++
    if (held) dropInstance(state, held)
    const job = state.jobs.get(instance.jobId)
    if (job) {
      countInstance(job.history, instance.status, -1)
      if (job.history.latest?.id === instance.id) delete job.history.latest
      jobs.add(job)
    }
  }
  const audit = event.auditKeys.filter((k) => k.startsWith(AUDIT_PREFIX))
  dels.push(...audit)
  // A job that will never run again (completed, canceled) goes with the last of its history:
  // else every one-shot job and manual run would stay in memory for ever.
  const ended = [...jobs].filter((job) => job.status !== 'active' && job.history.count === 0 && liveOf(state, job.jobId).length === 0)
  for (const job of ended) {
    dels.push(key.job(job.jobId))
    jobs.delete(job)
    forgetJob(state, job.jobId)
  }
  const puts = [...jobs].map((job) => ({ key: key.job(job.jobId), value: job }))
  if (dels.length === 0) return
  effects.push({ type: 'persist', puts, dels })
  effects.push({ type: 'log', level: 'debug', msg: 'pruned history', fields: { instances, auditRecords: audit.length, jobs: ended.map((j) => j.jobId) } })
}

/** A deleted or pruned job leaves memory: its record, its parsed schedule and its derived caches. */
export function forgetJob(state: CoordinatorState, jobId: string): void {
  state.jobs.delete(jobId)
  state.schedules.delete(jobId)
  state.derived.jobs.delete(jobId)
}

/** The job's live instances (O(live)). */
export function liveOf(state: CoordinatorState, jobId: string): string[] {
  const out: string[] = []
  for (const id of state.live) if (state.instances.get(id)?.jobId === jobId && state.instances.get(id)?.status === 'running') out.push(id)
  return out
}

/** A job is completed once it will have no new instance and none is running. */
export function maybeComplete(state: CoordinatorState, job: JobRecord): void {
  if (job.status !== 'active') return
  if (liveOf(state, job.jobId).length > 0) return
  if (job.template.scheduleRule !== 'immediate') {
    const sched = state.schedules.get(job.jobId) ?? null
    if (!sched || job.cursor === undefined) return
    if (nextOccurrences(sched.schedule, job.cursor, 1).length > 0) return
  }
  job.status = 'completed'
}

/** The tick: acks written, occurrences that came due, watches that ran out, then every live instance's windows and deadline. */
export function onTick(state: CoordinatorState, config: CoordinatorConfig, now: number, effects: CoordinatorEffect[]): void {
  writeDirty(state, effects)
  tickOccurrences(state, config, now, effects)
  for (const id of state.tallies.keys()) if (!state.live.has(id)) { state.tallies.delete(id); forgetInstance(state.watches, id) }
  for (const w of expired(state.watches, now)) answerWatcher(state, config, w, now, effects)
  for (const id of [...state.live]) {
    const instance = state.instances.get(id)
    if (!instance || instance.status !== 'running') {
      state.live.delete(id)
      state.tallies.delete(id)
      forgetInstance(state.watches, id)
      continue
    }
    tickRelease(state, config, instance, now, effects)
    if (tickQuorum(state, instance, now, effects)) continue
    if (instance.deadlineAt <= now) tickDeadline(state, instance, now, effects)
  }
}

/** Instances whose acks changed since they were written (acks are written per tick, not per ack). */
function writeDirty(state: CoordinatorState, effects: CoordinatorEffect[]): void {
  if (state.dirty.size === 0) return
  const puts = [...state.dirty].flatMap((id) => { const inst = state.instances.get(id); return inst ? [{ key: key.instance(id), value: inst }] : [] })
  state.dirty.clear()
  effects.push({ type: 'persist', puts, dels: [] })
}

/** Release policy: vanished holders and silent targets count as done, and the watchers that decides are woken. */
function tickRelease(state: CoordinatorState, config: CoordinatorConfig, instance: InstanceRecord, now: number, effects: CoordinatorEffect[]): void {
  const tally = state.tallies.get(instance.id)
  const job = state.jobs.get(instance.jobId)
  if (tally && job && job.template.chorus?.vanishedHolder === 'release' && releaseVanished(job, instance, tally, now)) {
    wake(state, config, instance, job, tally, now, effects)
  }
}

/** The quorum window closed without enough acknowledgements and nothing started: the instance fails (true). */
function tickQuorum(state: CoordinatorState, instance: InstanceRecord, now: number, effects: CoordinatorEffect[]): boolean {
  const job = state.jobs.get(instance.jobId)
  const q = job && quorumOf(job)
  if (!job || !q || now < instance.occurrenceAt + q.timeoutMs || (instance.acks ?? []).length >= q.need) return false
  if (!instance.runIds.every((r) => state.runs.get(r)?.status === 'pending' || state.runs.get(r)?.status === 'skipped')) return false
  const puts: { key: string; value: unknown }[] = []
  failQuorum(state, job, instance, now, puts)
  effects.push({ type: 'persist', puts, dels: [] })
  effects.push({ type: 'log', level: 'warn', msg: 'quorum failed', fields: { jobId: instance.jobId, instanceId: instance.id, missing: instance.quorumMissing } })
  return true
}

/** The deadline passed: runs without a result time out, and the instance settles. */
function tickDeadline(state: CoordinatorState, instance: InstanceRecord, now: number, effects: CoordinatorEffect[]): void {
  const puts: { key: string; value: unknown }[] = []
  for (const runId of instance.runIds) {
    const run = state.runs.get(runId)
    if (!run || TERMINAL.has(run.status)) continue
    setRunStatus(state, run, 'timeout')
    run.reason = 'no result before the group timeout: the node was unreachable or still running'
    run.reasonCode = 'no_result'
    puts.push({ key: key.run(runId), value: run })
  }
  settleInstance(state, instance, now)
  puts.push({ key: key.instance(instance.id), value: instance })
  const job = state.jobs.get(instance.jobId)
  if (job) puts.push({ key: key.job(job.jobId), value: job })
  effects.push({ type: 'persist', puts, dels: [] })
  effects.push({ type: 'log', level: 'warn', msg: 'instance deadline passed', fields: { jobId: instance.jobId, instanceId: instance.id, status: instance.status } })
}
