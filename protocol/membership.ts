// Membership: who may be part of the mesh. A node joins with an enrolment token an admin created;
// the coordinator binds its node id to its key and signs a membership certificate. Agents admit
// a peer only on a valid certificate for the key its connection proved, so the check holds with
// the coordinator away. Pure: the caller supplies the time and the revocation list it holds.
import { createHash } from 'node:crypto'
import { peerIdOf } from './keys.js'
import { open, type MemberBody, type RevocationsBody } from './wire.js'

/** A certificate is valid this long after it was signed; the coordinator renews it while the node is connected. */
export const MEMBER_CERT_TTL_MS = 24 * 3_600_000
/** A connected node's certificate is renewed once it is older than this (in the next sync reply). */
export const MEMBER_RENEW_AFTER_MS = 3_600_000
/** A peer that has not shown a valid certificate (agents) or enrolled (coordinator) this long after connecting is disconnected. */
export const MEMBER_DEADLINE_MS = 10_000
/** Prefix of enrolment tokens, so a token pasted in the wrong place is recognisable. */
export const ENROLL_TOKEN_PREFIX = 'chorus_enroll_'

export type MemberCheck =
  | { ok: true; body: MemberBody }
  | { ok: false; reason: string }

/** What a node knows of revocations: the keys of revoked nodes (from the coordinator's signed list). */
export interface Revoked {
  version: number
  keys: ReadonlySet<string>
}

export const NO_REVOCATIONS: Revoked = { version: 0, keys: new Set() }

/**
 * Checks a peer's certificate: signed by the coordinator, for the key the connection proved
 * (`peerId`, derived from the key by noise), not expired, not revoked.
 */
export function checkMember(certificate: unknown, coordinatorKey: string, peerId: string, revoked: Revoked, now: number): MemberCheck {
  const opened = open(certificate, [coordinatorKey])
  if (!opened.ok) return { ok: false, reason: `certificate refused: ${opened.reason}` }
  const body = opened.body
  if (body.type !== 'member') return { ok: false, reason: `expected a membership certificate, got ${body.type}` }
  if (peerIdOf(body.key) !== peerId) return { ok: false, reason: `certificate of node ${body.nodeId} belongs to another key than this connection's (a replayed certificate)` }
  if (body.expiresAt <= now) return { ok: false, reason: `certificate of node ${body.nodeId} expired at ${new Date(body.expiresAt).toISOString()}` }
  if (revoked.keys.has(body.key)) return { ok: false, reason: `node ${body.nodeId} is revoked` }
  return { ok: true, body }
}

/** Reads a coordinator-signed revocation list, or says why not. */
export function openRevocations(envelope: unknown, coordinatorKey: string): { ok: true; body: RevocationsBody; revoked: Revoked } | { ok: false; reason: string } {
  const opened = open(envelope, [coordinatorKey])
  if (!opened.ok) return { ok: false, reason: opened.reason }
  if (opened.body.type !== 'revocations') return { ok: false, reason: `expected a revocation list, got ${opened.body.type}` }
  return { ok: true, body: opened.body, revoked: { version: opened.body.version, keys: new Set(opened.body.nodes.map((n) => n.key)) } }
}

/** Tokens are stored and compared only as this hash (they carry ≥ 128 random bits, so a plain SHA-256 suffices). */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex')
}
