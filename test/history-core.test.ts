// History out of memory (dropFinished, as the runtime runs the core): finished instances and
// their runs leave memory and are read from the store; a restart loads the live state only and
// holds exactly what was held before the kill; no occurrence gets a second instance, and a late
// result for a finished instance is recorded or refused exactly as when it was in memory.
// The core is fed events; its persists go to a real level (memory-level) through the store interface.
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { MemoryLevel } from 'memory-level'
import { coordinatorStep, restoreCoordinator, DEFAULT_COORDINATOR_TIMING, type CoordinatorConfig, type CoordinatorEffect, type CoordinatorEvent, type CoordinatorState, type NodeRecord, type RunRecord } from '../coordinator/core.js'
import { LevelStore, type StoreOp } from '../coordinator/store.js'
import { History, loadLive } from '../coordinator/history.js'
import { migrateHistory } from '../coordinator/migrate.js'
import { pino } from 'pino'
import { generateIdentity, peerIdOf, type Identity } from '../protocol/keys.js'
import { JobTemplateSchema, type JobTemplate } from '../protocol/template.js'
import { PROTOCOL_VERSION, open, seal } from '../protocol/wire.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'

const T0 = Date.UTC(2026, 11, 1, 9, 0, 0)
const MIN = 60_000
const coordinator = generateIdentity()
const cfg: CoordinatorConfig = { identity: coordinator, ...DEFAULT_COORDINATOR_TIMING, dropFinished: true }
const NODES = ['n1', 'n2', 'n3', 'n4']
const keys = new Map<string, Identity>(NODES.map((n) => [n, generateIdentity()]))
const base = JobTemplateSchema.parse(JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8')))
const stamp = (ms: number) => new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')

/** Every minute from T0, on every node; group timeout 20 s. */
function everyMinute(): JobTemplate {
  const t = structuredClone(base)
  t.scheduleRule = `RRULE:DTSTART=${stamp(T0)};FREQ=MINUTELY;INTERVAL=1`
  t.target.groups[0]!.nodeListType = 'nodes'
  t.target.groups[0]!.nodeIdentifiers = NODES
  t.target.groups[0]!.timeoutSeconds = 20
  delete (t.target.groups[0] as { filter?: unknown }).filter
  return JobTemplateSchema.parse(t)
}

const nodeRecords: [string, NodeRecord][] = NODES.map((nodeId) => {
  const k = keys.get(nodeId)!
  return [`node/${nodeId}`, { nodeId, publicKey: k.publicKey, peerId: peerIdOf(k.publicKey), facts: {}, agentVersion: 'test', addrs: [], skills: {}, firstSeenAt: T0, lastSeenAt: T0 }]
})

function result(nodeId: string, occurrenceAt: number, status: 'success' | 'failure' = 'success') {
  const instanceId = instanceIdFor('job', occurrenceAt)
  return seal(keys.get(nodeId)!, {
    type: 'result', v: PROTOCOL_VERSION, runId: runIdFor(instanceId, nodeId), jobId: 'job', instanceId, nodeId, occurrenceAt, group: 0, batch: 0, status,
    startedAt: occurrenceAt + 1, finishedAt: occurrenceAt + 2, steps: [{ number: 1, name: 's', status, attempts: 1, exitCode: status === 'success' ? 0 : 1, outputs: {}, stdout: `out ${nodeId}`, stderr: '' }],
  })
}

/** A core whose persists commit to a memory-level store, one batch per step (as the runtime's loop). */
async function coordinatorOnLevel() {
  const store = new LevelStore(new MemoryLevel<string, unknown>({ valueEncoding: 'json' }))
  await store.batch(nodeRecords.map(([key, value]) => ({ type: 'put', key, value })))
  const box = { state: restoreCoordinator(nodeRecords) }
  const step = async (event: CoordinatorEvent, now: number): Promise<CoordinatorEffect[]> => {
    const effects = coordinatorStep(box.state, cfg, event, now)
    const ops: StoreOp[] = []
    for (const e of effects) if (e.type === 'persist') { for (const p of e.puts) ops.push({ type: 'put', key: p.key, value: structuredClone(p.value) }); for (const d of e.dels) ops.push({ type: 'del', key: d }) }
    await store.batch(ops)
    return effects
  }
  return { store, box, step, history: new History(store, () => box.state) }
}

function replyOf(effects: CoordinatorEffect[]) {
  const r = effects.find((e) => e.type === 'reply_rpc')
  if (!r || r.type !== 'reply_rpc') throw new Error('no rpc reply')
  const o = open(r.envelope)
  if (!o.ok || o.body.type !== 'reply') throw new Error('reply does not open')
  return o.body
}

/** What the core holds in memory, as plain data (maps and sets as sorted entries). */
function held(state: CoordinatorState) {
  const sorted = <T>(m: Map<string, T>) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1))
  return {
    jobs: sorted(state.jobs).map(([id, j]) => [id, { ...j, envelope: undefined, stateEnvelope: undefined }]),
    instances: sorted(state.instances), runs: sorted(state.runs), live: [...state.live].sort(), openRuns: sorted(state.openRuns), nodes: sorted(state.nodes).map(([id]) => id),
  }
}

/** 30 minutes of a job on 4 nodes: every third occurrence gets results (one fails), the others time out; the last one stays live. */
async function thirtyMinutes() {
  const c = await coordinatorOnLevel()
  await c.step({ type: 'submit', requestId: 'submit', jobId: 'job', template: everyMinute() }, T0 - 1)
  for (let k = 0; k < 30; k++) {
    const at = T0 + k * MIN
    await c.step({ type: 'tick' }, at + 1)
    if (k % 3 === 0) for (const n of NODES) await c.step({ type: 'rpc', requestId: `r${k}${n}`, envelope: result(n, at, n === 'n4' ? 'failure' : 'success'), peerId: peerIdOf(keys.get(n)!.publicKey) }, at + 5)
  }
  // 29 minutes past T0 + 10 s: every occurrence before is past its deadline (20 s + grace); the last is live.
  await c.step({ type: 'tick' }, T0 + 29 * MIN + 10_000)
  await c.step({ type: 'tick' }, T0 + 29 * MIN + 10_001)
  return c
}

describe('history out of memory (coordinator core on level)', () => {
  it('keeps only live instances and their runs in memory; finished ones are read from the store through the indexes', async () => {
    const { box, history, store } = await thirtyMinutes()
    const state = box.state
    expect([...state.instances.keys()]).toEqual([instanceIdFor('job', T0 + 29 * MIN)])
    expect(state.runs.size).toBe(NODES.length)
    const job = state.jobs.get('job')!
    expect(job.history.count).toBe(30)
    expect(job.history.byStatus).toEqual({ running: 1, failure: 29 })
    expect('instanceIds' in job).toBe(false)
    // A finished run, from the store (its steps and output as the node sent them).
    const first = instanceIdFor('job', T0)
    const run = await history.run(runIdFor(first, 'n2'))
    expect(state.runs.has(runIdFor(first, 'n2'))).toBe(false)
    expect(run).toMatchObject({ status: 'success', steps: [{ stdout: 'out n2' }] })
    expect((await history.run(runIdFor(instanceIdFor('job', T0 + MIN), 'n1')))!).toMatchObject({ status: 'timeout', reasonCode: 'no_result' })
    expect((await history.instance(first))!.counts).toEqual({ success: 3, failure: 1 })
    // The indexes: the job's instances in occurrence order, by status, and a node's runs.
    const page = await history.instancePage({ job: 'job', oldestFirst: true, page: 1, size: 100 })
    expect(page.items.map((i) => i.occurrenceAt)).toEqual(Array.from({ length: 30 }, (_, k) => T0 + k * MIN))
    expect(page.pagination).toMatchObject({ total: 30, next: null })
    expect((await history.instancePage({ status: 'running', page: 1, size: 10 })).items.map((i) => i.id)).toEqual([instanceIdFor('job', T0 + 29 * MIN)])
    expect((await history.instancePage({ status: 'failure', page: 1, size: 100 })).items).toHaveLength(29)
    const n3 = await history.nodeRunPage('n3', { page: 1, size: 100 })
    expect(n3.items).toHaveLength(30)
    expect(n3.items.every((r: RunRecord) => r.nodeId === 'n3')).toBe(true)
    let indexed = 0
    for await (const _ of store.keys({ prefix: 'idx/status/running/' })) indexed++
    expect(indexed).toBe(1)
  })

  it('retention takes a job that will never run again (one-shot, done) with the last of its history; an active recurring job stays with none', async () => {
    const c = await thirtyMinutes()
    const once = structuredClone(everyMinute())
    once.scheduleRule = 'immediate'
    await c.step({ type: 'submit', requestId: 'submit-once', jobId: 'once', template: JobTemplateSchema.parse(once) }, T0 + 30 * MIN)
    const inst = [...c.box.state.instances.values()].find((i) => i.jobId === 'once')!
    for (const n of NODES) {
      const body = { ...open(result(n, inst.occurrenceAt)).body as Record<string, unknown>, jobId: 'once', instanceId: inst.id, runId: runIdFor(inst.id, n) }
      await c.step({ type: 'rpc', requestId: `once-${n}`, envelope: seal(keys.get(n)!, body as never), peerId: peerIdOf(keys.get(n)!.publicKey) }, T0 + 30 * MIN + 5)
    }
    await c.step({ type: 'tick' }, T0 + 30 * MIN + 10)
    await c.step({ type: 'tick' }, T0 + 30 * MIN + 11)
    const done = c.box.state.jobs.get('once')!
    expect(done).toMatchObject({ status: 'completed', history: { count: 1, byStatus: { success: 1 } } })
    expect(c.box.state.instances.has(inst.id)).toBe(false)
    // Prune everything finished: the one-shot's instance and the recurring job's 29 finished ones.
    const finished = (await c.history.instancePage({ page: 1, size: 100 })).items.filter((i) => i.status !== 'running')
    const items = await Promise.all(finished.map(async (i) => ({ instance: (await c.history.instance(i.id))!, runs: (await Promise.all(i.runIds.map((id) => c.history.run(id)))).filter((r) => r !== undefined).map((r) => ({ runId: r.runId, nodeId: r.nodeId })) })))
    await c.step({ type: 'prune', items, auditKeys: [] }, T0 + 400 * 24 * 60 * MIN)
    expect(c.box.state.jobs.has('once')).toBe(false)
    expect(await c.store.get('job/once')).toBeUndefined()
    // The recurring job is active: it keeps its record (with only its live instance counted).
    expect(c.box.state.jobs.get('job')!.history).toMatchObject({ count: 1, byStatus: { running: 1 } })
    expect(await c.store.get('job/job')).toMatchObject({ jobId: 'job', status: 'active' })
    // After a restart the one-shot job stays gone.
    const restored = restoreCoordinator(await loadLive(c.store))
    expect(restored.jobs.has('once')).toBe(false)
    expect(restored.jobs.has('job')).toBe(true)
  })

  it('a restart holds exactly the live state held before the kill, and reads finished runs from the store', async () => {
    const c = await thirtyMinutes()
    const before = held(c.box.state)
    // Kill: memory is gone. Restart from the store.
    const records = await loadLive(c.store)
    expect(records.some(([k]) => k.startsWith('run/') && !k.endsWith(runIdFor(instanceIdFor('job', T0 + 29 * MIN), 'n1')) && !NODES.some((n) => k === `run/${runIdFor(instanceIdFor('job', T0 + 29 * MIN), n)}`))).toBe(false)
    c.box.state = restoreCoordinator(records)
    expect(held(c.box.state)).toEqual(before)
    expect(await c.history.run(runIdFor(instanceIdFor('job', T0 + 3 * MIN), 'n4'))).toMatchObject({ status: 'failure', receivedAt: T0 + 3 * MIN + 5 })
    // The same tick again (a clock that did not move): no occurrence gets a second instance.
    await c.step({ type: 'tick' }, T0 + 29 * MIN + 10_001)
    expect(c.box.state.jobs.get('job')!.history.count).toBe(30)
    // Progress gossip for a finished occurrence creates nothing.
    const gossip = seal(keys.get('n1')!, { type: 'progress', v: PROTOCOL_VERSION, jobId: 'job', instanceId: instanceIdFor('job', T0 + 4 * MIN), occurrenceAt: T0 + 4 * MIN, nodeId: 'n1', event: 'ack', at: T0 + 29 * MIN })
    expect((await c.step({ type: 'progress', envelope: gossip }, T0 + 29 * MIN + 10_002)).filter((e) => e.type === 'persist')).toEqual([])
    expect(c.box.state.instances.has(instanceIdFor('job', T0 + 4 * MIN))).toBe(false)
    // Later positive: the next minute's occurrence gets its instance.
    await c.step({ type: 'tick' }, T0 + 30 * MIN + 1)
    expect(c.box.state.jobs.get('job')!.history.count).toBe(31)
  })

  it('a late result for a finished instance: recorded from the store when the runtime looked it up, asked again when not, acknowledged again when a duplicate; never a second instance', async () => {
    const c = await thirtyMinutes()
    const late = T0 + 4 * MIN // timed out: no result reached the coordinator
    const instanceId = instanceIdFor('job', late)
    const runId = runIdFor(instanceId, 'n2')
    const envelope = result('n2', late)
    const peerId = peerIdOf(keys.get('n2')!.publicKey)
    // Not looked up (the instance left memory between the rpc's arrival and its step): sent again later, nothing changes.
    const unseen = await c.step({ type: 'rpc', requestId: 'late0', envelope, peerId }, T0 + 29 * MIN + 20_000)
    expect(replyOf(unseen)).toMatchObject({ ok: false, ackRunIds: [] })
    expect(unseen.filter((e) => e.type === 'persist')).toEqual([])
    // Looked up: recorded as it would have been in memory (the run takes the result, the instance keeps its status).
    const stored = { run: await c.history.run(runId), instance: await c.history.instance(instanceId) }
    const recorded = await c.step({ type: 'rpc', requestId: 'late1', envelope, peerId, history: stored }, T0 + 29 * MIN + 20_001)
    expect(replyOf(recorded)).toMatchObject({ ok: true, ackRunIds: [runId] })
    expect(await c.history.run(runId)).toMatchObject({ status: 'success', receivedAt: T0 + 29 * MIN + 20_001, steps: [{ stdout: 'out n2' }] })
    expect(await c.history.instance(instanceId)).toMatchObject({ status: 'failure', counts: { timeout: 3, success: 1 } })
    expect(c.box.state.instances.has(instanceId)).toBe(false)
    expect(c.box.state.runs.has(runId)).toBe(false)
    // The duplicate, looked up again: acknowledged, nothing written.
    const again = await c.step({ type: 'rpc', requestId: 'late2', envelope, peerId, history: { run: await c.history.run(runId), instance: await c.history.instance(instanceId) } }, T0 + 29 * MIN + 20_002)
    expect(replyOf(again)).toMatchObject({ ok: true, ackRunIds: [runId] })
    expect(again.filter((e) => e.type === 'persist')).toEqual([])
    // Looked up and not there (pruned, or never a run): refused for good.
    const gone = await c.step({ type: 'rpc', requestId: 'late3', envelope: result('n3', late), peerId: peerIdOf(keys.get('n3')!.publicKey), history: {} }, T0 + 29 * MIN + 20_003)
    expect(replyOf(gone)).toMatchObject({ ok: false, ackRunIds: [runIdFor(instanceId, 'n3')] })
    expect(c.box.state.jobs.get('job')!.history.count).toBe(30)
  })

  it("a finished instance's runs are copied under it and read as one range: the records by key, also after a late result (stored or still in memory); a store without the copies reads the same", async () => {
    const c = await thirtyMinutes()
    const live = instanceIdFor('job', T0 + 29 * MIN)
    const byRunId = (runs: RunRecord[]) => [...runs].sort((a, b) => (a.runId < b.runId ? -1 : 1))
    const copies = async (instanceId: string) => {
      const out: RunRecord[] = []
      for await (const [, v] of c.store.scan({ prefix: `idx/run/${instanceId}/` })) out.push(v as RunRecord)
      return out
    }
    const instances = (await c.history.instancePage({ job: 'job', oldestFirst: true, page: 1, size: 100 })).items
    expect(instances).toHaveLength(30)
    for (const inst of instances) {
      if (inst.id === live) { expect(await copies(inst.id)).toEqual([]); continue }
      const byKey = await c.history.runs(inst.runIds)
      expect(byKey).toHaveLength(NODES.length)
      expect(byRunId(await copies(inst.id))).toEqual(byRunId(byKey))
      expect(await c.history.instanceRuns(inst)).toEqual(byKey)
    }
    // A restart loads none of them.
    expect((await loadLive(c.store)).filter(([k]) => k.startsWith('idx/'))).toEqual([])

    // A late result for a finished instance read from the store: its copy follows the record.
    const timedOut = instanceIdFor('job', T0 + 4 * MIN)
    const lateRun = runIdFor(timedOut, 'n2')
    const history = { run: await c.history.run(lateRun), instance: await c.history.instance(timedOut) }
    expect(replyOf(await c.step({ type: 'rpc', requestId: 'late', envelope: result('n2', T0 + 4 * MIN), peerId: peerIdOf(keys.get('n2')!.publicKey), history }, T0 + 29 * MIN + 20_000))).toMatchObject({ ok: true })
    expect((await copies(timedOut)).find((r) => r.runId === lateRun)).toMatchObject({ status: 'success', steps: [{ stdout: 'out n2' }] })
    expect((await c.history.instanceRuns((await c.history.instance(timedOut))!)).map((r) => r.status)).toEqual(['timeout', 'success', 'timeout', 'timeout'])

    // The live one times out (still in memory), then a result arrives for it before it leaves memory.
    await c.step({ type: 'tick' }, T0 + 40 * MIN)
    expect(c.box.state.instances.get(live)?.status).toBe('failure')
    expect(byRunId(await copies(live))).toEqual(byRunId(NODES.map((n) => c.box.state.runs.get(runIdFor(live, n))!)))
    expect(replyOf(await c.step({ type: 'rpc', requestId: 'after-deadline', envelope: result('n3', T0 + 29 * MIN), peerId: peerIdOf(keys.get('n3')!.publicKey) }, T0 + 40 * MIN + 1))).toMatchObject({ ok: true })
    await c.step({ type: 'tick' }, T0 + 40 * MIN + 2)
    expect(c.box.state.instances.has(live)).toBe(false)
    const liveRecord = (await c.history.instance(live))!
    expect((await c.history.instanceRuns(liveRecord)).map((r) => [r.nodeId, r.status])).toEqual([['n1', 'timeout'], ['n2', 'timeout'], ['n3', 'success'], ['n4', 'timeout']])
    expect(await c.history.instanceRuns(liveRecord)).toEqual(await c.history.runs(liveRecord.runIds))

    // A store written before the copies (none under any instance): the same runs, by key.
    const expected = await Promise.all(instances.map(async (i) => c.history.instanceRuns((await c.history.instance(i.id))!)))
    const dels: StoreOp[] = []
    for await (const k of c.store.keys({ prefix: 'idx/run/' })) dels.push({ type: 'del', key: k })
    const finished = (await c.history.instancePage({ job: 'job', page: 1, size: 100 })).items.filter((i) => i.status !== 'running')
    expect(finished.length).toBeGreaterThanOrEqual(30)
    expect(dels.length).toBe(finished.length * NODES.length)
    await c.store.batch(dels)
    expect(await Promise.all(instances.map(async (i) => c.history.instanceRuns((await c.history.instance(i.id))!)))).toEqual(expected)
  })

  it('a result ahead of the tick creates its instance once: finished and out of memory before the tick reaches it, the tick does not create it again', async () => {
    const c = await thirtyMinutes()
    const ahead = T0 + 30 * MIN // the tick has not reached it (the coordinator's clock is 10 s behind the node's)
    for (const n of NODES) expect(replyOf(await c.step({ type: 'rpc', requestId: `a${n}`, envelope: result(n, ahead), peerId: peerIdOf(keys.get(n)!.publicKey) }, ahead - 10_000))).toMatchObject({ ok: true })
    expect(c.box.state.jobs.get('job')!.history).toMatchObject({ count: 31, ahead: [ahead] })
    await c.step({ type: 'tick' }, ahead - 9_000) // drops the finished instance; the cursor has not reached it
    expect(c.box.state.instances.has(instanceIdFor('job', ahead))).toBe(false)
    // A restart in between, then the tick passes the occurrence.
    c.box.state = restoreCoordinator(await loadLive(c.store))
    await c.step({ type: 'tick' }, ahead + 1)
    const job = c.box.state.jobs.get('job')!
    expect(job.history.count).toBe(31)
    expect(job.history.ahead).toBeUndefined()
    expect(c.box.state.instances.has(instanceIdFor('job', ahead))).toBe(false)
    expect(await c.history.instance(instanceIdFor('job', ahead))).toMatchObject({ status: 'success' })
    // A duplicate of one of its results after that, looked up in the store by the runtime: acknowledged again, no new instance.
    const dup = await c.step({ type: 'rpc', requestId: 'dup', envelope: result('n1', ahead), peerId: peerIdOf(keys.get('n1')!.publicKey), history: { run: await c.history.run(runIdFor(instanceIdFor('job', ahead), 'n1')) } }, ahead + 2)
    expect(replyOf(dup)).toMatchObject({ ok: true })
    expect(c.box.state.jobs.get('job')!.history.count).toBe(31)
  })

  it('a store written before the indexes (jobs listing instanceIds, no idx/ keys, no counts) is indexed once at start and then reads as a new one', async () => {
    const c = await thirtyMinutes()
    const after = await loadLive(c.store)
    const expected = held(restoreCoordinator(after))
    const page = (await c.history.instancePage({ job: 'job', oldestFirst: true, page: 1, size: 100 })).items.map((i) => i.id)
    // Back to the old layout: no indexes, no counts, the job lists its instances.
    const ops: StoreOp[] = []
    for await (const [k, v] of c.store.scan({})) {
      if (k.startsWith('idx/') || k.startsWith('meta/')) ops.push({ type: 'del', key: k })
      else if (k.startsWith('instance/')) { const { counts: _, ...old } = v as { counts?: unknown }; ops.push({ type: 'put', key: k, value: old }) }
      else if (k.startsWith('job/')) { const { history: _, ...old } = v as { history?: unknown }; ops.push({ type: 'put', key: k, value: { ...old, instanceIds: page } }) }
    }
    await c.store.batch(ops)
    expect(restoreCoordinator(await loadLive(c.store)).instances.size).toBe(0) // no status index: nothing is known live
    await migrateHistory(c.store, pino({ level: 'silent' }))
    const restored = restoreCoordinator(await loadLive(c.store))
    const { latest: _, ...history } = restored.jobs.get('job')!.history
    expect(history).toEqual({ count: 30, byStatus: { running: 1, failure: 29 } })
    expect(held(restored).instances).toEqual(expected.instances.map(([id, i]) => [id, i]))
    c.box.state = restored
    expect((await c.history.instancePage({ job: 'job', oldestFirst: true, page: 1, size: 100 })).items.map((i) => i.id)).toEqual(page)
    expect(await c.history.instance(page[0]!)).toMatchObject({ counts: { success: 3, failure: 1 } })
    expect((await c.history.nodeRunPage('n1', { page: 1, size: 100 })).items).toHaveLength(30)
    // Once: the mark is written, a second start changes nothing.
    const keys: string[] = []
    for await (const k of c.store.keys({})) keys.push(k)
    await migrateHistory(c.store, pino({ level: 'silent' }))
    const again: string[] = []
    for await (const k of c.store.keys({})) again.push(k)
    expect(again).toEqual(keys)
  })
})
