// The link: what the agent core decides about talking to the coordinator and to member peers.
// Syncs and watches (what this node holds, where its gated runs stand), the coordinator's signed
// replies (acks, missed jobs, tickets, checkpoints, certificates, a request to pause), whether the
// coordinator counts as away, result resends, and what a peer may be shown while it is away.
import { takeCertificate, takeRevocations } from './members.js'
import { RPC_TIMEOUT_MS, WATCH_HOLD_MS } from '../protocol/timing.js'
import { MAX_GATED_IN_SYNC, MAX_SYNC_JOBS, PROTOCOL_VERSION, open, openFromAuthenticatedPeer, seal, type JobBody, type SignedEnvelope } from '../protocol/wire.js'
import { key, type AgentConfig, type AgentEffect, type AgentRun, type AgentState } from './state.js'
import { onJob, onTicket } from './jobs.js'
import { onCheckpoint } from './turns.js'

/** An unanswered sync is sent again after this long. */
export const SYNC_RETRY_MS = 5_000

/** A run still going this long after its start is reported (one sync): shorter runs send nothing more than their result. */
export const RUNNING_REPORT_MS = 1_000

/** Anti-entropy: even a node that misses nothing syncs this often (gossip can be lost). */
export const SYNC_PERIOD_MS = 60_000

/** What a watch may take beyond its hold and the rpc timeout before it counts as lost, in ms. */
export const WATCH_RETRY_MARGIN_MS = 5_000

/**
 * While a run waits for its turn the node keeps one watch (a sync the coordinator holds until a
 * checkpoint decides the run, at most WATCH_HOLD_MS = 60 s) in flight; one unanswered this long
 * is taken as lost and sent again.
 */
export const WATCH_RETRY_MS = WATCH_HOLD_MS + RPC_TIMEOUT_MS + WATCH_RETRY_MARGIN_MS

/** Jobs a sync request says it holds, so the reply carries only what is missing. */
export const MAX_KNOWN_IN_SYNC = 256

/**
 * The coordinator counts as away when a request has gone unanswered this long. Gated runs
 * then gossip their progress (with their tickets) to the other targets directly, so a rollout
 * goes on without the coordinator; while it answers, progress reaches it by sync and comes
 * back to every target as its checkpoints (O(1) per node instead of O(group)).
 */
export const COORDINATOR_AWAY_MS = 12_000

/** A request to the coordinator has gone unanswered for COORDINATOR_AWAY_MS. */
export function coordinatorAway(state: AgentState, now: number): boolean {
  return state.link.lastRequestAt > state.link.lastReplyAt && now - state.link.lastRequestAt >= COORDINATOR_AWAY_MS
}

export const startToReport = (run: AgentRun): boolean => run.status === 'running' && !run.startReported

/** Runs going for RUNNING_REPORT_MS: one sync tells the coordinator they are running (gated or not). */
export function reportLongRuns(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  let due = false
  for (const run of state.runs.values()) {
    if (!startToReport(run) || now - run.startedAt < RUNNING_REPORT_MS) continue
    run.startReported = true
    due = true
  }
  if (due) sendSync(state, config, now, effects)
}

/** Asks the coordinator for what this node missed, saying which jobs (and job-state versions) it holds. */
export function sendSync(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[], watch = false): void {
  state.sync.lastSentAt = now
  if (watch) state.sync.watchSentAt = now
  state.sync.ticketWanted = false
  const known: { jobId: string; version: number; ticket: boolean }[] = []
  for (const job of state.jobs.values()) known.push({ jobId: job.body.jobId, version: state.jobStates.get(job.body.jobId)?.body.version ?? 0, ticket: job.ticket !== undefined })
  // Jobs without a ticket first, so a bounded list never leaves out one this node waits on.
  known.sort((a, b) => Number(a.ticket) - Number(b.ticket))
  const gated: { instanceId: string; jobId: string; occurrenceAt: number; state: 'waiting' | 'running'; leaseUntil?: number; seq: number }[] = []
  for (const run of state.runs.values()) {
    const reported = run.status === 'running' && run.startReported === true
    if ((!run.gated && !reported) || (run.status !== 'waiting' && run.status !== 'running') || gated.length >= MAX_GATED_IN_SYNC) continue
    gated.push({
      instanceId: run.instanceId, jobId: run.jobId, occurrenceAt: run.occurrenceAt, state: run.status,
      ...(run.leaseUntil !== undefined ? { leaseUntil: run.leaseUntil } : {}), seq: state.progress.get(run.instanceId)?.checkpoint?.seq ?? 0,
    })
  }
  // A watch may be held WATCH_HOLD_MS: only silence beyond that says the coordinator is away.
  noteRequest(state, watch ? now + WATCH_HOLD_MS : now)
  effects.push({ type: 'send', kind: 'sync', envelope: seal(config.identity, { type: 'sync', v: PROTOCOL_VERSION, nodeId: config.nodeId, sentAt: now, known: known.slice(0, MAX_KNOWN_IN_SYNC), gated, watch, certExpiresAt: state.member.certificate?.body.expiresAt ?? 0, revocations: state.member.revoked.version }), ...(watch ? { waitMs: WATCH_HOLD_MS } : {}) })
}

/**
 * Acknowledged results whose outbox records await deletion, at most this many: one more is
 * written at once with the others (a bound on memory and on what a restart re-sends).
 */
export const MAX_DEFERRED_DELS = 256

/** An acknowledged result's outbox record waits at most this long for a batch to ride in, in ms. */
export const DEFERRED_DEL_MAX_MS = 10_000

/** Queues a store key for deletion with the next batch (see flushDeferredDels). */
export function deferDel(state: AgentState, storeKey: string, now: number): void {
  const d = state.deferredDels
  if (d.keys.length === 0) d.flushBy = now + DEFERRED_DEL_MAX_MS
  d.keys.push(storeKey)
}

/**
 * After an event: the deferred deletions join the event's own writes (the runtime commits all
 * of an event's persists as one batch), or are written by themselves once MAX_DEFERRED_DELS
 * are waiting or the oldest has waited DEFERRED_DEL_MAX_MS.
 */
export function flushDeferredDels(state: AgentState, now: number, effects: AgentEffect[]): void {
  const d = state.deferredDels
  if (d.keys.length === 0) return
  if (d.keys.length < MAX_DEFERRED_DELS && now < d.flushBy && !effects.some((e) => e.type === 'persist')) return
  effects.push({ type: 'persist', puts: [], dels: d.keys })
  state.deferredDels = { keys: [], flushBy: 0 }
}

export function noteRequest(state: AgentState, at: number): void {
  // Only the first unanswered request counts: a stream of them must not keep "away" from ever arriving.
  if (state.link.lastRequestAt <= state.link.lastReplyAt) state.link.lastRequestAt = at
}

export function onReply(state: AgentState, config: AgentConfig, envelope: unknown, now: number, effects: AgentEffect[], to?: 'sync' | 'result' | 'hello', authenticated = false): void {
  // Over a link that proved the coordinator's key, its signature would prove the same author of the same bytes again.
  const opened = authenticated ? openFromAuthenticatedPeer(envelope, config.coordinatorKey) : open(envelope, [config.coordinatorKey])
  if (!opened.ok || opened.body.type !== 'reply') {
    effects.push({ type: 'log', level: 'warn', msg: `refused reply: ${opened.ok ? 'type ' + opened.body.type : opened.reason}` })
    return
  }
  const reply = opened.body
  state.link.lastReplyAt = now
  state.link.gossipAt = 0
  if (to === 'sync') state.sync.watchSentAt = 0
  if (to === 'sync' && reply.ok) {
    state.sync.wanted = false
    state.sync.lastOkAt = now
  }
  // An acknowledged result's record goes with the next batch the agent writes (flushDeferredDels):
  // until then a restart only re-sends what the coordinator acknowledges again.
  for (const runId of reply.ackRunIds) {
    if (state.outbox.delete(runId)) deferDel(state, key.outbox(runId), now)
  }
  if (!reply.ok) effects.push({ type: 'log', level: 'warn', msg: `coordinator refused a request: ${reply.error ?? 'no reason given'}` })
  if (reply.retryAfterMs) {
    // The coordinator sheds load: nothing goes to it before then (the watch it did not hold counts as lost).
    state.link.quietUntil = Math.max(state.link.quietUntil, now + reply.retryAfterMs)
    state.sync.wanted = true
    state.sync.watchSentAt = 0
  }
  if (reply.certificate) takeCertificate(state.member, config.coordinatorKey, config.nodeId, config.identity.publicKey, reply.certificate, effects)
  if (reply.revocations) takeRevocations(state.member, config.coordinatorKey, config.identity.publicKey, reply.revocations, effects)
  for (const job of reply.jobs) onJob(state, config, job, 'sync', now, effects)
  for (const t of reply.tickets) onTicket(state, config, t, now, effects)
  for (const c of reply.checkpoints) {
    const cp = open(c, [config.coordinatorKey])
    if (cp.ok && cp.body.type === 'checkpoint') onCheckpoint(state, config, cp.body, now, effects)
  }
}

/** The coordinator became reachable: every queued result is sent now, and a sync asks for what this node missed. */
export function onConnected(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  for (const entry of state.outbox.values()) {
    entry.nextSendAt = now + entry.intervalMs
    noteRequest(state, now)
    effects.push({ type: 'send', kind: 'result', runId: entry.runId, envelope: entry.envelope })
  }
  state.sync.wanted = true
  state.sync.watchSentAt = 0
  // The sync says where this node's gated runs stand; its reply brings their checkpoints.
  sendSync(state, config, now, effects)
}

/**
 * Nothing comes back on a closed connection: a held watch no longer counts as in flight, and
 * "away" is counted from now, not from the end of the watch's hold (which left waiting targets
 * stalled for WATCH_HOLD_MS + RPC_TIMEOUT_MS after a coordinator died).
 */
export function onDisconnected(state: AgentState, now: number): void {
  state.sync.watchSentAt = 0
  state.link.lastRequestAt = state.link.lastRequestAt > state.link.lastReplyAt ? Math.min(state.link.lastRequestAt, now) : now
}

/** Tick: a sync when one is wanted (or anti-entropy is due), else a watch while a run waits; none while the coordinator asked for a pause. */
export function tickSync(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[], waiting: boolean): void {
  // A watch in flight is a sync the coordinator holds: it answers with whatever the node misses.
  if (now - state.sync.lastOkAt >= SYNC_PERIOD_MS && state.sync.watchSentAt === 0) state.sync.wanted = true
  const sinceSent = now - state.sync.lastSentAt
  const quiet = now < state.link.quietUntil // an overloaded coordinator asked for a pause
  if (!quiet && state.sync.wanted && sinceSent >= SYNC_RETRY_MS) sendSync(state, config, now, effects)
  else if (!quiet && waiting && (state.sync.watchSentAt === 0 || now - state.sync.watchSentAt >= WATCH_RETRY_MS)) sendSync(state, config, now, effects, true)
}

/** Tick: unacknowledged results are sent again, the interval doubling up to resendMaxMs (not while the coordinator asked for a pause). */
export function tickResend(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  const quiet = now < state.link.quietUntil
  for (const entry of state.outbox.values()) {
    if (quiet || entry.nextSendAt > now) continue
    entry.intervalMs = Math.min(config.resendMaxMs, entry.intervalMs * 2)
    entry.nextSendAt = now + entry.intervalMs
    noteRequest(state, now)
    effects.push({ type: 'send', kind: 'result', runId: entry.runId, envelope: entry.envelope })
  }
}

/** After any event: jobs arrived without this node's ticket, so one sync asks for all of them. */
export function askForMissingTickets(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  if (!state.sync.ticketWanted) return
  state.sync.ticketWanted = false
  for (const job of state.jobs.values()) {
    if (job.ticket || job.body.expiresAt <= now) continue
    sendSync(state, config, now, effects)
    break
  }
}

/**
 * What this node tells a member peer that asks while the coordinator is away: the definitions
 * of jobs it can show the peer is targeted by (small jobs carry every target's ticket), and
 * newer states of the jobs the peer says it holds. A peer learns nothing about jobs that do
 * not concern it (bounded by MAX_SYNC_JOBS).
 */
export function envelopesForPeer(state: AgentState, peer: { nodeId: string; key: string }, known: readonly { jobId: string; version: number }[], now: number): SignedEnvelope[] {
  const held = new Map(known.map((k) => [k.jobId, k.version]))
  const out: SignedEnvelope[] = []
  for (const job of state.jobs.values()) {
    if (job.body.expiresAt <= now) continue
    const version = held.get(job.body.jobId)
    if (version === undefined && !inlineTicketNames(job.body, peer)) continue
    if (version === undefined) out.push(job.envelope)
    const st = state.jobStates.get(job.body.jobId)
    if (st && st.body.version > (version ?? 0)) out.push(st.envelope)
  }
  return out.slice(-MAX_SYNC_JOBS)
}

/** Whether a job's inline tickets (covered by the definition's signature) place this node and key. */
function inlineTicketNames(body: JobBody, peer: { nodeId: string; key: string }): boolean {
  const t = body.resolved.tickets?.find((x) => x.body.includes(`"nodeId":${JSON.stringify(peer.nodeId)}`))
  if (!t) return false
  const o = openFromAuthenticatedPeer(t, t.signer)
  return o.ok && o.body.type === 'ticket' && o.body.nodeId === peer.nodeId && o.body.key === peer.key && o.body.place !== null
}
