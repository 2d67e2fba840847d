// Parsing a `scheduleRule` or an exception's `rrule` into a Schedule (the forms accepted are
// listed in protocol/schedule.ts): RFC 5545 lines, Courier's DTSTART inside the RRULE, the
// time zone, every RRULE part with its range; then the checks of schedule-checks.ts, which
// refuse a rule that never occurs or exhausts its budget. Errors name what is wrong and what is
// expected. Parses are cached (MAX_CACHED_RULES), charged to the template's budget as if new.
import {
  DAY_MS, FREQUENCIES, MAX_CACHED_RULES, MAX_COUNT, MAX_RRULE_STEPS, MAX_RULE_CHARS, MIN_RULE_YEAR, newBudget, SECOND_MS, WEEKDAYS,
  type ParseScheduleResult, type RecurrenceRule, type RecurringSchedule, type ScheduleOptions,
} from './schedule-bounds.js'
import { checkCombinations, checkExpansion, checkReachable } from './schedule-checks.js'
import { canonicalTimeZone, instantToWall, wallToInstant } from './schedule-zones.js'

const EXAMPLE = '"RRULE:FREQ=DAILY;INTERVAL=1"'
const RRULE_PREFIX = 'RRULE:'
/** Characters of an unsupported line an error message echoes when the line has no name. */
const MAX_ECHOED_LINE_CHARS = 20

type DateTimeValue = { wallMs: number; utc: boolean; dateOnly: boolean }

function parseDateTime(value: string, what: string): DateTimeValue | string {
  const m = /^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z)?)?$/.exec(value)
  if (!m) return `${what}: got "${value}"; expected yyyymmdd, yyyymmddThhmmss or yyyymmddThhmmssZ, e.g. "20230620" or "20230620T090000Z"`
  const [y, mo, d, h, mi, s] = [m[1], m[2], m[3], m[4] ?? '0', m[5] ?? '0', m[6] ?? '0'].map(Number) as [number, number, number, number, number, number]
  const wallMs = Date.UTC(y, mo - 1, d, h, mi, s)
  const back = new Date(wallMs)
  if (y < MIN_RULE_YEAR || back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) {
    return `${what}: "${value}" is not a valid date-time; expected a real calendar date from ${MIN_RULE_YEAR} on, hours 00-23, minutes and seconds 00-59`
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

/** The RFC 5545 lines of a rule: its one RRULE body and its DTSTART line, if any. */
interface RuleLines {
  rruleBody: string
  dtstart?: DateTimeValue
  dtstartZone?: string
}

/** The RRULE body split into KEY=VALUE parts (values upper-cased), with DTSTART and TZID taken out. */
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

/** A parse and the steps its expansion spent; reused only when at least those steps are left,
 *  so a cached answer is always the answer a fresh parse would give. */
const ruleCache = new Map<string, { result: ParseScheduleResult; steps: number }>()

function ruleKey(text: unknown, opts: ScheduleOptions, allowImmediate: boolean): string | undefined {
  if (typeof text !== 'string' || text.length > MAX_RULE_CHARS) return undefined
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
  if (trimmed.length > MAX_RULE_CHARS) return fail(`the rule is ${trimmed.length} characters long; expected at most ${MAX_RULE_CHARS}`)
  if (trimmed.toLowerCase() === 'immediate') {
    if (!allowImmediate) return fail(`"immediate" is not a recurrence; expected a rule such as ${EXAMPLE}`)
    return { ok: true, schedule: { kind: 'immediate', atMs: opts.defaultStartMs } }
  }
  if (trimmed === '') return fail(`the rule is empty; expected ${allowImmediate ? '"immediate" or ' : ''}a rule such as ${EXAMPLE}`)
  const lines = readLines(trimmed, allowImmediate)
  if (typeof lines === 'string') return fail(lines)
  const raw = splitRule(lines.rruleBody, lines.dtstart)
  if (typeof raw === 'string') return fail(raw)
  const zone = ruleZone(lines, raw, opts)
  if (zone.message !== undefined) return fail(zone.message)
  const parsed = parseParts(raw.parts)
  if (typeof parsed === 'string') return fail(parsed)
  const schedule = recurring(zone.zone, raw.dtstart, parsed, opts, trimmed)
  const problem = checkSchedule(schedule, opts)
  return problem === undefined ? { ok: true, schedule } : fail(problem)
}

/** Unfolds RFC 5545 continuation lines, then reads the DTSTART and RRULE lines. */
function readLines(trimmed: string, allowImmediate: boolean): RuleLines | string {
  const lines = trimmed.replace(/\r\n/g, '\n').replace(/\n[ \t]/g, '').split('\n').map((l) => l.trim()).filter((l) => l !== '')
  let rruleBody: string | undefined
  let dtstart: DateTimeValue | undefined
  let dtstartZone: string | undefined
  for (const line of lines) {
    const upper = line.toUpperCase()
    if (upper.startsWith(RRULE_PREFIX)) {
      if (rruleBody !== undefined) return 'more than one RRULE line; expected exactly one'
      rruleBody = line.slice(RRULE_PREFIX.length)
    } else if (upper.startsWith('DTSTART')) {
      if (dtstart !== undefined) return 'more than one DTSTART; expected at most one'
      const m = /^DTSTART((?:;[A-Za-z-]+=[^;:]*)*):(.*)$/i.exec(line)
      if (!m) return `cannot read "${line}"; expected e.g. "DTSTART:20250330T023000Z" or "DTSTART;TZID=Europe/Paris:20250330T023000"`
      for (const param of (m[1] ?? '').split(';').filter((p) => p !== '')) {
        const [k = '', v = ''] = param.split('=')
        if (k.toUpperCase() === 'TZID') dtstartZone = v
        else if (k.toUpperCase() === 'VALUE' && (v.toUpperCase() === 'DATE' || v.toUpperCase() === 'DATE-TIME')) continue
        else return `DTSTART parameter "${param}" is not supported; expected TZID=Area/City or VALUE=DATE`
      }
      const dt = parseDateTime((m[2] ?? '').trim(), 'DTSTART')
      if (typeof dt === 'string') return dt
      dtstart = dt
    } else {
      const name = /^([A-Za-z-]+)/.exec(line)?.[1] ?? line.slice(0, MAX_ECHOED_LINE_CHARS)
      if (lines.length === 1 && /^FREQ=/i.test(line)) return `the "RRULE:" prefix is missing; expected e.g. "RRULE:${line}"`
      return `"${name}" is not supported; expected ${allowImmediate ? '"immediate" or ' : ''}an RRULE such as ${EXAMPLE}, optionally after a DTSTART line`
    }
  }
  if (rruleBody === undefined) return `no "RRULE:" line; expected e.g. ${EXAMPLE}`
  const out: RuleLines = { rruleBody }
  if (dtstart !== undefined) out.dtstart = dtstart
  if (dtstartZone !== undefined) out.dtstartZone = dtstartZone
  return out
}

/** Splits the RRULE into KEY=VALUE parts; a DTSTART inside it (Courier's form) joins the DTSTART line's, once. */
function splitRule(rruleBody: string, dtstartLine: DateTimeValue | undefined): RawRule | string {
  const raw: RawRule = { parts: new Map() }
  let dtstart = dtstartLine
  for (const part of rruleBody.split(';')) {
    if (part === '') continue
    const eq = part.indexOf('=')
    if (eq <= 0) return `"${part}" is not KEY=VALUE; expected parts such as "FREQ=DAILY" separated by ";"`
    const key = part.slice(0, eq).trim().toUpperCase()
    const value = part.slice(eq + 1).trim()
    if (key === 'DTSTART') {
      if (dtstart !== undefined) return 'DTSTART is given twice; expected at most one'
      const dt = parseDateTime(value, 'DTSTART')
      if (typeof dt === 'string') return dt
      dtstart = dt
      continue
    }
    if (key === 'TZID') {
      raw.tzid = value
      continue
    }
    if (raw.parts.has(key)) return `${key} is given twice; expected it at most once`
    raw.parts.set(key, value.toUpperCase())
  }
  if (dtstart !== undefined) raw.dtstart = dtstart
  return raw
}

/** Time zone: DTSTART;TZID > TZID= in the rule > opts.timeZone > UTC. */
function ruleZone(lines: RuleLines, raw: RawRule, opts: ScheduleOptions): { zone: string; message?: undefined } | { message: string } {
  const { dtstartZone } = lines
  if (dtstartZone !== undefined && raw.tzid !== undefined && dtstartZone !== raw.tzid) {
    return { message: `DTSTART;TZID=${dtstartZone} and TZID=${raw.tzid} disagree; expected one time zone` }
  }
  const zoneName = dtstartZone ?? raw.tzid ?? opts.timeZone ?? 'UTC'
  // Keep the name as written (ICU versions canonicalise aliases differently; offsets agree).
  if (canonicalTimeZone(zoneName) === undefined) return { message: `unknown time zone "${zoneName}"; expected an IANA zone name such as "Europe/Paris" or "UTC"` }
  if (raw.dtstart?.utc && (dtstartZone !== undefined)) return { message: 'DTSTART has both TZID and a trailing "Z"; expected one of them' }
  return { zone: zoneName }
}

/** The schedule of a parsed rule: its start as a wall time and an instant, UNTIL in the right frame. */
function recurring(zone: string, dtstart: DateTimeValue | undefined, parsed: ParsedParts, opts: ScheduleOptions, text: string): RecurringSchedule {
  let startMs: number
  let startWallMs: number
  if (dtstart === undefined) {
    startMs = Math.ceil(opts.defaultStartMs / SECOND_MS) * SECOND_MS
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
    else parsed.rule.untilWallMs = parsed.untilInstant.dateOnly ? parsed.untilInstant.wallMs + DAY_MS - SECOND_MS : parsed.untilInstant.wallMs
  }
  return { kind: 'recurring', timeZone: zone, startWallMs, startMs, rule: parsed.rule, text }
}

/** A schedule that can never occur from its start, ends before it starts, or exhausts its budget, is refused. */
function checkSchedule(schedule: RecurringSchedule, opts: ScheduleOptions): string | undefined {
  const reach = checkReachable(schedule.rule, schedule.startWallMs)
  if (reach !== undefined) return reach
  const r = schedule.rule
  if ((r.untilMs !== undefined && r.untilMs < schedule.startMs) || (r.untilWallMs !== undefined && r.untilWallMs < schedule.startWallMs)) {
    return 'UNTIL is before DTSTART, so the rule has no occurrence at all; expected UNTIL after DTSTART'
  }
  return checkExpansion(schedule, opts.templateBudget)
}

type ParsedParts = { rule: RecurrenceRule; untilInstant?: DateTimeValue }

const KNOWN_PARTS = ['FREQ', 'INTERVAL', 'COUNT', 'UNTIL', 'WKST', 'BYSETPOS', 'BYMONTH', 'BYMONTHDAY', 'BYYEARDAY', 'BYWEEKNO', 'BYDAY', 'BYHOUR', 'BYMINUTE', 'BYSECOND']

function parseParts(parts: Map<string, string>): ParsedParts | string {
  for (const key of parts.keys()) {
    if (!KNOWN_PARTS.includes(key)) return `${key} is not a supported RRULE part; expected ${KNOWN_PARTS.join(', ')}, DTSTART or TZID`
  }
  const freqText = parts.get('FREQ')
  if (freqText === undefined) return `FREQ is missing; expected e.g. ${EXAMPLE}`
  const freq = FREQUENCIES.find((f) => f === freqText)
  if (freq === undefined) return `FREQ=${freqText} is not a frequency; expected one of ${FREQUENCIES.join(', ')}`
  const rule: RecurrenceRule = { freq, interval: 1, wkst: 0 }
  const scalars = parseScalars(parts, rule)
  if (typeof scalars === 'string') return scalars
  const problem = parseLists(parts, rule) ?? parseByday(parts.get('BYDAY'), rule) ?? checkCombinations(rule)
  if (problem !== undefined) return problem
  return { rule, untilInstant: scalars.untilInstant }
}

/** INTERVAL, COUNT, UNTIL (returned: its frame depends on the zone) and WKST, into `rule`.
 *  INTERVAL has at most 9 digits; COUNT at most MAX_COUNT. */
function parseScalars(parts: Map<string, string>, rule: RecurrenceRule): { untilInstant?: DateTimeValue } | string {
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
  return { untilInstant }
}

type ListField = 'bysetpos' | 'bymonth' | 'bymonthday' | 'byyearday' | 'byweekno' | 'byhour' | 'byminute' | 'bysecond'
/** The integer-list parts, their range, and whether a negative value counts from the end. */
const LIST_PARTS: readonly [key: string, field: ListField, min: number, max: number, neg: boolean][] = [
  ['BYSETPOS', 'bysetpos', 1, 366, true],
  ['BYMONTH', 'bymonth', 1, 12, false],
  ['BYMONTHDAY', 'bymonthday', 1, 31, true],
  ['BYYEARDAY', 'byyearday', 1, 366, true],
  ['BYWEEKNO', 'byweekno', 1, 53, true],
  ['BYHOUR', 'byhour', 0, 23, false],
  ['BYMINUTE', 'byminute', 0, 59, false],
  ['BYSECOND', 'bysecond', 0, 59, false],
]

function parseLists(parts: Map<string, string>, rule: RecurrenceRule): string | undefined {
  for (const [key, field, min, max, neg] of LIST_PARTS) {
    const v = parts.get(key)
    if (v === undefined) continue
    const r = intList(key, v, min, max, neg)
    if (typeof r === 'string') return r
    rule[field] = r
  }
  return undefined
}

/** BYDAY into `rule` (after the lists: an ordinal weekday cannot go with BYWEEKNO). */
function parseByday(byday: string | undefined, rule: RecurrenceRule): string | undefined {
  if (byday === undefined) return undefined
  const freq = rule.freq
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
  return undefined
}
