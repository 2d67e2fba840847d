// Missed occurrences: what an agent runs, misses or records as excluded among the occurrences
// that came due since it last looked, under the job's missed-occurrence policy.
import { HOUR_MS, MAX_OCCURRENCES_PER_QUERY, ON_TIME_TOLERANCE_MS, type Schedule } from './schedule-bounds.js'
import { exclusionChecker, type CompiledExceptions, type Exclusion } from './schedule-exceptions.js'
import { clampLimit, latestOccurrences, occurrencesBetween } from './schedule-expand.js'

/**
 * What an agent does with occurrences that came due while it could not run them (offline,
 * asleep, rebooting, clock jumped forward):
 *   * skip: run only an occurrence at most ON_TIME_TOLERANCE_MS late; the rest are missed.
 *   * runOnceWithin: run the latest one if it is at most `windowMs` late; the rest are missed.
 *     Several missed occurrences are coalesced into one run.
 *   * catchUp: run the latest `max` ones (oldest first); older ones are missed.
 * In every policy a late run never starts while `now` is inside an exception window (the
 * blackout would be violated); such an occurrence is recorded as missed instead.
 */
export type MissedPolicy = { kind: 'skip' } | { kind: 'runOnceWithin'; windowMs: number } | { kind: 'catchUp'; max: number }

/**
 * Default: run the latest missed occurrence once if it is at most 1 hour late. A short outage
 * (agent restart, a reboot step, a laptop waking up) then still gets its maintenance run,
 * while an agent back after days does not fire a stale backlog across the fleet at once; and
 * coalescing into a single run keeps recurring jobs from overlapping themselves. One hour is
 * short enough that a "run at 02:00" job does not surprise anyone in the working day.
 */
export const DEFAULT_MISSED_POLICY: MissedPolicy = { kind: 'runOnceWithin', windowMs: HOUR_MS }

export interface ExcludedOccurrence extends Exclusion {
  at: number
}

export interface DueOccurrences {
  /** Occurrences to run now, ascending. */
  run: number[]
  /** Occurrences not performed (reason "missed"), ascending. */
  missed: number[]
  /** Occurrences inside an exception window, ascending. */
  excluded: ExcludedOccurrence[]
  /** Persist this as the new lastHandledMs: every occurrence ≤ it is accounted for. */
  handledThroughMs: number
  /** Set when `limit` cut the itemised lists short: occurrences t with fromMs ≤ t ≤ toMs that
   *  are not in `run` were neither run nor itemised; each was missed or excluded. */
  truncated?: { fromMs: number; toMs: number }
}

/**
 * Classify the occurrences in (lastHandledMs, nowMs]: each is in exactly one of run, missed
 * or excluded (or, past `limit` itemised missed/excluded entries, covered by `truncated`).
 * Never returns an occurrence ≤ lastHandledMs: if the clock went backwards (nowMs ≤
 * lastHandledMs) nothing is due and handledThroughMs stays lastHandledMs.
 */
export function dueOccurrences(
  schedule: Schedule,
  exceptions: CompiledExceptions,
  lastHandledMs: number,
  nowMs: number,
  policy: MissedPolicy = DEFAULT_MISSED_POLICY,
  limit: number = MAX_OCCURRENCES_PER_QUERY,
): DueOccurrences {
  if (!(nowMs > lastHandledMs)) return { run: [], missed: [], excluded: [], handledThroughMs: lastHandledMs }
  const n = clampLimit(limit)
  const from = lastHandledMs + 1
  const to = nowMs + 1
  const excludedAt = exclusionChecker(exceptions, from, nowMs)
  const runSet = toRun(schedule, policy, from, nowMs, (t) => excludedAt(t) === undefined)
  runSet.sort((a, b) => a - b)
  // A late run must not start inside a blackout.
  const lateBlocked = excludedAt(nowMs) !== undefined
  const run = lateBlocked ? runSet.filter((t) => nowMs - t <= ON_TIME_TOLERANCE_MS) : runSet
  const runs = new Set(run)

  const missed: number[] = []
  const excluded: ExcludedOccurrence[] = []
  const listed = occurrencesBetween(schedule, from, to, n + run.length + 1)
  let truncated: DueOccurrences['truncated']
  for (const t of listed) {
    if (runs.has(t)) continue
    if (missed.length + excluded.length >= n) {
      truncated = { fromMs: t, toMs: nowMs }
      break
    }
    const ex = excludedAt(t)
    if (ex !== undefined) excluded.push({ at: t, ...ex })
    else missed.push(t)
  }
  const result: DueOccurrences = { run, missed, excluded, handledThroughMs: nowMs }
  if (truncated !== undefined) result.truncated = truncated
  return result
}

/** What to run among the occurrences in [from, nowMs]: the latest non-excluded one(s) the policy allows. */
function toRun(schedule: Schedule, policy: MissedPolicy, from: number, nowMs: number, notExcluded: (t: number) => boolean): number[] {
  const to = nowMs + 1
  switch (policy.kind) {
    case 'skip':
      return latestOccurrences(schedule, Math.max(from, nowMs - ON_TIME_TOLERANCE_MS), to, 1, notExcluded)
    case 'runOnceWithin': {
      const windowMs = Math.max(ON_TIME_TOLERANCE_MS, Number.isFinite(policy.windowMs) ? policy.windowMs : 0)
      return latestOccurrences(schedule, Math.max(from, nowMs - windowMs), to, 1, notExcluded)
    }
    case 'catchUp': {
      const max = Math.max(1, Math.min(Number.isFinite(policy.max) ? Math.floor(policy.max) : 1, MAX_OCCURRENCES_PER_QUERY))
      return latestOccurrences(schedule, from, to, max, notExcluded)
    }
  }
}
