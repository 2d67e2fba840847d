// Rollout arithmetic and the turn-taking rule, from tables. Knowledge is what targets said of
// themselves (facts, by group and position) and the coordinator's signed checkpoint (counts per
// group); every rule is checked through either source, and through both at once (the larger
// lower bound wins, never their sum).
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { batchSizeFor, thresholdFor } from '../protocol/rollout.js'
import {
  ackedCount, checkpointDoneBelow, decideGate, doneBelow, emptyKnowledge, factFor, failureBudget, groupTally, isGated,
  type DoneStatus, type Knowledge, type PeerFact,
} from '../protocol/gate.js'
import { JobTemplateSchema } from '../protocol/template.js'
import { PROTOCOL_VERSION, type CheckpointBody, type CheckpointGroup, type JobBody } from '../protocol/wire.js'

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

/** A one-group job of `size` targets (the definition carries only sizes; places come from tickets). */
function body(group: Record<string, unknown>, size: number, extra: Record<string, unknown> = {}): JobBody {
  const t = structuredClone(base) as Record<string, unknown> & typeof base
  t.target.groups[0] = { ...t.target.groups[0]!, ...group } as never
  Object.assign(t, extra)
  const template = JobTemplateSchema.parse(t)
  return { type: 'job', v: PROTOCOL_VERSION, jobId: 'j', issuedAt: T0, expiresAt: T0 + 1e9, template, resolved: { groups: [{ size }] } }
}

/** A checkpoint group; `prefix` and `frontier` default to the most cautious values consistent with `done`. */
function cg(done: number, more: Partial<CheckpointGroup> = {}): CheckpointGroup {
  return { acked: done, done, succeeded: done, prefix: 0, frontier: done, ...more }
}

function checkpoint(groups: CheckpointGroup[], seq = 1): CheckpointBody {
  return { type: 'checkpoint', v: PROTOCOL_VERSION, jobId: 'j', instanceId: 'i', occurrenceAt: T0, seq, groups, issuedAt: T0 }
}

type F = DoneStatus | PeerFact
/**
 * Knowledge from facts (per group: position → a done status, or a fact; `{}` is an ack alone)
 * and, optionally, a checkpoint's groups.
 */
function know(facts: Record<number, F>[] = [], cp?: CheckpointGroup[]): Knowledge {
  const k = emptyKnowledge()
  facts.forEach((g, gi) => {
    for (const [pos, f] of Object.entries(g)) Object.assign(factFor(k, gi, Number(pos)), typeof f === 'string' ? { done: f } : f)
  })
  if (cp) k.checkpoint = checkpoint(cp)
  return k
}
/** Group 0's facts only. */
const kf = (g: Record<number, F> = {}, cp?: CheckpointGroup[]): Knowledge => know([g], cp)
const all = (n: number, s: F, from = 0): Record<number, F> => Object.fromEntries(Array.from({ length: n }, (_, i) => [from + i, s]))

const rollingSpec = { distributionMethod: 'rolling', batchSize: { type: 'number', value: 2 }, successCriteria: [{ numRuns: { type: 'percent', value: 50 }, status: 'success' }] }

describe('who may start', () => {
  const rolling = body(rollingSpec, 8)
  const batching = body({ distributionMethod: 'batching', batchSize: { type: 'number', value: 3 } }, 8)

  it('rolling window of 2: position p waits for p − 1 of the nodes before it (facts)', () => {
    expect(isGated(rolling)).toBe(true)
    expect(decideGate(rolling, kf(), 0, 1, T0, T0).action).toBe('start')
    expect(decideGate(rolling, kf(), 0, 2, T0, T0).action).toBe('wait')
    expect(decideGate(rolling, kf({ 1: 'success' }), 0, 2, T0, T0).action).toBe('start')
    expect(decideGate(rolling, kf({ 1: 'success' }), 0, 3, T0, T0).action).toBe('wait')
    expect(decideGate(rolling, kf({ 0: 'success', 2: 'success' }), 0, 3, T0, T0).action).toBe('start')
    // A fact at or after the waiting position says nothing about the ones before it.
    expect(decideGate(rolling, kf({ 3: 'success', 4: 'success' }), 0, 3, T0, T0).action).toBe('wait')
    // Acks and running holders are not done.
    expect(decideGate(rolling, kf({ 0: {}, 1: { lease: Number.MAX_SAFE_INTEGER } }), 0, 2, T0, T0).action).toBe('wait')
  })

  it('rolling window of 2: the same turns from the coordinator\'s checkpoint alone', () => {
    expect(decideGate(rolling, kf({}, [cg(1, { frontier: 2 })]), 0, 2, T0, T0).action).toBe('start')
    expect(decideGate(rolling, kf({}, [cg(1, { frontier: 3 })]), 0, 3, T0, T0).action).toBe('wait')
    expect(decideGate(rolling, kf({}, [cg(2, { frontier: 3 })]), 0, 3, T0, T0).action).toBe('start')
    // Two done among the first four positions (frontier 4): one of them may be position 3
    // itself, so the checkpoint bounds the done ones below 3 only by 2 − (4 − 3) = 1 ...
    expect(decideGate(rolling, kf({}, [cg(2, { frontier: 4 })]), 0, 3, T0, T0).action).toBe('wait')
    // ... unless its prefix says positions 0 and 1 are done.
    expect(decideGate(rolling, kf({}, [cg(2, { prefix: 2, frontier: 4 })]), 0, 3, T0, T0).action).toBe('start')
  })

  it('batching of 3: batch b starts only when all of batch b − 1 is done', () => {
    expect(decideGate(batching, kf(), 0, 2, T0, T0).action).toBe('start')
    expect(decideGate(batching, kf({ 0: 'success', 1: 'success' }), 0, 3, T0, T0).action).toBe('wait')
    expect(decideGate(batching, kf({ 0: 'success', 1: 'success', 2: 'success' }), 0, 3, T0, T0).action).toBe('start')
    expect(decideGate(batching, kf({ 0: 'success', 1: 'success', 2: 'success' }), 0, 6, T0, T0).action).toBe('wait')
    // Failures end a run too: a batch waits for ends, not successes (with a budget that allows two).
    const lenient = body({ distributionMethod: 'batching', batchSize: { type: 'number', value: 3 }, successCriteria: [{ numRuns: { type: 'percent', value: 50 }, status: 'success' }] }, 8)
    expect(decideGate(lenient, kf({ 0: 'success', 1: 'failure', 2: 'skipped' }), 0, 4, T0, T0).action).toBe('start')
    // From a checkpoint: three done, but of five started, so not necessarily all of batch 0.
    expect(decideGate(batching, kf({}, [cg(3, { frontier: 5 })]), 0, 3, T0, T0).action).toBe('wait')
    expect(decideGate(batching, kf({}, [cg(3, { prefix: 3, frontier: 5 })]), 0, 3, T0, T0).action).toBe('start')
    expect(decideGate(batching, kf({}, [cg(3, { frontier: 3 })]), 0, 5, T0, T0).action).toBe('start')
    expect(decideGate(batching, kf({}, [cg(5, { prefix: 5, frontier: 6 })]), 0, 6, T0, T0).action).toBe('wait')
    expect(decideGate(batching, kf({}, [cg(6, { frontier: 6 })]), 0, 7, T0, T0).action).toBe('start')
  })

  it('stops distribution once the group can no longer meet its criteria (facts or checkpoint)', () => {
    // 50 % success of 8 allows 4 failures; the fifth known failure stops the rest.
    const reason = /can no longer meet its success criteria \(5 failed of 8, at most 4 may fail\)/
    const fromFacts = decideGate(rolling, kf(all(5, 'failure')), 0, 6, T0, T0)
    expect(fromFacts).toMatchObject({ action: 'skip', reason: expect.stringMatching(reason) })
    const fromCheckpoint = decideGate(rolling, kf({}, [cg(5, { succeeded: 0, prefix: 5, frontier: 5 })]), 0, 6, T0, T0)
    expect(fromCheckpoint).toMatchObject({ action: 'skip', reason: expect.stringMatching(reason) })
    // Failures after this node's position count as well: the group as a whole cannot make it.
    expect(decideGate(rolling, kf(all(5, 'failure', 3)), 0, 1, T0, T0)).toMatchObject({ action: 'skip' })
    // Four failures are within the budget.
    expect(decideGate(rolling, kf(all(4, 'failure')), 0, 5, T0, T0).action).toBe('start')
    // A skipped run is not a success: it spends the budget too.
    expect(decideGate(rolling, kf({ ...all(4, 'failure'), 4: 'skipped' }), 0, 6, T0, T0)).toMatchObject({ action: 'skip' })
  })

  it('a vanished holder keeps its slot by default and releases it only under the release policy', () => {
    // Position 0 done, 1 took its turn with a lease until T0 + 30 s and vanished, 2 was never heard from.
    const facts = { 0: 'success', 1: { lease: T0 + 30_000 }, ...all(5, {}, 3) } as Record<number, F>
    expect(decideGate(rolling, kf(facts), 0, 3, T0, T0 + 45_000).action).toBe('wait')
    const released = body(rollingSpec, 8, { chorus: { vanishedHolder: 'release', leaseSeconds: 30 } })
    expect(decideGate(released, kf(facts), 0, 3, T0, T0 + 20_000).action).toBe('wait')
    expect(decideGate(released, kf(facts), 0, 3, T0, T0 + 31_000).action).toBe('start')
    // The released holder counts as done (its slot is free), neither succeeded nor failed: it may
    // still succeed, and the coordinator's checkpoint may already say so.
    expect(groupTally(released, kf(facts), 0, T0 + 31_000)).toEqual({ done: 2, succeeded: 1, failed: 0 })
    expect(groupTally(rolling, kf(facts), 0, T0 + 31_000)).toEqual({ done: 1, succeeded: 1, failed: 0 })
    // A node cannot tell a silent target from one it has not heard: position 2 is never
    // released on the node's own facts, however long past occurrence + leaseSeconds ...
    expect(decideGate(released, kf(facts), 0, 4, T0, T0 + 59_000).action).toBe('wait')
    // ... only by the coordinator, which knows every ack: its checkpoint counts 0 done, 1 and 2 released.
    const cp = [cg(3, { acked: 7, succeeded: 1, prefix: 3, frontier: 3 })]
    expect(decideGate(released, kf(facts, cp), 0, 4, T0, T0 + 31_000).action).toBe('start')
    // Under "keep" an expired lease is never a release: the slot is held until the group's budget runs out.
    expect(decideGate(rolling, kf(facts), 0, 3, T0, T0 + 59_999).action).toBe('wait')
    expect(decideGate(rolling, kf(facts), 0, 3, T0, T0 + 60_000)).toMatchObject({ action: 'skip', reason: expect.stringMatching(/time budget \(60 s\) ran out/) })
  })

  const seqBody = (): JobBody => {
    const t = structuredClone(base)
    t.target.executionType = 'sequential'
    t.target.groups = [t.target.groups[0]!, structuredClone(t.target.groups[0]!)]
    return { type: 'job', v: PROTOCOL_VERSION, jobId: 'j', issuedAt: T0, expiresAt: T0 + 1e9, template: JobTemplateSchema.parse(t), resolved: { groups: [{ size: 2 }, { size: 1 }] } }
  }

  it('sequential groups: group 1 waits for group 0 and never starts if group 0 failed its criteria (facts)', () => {
    const seq = seqBody()
    expect(isGated(seq)).toBe(true)
    expect(decideGate(seq, know([{ 0: 'success' }]), 1, 0, T0, T0).action).toBe('wait')
    expect(decideGate(seq, know([{ 0: 'success', 1: 'success' }]), 1, 0, T0, T0).action).toBe('start')
    const stopped = decideGate(seq, know([{ 0: 'success', 1: 'failure' }]), 1, 0, T0, T0)
    expect(stopped).toMatchObject({ action: 'skip', code: 'distribution_stopped', reason: expect.stringMatching(/distribution stopped: group 0 did not meet its success criteria \(1 succeeded, 1 failed or unreachable of 2\)/) })
    // Past group 0's time budget, a silent member counts as failed.
    expect(decideGate(seq, know([{ 0: 'success' }]), 1, 0, T0, T0 + 61_000)).toMatchObject({ action: 'skip' })
    // Group 0 itself does not wait for group 1.
    expect(decideGate(seq, know(), 0, 1, T0, T0).action).toBe('start')
  })

  it('sequential groups: the same from the coordinator\'s checkpoint', () => {
    const seq = seqBody()
    const running = cg(1, { acked: 2, frontier: 2 })
    expect(decideGate(seq, know([], [running, cg(0)]), 1, 0, T0, T0).action).toBe('wait')
    expect(decideGate(seq, know([], [cg(2, { prefix: 2 }), cg(0)]), 1, 0, T0, T0).action).toBe('start')
    expect(decideGate(seq, know([], [cg(2, { succeeded: 1 }), cg(0)]), 1, 0, T0, T0)).toMatchObject({ action: 'skip' })
    expect(decideGate(seq, know([], [running, cg(0)]), 1, 0, T0, T0 + 61_000)).toMatchObject({ action: 'skip' })
    // The two sources together: the checkpoint knows 0 succeeded, this node heard 1 succeed.
    expect(decideGate(seq, know([{ 1: 'success' }], [running, cg(0)]), 1, 0, T0, T0).action).toBe('wait') // could be the same one
    expect(decideGate(seq, know([{ 0: 'success', 1: 'success' }], [running, cg(0)]), 1, 0, T0, T0).action).toBe('start')
  })

  it('quorum: nobody starts until enough targets acknowledged; after the window the run is skipped', () => {
    const q = body({}, 3, { chorus: { quorum: { type: 'percent', value: 100 }, quorumTimeoutSeconds: 5 } })
    expect(isGated(q)).toBe(true)
    expect(decideGate(q, kf({ 0: {}, 1: {} }), 0, 0, T0, T0 + 1000).action).toBe('wait')
    expect(decideGate(q, kf({ 0: {}, 1: {}, 2: {} }), 0, 0, T0, T0 + 1000).action).toBe('start')
    // The checkpoint's acks count as well (the larger of the two).
    expect(decideGate(q, kf({ 0: {} }, [{ acked: 3, done: 0, succeeded: 0, prefix: 0, frontier: 0 }]), 0, 0, T0, T0 + 1000).action).toBe('start')
    expect(decideGate(q, kf({ 0: {}, 1: {} }, [{ acked: 1, done: 0, succeeded: 0, prefix: 0, frontier: 0 }]), 0, 0, T0, T0 + 1000).action).toBe('wait')
    const late = decideGate(q, kf({ 0: {}, 1: {} }), 0, 0, T0, T0 + 5000)
    expect(late).toMatchObject({ action: 'skip' })
    if (late.action === 'skip') expect(late.code).toBe('quorum_failed')
    if (late.action === 'skip') expect(late.reason).toMatch(/^quorum failed: 2 of 3 targets acknowledged within 5 s, 3 needed/)
  })
})

describe('checkpointDoneBelow: done positions below p, from counts alone', () => {
  // done d of positions [0, frontier); every position below prefix done.
  it.each([
    ['no checkpoint', undefined, 5, 0],
    ['p at the frontier: every done one is below', { done: 5, prefix: 2, frontier: 8 }, 8, 5],
    ['p above the frontier', { done: 5, prefix: 2, frontier: 8 }, 12, 5],
    ['one below the frontier: at most one done one is at or above p', { done: 5, prefix: 2, frontier: 8 }, 7, 4],
    ['below the frontier, d − (frontier − p) = prefix', { done: 5, prefix: 2, frontier: 8 }, 5, 2],
    ['below the frontier, the prefix is the better bound', { done: 5, prefix: 2, frontier: 8 }, 4, 2],
    ['p inside the prefix: all of [0, p) done', { done: 5, prefix: 2, frontier: 8 }, 1, 1],
    ['p = 0', { done: 5, prefix: 2, frontier: 8 }, 0, 0],
    ['a long prefix', { done: 6, prefix: 6, frontier: 9 }, 3, 3],
    ['nothing done yet', { done: 0, prefix: 0, frontier: 4 }, 2, 0],
    ['all done', { done: 8, prefix: 8, frontier: 8 }, 8, 8],
    ['never negative', { done: 1, prefix: 0, frontier: 8 }, 2, 0],
  ] as const)('%s', (_what, g, p, expected) => {
    const cp = g ? { acked: g.frontier, succeeded: g.done, ...g } : undefined
    expect(checkpointDoneBelow(cp, p)).toBe(expected)
  })
})

describe('two sources: the larger lower bound counts, never the sum', () => {
  const rolling = body(rollingSpec, 8)
  it.each([
    // [what, facts of group 0, checkpoint group, p, done below p]
    ['facts only', { 0: 'success', 2: 'failure' }, undefined, 4, 2],
    ['checkpoint only', {}, cg(3, { frontier: 3 }), 4, 3],
    ['facts say more than the checkpoint', { 0: 'success', 1: 'success', 2: 'success' }, cg(1, { prefix: 1, frontier: 4 }), 4, 3],
    ['the checkpoint says more than the facts', { 0: 'success' }, cg(3, { prefix: 3, frontier: 3 }), 4, 3],
    ['equal counts may be the same positions: 2, not 4', { 0: 'success', 1: 'failure' }, cg(2, { frontier: 2 }), 4, 2],
    ['facts at or after p do not count', { 4: 'success', 6: 'success' }, cg(0, { frontier: 7 }), 4, 0],
    ['acks and holders are not done', { 0: {}, 1: { lease: T0 + 1 } }, undefined, 4, 0],
  ] as [string, Record<number, F>, CheckpointGroup | undefined, number, number][])('%s', (_what, facts, cp, p, expected) => {
    const k = kf(facts, cp ? [cp] : undefined)
    expect(doneBelow(rolling, k, 0, p, T0)).toBe(expected)
    // Window 2 at p needs p − 1 done before it.
    expect(decideGate(rolling, k, 0, p, T0, T0).action).toBe(expected >= p - 1 ? 'start' : 'wait')
  })

  it('group tallies take each count from the larger source', () => {
    const k = kf({ 0: 'success', 1: 'failure', 2: 'failure' }, [cg(2, { succeeded: 2, prefix: 2, frontier: 2 })])
    expect(groupTally(rolling, k, 0, T0)).toEqual({ done: 3, succeeded: 2, failed: 2 })
    const cpMore = kf({ 0: 'failure' }, [cg(6, { succeeded: 1, frontier: 7 })])
    expect(groupTally(rolling, cpMore, 0, T0)).toEqual({ done: 6, succeeded: 1, failed: 5 })
    // Five failures by the checkpoint stop the rest even though this node heard of one.
    expect(decideGate(rolling, cpMore, 0, 7, T0, T0)).toMatchObject({ action: 'skip', reason: expect.stringMatching(/5 failed of 8/) })
    // Three failures heard and two counted by the checkpoint may be the same ones: 3, within the budget of 4.
    const overlap = kf(all(3, 'failure'), [cg(2, { succeeded: 0, prefix: 2, frontier: 2 })])
    expect(groupTally(rolling, overlap, 0, T0).failed).toBe(3)
    expect(decideGate(rolling, overlap, 0, 4, T0, T0).action).toBe('start')
  })

  it('a holder released on its lease is no known failure: the checkpoint may say it succeeded (regression)', () => {
    // Release policy, window 1, 3 targets, 100 % must succeed. This node (position 1) holds
    // position 0's lease fact, now expired; the coordinator's checkpoint says position 0 succeeded.
    const spec = { distributionMethod: 'rolling', batchSize: { type: 'number', value: 1 }, successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }] }
    const b = body(spec, 3, { chorus: { vanishedHolder: 'release', leaseSeconds: 30 } })
    const k = kf({ 0: { lease: T0 + 1_000 }, 1: {} }, [cg(1, { acked: 3, prefix: 1, frontier: 1 })])
    expect(groupTally(b, k, 0, T0 + 5_000)).toEqual({ done: 1, succeeded: 1, failed: 0 })
    expect(decideGate(b, k, 0, 1, T0, T0 + 5_000).action).toBe('start')
  })

  it('acknowledgements: facts heard (any group) against the checkpoint\'s acked per group', () => {
    expect(ackedCount(know())).toBe(0)
    expect(ackedCount(know([{ 0: {}, 1: 'success' }, { 0: {} }]))).toBe(3)
    expect(ackedCount(know([{ 0: {}, 1: 'success' }, { 0: {} }], [cg(0, { acked: 1 }), cg(0, { acked: 1 })]))).toBe(3)
    expect(ackedCount(know([{ 0: {} }], [cg(0, { acked: 4 }), cg(0, { acked: 2 })]))).toBe(6)
  })
})

describe('a checkpoint whose frontier is at or below a waiting position', () => {
  // Every done position the checkpoint counts lies below its frontier, hence below p: the
  // node at p starts exactly when done ≥ p − k + 1, whatever the prefix.
  it('admits position p exactly when done ≥ p − k + 1 (window k = 1, 2, 3; every consistent checkpoint)', () => {
    let cases = 0
    for (const k of [1, 2, 3]) {
      const b = body({ ...rollingSpec, batchSize: { type: 'number', value: k } }, 8)
      for (let p = 0; p < 8; p++) {
        for (let frontier = 0; frontier <= p; frontier++) {
          for (let done = 0; done <= frontier; done++) {
            for (let prefix = 0; prefix <= done; prefix++) {
              const kk = kf({ [p]: {} }, [{ acked: frontier + 1, done, succeeded: done, prefix, frontier }])
              const want = done >= p - k + 1 ? 'start' : 'wait'
              expect(decideGate(b, kk, 0, p, T0, T0).action, `k ${k}, p ${p}, frontier ${frontier}, done ${done}, prefix ${prefix}`).toBe(want)
              cases++
            }
          }
        }
      }
    }
    expect(cases).toBeGreaterThan(300)
  })

  it.each([
    // [p, frontier, done, decision] with window 2
    [5, 5, 3, 'wait'],
    [5, 5, 4, 'start'],
    [5, 4, 4, 'start'],
    [6, 4, 4, 'wait'],
    [6, 5, 5, 'start'],
  ] as const)('window 2, p %d, frontier %d, done %d: %s', (p, frontier, done, decision) => {
    const b = body(rollingSpec, 8)
    expect(decideGate(b, kf({}, [{ acked: frontier, done, succeeded: done, prefix: 0, frontier }]), 0, p, T0, T0).action).toBe(decision)
  })
})
