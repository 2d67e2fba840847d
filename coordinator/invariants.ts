// What must hold of the coordinator's state after every step, whatever the events: broken
// invariants are programming errors, not operating ones. The simulator checks them after every
// core step (small fleets) and reports a violation with its seed. Pure; O(live state).
import { MAX_AHEAD_OCCURRENCES, REPLY_CACHE_MAX, type CoordinatorState } from './core.js'
import { isGated } from '../protocol/gate.js'
import { MAX_WATCHERS } from './watch.js'

const TERMINAL = new Set(['success', 'failure', 'timeout', 'skipped'])

export function coordinatorInvariants(state: CoordinatorState): string[] {
  const problems: string[] = []
  for (const id of state.live) {
    const inst = state.instances.get(id)
    if (!inst) { problems.push(`live instance ${id} has no record`); continue }
    const open = state.openRuns.get(id)
    if (inst.status !== 'running' || open === undefined) continue
    const actual = inst.runIds.filter((r) => !TERMINAL.has(state.runs.get(r)?.status ?? 'pending')).length
    if (open < 0 || open !== actual) problems.push(`instance ${id}: openRuns is ${open}, but ${actual} of its runs are not terminal`)
  }
  for (const [id, t] of state.tallies) {
    t.groups.forEach((g, gi) => {
      const size = g.status.length
      if (!(g.prefix <= g.frontier && g.frontier <= size)) problems.push(`tally of ${id} group ${gi}: prefix ${g.prefix}, frontier ${g.frontier}, size ${size} (need prefix ≤ frontier ≤ size)`)
      if (!(g.succeeded <= g.done && g.done <= size && g.acked <= size)) problems.push(`tally of ${id} group ${gi}: succeeded ${g.succeeded}, done ${g.done}, acked ${g.acked}, size ${size}`)
    })
  }
  for (const id of state.finished) {
    const inst = state.instances.get(id)
    if (inst && inst.status === 'running') problems.push(`instance ${id} is to leave memory as finished but is running`)
  }
  for (const j of state.jobs.values()) {
    const byStatus = Object.values(j.history.byStatus).reduce((a, b) => a + (b ?? 0), 0)
    if (byStatus !== j.history.count) problems.push(`job ${j.jobId}: ${j.history.count} instances counted, ${byStatus} by status`)
    if ((j.history.ahead?.length ?? 0) > MAX_AHEAD_OCCURRENCES) problems.push(`job ${j.jobId}: ${j.history.ahead!.length} occurrences ahead of its cursor (at most ${MAX_AHEAD_OCCURRENCES})`)
  }
  if (state.watches.held < 0 || state.watches.held > MAX_WATCHERS) problems.push(`held watches ${state.watches.held} outside 0..${MAX_WATCHERS}`)
  for (const n of state.nodes.values()) {
    if (state.byPeer.get(n.peerId) !== n.nodeId) problems.push(`node ${n.nodeId}: byPeer does not map its peer id back to it`)
  }
  for (const r of state.members.revoked.values()) {
    const n = state.nodes.get(r.nodeId)
    if (n && n.publicKey === r.key) problems.push(`node ${r.nodeId} is both enrolled and revoked with the same key`)
  }
  problems.push(...derivedInvariants(state))
  return problems
}

/** The derived caches mirror the records they were built from, within their bounds. */
function derivedInvariants(state: CoordinatorState): string[] {
  const problems: string[] = []
  const d = state.derived
  if (d.replies.size > REPLY_CACHE_MAX) problems.push(`${d.replies.size} cached replies (at most ${REPLY_CACHE_MAX})`)
  for (const [id, j] of d.jobs) {
    if (state.jobs.get(id) !== j.of) { problems.push(`derived entry of job ${id} was not built from its record in memory`); continue }
    const targets = j.of.resolved.groups.reduce((n, g) => n + g.nodes.length, 0)
    if (j.places && j.places.size > targets) problems.push(`job ${id}: ${j.places.size} places derived from ${targets} targets`)
    if (j.body && j.gated !== undefined && j.gated !== isGated(j.body)) problems.push(`job ${id}: derived gated ${j.gated}, its definition says ${!j.gated}`)
  }
  for (const [id, a] of d.acks) {
    if (state.instances.get(id) !== a.of) { problems.push(`derived acks of instance ${id} were not built from its record in memory`); continue }
    if (a.set.size !== (a.of.acks?.length ?? 0)) problems.push(`instance ${id}: ${a.set.size} acks derived, ${a.of.acks?.length ?? 0} recorded`)
  }
  return problems
}
