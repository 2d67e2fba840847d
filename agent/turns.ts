// Turn-taking: what the agent core decides about a gated run's turn. What this node knows of the
// other targets' progress (their acks, starts, leases and results, from gossip while the
// coordinator is away, or the coordinator's checkpoints), the gate's decision (take the turn, skip,
// or wait), this node's own progress (published, persisted) and the lease of a rolling slot.
import { decideGate, emptyKnowledge, factFor, groupTally, groupWindow, nextGateChange, DEFAULT_LEASE_S, type DoneStatus, type Knowledge, type PeerFact } from '../protocol/gate.js'
import { instanceIdFor } from '../protocol/ids.js'
import { PROTOCOL_VERSION, open, seal, type CheckpointBody, type ProgressBody } from '../protocol/wire.js'
import { key, runIds, MS_PER_S, type AgentConfig, type AgentEffect, type AgentRun, type AgentState } from './state.js'
import { skipRun, startAttempt } from './attempts.js'
import { coordinatorAway, sendSync } from './link.js'

/**
 * Targets gossip their progress to each other while the coordinator is away only in jobs of at
 * most this many targets (a quorum cluster, a small rollout): every gossiped message reaches
 * the whole mesh, so for a large rollout that would be O(targets × fleet) traffic. A larger
 * gated rollout pauses while its targets cannot reach the coordinator (runs already started
 * finish; results wait in the outbox) and resumes when it answers again.
 */
export const PEER_PROGRESS_MAX_TARGETS = 64

/** The lease of a start that has none (the keep policy): the slot is held until the run is done. */
export const NO_LEASE_END = Number.MAX_SAFE_INTEGER

export function leaseMsOf(state: AgentState, run: AgentRun): number {
  return (state.jobs.get(run.jobId)?.body.template.chorus?.leaseSeconds ?? DEFAULT_LEASE_S) * MS_PER_S
}

/**
 * A gated run's state changed (ack, start, renew; done travels in the result). Acks count only
 * towards a quorum and leases only under the release policy: for those jobs the coordinator
 * hears the change in a sync now; for the others the node's next watch (within a tick) says it
 * waits, and its result says it is done. While the coordinator is away, small jobs' targets
 * tell each other by gossip.
 */
export function publishProgress(state: AgentState, config: AgentConfig, run: AgentRun, event: ProgressBody['event'], now: number, effects: AgentEffect[], status?: DoneStatus): void {
  const chorus = state.jobs.get(run.jobId)?.body.template.chorus
  if (event !== 'done' && (chorus?.quorum || chorus?.vanishedHolder === 'release')) sendSync(state, config, now, effects)
  if (coordinatorAway(state, now)) gossipProgress(state, config, run, event, now, effects, status)
}

export function gossipProgress(state: AgentState, config: AgentConfig, run: AgentRun, event: ProgressBody['event'], now: number, effects: AgentEffect[], status?: DoneStatus): void {
  const job = state.jobs.get(run.jobId)
  const ticket = job?.ticket
  if (!job || !ticket?.place || !ticket.envelope) return
  if (job.body.resolved.groups.reduce((n, g) => n + g.size, 0) > PEER_PROGRESS_MAX_TARGETS) return
  const body: ProgressBody = {
    type: 'progress', v: PROTOCOL_VERSION, jobId: run.jobId, instanceId: run.instanceId, occurrenceAt: run.occurrenceAt,
    nodeId: config.nodeId, event, at: now, ...(status ? { status } : {}), ...(run.leaseUntil !== undefined && (event === 'start' || event === 'renew') ? { leaseUntil: run.leaseUntil } : {}),
    ticket: ticket.envelope,
  }
  effects.push({ type: 'publish_progress', envelope: seal(config.identity, body) })
}

/** Takes this node's turn if the gate is open, skips the run if the rollout stopped, or keeps waiting. */
export function evaluateGate(state: AgentState, config: AgentConfig, run: AgentRun, now: number, effects: AgentEffect[]): void {
  const job = state.jobs.get(run.jobId)
  if (!job || run.status !== 'waiting') return
  const jobState = state.jobStates.get(run.jobId)?.body
  if (jobState && jobState.canceledOccurrences.includes(run.occurrenceAt)) {
    skipRun(state, config, run, now, effects, { code: 'canceled', text: 'canceled before this node\'s turn' })
    return
  }
  const k = knowledgeFor(state, run.instanceId)
  const decision = decideGate(job.body, k, run.group, run.position, run.occurrenceAt, now)
  if (decision.action === 'wait') {
    state.gateChecks.set(run.runId, { version: k.version, recheckAt: nextGateChange(job.body, k, run.group, run.occurrenceAt, now) })
    return
  }
  state.gateChecks.delete(run.runId)
  if (decision.action === 'skip') {
    effects.push({ type: 'log', level: 'warn', msg: 'run not started', fields: { ...runIds(run), reason: decision.reason } })
    skipRun(state, config, run, now, effects, { code: decision.code, text: decision.reason })
    return
  }
  run.status = 'running'
  run.startedAt = now
  if (job.body.template.chorus?.vanishedHolder === 'release') run.leaseUntil = now + leaseMsOf(state, run)
  factFor(k, run.group, run.position).lease = run.leaseUntil ?? NO_LEASE_END
  k.version++
  persistProgress(run.instanceId, k, effects)
  effects.push({ type: 'log', level: 'info', msg: 'turn taken; run started', fields: { jobId: run.jobId, runId: run.runId, group: run.group, batch: run.batch, position: run.position } })
  publishProgress(state, config, run, 'start', now, effects)
  startAttempt(state, config, job, run, now, now, effects)
}

export interface PersistedProgress {
  instanceId: string
  facts: [number, [number, PeerFact][]][]
}

/** The targets' own facts of an instance (checkpoints are not written: the next one replaces a lost one). */
export function persistProgress(instanceId: string, k: Knowledge, effects: AgentEffect[]): void {
  const value: PersistedProgress = { instanceId, facts: [...k.facts].map(([g, fs]) => [g, [...fs]]) }
  effects.push({ type: 'persist', puts: [{ key: key.progress(instanceId), value }], dels: [] })
}

/** Gossip on the progress topic: a peer's progress (while the coordinator is away). Checkpoints come in sync replies only. */
export function onProgress(state: AgentState, config: AgentConfig, envelope: unknown, now: number, effects: AgentEffect[]): void {
  const opened = open(envelope)
  if (!opened.ok) {
    effects.push({ type: 'log', level: 'debug', msg: `progress message dropped: ${opened.reason}` })
    return
  }
  if (opened.body.type !== 'progress') return
  const p = opened.body
  if (!state.progress.has(p.instanceId)) return // not an instance this node takes part in (or not yet)
  const job = state.jobs.get(p.jobId)
  if (!job || p.instanceId !== instanceIdFor(p.jobId, p.occurrenceAt)) return
  const ticket = p.ticket ? open(p.ticket, [config.coordinatorKey]) : undefined
  if (!ticket?.ok || ticket.body.type !== 'ticket' || ticket.body.jobId !== p.jobId || ticket.body.nodeId !== p.nodeId || ticket.body.key !== opened.signer || !ticket.body.place) {
    effects.push({ type: 'log', level: 'warn', msg: 'progress refused: no coordinator ticket naming that node, its place and the key that signed it', fields: { nodeId: p.nodeId, jobId: p.jobId } })
    return
  }
  const k = knowledgeFor(state, p.instanceId)
  const { group, position } = ticket.body.place
  const heard = k.facts.get(group)?.has(position) ?? false // a first fact is the acknowledgement
  if (!mergeProgress(factFor(k, group, position), p) && heard) return
  k.version++
  persistProgress(p.instanceId, k, effects)
  reevaluate(state, config, p.instanceId, now, effects)
}

function reevaluate(state: AgentState, config: AgentConfig, instanceId: string, now: number, effects: AgentEffect[]): void {
  for (const run of state.runs.values()) if (run.instanceId === instanceId && run.status === 'waiting') evaluateGate(state, config, run, now, effects)
}

function mergeProgress(f: PeerFact, p: { event: ProgressBody['event']; status?: DoneStatus; leaseUntil?: number }): boolean {
  switch (p.event) {
    case 'ack':
      return false // the fact exists now: that is the acknowledgement
    case 'start':
    case 'renew': {
      const lease = p.leaseUntil ?? NO_LEASE_END
      if ((f.lease ?? -1) >= lease) return false
      f.lease = lease
      return true
    }
    case 'done':
      if (f.done || !p.status) return false
      f.done = p.status
      return true
  }
}

export function knowledgeFor(state: AgentState, instanceId: string): Knowledge {
  let k = state.progress.get(instanceId)
  if (!k) {
    k = emptyKnowledge()
    state.progress.set(instanceId, k)
  }
  return k
}

/** A coordinator checkpoint (from a sync reply or an answered watch): kept if newer, then the waiting runs look again. */
export function onCheckpoint(state: AgentState, config: AgentConfig, cp: CheckpointBody, now: number, effects: AgentEffect[]): void {
  const k = state.progress.get(cp.instanceId)
  if (!k) return // only instances this node takes part in
  if (k.checkpoint && k.checkpoint.seq >= cp.seq) return
  k.checkpoint = cp
  k.version++
  reevaluate(state, config, cp.instanceId, now, effects)
}

/**
 * A lease is renewed once less than this many thirds of it remain (a third of it has passed):
 * two renewals in a row can be lost before the slot lapses. Kept as a count of thirds so the
 * arithmetic (lease × 2 / 3) is the one the traces were recorded with.
 */
export const LEASE_RENEW_REMAINING_THIRDS = 2

/** How long before its end, in ms, a lease of `leaseMs` is renewed. */
export const renewBeforeEndMs = (leaseMs: number): number => leaseMs * LEASE_RENEW_REMAINING_THIRDS / 3

/** Tick: waiting runs decide again where something changed; slot holders renew their lease. Returns whether a run waits. */
export function tickTurns(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): boolean {
  let waiting = false
  for (const run of state.runs.values()) {
    if (run.status === 'waiting') {
      waiting = true
      const check = state.gateChecks.get(run.runId)
      if (check && check.version === state.progress.get(run.instanceId)?.version && now < check.recheckAt) continue
      evaluateGate(state, config, run, now, effects)
    } else if (run.status === 'running' && run.leaseUntil !== undefined && run.leaseUntil - now < renewBeforeEndMs(leaseMsOf(state, run))) {
      renewLease(state, config, run, now, effects)
    }
  }
  return waiting
}

function renewLease(state: AgentState, config: AgentConfig, run: AgentRun, now: number, effects: AgentEffect[]): void {
  run.leaseUntil = now + leaseMsOf(state, run)
  const kr = knowledgeFor(state, run.instanceId)
  factFor(kr, run.group, run.position).lease = run.leaseUntil
  kr.version++
  publishProgress(state, config, run, 'renew', now, effects)
}

/**
 * Anti-entropy of the peer path: while the coordinator is away, a target gossips where its gated
 * runs stand again every this many ms (gossip is best effort: a message can be lost, or published
 * before a peer joined the mesh, and gossipsub's own repair reaches back three heartbeats only).
 * A target that missed a fact learns it within this bound, in ms, once it is meshed with the
 * author. Only instances that may still change a gate repeat: not once every target is known
 * done, nor past the last group's deadline.
 */
export const PEER_PROGRESS_REPEAT_MS = 5_000

/** Whether anyone may still wait on what this node knows of an instance (some target not known done, the last deadline not passed). */
function instanceOpen(state: AgentState, run: AgentRun, now: number): boolean {
  const job = state.jobs.get(run.jobId)
  if (!job) return false
  const body = job.body
  const k = state.progress.get(run.instanceId) ?? emptyKnowledge()
  for (let g = 0; g < body.resolved.groups.length; g++) {
    if (now < groupWindow(body, run.occurrenceAt, g).deadlineAt && groupTally(body, k, g, now).done < body.resolved.groups[g]!.size) return true
  }
  return false
}

/**
 * Whether this node takes part in a rollout that may still need its peers: a gated run (waiting,
 * running or done) of an unexpired job whose instance is still open. The agent shell turns to its
 * peers soon after losing the coordinator when this holds (PEER_ROUND_DELAY_MS), and much later
 * otherwise (PEER_ROUND_IDLE_DELAY_MS). O(runs held).
 */
export function waitsOnPeers(state: AgentState, now: number): boolean {
  for (const run of state.runs.values()) {
    if (!run.gated || !state.progress.has(run.instanceId)) continue
    const j = state.jobs.get(run.jobId)
    if (j && j.body.expiresAt > now && instanceOpen(state, run, now)) return true
  }
  return false
}

/**
 * Tick: the coordinator stopped answering: tell the other targets directly where this node's
 * gated runs stand, at once and then every PEER_PROGRESS_REPEAT_MS while it stays away (the
 * repeats only for instances still open).
 */
export function tickAway(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  if (!coordinatorAway(state, now)) { state.link.gossipAt = 0; return }
  if (state.link.gossipAt !== 0 && now < state.link.gossipAt) return
  const repeat = state.link.gossipAt !== 0
  state.link.gossipAt = now + PEER_PROGRESS_REPEAT_MS
  for (const run of state.runs.values()) {
    if (!run.gated || !state.progress.has(run.instanceId)) continue
    const j = state.jobs.get(run.jobId)
    if (!j || j.body.expiresAt <= now) continue
    if (repeat && !instanceOpen(state, run, now)) continue
    if (run.status === 'waiting') gossipProgress(state, config, run, 'ack', now, effects)
    else if (run.status === 'running') gossipProgress(state, config, run, 'start', now, effects)
    else gossipProgress(state, config, run, 'done', now, effects, run.status)
  }
}
