// The coordinator core, fed events: no network, no clock, no disk.
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { coordinatorStep, emptyCoordinatorState, restoreCoordinator, DEFAULT_COORDINATOR_TIMING, type CoordinatorConfig, type CoordinatorEffect, type CoordinatorState } from '../coordinator/core.js'
import { generateIdentity, type Identity } from '../protocol/keys.js'
import { JobTemplateSchema, type JobTemplate } from '../protocol/template.js'
import { PROTOCOL_VERSION, open, seal, type StepOutcome } from '../protocol/wire.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { buildReport } from '../coordinator/report.js'

const T0 = 1_700_000_000_000
const coordinator = generateIdentity()
const cfg: CoordinatorConfig = { identity: coordinator, ...DEFAULT_COORDINATOR_TIMING }
const agents = new Map<string, Identity>([['a', generateIdentity()], ['b', generateIdentity()], ['c', generateIdentity()]])
const base = JobTemplateSchema.parse(JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8')))

const ofType = <T extends CoordinatorEffect['type']>(effects: CoordinatorEffect[], type: T) => effects.filter((e): e is Extract<CoordinatorEffect, { type: T }> => e.type === type)

function byIds(ids: string[]): JobTemplate {
  const t = structuredClone(base)
  t.target.groups[0]!.nodeListType = 'nodes'
  t.target.groups[0]!.nodeIdentifiers = ids
  delete (t.target.groups[0] as { filter?: unknown }).filter
  return t
}

function hello(state: CoordinatorState, nodeId: string, facts: Record<string, string> = { kernel_name: 'Linux' }, identity = agents.get(nodeId)!) {
  const env = seal(identity, { type: 'hello', v: PROTOCOL_VERSION, nodeId, peerId: `peer-${nodeId}`, facts, agentVersion: 'test', sentAt: T0 })
  return coordinatorStep(state, cfg, { type: 'rpc', requestId: `hello-${nodeId}`, envelope: env, peerId: `peer-${nodeId}` }, T0)
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
    expect(opened.body.resolved.groups[0]!.nodes).toEqual(['b', 'a'])
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
    expect(runB.reason).toMatch(/unreachable/)
    expect(state.instances.get(instanceIdFor('job-1', T0))!.status).toBe('failure')
    // A late result replaces the timeout on the run; the instance's decided status stays.
    coordinatorStep(state, cfg, { type: 'rpc', requestId: 'late', envelope: result('job-1', 'b'), peerId: 'p' }, T0 + 70_000)
    expect(runB.status).toBe('success')
    expect(state.instances.get(instanceIdFor('job-1', T0))!.status).toBe('failure')
  })

  it('refuses a job whose signed definition would be too large for any node to open', () => {
    const state = emptyCoordinatorState()
    const ids = Array.from({ length: 19_000 }, (_, i) => `node-with-a-long-identifier-${String(i).padStart(6, '0')}-abcdefghijklmnopqrstuvwxyz-abcdefghijklmnopqrstuvwxyz`)
    const t = byIds(ids)
    const out = ofType(coordinatorStep(state, cfg, { type: 'submit', requestId: 'big', jobId: 'big', template: t }, T0), 'reply_submit')[0]!.outcome
    expect(out.ok).toBe(false)
    if (!out.ok) expect(out.problems[0]!.message).toMatch(/over the 2097152-byte limit of a message/)
    expect(state.jobs.size).toBe(0)
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
    const apply = (effects: CoordinatorEffect[]) => {
      for (const p of ofType(effects, 'persist')) {
        for (const put of p.puts) db.set(put.key, structuredClone(put.value))
        for (const d of p.dels) db.delete(d)
      }
    }
    for (const n of ['a', 'b']) apply(hello(state, n))
    apply(coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: byIds(['a', 'b']) }, T0))
    apply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 'x', envelope: result('job-1', 'a'), peerId: 'p' }, T0 + 10))
    apply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 'y', envelope: result('job-1', 'b', 'failure'), peerId: 'p' }, T0 + 20))
    const restored = restoreCoordinator(db.entries())
    expect(buildReport(restored, 'job-1')).toEqual(buildReport(state, 'job-1'))
    expect(restored.instances.get(instanceIdFor('job-1', T0))!.status).toBe('failure')
  })
})
