// When may this node take its turn? A pure function of the signed job, what this node knows of
// the other targets' progress, and the time. No central dispatcher: every target evaluates
// the same rule over the same signed order, and knowledge only grows (an ack, a start, a done
// is never taken back), so a decision to start made on stale knowledge is still safe.
//
// Rolling (window k): the node at position p starts once at least p − k + 1 of the nodes
// before it are done. Proof of "never more than k at once": take the running node with the
// highest position m; it started after seeing m − k + 1 of positions [0, m) done, and done is
// final, so at most (m + 1) − (m − k + 1) = k nodes of [0, m] are running.
// Batching (size k): the node in batch b starts once every node of batch b − 1 is done.
// Sequential groups: group g starts once every node of group g − 1 is done (or that group's
// time budget ran out, the missing ones counting as failed) and group g − 1 met its criteria.
// A vanished slot holder (vanishedHolder): "keep" (default) holds its slot until the group's
// time budget runs out: never more than k at once, at the price of a stall. "release" frees
// the slot of a holder whose lease expired, and counts a target that never acknowledged the
// job within leaseSeconds as gone: the rollout goes on, but a holder that was only cut off
// and is still running makes k + 1. Quorum clusters must keep the default.
import type { JobBody } from '../protocol/wire.js'
import { batchSizeFor, thresholdFor, type Amount } from '../protocol/rollout.js'

export type DoneStatus = 'success' | 'failure' | 'skipped'

export interface Knowledge {
  acks: Set<string>
  /** Nodes that took their turn, with the end of their current lease. */
  started: Map<string, number>
  done: Map<string, DoneStatus>
}

export const DEFAULT_QUORUM_TIMEOUT_S = 30
export const DEFAULT_LEASE_S = 30

export type GateDecision = { action: 'start' } | { action: 'wait'; why: string } | { action: 'skip'; reason: string }

export function emptyKnowledge(): Knowledge {
  return { acks: new Set(), started: new Map(), done: new Map() }
}

/** True when targets of this job wait on each other: batches, sequential groups or a quorum. */
export function isGated(body: JobBody): boolean {
  const t = body.template
  if (t.chorus?.quorum) return true
  if (t.target.executionType === 'sequential' && t.target.groups.length > 1) return true
  return body.resolved.groups.some((g, gi) => batchSizeFor(t.target.groups[gi]!.batchSize, g.nodes.length) < g.nodes.length)
}

/**
 * Time budgets add up: in a sequential rollout group g must be done by occurrence + the
 * timeouts of groups 0..g (it starts as soon as group g − 1 is done, possibly earlier than
 * `startAt`, which is only the latest moment it may start with a full budget).
 */
export function groupWindow(body: JobBody, occurrenceAt: number, group: number): { startAt: number; deadlineAt: number } {
  const groups = body.template.target.groups
  if (body.template.target.executionType !== 'sequential') return { startAt: occurrenceAt, deadlineAt: occurrenceAt + groups[group]!.timeoutSeconds * 1000 }
  let start = occurrenceAt
  for (let g = 0; g < group; g++) start += groups[g]!.timeoutSeconds * 1000
  return { startAt: start, deadlineAt: start + groups[group]!.timeoutSeconds * 1000 }
}

/**
 * Failures a group can take and still meet every criterion: a `success` criterion needing S of
 * N leaves N − S; a `failure` criterion with numRuns T allows T − 1; no criterion allows none.
 */
export function failureBudget(criteria: readonly { numRuns: Amount; status: 'success' | 'failure' }[], n: number): number {
  if (criteria.length === 0) return 0
  let budget = n
  for (const c of criteria) {
    const t = thresholdFor(c.numRuns, n)
    budget = Math.min(budget, c.status === 'success' ? n - t : Math.max(0, Math.max(1, t) - 1))
  }
  return budget
}

export function successNeeded(criteria: readonly { numRuns: Amount; status: 'success' | 'failure' }[], n: number): number {
  if (criteria.length === 0) return n
  return Math.max(0, ...criteria.filter((c) => c.status === 'success').map((c) => thresholdFor(c.numRuns, n)))
}

function quorumOf(body: JobBody): { need: number; total: number; timeoutMs: number } | undefined {
  const q = body.template.chorus?.quorum
  if (!q) return undefined
  const total = body.resolved.groups.reduce((n, g) => n + g.nodes.length, 0)
  return { need: Math.max(1, thresholdFor(q, total)), total, timeoutMs: (body.template.chorus?.quorumTimeoutSeconds ?? DEFAULT_QUORUM_TIMEOUT_S) * 1000 }
}

/** Whether `node` counts as done for the nodes after it: it finished, or (release policy) it is gone. */
function doneOrReleased(body: JobBody, k: Knowledge, node: string, occurrenceAt: number, now: number): DoneStatus | 'released' | undefined {
  const status = k.done.get(node)
  if (status) return status
  if (body.template.chorus?.vanishedHolder !== 'release') return undefined
  const leaseMs = (body.template.chorus?.leaseSeconds ?? DEFAULT_LEASE_S) * 1000
  const leaseUntil = k.started.get(node)
  if (leaseUntil !== undefined) return leaseUntil < now ? 'released' : undefined
  return !k.acks.has(node) && now >= occurrenceAt + leaseMs ? 'released' : undefined
}

/** Statuses of a group's members as known now; `missingAs` for the ones not known. */
function groupStatuses(body: JobBody, k: Knowledge, group: number, occurrenceAt: number, now: number): { done: number; failed: number; succeeded: number; unknown: string[] } {
  let done = 0
  let failed = 0
  let succeeded = 0
  const unknown: string[] = []
  for (const n of body.resolved.groups[group]!.nodes) {
    const s = doneOrReleased(body, k, n, occurrenceAt, now)
    if (s === undefined) { unknown.push(n); continue }
    done++
    if (s === 'success') succeeded++
    else failed++
  }
  return { done, failed, succeeded, unknown }
}

export function decideGate(body: JobBody, k: Knowledge, self: string, group: number, position: number, occurrenceAt: number, now: number): GateDecision {
  const t = body.template
  const q = quorumOf(body)
  if (q) {
    const acks = new Set(k.acks)
    acks.add(self)
    if (acks.size < q.need) {
      if (now >= occurrenceAt + q.timeoutMs) {
        const all = body.resolved.groups.flatMap((g) => g.nodes)
        const missing = all.filter((n) => !acks.has(n))
        return { action: 'skip', reason: `quorum failed: ${acks.size} of ${q.total} targets acknowledged within ${q.timeoutMs / 1000} s, ${q.need} needed; no acknowledgement from ${missing.slice(0, 20).join(', ')}${missing.length > 20 ? ', …' : ''}` }
      }
      return { action: 'wait', why: `quorum: ${acks.size} of ${q.need} acknowledgements` }
    }
  }
  const window = groupWindow(body, occurrenceAt, group)
  if (t.target.executionType === 'sequential' && group > 0) {
    const prev = group - 1
    const prevWindow = groupWindow(body, occurrenceAt, prev)
    const st = groupStatuses(body, k, prev, occurrenceAt, now)
    if (st.unknown.length > 0 && now < prevWindow.deadlineAt) return { action: 'wait', why: `group ${prev} still running (${st.unknown.length} not done)` }
    const n = body.resolved.groups[prev]!.nodes.length
    const failed = st.failed + st.unknown.length // past the deadline, the silent ones count as failed
    const spec = t.target.groups[prev]!
    if (failed > failureBudget(spec.successCriteria, n) || st.succeeded < successNeeded(spec.successCriteria, n)) {
      return { action: 'skip', reason: `distribution stopped: group ${prev} did not meet its success criteria (${st.succeeded} succeeded, ${failed} failed or unreachable of ${n})` }
    }
  }
  const spec = t.target.groups[group]!
  const members = body.resolved.groups[group]!.nodes
  const n = members.length
  const mine = groupStatuses(body, k, group, occurrenceAt, now)
  const budget = failureBudget(spec.successCriteria, n)
  if (mine.failed > budget) {
    return { action: 'skip', reason: `distribution stopped: group ${group} can no longer meet its success criteria (${mine.failed} failed of ${n}, at most ${budget} may fail)` }
  }
  if (spec.earlyTermination && mine.succeeded >= successNeeded(spec.successCriteria, n) && spec.successCriteria.length > 0) {
    return { action: 'skip', reason: `distribution stopped: group ${group} already met its success criteria (earlyTermination)` }
  }
  if (now >= window.deadlineAt) return { action: 'skip', reason: `group ${group}'s time budget (${spec.timeoutSeconds} s) ran out before this node's turn` }
  const size = batchSizeFor(spec.batchSize, n)
  if (size >= n) return { action: 'start' }
  if (spec.distributionMethod === 'batching') {
    const batch = Math.floor(position / size)
    if (batch === 0) return { action: 'start' }
    const waiting = members.slice((batch - 1) * size, batch * size).filter((m) => doneOrReleased(body, k, m, occurrenceAt, now) === undefined)
    return waiting.length === 0 ? { action: 'start' } : { action: 'wait', why: `batch ${batch - 1} not done (${waiting.length} running or silent)` }
  }
  const need = position - size + 1
  if (need <= 0) return { action: 'start' }
  let doneBefore = 0
  for (let j = 0; j < position; j++) if (doneOrReleased(body, k, members[j]!, occurrenceAt, now) !== undefined) doneBefore++
  return doneBefore >= need ? { action: 'start' } : { action: 'wait', why: `rolling window: ${doneBefore} of the ${position} nodes before this one done, ${need} needed` }
}
