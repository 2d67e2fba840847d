// Live progress of instances, derived from the state changes the core makes: after each core
// step the runtime hands the step's effects to `observe`, which looks only at the runs and
// instances the step wrote (and the instances whose acknowledgements changed) and turns each
// transition into an event. Pure but for the listeners; no event is written to the store.
//
// Event ids are `EPOCH.SEQ`: EPOCH names this coordinator process (its start time), SEQ counts
// events in it. Resume (`Last-Event-ID`) is exact within one process while the event is still
// in its instance's log (the last MAX_EVENTS_PER_INSTANCE); after a restart or beyond that, the
// stream starts with a `snapshot` event (the counts and the nodes running and failed now),
// then goes on live: nothing is counted twice, intermediate steps are summed up.
import { runIdFor } from '../protocol/ids.js'
import type { CoordinatorEffect, CoordinatorState, InstanceRecord, RunRecord } from './core.js'

/** Events kept per instance for resume; older ones are summed up by a snapshot. */
export const MAX_EVENTS_PER_INSTANCE = 2_000
/** Finished instances whose logs are kept (the oldest are forgotten first). */
export const MAX_FINISHED_LOGS = 256
/**
 * Events kept over all finished instances' logs (the oldest logs are forgotten first): without it
 * 256 finished instances of 1,000 targets could hold 512,000 events (~125 MB); this is ~25 MB.
 */
export const MAX_FINISHED_EVENTS = 100_000
/** Node names a snapshot lists per kind (running, failed). */
export const MAX_SNAPSHOT_NODES = 100

export type Bucket = 'pending' | 'running' | 'success' | 'failure' | 'skipped'
export type Counts = Record<Bucket, number>
export type EventType = 'run_acked' | 'run_started' | 'step_done' | 'run_finished' | 'batch_opened' | 'batch_closed' | 'group_opened' | 'group_closed' | 'instance_done' | 'snapshot'

export interface StreamEvent {
  id: string
  type: EventType
  at: string
  jobId: string
  instanceId: string
  nodeId?: string
  runId?: string
  group?: number
  batch?: number
  status?: string
  step?: { number: number; name: string; status: string }
  /** snapshot: nodes running and failed now (bounded). */
  running?: string[]
  failed?: string[]
  /** Per group, in rollout order. */
  counts: (Counts & { group: number })[]
}

interface Span { size: number; opened: number; closed: number }
interface Tracked {
  jobId: string
  stage: Map<string, number>
  groups: { counts: Counts; span: Span; batches: Map<number, Span> }[]
  acks: number
  done: boolean
  events: StreamEvent[]
  /** The seq before the oldest event kept (events after it are all in `events`). */
  floor: number
  /** Tracked from its creation: every event of it was made here. */
  complete: boolean
}

const STAGE_OPEN = 2
const bucketOf = (status: RunRecord['status']): Bucket =>
  status === 'timeout' ? 'failure' : status === 'pending' ? 'pending' : status === 'running' ? 'running' : status
const stageOf = (status: RunRecord['status'], acked: boolean): number =>
  status === 'pending' ? (acked ? 1 : 0) : status === 'running' ? 2 : 3
const zero = (): Counts => ({ pending: 0, running: 0, success: 0, failure: 0, skipped: 0 })

/** Where a snapshot reads runs: the state, or runs read from the store. */
export interface RunSource { runs: { get(id: string): RunRecord | undefined } }

export class EventLog {
  private seq = 0
  private readonly tracked = new Map<string, Tracked>()
  /** Finished instances in the order they finished, with the events each held then. */
  private readonly finished: { id: string; events: number }[] = []
  private finishedEvents = 0
  private readonly listeners = new Set<(events: StreamEvent[]) => void>()

  constructor(readonly epoch: string = Date.now().toString(36), private readonly maxFinishedEvents = MAX_FINISHED_EVENTS) {}

  /** Starts tracking every live instance (on start, from the restored state). */
  trackLive(state: CoordinatorState): void {
    for (const id of state.live) this.track(state, id, false)
  }

  /** The events one core step's effects make; they are also handed to the listeners. */
  observe(state: CoordinatorState, effects: readonly CoordinatorEffect[], now: number): StreamEvent[] {
    const out: StreamEvent[] = []
    const instances = new Set<string>(state.dirty)
    const runs: string[] = []
    for (const e of effects) {
      if (e.type !== 'persist') continue
      for (const p of e.puts) {
        if (p.key.startsWith('instance/')) instances.add((p.value as InstanceRecord).id)
        else if (p.key.startsWith('run/')) runs.push((p.value as RunRecord).runId)
      }
    }
    for (const id of instances) if (!this.tracked.has(id) && state.instances.get(id)?.status === 'running') this.track(state, id, true)
    for (const id of instances) this.noteAcks(state, id, now, out)
    for (const runId of runs) this.noteRun(state, runId, now, out)
    for (const id of instances) this.noteDone(state, id, now, out)
    for (const r of runs) { const i = state.runs.get(r)?.instanceId; if (i) this.noteDone(state, i, now, out) }
    if (out.length > 0) for (const l of this.listeners) l(out)
    return out
  }

  subscribe(listener: (events: StreamEvent[]) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** The id of the last event made so far. */
  lastId(): string {
    return `${this.epoch}.${this.seq}`
  }

  /**
   * Events of these instances after `lastEventId` (oldest first), or undefined when they cannot
   * be replayed exactly (another epoch, or trimmed): the caller sends snapshots instead.
   */
  since(instanceIds: readonly string[], lastEventId: string | undefined): StreamEvent[] | undefined {
    const after = this.seqOf(lastEventId)
    if (after === undefined) return undefined
    const out: StreamEvent[] = []
    for (const id of instanceIds) {
      const t = this.tracked.get(id)
      if (!t || after < t.floor || (after === 0 && !t.complete)) return undefined
      for (const e of t.events) if (seqOf(e.id) > after) out.push(e)
    }
    return out.sort((a, b) => seqOf(a.id) - seqOf(b.id))
  }

  /** Where an instance stands now, as one event (id: the last event made so far). */
  snapshot(state: RunSource, instance: InstanceRecord, now: number): StreamEvent {
    const t = this.tracked.get(instance.id) ?? this.build(state, instance)
    const running: string[] = []
    const failed: string[] = []
    for (const runId of instance.runIds) {
      const r = state.runs.get(runId)
      if (r?.status === 'running' && running.length < MAX_SNAPSHOT_NODES) running.push(r.nodeId)
      if ((r?.status === 'failure' || r?.status === 'timeout') && failed.length < MAX_SNAPSHOT_NODES) failed.push(r.nodeId)
    }
    return { id: this.lastId(), type: 'snapshot', at: new Date(now).toISOString(), jobId: instance.jobId, instanceId: instance.id, status: instance.status, running, failed, counts: countsOf(t) }
  }

  private seqOf(lastEventId: string | undefined): number | undefined {
    if (lastEventId === undefined || lastEventId === '') return 0
    const [epoch, seq] = lastEventId.split('.')
    if (epoch !== this.epoch || !/^\d+$/.test(seq ?? '')) return undefined
    return Number(seq)
  }

  private track(state: CoordinatorState, instanceId: string, fresh: boolean): void {
    const instance = state.instances.get(instanceId)
    if (!instance) return
    const t = this.build(state, instance)
    t.complete = fresh && t.groups.every((g) => g.span.opened === 0)
    if (t.complete) t.floor = 0
    this.tracked.set(instanceId, t)
  }

  private build(state: RunSource, instance: InstanceRecord): Tracked {
    const t: Tracked = { jobId: instance.jobId, stage: new Map(), groups: [], acks: instance.acks?.length ?? 0, done: instance.status !== 'running', events: [], floor: this.seq, complete: false }
    const acks = new Set(instance.acks ?? [])
    for (const runId of instance.runIds) {
      const r = state.runs.get(runId)
      if (!r) continue
      const g = (t.groups[r.group] ??= { counts: zero(), span: { size: 0, opened: 0, closed: 0 }, batches: new Map() })
      for (let i = 0; i < r.group; i++) t.groups[i] ??= { counts: zero(), span: { size: 0, opened: 0, closed: 0 }, batches: new Map() }
      const b = g.batches.get(r.batch) ?? { size: 0, opened: 0, closed: 0 }
      g.batches.set(r.batch, b)
      const stage = stageOf(r.status, acks.has(r.nodeId))
      t.stage.set(runId, stage)
      g.counts[bucketOf(r.status)]++
      for (const s of [g.span, b]) { s.size++; if (stage >= STAGE_OPEN && r.status !== 'skipped') s.opened++; if (stage === 3) s.closed++ }
    }
    return t
  }

  private emit(t: Tracked, instanceId: string, now: number, out: StreamEvent[], fields: Omit<StreamEvent, 'id' | 'at' | 'jobId' | 'instanceId' | 'counts'>): void {
    const e: StreamEvent = { id: `${this.epoch}.${++this.seq}`, at: new Date(now).toISOString(), jobId: t.jobId, instanceId, ...fields, counts: countsOf(t) }
    t.events.push(e)
    if (t.events.length > MAX_EVENTS_PER_INSTANCE) t.floor = seqOf(t.events.shift()!.id)
    out.push(e)
  }

  private noteAcks(state: CoordinatorState, instanceId: string, now: number, out: StreamEvent[]): void {
    const t = this.tracked.get(instanceId)
    const acks = state.instances.get(instanceId)?.acks ?? []
    if (!t || acks.length <= t.acks) return
    for (const nodeId of acks.slice(t.acks)) {
      const run = state.runs.get(runIdFor(instanceId, nodeId))
      if (!run || (t.stage.get(run.runId) ?? 0) > 0) continue
      t.stage.set(run.runId, 1)
      this.emit(t, instanceId, now, out, { type: 'run_acked', nodeId, runId: run.runId, group: run.group, batch: run.batch })
    }
    t.acks = acks.length
  }

  private noteRun(state: CoordinatorState, runId: string, now: number, out: StreamEvent[]): void {
    const run = state.runs.get(runId)
    const t = run && this.tracked.get(run.instanceId)
    if (!run || !t || t.done) return
    const before = t.stage.get(runId) ?? 0
    const after = stageOf(run.status, before === 1)
    if (before === 3 || after <= before) return
    const g = t.groups[run.group]!
    const b = g.batches.get(run.batch)!
    const where = { nodeId: run.nodeId, runId, group: run.group, batch: run.batch }
    g.counts.pending -= before < STAGE_OPEN ? 1 : 0
    g.counts.running -= before === STAGE_OPEN ? 1 : 0
    g.counts[bucketOf(run.status)]++
    t.stage.set(runId, after)
    if (before < STAGE_OPEN && run.status !== 'skipped') {
      if (g.span.opened++ === 0) this.emit(t, run.instanceId, now, out, { type: 'group_opened', group: run.group })
      if (b.opened++ === 0) this.emit(t, run.instanceId, now, out, { type: 'batch_opened', group: run.group, batch: run.batch })
    }
    if (after === STAGE_OPEN) return this.emit(t, run.instanceId, now, out, { type: 'run_started', ...where })
    for (const s of run.steps) this.emit(t, run.instanceId, now, out, { type: 'step_done', ...where, step: { number: s.number, name: s.name, status: s.status } })
    this.emit(t, run.instanceId, now, out, { type: 'run_finished', ...where, status: run.status })
    if (++b.closed === b.size) this.emit(t, run.instanceId, now, out, { type: 'batch_closed', group: run.group, batch: run.batch })
    if (++g.span.closed === g.span.size) this.emit(t, run.instanceId, now, out, { type: 'group_closed', group: run.group })
  }

  private noteDone(state: CoordinatorState, instanceId: string, now: number, out: StreamEvent[]): void {
    const t = this.tracked.get(instanceId)
    const instance = state.instances.get(instanceId)
    if (!t || !instance || t.done || instance.status === 'running') return
    t.done = true
    this.emit(t, instanceId, now, out, { type: 'instance_done', status: instance.status })
    this.finished.push({ id: instanceId, events: t.events.length })
    this.finishedEvents += t.events.length
    // The newest finished log stays whatever its size: it is the one a watcher is most likely to resume.
    while (this.finished.length > 1 && (this.finished.length > MAX_FINISHED_LOGS || this.finishedEvents > this.maxFinishedEvents)) {
      const oldest = this.finished.shift()!
      this.finishedEvents -= oldest.events
      this.tracked.delete(oldest.id)
    }
  }
}

function countsOf(t: Tracked): (Counts & { group: number })[] {
  return t.groups.map((g, group) => ({ group, ...g.counts }))
}

function seqOf(id: string): number {
  return Number(id.slice(id.indexOf('.') + 1))
}

/** True for the event that ends an instance's stream. */
export const isFinal = (e: StreamEvent): boolean => e.type === 'instance_done' || (e.type === 'snapshot' && e.status !== 'running')
