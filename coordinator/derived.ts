// What the core derives from its records and keeps (state.derived): the parsed definition of a
// job, whether it is gated, its targets' places, its signed tickets, an instance's acks as a set,
// and signed replies by content. Each is rebuilt on demand from the record it belongs to, so a
// restart (or a simulated crash) starting with none changes no decision, only the cost of the
// next steps.
import { isGated } from '../protocol/gate.js'
import { type JobBody, open } from '../protocol/wire.js'
import type { CoordinatorState, InstanceRecord, JobDerived, JobRecord } from './state.js'

/**
 * Replies that say the same (most: "ok", with the same checkpoints) are the same signed bytes:
 * ed25519 is deterministic, so one signature serves them all. state.derived.replies keeps at
 * most this many, oldest out (entries).
 */
export const REPLY_CACHE_MAX = 256

/** The derived entry of a job record (a new record, e.g. after a restart, starts a new one). */
export function derivedOf(state: CoordinatorState, job: JobRecord): JobDerived {
  let d = state.derived.jobs.get(job.jobId)
  if (!d || d.of !== job) {
    d = { of: job, tickets: new Map() }
    state.derived.jobs.set(job.jobId, d)
  }
  return d
}

/** node id → (group, position) of a job's targets, built once per job record. */
export function placeIn(state: CoordinatorState, job: JobRecord, nodeId: string): { group: number; position: number } | undefined {
  const d = derivedOf(state, job)
  let index = d.places
  if (!index) {
    index = new Map()
    job.resolved.groups.forEach((g, group) => g.nodes.forEach((n, position) => { if (!index!.has(n)) index!.set(n, { group, position }) }))
    d.places = index
  }
  return index.get(nodeId)
}

/** Whether the job's targets wait on each other (only those instances get tallies and checkpoints). */
export function gatedJob(state: CoordinatorState, job: JobRecord): boolean {
  const d = derivedOf(state, job)
  if (d.gated === undefined) d.gated = isGated(bodyOf(state, job))
  return d.gated
}

/** The signed definition's body, parsed once per job record (gate decisions need it on every wake). */
export function bodyOf(state: CoordinatorState, job: JobRecord): JobBody {
  const d = derivedOf(state, job)
  if (!d.body) {
    const o = open(job.envelope)
    if (!o.ok || o.body.type !== 'job') throw new Error(`job ${job.jobId}: stored definition does not open (${o.ok ? o.body.type : o.reason})`)
    d.body = o.body
  }
  return d.body
}

/** The instance's acks as a set, built once per instance record. */
export function ackSet(state: CoordinatorState, instance: InstanceRecord): Set<string> {
  let entry = state.derived.acks.get(instance.id)
  if (!entry || entry.of !== instance) {
    entry = { of: instance, set: new Set(instance.acks ?? []) }
    state.derived.acks.set(instance.id, entry)
  }
  return entry.set
}

/** Whether the job's resolved targets include the node. */
export function targets(state: CoordinatorState, job: JobRecord, nodeId: string): boolean {
  return placeIn(state, job, nodeId) !== undefined
}
