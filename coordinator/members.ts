// Who belongs to the fleet, for the coordinator core: enrolment tokens, enrolment (with optional
// approval, as salt-key), membership certificates and revocation. Pure like the rest of the core:
// the runtime supplies tokens' randomness (only their hashes arrive here) and the time.
import type { Identity } from '../protocol/keys.js'
import { MEMBER_CERT_TTL_MS, MEMBER_RENEW_AFTER_MS, tokenHash } from '../protocol/membership.js'
import { MAX_REVOKED, PROTOCOL_VERSION, seal, type HelloBody, type RevocationsBody, type SignedEnvelope } from '../protocol/wire.js'

/** An enrolment token as stored: only its hash, how often it may still be used, and the attributes it fixes. */
export interface EnrollmentRecord {
  id: string
  hash: string
  /** Enrolments left (null: any number until it expires). */
  usesLeft: number | null
  used: number
  expiresAt?: number
  /** Attributes fixed for every node this token enrols: the agent cannot override them. */
  attributes: Record<string, string>
  createdAt: number
  /** Who created it (the API token's name), for the audit trail. */
  createdBy?: string
}

/** What the API shows of an enrolment token (never its hash). */
export function enrollmentSummary(e: EnrollmentRecord): Record<string, unknown> {
  return { id: e.id, usesLeft: e.usesLeft, used: e.used, attributes: e.attributes, createdAt: new Date(e.createdAt).toISOString(), ...(e.expiresAt !== undefined ? { expiresAt: new Date(e.expiresAt).toISOString() } : {}) }
}

/** An enrolment waiting for `chorus nodes approve` (approval mode). */
export interface PendingNode {
  nodeId: string
  key: string
  peerId: string
  enrollment: string
  attributes: Record<string, string>
  facts: Record<string, string>
  requestedAt: number
}

export interface RevokedNode {
  nodeId: string
  key: string
  at: number
}

export interface Membership {
  enrollments: Map<string, EnrollmentRecord>
  pending: Map<string, PendingNode>
  revoked: Map<string, RevokedNode>
  /** The signed revocation list agents hold (absent until the first revocation). */
  revocations?: { body: RevocationsBody; envelope: SignedEnvelope }
}

export const MAX_ENROLLMENTS = 1_000
export const MAX_PENDING_NODES = 10_000

export const memberKey = {
  enrollment: (id: string) => `enroll/${id}`,
  pending: (id: string) => `pending/${id}`,
  revoked: (id: string) => `revoked/${id}`,
  revocations: 'revocations',
}

/** An enrolment record for a token the caller drew (the runtime from crypto randomness, the simulator from its seed). */
export function newEnrollment(o: { id: string; token: string; uses?: number; ttlMs?: number; attributes?: Record<string, string>; createdBy?: string }, now: number): EnrollmentRecord {
  return {
    id: o.id, hash: tokenHash(o.token), usesLeft: o.uses ?? null, used: 0, attributes: o.attributes ?? {}, createdAt: now,
    ...(o.ttlMs !== undefined ? { expiresAt: now + o.ttlMs } : {}), ...(o.createdBy ? { createdBy: o.createdBy } : {}),
  }
}

export function emptyMembership(): Membership {
  return { enrollments: new Map(), pending: new Map(), revoked: new Map() }
}

/** Restores one stored record into `m`; false when the key is not a membership record. */
export function restoreMemberRecord(m: Membership, k: string, v: unknown): boolean {
  if (k.startsWith('enroll/')) { const r = v as EnrollmentRecord; m.enrollments.set(r.id, r) }
  else if (k.startsWith('pending/')) { const r = v as PendingNode; m.pending.set(r.nodeId, r) }
  else if (k.startsWith('revoked/')) { const r = v as RevokedNode; m.revoked.set(r.nodeId, r) }
  else if (k === memberKey.revocations) m.revocations = v as Membership['revocations']
  else return false
  return true
}

export type Puts = { key: string; value: unknown }[]

/**
 * What a hello from a node that is not enrolled may do: enrol with a valid token (or wait for
 * approval), or nothing. A refused hello changes no state.
 */
export type Admission =
  | { kind: 'refused'; reason: string }
  | { kind: 'pending'; record: PendingNode; puts: Puts }
  | { kind: 'enrolled'; enrollment: EnrollmentRecord; attributes: Record<string, string>; puts: Puts }

/** The caller (the core's rpc handler) has checked that the hello came over its signing key's own connection. */
export function admit(m: Membership, body: HelloBody, signer: string, requireApproval: boolean, now: number): Admission {
  const revoked = m.revoked.get(body.nodeId)
  if (revoked && revoked.key === signer) return { kind: 'refused', reason: `node ${body.nodeId} was revoked at ${new Date(revoked.at).toISOString()}; enrol it again with a new key` }
  const pending = m.pending.get(body.nodeId)
  if (pending) {
    if (pending.key !== signer) return { kind: 'refused', reason: `node id ${body.nodeId} awaits approval with another key` }
    return { kind: 'pending', record: pending, puts: [] }
  }
  if (!body.enrollToken) return { kind: 'refused', reason: `node ${body.nodeId} is not enrolled: start the agent with --enroll-token (an admin creates one with chorus enroll create)` }
  const found = findEnrollment(m, body.enrollToken, now)
  if ('reason' in found) return { kind: 'refused', reason: found.reason }
  if (requireApproval && m.pending.size >= MAX_PENDING_NODES) return { kind: 'refused', reason: `too many enrolments await approval (${MAX_PENDING_NODES}); approve or reject some first` }
  const enrollment: EnrollmentRecord = { ...found, used: found.used + 1, usesLeft: found.usesLeft === null ? null : found.usesLeft - 1 }
  const puts: Puts = [{ key: memberKey.enrollment(enrollment.id), value: enrollment }]
  m.enrollments.set(enrollment.id, enrollment)
  if (!requireApproval) return { kind: 'enrolled', enrollment, attributes: enrollment.attributes, puts }
  const record: PendingNode = { nodeId: body.nodeId, key: signer, peerId: body.peerId, enrollment: enrollment.id, attributes: enrollment.attributes, facts: body.facts, requestedAt: now }
  m.pending.set(body.nodeId, record)
  puts.push({ key: memberKey.pending(body.nodeId), value: record })
  return { kind: 'pending', record, puts }
}

function findEnrollment(m: Membership, token: string, now: number): EnrollmentRecord | { reason: string } {
  const hash = tokenHash(token)
  for (const e of m.enrollments.values()) {
    if (e.hash !== hash) continue
    if (e.expiresAt !== undefined && e.expiresAt <= now) return { reason: `enrolment token ${e.id} expired at ${new Date(e.expiresAt).toISOString()}` }
    if (e.usesLeft !== null && e.usesLeft <= 0) return { reason: `enrolment token ${e.id} is used up (${e.used} enrolments)` }
    return e
  }
  return { reason: 'unknown enrolment token (create one with chorus enroll create)' }
}

/** A fresh membership certificate for a node. */
export function certificateFor(identity: Identity, node: { nodeId: string; publicKey: string; attributes?: Record<string, string> }, now: number): SignedEnvelope {
  return seal(identity, { type: 'member', v: PROTOCOL_VERSION, nodeId: node.nodeId, key: node.publicKey, attributes: node.attributes ?? {}, issuedAt: now, expiresAt: now + MEMBER_CERT_TTL_MS })
}

/** Whether a node holding a certificate that expires at `expiresAt` should get a new one now. */
export function certificateDue(expiresAt: number, now: number): boolean {
  return expiresAt - now < MEMBER_CERT_TTL_MS - MEMBER_RENEW_AFTER_MS
}

/**
 * Revokes a node: it joins the revoked set and a new signed revocation list is made (entries
 * older than a certificate's lifetime are left out: the certificates they could hold have expired).
 */
export function revoke(m: Membership, identity: Identity, node: { nodeId: string; publicKey: string }, now: number): Puts {
  const entry: RevokedNode = { nodeId: node.nodeId, key: node.publicKey, at: now }
  m.revoked.set(node.nodeId, entry)
  const recent = [...m.revoked.values()].filter((r) => r.at > now - MEMBER_CERT_TTL_MS).slice(-MAX_REVOKED)
  const body: RevocationsBody = { type: 'revocations', v: PROTOCOL_VERSION, version: (m.revocations?.body.version ?? 0) + 1, nodes: recent, issuedAt: now }
  m.revocations = { body, envelope: seal(identity, body) }
  return [{ key: memberKey.revoked(node.nodeId), value: entry }, { key: memberKey.revocations, value: m.revocations }]
}

/** Facts as the registry holds them: what the agent reports, with the token's fixed attributes over them. */
export function factsWith(facts: Record<string, string>, fixed: Record<string, string> | undefined): Record<string, string> {
  return fixed ? { ...facts, ...fixed } : facts
}
