// Refused means no state: messages the coordinator core refuses (results from a node that is not
// the run's target, results for occurrences that are not due, acks from non-targets) change
// nothing it holds in memory or persists. Fed events: no network, no clock, no disk.
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { coordinatorStep, emptyCoordinatorState, restoreCoordinator, DEFAULT_COORDINATOR_TIMING, OCCURRENCE_GRACE_MS, type CoordinatorConfig, type CoordinatorEffect, type CoordinatorState } from '../coordinator/core.js'
import { generateIdentity, type Identity } from '../protocol/keys.js'
import { JobTemplateSchema, type JobTemplate } from '../protocol/template.js'
import { PROTOCOL_VERSION, open, seal } from '../protocol/wire.js'
import { newEnrollment } from '../coordinator/members.js'
import { TEST_ENROLL_TOKEN } from './helpers/members.js'
import { peerIdOf } from '../protocol/keys.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'

const T0 = Date.UTC(2026, 11, 1, 9, 0, 0)
const DAY = 86_400_000
const coordinator = generateIdentity()
const cfg: CoordinatorConfig = { identity: coordinator, ...DEFAULT_COORDINATOR_TIMING }
const ids = new Map<string, Identity>(['a', 'b', 'x'].map((n) => [n, generateIdentity()]))
const base = JobTemplateSchema.parse(JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8')))
const stamp = (ms: number) => new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')

function targeting(nodes: string[], rule = 'immediate'): JobTemplate {
  const t = structuredClone(base)
  t.scheduleRule = rule
  t.target.groups[0]!.nodeListType = 'nodes'
  t.target.groups[0]!.nodeIdentifiers = nodes
  delete (t.target.groups[0] as { filter?: unknown }).filter
  return JobTemplateSchema.parse(t)
}

/** A coordinator core with a store: every persist effect is applied to `db` (as the runtime's level batch). */
function coordinatorWithStore() {
  const state = emptyCoordinatorState()
  const db = new Map<string, string>()
  const step = (event: Parameters<typeof coordinatorStep>[2], now: number): CoordinatorEffect[] => {
    const effects = coordinatorStep(state, cfg, event, now)
    for (const e of effects) {
      if (e.type !== 'persist') continue
      for (const p of e.puts) db.set(p.key, JSON.stringify(p.value))
      for (const d of e.dels) db.delete(d)
    }
    return effects
  }
  return { state, db, step }
}

function hello(step: ReturnType<typeof coordinatorWithStore>['step'], nodeId: string, now: number) {
  const identity = ids.get(nodeId)!
  const peerId = peerIdOf(identity.publicKey)
  step({ type: 'create_enrollment', requestId: `enrol-${nodeId}`, enrollment: newEnrollment({ id: `enrol-${nodeId}`, token: `${TEST_ENROLL_TOKEN}-${nodeId}` }, now) }, now)
  const env = seal(identity, { type: 'hello', v: PROTOCOL_VERSION, nodeId, peerId, facts: { kernel_name: 'Linux' }, agentVersion: 'test', sentAt: now, enrollToken: `${TEST_ENROLL_TOKEN}-${nodeId}` })
  return step({ type: 'rpc', requestId: `hello-${nodeId}`, envelope: env, peerId }, now)
}

function resultFor(nodeId: string, jobId: string, occurrenceAt: number) {
  const instanceId = instanceIdFor(jobId, occurrenceAt)
  return seal(ids.get(nodeId)!, {
    type: 'result', v: PROTOCOL_VERSION, runId: runIdFor(instanceId, nodeId), jobId, instanceId, nodeId, occurrenceAt, group: 0, batch: 0,
    status: 'success', startedAt: occurrenceAt, finishedAt: occurrenceAt + 1, steps: [{ number: 1, name: 's', status: 'success', attempts: 1, exitCode: 0, outputs: {}, stdout: '', stderr: '' }],
  })
}

function replyOf(effects: CoordinatorEffect[]) {
  const r = effects.find((e): e is Extract<CoordinatorEffect, { type: 'reply_rpc' }> => e.type === 'reply_rpc')!
  const opened = open(r.envelope, [coordinator.publicKey])
  if (!opened.ok || opened.body.type !== 'reply') throw new Error('bad reply')
  return opened.body
}

/** What the coordinator holds: counts in memory, every job's instance counts, and the store's records. */
function snapshot(state: CoordinatorState, db: Map<string, string>) {
  return {
    instances: state.instances.size, runs: state.runs.size, live: state.live.size, tallies: state.tallies.size, dirty: state.dirty.size,
    jobs: [...state.jobs.values()].map((j) => ({ id: j.jobId, history: structuredClone(j.history), cursor: j.cursor, status: j.status })),
    acks: [...state.instances.values()].map((i) => [i.id, [...(i.acks ?? [])]]),
    store: [...db.entries()].sort(([a], [b]) => (a < b ? -1 : 1)),
  }
}

describe('refused means no state (coordinator core)', () => {
  const DTSTART = T0 + 4 * 60_000

  function setup() {
    const c = coordinatorWithStore()
    for (const n of ['a', 'b', 'x']) hello(c.step, n, T0 - 10_000)
    c.step({ type: 'submit', requestId: 's1', jobId: 'daily', template: targeting(['a', 'b'], `RRULE:DTSTART=${stamp(DTSTART)};FREQ=DAILY`) }, T0 - 5_000)
    c.step({ type: 'submit', requestId: 's2', jobId: 'other', template: targeting(['a']) }, T0 - 5_000)
    return c
  }

  it('a registered non-target flooding signed results (future occurrences, a job that does not target it) changes nothing; a legitimate result afterwards is stored', () => {
    const { state, db, step } = setup()
    const before = snapshot(state, db)
    const flood: CoordinatorEffect[] = []
    for (let k = 1; k <= 200; k++) flood.push(...step({ type: 'rpc', requestId: `f${k}`, envelope: resultFor('x', 'daily', DTSTART + k * DAY), peerId: 'peer-x' }, T0))
    // The occurrence due now (within the grace window), but x is not one of its targets.
    const due = step({ type: 'rpc', requestId: 'due', envelope: resultFor('x', 'daily', DTSTART), peerId: 'peer-x' }, T0)
    const other = step({ type: 'rpc', requestId: 'other', envelope: resultFor('x', 'other', T0 - 5_000), peerId: 'peer-x' }, T0)
    // Refused results do not even count as a contact.
    expect(state.nodes.get('x')!.lastSeenAt).toBe(T0 - 10_000)
    // An ack claimed in a sync for an instance x is not a target of (quorums count acks).
    const inst = instanceIdFor('other', T0 - 5_000)
    const claim = seal(ids.get('x')!, { type: 'sync', v: PROTOCOL_VERSION, nodeId: 'x', sentAt: T0, gated: [{ instanceId: inst, jobId: 'other', occurrenceAt: T0 - 5_000, state: 'running' }] })
    const sync = step({ type: 'rpc', requestId: 'claim', envelope: claim, peerId: 'peer-x' }, T0)
    for (const effects of [flood, due, other]) {
      expect(effects.filter((e) => e.type === 'persist')).toEqual([])
      expect(effects.filter((e) => e.type === 'reply_rpc')).not.toHaveLength(0)
    }
    expect(replyOf(due)).toMatchObject({ ok: false, error: 'node x is not a target of job daily', ackRunIds: [runIdFor(instanceIdFor('daily', DTSTART), 'x')] })
    expect(replyOf(other)).toMatchObject({ ok: false })
    expect(replyOf(sync).ok).toBe(true) // the sync itself is fine; its claim is ignored
    expect(snapshot(state, db)).toEqual(before)
    // A restart finds every instance a job counts, in the store's index of the job.
    const restored = restoreCoordinator([...db.entries()].map(([k, v]) => [k, JSON.parse(v)]))
    for (const j of restored.jobs.values()) expect([...db.keys()].filter((k) => k.startsWith(`idx/job/${j.jobId}/`))).toHaveLength(j.history.count)
    // Later positive: the target's result is stored.
    const legit = step({ type: 'rpc', requestId: 'legit', envelope: resultFor('a', 'other', T0 - 5_000), peerId: 'peer-a' }, T0 + 1)
    expect(replyOf(legit)).toMatchObject({ ok: true, ackRunIds: [runIdFor(inst, 'a')] })
    expect(JSON.parse(db.get(`run/${runIdFor(inst, 'a')}`)!)).toMatchObject({ status: 'success', nodeId: 'a' })
  })

  it('a target\'s result for an occurrence beyond the grace window is refused without an acknowledgement (sent again later) and creates nothing; within the window it is accepted', () => {
    const { state, db, step } = setup()
    const before = snapshot(state, db)
    const tooEarly: CoordinatorEffect[] = []
    for (let k = 1; k <= 200; k++) tooEarly.push(...step({ type: 'rpc', requestId: `e${k}`, envelope: resultFor('a', 'daily', DTSTART + k * DAY), peerId: 'peer-a' }, T0))
    expect(tooEarly.filter((e) => e.type === 'persist')).toEqual([])
    const r = replyOf(tooEarly)
    expect(r.ok).toBe(false)
    expect(r.ackRunIds).toEqual([]) // the agent keeps it and sends it again
    expect(r.error).toMatch(/not due yet/)
    expect(snapshot(state, db)).toEqual(before)

    // DTSTART is 4 min ahead of the coordinator's clock, inside OCCURRENCE_GRACE_MS: clock skew, accepted.
    expect(DTSTART - T0).toBeLessThan(OCCURRENCE_GRACE_MS)
    const skewed = step({ type: 'rpc', requestId: 'skew', envelope: resultFor('a', 'daily', DTSTART), peerId: 'peer-a' }, T0)
    expect(replyOf(skewed)).toMatchObject({ ok: true, ackRunIds: [runIdFor(instanceIdFor('daily', DTSTART), 'a')] })
    const instance = state.instances.get(instanceIdFor('daily', DTSTART))!
    expect(instance.runIds).toHaveLength(2)
    expect(state.jobs.get('daily')!.history).toMatchObject({ count: 1, latest: { id: instance.id }, ahead: [DTSTART] })
    expect(db.has(`instance/${instance.id}`)).toBe(true)
    // The next day's occurrence, a day early: refused, retry later.
    const tomorrow = step({ type: 'rpc', requestId: 'tomorrow', envelope: resultFor('a', 'daily', DTSTART + DAY), peerId: 'peer-a' }, T0 + 1)
    expect(replyOf(tomorrow)).toMatchObject({ ok: false, ackRunIds: [] })
    expect(state.instances.has(instanceIdFor('daily', DTSTART + DAY))).toBe(false)
    // ...and accepted once it is within the window.
    const later = step({ type: 'rpc', requestId: 'later', envelope: resultFor('a', 'daily', DTSTART + DAY), peerId: 'peer-a' }, DTSTART + DAY - OCCURRENCE_GRACE_MS + 1)
    expect(replyOf(later)).toMatchObject({ ok: true })
  })

  it('a job record written before history left memory (an instanceIds list, some never written; no counts) restores counting only the instances it has', () => {
    const { db } = setup()
    for (const id of ['daily', 'other']) {
      const job = JSON.parse(db.get(`job/${id}`)!)
      delete job.history
      job.instanceIds = id === 'daily' ? [instanceIdFor('daily', DTSTART + DAY), instanceIdFor('daily', DTSTART + 2 * DAY)] : [instanceIdFor('other', T0 - 5_000)]
      db.set(`job/${id}`, JSON.stringify(job))
    }
    const restored = restoreCoordinator([...db.entries()].map(([k, v]) => [k, JSON.parse(v)]))
    expect(restored.jobs.get('daily')!.history).toEqual({ count: 0, byStatus: {} })
    expect(restored.jobs.get('other')!.history).toEqual({ count: 1, byStatus: { running: 1 } })
    expect('instanceIds' in restored.jobs.get('other')!).toBe(false)
  })

  it('progress gossip for an occurrence beyond the grace window creates no instance', () => {
    const { state, db, step } = setup()
    const before = snapshot(state, db)
    for (let k = 1; k <= 50; k++) {
      const at = DTSTART + k * DAY
      const body = { type: 'progress' as const, v: PROTOCOL_VERSION, jobId: 'daily', instanceId: instanceIdFor('daily', at), occurrenceAt: at, nodeId: 'a', event: 'ack' as const, at: T0 }
      step({ type: 'progress', envelope: seal(ids.get('a')!, body) }, T0)
    }
    expect(snapshot(state, db)).toEqual(before)
  })
})
