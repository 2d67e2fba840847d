// Occurrence expansion: the occurrences of a parsed schedule in a range, after an instant, or
// latest first, each query within one budget of rrule steps (schedule-rrule.ts). Wall times are
// converted to instants by wallToInstant (schedule-zones.ts); instants come back sorted and
// without duplicates.
import {
  DAY_MS, END_OF_TIME_MS, MAX_OCCURRENCES_PER_QUERY, MAX_SCAN_PER_QUERY, MAX_WALL_AHEAD_MS, newBudget, SECOND_MS,
  type ExpansionBudget, type RecurringSchedule, type Schedule,
} from './schedule-bounds.js'
import { expand, spend, toRRule, typicalSpacingMs } from './schedule-rrule.js'
import { offsetsNear, wallToInstant } from './schedule-zones.js'

/** The first index i with list[i] >= t (list ascending). */
export function lowerBound(list: readonly number[], t: number): number {
  let lo = 0
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (list[mid]! < t) lo = mid + 1
    else hi = mid
  }
  return lo
}

function insertSorted(list: number[], t: number): void {
  const at = lowerBound(list, t)
  if (list[at] !== t) list.splice(at, 0, t)
}

/** The earliest `limit` occurrence instants t with fromMs ≤ t < toMs, sorted, distinct,
 *  found within `budget` (when it runs out, what was found so far). `next.wallMs` is set to
 *  the wall time of the first candidate rrule produced after the range, when it did. */
export function collect(s: RecurringSchedule, fromMs: number, toMs: number, limit: number, budget: ExpansionBudget = newBudget(), next?: { wallMs?: number }): number[] {
  const found: number[] = []
  if (limit <= 0 || !(toMs > fromMs)) return found
  const zone = s.timeZone
  const untilMs = s.rule.untilMs
  const hi = Math.min(toMs, untilMs === undefined ? Infinity : untilMs + 1, END_OF_TIME_MS + 1)
  const lo = Math.max(fromMs, s.startMs - DAY_MS)
  if (!(hi > lo)) return found
  // Wall times whose instants can fall in [lo, hi): bracket with the offsets near each end.
  const wallFrom = lo + Math.min(...offsetsNear(zone, lo))
  let wallTo = hi + Math.max(...offsetsNear(zone, hi))
  if (s.rule.untilWallMs !== undefined) wallTo = Math.min(wallTo, s.rule.untilWallMs)
  if (wallTo < wallFrom) return found
  const untilWall = untilMs !== undefined ? untilMs + Math.max(...offsetsNear(zone, untilMs)) : s.rule.untilWallMs
  let stopWall = Infinity
  // all(), not between(): rrule walks on to the next candidate after the window anyway (it
  // only compares candidates with the range), so the callback sees it and says where it is.
  expand(s, toRRule(s, wallFrom, untilWall), budget, (rr) => rr.all((d: Date) => {
    spend(budget)
    const w = d.getTime()
    if (w < wallFrom) return true
    if (w > wallTo || w > stopWall) {
      if (next !== undefined) next.wallMs = w
      return false
    }
    const t = wallToInstant(zone, w)
    if (t >= lo && t < hi) {
      insertSorted(found, t)
      if (found.length > limit) found.length = limit
      if (found.length === limit && stopWall === Infinity) {
        // Later wall times map to instants at most a few hours earlier than themselves.
        const kth = found[limit - 1]!
        stopWall = kth + Math.max(...offsetsNear(zone, kth))
      }
    }
    return true
  }))
  return found
}

/** Last possible occurrence instant bound of a schedule (inclusive), for ending searches. */
function endBoundMs(s: RecurringSchedule): number {
  let end = END_OF_TIME_MS
  if (s.rule.untilMs !== undefined) end = Math.min(end, s.rule.untilMs)
  if (s.rule.untilWallMs !== undefined) end = Math.min(end, s.rule.untilWallMs + MAX_WALL_AHEAD_MS)
  if (s.lastWallMs !== undefined) end = Math.min(end, s.lastWallMs + MAX_WALL_AHEAD_MS)
  return end
}

export function clampLimit(limit: number): number {
  return Number.isFinite(limit) ? Math.max(0, Math.min(Math.floor(limit), MAX_OCCURRENCES_PER_QUERY)) : MAX_OCCURRENCES_PER_QUERY
}

/**
 * Occurrences t with fromMs ≤ t < toMs (inclusive from, exclusive to), ascending, at most
 * `limit` (itself capped at MAX_OCCURRENCES_PER_QUERY); the earliest ones when truncated.
 */
export function occurrencesBetween(schedule: Schedule, fromMs: number, toMs: number, limit: number = MAX_OCCURRENCES_PER_QUERY): number[] {
  const n = clampLimit(limit)
  if (schedule.kind === 'immediate') return n > 0 && schedule.atMs >= fromMs && schedule.atMs < toMs ? [schedule.atMs] : []
  return collect(schedule, fromMs, toMs, n, newBudget())
}

/** The first `count` occurrences strictly after `afterMs` (count capped at MAX_OCCURRENCES_PER_QUERY),
 *  found within `budget` (one MAX_RRULE_STEPS budget unless given: what it has left after the
 *  call says what the query spent). */
export function nextOccurrences(schedule: Schedule, afterMs: number, count: number, budget: ExpansionBudget = newBudget()): number[] {
  const n = clampLimit(count)
  if (schedule.kind === 'immediate') return n > 0 && schedule.atMs > afterMs ? [schedule.atMs] : []
  const out: number[] = []
  if (n === 0) return out
  const end = endBoundMs(schedule)
  let lo = Math.max(afterMs + 1, schedule.startMs - DAY_MS)
  let span = typicalSpacingMs(schedule.rule) * (n + 2)
  while (out.length < n && lo <= end && !budget.exhausted) {
    const hi = Math.min(lo + span, end + 1)
    out.push(...collect(schedule, lo, hi, n - out.length, budget))
    lo = hi
    span *= 2
  }
  return out
}

/** Occurrences t with fromMs ≤ t < toMs, latest first, that pass `keep`, at most `k`;
 *  examines at most MAX_SCAN_PER_QUERY occurrences (older ones are then not returned). */
export function latestOccurrences(schedule: Schedule, fromMs: number, toMs: number, k: number, keep: (t: number) => boolean): number[] {
  const out: number[] = []
  if (k <= 0 || !(toMs > fromMs)) return out
  if (schedule.kind === 'immediate') {
    const t = schedule.atMs
    return t >= fromMs && t < toMs && keep(t) ? [t] : []
  }
  const floor = Math.max(fromMs, schedule.startMs - DAY_MS)
  let hi = toMs
  let span = typicalSpacingMs(schedule.rule) * 4
  let scanned = 0
  const budget = newBudget()
  while (out.length < k && hi > floor && scanned < MAX_SCAN_PER_QUERY && !budget.exhausted) {
    const lo = Math.max(floor, hi - span)
    const chunk = collect(schedule, lo, hi, MAX_OCCURRENCES_PER_QUERY, budget)
    if (chunk.length === MAX_OCCURRENCES_PER_QUERY && span > SECOND_MS) {
      span = Math.max(SECOND_MS, Math.floor(span / 4)) // too dense to see the whole chunk: narrow it
      continue
    }
    scanned += chunk.length
    for (let i = chunk.length - 1; i >= 0 && out.length < k; i--) if (keep(chunk[i]!)) out.push(chunk[i]!)
    hi = lo
    span *= 2
  }
  return out
}
