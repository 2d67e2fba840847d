// The live-progress event log (coordinator/events.ts) and the watch view (cli/watch.ts), as pure
// code: events from the runs and instances a core step writes, a bounded log, resume by id.
import { describe, expect, it } from 'vitest'
import { emptyCoordinatorState, type CoordinatorEffect, type CoordinatorState, type InstanceRecord, type RunRecord } from '../coordinator/core.js'
import { EventLog, MAX_EVENTS_PER_INSTANCE } from '../coordinator/events.js'
import { WatchView, eventLine, parseFrames } from '../cli/watch.js'
import { runIdFor } from '../protocol/ids.js'

function fixture(batches: number[]): { state: CoordinatorState; instance: InstanceRecord; runs: RunRecord[] } {
  const state = emptyCoordinatorState()
  const runs = batches.map((batch, i): RunRecord => ({ runId: runIdFor('i1', `n${i}`), instanceId: 'i1', jobId: 'j1', nodeId: `n${i}`, group: 0, batch, status: 'pending', steps: [] }))
  const instance: InstanceRecord = { id: 'i1', jobId: 'j1', status: 'running', occurrenceAt: 0, createdAt: 0, updatedAt: 0, deadlineAt: 1e12, runIds: runs.map((r) => r.runId) }
  for (const r of runs) state.runs.set(r.runId, r)
  state.instances.set('i1', instance)
  state.live.add('i1')
  return { state, instance, runs }
}
const persist = (...values: (RunRecord | InstanceRecord)[]): CoordinatorEffect[] =>
  [{ type: 'persist', puts: values.map((v) => ({ key: 'runId' in v ? `run/${v.runId}` : `instance/${v.id}`, value: v })), dels: [] }]

/** Instance `id` of `n` runs, tracked from creation, then all its runs succeed: 1 + 2n + 3 events (opened, started and finished, closed, done). */
function finishInstance(log: EventLog, state: CoordinatorState, id: string, n: number, at: number): void {
  const runs = Array.from({ length: n }, (_, i): RunRecord => ({ runId: runIdFor(id, `n${i}`), instanceId: id, jobId: 'j1', nodeId: `n${i}`, group: 0, batch: 0, status: 'pending', steps: [] }))
  const instance: InstanceRecord = { id, jobId: 'j1', status: 'running', occurrenceAt: at, createdAt: at, updatedAt: at, deadlineAt: 1e12, runIds: runs.map((r) => r.runId) }
  for (const r of runs) state.runs.set(r.runId, r)
  state.instances.set(id, instance)
  state.live.add(id)
  log.observe(state, persist(instance, ...runs), at)
  for (const r of runs) r.status = 'running'
  log.observe(state, persist(...runs), at + 1)
  for (const r of runs) r.status = 'success'
  instance.status = 'success'
  state.live.delete(id)
  log.observe(state, persist(...runs, instance), at + 2)
}

describe('the event log', () => {
  it('forgets the oldest finished logs once they hold more than the event budget, never the newest', () => {
    const state = emptyCoordinatorState()
    const log = new EventLog('e', 50)
    for (let i = 0; i < 4; i++) finishInstance(log, state, `i${i}`, 10, i * 10)
    // 25 events each (1 + 20 + 4): two fit in 50, so i0 and i1 were forgotten (resume gives a snapshot).
    expect(log.since(['i3'], undefined)!.length).toBe(25)
    expect(log.since(['i2'], undefined)!.length).toBe(25)
    expect(log.since(['i1'], undefined)).toBeUndefined()
    expect(log.since(['i0'], undefined)).toBeUndefined()
    // One instance larger than the whole budget: it is kept alone.
    finishInstance(log, state, 'big', 40, 100)
    expect(log.since(['big'], undefined)!.length).toBe(85)
    expect(log.since(['i3'], undefined)).toBeUndefined()
  })

  it('turns run and instance writes into events with per-group counts, batches opening and closing', () => {
    const { state, instance, runs } = fixture([0, 0, 1])
    const log = new EventLog('e')
    expect(log.observe(state, persist(instance, ...runs), 0)).toEqual([])
    runs[0]!.status = 'running'
    const started = log.observe(state, persist(runs[0]!), 1)
    expect(started.map((e) => e.type)).toEqual(['group_opened', 'batch_opened', 'run_started'])
    expect(started.at(-1)!.counts).toEqual([{ group: 0, pending: 2, running: 1, success: 0, failure: 0, skipped: 0 }])
    runs[0]!.status = 'success'
    runs[1]!.status = 'timeout'
    const done = log.observe(state, persist(runs[0]!, runs[1]!), 2)
    expect(done.map((e) => e.type)).toEqual(['run_finished', 'run_finished', 'batch_closed'])
    expect(done.filter((e) => e.type === 'batch_closed').map((e) => e.batch)).toEqual([0])
    expect(done.at(-1)!.counts[0]).toMatchObject({ pending: 1, success: 1, failure: 1 })
    runs[2]!.status = 'success'
    instance.status = 'failure'
    const end = log.observe(state, persist(runs[2]!, instance), 3)
    expect(end.map((e) => e.type)).toEqual(['batch_opened', 'run_finished', 'batch_closed', 'group_closed', 'instance_done'])
    expect(end.at(-1)!.status).toBe('failure')
    // Resume: exactly what follows an id; another epoch (a restart) cannot be replayed.
    const all = log.since(['i1'], undefined)!
    expect(all.map((e) => e.id)).toEqual(all.map((_, i) => `e.${i + 1}`))
    expect(log.since(['i1'], 'e.4')!.map((e) => e.id)).toEqual(all.slice(4).map((e) => e.id))
    expect(log.since(['i1'], 'other.4')).toBeUndefined()
    expect(log.snapshot(state, instance, 4)).toMatchObject({ type: 'snapshot', id: log.lastId(), failed: ['n1'], running: [] })
  })

  it('an acknowledgement recorded by a step (a gated target waiting its turn) is a run_acked event, once', () => {
    const { state, instance, runs } = fixture([0, 1])
    const log = new EventLog('e')
    log.observe(state, persist(instance), 0)
    instance.acks = ['n1']
    state.dirty.add('i1')
    expect(log.observe(state, [], 1).map((e) => [e.type, e.nodeId])).toEqual([['run_acked', 'n1']])
    expect(log.observe(state, [], 2)).toEqual([])
    runs[1]!.status = 'running'
    expect(log.observe(state, persist(runs[1]!), 3).map((e) => e.type)).toEqual(['group_opened', 'batch_opened', 'run_started'])
  })

  it('keeps at most MAX_EVENTS_PER_INSTANCE events; a resume from before them gets a snapshot', () => {
    const { state, instance, runs } = fixture(Array.from({ length: MAX_EVENTS_PER_INSTANCE }, () => 0))
    const log = new EventLog('e')
    log.observe(state, persist(instance), 0)
    for (const r of runs) { r.status = 'running'; log.observe(state, persist(r), 1) }
    expect(log.since(['i1'], 'e.1')).toBeUndefined()
    expect(log.since(['i1'], log.lastId())).toEqual([])
  })

  it('an instance known only from the restored state replays nothing from the start: a snapshot sums it up', () => {
    const { state, runs } = fixture([0])
    runs[0]!.status = 'running'
    const log = new EventLog('e2')
    log.trackLive(state)
    expect(log.since(['i1'], undefined)).toBeUndefined()
    runs[0]!.status = 'success'
    expect(log.observe(state, persist(runs[0]!), 5).map((e) => e.type)).toEqual(['run_finished', 'batch_closed', 'group_closed'])
  })
})

describe('the watch view', () => {
  it('parses SSE frames across chunks, draws a bar per batch with running and failed nodes, and estimates the time left', () => {
    const first = parseFrames('id: e.1\nevent: run_started\ndata: {"a":1}\n\n: ping\n\nid: e.2\nevent: run_fin')
    expect(first.frames).toEqual([{ id: 'e.1', event: 'run_started', data: '{"a":1}' }])
    expect(parseFrames(first.rest + 'ished\ndata: {}\n\n').frames[0]).toMatchObject({ id: 'e.2', event: 'run_finished' })
    const view = new WatchView('j1', 0)
    const run = (i: number, batch: number) => ({ runId: `r${i}`, nodeId: `n${i}`, group: 0, batch, status: 'pending', startedAt: null, finishedAt: null, receivedAt: null, steps: [] })
    view.load({ job: { id: 'j1', name: 'x', status: 'active', createdAt: null, scheduleRule: 'immediate' }, instances: [{ id: 'i1', jobId: 'j1', status: 'running', occurrenceAt: null, createdAt: null, updatedAt: null, counts: {}, runs: [run(0, 0), run(1, 0), run(2, 1), run(3, 1)] }] })
    const ev = (type: string, i: number, at: number, status?: string) => ({ id: `e.${at}`, type, at: new Date(at).toISOString(), jobId: 'j1', instanceId: 'i1', runId: `r${i}`, nodeId: `n${i}`, counts: [], ...(status ? { status } : {}) }) as never
    expect(view.etaSeconds(1000)).toBeUndefined()
    view.apply(ev('run_started', 0, 1000))
    view.apply(ev('run_started', 1, 1000))
    view.apply(ev('run_finished', 0, 3000, 'success'))
    view.apply(ev('run_finished', 1, 3000, 'failure'))
    view.apply(ev('run_started', 2, 3000))
    const text = view.render(5000)
    expect(text).toMatch(/^job j1 {2}elapsed 5 s {2}about 4 s left/)
    expect(text).toMatch(/group 0 batch 0 {2}\[#+x+\.*\] 2\/2 {2}success 1 {2}failure 1 {2}running 0/)
    expect(text).toMatch(/group 0 batch 1 {2}\[>+\.+\] 0\/2/)
    expect(text).toMatch(/running: n2\nfailed: {2}n1/)
    expect(eventLine({ ...ev('run_finished', 0, 3000, 'success'), group: 0, batch: 0, counts: [{ group: 0, pending: 1, running: 1, success: 1, failure: 1, skipped: 0 }] })).toBe('00:00:03.000 run_finished n0 group 0 batch 0 success  (g0: 1 ok, 1 failed, 1 running, 1 pending)')
  })
})
