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
// (MAX_RRULE_STEPS; see `meter`). Validation refuses rules that never occur or exhaust it.
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
import * as rruleModule from 'rrule'
import type { Options as RRuleOptions, Weekday } from 'rrule'

// rrule has no `exports` map: plain Node ESM sees its CommonJS build (everything on
// `default`), bundlers see its ESM build (named exports). Take whichever is there.
const { RRule } = ((rruleModule as unknown as { default?: typeof rruleModule }).default ?? rruleModule) as typeof rruleModule

// ---------------------------------------------------------------------------------------------
// Bounds ("put a limit on everything").

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
/** An occurrence handled at most this late still counts as on time under every policy
 *  (timers fire late, event loops stall). Under `skip`, anything later is missed. */
export const ON_TIME_TOLERANCE_MS = 60_000
/** Last instant any rule can produce (rrule stops at year 9999). */
const END_OF_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59)
const SECOND = 1000
const MINUTE = 60 * SECOND
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR

// ---------------------------------------------------------------------------------------------
// Types.

export type Frequency = 'YEARLY' | 'MONTHLY' | 'WEEKLY' | 'DAILY' | 'HOURLY' | 'MINUTELY' | 'SECONDLY'
const FREQUENCIES: readonly Frequency[] = ['YEARLY', 'MONTHLY', 'WEEKLY', 'DAILY', 'HOURLY', 'MINUTELY', 'SECONDLY']
const WEEKDAYS = ['MO', 'TU', 'WE', 'TH', 'FR', 'SA', 'SU'] as const

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

// ---------------------------------------------------------------------------------------------
// Time zones.

const formatters = new Map<string, Intl.DateTimeFormat>()

function formatterFor(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone)
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      era: 'short',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    })
    formatters.set(zone, f)
  }
  return f
}

/** The canonical name of an IANA zone, or undefined when the zone is unknown. */
export function canonicalTimeZone(zone: string): string | undefined {
  if (!/^[A-Za-z0-9_+\-/]{1,64}$/.test(zone)) return undefined
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: zone }).resolvedOptions().timeZone
  } catch {
    return undefined
  }
}

function isUtc(zone: string): boolean {
  return zone === 'UTC' || zone === 'Etc/UTC' || zone === 'Etc/GMT' || zone === 'GMT'
}

/** UTC offset of `zone` at instant `ms`, in ms (wall = instant + offset). */
export function zoneOffsetMs(zone: string, ms: number): number {
  if (isUtc(zone)) return 0
  const whole = Math.floor(ms / SECOND) * SECOND
  let year = 0, month = 1, day = 1, hour = 0, minute = 0, second = 0, bc = false
  for (const p of formatterFor(zone).formatToParts(whole)) {
    switch (p.type) {
      case 'year': year = Number(p.value); break
      case 'month': month = Number(p.value); break
      case 'day': day = Number(p.value); break
      case 'hour': hour = Number(p.value); break
      case 'minute': minute = Number(p.value); break
      case 'second': second = Number(p.value); break
      case 'era': bc = p.value.startsWith('B'); break
    }
  }
  if (bc) year = 1 - year
  const d = new Date(0)
  d.setUTCFullYear(year, month - 1, day)
  d.setUTCHours(hour, minute, second, 0)
  return d.getTime() - whole
}

/** The wall-clock time at instant `ms` in `zone`, in the floating frame. */
export function instantToWall(zone: string, ms: number): number {
  return ms + zoneOffsetMs(zone, ms)
}

/** The offsets in force within a day either side of `ms` (assumes at most one transition
 *  in any 48 hours, which holds for every zone in tzdata since 1970). */
function offsetsNear(zone: string, ms: number): [before: number, at: number, after: number] {
  return [zoneOffsetMs(zone, ms - DAY), zoneOffsetMs(zone, ms), zoneOffsetMs(zone, ms + DAY)]
}

/**
 * The instant of wall-clock time `wallMs` (floating frame) in `zone`. A nonexistent wall time
 * (spring-forward gap) is read with the offset before the gap, i.e. shifted forward by the
 * gap; an ambiguous one (fall-back overlap) resolves to the earlier instant. RFC 5545 §3.3.5.
 */
export function wallToInstant(zone: string, wallMs: number): number {
  if (isUtc(zone)) return wallMs
  const [before, , after] = offsetsNear(zone, wallMs)
  let best: number | undefined
  for (const off of before === after ? [before] : [before, after]) {
    const t = wallMs - off
    if (zoneOffsetMs(zone, t) === off && (best === undefined || t < best)) best = t
  }
  if (best !== undefined) return best
  // No offset reproduces the wall time: it lies in a gap. Use the offset before the gap.
  return wallMs - before
}

// ---------------------------------------------------------------------------------------------
// Parsing.

const EXAMPLE = '"RRULE:FREQ=DAILY;INTERVAL=1"'

type DateTimeValue = { wallMs: number; utc: boolean; dateOnly: boolean }

function parseDateTime(value: string, what: string): DateTimeValue | string {
  const m = /^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z)?)?$/.exec(value)
  if (!m) return `${what}: got "${value}"; expected yyyymmdd, yyyymmddThhmmss or yyyymmddThhmmssZ, e.g. "20230620" or "20230620T090000Z"`
  const [y, mo, d, h, mi, s] = [m[1], m[2], m[3], m[4] ?? '0', m[5] ?? '0', m[6] ?? '0'].map(Number) as [number, number, number, number, number, number]
  const wallMs = Date.UTC(y, mo - 1, d, h, mi, s)
  const back = new Date(wallMs)
  if (y < 1900 || back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) {
    return `${what}: "${value}" is not a valid date-time; expected a real calendar date from 1900 on, hours 00-23, minutes and seconds 00-59`
  }
  return { wallMs, utc: m[7] === 'Z', dateOnly: m[4] === undefined }
}

function intList(key: string, value: string, min: number, max: number, allowNegative: boolean): number[] | string {
  const out: number[] = []
  for (const part of value.split(',')) {
    if (!/^[+-]?\d{1,4}$/.test(part)) return `${key}: got "${value}"; expected a comma-separated list of integers`
    const n = Number(part)
    const ok = allowNegative ? n !== 0 && Math.abs(n) >= min && Math.abs(n) <= max : n >= min && n <= max
    if (!ok) return `${key}: ${part} is out of range; expected ${allowNegative ? `±${min}..${max}` : `${min}..${max}`}`
    if (!out.includes(n)) out.push(n)
  }
  return out
}

interface RawRule {
  parts: Map<string, string>
  dtstart?: DateTimeValue
  tzid?: string
}

/**
 * Parse a schedule rule. Errors name what is wrong and what is expected, prefixed with
 * "scheduleRule:" (`compileExceptions` uses its own prefix).
 */
export function parseScheduleRule(rule: string, opts: ScheduleOptions): ParseScheduleResult {
  return parseRule(rule, opts, 'scheduleRule', true)
}

/** Parse an exception window's rule (never "immediate"); errors are prefixed with `label`. */
export function parseExceptionRule(rule: string, opts: ScheduleOptions, label: string): ParseScheduleResult {
  return parseRule(rule, opts, label, false)
}

/** Parsed rules kept (validation, planning and every agent parse the same rules again). */
export const MAX_CACHED_RULES = 1024

/** A parse and the steps its expansion spent; reused only when at least those steps are left,
 *  so a cached answer is always the answer a fresh parse would give. */
const ruleCache = new Map<string, { result: ParseScheduleResult; steps: number }>()

function ruleKey(text: unknown, opts: ScheduleOptions, allowImmediate: boolean): string | undefined {
  if (typeof text !== 'string' || text.length > 1024) return undefined
  // The default start matters only to a rule without DTSTART (and to "immediate").
  const start = /DTSTART/i.test(text) ? '' : String(opts.defaultStartMs)
  return [allowImmediate, start, opts.timeZone ?? '', text].join('\u0000')
}

/** Parses are cached without their label; messages get it on the way out. */
const LABEL_MARK = '\u0001'

function relabel(result: ParseScheduleResult, label: string): ParseScheduleResult {
  return result.ok ? result : { ok: false, message: label + result.message.slice(LABEL_MARK.length) }
}

function parseRule(text: string, opts: ScheduleOptions, label: string, allowImmediate: boolean): ParseScheduleResult {
  const key = ruleKey(text, opts, allowImmediate)
  const shared = opts.templateBudget ?? newBudget(Infinity)
  const hit = key === undefined ? undefined : ruleCache.get(key)
  if (hit !== undefined && hit.steps <= shared.left) {
    shared.left -= hit.steps
    ruleCache.delete(key!)
    ruleCache.set(key!, hit)
    return relabel(hit.result, label)
  }
  const before = shared.left
  const result = parseRuleUncached(text, { ...opts, templateBudget: shared }, LABEL_MARK, allowImmediate)
  // Cache only answers the shared budget did not cut short.
  if (key !== undefined && before >= MAX_RRULE_STEPS) {
    ruleCache.set(key, { result, steps: before - shared.left })
    if (ruleCache.size > MAX_CACHED_RULES) ruleCache.delete(ruleCache.keys().next().value as string)
  }
  return relabel(result, label)
}

function parseRuleUncached(text: string, opts: ScheduleOptions, label: string, allowImmediate: boolean): ParseScheduleResult {
  const fail = (message: string): ParseScheduleResult => ({ ok: false, message: `${label}: ${message}` })
  if (typeof text !== 'string') return fail(`expected a string such as ${EXAMPLE}`)
  if (!Number.isFinite(opts.defaultStartMs)) return fail('defaultStartMs must be a finite number of ms since the epoch')
  const trimmed = text.trim()
  if (trimmed.length > 1024) return fail(`the rule is ${trimmed.length} characters long; expected at most 1024`)
  if (trimmed.toLowerCase() === 'immediate') {
    if (!allowImmediate) return fail(`"immediate" is not a recurrence; expected a rule such as ${EXAMPLE}`)
    return { ok: true, schedule: { kind: 'immediate', atMs: opts.defaultStartMs } }
  }
  if (trimmed === '') return fail(`the rule is empty; expected ${allowImmediate ? '"immediate" or ' : ''}a rule such as ${EXAMPLE}`)

  // Unfold RFC 5545 continuation lines, then read DTSTART and RRULE lines.
  const lines = trimmed.replace(/\r\n/g, '\n').replace(/\n[ \t]/g, '').split('\n').map((l) => l.trim()).filter((l) => l !== '')
  let rruleBody: string | undefined
  let dtstart: DateTimeValue | undefined
  let dtstartZone: string | undefined
  for (const line of lines) {
    const upper = line.toUpperCase()
    if (upper.startsWith('RRULE:')) {
      if (rruleBody !== undefined) return fail('more than one RRULE line; expected exactly one')
      rruleBody = line.slice(6)
    } else if (upper.startsWith('DTSTART')) {
      if (dtstart !== undefined) return fail('more than one DTSTART; expected at most one')
      const m = /^DTSTART((?:;[A-Za-z-]+=[^;:]*)*):(.*)$/i.exec(line)
      if (!m) return fail(`cannot read "${line}"; expected e.g. "DTSTART:20250330T023000Z" or "DTSTART;TZID=Europe/Paris:20250330T023000"`)
      for (const param of (m[1] ?? '').split(';').filter((p) => p !== '')) {
        const [k = '', v = ''] = param.split('=')
        if (k.toUpperCase() === 'TZID') dtstartZone = v
        else if (k.toUpperCase() === 'VALUE' && (v.toUpperCase() === 'DATE' || v.toUpperCase() === 'DATE-TIME')) continue
        else return fail(`DTSTART parameter "${param}" is not supported; expected TZID=Area/City or VALUE=DATE`)
      }
      const dt = parseDateTime((m[2] ?? '').trim(), 'DTSTART')
      if (typeof dt === 'string') return fail(dt)
      dtstart = dt
    } else {
      const name = /^([A-Za-z-]+)/.exec(line)?.[1] ?? line.slice(0, 20)
      if (lines.length === 1 && /^FREQ=/i.test(line)) return fail(`the "RRULE:" prefix is missing; expected e.g. "RRULE:${line}"`)
      return fail(`"${name}" is not supported; expected ${allowImmediate ? '"immediate" or ' : ''}an RRULE such as ${EXAMPLE}, optionally after a DTSTART line`)
    }
  }
  if (rruleBody === undefined) return fail(`no "RRULE:" line; expected e.g. ${EXAMPLE}`)

  // Split the RRULE into KEY=VALUE parts.
  const raw: RawRule = { parts: new Map() }
  for (const part of rruleBody.split(';')) {
    if (part === '') continue
    const eq = part.indexOf('=')
    if (eq <= 0) return fail(`"${part}" is not KEY=VALUE; expected parts such as "FREQ=DAILY" separated by ";"`)
    const key = part.slice(0, eq).trim().toUpperCase()
    const value = part.slice(eq + 1).trim()
    if (key === 'DTSTART') {
      if (dtstart !== undefined) return fail('DTSTART is given twice; expected at most one')
      const dt = parseDateTime(value, 'DTSTART')
      if (typeof dt === 'string') return fail(dt)
      dtstart = dt
      continue
    }
    if (key === 'TZID') {
      raw.tzid = value
      continue
    }
    if (raw.parts.has(key)) return fail(`${key} is given twice; expected it at most once`)
    raw.parts.set(key, value.toUpperCase())
  }

  // Time zone: DTSTART;TZID > TZID= in the rule > opts.timeZone > UTC.
  if (dtstartZone !== undefined && raw.tzid !== undefined && dtstartZone !== raw.tzid) {
    return fail(`DTSTART;TZID=${dtstartZone} and TZID=${raw.tzid} disagree; expected one time zone`)
  }
  const zoneName = dtstartZone ?? raw.tzid ?? opts.timeZone ?? 'UTC'
  // Keep the name as written (ICU versions canonicalise aliases differently; offsets agree).
  const zone = canonicalTimeZone(zoneName) === undefined ? undefined : zoneName
  if (zone === undefined) return fail(`unknown time zone "${zoneName}"; expected an IANA zone name such as "Europe/Paris" or "UTC"`)
  if (dtstart?.utc && (dtstartZone !== undefined)) return fail('DTSTART has both TZID and a trailing "Z"; expected one of them')

  const parsed = parseParts(raw.parts)
  if (typeof parsed === 'string') return fail(parsed)

  let startMs: number
  let startWallMs: number
  if (dtstart === undefined) {
    startMs = Math.ceil(opts.defaultStartMs / SECOND) * SECOND
    startWallMs = instantToWall(zone, startMs)
  } else if (dtstart.utc) {
    startMs = dtstart.wallMs
    startWallMs = instantToWall(zone, startMs)
  } else {
    startWallMs = dtstart.wallMs
    startMs = wallToInstant(zone, startWallMs)
  }
  if (parsed.untilInstant !== undefined) {
    if (parsed.untilInstant.utc) parsed.rule.untilMs = parsed.untilInstant.wallMs
    else parsed.rule.untilWallMs = parsed.untilInstant.dateOnly ? parsed.untilInstant.wallMs + DAY - SECOND : parsed.untilInstant.wallMs
  }
  const reach = checkReachable(parsed.rule, startWallMs)
  if (reach !== undefined) return fail(reach)
  const schedule: RecurringSchedule = { kind: 'recurring', timeZone: zone, startWallMs, startMs, rule: parsed.rule, text: trimmed }
  const r = parsed.rule
  if ((r.untilMs !== undefined && r.untilMs < startMs) || (r.untilWallMs !== undefined && r.untilWallMs < startWallMs)) {
    return fail('UNTIL is before DTSTART, so the rule has no occurrence at all; expected UNTIL after DTSTART')
  }
  const expansion = checkExpansion(schedule, opts.templateBudget)
  return expansion === undefined ? { ok: true, schedule } : fail(expansion)
}

/** Candidate times rrule builds per period of the rule (see MAX_CANDIDATES_PER_PERIOD). */
function candidatesPerPeriod(rule: RecurrenceRule): number {
  const len = (l: number[] | undefined) => l?.length ?? 1
  const times =
    rule.freq === 'SECONDLY' ? 1
    : rule.freq === 'MINUTELY' ? len(rule.bysecond)
    : rule.freq === 'HOURLY' ? len(rule.byminute) * len(rule.bysecond)
    : len(rule.byhour) * len(rule.byminute) * len(rule.bysecond)
  const periodDays = rule.freq === 'YEARLY' ? 366 : rule.freq === 'MONTHLY' ? 31 : rule.freq === 'WEEKLY' ? 7 : 1
  // Plain weekdays occur at most 53 times a year, 5 a month, once a week; an ordinal once.
  const weeks = rule.freq === 'YEARLY' ? 53 : rule.freq === 'MONTHLY' ? 5 : 1
  const byday = rule.byday?.reduce((n, d) => n + (d.n === undefined ? weeks : 1), 0)
  const dayFilter = rule.bymonthday === undefined && rule.byyearday === undefined && rule.byweekno === undefined ? byday : undefined
  return Math.min(periodDays, dayFilter ?? periodDays) * times
}

/** A rule without BY* parts and with a fixed period: its COUNT-th occurrence is computed. */
function simpleLastWall(s: RecurringSchedule): number | undefined {
  const r = s.rule
  const period = fixedPeriodMs(r)
  const byParts = [r.bysetpos, r.bymonth, r.bymonthday, r.byyearday, r.byweekno, r.byday, r.byhour, r.byminute, r.bysecond]
  if (r.count === undefined || period === undefined || byParts.some((p) => p !== undefined)) return undefined
  const last = s.startWallMs + (r.count - 1) * period
  return s.rule.untilWallMs !== undefined && last > s.rule.untilWallMs ? undefined : last
}


/**
 * Expands what validation must know within the budget: a COUNT rule's last occurrence
 * (stored as lastWallMs), else the first occurrence. A rule that never occurs, or whose
 * expansion exhausts the budget, is refused; the message says which.
 */
function checkExpansion(s: RecurringSchedule, shared?: ExpansionBudget): string | undefined {
  const candidates = candidatesPerPeriod(s.rule)
  if (candidates > MAX_CANDIDATES_PER_PERIOD) {
    return `the rule builds ${candidates.toLocaleString('en-US')} candidate times per FREQ=${s.rule.freq} period; expected at most ${MAX_CANDIDATES_PER_PERIOD.toLocaleString('en-US')} (use a shorter FREQ or fewer BYHOUR/BYMINUTE/BYSECOND values)`
  }
  const steps = Math.min(MAX_RRULE_STEPS, shared?.left ?? Infinity)
  const budget = newBudget(steps)
  const found = expandForValidation(s, budget)
  if (shared !== undefined) shared.left -= steps - Math.max(0, budget.left)
  if (budget.exhausted) {
    const what = s.rule.count !== undefined ? `its COUNT=${s.rule.count} occurrences take` : found === undefined ? 'finding its first occurrence takes' : 'its expansion takes'
    const limit = steps < MAX_RRULE_STEPS
      ? `more than the ${MAX_TEMPLATE_RRULE_STEPS.toLocaleString('en-US')} expansion steps all the rules of a template may take together`
      : `more than ${MAX_RRULE_STEPS.toLocaleString('en-US')} expansion steps`
    return `${what} ${limit}; the rule occurs too rarely for its FREQ (or not at all): use a longer FREQ, fewer BY* parts or a lower COUNT`
  }
  if (found === undefined) return 'the rule never occurs (no date satisfies its BY* parts together; check BYMONTH, BYMONTHDAY, BYYEARDAY, BYDAY, INTERVAL, COUNT and UNTIL)'
  return undefined
}

/** A COUNT rule's last wall time (stored as lastWallMs), else the first occurrence instant. */
function expandForValidation(s: RecurringSchedule, budget: ExpansionBudget): number | undefined {
  let found: number | undefined
  if (s.rule.count !== undefined) {
    found = simpleLastWall(s)
    if (found === undefined) {
      expand(s, toRRule(s, -Infinity, s.rule.untilWallMs), budget, (rr) => rr.all((d: Date) => {
        spend(budget)
        found = d.getTime()
        return true
      }))
    }
    if (found !== undefined && !budget.exhausted) s.lastWallMs = found
    return found
  }
  return collect(s, s.startMs - DAY, END_OF_TIME_MS + 1, 1, budget)[0]
}

function parseParts(parts: Map<string, string>): { rule: RecurrenceRule; untilInstant?: DateTimeValue } | string {
  const KNOWN = ['FREQ', 'INTERVAL', 'COUNT', 'UNTIL', 'WKST', 'BYSETPOS', 'BYMONTH', 'BYMONTHDAY', 'BYYEARDAY', 'BYWEEKNO', 'BYDAY', 'BYHOUR', 'BYMINUTE', 'BYSECOND']
  for (const key of parts.keys()) {
    if (!KNOWN.includes(key)) return `${key} is not a supported RRULE part; expected ${KNOWN.join(', ')}, DTSTART or TZID`
  }
  const freqText = parts.get('FREQ')
  if (freqText === undefined) return `FREQ is missing; expected e.g. ${EXAMPLE}`
  const freq = FREQUENCIES.find((f) => f === freqText)
  if (freq === undefined) return `FREQ=${freqText} is not a frequency; expected one of ${FREQUENCIES.join(', ')}`
  const rule: RecurrenceRule = { freq, interval: 1, wkst: 0 }
  const intervalText = parts.get('INTERVAL')
  if (intervalText !== undefined) {
    if (!/^\d{1,9}$/.test(intervalText) || Number(intervalText) < 1) return `INTERVAL=${intervalText}; expected a positive integer`
    rule.interval = Number(intervalText)
  }
  const countText = parts.get('COUNT')
  if (countText !== undefined) {
    if (!/^\d{1,9}$/.test(countText) || Number(countText) < 1 || Number(countText) > MAX_COUNT) return `COUNT=${countText}; expected an integer from 1 to ${MAX_COUNT}`
    rule.count = Number(countText)
  }
  let untilInstant: DateTimeValue | undefined
  const untilText = parts.get('UNTIL')
  if (untilText !== undefined) {
    if (countText !== undefined) return 'COUNT and UNTIL are both given; expected at most one of them (RFC 5545)'
    const u = parseDateTime(untilText, 'UNTIL')
    if (typeof u === 'string') return u
    untilInstant = u
  }
  const wkst = parts.get('WKST')
  if (wkst !== undefined) {
    const i = WEEKDAYS.indexOf(wkst as (typeof WEEKDAYS)[number])
    if (i < 0) return `WKST=${wkst}; expected one of ${WEEKDAYS.join(', ')}`
    rule.wkst = i
  }
  const lists: [key: string, field: 'bysetpos' | 'bymonth' | 'bymonthday' | 'byyearday' | 'byweekno' | 'byhour' | 'byminute' | 'bysecond', min: number, max: number, neg: boolean][] = [
    ['BYSETPOS', 'bysetpos', 1, 366, true],
    ['BYMONTH', 'bymonth', 1, 12, false],
    ['BYMONTHDAY', 'bymonthday', 1, 31, true],
    ['BYYEARDAY', 'byyearday', 1, 366, true],
    ['BYWEEKNO', 'byweekno', 1, 53, true],
    ['BYHOUR', 'byhour', 0, 23, false],
    ['BYMINUTE', 'byminute', 0, 59, false],
    ['BYSECOND', 'bysecond', 0, 59, false],
  ]
  for (const [key, field, min, max, neg] of lists) {
    const v = parts.get(key)
    if (v === undefined) continue
    const r = intList(key, v, min, max, neg)
    if (typeof r === 'string') return r
    rule[field] = r
  }
  const byday = parts.get('BYDAY')
  if (byday !== undefined) {
    const days: { weekday: number; n?: number }[] = []
    for (const part of byday.split(',')) {
      const m = /^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$/.exec(part)
      if (!m) return `BYDAY: got "${part}"; expected a weekday MO, TU, WE, TH, FR, SA or SU, optionally with an ordinal such as 1MO or -1FR`
      const weekday = WEEKDAYS.indexOf(m[2] as (typeof WEEKDAYS)[number])
      if (m[1] !== undefined) {
        const n = Number(m[1])
        if (freq !== 'MONTHLY' && freq !== 'YEARLY') return `BYDAY=${part}: an ordinal weekday needs FREQ=MONTHLY or FREQ=YEARLY; expected a plain weekday such as "MO" with FREQ=${freq}`
        if (n === 0 || Math.abs(n) > (freq === 'MONTHLY' ? 5 : 53)) return `BYDAY=${part}: ordinal ${n} is out of range; expected ±1..${freq === 'MONTHLY' ? 5 : 53}`
        if (freq === 'YEARLY' && rule.byweekno !== undefined) return `BYDAY=${part}: an ordinal weekday cannot be combined with BYWEEKNO (RFC 5545)`
        days.push({ weekday, n })
      } else {
        days.push({ weekday })
      }
    }
    rule.byday = days
  }
  if (rule.byweekno !== undefined && freq !== 'YEARLY') return `BYWEEKNO needs FREQ=YEARLY; got FREQ=${freq}`
  if (rule.byyearday !== undefined && (freq === 'DAILY' || freq === 'WEEKLY' || freq === 'MONTHLY')) return `BYYEARDAY cannot be used with FREQ=${freq}; expected FREQ=YEARLY or a sub-daily frequency`
  if (rule.bymonthday !== undefined && freq === 'WEEKLY') return 'BYMONTHDAY cannot be used with FREQ=WEEKLY (RFC 5545); expected BYDAY'
  if (rule.bysetpos !== undefined && !['bymonth', 'bymonthday', 'byyearday', 'byweekno', 'byday', 'byhour', 'byminute', 'bysecond'].some((k) => rule[k as keyof RecurrenceRule] !== undefined)) {
    return 'BYSETPOS needs another BY* part to select from; expected e.g. "RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"'
  }
  if (rule.bymonthday !== undefined && rule.bymonth !== undefined) {
    const possible = rule.bymonth.some((mo) => rule.bymonthday!.some((d) => Math.abs(d) <= [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][mo - 1]!))
    if (!possible) return `BYMONTH=${rule.bymonth.join(',')} has no day BYMONTHDAY=${rule.bymonthday.join(',')}; the rule would never occur`
  }
  if (rule.byweekno !== undefined && rule.bymonth !== undefined && !weeknoPossible(rule.byweekno, rule.bymonth)) {
    return `BYWEEKNO=${rule.byweekno.join(',')} has no day in BYMONTH=${rule.bymonth.join(',')}; the rule would never occur`
  }
  if (rule.byyearday !== undefined && (rule.bymonth !== undefined || rule.bymonthday !== undefined) && !yeardayPossible(rule)) {
    const with_ = [rule.bymonth && `BYMONTH=${rule.bymonth.join(',')}`, rule.bymonthday && `BYMONTHDAY=${rule.bymonthday.join(',')}`].filter(Boolean).join(' and ')
    return `no day BYYEARDAY=${rule.byyearday.join(',')} is in ${with_}, in any year; the rule would never occur`
  }
  if (rule.bysetpos !== undefined) {
    // rrule.js walks to year 9999 when BYSETPOS can never select, so reject that up front.
    const most = candidatesPerPeriod(rule)
    if (rule.bysetpos.every((p) => Math.abs(p) > most)) {
      return `BYSETPOS=${rule.bysetpos.join(',')} can never select anything: each FREQ=${freq} period has at most ${most} candidate${most === 1 ? '' : 's'}`
    }
  }
  return { rule, untilInstant }
}

/** The weekdays (0 = Monday) a DAILY rule with BYDAY can land on from DTSTART, else undefined. */
function dailyWeekdays(rule: RecurrenceRule, startWallMs: number): number[] | undefined {
  if (rule.freq !== 'DAILY' || rule.byday === undefined) return undefined
  const first = (new Date(startWallMs).getUTCDay() + 6) % 7
  const step = gcd(rule.interval % 7, 7) || 7
  return Array.from({ length: 7 / step }, (_, k) => (first + k * step) % 7)
}

/** Whether some week of BYWEEKNO can have a day in BYMONTH. Week n covers at most the year
 *  days 7n − 9 .. 7n + 3 (1-based; below 1 is December before, above the year is January after). */
function weeknoPossible(weeks: number[], months: number[]): boolean {
  const monthOf = (yearDay: number) => (yearDay < 1 ? 12 : yearDay > 365 ? 1 : new Date(Date.UTC(2001, 0, yearDay)).getUTCMonth() + 1)
  return weeks.some((n) => {
    const week = n > 0 ? n : 54 + n
    for (let d = 7 * week - 10; d <= 7 * week + 4; d++) if (months.includes(monthOf(d))) return true
    return false
  })
}

/** Whether some BYYEARDAY day, in a common or a leap year, is in BYMONTH and BYMONTHDAY. */
function yeardayPossible(rule: RecurrenceRule): boolean {
  return [0, 1].some((leap) => {
    const lengths = [31, 28 + leap, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    const total = 365 + leap
    return rule.byyearday!.some((d) => {
      let day = d > 0 ? d : total + 1 + d
      if (day < 1 || day > total) return false
      let month = 0
      while (day > lengths[month]!) day -= lengths[month++]!
      const monthOk = rule.bymonth === undefined || rule.bymonth.includes(month + 1)
      const negative = day - lengths[month]! - 1
      const dayOk = rule.bymonthday === undefined || rule.bymonthday.includes(day) || rule.bymonthday.includes(negative)
      return monthOk && dayOk
    })
  })
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b]
  return a
}

/** rrule.js loops forever on a sub-daily rule whose INTERVAL can never land on an allowed
 *  time of day (e.g. FREQ=SECONDLY;INTERVAL=2;BYSECOND=1 from an even second), so such rules
 *  are rejected here. */
function checkReachable(rule: RecurrenceRule, startWallMs: number): string | undefined {
  const weekdays = dailyWeekdays(rule, startWallMs)
  if (weekdays !== undefined && !rule.byday!.some((d) => weekdays.includes(d.weekday))) {
    const names = weekdays.map((w) => WEEKDAYS[w]).join(',')
    return `FREQ=DAILY;INTERVAL=${rule.interval} from DTSTART lands only on ${names}, never on BYDAY=${rule.byday!.map((d) => WEEKDAYS[d.weekday]).join(',')}; the rule would never occur`
  }
  const unit = rule.freq === 'HOURLY' ? HOUR : rule.freq === 'MINUTELY' ? MINUTE : rule.freq === 'SECONDLY' ? SECOND : undefined
  if (unit === undefined) return undefined
  const perDay = DAY / unit
  const g = gcd(rule.interval % perDay === 0 ? perDay : rule.interval % perDay, perDay)
  const start = new Date(startWallMs)
  const startIndex = Math.floor((startWallMs - Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate())) / unit)
  const all = (n: number) => Array.from({ length: n }, (_, i) => i)
  const hours = rule.byhour ?? all(24)
  const minutes = rule.freq === 'HOURLY' ? [0] : (rule.byminute ?? all(60))
  const seconds = rule.freq === 'SECONDLY' ? (rule.bysecond ?? all(60)) : [0]
  for (const h of hours) for (const m of minutes) for (const s of seconds) {
    const index = rule.freq === 'HOURLY' ? h : rule.freq === 'MINUTELY' ? h * 60 + m : h * 3600 + m * 60 + s
    if ((index - startIndex) % g === 0) return undefined
  }
  return `FREQ=${rule.freq};INTERVAL=${rule.interval} never lands on the allowed BYHOUR/BYMINUTE/BYSECOND values from DTSTART; the rule would never occur`
}

// ---------------------------------------------------------------------------------------------
// Expansion.

/** Fixed period of a frequency in the floating frame, for rebasing DTSTART (no COUNT only). */
function fixedPeriodMs(rule: RecurrenceRule): number | undefined {
  switch (rule.freq) {
    case 'SECONDLY': return SECOND * rule.interval
    case 'MINUTELY': return MINUTE * rule.interval
    case 'HOURLY': return HOUR * rule.interval
    case 'DAILY': return DAY * rule.interval
    case 'WEEKLY': return 7 * DAY * rule.interval
    default: return undefined
  }
}

/** Rough spacing of occurrences, used only to size search windows. */
function typicalSpacingMs(rule: RecurrenceRule): number {
  return fixedPeriodMs(rule) ?? (rule.freq === 'MONTHLY' ? 28 * DAY : 365 * DAY) * rule.interval
}

/** What one expansion may still spend (MAX_RRULE_STEPS); `exhausted` once it ran out. */
export interface ExpansionBudget {
  left: number
  exhausted: boolean
}

export function newBudget(steps: number = MAX_RRULE_STEPS): ExpansionBudget {
  return { left: steps, exhausted: false }
}

/** Thrown from inside rrule when the budget runs out, and caught around the expansion. */
class BudgetExhausted extends Error {}

/** Steps a period costs, by rrule frequency number (YEARLY 0, MONTHLY 1, ...). */
const PERIOD_STEPS: Record<number, number> = { 0: 12, 1: 2 }
/** Candidate times rrule builds per step a period costs beyond its base (the candidates
 *  before the query's window are built but never handed back, so they are charged here). */
const CANDIDATES_PER_STEP = 64

/** Steps one period read of the rule costs (rrule reads the interval about twice a period). */
function periodSteps(rule: RecurrenceRule): number {
  return Math.max(PERIOD_STEPS[FREQUENCIES.indexOf(rule.freq)] ?? 1, Math.ceil(candidatesPerPeriod(rule) / CANDIDATES_PER_STEP))
}

function spend(budget: ExpansionBudget, steps = 1): void {
  budget.left -= steps
  if (budget.left < 0) {
    budget.exhausted = true
    throw new BudgetExhausted('expansion budget exhausted')
  }
}

/**
 * Meters an rrule instance: rrule 2.8.1 reads `options.interval` at every period it advances,
 * and calls `indexOf` on BYHOUR/BYMINUTE/BYSECOND at every probe while it skips to an allowed
 * time (a loop that never ends on some rules, e.g. FREQ=MINUTELY;BYDAY=MO;BYHOUR=5). Each read
 * spends one step; the last one throws BudgetExhausted out of rrule.
 */
function meter(rr: InstanceType<typeof RRule>, budget: ExpansionBudget, weight: number): void {
  const options = rr.options as unknown as Record<string, unknown>
  const interval = options.interval
  Object.defineProperty(options, 'interval', { get: () => { spend(budget, weight); return interval }, configurable: true })
  for (const key of ['byhour', 'byminute', 'bysecond']) {
    const list = options[key]
    if (!Array.isArray(list) || list.length === 0) continue
    const copy = [...(list as number[])]
    Object.defineProperty(copy, 'indexOf', { value: (x: number) => { spend(budget); return Array.prototype.indexOf.call(copy, x) } })
    options[key] = copy
  }
}

/** Runs one metered rrule expansion; false when the budget ran out (what was found stands). */
function expand(s: RecurringSchedule, rr: InstanceType<typeof RRule>, budget: ExpansionBudget, run: (rr: InstanceType<typeof RRule>) => void): boolean {
  if (budget.exhausted) return false
  meter(rr, budget, periodSteps(s.rule))
  try {
    run(rr)
    return true
  } catch (e) {
    if (e instanceof BudgetExhausted) return false
    throw e
  }
}

function toRRule(s: RecurringSchedule, wallFrom: number, untilWall: number | undefined): InstanceType<typeof RRule> {
  const r = s.rule
  let dtstart = s.startWallMs
  // rrule walks from DTSTART on every query. For rules with a fixed period and no COUNT the
  // sequence is invariant under moving DTSTART by whole periods (BY* defaults taken from
  // DTSTART — weekday, time of day — are preserved), so start near the query instead.
  // A COUNT rule whose last occurrence is known is the same rule ending there (UNTIL), so
  // it can be rebased too, and is never walked from DTSTART again.
  const countAsUntil = r.count !== undefined && s.lastWallMs !== undefined
  if (countAsUntil) untilWall = Math.min(untilWall ?? Infinity, s.lastWallMs!)
  const period = fixedPeriodMs(r)
  if (period !== undefined && (r.count === undefined || countAsUntil) && wallFrom > dtstart + period) {
    dtstart += Math.floor((wallFrom - dtstart) / period) * period
  }
  const weekday = (d: { weekday: number; n?: number }): Weekday => {
    const base = [RRule.MO, RRule.TU, RRule.WE, RRule.TH, RRule.FR, RRule.SA, RRule.SU][d.weekday]!
    return d.n === undefined ? base : base.nth(d.n)
  }
  const options: Partial<RRuleOptions> = {
    freq: RRule[r.freq],
    dtstart: new Date(dtstart),
    interval: r.interval,
    wkst: r.wkst,
    tzid: null,
  }
  if (r.count !== undefined && !countAsUntil) options.count = r.count
  if (untilWall !== undefined) options.until = new Date(untilWall)
  if (r.bysetpos) options.bysetpos = r.bysetpos
  if (r.bymonth) options.bymonth = r.bymonth
  if (r.bymonthday) options.bymonthday = r.bymonthday
  if (r.byyearday) options.byyearday = r.byyearday
  if (r.byweekno) options.byweekno = r.byweekno
  if (r.byday) options.byweekday = r.byday.map(weekday)
  if (r.byhour) options.byhour = r.byhour
  if (r.byminute) options.byminute = r.byminute
  if (r.bysecond) options.bysecond = r.bysecond
  return new RRule(options, true)
}

/** The first index i with list[i] >= t (list ascending). */
function lowerBound(list: readonly number[], t: number): number {
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
function collect(s: RecurringSchedule, fromMs: number, toMs: number, limit: number, budget: ExpansionBudget = newBudget(), next?: { wallMs?: number }): number[] {
  const found: number[] = []
  if (limit <= 0 || !(toMs > fromMs)) return found
  const zone = s.timeZone
  const untilMs = s.rule.untilMs
  const hi = Math.min(toMs, untilMs === undefined ? Infinity : untilMs + 1, END_OF_TIME_MS + 1)
  const lo = Math.max(fromMs, s.startMs - DAY)
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
  if (s.rule.untilWallMs !== undefined) end = Math.min(end, s.rule.untilWallMs + 15 * HOUR)
  if (s.lastWallMs !== undefined) end = Math.min(end, s.lastWallMs + 15 * HOUR)
  return end
}

function clampLimit(limit: number): number {
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

/** The first `count` occurrences strictly after `afterMs` (count capped at MAX_OCCURRENCES_PER_QUERY). */
export function nextOccurrences(schedule: Schedule, afterMs: number, count: number): number[] {
  const n = clampLimit(count)
  if (schedule.kind === 'immediate') return n > 0 && schedule.atMs > afterMs ? [schedule.atMs] : []
  const out: number[] = []
  if (n === 0) return out
  const end = endBoundMs(schedule)
  let lo = Math.max(afterMs + 1, schedule.startMs - DAY)
  let span = typicalSpacingMs(schedule.rule) * (n + 2)
  const budget = newBudget()
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
function latestOccurrences(schedule: Schedule, fromMs: number, toMs: number, k: number, keep: (t: number) => boolean): number[] {
  const out: number[] = []
  if (k <= 0 || !(toMs > fromMs)) return out
  if (schedule.kind === 'immediate') {
    const t = schedule.atMs
    return t >= fromMs && t < toMs && keep(t) ? [t] : []
  }
  const floor = Math.max(fromMs, schedule.startMs - DAY)
  let hi = toMs
  let span = typicalSpacingMs(schedule.rule) * 4
  let scanned = 0
  const budget = newBudget()
  while (out.length < k && hi > floor && scanned < MAX_SCAN_PER_QUERY && !budget.exhausted) {
    const lo = Math.max(floor, hi - span)
    const chunk = collect(schedule, lo, hi, MAX_OCCURRENCES_PER_QUERY, budget)
    if (chunk.length === MAX_OCCURRENCES_PER_QUERY && span > SECOND) {
      span = Math.max(SECOND, Math.floor(span / 4)) // too dense to see the whole chunk: narrow it
      continue
    }
    scanned += chunk.length
    for (let i = chunk.length - 1; i >= 0 && out.length < k; i--) if (keep(chunk[i]!)) out.push(chunk[i]!)
    hi = lo
    span *= 2
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Exceptions.

/** One Courier `exceptionRules[]` entry. `duration` is in MINUTES (see the file comment). */
export interface ExceptionWindow {
  rrule: string
  duration: number
}

/** An exception rule with its origin: the job's own `exceptionRules` or a coordinator-managed
 *  global exception the job opted into. Per-entry start/zone override the compile options
 *  (a global exception's default start is its own creation time, not the job's). */
export interface ExceptionRuleInput extends ExceptionWindow {
  source?: 'job' | 'global'
  id?: string
  defaultStartMs?: number
  timeZone?: string
}

export interface CompiledException {
  source: 'job' | 'global'
  /** Position among the entries of the same source (for 'job': the index in exceptionRules). */
  ruleIndex: number
  id?: string
  durationMs: number
  schedule: RecurringSchedule
}
export type CompiledExceptions = readonly CompiledException[]

export interface Exclusion {
  source: 'job' | 'global'
  ruleIndex: number
  id?: string
  windowStartMs: number
  windowEndMs: number
}

export type CompileExceptionsResult = { ok: true; windows: CompiledExceptions } | { ok: false; message: string; index: number; field: 'rrule' | 'duration' }

/** Compile exception rules from one or more sources (`source` defaults to 'job'). On error,
 *  `index` is the position in `rules`. */
export function compileExceptions(rules: readonly ExceptionRuleInput[], opts: ScheduleOptions): CompileExceptionsResult {
  const windows: CompiledException[] = []
  const perSource = { job: 0, global: 0 }
  for (const [index, entry] of rules.entries()) {
    const source = entry.source ?? 'job'
    const ruleIndex = perSource[source]++
    const label = source === 'job' ? `exceptionRules[${ruleIndex}]` : `globalExceptions[${JSON.stringify(entry.id ?? String(ruleIndex))}]`
    const d = entry.duration
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 1 || d > MAX_EXCEPTION_DURATION_MINUTES) {
      return { ok: false, index, field: 'duration', message: `${label}.duration: got ${JSON.stringify(d)}; expected a whole number of minutes from 1 to ${MAX_EXCEPTION_DURATION_MINUTES}` }
    }
    const parsed = parseRule(entry.rrule, { defaultStartMs: entry.defaultStartMs ?? opts.defaultStartMs, timeZone: entry.timeZone ?? opts.timeZone, templateBudget: opts.templateBudget }, `${label}.rrule`, false)
    if (!parsed.ok) return { ok: false, index, field: 'rrule', message: parsed.message }
    if (parsed.schedule.kind !== 'recurring') return { ok: false, index, field: 'rrule', message: `${label}.rrule: expected a recurrence rule` }
    const compiled: CompiledException = { source, ruleIndex, durationMs: d * MINUTE, schedule: parsed.schedule }
    if (entry.id !== undefined) compiled.id = entry.id
    windows.push(compiled)
  }
  return { ok: true, windows }
}

/** The exception window containing `atMs` (s ≤ atMs < s + duration), if any. When several
 *  contain it, the first rule in list order wins, and within a rule the earliest start. */
export function exclusionFor(compiled: CompiledExceptions, atMs: number): Exclusion | undefined {
  for (const w of compiled) {
    const start = collect(w.schedule, atMs - w.durationMs + 1, atMs + 1, 1)[0]
    if (start !== undefined) return exclusionOf(w, start)
  }
  return undefined
}

function exclusionOf(w: CompiledException, start: number): Exclusion {
  const hit: Exclusion = { source: w.source, ruleIndex: w.ruleIndex, windowStartMs: start, windowEndMs: start + w.durationMs }
  if (w.id !== undefined) hit.id = w.id
  return hit
}


/** Window starts an exclusion check over a range lists at most (denser: per instant). */
export const MAX_INDEXED_STARTS = 1000

/**
 * exclusionFor for many instants in [fromMs, toMs]: each window's starts that can cover the
 * range are expanded once (one budgeted query per window), then each check is a binary
 * search. A window expected to start more than MAX_INDEXED_STARTS times in the range, or whose
 * expansion ran out of budget or hit MAX_OCCURRENCES_PER_QUERY, is checked per instant, as
 * exclusionFor does. Same answers as exclusionFor.
 */

export function exclusionChecker(compiled: CompiledExceptions, fromMs: number, toMs: number): (atMs: number) => Exclusion | undefined {
  const entries = distinctWindows(compiled).map((w) => indexWindow(w, fromMs, toMs))
  return (atMs) => {
    for (const e of entries) {
      const start = atMs >= fromMs && atMs <= toMs && e.starts !== undefined ? indexedStart(e, atMs) : queriedStart(e, atMs)
      if (start !== undefined) return exclusionOf(e.w, start)
    }
    return undefined
  }
}

interface IndexedWindow {
  w: CompiledException
  /** Every start that can cover [fromMs, toMs], or undefined when not listed (see above). */
  starts?: number[]
  /** Per-instant queries: no start in [gapFrom, gapTo) (learned from the last query). */
  gapFrom: number
  gapTo: number
}

/** A window with the same schedule and duration as an earlier one can never be the first hit. */
function distinctWindows(compiled: CompiledExceptions): CompiledException[] {
  const seen = new Map<RecurringSchedule, Set<number>>()
  return compiled.filter((w) => {
    const durations = seen.get(w.schedule) ?? new Set<number>()
    seen.set(w.schedule, durations)
    if (durations.has(w.durationMs)) return false
    durations.add(w.durationMs)
    return true
  })
}

function indexWindow(w: CompiledException, fromMs: number, toMs: number): IndexedWindow {
  const e: IndexedWindow = { w, gapFrom: 0, gapTo: 0 }
  if ((toMs - fromMs + w.durationMs) / typicalSpacingMs(w.schedule.rule) > MAX_INDEXED_STARTS) return e // dense
  const budget = newBudget()
  const starts = collect(w.schedule, fromMs - w.durationMs + 1, toMs + 1, MAX_OCCURRENCES_PER_QUERY, budget)
  if (!budget.exhausted && starts.length < MAX_OCCURRENCES_PER_QUERY) e.starts = starts
  return e
}

function indexedStart(e: IndexedWindow, atMs: number): number | undefined {
  const start = e.starts![lowerBound(e.starts!, atMs - e.w.durationMs + 1)]
  return start !== undefined && start <= atMs ? start : undefined
}

/** Wall time and instant differ by at most this much more at one time than at another. */
const MAX_OFFSET_SWING_MS = 3 * HOUR

/** The earliest start in (atMs − duration, atMs], by query; a query that finds none says how
 *  far the next start is, so the following instants of a sparse rule need no query. */
function queriedStart(e: IndexedWindow, atMs: number): number | undefined {
  const from = atMs - e.w.durationMs + 1
  if (from >= e.gapFrom && atMs < e.gapTo) return undefined
  const next: { wallMs?: number } = {}
  const start = collect(e.w.schedule, from, atMs + 1, 1, newBudget(), next)[0]
  if (start === undefined) {
    e.gapFrom = from
    e.gapTo = next.wallMs === undefined ? atMs + 1 : Math.max(atMs + 1, next.wallMs - MAX_OFFSET_SWING_MS)
  }
  return start
}

export interface PlannedOccurrence {
  at: number
  excluded?: Exclusion
}

/** The next `count` occurrences after `afterMs`, each marked with the window excluding it
 *  (for `chorus job next ID --count N`). Excluded occurrences are listed, not skipped. */
export function planOccurrences(schedule: Schedule, exceptions: CompiledExceptions, afterMs: number, count: number): PlannedOccurrence[] {
  const list = nextOccurrences(schedule, afterMs, count)
  const excludedAt = exclusionChecker(exceptions, list[0] ?? afterMs, list.at(-1) ?? afterMs)
  return list.map((at) => {
    const excluded = excludedAt(at)
    return excluded === undefined ? { at } : { at, excluded }
  })
}

/**
 * When an agent should next wake up: the first occurrence after `afterMs` that no exception
 * window excludes, or undefined if there is none. Excluded occurrences are skipped by jumping
 * to the end of their window; after MAX_OCCURRENCES_PER_QUERY such jumps the current
 * candidate is returned anyway (waking early is harmless: dueOccurrences decides).
 */
export function nextWakeAfter(schedule: Schedule, exceptions: CompiledExceptions, afterMs: number): number | undefined {
  let cursor = afterMs
  for (let i = 0; i < MAX_OCCURRENCES_PER_QUERY; i++) {
    const next = nextOccurrences(schedule, cursor, 1)[0]
    if (next === undefined) return undefined
    const ex = exclusionFor(exceptions, next)
    if (ex === undefined || i === MAX_OCCURRENCES_PER_QUERY - 1) return next
    cursor = Math.max(next, ex.windowEndMs - 1)
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// Missed occurrences.

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
export const DEFAULT_MISSED_POLICY: MissedPolicy = { kind: 'runOnceWithin', windowMs: HOUR }

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
  const notExcluded = (t: number) => excludedAt(t) === undefined

  // What to run: the latest non-excluded occurrence(s) the policy allows.
  let runSet: number[]
  switch (policy.kind) {
    case 'skip':
      runSet = latestOccurrences(schedule, Math.max(from, nowMs - ON_TIME_TOLERANCE_MS), to, 1, notExcluded)
      break
    case 'runOnceWithin': {
      const windowMs = Math.max(ON_TIME_TOLERANCE_MS, Number.isFinite(policy.windowMs) ? policy.windowMs : 0)
      runSet = latestOccurrences(schedule, Math.max(from, nowMs - windowMs), to, 1, notExcluded)
      break
    }
    case 'catchUp': {
      const max = Math.max(1, Math.min(Number.isFinite(policy.max) ? Math.floor(policy.max) : 1, MAX_OCCURRENCES_PER_QUERY))
      runSet = latestOccurrences(schedule, from, to, max, notExcluded)
      break
    }
  }
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
