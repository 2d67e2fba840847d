// The coordinator core, fed events: no network, no clock, no disk.
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { coordinatorStep, emptyCoordinatorState, restoreCoordinator, DEFAULT_COORDINATOR_TIMING, type CoordinatorConfig, type CoordinatorEffect, type CoordinatorState } from '../coordinator/core.js'
import { generateIdentity, peerIdOf, type Identity } from '../protocol/keys.js'
import { JobTemplateSchema, type JobTemplate } from '../protocol/template.js'
import { PROTOCOL_VERSION, open, seal, type CheckpointBody, type JobBody, type SignedEnvelope, type StepOutcome, type SyncRequestBody, type TicketBody } from '../protocol/wire.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { buildReport } from '../coordinator/report.js'
import { WATCH_HOLD_MS } from '../coordinator/watch.js'
import { decideGate } from '../protocol/gate.js'
import { agentStep, emptyAgentState, DEFAULT_AGENT_TIMING, type AgentConfig, type AgentEffect, type AgentState } from '../agent/core.js'
import { ALLOW_EVERYTHING } from '../agent/allowlist.js'
import { enrolHello } from './helpers/members.js'
import { persistInto } from './helpers/persist.js'
import { coordinatorInvariants } from '../coordinator/invariants.js'
import { MEMBER_CERT_TTL_MS } from '../protocol/membership.js'

const T0 = 1_700_000_000_000
const coordinator = generateIdentity()
const cfg: CoordinatorConfig = { identity: coordinator, ...DEFAULT_COORDINATOR_TIMING }
const agents = new Map<string, Identity>([['a', generateIdentity()], ['b', generateIdentity()], ['c', generateIdentity()]])
const base = JobTemplateSchema.parse(JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8')))

const ofType = <T extends CoordinatorEffect['type']>(effects: CoordinatorEffect[], type: T) => effects.filter((e): e is Extract<CoordinatorEffect, { type: T }> => e.type === type)
const agentOfType = <T extends AgentEffect['type']>(effects: AgentEffect[], type: T) => effects.filter((e): e is Extract<AgentEffect, { type: T }> => e.type === type)

function byIds(ids: string[]): JobTemplate {
  const t = structuredClone(base)
  t.target.groups[0]!.nodeListType = 'nodes'
  t.target.groups[0]!.nodeIdentifiers = ids
  delete (t.target.groups[0] as { filter?: unknown }).filter
  return t
}

function hello(state: CoordinatorState, nodeId: string, facts: Record<string, string> = { kernel_name: 'Linux' }, identity = agents.get(nodeId)!) {
  return enrolHello(state, cfg, identity, nodeId, T0, facts)
}

function replyOf(effects: CoordinatorEffect[]) {
  const r = ofType(effects, 'reply_rpc')[0]!
  const opened = open(r.envelope, [coordinator.publicKey])
  if (!opened.ok || opened.body.type !== 'reply') throw new Error('bad reply')
  return opened.body
}

const okStep: StepOutcome = { number: 1, name: 's', status: 'success', attempts: 1, exitCode: 0, outputs: {}, stdout: '', stderr: '' }

function result(jobId: string, nodeId: string, status: 'success' | 'failure' = 'success', issuedAt = T0) {
  const instanceId = instanceIdFor(jobId, issuedAt)
  return seal(agents.get(nodeId)!, {
    type: 'result', v: PROTOCOL_VERSION, runId: runIdFor(instanceId, nodeId), jobId, instanceId, nodeId, occurrenceAt: issuedAt, group: 0, batch: 0,
    status, startedAt: T0 + 1, finishedAt: T0 + 2, steps: [{ ...okStep, status }],
  })
}



describe('coordinator core', () => {
  it('signs and publishes a submitted job with its resolved targets, after persisting it', () => {
    const state = emptyCoordinatorState()
    for (const n of ['a', 'b', 'c']) hello(state, n)
    const effects = coordinatorStep(state, cfg, { type: 'submit', requestId: 'r1', jobId: 'job-1', template: byIds(['b', 'a']) }, T0)
    expect(effects.map((e) => e.type)).toEqual(['persist', 'publish', 'log', 'reply_submit'])
    const opened = open(ofType(effects, 'publish')[0]!.envelope, [coordinator.publicKey])
    if (!opened.ok || opened.body.type !== 'job') throw new Error('not a job')
    // The signed definition carries the group sizes; a small ungated job also every target's ticket
    // (so each starts without a round trip); the list itself stays with the coordinator.
    expect(opened.body.resolved.groups).toEqual([{ size: 2 }])
    expect(opened.body.resolved.tickets!.map((t) => ticketBody(t))).toMatchObject([
      { jobId: 'job-1', nodeId: 'b', key: agents.get('b')!.publicKey, place: { group: 0, position: 0 } },
      { jobId: 'job-1', nodeId: 'a', key: agents.get('a')!.publicKey, place: { group: 0, position: 1 } },
    ])
    // The very bytes the coordinator hands out later in a sync reply.
    expect(opened.body.resolved.tickets![1]).toEqual(replyTo(sync(state, 'a', 's1', { known: [{ jobId: 'job-1', version: 0, ticket: false }] }, T0 + 1), 's1')!.tickets[0])
    // A target never registered (no key): no inline tickets, every target asks.
    const unknown = coordinatorStep(state, cfg, { type: 'submit', requestId: 'r2', jobId: 'job-2', template: byIds(['b', 'a', 'ghost']) }, T0)
    const o2 = open(ofType(unknown, 'publish')[0]!.envelope, [coordinator.publicKey])
    if (!o2.ok || o2.body.type !== 'job') throw new Error('not a job')
    expect(o2.body.resolved).toEqual({ groups: [{ size: 3 }] })
    expect(state.jobs.get('job-1')!.resolved.groups.map((g) => g.nodes)).toEqual([['b', 'a']])
    expect(state.jobs.get('job-1')!.resolved.keys).toEqual({ a: agents.get('a')!.publicKey, b: agents.get('b')!.publicKey })
    expect(ofType(effects, 'reply_submit')[0]!.outcome).toMatchObject({ ok: true, jobId: 'job-1', targets: 2 })
  })

  it('resolves filters against the registry and refuses targets that match nothing or unknown saved lists', () => {
    const state = emptyCoordinatorState()
    hello(state, 'a', { kernel_name: 'Linux', role: 'web' })
    hello(state, 'b', { kernel_name: 'Darwin', role: 'web' })
    const t = structuredClone(base)
    const ok = coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'j', template: t }, T0)
    expect(ofType(ok, 'reply_submit')[0]!.outcome).toMatchObject({ ok: true, targets: 1 })

    const none = structuredClone(base)
    none.target.groups[0]!.filter!.constraints!.attributes![0]!.value = ['Plan9']
    const refused = ofType(coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'j2', template: none }, T0), 'reply_submit')[0]!.outcome
    expect(refused).toMatchObject({ ok: false, problems: [{ path: 'target.groups' }] })

    const saved = structuredClone(base)
    saved.target.groups[0]!.nodeListType = 'savedList'
    saved.target.groups[0]!.listId = '11111111-2222-3333-4444-555555555555'
    const out = ofType(coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'j3', template: saved }, T0), 'reply_submit')[0]!.outcome
    expect(out.ok).toBe(false)
    if (!out.ok) expect(out.problems[0]!.path).toBe('target.groups[0].listId')
  })

  it('stores each result exactly once, acknowledges duplicates, and settles the instance', () => {
    const state = emptyCoordinatorState()
    for (const n of ['a', 'b']) hello(state, n)
    coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: byIds(['a', 'b']) }, T0)
    const first = coordinatorStep(state, cfg, { type: 'rpc', requestId: 'x', envelope: result('job-1', 'a'), peerId: 'p' }, T0 + 10)
    expect(ofType(first, 'persist')).toHaveLength(1)
    expect(replyOf(first).ackRunIds).toHaveLength(1)
    const dup = coordinatorStep(state, cfg, { type: 'rpc', requestId: 'y', envelope: result('job-1', 'a'), peerId: 'p' }, T0 + 20)
    expect(ofType(dup, 'persist')).toHaveLength(0)
    expect(replyOf(dup)).toMatchObject({ ok: true, ackRunIds: [runIdFor(instanceIdFor('job-1', T0), 'a')] })
    expect(state.instances.get(instanceIdFor('job-1', T0))!.status).toBe('running')
    coordinatorStep(state, cfg, { type: 'rpc', requestId: 'z', envelope: result('job-1', 'b'), peerId: 'p' }, T0 + 30)
    expect(state.instances.get(instanceIdFor('job-1', T0))!.status).toBe('success')
    expect(state.jobs.get('job-1')!.status).toBe('completed')
    const report = buildReport(state, 'job-1')!
    expect(report.instances[0]!.runs.map((r) => [r.nodeId, r.status, r.startedAt])).toEqual([
      ['a', 'success', new Date(T0 + 1).toISOString()],
      ['b', 'success', new Date(T0 + 1).toISOString()],
    ])
  })

  it('refuses results not signed by the node\'s registered key, and hellos that try to take over a node id', () => {
    const state = emptyCoordinatorState()
    hello(state, 'a')
    coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: byIds(['a']) }, T0)
    const impostor = generateIdentity()
    const takeover = hello(state, 'a', {}, impostor)
    expect(replyOf(takeover)).toMatchObject({ ok: false })
    const instanceId = instanceIdFor('job-1', T0)
    const forged = seal(impostor, { type: 'result', v: PROTOCOL_VERSION, runId: runIdFor(instanceId, 'a'), jobId: 'job-1', instanceId, nodeId: 'a', occurrenceAt: T0, group: 0, batch: 0, status: 'success', startedAt: T0, finishedAt: T0, steps: [] })
    const res = coordinatorStep(state, cfg, { type: 'rpc', requestId: 'f', envelope: forged, peerId: 'p' }, T0)
    expect(replyOf(res).ok).toBe(false)
    expect(state.runs.get(runIdFor(instanceId, 'a'))!.status).toBe('pending')
  })

  it('marks runs without a result as timed out after the group timeout and fails the instance', () => {
    const state = emptyCoordinatorState()
    for (const n of ['a', 'b']) hello(state, n)
    coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: byIds(['a', 'b']) }, T0)
    coordinatorStep(state, cfg, { type: 'rpc', requestId: 'x', envelope: result('job-1', 'a'), peerId: 'p' }, T0 + 10)
    coordinatorStep(state, cfg, { type: 'tick' }, T0 + 60_000) // timeout 60 s + 5 s grace not yet passed
    expect(state.instances.get(instanceIdFor('job-1', T0))!.status).toBe('running')
    coordinatorStep(state, cfg, { type: 'tick' }, T0 + 65_001)
    const runB = state.runs.get(runIdFor(instanceIdFor('job-1', T0), 'b'))!
    expect(runB.status).toBe('timeout')
    expect(runB.reasonCode).toBe('no_result')
    expect(runB.reason).toMatch(/unreachable/)
    expect(state.instances.get(instanceIdFor('job-1', T0))!.status).toBe('failure')
    // A late result replaces the timeout on the run; the instance's decided status stays.
    coordinatorStep(state, cfg, { type: 'rpc', requestId: 'late', envelope: result('job-1', 'b'), peerId: 'p' }, T0 + 70_000)
    expect(runB.status).toBe('success')
    expect(state.instances.get(instanceIdFor('job-1', T0))!.status).toBe('failure')
  })

  it('refuses a job whose signed definition would be too large for any node to open', () => {
    const state = emptyCoordinatorState()
    // Targets no longer inflate a definition (it carries group sizes only): the template itself
    // is too big here, a valid one listing 20,000 long node ids (~2.5 MB) none of which is registered.
    const ids = Array.from({ length: 20_000 }, (_, i) => `node-with-a-long-identifier-${String(i).padStart(6, '0')}-${'abcdefghijklmnopqrstuvwxyz-'.repeat(3)}0123456789`)
    const t = byIds(ids)
    expect(JobTemplateSchema.safeParse(t).success).toBe(true)
    const out = ofType(coordinatorStep(state, cfg, { type: 'submit', requestId: 'big', jobId: 'big', template: t }, T0), 'reply_submit')[0]!.outcome
    expect(out.ok).toBe(false)
    if (!out.ok) expect(out.problems[0]!.message).toMatch(/over the 2097152-byte limit of a message/)
    expect(state.jobs.size).toBe(0)
  })

  it('keeps a definition small however many nodes it targets (targets are not in the signed body)', () => {
    const state = emptyCoordinatorState()
    // 20,000 registered nodes with the same long ids (records put in directly: the registry is not what is tested).
    for (let i = 0; i < 20_000; i++) {
      const nodeId = `node-with-a-long-identifier-${String(i).padStart(6, '0')}-${'abcdefghijklmnopqrstuvwxyz-'.repeat(3)}0123456789`
      state.nodes.set(nodeId, { nodeId, publicKey: agents.get('a')!.publicKey, peerId: `peer-${i}`, facts: { kernel_name: 'Linux' }, agentVersion: 't', addrs: [], skills: {}, firstSeenAt: T0, lastSeenAt: T0 })
    }
    const effects = coordinatorStep(state, cfg, { type: 'submit', requestId: 'ok', jobId: 'job-1', template: structuredClone(base) }, T0)
    expect(ofType(effects, 'reply_submit')[0]!.outcome).toMatchObject({ ok: true, targets: 20_000 })
    const published = ofType(effects, 'publish')[0]!.envelope
    expect(published.body.length).toBeLessThan(10_000)
    const opened = open(published, [coordinator.publicKey])
    if (!opened.ok || opened.body.type !== 'job') throw new Error('not a job')
    expect(opened.body.resolved).toEqual({ groups: [{ size: 20_000 }] })
    expect(state.jobs.get('job-1')!.resolved.groups[0]!.nodes).toHaveLength(20_000)
  })

  it('answers a sync with the active jobs that target the node', () => {
    const state = emptyCoordinatorState()
    for (const n of ['a', 'b']) hello(state, n)
    coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: byIds(['a']) }, T0)
    const sync = (nodeId: string) => replyOf(coordinatorStep(state, cfg, { type: 'rpc', requestId: 's', envelope: seal(agents.get(nodeId)!, { type: 'sync', v: PROTOCOL_VERSION, nodeId, sentAt: T0 }), peerId: 'p' }, T0 + 1))
    expect(sync('a').jobs).toHaveLength(1)
    expect(sync('b').jobs).toHaveLength(0)
  })

  it('rebuilds the same state from its persisted records', () => {
    const state = emptyCoordinatorState()
    const db = new Map<string, unknown>()
    const apply = persistInto<CoordinatorEffect>(db)
    for (const n of ['a', 'b']) apply(hello(state, n))
    apply(coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: byIds(['a', 'b']) }, T0))
    apply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 'x', envelope: result('job-1', 'a'), peerId: 'p' }, T0 + 10))
    apply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 'y', envelope: result('job-1', 'b', 'failure'), peerId: 'p' }, T0 + 20))
    const restored = restoreCoordinator(db.entries())
    expect(buildReport(restored, 'job-1')).toEqual(buildReport(state, 'job-1'))
    expect(restored.instances.get(instanceIdFor('job-1', T0))!.status).toBe('failure')
  })
})

/** A rolling rollout over a, b, c in that order, one node at a time. */
function rolling(ids = ['a', 'b', 'c']): JobTemplate {
  const t = byIds(ids)
  t.target.groups[0]!.distributionMethod = 'rolling'
  t.target.groups[0]!.batchSize = { type: 'number', value: 1 }
  // Long enough that a watch held WATCH_HOLD_MS ends well inside the group's time budget.
  t.target.groups[0]!.timeoutSeconds = 600
  return t
}

type SyncFields = Partial<Pick<SyncRequestBody, 'known' | 'gated' | 'watch'>>

function sync(state: CoordinatorState, nodeId: string, requestId: string, fields: SyncFields, now: number) {
  const env = seal(agents.get(nodeId)!, { type: 'sync', v: PROTOCOL_VERSION, nodeId, sentAt: now, certExpiresAt: now + MEMBER_CERT_TTL_MS, ...fields })
  return coordinatorStep(state, cfg, { type: 'rpc', requestId, envelope: env, peerId: peerIdOf(agents.get(nodeId)!.publicKey) }, now)
}

/** The reply to one request among the effects, or undefined if it was not answered. */
function replyTo(effects: CoordinatorEffect[], requestId: string) {
  const r = ofType(effects, 'reply_rpc').filter((e) => e.requestId === requestId)
  expect(r.length).toBeLessThanOrEqual(1)
  if (r.length === 0) return undefined
  const opened = open(r[0]!.envelope, [coordinator.publicKey])
  if (!opened.ok || opened.body.type !== 'reply') throw new Error('bad reply')
  return opened.body
}

function ticketBody(env: SignedEnvelope): TicketBody {
  const o = open(env, [coordinator.publicKey])
  if (!o.ok || o.body.type !== 'ticket') throw new Error('not a coordinator-signed ticket')
  return o.body
}

function checkpointBody(env: SignedEnvelope): CheckpointBody {
  const o = open(env, [coordinator.publicKey])
  if (!o.ok || o.body.type !== 'checkpoint') throw new Error('not a coordinator-signed checkpoint')
  return o.body
}

function jobBody(state: CoordinatorState, jobId: string): JobBody {
  const o = open(state.jobs.get(jobId)!.envelope, [coordinator.publicKey])
  if (!o.ok || o.body.type !== 'job') throw new Error('not a job')
  return o.body
}

const waiting = (jobId: string, seq = 0, occurrenceAt = T0) => ({ instanceId: instanceIdFor(jobId, occurrenceAt), jobId, occurrenceAt, state: 'waiting' as const, seq })

describe('tickets from the coordinator core', () => {
  it('hands a node that holds a job without its ticket the ticket: its place and its key, or place null if not targeted', () => {
    const state = emptyCoordinatorState()
    for (const n of ['a', 'b', 'c']) hello(state, n)
    coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: byIds(['b', 'a']) }, T0)
    const ask = [{ jobId: 'job-1', version: 0, ticket: false }]
    for (const [nodeId, place] of [['b', { group: 0, position: 0 }], ['a', { group: 0, position: 1 }], ['c', null]] as const) {
      const reply = replyTo(sync(state, nodeId, `s-${nodeId}`, { known: ask }, T0 + 1), `s-${nodeId}`)!
      expect(reply.ok).toBe(true)
      expect(reply.jobs).toEqual([]) // it holds the definition already
      expect(reply.tickets).toHaveLength(1)
      expect(ticketBody(reply.tickets[0]!)).toMatchObject({ type: 'ticket', jobId: 'job-1', nodeId, key: agents.get(nodeId)!.publicKey, place })
    }
    // A node that says it holds its ticket gets none; a node that lacks the definition gets both.
    expect(replyTo(sync(state, 'a', 's2', { known: [{ jobId: 'job-1', version: 0, ticket: true }] }, T0 + 2), 's2')!.tickets).toEqual([])
    const fresh = replyTo(sync(state, 'a', 's3', {}, T0 + 3), 's3')!
    expect(fresh.jobs).toHaveLength(1)
    expect(fresh.tickets.map((t) => ticketBody(t))).toMatchObject([{ jobId: 'job-1', nodeId: 'a', place: { group: 0, position: 1 } }])
  })

  it('a small ungated job carries the tickets: a target starts at its place with no round trip; a node not listed knows it is not targeted', () => {
    const state = emptyCoordinatorState()
    for (const n of ['a', 'b', 'c']) hello(state, n)
    const submitted = coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: byIds(['b', 'a']) }, T0)
    const envelope = ofType(submitted, 'publish')[0]!.envelope
    const agentCfg = (nodeId: string): AgentConfig => ({ nodeId, coordinatorKey: coordinator.publicKey, identity: agents.get(nodeId)!, os: 'linux', allow: ALLOW_EVERYTHING, skills: { 'chef-platform/shell-interpreter': ['1.0.0'] }, ...DEFAULT_AGENT_TIMING })
    const a = emptyAgentState()
    const onJob = agentStep(a, agentCfg('a'), { type: 'job', envelope, via: 'gossip' }, T0 + 1)
    expect(agentOfType(onJob, 'send').filter((e) => e.kind === 'sync')).toHaveLength(0)
    expect(agentOfType(onJob, 'run_step')).toHaveLength(1)
    expect([...a.runs.values()][0]).toMatchObject({ group: 0, position: 1 })
    const c = emptyAgentState()
    const onJobC = agentStep(c, agentCfg('c'), { type: 'job', envelope, via: 'gossip' }, T0 + 1)
    expect(agentOfType(onJobC, 'send')).toHaveLength(0)
    expect(c.runs.size).toBe(0)
    expect(c.jobs.get('job-1')!.ticket?.place).toBeNull()
    // A node whose key changed since submit (re-registered) does not take the inline ticket: it asks.
    const b2 = emptyAgentState()
    const rekeyed = { ...agentCfg('b'), identity: agents.get('c')! }
    const onJobB = agentStep(b2, rekeyed, { type: 'job', envelope, via: 'gossip' }, T0 + 1)
    expect(b2.runs.size).toBe(0)
    expect(agentOfType(onJobB, 'send').filter((e) => e.kind === 'sync')).toHaveLength(1)
  })

  it('a small gated job carries the tickets too: a target that never heard back from the coordinator still waits at its place', () => {
    const state = emptyCoordinatorState()
    for (const n of ['a', 'b', 'c']) hello(state, n)
    const submitted = coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: rolling() }, T0)
    const envelope = ofType(submitted, 'publish')[0]!.envelope
    // The coordinator died right after publishing: c's only source is the definition (by gossip, or from a peer).
    const acfg: AgentConfig = { nodeId: 'c', coordinatorKey: coordinator.publicKey, identity: agents.get('c')!, os: 'linux', allow: ALLOW_EVERYTHING, skills: { 'chef-platform/shell-interpreter': ['1.0.0'] }, ...DEFAULT_AGENT_TIMING }
    const c = emptyAgentState()
    const onJob = agentStep(c, acfg, { type: 'job', envelope, via: 'peer' }, T0 + 1)
    expect(c.jobs.get('job-1')!.ticket?.place).toEqual({ group: 0, position: 2 })
    expect([...c.runs.values()]).toMatchObject([{ status: 'waiting', group: 0, position: 2 }])
    expect(c.sync.ticketWanted).toBe(false)
    expect(agentOfType(onJob, 'run_step')).toHaveLength(0)
  })

  it('hands out tickets the agent core accepts: the agent runs at the place the coordinator resolved', () => {
    const state = emptyCoordinatorState()
    for (const n of ['a', 'b']) hello(state, n)
    // 'ghost' never registered: the definition carries no tickets, so the agent asks for its own.
    const submitted = coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: byIds(['b', 'a', 'ghost']) }, T0)
    const acfg: AgentConfig = { nodeId: 'a', coordinatorKey: coordinator.publicKey, identity: agents.get('a')!, os: 'linux', allow: ALLOW_EVERYTHING, skills: { 'chef-platform/shell-interpreter': ['1.0.0'] }, ...DEFAULT_AGENT_TIMING }
    const agent = emptyAgentState()
    const onJob = agentStep(agent, acfg, { type: 'job', envelope: ofType(submitted, 'publish')[0]!.envelope, via: 'gossip' }, T0 + 1)
    const request = agentOfType(onJob, 'send').filter((e) => e.kind === 'sync')
    expect(request).toHaveLength(1)
    const answered = coordinatorStep(state, cfg, { type: 'rpc', requestId: 'q', envelope: request[0]!.envelope, peerId: 'peer-a' }, T0 + 2)
    const started = agentStep(agent, acfg, { type: 'reply', envelope: ofType(answered, 'reply_rpc')[0]!.envelope, to: 'sync' }, T0 + 3)
    expect(agentOfType(started, 'run_step')).toHaveLength(1)
    expect([...agent.runs.values()][0]).toMatchObject({ runId: runIdFor(instanceIdFor('job-1', T0), 'a'), group: 0, position: 1 })
  })
})

describe('watches and checkpoints in the coordinator core', () => {
  function setup() {
    const state = emptyCoordinatorState()
    for (const n of ['a', 'b', 'c']) hello(state, n)
    coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: rolling() }, T0)
    return state
  }
  const holding = [{ jobId: 'job-1', version: 0, ticket: true }]

  it('holds a watch from a waiting target and answers it as soon as a result frees its slot, with a checkpoint that admits it', () => {
    const state = setup()
    const b = sync(state, 'b', 'watch-b', { known: holding, gated: [waiting('job-1')], watch: true }, T0 + 100)
    expect(ofType(b, 'reply_rpc')).toHaveLength(0)
    const c = sync(state, 'c', 'watch-c', { known: holding, gated: [waiting('job-1')], watch: true }, T0 + 100)
    expect(ofType(c, 'reply_rpc')).toHaveLength(0)
    expect(state.watches.held).toBe(2)
    // A sync without watch is answered at once, whatever it reports.
    expect(replyTo(sync(state, 'c', 'poll-c', { known: holding, gated: [waiting('job-1')] }, T0 + 150), 'poll-c')).toBeDefined()

    // a (position 0) finishes: b (position 1, window 1) may go; c (position 2) still waits for b.
    const done = coordinatorStep(state, cfg, { type: 'rpc', requestId: 'res-a', envelope: result('job-1', 'a'), peerId: 'peer-a' }, T0 + 200)
    expect(replyTo(done, 'res-a')).toMatchObject({ ok: true })
    expect(replyTo(done, 'watch-c')).toBeUndefined()
    const answer = replyTo(done, 'watch-b')!
    expect(answer.ok).toBe(true)
    expect(answer.checkpoints).toHaveLength(1)
    const cp = checkpointBody(answer.checkpoints[0]!)
    expect(cp).toMatchObject({ jobId: 'job-1', instanceId: instanceIdFor('job-1', T0), occurrenceAt: T0 })
    expect(cp.groups[0]).toMatchObject({ done: 1, succeeded: 1 })
    const body = jobBody(state, 'job-1')
    expect(decideGate(body, { facts: new Map(), checkpoint: cp }, 0, 1, T0, T0 + 200).action).toBe('start')
    expect(decideGate(body, { facts: new Map(), checkpoint: cp }, 0, 2, T0, T0 + 200).action).toBe('wait')
    expect(state.watches.held).toBe(1)

    // b finishes too: now c's watch is answered, and its checkpoint admits c.
    const doneB = coordinatorStep(state, cfg, { type: 'rpc', requestId: 'res-b', envelope: result('job-1', 'b'), peerId: 'peer-b' }, T0 + 300)
    const cpC = checkpointBody(replyTo(doneB, 'watch-c')!.checkpoints[0]!)
    expect(cpC.seq).toBeGreaterThan(cp.seq)
    expect(decideGate(body, { facts: new Map(), checkpoint: cpC }, 0, 2, T0, T0 + 300).action).toBe('start')
    expect(state.watches.held).toBe(0)
  })

  it('answers a watch at once when the checkpoint the node holds is older than one that already admits it', () => {
    const state = setup()
    coordinatorStep(state, cfg, { type: 'rpc', requestId: 'res-a', envelope: result('job-1', 'a'), peerId: 'peer-a' }, T0 + 50)
    const b = sync(state, 'b', 'watch-b', { known: holding, gated: [waiting('job-1')], watch: true }, T0 + 100)
    const cp = checkpointBody(replyTo(b, 'watch-b')!.checkpoints[0]!)
    expect(decideGate(jobBody(state, 'job-1'), { facts: new Map(), checkpoint: cp }, 0, 1, T0, T0 + 100).action).toBe('start')
  })

  it('answers a held watch on the first tick after WATCH_HOLD_MS, even when nothing changed', () => {
    const state = setup()
    const held = sync(state, 'b', 'watch-b', { known: holding, gated: [waiting('job-1')], watch: true }, T0 + 100)
    expect(ofType(held, 'reply_rpc')).toHaveLength(0)
    expect(replyTo(coordinatorStep(state, cfg, { type: 'tick' }, T0 + 100 + WATCH_HOLD_MS - 1), 'watch-b')).toBeUndefined()
    const answer = replyTo(coordinatorStep(state, cfg, { type: 'tick' }, T0 + 100 + WATCH_HOLD_MS), 'watch-b')!
    expect(answer.ok).toBe(true)
    expect(answer.checkpoints).toHaveLength(1)
    // Nothing freed b's slot: the checkpoint says so, and the node keeps waiting (it will watch again).
    expect(decideGate(jobBody(state, 'job-1'), { facts: new Map(), checkpoint: checkpointBody(answer.checkpoints[0]!) }, 0, 1, T0, T0 + 100 + WATCH_HOLD_MS).action).toBe('wait')
    // Answered once only.
    expect(ofType(coordinatorStep(state, cfg, { type: 'tick' }, T0 + 100 + 2 * WATCH_HOLD_MS), 'reply_rpc')).toHaveLength(0)
    expect(state.watches.held).toBe(0)
  })

  it('issues checkpoints with a higher seq after a restart, so an agent holding an older one accepts the new one', () => {
    const state = setup()
    const db = new Map<string, unknown>()
    const apply = persistInto<CoordinatorEffect>(db)
    // What setup() did, persisted: node records and the job (a fresh run of the same events).
    for (const n of state.nodes.values()) db.set(`node/${n.nodeId}`, structuredClone(n))
    for (const j of state.jobs.values()) db.set(`job/${j.jobId}`, structuredClone(j))
    for (const i of state.instances.values()) db.set(`instance/${i.id}`, structuredClone(i))
    for (const r of state.runs.values()) db.set(`run/${r.runId}`, structuredClone(r))

    // The agent of c (position 2: it waits for a and b) takes the job, its ticket and checkpoints from this coordinator.
    const acfg: AgentConfig = { nodeId: 'c', coordinatorKey: coordinator.publicKey, identity: agents.get('c')!, os: 'linux', allow: ALLOW_EVERYTHING, skills: { 'chef-platform/shell-interpreter': ['1.0.0'] }, ...DEFAULT_AGENT_TIMING }
    const agent = emptyAgentState()
    let requests = 0
    /** Carries the agent's syncs to `coord` and the replies back, until the agent has nothing more to ask. */
    const exchange = (coord: CoordinatorState, effects: AgentEffect[], now: number): AgentEffect[] => {
      const all = [...effects]
      let pending = effects
      while (pending.length > 0) {
        const next: AgentEffect[] = []
        for (const e of pending) {
          if (e.type !== 'send' || e.kind !== 'sync') continue
          const id = `sync-${requests++}`
          const answered = apply(coordinatorStep(coord, cfg, { type: 'rpc', requestId: id, envelope: e.envelope, peerId: 'peer-c' }, now))
          for (const r of ofType(answered, 'reply_rpc')) if (r.requestId === id) next.push(...agentStep(agent, acfg, { type: 'reply', envelope: r.envelope, to: 'sync' }, now))
        }
        all.push(...next)
        pending = next
      }
      return all
    }
    const instanceId = instanceIdFor('job-1', T0)
    // The ticket is in the definition (a small gated job carries them); the first checkpoint comes with a sync.
    exchange(state, agentStep(agent, acfg, { type: 'job', envelope: state.jobs.get('job-1')!.envelope, via: 'gossip' }, T0 + 1_000), T0 + 1_000)
    exchange(state, agentStep(agent, acfg, { type: 'connected' }, T0 + 1_000), T0 + 1_000)
    const run = agent.runs.get(runIdFor(instanceId, 'c'))!
    expect(run).toMatchObject({ status: 'waiting', position: 2 })
    const seq1 = agent.progress.get(instanceId)!.checkpoint!.seq
    expect(seq1).toBeGreaterThan(0)

    apply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 'res-a', envelope: result('job-1', 'a'), peerId: 'peer-a' }, T0 + 2_000))
    exchange(state, agentStep(agent, acfg, { type: 'connected' }, T0 + 2_000), T0 + 2_000)
    const cp2 = agent.progress.get(instanceId)!.checkpoint!
    expect(cp2.seq).toBeGreaterThan(seq1)
    expect(cp2.groups[0]).toMatchObject({ done: 1 })
    expect(run.status).toBe('waiting')
    apply(coordinatorStep(state, cfg, { type: 'tick' }, T0 + 2_500))

    // The coordinator restarts from its records: its tallies start over, its checkpoints must still be newer.
    const restarted = restoreCoordinator(db.entries())
    apply(coordinatorStep(restarted, cfg, { type: 'rpc', requestId: 'res-b', envelope: result('job-1', 'b'), peerId: 'peer-b' }, T0 + 3_000))
    const resumed = exchange(restarted, agentStep(agent, acfg, { type: 'connected' }, T0 + 3_000), T0 + 3_000)
    const cp3 = agent.progress.get(instanceId)!.checkpoint!
    expect(cp3.seq).toBeGreaterThan(cp2.seq)
    expect(cp3.groups[0]).toMatchObject({ done: 2, succeeded: 2 })
    // The agent took the new checkpoint and its turn with it (its own facts know nothing of a and b).
    expect(run.status).toBe('running')
    expect(agentOfType(resumed, 'run_step')).toHaveLength(1)
  })
})

describe('the coordinator core keeps its caches in its state', () => {
  it('derives places, tickets, acks and replies into state.derived: a restart from the records starts them empty and answers with the same signed bytes', () => {
    const state = emptyCoordinatorState()
    const db = new Map<string, unknown>()
    const apply = persistInto<CoordinatorEffect>(db)
    for (const n of ['a', 'b', 'c']) apply(hello(state, n))
    apply(coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: rolling() }, T0))
    const asks = { known: [{ jobId: 'job-1', version: 0, ticket: false }], gated: [waiting('job-1')] }
    const first = replyTo(apply(sync(state, 'b', 's1', asks, T0 + 100)), 's1')!
    apply(coordinatorStep(state, cfg, { type: 'tick' }, T0 + 200))
    expect(first.tickets).toHaveLength(1)
    expect(state.derived.jobs.get('job-1')?.tickets.has('b')).toBe(true)
    expect(state.derived.acks.get(instanceIdFor('job-1', T0))?.set).toEqual(new Set(['b']))
    expect(coordinatorInvariants(state)).toEqual([])

    // A crash loses what is only in memory: the restored state derives it again, to the same bytes.
    const restored = restoreCoordinator(db.entries())
    expect(restored.derived.jobs.size + restored.derived.acks.size + restored.derived.replies.size).toBe(0)
    expect(restored.instances.get(instanceIdFor('job-1', T0))!.acks).toEqual(['b'])
    const again = replyTo(sync(restored, 'b', 's1', asks, T0 + 100), 's1')!
    expect(again.tickets.map((t) => t.sig)).toEqual(first.tickets.map((t) => t.sig))
    expect(restored.derived.acks.get(instanceIdFor('job-1', T0))?.set).toEqual(new Set(['b']))
    expect(coordinatorInvariants(restored)).toEqual([])
    // Another coordinator's state shares nothing with this one.
    expect(emptyCoordinatorState().derived.replies.size).toBe(0)
  })

  it('reports a derived cache that no longer mirrors its record', () => {
    const state = emptyCoordinatorState()
    for (const n of ['a', 'b', 'c']) hello(state, n)
    coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: rolling() }, T0)
    sync(state, 'b', 's1', { known: [{ jobId: 'job-1', version: 0, ticket: true }], gated: [waiting('job-1')] }, T0 + 100)
    expect(coordinatorInvariants(state)).toEqual([])
    state.derived.acks.get(instanceIdFor('job-1', T0))!.set.add('c')
    expect(coordinatorInvariants(state)).toEqual([`instance ${instanceIdFor('job-1', T0)}: 2 acks derived, 1 recorded`])
    state.jobs.set('job-1', { ...state.jobs.get('job-1')! })
    expect(coordinatorInvariants(state)).toContain('derived entry of job job-1 was not built from its record in memory')
  })
})
