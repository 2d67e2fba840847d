// The node registry: hellos (enrolment, approval, rate limit), contacts, revocation, the mesh
// peers a new agent is introduced to, and the selection of nodes by filters and saved lists.
import { runIdFor } from '../protocol/ids.js'
import { peerIdOf } from '../protocol/keys.js'
import type { JobTemplate } from '../protocol/template.js'
import { type HelloBody, MAX_PEERS_SHARED, MAX_TARGET_NODES, type PeerInfo, type SignedEnvelope } from '../protocol/wire.js'
import { auditPut } from './admin.js'
import { MAX_ENROLLMENTS, admit, certificateFor, enrollmentSummary, factsWith, memberKey, revoke } from './members.js'
import { setRunStatus, settleInstance } from './results.js'
import { reply } from './rpc.js'
import { type CoordinatorConfig, type CoordinatorEffect, type CoordinatorEvent, type CoordinatorState, type NodeRecord, Pos, type SubmitProblem, TERMINAL, type Targets } from './state.js'
import { key } from './storekeys.js'
import { answerWatcher, noteProgress } from './tally.js'
import { type AttributeConstraint, type SkillConstraint, type TargetWarning, compileAttribute, compileSkill, matchQuery, parseQuery, unknownTargetWarnings } from './targeting.js'

/**
 * The nodes of the registry a filter selects, sorted by node id (the rollout order), or the
 * problems with the filter, each with the path below `path`.
 */
export function selectNodes(state: CoordinatorState, filter: { constraints?: { attributes?: AttributeConstraint[]; skills?: SkillConstraint[] }; query?: unknown } | null | undefined, path: string): { nodes: string[] } | { problems: SubmitProblem[] } {
  const problems: SubmitProblem[] = []
  const tests: ((n: MatchView) => boolean)[] = []
  ;(filter?.constraints?.attributes ?? []).forEach((a, ai) => {
    const m = compileAttribute(a)
    if (typeof m === 'function') tests.push((n) => m(n.withNode))
    else problems.push({ path: `${path}.constraints.attributes[${ai}].${m.field}`, message: m.error })
  })
  ;(filter?.constraints?.skills ?? []).forEach((c, ci) => {
    const m = compileSkill(c)
    if (typeof m === 'function') tests.push((n) => m(n.skills))
    else problems.push({ path: `${path}.constraints.skills[${ci}].version`, message: m.error })
  })
  if (filter?.query !== undefined) {
    if (typeof filter.query !== 'string') problems.push({ path: `${path}.query`, message: 'expected a search query string such as "role:webapp AND env:prod"' })
    else {
      const q = parseQuery(filter.query)
      if (q.ok) tests.push((n) => matchQuery(q.query, n))
      else problems.push({ path: `${path}.query`, message: q.message })
    }
  }
  if (problems.length > 0) return { problems }
  return { nodes: [...state.nodes.values()].filter((n) => { const v = matchView(n); return tests.every((t) => t(v)) }).map((n) => n.nodeId).sort() }
}

export interface MatchView { nodeId: string; facts: Record<string, string>; skills: Record<string, string[]>; withNode: Record<string, string> }

/** A node's facts and skills without a prototype: a lookup of "constructor" or "__proto__" finds only what the node has. */
export function matchView(n: NodeRecord): MatchView {
  const facts = Object.assign(Object.create(null) as Record<string, string>, n.facts)
  return { nodeId: n.nodeId, facts, skills: Object.assign(Object.create(null) as Record<string, string[]>, n.skills), withNode: Object.assign(Object.create(null) as Record<string, string>, facts, { node: n.nodeId }) }
}

/** An unknown saved list or filter is refused with this many of the known names. */
export const KNOWN_NAMES_SHOWN = 10

/** Resolves a template's targets against the registry: one node list per group, in rollout order. */
export function resolveTargets(state: CoordinatorState, template: JobTemplate): Targets | { problems: SubmitProblem[] } {
  const problems: SubmitProblem[] = []
  const groups: { nodes: string[] }[] = []
  const taken = new Map<string, number>()
  template.target.groups.forEach((g, gi) => {
    const path = `target.groups[${gi}]`
    let nodes: string[] = []
    const select = (filter: Parameters<typeof selectNodes>[1], at: string) => {
      const r = selectNodes(state, filter, at)
      if ('problems' in r) problems.push(...r.problems)
      else nodes = r.nodes
    }
    switch (g.nodeListType) {
      case 'nodes':
        nodes = [...new Set(g.nodeIdentifiers ?? [])]
        break
      case 'filter':
        select(g.filter as Parameters<typeof selectNodes>[1], `${path}.filter`)
        break
      case 'savedList': {
        const list = state.lists.get(String(g.listId))
        if (!list) problems.push({ path: `${path}.listId`, message: `unknown saved list ${JSON.stringify(g.listId)}; known lists: ${[...state.lists.keys()].slice(0, KNOWN_NAMES_SHOWN).join(', ') || 'none'} (chorus lists)` })
        else nodes = [...list.nodes]
        break
      }
      case 'savedFilter': {
        const f = state.filters.get(String(g.filterId))
        if (!f) problems.push({ path: `${path}.filterId`, message: `unknown saved filter ${JSON.stringify(g.filterId)}; known filters: ${[...state.filters.keys()].slice(0, KNOWN_NAMES_SHOWN).join(', ') || 'none'} (chorus filters)` })
        else select(f, `${path}.filterId(${f.id})`)
        break
      }
    }
    const kept: string[] = []
    for (const n of nodes) {
      // A node belongs to the first group that names it: it runs the job once. A revoked node runs nothing.
      if (taken.has(n) || (state.members.revoked.has(n) && !state.nodes.has(n))) continue
      taken.set(n, gi)
      kept.push(n)
    }
    if (kept.length > MAX_TARGET_NODES) problems.push({ path, message: `${kept.length} nodes exceed the limit of ${MAX_TARGET_NODES} per group` })
    groups.push({ nodes: kept })
  })
  if (problems.length > 0) return { problems }
  if (groups.every((g) => g.nodes.length === 0)) return { problems: [{ path: 'target.groups', message: 'the target matches no node; check the node ids or filters (`chorus nodes` lists the known nodes)' }] }
  const keys: Record<string, string> = {}
  for (const g of groups) for (const n of g.nodes) {
    const rec = state.nodes.get(n)
    if (rec) keys[n] = rec.publicKey
  }
  return { groups, keys }
}

/** Target node ids this coordinator has never seen (plan and submit warn about them). */
export function targetWarnings(state: CoordinatorState, template: JobTemplate): TargetWarning[] {
  return unknownTargetWarnings(template.target.groups, (id) => state.lists.get(id)?.nodes, (id) => state.nodes.has(id))
}

/**
 * The registered node a connection belongs to, when the transport authenticated it: the peer id
 * libp2p's noise handshake proved is the one derived from the node's registered key.
 */
export function nodeOnAuthenticatedPeer(state: CoordinatorState, peerId: string): NodeRecord | undefined {
  const nodeId = state.byPeer.get(peerId)
  const node = nodeId === undefined ? undefined : state.nodes.get(nodeId)
  return node && node.peerId === peerId && peerIdOf(node.publicKey) === peerId ? node : undefined
}

/** Node records written at most this often for a mere contact (lastSeenAt is kept in memory on every one). */
export const NODE_TOUCH_PERSIST_MS = 60_000

export function touch(state: CoordinatorState, node: NodeRecord, now: number, effects: CoordinatorEffect[]): void {
  node.lastSeenAt = now
  state.connected.add(node.nodeId)
  if (now - (state.touchPersistedAt.get(node.nodeId) ?? 0) < NODE_TOUCH_PERSIST_MS) return
  state.touchPersistedAt.set(node.nodeId, now)
  effects.push({ type: 'persist', puts: [{ key: key.node(node.nodeId), value: node }], dels: [] })
}

export function onHello(state: CoordinatorState, config: CoordinatorConfig, requestId: string, body: HelloBody, signer: string, now: number, effects: CoordinatorEffect[]): void {
  const existing = state.nodes.get(body.nodeId)
  const refuse = (reason: string) => {
    effects.push({ type: 'log', level: 'warn', msg: `refused hello: ${reason}`, fields: { nodeId: body.nodeId, peerId: body.peerId } })
    effects.push(reply(state, config, requestId, { ok: false, error: reason }))
  }
  if (existing && existing.publicKey !== signer) return refuse(`node id ${body.nodeId} is enrolled with another key`)
  if (existing && !helloAllowed(state, body.nodeId, now)) return refuse(`too many hellos from ${body.nodeId}: at most ${MAX_HELLOS_PER_WINDOW} a minute; redial later`)
  if (existing) return registerContact(state, config, requestId, existing, { body, signer, attributes: existing.attributes, enrolledWith: existing.enrolledWith }, now, effects)
  const holder = state.byPeer.get(peerIdOf(signer))
  if (holder !== undefined && holder !== body.nodeId) return refuse(`this key is enrolled as node ${holder}; one key holds one node id`)
  const a = admit(state.members, body, signer, config.requireApproval === true, now)
  if (a.kind === 'refused') return refuse(a.reason)
  if (a.puts.length > 0) effects.push({ type: 'persist', puts: a.puts, dels: [] })
  // A node's enrolment is a state change like an operator's: audited under the token it used.
  if (a.puts.length > 0) effects.push(auditPut(now, requestId, { token: `enrollment:${a.kind === 'pending' ? a.record.enrollment : a.enrollment.id}`, role: 'node', action: a.kind === 'pending' ? 'node.enroll_request' : 'node.enroll', object: body.nodeId, outcome: a.kind === 'pending' ? 'awaits approval' : 'ok' }))
  if (a.kind === 'pending') {
    if (a.puts.length > 0) effects.push({ type: 'log', level: 'info', msg: 'enrolment awaits approval (chorus nodes approve)', fields: { nodeId: body.nodeId, enrollment: a.record.enrollment } })
    effects.push(reply(state, config, requestId, { ok: false, pending: true, error: `enrolment of ${body.nodeId} awaits an admin's approval (chorus nodes approve ${body.nodeId})` }))
    return
  }
  effects.push({ type: 'log', level: 'info', msg: 'node enrolled', fields: { nodeId: body.nodeId, peerId: body.peerId, enrollment: a.enrollment.id } })
  registerContact(state, config, requestId, undefined, { body, signer, attributes: a.attributes, enrolledWith: a.enrollment.id }, now, effects)
}

/** Hellos one enrolled node may send in HELLO_WINDOW_MS (an agent sends one per connection); more are refused and change nothing. */
export const MAX_HELLOS_PER_WINDOW = 12

export const HELLO_WINDOW_MS = 60_000

export function helloAllowed(state: CoordinatorState, nodeId: string, now: number): boolean {
  const w = state.hellos.get(nodeId)
  if (!w || now - w.since >= HELLO_WINDOW_MS) { state.hellos.set(nodeId, { since: now, count: 1 }); return true }
  w.count++
  return w.count <= MAX_HELLOS_PER_WINDOW
}

/** Records an enrolled node's hello (facts, addresses, skills) and answers with its certificate and mesh peers. */
export function registerContact(state: CoordinatorState, config: CoordinatorConfig, requestId: string, existing: NodeRecord | undefined, hello: { body: HelloBody; signer: string; attributes?: Record<string, string>; enrolledWith?: string }, now: number, effects: CoordinatorEffect[]): void {
  const { body, attributes, enrolledWith } = hello
  const node: NodeRecord = {
    nodeId: body.nodeId, publicKey: hello.signer, peerId: body.peerId, facts: factsWith(body.facts, attributes), agentVersion: body.agentVersion,
    addrs: body.addrs, skills: body.skills, firstSeenAt: existing?.firstSeenAt ?? now, lastSeenAt: now,
    ...(attributes && Object.keys(attributes).length > 0 ? { attributes } : {}), ...(enrolledWith ? { enrolledWith } : {}),
  }
  state.nodes.set(body.nodeId, node)
  if (!existing && state.pool.length === state.nodes.size - 1) state.pool.push(body.nodeId)
  if (!existing) state.hellos.set(body.nodeId, { since: now, count: 1 })
  if (existing && existing.peerId !== node.peerId) state.byPeer.delete(existing.peerId)
  state.byPeer.set(node.peerId, node.nodeId)
  state.touchPersistedAt.set(node.nodeId, now)
  state.connected.add(body.nodeId)
  effects.push({ type: 'persist', puts: [{ key: key.node(body.nodeId), value: node }], dels: [] })
  effects.push(reply(state, config, requestId, { ok: true, peers: meshPeersFor(state, body.nodeId), certificate: certificateFor(config.identity, node, now), ...revocationsFor(state, 0) }))
}

/** The signed revocation list for a reply, when the node holds an older version. */
export function revocationsFor(state: CoordinatorState, heldVersion: number): { revocations?: SignedEnvelope } {
  const r = state.members.revocations
  return r && r.body.version > heldVersion ? { revocations: r.envelope } : {}
}

export type MembershipEvent = Extract<CoordinatorEvent, { type: 'create_enrollment' | 'delete_enrollment' | 'revoke_node' | 'approve_node' | 'reject_node' }>

export function onMembership(state: CoordinatorState, config: CoordinatorConfig, event: MembershipEvent, now: number, effects: CoordinatorEffect[]): void {
  const m = state.members
  const answer = (outcome: Extract<CoordinatorEffect, { type: 'reply_admin' }>['outcome'], puts: { key: string; value: unknown }[] = [], dels: string[] = []) => {
    if (puts.length > 0 || dels.length > 0) effects.push({ type: 'persist', puts, dels })
    effects.push({ type: 'reply_admin', requestId: event.requestId, outcome })
  }
  switch (event.type) {
    case 'create_enrollment': {
      const e = event.enrollment
      if (m.enrollments.has(e.id)) return answer({ ok: false, status: 409, error: `an enrolment token named ${e.id} exists; choose another --name or delete it` })
      if (m.enrollments.size >= MAX_ENROLLMENTS) return answer({ ok: false, status: 409, error: `at most ${MAX_ENROLLMENTS} enrolment tokens; delete used ones first` })
      m.enrollments.set(e.id, e)
      return answer({ ok: true, detail: enrollmentSummary(e) }, [{ key: memberKey.enrollment(e.id), value: e }])
    }
    case 'delete_enrollment':
      if (!m.enrollments.delete(event.id)) return answer({ ok: false, status: 404, error: `no enrolment token ${event.id}` })
      return answer({ ok: true, detail: { deleted: event.id } }, [], [memberKey.enrollment(event.id)])
    case 'approve_node': {
      const p = m.pending.get(event.nodeId)
      if (!p) return answer({ ok: false, status: 404, error: `no enrolment of ${event.nodeId} awaits approval (chorus nodes pending)` })
      if (state.nodes.has(p.nodeId)) return answer({ ok: false, status: 409, error: `node id ${p.nodeId} is enrolled already` })
      m.pending.delete(p.nodeId)
      const node: NodeRecord = { nodeId: p.nodeId, publicKey: p.key, peerId: p.peerId, facts: factsWith(p.facts, p.attributes), agentVersion: '', addrs: [], skills: {}, firstSeenAt: now, lastSeenAt: now, attributes: p.attributes, enrolledWith: p.enrollment }
      state.nodes.set(node.nodeId, node)
      state.byPeer.set(node.peerId, node.nodeId)
      effects.push({ type: 'log', level: 'info', msg: 'node enrolled (approved)', fields: { nodeId: node.nodeId } })
      return answer({ ok: true, detail: { nodeId: node.nodeId, approved: true } }, [{ key: key.node(node.nodeId), value: node }], [memberKey.pending(node.nodeId)])
    }
    case 'reject_node':
      if (!m.pending.delete(event.nodeId)) return answer({ ok: false, status: 404, error: `no enrolment of ${event.nodeId} awaits approval (chorus nodes pending)` })
      return answer({ ok: true, detail: { nodeId: event.nodeId, rejected: true } }, [], [memberKey.pending(event.nodeId)])
    case 'revoke_node': {
      const node = state.nodes.get(event.nodeId)
      if (!node) return answer({ ok: false, status: 404, error: `no enrolled node ${event.nodeId} (chorus nodes)` })
      const puts = revoke(m, config.identity, node, now)
      state.nodes.delete(node.nodeId)
      state.byPeer.delete(node.peerId)
      state.connected.delete(node.nodeId)
      state.hellos.delete(node.nodeId)
      for (const w of state.watches.queue) if (w.nodeId === node.nodeId) answerWatcher(state, config, w, now, effects)
      closeRunsOf(state, config, node.nodeId, `node revoked at ${new Date(now).toISOString()}: its results are refused`, now, effects, puts)
      effects.push({ type: 'log', level: 'warn', msg: 'node revoked', fields: { nodeId: node.nodeId, peerId: node.peerId } })
      effects.push({ type: 'publish', envelope: m.revocations!.envelope })
      return answer({ ok: true, detail: { nodeId: node.nodeId, peerId: node.peerId, revokedAt: new Date(now).toISOString() } }, puts, [key.node(node.nodeId)])
    }
  }
}

/** Ends a node's open runs in live instances (revocation): they count as done, not succeeded. */
export function closeRunsOf(state: CoordinatorState, config: CoordinatorConfig, nodeId: string, reason: string, now: number, effects: CoordinatorEffect[], puts: { key: string; value: unknown }[]): void {
  for (const id of state.live) {
    const instance = state.instances.get(id)
    const job = instance && state.jobs.get(instance.jobId)
    const run = instance && state.runs.get(runIdFor(instance.id, nodeId))
    if (!instance || !job || !run || TERMINAL.has(run.status)) continue
    setRunStatus(state, run, 'skipped')
    run.reason = reason
    run.reasonCode = 'revoked'
    noteProgress(state, config, instance, job, nodeId, Pos.Failed, now, effects)
    const before = instance.status
    settleInstance(state, instance, now)
    puts.push({ key: key.run(run.runId), value: run })
    if (instance.status !== before) puts.push({ key: key.instance(instance.id), value: instance }, { key: key.job(job.jobId), value: job })
  }
}

/** Agents introduced to a new agent, and the positions drawn from the pool to find them (some are itself, or have no address). */
export const MESH_PEERS_INTRODUCED = 3

export const MESH_DRAWS = 12

/**
 * A few other agents for a new agent to connect to, so gossip keeps flowing when the
 * coordinator is away. Chosen deterministically (positions in the pool of registered nodes
 * drawn from a hash of the node id) so every node gets a spread of different peers without the
 * coordinator keeping any randomness; O(1) per hello, whatever the fleet size.
 */
export function meshPeersFor(state: CoordinatorState, nodeId: string): PeerInfo[] {
  const pool = meshPool(state)
  const out: PeerInfo[] = []
  const seen = new Set<string>([nodeId])
  for (let k = 0; k < MESH_DRAWS && out.length < Math.min(MESH_PEERS_INTRODUCED, MAX_PEERS_SHARED) && pool.length > 0; k++) {
    const n = state.nodes.get(pool[fnv1a(`${nodeId}|${k}`) % pool.length]!)
    if (!n || seen.has(n.nodeId) || n.addrs.length === 0) continue
    seen.add(n.nodeId)
    out.push({ peerId: n.peerId, addrs: n.addrs })
  }
  return out
}

/** Node ids in registration order (derived, not persisted: a restored coordinator lists them in key order). */
export function meshPool(state: CoordinatorState): string[] {
  if (state.pool.length !== state.nodes.size) state.pool = [...state.nodes.keys()]
  return state.pool
}

export function fnv1a(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}

/** The transport saw a peer's connection open or close: the node is connected, or was last seen now. */
export function onLink(state: CoordinatorState, peerId: string, up: boolean, now: number, effects: CoordinatorEffect[]): void {
  for (const n of state.nodes.values()) {
    if (n.peerId !== peerId) continue
    if (up) state.connected.add(n.nodeId)
    else {
      state.connected.delete(n.nodeId)
      n.lastSeenAt = now
      effects.push({ type: 'log', level: 'info', msg: 'node disconnected', fields: { nodeId: n.nodeId } })
    }
  }
}
