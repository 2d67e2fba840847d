// When may this node take its turn? A pure function of the signed job, what this node knows of
// the other targets' progress, and the time. No central dispatcher: every target evaluates
// the same rule over the same signed order, and knowledge only grows (an ack, a start, a done
// is never taken back), so a decision to start made on stale knowledge is still safe.
//
// Knowledge comes from two sources, both only ever lower bounds of the truth: facts signed by
// the targets themselves (this node's own, and peers' progress gossiped while the coordinator
// is away), and the coordinator's latest signed checkpoint (counts per group, O(groups) bytes).
// Every count below is the larger of the two bounds, so it is still a lower bound: a node
// never starts on knowledge the truth contradicts. The cost of a decision is O(facts heard),
// not O(group): nothing here walks the member list (no node holds it).
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
import type { CheckpointBody, CheckpointGroup, JobBody } from './wire.js'
import type { ReasonCode } from './reasons.js'
import { batchSizeFor, failureBudget, successNeeded, thresholdFor } from './rollout.js'
export { failureBudget, successNeeded }

export type DoneStatus = 'success' | 'failure' | 'skipped'

/** What a target said of itself: present = it acknowledged the job; lease: it took its turn (slot held until then); done: its run ended. */
export interface PeerFact {
  lease?: number
  done?: DoneStatus
}

export interface Knowledge {
  /** Facts signed by targets (this node's own; peers' gossip), by group, then position in the group. */
  facts: Map<number, Map<number, PeerFact>>
  /** The coordinator's latest checkpoint of the instance (highest seq). */
  checkpoint?: CheckpointBody
  /** Bumped on every change (in memory): a waiting run re-decides only when it moved or a time threshold passed. */
  version: number
}

export const DEFAULT_QUORUM_TIMEOUT_S = 30
export const DEFAULT_LEASE_S = 30

export type GateDecision = { action: 'start' } | { action: 'wait'; why: string } | { action: 'skip'; reason: string; code: ReasonCode }

export function emptyKnowledge(): Knowledge {
  return { facts: new Map(), version: 0 }
}

/** The fact of (group, position), created empty (= acknowledged) if missing. */
export function factFor(k: Knowledge, group: number, position: number): PeerFact {
  let g = k.facts.get(group)
  if (!g) { g = new Map(); k.facts.set(group, g) }
  let f = g.get(position)
  if (!f) { f = {}; g.set(position, f) }
  return f
}

/** Sizes of the job's groups, as the coordinator resolved them at submit. */
export function groupSizes(body: JobBody): number[] {
  return body.resolved.groups.map((g) => g.size)
}

/** True when targets of this job wait on each other: batches, sequential groups or a quorum. */
export function isGated(body: JobBody): boolean {
  const t = body.template
  if (t.chorus?.quorum) return true
  if (t.target.executionType === 'sequential' && t.target.groups.length > 1) return true
  return body.resolved.groups.some((g, gi) => batchSizeFor(t.target.groups[gi]!.batchSize, g.size) < g.size)
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

/** A job's quorum over its `total` targets (extension `chorus.quorum`): acknowledgements needed, and how long to wait for them. */
export function quorumRule(chorus: JobBody['template']['chorus'], total: number): { need: number; total: number; timeoutMs: number } | undefined {
  const q = chorus?.quorum
  if (!q) return undefined
  return { need: Math.max(1, thresholdFor(q, total)), total, timeoutMs: (chorus?.quorumTimeoutSeconds ?? DEFAULT_QUORUM_TIMEOUT_S) * 1000 }
}

function quorumOf(body: JobBody): { need: number; total: number; timeoutMs: number } | undefined {
  return quorumRule(body.template.chorus, body.resolved.groups.reduce((n, g) => n + g.size, 0))
}

/**
 * Whether a target's own fact makes it count as done for the nodes after it: it finished, or
 * (release policy) its lease ran out. A target never heard from is released only by the
 * coordinator's checkpoint, which knows every ack (a node cannot tell "silent" from "not heard").
 */
function factDone(release: boolean, f: PeerFact, now: number): DoneStatus | 'released' | undefined {
  if (f.done) return f.done
  if (release && f.lease !== undefined && f.lease < now) return 'released'
  return undefined
}

interface Tally { done: number; succeeded: number; failed: number }

/** Done, succeeded and failed among positions below `below` of a group, from the targets' own facts. */
function factTally(body: JobBody, k: Knowledge, group: number, below: number, now: number): Tally {
  const t: Tally = { done: 0, succeeded: 0, failed: 0 }
  const facts = k.facts.get(group)
  if (!facts) return t
  const release = body.template.chorus?.vanishedHolder === 'release'
  for (const [pos, f] of facts) {
    if (pos >= below) continue
    const s = factDone(release, f, now)
    if (s === undefined) continue
    t.done++
    if (s === 'success') t.succeeded++
    // A holder released on its lease may still succeed (and the checkpoint may already say
    // so): it frees its slot, but it is not a failure this node knows of.
    else if (s !== 'released') t.failed++
  }
  return t
}

/** A lower bound, from a checkpoint, of the done positions below `p`. */
export function checkpointDoneBelow(cp: CheckpointGroup | undefined, p: number): number {
  if (!cp) return 0
  if (p >= cp.frontier) return cp.done
  return Math.max(0, Math.min(cp.prefix, p), cp.done - (cp.frontier - p))
}

/** Lower bounds of a group's done, succeeded and failed runs (all positions). */
export function groupTally(body: JobBody, k: Knowledge, group: number, now: number): Tally {
  const own = factTally(body, k, group, Number.POSITIVE_INFINITY, now)
  const cp = k.checkpoint?.groups[group]
  if (!cp) return own
  return { done: Math.max(own.done, cp.done), succeeded: Math.max(own.succeeded, cp.succeeded), failed: Math.max(own.failed, cp.done - cp.succeeded) }
}

/** A lower bound of the done positions below `p` in a group. */
export function doneBelow(body: JobBody, k: Knowledge, group: number, p: number, now: number): number {
  return Math.max(factTally(body, k, group, p, now).done, checkpointDoneBelow(k.checkpoint?.groups[group], p))
}

/** A lower bound of the targets that acknowledged (every group). */
export function ackedCount(k: Knowledge): number {
  let own = 0
  for (const g of k.facts.values()) own += g.size
  const cp = k.checkpoint ? k.checkpoint.groups.reduce((n, g) => n + g.acked, 0) : 0
  return Math.max(own, cp)
}

/**
 * The next instant at which decideGate's answer can change with the same knowledge: a group
 * deadline, the quorum window's end, a known lease running out. Until then, and while the
 * knowledge stays the same, deciding again would give the same answer.
 */
export function nextGateChange(body: JobBody, k: Knowledge, group: number, occurrenceAt: number, now: number): number {
  let next = Number.POSITIVE_INFINITY
  const consider = (t: number) => { if (t > now && t < next) next = t }
  consider(groupWindow(body, occurrenceAt, group).deadlineAt)
  if (body.template.target.executionType === 'sequential' && group > 0) consider(groupWindow(body, occurrenceAt, group - 1).deadlineAt)
  const q = quorumOf(body)
  if (q) consider(occurrenceAt + q.timeoutMs)
  if (body.template.chorus?.vanishedHolder === 'release') {
    for (const g of k.facts.values()) for (const f of g.values()) if (f.lease !== undefined && !f.done) consider(f.lease + 1)
  }
  return next
}

export function decideGate(body: JobBody, k: Knowledge, group: number, position: number, occurrenceAt: number, now: number): GateDecision {
  const t = body.template
  const q = quorumOf(body)
  if (q) {
    const acked = ackedCount(k)
    if (acked < q.need) {
      if (now >= occurrenceAt + q.timeoutMs) {
        return { action: 'skip', code: 'quorum_failed', reason: `quorum failed: ${acked} of ${q.total} targets acknowledged within ${q.timeoutMs / 1000} s, ${q.need} needed (the coordinator's report names the silent ones)` }
      }
      return { action: 'wait', why: `quorum: ${acked} of ${q.need} acknowledgements` }
    }
  }
  const window = groupWindow(body, occurrenceAt, group)
  if (t.target.executionType === 'sequential' && group > 0) {
    const prev = group - 1
    const prevWindow = groupWindow(body, occurrenceAt, prev)
    const n = body.resolved.groups[prev]!.size
    const st = groupTally(body, k, prev, now)
    if (st.done < n && now < prevWindow.deadlineAt) return { action: 'wait', why: `group ${prev} still running (${n - st.done} not done)` }
    // Past the deadline the silent ones count as failed: everything not known to have succeeded.
    const failed = n - st.succeeded
    const spec = t.target.groups[prev]!
    if (failed > failureBudget(spec.successCriteria, n) || st.succeeded < successNeeded(spec.successCriteria, n)) {
      return { action: 'skip', code: 'distribution_stopped', reason: `distribution stopped: group ${prev} did not meet its success criteria (${st.succeeded} succeeded, ${failed} failed or unreachable of ${n})` }
    }
  }
  const spec = t.target.groups[group]!
  const n = body.resolved.groups[group]!.size
  const mine = groupTally(body, k, group, now)
  const budget = failureBudget(spec.successCriteria, n)
  if (mine.failed > budget) {
    return { action: 'skip', code: 'criteria_unreachable', reason: `distribution stopped: group ${group} can no longer meet its success criteria (${mine.failed} failed of ${n}, at most ${budget} may fail)` }
  }
  if (spec.earlyTermination && mine.succeeded >= successNeeded(spec.successCriteria, n) && spec.successCriteria.length > 0) {
    return { action: 'skip', code: 'criteria_met', reason: `distribution stopped: group ${group} already met its success criteria (earlyTermination)` }
  }
  if (now >= window.deadlineAt) return { action: 'skip', code: 'group_time_budget', reason: `group ${group}'s time budget (${spec.timeoutSeconds} s) ran out before this node's turn` }
  const size = batchSizeFor(spec.batchSize, n)
  if (size >= n) return { action: 'start' }
  if (spec.distributionMethod === 'batching') {
    const batch = Math.floor(position / size)
    if (batch === 0) return { action: 'start' }
    // Batch b starts once every node before it is done (batches b − 2 and earlier were done before b − 1 began).
    const end = batch * size
    const done = doneBelow(body, k, group, end, now)
    return done >= end ? { action: 'start' } : { action: 'wait', why: `batch ${batch - 1} not done (${end - done} running or silent)` }
  }
  const need = position - size + 1
  if (need <= 0) return { action: 'start' }
  const doneBefore = doneBelow(body, k, group, position, now)
  return doneBefore >= need ? { action: 'start' } : { action: 'wait', why: `rolling window: ${doneBefore} of the ${position} nodes before this one done, ${need} needed` }
}
