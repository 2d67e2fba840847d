// The schedule of a signed job, derived the same way by agents and the coordinator from the
// job definition (template + issuedAt) and its current job state (global exceptions).
import {
  compileExceptions, DEFAULT_MISSED_POLICY, MAX_TEMPLATE_RRULE_STEPS, newBudget, parseScheduleRule,
  type CompiledExceptions, type ExceptionRuleInput, type MissedPolicy, type Schedule,
} from './schedule.js'
import type { JobTemplate } from './template.js'

export interface JobSchedule {
  schedule: Schedule
  exceptions: CompiledExceptions
  policy: MissedPolicy
}

export interface GlobalException {
  id: string
  rrule: string
  duration: number
}

export function missedPolicyOf(template: JobTemplate): MissedPolicy {
  const m = template.chorus?.missed
  if (!m) return DEFAULT_MISSED_POLICY
  if (m.policy === 'skip') return { kind: 'skip' }
  if (m.policy === 'catchUp') return { kind: 'catchUp', max: m.max }
  return { kind: 'runOnceWithin', windowMs: m.withinSeconds * 1000 }
}

/** Whether a job opted into the global exception `id`. */
export function optsInto(template: JobTemplate, id: string): boolean {
  const g = template.chorus?.globalExceptions
  return g === true || (Array.isArray(g) && g.includes(id))
}

/** A failure names the field: `scheduleRule`, `exceptionRules[i].rrule` (or `.duration`), or
 *  `chorus.globalExceptions` for a global exception the job opted into. All the rules share
 *  one expansion budget (MAX_TEMPLATE_RRULE_STEPS), as in validation. */
export function deriveSchedule(template: JobTemplate, issuedAt: number, globals: readonly GlobalException[]): { ok: true; value: JobSchedule } | { ok: false; message: string; path: string } {
  const opts = { defaultStartMs: issuedAt, templateBudget: newBudget(MAX_TEMPLATE_RRULE_STEPS), ...(template.chorus?.timeZone ? { timeZone: template.chorus.timeZone } : {}) }
  const parsed = parseScheduleRule(template.scheduleRule, opts)
  if (!parsed.ok) return { ok: false, message: parsed.message, path: 'scheduleRule' }
  const rules: ExceptionRuleInput[] = [
    ...template.exceptionRules.map((r) => ({ rrule: r.rrule, duration: r.duration, source: 'job' as const })),
    ...globals.map((g) => ({ rrule: g.rrule, duration: g.duration, source: 'global' as const, id: g.id })),
  ]
  const compiled = compileExceptions(rules, opts)
  if (!compiled.ok) {
    const path = compiled.index < template.exceptionRules.length ? `exceptionRules[${compiled.index}].${compiled.field}` : 'chorus.globalExceptions'
    return { ok: false, message: compiled.message, path }
  }
  return { ok: true, value: { schedule: parsed.schedule, exceptions: compiled.windows, policy: missedPolicyOf(template) } }
}

/** A job's schedule, derived once and kept in `cache` by job id (null: the job has no valid schedule). Both cores use it. */
export function cachedSchedule(cache: Map<string, JobSchedule | null>, jobId: string, template: JobTemplate, startAt: number, globals: readonly GlobalException[]): JobSchedule | null {
  let cached = cache.get(jobId)
  if (cached === undefined) {
    const d = deriveSchedule(template, startAt, globals)
    cached = d.ok ? d.value : null
    cache.set(jobId, cached)
  }
  return cached
}
