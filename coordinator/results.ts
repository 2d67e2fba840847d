// Results, stored exactly once: whether one is accepted (from the run's target, for a run or a
// due occurrence), what it changes, and the status an instance settles on once its runs are done.
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { thresholdFor } from '../protocol/rollout.js'
import type { ResultBody } from '../protocol/wire.js'
import { targets } from './derived.js'
import { maybeComplete, runCounts } from './instances.js'
import { OCCURRENCE_GRACE_MS, hadInstance, materializeInstance, realOccurrence } from './jobs.js'
import { touch } from './registry.js'
import { reply } from './rpc.js'
import { type CoordinatorConfig, type CoordinatorEffect, type CoordinatorState, type InstanceRecord, type JobRecord, MAX_AHEAD_OCCURRENCES, type NodeRecord, Pos, type RunRecord, TERMINAL } from './state.js'
import { key } from './storekeys.js'
import { failQuorum, noteProgress, quorumOf } from './tally.js'

/** `stored`: the run is a finished instance's, read from the store (with its instance record, when found). */
export type ResultVerdict = { run: RunRecord; stored?: InstanceRecord } | { job: JobRecord } | { error: string; retry?: true }

/**
 * Whether a result is accepted, decided before anything is created or changed: it comes from the
 * run's target (a node of the job's resolved targets), for a run that exists, or for the instance
 * of a due occurrence not created yet. Returns the run, or the job whose instance must be created
 * first, or why it is refused (`retry`: an occurrence that is not due yet, which will be).
 */
export function acceptResult(state: CoordinatorState, config: CoordinatorConfig, body: ResultBody, now: number, history?: { run?: RunRecord; instance?: InstanceRecord }): ResultVerdict {
  const refused = { error: `run ${body.runId} is not expected from node ${body.nodeId}` }
  if (runIdFor(body.instanceId, body.nodeId) !== body.runId) return refused
  const run = state.runs.get(body.runId)
  if (run) return run.nodeId === body.nodeId && run.instanceId === body.instanceId ? { run } : refused
  const job = state.jobs.get(body.jobId)
  if (!job || state.instances.has(body.instanceId) || instanceIdFor(job.jobId, body.occurrenceAt) !== body.instanceId) return refused
  if (hadInstance(job, body.occurrenceAt)) {
    // A finished instance's run (not in memory): as the store holds it, or refused.
    const stored = history?.run
    if (stored && stored.runId === body.runId && stored.nodeId === body.nodeId && stored.instanceId === body.instanceId) return { run: stored, stored: history?.instance?.id === body.instanceId ? history.instance : undefined }
    if (!history && config.dropFinished) return { error: `run ${body.runId} belongs to a finished instance; send it again`, retry: true }
    return refused
  }
  if (job.template.scheduleRule !== 'immediate' && (job.history.ahead ?? []).length >= MAX_AHEAD_OCCURRENCES) return { error: `job ${job.jobId} has ${MAX_AHEAD_OCCURRENCES} occurrences ahead of the coordinator's clock; send it again later`, retry: true }
  if (!targets(state, job, body.nodeId)) return { error: `node ${body.nodeId} is not a target of job ${job.jobId}` }
  if (!realOccurrence(state, job, body.occurrenceAt)) return refused
  if (body.occurrenceAt > now + OCCURRENCE_GRACE_MS) return { error: `occurrence ${new Date(body.occurrenceAt).toISOString()} of job ${job.jobId} is not due yet (more than ${OCCURRENCE_GRACE_MS / 60_000} min ahead of the coordinator's clock); send it again later`, retry: true }
  return { job }
}

type Put = { key: string; value: unknown }

/** A result an agent sent: refused (and answered) unless its signer, its node and its run check out; else stored once and acknowledged. */
export function onResult(state: CoordinatorState, config: CoordinatorConfig, requestId: string, body: ResultBody, signer: string, now: number, effects: CoordinatorEffect[], history?: { run?: RunRecord; instance?: InstanceRecord }): void {
  const admitted = admitResult(state, config, requestId, body, signer, now, effects, history)
  if (!admitted) return
  const { node, verdict } = admitted
  touch(state, node, now, effects)
  const early: Put[] = []
  if ('job' in verdict) {
    // An occurrence the agent reached before this coordinator did (clock skew, or the coordinator was down).
    materializeInstance(state, config, verdict.job, body.occurrenceAt, now, early)
    early.push({ key: key.job(verdict.job.jobId), value: verdict.job })
  }
  const run = 'run' in verdict ? verdict.run : state.runs.get(body.runId)!
  if (run.receivedAt !== undefined) {
    // Stored once already: a re-send after a lost acknowledgement. Acknowledge again.
    effects.push({ type: 'log', level: 'debug', msg: 'duplicate result acknowledged again', fields: { jobId: body.jobId, instanceId: body.instanceId, runId: body.runId, nodeId: body.nodeId } })
    effects.push(reply(state, config, requestId, { ok: true, ackRunIds: [body.runId] }))
    return
  }
  const statusBefore = run.status
  recordResult(state, config, run, body, now, effects)
  const puts: Put[] = [...early, { key: key.run(run.runId), value: run }]
  const stored = 'stored' in verdict ? verdict.stored : undefined
  if (stored?.counts) puts.push(recountStored(stored, statusBefore, run.status))
  const instance = state.instances.get(run.instanceId)
  if (instance) settleOnResult(state, instance, now, puts)
  // Stored durably before the acknowledgement leaves: an agent forgets a result only once it is safe here.
  effects.push({ type: 'persist', puts, dels: [] })
  effects.push({ type: 'log', level: 'info', msg: 'result stored', fields: { jobId: run.jobId, instanceId: run.instanceId, runId: body.runId, nodeId: body.nodeId, status: body.status, instanceStatus: instance?.status } })
  effects.push(reply(state, config, requestId, { ok: true, ackRunIds: [body.runId] }))
}

/** The sender's node and the verdict on its result, or undefined when it is refused (answered here; nothing changed). */
function admitResult(state: CoordinatorState, config: CoordinatorConfig, requestId: string, body: ResultBody, signer: string, now: number, effects: CoordinatorEffect[], history?: { run?: RunRecord; instance?: InstanceRecord }): { node: NodeRecord; verdict: Exclude<ResultVerdict, { error: string }> } | undefined {
  const node = state.nodes.get(body.nodeId)
  const revoked = state.members.revoked.get(body.nodeId)
  if (revoked && revoked.key === signer && !(node && node.publicKey === signer)) {
    effects.push({ type: 'log', level: 'warn', msg: 'refused a result from a revoked node', fields: { jobId: body.jobId, instanceId: body.instanceId, runId: body.runId, nodeId: body.nodeId } })
    // Acknowledged so that it is not sent again: it will never be accepted.
    effects.push(reply(state, config, requestId, { ok: false, error: `node ${body.nodeId} is revoked: its results are refused`, ackRunIds: [body.runId] }))
    return undefined
  }
  if (!node || node.publicKey !== signer) {
    effects.push(reply(state, config, requestId, { ok: false, error: `result for node ${body.nodeId} is not signed by that node's registered key; send hello first` }))
    return undefined
  }
  const verdict = acceptResult(state, config, body, now, history)
  if ('error' in verdict) {
    // Refused: nothing is created, changed or written.
    effects.push({ type: 'log', level: 'warn', msg: 'refused a result for a run this coordinator does not expect', fields: { jobId: body.jobId, instanceId: body.instanceId, runId: body.runId, nodeId: body.nodeId, reason: verdict.error } })
    // Acknowledged unless it will be accepted later: the agent must not retry a result that never can.
    effects.push(reply(state, config, requestId, { ok: false, error: verdict.error, ...('retry' in verdict ? {} : { ackRunIds: [body.runId] }) }))
    return undefined
  }
  return { node, verdict }
}

/** What the result says goes into the run; a gated instance's tally learns the run ended. */
function recordResult(state: CoordinatorState, config: CoordinatorConfig, run: RunRecord, body: ResultBody, now: number, effects: CoordinatorEffect[]): void {
  setRunStatus(state, run, body.status)
  const inst = state.instances.get(run.instanceId)
  const job = inst && state.jobs.get(inst.jobId)
  if (inst && job) noteProgress(state, config, inst, job, body.nodeId, body.status === 'success' ? Pos.Succeeded : Pos.Failed, now, effects)
  run.startedAt = body.startedAt
  run.finishedAt = body.finishedAt
  run.receivedAt = now
  run.steps = body.steps
  if (body.reason) run.reason = body.reason
  else delete run.reason
  if (body.reasonCode) run.reasonCode = body.reasonCode
  else delete run.reasonCode
}

/** A late result for a finished instance read from the store: its stored counts follow, its status does not (as in memory). */
function recountStored(stored: InstanceRecord, from: RunRecord['status'], to: RunRecord['status']): Put {
  const counts = stored.counts!
  counts[from] = (counts[from] ?? 1) - 1
  if (counts[from]! <= 0) delete counts[from]
  counts[to] = (counts[to] ?? 0) + 1
  return { key: key.instance(stored.id), value: stored }
}

/** The instance of a stored result may settle; its record is written when its status changes, not on every result (it lists every run). */
function settleOnResult(state: CoordinatorState, instance: InstanceRecord, now: number, puts: Put[]): void {
  instance.updatedAt = now
  const job = state.jobs.get(instance.jobId)
  const jobStatusBefore = job?.status
  const statusBefore = instance.status
  settleInstance(state, instance, now)
  if (instance.status !== statusBefore) puts.push({ key: key.instance(instance.id), value: instance })
  else if (instance.status !== 'running' && instance.counts) { instance.counts = runCounts(state, instance); puts.push({ key: key.instance(instance.id), value: instance }) }
  if (job && job.status !== jobStatusBefore) puts.push({ key: key.job(job.jobId), value: job })
}

/** Changes a run's status, keeping the count of its instance's open runs. */
export function setRunStatus(state: CoordinatorState, run: RunRecord, status: RunRecord['status']): void {
  const wasOpen = !TERMINAL.has(run.status)
  run.status = status
  if (wasOpen && TERMINAL.has(status)) {
    const open = state.openRuns.get(run.instanceId)
    if (open !== undefined) state.openRuns.set(run.instanceId, open - 1)
  }
}

/**
 * An instance is decided once every run is terminal. It succeeds when every group meets
 * every success criterion: a `success` criterion needs at least numRuns successful runs; a
 * `failure` criterion is a failure budget, met while fewer than numRuns runs failed. A group
 * without criteria needs all its runs to succeed. Once decided the status does not change
 * (as in Courier: later reports from nodes update the run, not the instance).
 */
export function settleInstance(state: CoordinatorState, instance: InstanceRecord, now: number): void {
  if (instance.status !== 'running') return
  if ((state.openRuns.get(instance.id) ?? 0) > 0) return
  const runs = instance.runIds.map((id) => state.runs.get(id)!).filter(Boolean)
  if (!runs.every((r) => TERMINAL.has(r.status))) return
  const job = state.jobs.get(instance.jobId)
  if (job && quorumOf(job) && runs.every((r) => r.status === 'skipped' || r.status === 'timeout') && runs.some((r) => r.reasonCode === 'quorum_failed')) {
    failQuorum(state, job, instance, now, [])
    return
  }
  let ok = true
  job?.template.target.groups.forEach((g, gi) => {
    const groupRuns = runs.filter((r) => r.group === gi)
    const n = groupRuns.length
    if (g.successCriteria.length === 0) {
      ok &&= groupRuns.every((r) => r.status === 'success')
      return
    }
    for (const c of g.successCriteria) {
      const threshold = thresholdFor(c.numRuns, n)
      if (c.status === 'success') ok &&= groupRuns.filter((r) => r.status === 'success').length >= threshold
      else ok &&= groupRuns.filter((r) => r.status !== 'success').length < Math.max(1, threshold)
    }
  })
  instance.status = ok ? 'success' : 'failure'
  instance.updatedAt = now
  state.settled.add(instance.id)
  state.live.delete(instance.id)
  state.openRuns.delete(instance.id)
  if (job) maybeComplete(state, job)
}
