// The "When" of a Courier job: a pure occurrence engine.
//
// Agents compute a job's occurrences themselves from the signed job definition, so every
// function here is a pure function of its arguments: no Date.now(), no timers, no randomness,
// and no dependence on the process time zone (all calendar arithmetic uses UTC getters, and
// zone offsets come from Intl.DateTimeFormat with an explicit `timeZone`). Every time is an
// explicit `ms since epoch` number. The only module state is a memo of Intl formatters, which
// does not change results.
//
// Accepted `scheduleRule` forms (FORMAT.md §1):
//   * `immediate`: one occurrence at `defaultStartMs` (the job's signed creation time).
//   * `RRULE:FREQ=...;...` with the `RRULE:` prefix, including Courier's non-standard
//     `DTSTART=yyyymmdd` / `DTSTART=yyyymmddThhmmss[Z]` written INSIDE the rule.
//   * RFC 5545 text with a separate DTSTART line:
//       DTSTART;TZID=Europe/Paris:20250330T023000
//       RRULE:FREQ=DAILY
//   * Chorus extension: `TZID=Area/City` inside the RRULE, or `opts.timeZone`.
// Without DTSTART the start is `defaultStartMs`, rounded UP to a whole second (RFC 5545
// DATE-TIME has one-second resolution, and rounding up never puts the first occurrence
// before the job existed). Without a zone, rules are evaluated in UTC, as Courier does.
//
// Time zones and daylight saving. A recurrence in zone Z is expanded (by rrule) in a
// "floating" frame: a Date whose UTC fields are Z's wall-clock fields. Each wall time is then
// converted to an instant by `wallToInstant`, which follows RFC 5545 §3.3.5 (the same rule as
// Temporal's `disambiguation: 'compatible'`):
//   * Spring forward (the wall time does not exist, e.g. 02:30 on 2025-03-30 in Europe/Paris):
//     the wall time is read with the UTC offset in force BEFORE the gap, i.e. it is shifted
//     forward by the length of the gap: 02:30 → 03:30 CEST (Paris, 1 h gap); 02:15 → 02:45
//     on Australia/Lord_Howe (30 min gap). The day keeps exactly one occurrence.
//   * Fall back (the wall time occurs twice, e.g. 01:30 on 2025-11-02 in America/New_York):
//     the occurrence runs ONCE, at the first (earlier, daylight-time) instance: 01:30 EDT.
//   * Two wall times that map to the same instant (possible only for sub-daily rules, e.g.
//     HOURLY 02:00 → 03:00 on a spring-forward day and the real 03:00) produce ONE occurrence;
//     instants are returned sorted and without duplicates. COUNT counts wall-clock
//     occurrences, so such a collision yields one run fewer than COUNT.
//   * Consequence for sub-daily rules in a zone with DST: they follow the wall clock, so
//     during the repeated hour of a fall-back day no occurrence runs (every wall time still
//     runs exactly once). Use UTC (the default) for elapsed-time "every N minutes" rules.
// Bounded work: rrule can walk for ever (to year 9999, or in a loop that never advances), so
// every expansion is metered from inside rrule and stopped at a budget counted in steps
// (MAX_RRULE_STEPS; see `meter` in schedule-rrule.ts). Validation refuses rules that never
// occur or exhaust it.
//
// rrule's own TZID support is NOT used: it converts through the process's local zone (its
// results change with TZ), maps a nonexistent 02:30 Paris to 01:30 CET (before the gap), and
// silently drops `TZID=` written inside an RRULE.
//
// Exception windows (FORMAT.md §2, `exceptionRules[]` and the coordinator's global
// exceptions): each occurrence s of the window's rrule opens a window [s, s + duration).
// An occurrence at t is excluded iff some window start s has s ≤ t < s + duration.
// `duration` is in MINUTES; Courier does not document the unit. Minutes is the only reading
// that makes its own sample meaningful: `RRULE:FREQ=MINUTELY;INTERVAL=3` with `duration: 1`
// blacks out one minute in three. Read as hours, every window would overlap the next and the
// sample job (`FREQ=MINUTELY;COUNT=10`) could never run at all. The DAILY/WEEKLY samples with
// durations 2 and 4 read naturally as short maintenance windows either way.
//
// The engine is split by what each part decides; this module re-exports every public name:
//   schedule-bounds.ts      bounds (each with its unit), units, types, expansion budgets
//   schedule-zones.ts       time zones: offsets, wall time <-> instant
//   schedule-parse.ts       rule text -> Schedule (lines, parts, zone, start), the parse cache
//   schedule-checks.ts      rules refused: never occurring, unreachable, over budget
//   schedule-rrule.ts       the metered rrule engine (steps, rebasing DTSTART)
//   schedule-expand.ts      occurrences in a range, after an instant, latest first
//   schedule-exceptions.ts  exception windows, exclusions, planned occurrences, next wake-up
//   schedule-missed.ts      missed-occurrence policies: what is run, missed or excluded
export {
  MAX_CACHED_RULES, MAX_CANDIDATES_PER_PERIOD, MAX_COUNT, MAX_EXCEPTION_DURATION_MINUTES, MAX_INDEXED_STARTS, MAX_OCCURRENCES_PER_QUERY,
  MAX_RRULE_STEPS, MAX_SCAN_PER_QUERY, MAX_TEMPLATE_RRULE_STEPS, newBudget, ON_TIME_TOLERANCE_MS,
  type ExpansionBudget, type Frequency, type ParseScheduleResult, type RecurrenceRule, type RecurringSchedule, type Schedule, type ScheduleOptions,
} from './schedule-bounds.js'
export { canonicalTimeZone, instantToWall, wallToInstant, zoneOffsetMs } from './schedule-zones.js'
export { parseExceptionRule, parseScheduleRule } from './schedule-parse.js'
export { nextOccurrences, occurrencesBetween } from './schedule-expand.js'
export {
  compileExceptions, exclusionChecker, exclusionFor, nextWakeAfter, planOccurrences,
  type CompiledException, type CompiledExceptions, type CompileExceptionsResult, type ExceptionRuleInput, type ExceptionWindow, type Exclusion, type PlannedOccurrence,
} from './schedule-exceptions.js'
export { DEFAULT_MISSED_POLICY, dueOccurrences, type DueOccurrences, type ExcludedOccurrence, type MissedPolicy } from './schedule-missed.js'
