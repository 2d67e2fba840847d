// Rollout arithmetic and the turn-taking rule, from tables.
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { batchSizeFor, thresholdFor } from '../protocol/rollout.js'
import { decideGate, emptyKnowledge, failureBudget, isGated, type Knowledge } from '../agent/gate.js'
import { JobTemplateSchema } from '../protocol/template.js'
import { PROTOCOL_VERSION, type JobBody } from '../protocol/wire.js'

describe('batch size rounding', () => {
  it.each([
    ['percent', 33, 3, 1],
    ['percent', 1, 10, 1],
    ['percent', 50, 5, 3],
    ['percent', 10, 95, 10],
    ['percent', 100, 7, 7],
    ['percent', 99, 100, 99],
    ['percent', 25, 1, 1],
    ['number', 2, 8, 2],
    ['number', 50, 8, 8],
    ['number', 1, 1, 1],
  ] as const)('%s %d of %d nodes → %d per batch', (type, value, size, expected) => {
    expect(batchSizeFor({ type, value }, size)).toBe(expected)
  })

  it('percent thresholds round up and never exceed the group', () => {
    expect(thresholdFor({ type: 'percent', value: 90 }, 10)).toBe(9)
    expect(thresholdFor({ type: 'percent', value: 95 }, 10)).toBe(10)
    expect(thresholdFor({ type: 'number', value: 50 }, 10)).toBe(10)
  })

  it.each([
    [[{ numRuns: { type: 'percent', value: 100 }, status: 'success' }], 10, 0],
    [[{ numRuns: { type: 'percent', value: 80 }, status: 'success' }], 10, 2],
    [[{ numRuns: { type: 'number', value: 3 }, status: 'failure' }], 10, 2],
    [[], 10, 0],
  ] as const)('failure budget of %j over %d runs is %d', (criteria, n, budget) => {
    expect(failureBudget(criteria as never, n)).toBe(budget)
  })
})

const base = JobTemplateSchema.parse(JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8')))
const T0 = 1_700_000_000_000

function body(group: Record<string, unknown>, nodes: string[], extra: Record<string, unknown> = {}, groups?: { nodes: string[] }[]): JobBody {
  const t = structuredClone(base) as Record<string, unknown> & typeof base
  t.target.groups[0] = { ...t.target.groups[0]!, ...group } as never
  Object.assign(t, extra)
  const template = JobTemplateSchema.parse(t)
  return { type: 'job', v: PROTOCOL_VERSION, jobId: 'j', issuedAt: T0, expiresAt: T0 + 1e9, template, resolved: { groups: groups ?? [{ nodes }], keys: {} } }
}

const nodes = ['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7']
const k = (done: Record<string, 'success' | 'failure' | 'skipped'> = {}, acks: string[] = []): Knowledge => {
  const x = emptyKnowledge()
  for (const [n, s] of Object.entries(done)) x.done.set(n, s)
  for (const a of acks) x.acks.add(a)
  return x
}

describe('who may start', () => {
  const rolling = body({ distributionMethod: 'rolling', batchSize: { type: 'number', value: 2 }, successCriteria: [{ numRuns: { type: 'percent', value: 50 }, status: 'success' }] }, nodes)
  const batching = body({ distributionMethod: 'batching', batchSize: { type: 'number', value: 3 } }, nodes)

  it('rolling window of 2: position p waits for p − 1 of the nodes before it', () => {
    expect(isGated(rolling)).toBe(true)
    expect(decideGate(rolling, k(), 'n1', 0, 1, T0, T0).action).toBe('start')
    expect(decideGate(rolling, k(), 'n2', 0, 2, T0, T0).action).toBe('wait')
    expect(decideGate(rolling, k({ n1: 'success' }), 'n2', 0, 2, T0, T0).action).toBe('start')
    expect(decideGate(rolling, k({ n1: 'success' }), 'n3', 0, 3, T0, T0).action).toBe('wait')
    expect(decideGate(rolling, k({ n0: 'success', n2: 'success' }), 'n3', 0, 3, T0, T0).action).toBe('start')
  })

  it('batching of 3: batch b starts only when all of batch b − 1 is done', () => {
    expect(decideGate(batching, k(), 'n2', 0, 2, T0, T0).action).toBe('start')
    expect(decideGate(batching, k({ n0: 'success', n1: 'success' }), 'n3', 0, 3, T0, T0).action).toBe('wait')
    expect(decideGate(batching, k({ n0: 'success', n1: 'success', n2: 'success' }), 'n3', 0, 3, T0, T0).action).toBe('start')
    expect(decideGate(batching, k({ n0: 'success', n1: 'success', n2: 'success' }), 'n6', 0, 6, T0, T0).action).toBe('wait')
  })

  it('stops distribution once the group can no longer meet its criteria', () => {
    // 50 % success of 8 allows 4 failures; the fifth known failure stops the rest.
    const fails = k({ n0: 'failure', n1: 'failure', n2: 'failure', n3: 'failure', n4: 'failure' })
    const d = decideGate(rolling, fails, 'n6', 0, 6, T0, T0)
    expect(d).toMatchObject({ action: 'skip' })
    if (d.action === 'skip') expect(d.reason).toMatch(/can no longer meet its success criteria \(5 failed of 8, at most 4 may fail\)/)
  })

  it('a vanished holder keeps its slot by default and releases it only under the release policy', () => {
    const kk = k({ n0: 'success' }, nodes.filter((n) => n !== 'n2'))
    kk.started.set('n1', T0 + 30_000)
    expect(decideGate(rolling, kk, 'n3', 0, 3, T0, T0 + 45_000).action).toBe('wait')
    const released = body({ distributionMethod: 'rolling', batchSize: { type: 'number', value: 2 }, successCriteria: [{ numRuns: { type: 'percent', value: 50 }, status: 'success' }] }, nodes, { chorus: { vanishedHolder: 'release', leaseSeconds: 30 } })
    expect(decideGate(released, kk, 'n3', 0, 3, T0, T0 + 20_000).action).toBe('wait')
    expect(decideGate(released, kk, 'n3', 0, 3, T0, T0 + 31_000).action).toBe('start')
  })

  it('sequential groups: group 1 waits for group 0 and never starts if group 0 failed its criteria', () => {
    const t = structuredClone(base)
    t.target.executionType = 'sequential'
    t.target.groups = [t.target.groups[0]!, structuredClone(t.target.groups[0]!)]
    const seq: JobBody = { type: 'job', v: PROTOCOL_VERSION, jobId: 'j', issuedAt: T0, expiresAt: T0 + 1e9, template: JobTemplateSchema.parse(t), resolved: { groups: [{ nodes: ['a', 'b'] }, { nodes: ['c'] }], keys: {} } }
    expect(decideGate(seq, k({ a: 'success' }), 'c', 1, 0, T0, T0).action).toBe('wait')
    expect(decideGate(seq, k({ a: 'success', b: 'success' }), 'c', 1, 0, T0, T0).action).toBe('start')
    const stopped = decideGate(seq, k({ a: 'success', b: 'failure' }), 'c', 1, 0, T0, T0)
    expect(stopped).toMatchObject({ action: 'skip' })
    // Past group 0's time budget, a silent member counts as failed.
    expect(decideGate(seq, k({ a: 'success' }), 'c', 1, 0, T0, T0 + 61_000)).toMatchObject({ action: 'skip' })
  })

  it('quorum: nobody starts until enough targets acknowledged; after the window the run is skipped with the missing ones', () => {
    const q = body({}, ['a', 'b', 'c'], { chorus: { quorum: { type: 'percent', value: 100 }, quorumTimeoutSeconds: 5 } })
    expect(decideGate(q, k({}, ['a', 'b']), 'a', 0, 0, T0, T0 + 1000).action).toBe('wait')
    expect(decideGate(q, k({}, ['a', 'b', 'c']), 'a', 0, 0, T0, T0 + 1000).action).toBe('start')
    const late = decideGate(q, k({}, ['a', 'b']), 'a', 0, 0, T0, T0 + 5000)
    expect(late).toMatchObject({ action: 'skip' })
    if (late.action === 'skip') expect(late.reason).toMatch(/quorum failed: 2 of 3 .* no acknowledgement from c$/)
  })
})
