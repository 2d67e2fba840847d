// Bounds, units and types of the occurrence engine (protocol/schedule.ts re-exports the public
// ones). "Put a limit on everything": each bound says its unit, ms (milliseconds), minutes,
// characters, rrule steps (see MAX_RRULE_STEPS), or a plain count of occurrences or entries.

// ---------------------------------------------------------------------------------------------
// Units.

export const SECOND_MS = 1000
export const MINUTE_MS = 60 * SECOND_MS
export const HOUR_MS = 60 * MINUTE_MS
export const DAY_MS = 24 * HOUR_MS

// ---------------------------------------------------------------------------------------------
// Bounds.

/** Most occurrences any single query returns or itemises. */
export const MAX_OCCURRENCES_PER_QUERY = 10_000
/** Largest COUNT accepted: COUNT rules are walked from DTSTART, so this bounds the work. */
export const MAX_COUNT = 100_000
/** Largest exception `duration`, in minutes (about 1.9 years). */
export const MAX_EXCEPTION_DURATION_MINUTES = 1_000_000
/** Occurrences examined by one backward scan (dueOccurrences looking for what to run). */
export const MAX_SCAN_PER_QUERY = 100_000
/**
 * Work budget of one expansion (one query of a rule, or one exception window's expansion),
 * in rrule steps: a period advanced, a probe while rrule skips to the next allowed
 * BYHOUR/BYMINUTE/BYSECOND value, or a candidate occurrence handed back. Counted, not timed,
 * so expansion stays deterministic (the simulator, and every agent, get the same answer).
 * A MONTHLY period costs 2 steps, a YEARLY one 12 (rrule rebuilds a year's masks). At most
 * about 100 ms of work on this machine. A COUNT rule without BY* parts costs nothing (its
 * last occurrence is computed); with BY* parts, about 3 steps per occurrence.
 */
export const MAX_RRULE_STEPS = 100_000
/** What validating all the rules of one template (scheduleRule and every exception) may
 *  spend together, in the same steps: 65 rules cannot cost 65 budgets. */
export const MAX_TEMPLATE_RRULE_STEPS = 2 * MAX_RRULE_STEPS
/**
 * Candidate times rrule builds per period (days per period × BYHOUR × BYMINUTE × BYSECOND):
 * the work between two counted steps. A YEARLY rule with every hour and minute is 527,040.
 */
export const MAX_CANDIDATES_PER_PERIOD = 100_000
/** Steps a period costs, by rrule frequency number (YEARLY 0: 12 steps, MONTHLY 1: 2 steps;
 *  any other frequency 1 step). */
export const PERIOD_STEPS: Record<number, number> = { 0: 12, 1: 2 }
/** Candidate times rrule builds per step a period costs beyond its base (the candidates
 *  before the query's window are built but never handed back, so they are charged here). */
export const CANDIDATES_PER_STEP = 64
/** An occurrence handled at most this late, in ms, still counts as on time under every policy
 *  (timers fire late, event loops stall). Under `skip`, anything later is missed. */
export const ON_TIME_TOLERANCE_MS = 60_000
/** Last instant any rule can produce, in ms since the epoch (rrule stops at year 9999). */
export const END_OF_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59)
/** Earliest year a DTSTART or UNTIL may name. */
export const MIN_RULE_YEAR = 1900
/** Longest rule text, in characters (the template's MAX_RRULE_CHARS is the same). */
export const MAX_RULE_CHARS = 1024
/** Longest time zone name, in characters (the template's MAX_TIME_ZONE_CHARS is the same). */
export const MAX_TIME_ZONE_NAME_CHARS = 64
/** Parsed rules kept (validation, planning and every agent parse the same rules again), in entries. */
export const MAX_CACHED_RULES = 1024
/** Window starts an exclusion check over a range lists at most (denser: per instant). */
export const MAX_INDEXED_STARTS = 1000
/** Wall time and instant differ by at most this much more at one time than at another, in ms. */
export const MAX_OFFSET_SWING_MS = 3 * HOUR_MS
/** A wall time is at most this far ahead of its instant, in ms (UTC+14 is the largest offset):
 *  the last instant of an UNTIL or COUNT rule whose end is known as a wall time. */
export const MAX_WALL_AHEAD_MS = 15 * HOUR_MS

// ---------------------------------------------------------------------------------------------
// Types.

export type Frequency = 'YEARLY' | 'MONTHLY' | 'WEEKLY' | 'DAILY' | 'HOURLY' | 'MINUTELY' | 'SECONDLY'
export const FREQUENCIES: readonly Frequency[] = ['YEARLY', 'MONTHLY', 'WEEKLY', 'DAILY', 'HOURLY', 'MINUTELY', 'SECONDLY']
export const WEEKDAYS = ['MO', 'TU', 'WE', 'TH', 'FR', 'SA', 'SU'] as const

/** A parsed RRULE, as plain JSON-able data. Weekdays are 0 = Monday … 6 = Sunday. */
export interface RecurrenceRule {
  freq: Frequency
  interval: number
  count?: number
  /** UNTIL given in UTC (`...Z`): occurrences at instants ≤ untilMs. */
  untilMs?: number
  /** UNTIL given as floating date(-time): occurrences at wall times ≤ untilWallMs. A date
   *  without a time means the end of that day (23:59:59), so the whole day is included. */
  untilWallMs?: number
  wkst: number
  bysetpos?: number[]
  bymonth?: number[]
  bymonthday?: number[]
  byyearday?: number[]
  byweekno?: number[]
  byday?: { weekday: number; n?: number }[]
  byhour?: number[]
  byminute?: number[]
  bysecond?: number[]
}

export type Schedule =
  | { kind: 'immediate'; atMs: number }
  | {
      kind: 'recurring'
      /** IANA zone the wall-clock rule is evaluated in ("UTC" by default). */
      timeZone: string
      /** DTSTART as wall-clock time in `timeZone`, in the floating frame (UTC fields = wall fields). */
      startWallMs: number
      /** DTSTART as an instant. */
      startMs: number
      rule: RecurrenceRule
      /** For COUNT rules: the wall time of the last occurrence (computed once at parse time). */
      lastWallMs?: number
      /** The rule text as given, for display. */
      text: string
    }
export type RecurringSchedule = Extract<Schedule, { kind: 'recurring' }>

export interface ScheduleOptions {
  /** The start when the rule carries no DTSTART: the job's signed creation time. */
  defaultStartMs: number
  /** IANA zone for wall-clock rules (Chorus extension). Overridden by a TZID in the rule. */
  timeZone?: string
  /** Shared by every rule of one template (MAX_TEMPLATE_RRULE_STEPS): each rule's
   *  validation spends from it, at most MAX_RRULE_STEPS each. */
  templateBudget?: ExpansionBudget
}

export type ParseScheduleResult = { ok: true; schedule: Schedule } | { ok: false; message: string }

/** What one expansion may still spend (MAX_RRULE_STEPS), in rrule steps; `exhausted` once it ran out. */
export interface ExpansionBudget {
  left: number
  exhausted: boolean
}

export function newBudget(steps: number = MAX_RRULE_STEPS): ExpansionBudget {
  return { left: steps, exhausted: false }
}
