// Gated rollouts: what the coordinator knows of each target's run (the tally), the checkpoints
// signed from it, the progress and acks that raise it, the quorum window, and the held watches
// (coordinator/watch.ts) a new checkpoint wakes.
import { DEFAULT_LEASE_S, decideGate, quorumRule } from '../protocol/gate.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { type CheckpointBody, MAX_CHECKPOINTS_IN_REPLY, PROTOCOL_VERSION, type SignedEnvelope, type SyncRequestBody, open, seal } from '../protocol/wire.js'
import { ackSet, bodyOf, gatedJob, placeIn, targets } from './derived.js'
import { maybeComplete } from './instances.js'
import { dueOccurrence, hadInstance, materializeInstance } from './jobs.js'
import { setRunStatus } from './results.js'
import { reply } from './rpc.js'
import { type CoordinatorConfig, type CoordinatorEffect, type CoordinatorState, type InstanceRecord, type InstanceTally, type JobRecord, MAX_AHEAD_OCCURRENCES, Pos, TERMINAL } from './state.js'
import { key } from './storekeys.js'
import { MAX_WATCHERS, WATCH_HOLD_MS, type Watcher, hold, markAnswered } from './watch.js'

/** The progress of a live gated instance as counts per group, built from its runs and acks once, then kept up to date. */
export function tallyOf(state: CoordinatorState, instance: InstanceRecord, job: JobRecord): InstanceTally {
  let t = state.tallies.get(instance.id)
  if (t) return t
  t = { groups: job.resolved.groups.map((g) => ({ status: new Uint8Array(g.nodes.length), leases: new Map(), acked: 0, done: 0, succeeded: 0, prefix: 0, frontier: 0 })), seq: 0, dirty: true }
  state.tallies.set(instance.id, t)
  const acks = new Set(instance.acks ?? [])
  for (const runId of instance.runIds) {
    const run = state.runs.get(runId)
    const place = run && placeIn(state, job, run.nodeId)
    if (!run || !place) continue
    const st = run.status === 'success' ? Pos.Succeeded : TERMINAL.has(run.status) && run.receivedAt !== undefined ? Pos.Failed : run.status === 'running' ? Pos.Started : acks.has(run.nodeId) ? Pos.Acked : Pos.Unknown
    markPosition(t, place.group, place.position, st)
  }
  return t
}

/** Raises what is known of one position (knowledge only grows; a released target may still report its end). */
export function markPosition(t: InstanceTally, group: number, position: number, to: Pos, leaseUntil?: number): boolean {
  const g = t.groups[group]
  if (!g || position >= g.status.length) return false
  const from = g.status[position] as Pos
  if (leaseUntil !== undefined && (to === Pos.Started) && (g.leases.get(position) ?? -1) < leaseUntil) { g.leases.set(position, leaseUntil); t.dirty = true }
  const isDone = (s: Pos) => s === Pos.Succeeded || s === Pos.Failed || s === Pos.Released
  if (from === to || isDone(from) && !isDone(to) || (from === Pos.Started && to === Pos.Acked)) return false
  if ((from === Pos.Succeeded || from === Pos.Failed) && isDone(to)) return false
  g.status[position] = to
  if (from === Pos.Unknown) g.acked++
  if (!isDone(from) && isDone(to)) g.done++
  if (to === Pos.Succeeded) g.succeeded++
  if (isDone(to)) g.leases.delete(position)
  if (to !== Pos.Acked && position + 1 > g.frontier) g.frontier = position + 1
  while (g.prefix < g.status.length && isDone(g.status[g.prefix] as Pos)) g.prefix++
  t.dirty = true
  return true
}

/**
 * Release policy: a holder whose lease ran out, and a target that never acknowledged within
 * leaseSeconds of the occurrence, count as done (not succeeded) in the checkpoints, so the
 * rollout goes on without them (by this coordinator's clock; the README says what it costs).
 */
export function releaseVanished(job: JobRecord, instance: InstanceRecord, t: InstanceTally, now: number): boolean {
  const leaseMs = (job.template.chorus?.leaseSeconds ?? DEFAULT_LEASE_S) * 1000
  const silentToo = now >= instance.occurrenceAt + leaseMs
  let changed = false
  t.groups.forEach((g, gi) => {
    for (const [pos, until] of g.leases) if (until < now && g.status[pos] === Pos.Started) changed = markPosition(t, gi, pos, Pos.Released) || changed
    if (!silentToo || g.acked >= g.status.length) return
    for (let pos = 0; pos < g.status.length; pos++) if (g.status[pos] === Pos.Unknown) changed = markPosition(t, gi, pos, Pos.Released) || changed
  })
  return changed
}

/** The instance's current checkpoint, signed again only when the tally changed since the last one. */
export function checkpointOf(config: CoordinatorConfig, instance: InstanceRecord, t: InstanceTally, now: number): { body: CheckpointBody; envelope: SignedEnvelope } {
  if (t.dirty || !t.envelope || !t.body) {
    t.dirty = false
    // Sequence numbers are coordinator timestamps in microseconds (or one more than the last):
    // a restarted coordinator, whose tallies start over from its records, still issues newer
    // checkpoints (signing takes tens of µs, so the count cannot run ahead of the clock).
    t.seq = Math.max(t.seq + 1, Math.floor(now) * 1000)
    t.body = {
      type: 'checkpoint', v: PROTOCOL_VERSION, jobId: instance.jobId, instanceId: instance.id, occurrenceAt: instance.occurrenceAt, seq: t.seq, issuedAt: now,
      groups: t.groups.map((g) => ({ acked: g.acked, done: g.done, succeeded: g.succeeded, prefix: g.prefix, frontier: g.frontier })),
    }
    t.envelope = seal(config.identity, t.body)
  }
  return { body: t.body, envelope: t.envelope }
}

/** Records what a target said of its run (ack, start with its lease, end) and wakes the watchers it decides. */
export function noteProgress(state: CoordinatorState, config: CoordinatorConfig, instance: InstanceRecord, job: JobRecord, nodeId: string, to: Pos, now: number, effects: CoordinatorEffect[], leaseUntil?: number): void {
  if (instance.status !== 'running' || !gatedJob(state, job)) return
  const place = placeIn(state, job, nodeId)
  if (!place) return
  const t = tallyOf(state, instance, job)
  if (markPosition(t, place.group, place.position, to, leaseUntil)) wake(state, config, instance, job, t, now, effects)
}

/** What a waiting target at (group, position) would decide from the checkpoint alone. */
export function decisionAt(state: CoordinatorState, job: JobRecord, cp: CheckpointBody, group: number, position: number, occurrenceAt: number, now: number): 'start' | 'wait' | 'skip' {
  return decideGate(bodyOf(state, job), { facts: new Map(), checkpoint: cp, version: 0 }, group, position, occurrenceAt, now).action
}

/**
 * After a change: answers, group by group, the front watchers the new checkpoint decides, and
 * stops at the first that still waits (see coordinator/watch.ts for why that is enough).
 * A watcher that already holds this checkpoint and still waits (its clock says otherwise) is
 * left for its hold to run out, so a disagreement cannot turn into a request loop.
 */
export function wake(state: CoordinatorState, config: CoordinatorConfig, instance: InstanceRecord, job: JobRecord, t: InstanceTally, now: number, effects: CoordinatorEffect[]): void {
  const groups = state.watches.byInstance.get(instance.id)
  if (!groups || groups.size === 0) return
  const cp = checkpointOf(config, instance, t, now)
  for (const [group, heap] of groups) {
    for (let front = heap.peek(); front; front = heap.peek()) {
      if (decisionAt(state, job, cp.body, group, front.position, instance.occurrenceAt, now) === 'wait') break
      heap.pop()
      if ((front.w.seqs.get(instance.id) ?? 0) < cp.body.seq) answerWatcher(state, config, front.w, now, effects)
    }
  }
}

export function answerWatcher(state: CoordinatorState, config: CoordinatorConfig, w: Watcher, now: number, effects: CoordinatorEffect[]): void {
  if (w.answered) return
  markAnswered(state.watches, w)
  // A node revoked while its watch was held learns nothing more: no checkpoint may start its run.
  if (!state.nodes.has(w.nodeId)) { effects.push(reply(state, config, w.requestId, { ok: false, error: `node ${w.nodeId} is revoked` })); return }
  effects.push(reply(state, config, w.requestId, { ok: true, checkpoints: checkpointsFor(state, config, w.nodeId, now) }))
}

/** Current checkpoints of the live gated instances that target a node. */
export function checkpointsFor(state: CoordinatorState, config: CoordinatorConfig, nodeId: string, now: number): SignedEnvelope[] {
  const out: SignedEnvelope[] = []
  for (const id of state.live) {
    const inst = state.instances.get(id)
    const job = inst && state.jobs.get(inst.jobId)
    if (!inst || !job || !gatedJob(state, job) || !placeIn(state, job, nodeId)) continue
    out.push(checkpointOf(config, inst, tallyOf(state, inst, job), now).envelope)
    if (out.length >= MAX_CHECKPOINTS_IN_REPLY) break
  }
  return out
}

/**
 * A sync with `watch`: held until a newer checkpoint decides one of the node's waiting runs, or
 * for WATCH_HOLD_MS. Returns false when the request must be answered now (a newer checkpoint
 * already decides a run, nothing to wait on, or MAX_WATCHERS reached).
 */
export function tryHold(state: CoordinatorState, config: CoordinatorConfig, requestId: string, nodeId: string, gated: SyncRequestBody['gated'], now: number): boolean {
  if (state.watches.held >= MAX_WATCHERS) return false
  const w: Watcher = { requestId, nodeId, heldUntil: now + WATCH_HOLD_MS, seqs: new Map(), places: [], answered: false }
  for (const g of gated) {
    if (g.state !== 'waiting') continue
    const inst = state.instances.get(g.instanceId)
    const job = inst && state.jobs.get(inst.jobId)
    if (!inst || !job || inst.status !== 'running' || !gatedJob(state, job)) continue
    const place = placeIn(state, job, nodeId)
    if (!place) continue
    const cp = checkpointOf(config, inst, tallyOf(state, inst, job), now)
    if (cp.body.seq > (g.seq ?? 0) && decisionAt(state, job, cp.body, place.group, place.position, inst.occurrenceAt, now) !== 'wait') return false
    w.seqs.set(g.instanceId, g.seq ?? 0)
    w.places.push({ instanceId: g.instanceId, ...place })
  }
  if (w.places.length === 0) return false
  hold(state.watches, w)
  return true
}

/** A sync says which gated runs the node has waiting (acknowledged) or running (slot held until leaseUntil). */
export function noteGated(state: CoordinatorState, config: CoordinatorConfig, nodeId: string, gated: SyncRequestBody['gated'], now: number, effects: CoordinatorEffect[]): void {
  for (const g of gated) {
    const job = state.jobs.get(g.jobId)
    if (!job || instanceIdFor(g.jobId, g.occurrenceAt) !== g.instanceId) continue
    const instance = state.instances.get(g.instanceId)
    // Only the job's targets acknowledge (a quorum counts them): anyone else's claim changes nothing.
    if (!instance || !targets(state, job, nodeId)) continue
    recordAck(state, instance, nodeId)
    if (g.state === 'running') markStarted(state, instance, nodeId, now, effects)
    noteProgress(state, config, instance, job, nodeId, g.state === 'running' ? Pos.Started : Pos.Acked, now, effects, g.state === 'running' ? (g.leaseUntil ?? Number.MAX_SAFE_INTEGER) : undefined)
  }
}

export function recordAck(state: CoordinatorState, instance: InstanceRecord, nodeId: string): void {
  const acks = ackSet(state, instance)
  if (acks.has(nodeId)) return
  acks.add(nodeId)
  ;(instance.acks ??= []).push(nodeId)
  // Acks are written with the instance at its next status change or tick, not one write per ack.
  state.dirty.add(instance.id)
}

export function markStarted(state: CoordinatorState, instance: InstanceRecord, nodeId: string, at: number, effects: CoordinatorEffect[]): void {
  const run = state.runs.get(runIdFor(instance.id, nodeId))
  if (!run || run.status !== 'pending') return
  run.status = 'running'
  run.startedAt = at
  effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }], dels: [] })
}

export function onProgress(state: CoordinatorState, config: CoordinatorConfig, envelope: unknown, now: number, effects: CoordinatorEffect[]): void {
  const opened = open(envelope)
  if (!opened.ok || opened.body.type !== 'progress') return
  const p = opened.body
  const job = state.jobs.get(p.jobId)
  if (!job || job.resolved.keys[p.nodeId] !== opened.signer || instanceIdFor(p.jobId, p.occurrenceAt) !== p.instanceId) return
  const puts: { key: string; value: unknown }[] = []
  let instance = state.instances.get(p.instanceId)
  if (!instance) {
    if (hadInstance(job, p.occurrenceAt) || !dueOccurrence(state, job, p.occurrenceAt, now)) return
    if (job.template.scheduleRule !== 'immediate' && (job.history.ahead ?? []).length >= MAX_AHEAD_OCCURRENCES) return
    instance = materializeInstance(state, config, job, p.occurrenceAt, now, puts)
    puts.push({ key: key.job(job.jobId), value: job })
  }
  recordAck(state, instance, p.nodeId)
  if (puts.length > 0) effects.push({ type: 'persist', puts, dels: [] })
  if (p.event === 'start' || p.event === 'renew') markStarted(state, instance, p.nodeId, p.at, effects)
  const to = p.event === 'done' ? (p.status === 'success' ? Pos.Succeeded : Pos.Failed) : p.event === 'ack' ? Pos.Acked : Pos.Started
  noteProgress(state, config, instance, job, p.nodeId, to, now, effects, p.event === 'start' || p.event === 'renew' ? (p.leaseUntil ?? Number.MAX_SAFE_INTEGER) : undefined)
}

export function quorumOf(job: JobRecord): { need: number; total: number; timeoutMs: number } | undefined {
  return quorumRule(job.template.chorus, job.resolved.groups.reduce((n, g) => n + g.nodes.length, 0))
}

/** The quorum window closed without enough acknowledgements and no node started: nothing will run. */
export function failQuorum(state: CoordinatorState, job: JobRecord, instance: InstanceRecord, now: number, puts: { key: string; value: unknown }[]): void {
  const acks = new Set(instance.acks ?? [])
  const missing = job.resolved.groups.flatMap((g) => g.nodes).filter((n) => !acks.has(n))
  instance.status = 'quorum_failed'
  state.settled.add(instance.id)
  instance.quorumMissing = missing
  instance.reason = `quorum failed: ${acks.size} of ${quorumOf(job)!.total} targets acknowledged, ${quorumOf(job)!.need} needed; no acknowledgement from ${missing.join(', ')}`
  instance.updatedAt = now
  state.live.delete(instance.id)
  state.openRuns.delete(instance.id)
  for (const runId of instance.runIds) {
    const run = state.runs.get(runId)
    if (!run || run.status !== 'pending') continue
    setRunStatus(state, run, 'skipped')
    run.reason = acks.has(run.nodeId) ? 'not started: quorum failed' : 'not started: quorum failed; this node never acknowledged the job (unreachable?)'
    run.reasonCode = 'quorum_failed'
    puts.push({ key: key.run(runId), value: run })
  }
  puts.push({ key: key.instance(instance.id), value: instance })
  maybeComplete(state, job)
  puts.push({ key: key.job(job.jobId), value: job })
}
