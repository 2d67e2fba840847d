// Coordinator-signed tickets and sync replies for the core tests: a node learns its place in a
// job (group and position, or null: not targeted) only from a ticket the coordinator signs.
import type { Identity } from '../../protocol/keys.js'
import { PROTOCOL_VERSION, seal, type SignedEnvelope, type TicketBody } from '../../protocol/wire.js'

export type Place = TicketBody['place']

/** A ticket for `nodeId` (registered with public key `key`) in job `jobId`, signed by `signer`. */
export function ticketEnvelope(signer: Identity, jobId: string, nodeId: string, key: string, place: Place, issuedAt = 0): SignedEnvelope {
  return seal(signer, { type: 'ticket', v: PROTOCOL_VERSION, jobId, nodeId, key, place, issuedAt })
}

/** A successful sync reply signed by `coordinator`, carrying `tickets` (and any jobs, acks or checkpoints given). */
export function syncReply(coordinator: Identity, fields: { tickets?: SignedEnvelope[]; jobs?: SignedEnvelope[]; ackRunIds?: string[]; checkpoints?: SignedEnvelope[] } = {}): SignedEnvelope {
  return seal(coordinator, { type: 'reply', v: PROTOCOL_VERSION, ok: true, ackRunIds: [], jobs: [], peers: [], tickets: [], checkpoints: [], ...fields })
}

/** A sync reply from `coordinator` carrying the one ticket it signs for (jobId, nodeId, key, place). */
export function ticketReply(coordinator: Identity, jobId: string, nodeId: string, key: string, place: Place): SignedEnvelope {
  return syncReply(coordinator, { tickets: [ticketEnvelope(coordinator, jobId, nodeId, key, place)] })
}
