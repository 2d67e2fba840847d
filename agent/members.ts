// Membership, for the agent core: the node's own certificate (from the coordinator's replies) and
// the coordinator's revocation list (from replies and gossip). The runtime (and the simulator)
// present the certificate to peers and admit a peer only with checkMember (protocol/membership.ts).
import { NO_REVOCATIONS, openRevocations, type Revoked } from '../protocol/membership.js'
import { open, type MemberBody, type SignedEnvelope } from '../protocol/wire.js'

export interface AgentMembership {
  /** This node's certificate, as the coordinator signed it (persisted: peers need it while the coordinator is away). */
  certificate?: { body: MemberBody; envelope: SignedEnvelope }
  /** Keys of revoked nodes, from the newest signed list the node holds. */
  revoked: Revoked
  revocations?: SignedEnvelope
}

export const memberKeys = { certificate: 'member/certificate', revocations: 'member/revocations' }

export function emptyAgentMembership(): AgentMembership {
  return { revoked: NO_REVOCATIONS }
}

type Effect =
  | { type: 'persist'; puts: { key: string; value: unknown }[]; dels: string[] }
  | { type: 'log'; level: 'debug' | 'info' | 'warn'; msg: string; fields?: Record<string, unknown> }
  /** Peers with these keys were revoked: drop their connections and refuse them from now on. */
  | { type: 'revoked'; keys: string[] }

/** Takes this node's certificate from a reply: only one the coordinator signed for this node id and key. */
export function takeCertificate(m: AgentMembership, coordinatorKey: string, nodeId: string, publicKey: string, envelope: unknown, effects: { push(e: Effect): unknown }): void {
  const opened = open(envelope, [coordinatorKey])
  if (!opened.ok || opened.body.type !== 'member' || opened.body.nodeId !== nodeId || opened.body.key !== publicKey) {
    effects.push({ type: 'log', level: 'warn', msg: 'refused a membership certificate not issued to this node', fields: { reason: opened.ok ? opened.body.type : opened.reason } })
    return
  }
  if (m.certificate && m.certificate.body.expiresAt >= opened.body.expiresAt) return
  const first = !m.certificate
  m.certificate = { body: opened.body, envelope: envelope as SignedEnvelope }
  effects.push({ type: 'persist', puts: [{ key: memberKeys.certificate, value: m.certificate }], dels: [] })
  if (first) effects.push({ type: 'log', level: 'info', msg: 'enrolled: membership certificate received', fields: { nodeId, expiresAt: new Date(opened.body.expiresAt).toISOString() } })
}

/** Takes a newer revocation list; tells the runtime which keys to drop. */
export function takeRevocations(m: AgentMembership, coordinatorKey: string, ownKey: string, envelope: unknown, effects: { push(e: Effect): unknown }): void {
  const r = openRevocations(envelope, coordinatorKey)
  if (!r.ok) {
    effects.push({ type: 'log', level: 'warn', msg: `refused a revocation list: ${r.reason}` })
    return
  }
  if (r.revoked.version <= m.revoked.version) return
  const added = [...r.revoked.keys].filter((k) => !m.revoked.keys.has(k))
  m.revoked = r.revoked
  m.revocations = envelope as SignedEnvelope
  effects.push({ type: 'persist', puts: [{ key: memberKeys.revocations, value: envelope }], dels: [] })
  effects.push({ type: 'log', level: 'info', msg: 'revocation list updated', fields: { version: r.revoked.version, revoked: r.revoked.keys.size, added: added.length } })
  if (added.includes(ownKey)) effects.push({ type: 'log', level: 'warn', msg: 'this node was revoked by the coordinator: its results are refused; enrol it again with a new key' })
  if (added.length > 0) effects.push({ type: 'revoked', keys: added })
}

/** Restores a persisted membership record; false when the key is not one. */
export function restoreAgentMember(m: AgentMembership, coordinatorKey: string, k: string, v: unknown): boolean {
  if (k === memberKeys.certificate) m.certificate = v as AgentMembership['certificate']
  else if (k === memberKeys.revocations) {
    const r = openRevocations(v, coordinatorKey)
    if (r.ok) { m.revoked = r.revoked; m.revocations = v as SignedEnvelope }
  } else return false
  return true
}
