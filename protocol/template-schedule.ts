// When: the template's schedule (`scheduleRule`, `exceptionRules`), judged by the occurrence
// engine (protocol/schedule.ts) in the template's time zone within one expansion budget.
import { z } from 'zod'
import { canonicalTimeZone, MAX_EXCEPTION_DURATION_MINUTES, MAX_TEMPLATE_RRULE_STEPS, newBudget, parseExceptionRule, parseScheduleRule, type ScheduleOptions } from './schedule.js'
import { MAX_RRULE_CHARS, RRULE_PATTERN } from './template-bounds.js'
import { closedObject, int, isObjectLike } from './template-fields.js'
import { describeValue, got } from './template-messages.js'

// ---------------------------------------------------------------------------------------------
// Schedule.

/** What checkSchedules hands to the occurrence engine: a DTSTART line, or an RRULE with FREQ. */
const RULE_SHAPE = { test: (s: string) => /^DTSTART[;:]/.test(s) || (RRULE_PATTERN.test(s) && /(^RRULE:|;)FREQ=/.test(s)) }

const SCHEDULE_EXPECTED = '"immediate" or a recurrence rule starting with "RRULE:" such as "RRULE:FREQ=DAILY;INTERVAL=1"'

export const ScheduleRuleSchema = z
  .string({ error: (iss) => `${got(iss.input)}; expected ${SCHEDULE_EXPECTED}` })
  .max(MAX_RRULE_CHARS)
  .superRefine((s, ctx) => {
    if (s === 'immediate') return
    if (!RULE_SHAPE.test(s)) {
      ctx.addIssue({ code: 'custom', input: s, message: `got ${describeValue(s)}; expected ${SCHEDULE_EXPECTED}` })
      return
    }
    // The occurrence engine judges the rest at the template level (checkSchedules), where the
    // time zone (chorus.timeZone) and the template's shared expansion budget are known.
  })

/**
 * The occurrence engine judges every rule of a template, in its time zone, with one shared
 * expansion budget (MAX_TEMPLATE_RRULE_STEPS): a rule that cannot be read, never occurs or
 * exhausts the budget is refused at `scheduleRule` or `exceptionRules[i].rrule`.
 */
export function checkSchedules(raw: Record<string, unknown>, ctx: z.core.$RefinementCtx<unknown>): void {
  const chorus = raw.chorus
  const zone = isObjectLike(chorus) && typeof chorus.timeZone === 'string' ? chorus.timeZone : undefined
  if (zone !== undefined && canonicalTimeZone(zone) === undefined) return // reported at chorus.timeZone
  const opts: ScheduleOptions = { defaultStartMs: 0, templateBudget: newBudget(MAX_TEMPLATE_RRULE_STEPS), ...(zone !== undefined ? { timeZone: zone } : {}) }
  const report = (path: PropertyKey[], input: string, message: string) =>
    ctx.addIssue({ code: 'custom', path, input, message: `got ${describeValue(input)}: ${message}` })
  const rule = raw.scheduleRule
  if (typeof rule === 'string' && rule !== 'immediate' && RULE_SHAPE.test(rule)) {
    const parsed = parseScheduleRule(rule, opts)
    if (!parsed.ok) report(['scheduleRule'], rule, parsed.message.replace(/^scheduleRule: /, ''))
  }
  const exceptions = Array.isArray(raw.exceptionRules) ? raw.exceptionRules : []
  exceptions.forEach((e: unknown, i) => {
    const text = isObjectLike(e) ? e.rrule : undefined
    if (typeof text !== 'string' || !RRULE_PATTERN.test(text)) return
    const label = `exceptionRules[${i}].rrule`
    const parsed = parseExceptionRule(text, opts, label)
    if (!parsed.ok) report(['exceptionRules', i, 'rrule'], text, parsed.message.replace(`${label}: `, ''))
  })
}

export const ExceptionRuleSchema = closedObject(
  {
    rrule: z
      .string({ error: (iss) => `${got(iss.input)}; expected a recurrence rule starting with "RRULE:"` })
      .max(MAX_RRULE_CHARS)
      .superRefine((s, ctx) => {
        // DTSTART=YYYYMMDD may be embedded in the rule (FORMAT.md §2), so any KEY=VALUE part is accepted.
        if (!RRULE_PATTERN.test(s)) {
          ctx.addIssue({ code: 'custom', input: s, message: `got ${describeValue(s)}; expected a recurrence rule such as "RRULE:FREQ=WEEKLY;INTERVAL=1"` })
        }
      }),
    duration: int(1, MAX_EXCEPTION_DURATION_MINUTES),
  },
  'an exception rule object {rrule, duration}',
)
