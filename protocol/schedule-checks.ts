// Which rules are refused before they run: combinations of BY* parts no date satisfies, sub-daily
// or DAILY rules whose INTERVAL never lands on an allowed time or weekday (rrule.js would loop
// for ever on some), and rules whose expansion exhausts its budget of rrule steps
// (MAX_RRULE_STEPS, shared across a template by MAX_TEMPLATE_RRULE_STEPS). Each check returns
// the message saying what is wrong and what to change, or undefined.
import {
  DAY_MS, END_OF_TIME_MS, HOUR_MS, MAX_CANDIDATES_PER_PERIOD, MAX_RRULE_STEPS, MAX_TEMPLATE_RRULE_STEPS, MINUTE_MS, newBudget, SECOND_MS, WEEKDAYS,
  type ExpansionBudget, type RecurrenceRule, type RecurringSchedule,
} from './schedule-bounds.js'
import { collect } from './schedule-expand.js'
import { candidatesPerPeriod, expand, fixedPeriodMs, spend, toRRule } from './schedule-rrule.js'

/** Days in each month of a leap year (January first): the most a BYMONTHDAY can reach. */
const MONTH_DAYS_MOST = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

/** Combinations of BY* parts RFC 5545 forbids, or that no date satisfies in any year. */
export function checkCombinations(rule: RecurrenceRule): string | undefined {
  if (rule.byweekno !== undefined && rule.freq !== 'YEARLY') return `BYWEEKNO needs FREQ=YEARLY; got FREQ=${rule.freq}`
  if (rule.byyearday !== undefined && (rule.freq === 'DAILY' || rule.freq === 'WEEKLY' || rule.freq === 'MONTHLY')) return `BYYEARDAY cannot be used with FREQ=${rule.freq}; expected FREQ=YEARLY or a sub-daily frequency`
  if (rule.bymonthday !== undefined && rule.freq === 'WEEKLY') return 'BYMONTHDAY cannot be used with FREQ=WEEKLY (RFC 5545); expected BYDAY'
  if (rule.bysetpos !== undefined && !['bymonth', 'bymonthday', 'byyearday', 'byweekno', 'byday', 'byhour', 'byminute', 'bysecond'].some((k) => rule[k as keyof RecurrenceRule] !== undefined)) {
    return 'BYSETPOS needs another BY* part to select from; expected e.g. "RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"'
  }
  if (rule.bymonthday !== undefined && rule.bymonth !== undefined) {
    const possible = rule.bymonth.some((mo) => rule.bymonthday!.some((d) => Math.abs(d) <= MONTH_DAYS_MOST[mo - 1]!))
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
      return `BYSETPOS=${rule.bysetpos.join(',')} can never select anything: each FREQ=${rule.freq} period has at most ${most} candidate${most === 1 ? '' : 's'}`
    }
  }
  return undefined
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
export function checkReachable(rule: RecurrenceRule, startWallMs: number): string | undefined {
  const weekdays = dailyWeekdays(rule, startWallMs)
  if (weekdays !== undefined && !rule.byday!.some((d) => weekdays.includes(d.weekday))) {
    const names = weekdays.map((w) => WEEKDAYS[w]).join(',')
    return `FREQ=DAILY;INTERVAL=${rule.interval} from DTSTART lands only on ${names}, never on BYDAY=${rule.byday!.map((d) => WEEKDAYS[d.weekday]).join(',')}; the rule would never occur`
  }
  const unit = rule.freq === 'HOURLY' ? HOUR_MS : rule.freq === 'MINUTELY' ? MINUTE_MS : rule.freq === 'SECONDLY' ? SECOND_MS : undefined
  if (unit === undefined) return undefined
  const perDay = DAY_MS / unit
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
export function checkExpansion(s: RecurringSchedule, shared?: ExpansionBudget): string | undefined {
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
  return collect(s, s.startMs - DAY_MS, END_OF_TIME_MS + 1, 1, budget)[0]
}
