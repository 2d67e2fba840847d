// The rrule engine behind the occurrence engine, metered: every expansion runs inside a budget
// counted in rrule steps (MAX_RRULE_STEPS), never in time, so a rule that walks for ever (to
// year 9999, or in a loop that never advances) is stopped at the same point on every machine.
// Also the shape of a rule that sizes that work: candidates per period, fixed periods.
//
// rrule's own TZID support is NOT used (see protocol/schedule.ts): rules are expanded in the
// floating frame, with `tzid: null`.
import * as rruleModule from 'rrule'
import type { Options as RRuleOptions, Weekday } from 'rrule'
import {
  CANDIDATES_PER_STEP, DAY_MS, FREQUENCIES, HOUR_MS, MINUTE_MS, PERIOD_STEPS, SECOND_MS,
  type ExpansionBudget, type RecurrenceRule, type RecurringSchedule,
} from './schedule-bounds.js'

// rrule has no `exports` map: plain Node ESM sees its CommonJS build (everything on
// `default`), bundlers see its ESM build (named exports). Take whichever is there.
const { RRule } = ((rruleModule as unknown as { default?: typeof rruleModule }).default ?? rruleModule) as typeof rruleModule

export type RRuleInstance = InstanceType<typeof RRule>

/** Candidate times rrule builds per period of the rule (see MAX_CANDIDATES_PER_PERIOD). */
export function candidatesPerPeriod(rule: RecurrenceRule): number {
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

/** Fixed period of a frequency in the floating frame, for rebasing DTSTART (no COUNT only). */
export function fixedPeriodMs(rule: RecurrenceRule): number | undefined {
  switch (rule.freq) {
    case 'SECONDLY': return SECOND_MS * rule.interval
    case 'MINUTELY': return MINUTE_MS * rule.interval
    case 'HOURLY': return HOUR_MS * rule.interval
    case 'DAILY': return DAY_MS * rule.interval
    case 'WEEKLY': return 7 * DAY_MS * rule.interval
    default: return undefined
  }
}

/** Rough spacing of occurrences, used only to size search windows. */
export function typicalSpacingMs(rule: RecurrenceRule): number {
  return fixedPeriodMs(rule) ?? (rule.freq === 'MONTHLY' ? 28 * DAY_MS : 365 * DAY_MS) * rule.interval
}

/** Thrown from inside rrule when the budget runs out, and caught around the expansion. */
class BudgetExhausted extends Error {}

/** Steps one period read of the rule costs (rrule reads the interval about twice a period). */
function periodSteps(rule: RecurrenceRule): number {
  return Math.max(PERIOD_STEPS[FREQUENCIES.indexOf(rule.freq)] ?? 1, Math.ceil(candidatesPerPeriod(rule) / CANDIDATES_PER_STEP))
}

/** Spends `steps` of `budget`; throws BudgetExhausted (caught by `expand`) once it is overdrawn. */
export function spend(budget: ExpansionBudget, steps = 1): void {
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
function meter(rr: RRuleInstance, budget: ExpansionBudget, weight: number): void {
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
export function expand(s: RecurringSchedule, rr: RRuleInstance, budget: ExpansionBudget, run: (rr: RRuleInstance) => void): boolean {
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

/** The rrule instance of `s` for a query from wall time `wallFrom`, ending at `untilWall`. */
export function toRRule(s: RecurringSchedule, wallFrom: number, untilWall: number | undefined): RRuleInstance {
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

