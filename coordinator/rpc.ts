// The agents' requests (hello, sync, result) as they come in, the signed replies (cached by
// content in state.derived.replies), the definitions and tickets a sync hands out.
import { peerIdOf } from '../protocol/keys.js'
import { MAX_SYNC_JOBS, PROTOCOL_VERSION, type PeerInfo, type SignedEnvelope, type SyncRequestBody, open, openFromAuthenticatedPeer, seal } from '../protocol/wire.js'
import { REPLY_CACHE_MAX, derivedOf, placeIn, targets } from './derived.js'
import { certificateDue, certificateFor } from './members.js'
import { nodeOnAuthenticatedPeer, onHello, revocationsFor, touch } from './registry.js'
import { onResult } from './results.js'
import type { CoordinatorConfig, CoordinatorEffect, CoordinatorState, InstanceRecord, JobRecord, NodeRecord, RunRecord } from './state.js'
import { checkpointsFor, noteGated, tryHold } from './tally.js'

export type ReplyFields = { ok: boolean; error?: string; ackRunIds?: string[]; jobs?: SignedEnvelope[]; peers?: PeerInfo[]; tickets?: SignedEnvelope[]; checkpoints?: SignedEnvelope[]; certificate?: SignedEnvelope; revocations?: SignedEnvelope; pending?: boolean }

export function reply(state: CoordinatorState, config: CoordinatorConfig, requestId: string, fields: ReplyFields): CoordinatorEffect {
  const replyCache = state.derived.replies
  const body = { type: 'reply' as const, v: PROTOCOL_VERSION as typeof PROTOCOL_VERSION, ackRunIds: [] as string[], jobs: [] as SignedEnvelope[], peers: [] as PeerInfo[], tickets: [] as SignedEnvelope[], checkpoints: [] as SignedEnvelope[], ...fields }
  const cacheable = body.ackRunIds.length === 0 && body.jobs.length === 0 && body.peers.length === 0 && body.tickets.length === 0 && !body.certificate && !body.revocations && !body.pending
  if (!cacheable) return { type: 'reply_rpc', requestId, envelope: seal(config.identity, body) }
  const k = `${config.identity.publicKey}|${body.ok}|${body.error ?? ''}|${body.checkpoints.map((c) => c.sig).join(',')}`
  let envelope = replyCache.get(k)
  if (!envelope) {
    envelope = seal(config.identity, body)
    if (replyCache.size >= REPLY_CACHE_MAX) replyCache.delete(replyCache.keys().next().value!)
    replyCache.set(k, envelope)
  }
  return { type: 'reply_rpc', requestId, envelope }
}

/**
 * A node's ticket for a job: its place (or null, not targeted) and the key it registered with.
 * Cached in the job's derived entry (ed25519 is deterministic: a ticket signed again would be the same bytes).
 */
export function ticketFor(state: CoordinatorState, config: CoordinatorConfig, job: JobRecord, node: NodeRecord): SignedEnvelope {
  const cache = derivedOf(state, job).tickets
  let t = cache.get(node.nodeId)
  if (!t || t.key !== node.publicKey) {
    t = { key: node.publicKey, envelope: signTicket(config, job.jobId, job.createdAt, node, placeIn(state, job, node.nodeId) ?? null) }
    cache.set(node.nodeId, t)
  }
  return t.envelope
}

/** The one way a ticket is signed: at submit (inline in a small job) and on request give the same bytes. */
export function signTicket(config: CoordinatorConfig, jobId: string, issuedAt: number, node: NodeRecord, place: { group: number; position: number } | null): SignedEnvelope {
  return seal(config.identity, { type: 'ticket', v: PROTOCOL_VERSION, jobId, nodeId: node.nodeId, key: node.publicKey, place, issuedAt })
}

/** The signed definitions and states an agent should hold and does not: active or recent jobs that target it. */
export function envelopesFor(state: CoordinatorState, nodeId: string, now: number, ttlMs: number, known: readonly { jobId: string; version: number }[] = []): SignedEnvelope[] {
  const held = new Map(known.map((k) => [k.jobId, k.version]))
  const out: SignedEnvelope[] = []
  for (const job of state.jobs.values()) {
    const live = job.status === 'active' || job.createdAt + ttlMs > now
    if (!live || !targets(state, job, nodeId)) continue
    const version = held.get(job.jobId)
    if (version === undefined) out.push(job.envelope)
    const stateWorthSending = job.jobState.version > 1 || job.jobState.globalExceptions.length > 0
    if (stateWorthSending && (version ?? 0) < job.jobState.version) out.push(job.stateEnvelope)
  }
  return out.slice(-MAX_SYNC_JOBS)
}

export function onRpc(state: CoordinatorState, config: CoordinatorConfig, requestId: string, envelope: unknown, peerId: string, now: number, effects: CoordinatorEffect[], history?: { run?: RunRecord; instance?: InstanceRecord }): void {
  // Syncs (most of the traffic: watches, periodic syncs) from a transport-authenticated node skip
  // the second signature check; hellos and results (stored as evidence) are always verified.
  const peer = nodeOnAuthenticatedPeer(state, peerId)
  const fast = peer ? openFromAuthenticatedPeer(envelope, peer.publicKey) : undefined
  const opened = fast?.ok && fast.body.type === 'sync' && fast.body.nodeId === peer!.nodeId ? fast : open(envelope)
  if (!opened.ok) {
    effects.push({ type: 'log', level: 'warn', msg: `refused rpc: ${opened.reason}`, fields: { peerId } })
    effects.push(reply(state, config, requestId, { ok: false, error: opened.reason }))
    return
  }
  const body = opened.body
  switch (body.type) {
    case 'hello':
      if (peerIdOf(opened.signer) !== peerId || body.peerId !== peerId) {
        effects.push({ type: 'log', level: 'warn', msg: 'refused hello: not sent over the connection of its signing key', fields: { nodeId: body.nodeId, peerId } })
        effects.push(reply(state, config, requestId, { ok: false, error: 'a hello must come over the connection of the key that signs it' }))
        return
      }
      onHello(state, config, requestId, body, opened.signer, now, effects)
      return
    case 'result':
      onResult(state, config, requestId, body, opened.signer, now, effects, history)
      return
    case 'sync': {
      const node = state.nodes.get(body.nodeId)
      if (!node || node.publicKey !== opened.signer) {
        effects.push(reply(state, config, requestId, { ok: false, error: `unknown node ${body.nodeId} or key mismatch; send hello first` }))
        return
      }
      touch(state, node, now, effects)
      noteGated(state, config, body.nodeId, body.gated, now, effects)
      const jobs = envelopesFor(state, body.nodeId, now, config.jobTtlMs, body.known)
      const tickets = ticketsFor(state, config, node, jobs, body.known)
      const renew = certificateDue(body.certExpiresAt, now) ? { certificate: certificateFor(config.identity, node, now) } : {}
      const extra = { ...renew, ...revocationsFor(state, body.revocations) }
      if (body.watch && jobs.length === 0 && tickets.length === 0 && Object.keys(extra).length === 0 && tryHold(state, config, requestId, body.nodeId, body.gated, now)) return
      effects.push(reply(state, config, requestId, { ok: true, jobs, tickets, checkpoints: checkpointsFor(state, config, body.nodeId, now), ...extra }))
      return
    }
    default:
      effects.push(reply(state, config, requestId, { ok: false, error: `unexpected message type ${body.type}` }))
  }
}

/** Tickets for the jobs a sync reply sends and those the node holds without its ticket (bounded). */
export function ticketsFor(state: CoordinatorState, config: CoordinatorConfig, node: NodeRecord, sent: SignedEnvelope[], known: SyncRequestBody['known']): SignedEnvelope[] {
  const ids = new Set<string>()
  for (const k of known) if (!k.ticket) ids.add(k.jobId)
  for (const env of sent) {
    const o = open(env, [config.identity.publicKey])
    if (o.ok && o.body.type === 'job') ids.add(o.body.jobId)
  }
  const out: SignedEnvelope[] = []
  for (const id of ids) {
    const job = state.jobs.get(id)
    if (job) out.push(ticketFor(state, config, job, node))
    if (out.length >= MAX_SYNC_JOBS) break
  }
  return out
}
