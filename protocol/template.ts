// Zod schemas for the Chef Courier job template (see ../shared/courier/FORMAT.md).
//
// The schemas validate the wire form (JSON, YAML or TOML, after parsing) and produce a
// normalised form (`JobTemplate`):
//   * `failureBehavior.retryBackoffStrategy.name` (legacy alias) becomes `type`;
//   * `outputFieldRules.*.extractMethod` is matched case-insensitively and spelt `regEx`,
//     `jsonPath` or `content`;
//   * `nodeListType: "node"` (seen in a real server export) becomes `"nodes"`;
//   * defaults are filled in: description "", exceptionRules [], inputs {}, expectedInputs {},
//     outputFieldRules {}, conditions [], negate false, earlyTermination false, filter null,
//     nodeIdentifiers [], retryBackoffStrategy.arguments [], and
//     limits {cores: 0, cpu: 1, timeoutSeconds: 0} (0 means unlimited).
//
// Unknown-key policy: every object whose shape we own is closed. An unknown key is an error
// whose path names the key, with the list of expected keys and a "did you mean" hint, so
// typos such as `retryCont` are caught. There is no allowance list today: no sample carries
// an extra key. Chorus extension fields must be added to the shapes below explicitly. Open
// objects, validated only for size and depth, are:
//   * `command` for interpreters whose command shape is not documented (see commandSchemaFor),
//     and `command.args` for exec-style interpreters;
//   * `filter` at its root (Node Management owns the query language; the OpenAPI examples send
//     free-form placeholder keys). `filter.constraints` and its entries are closed;
//   * the elements of `retryBackoffStrategy.arguments` (numbers, objects or strings are seen).
//
// Error messages say what is wrong and what is expected. Use `templateErrorMap` as the
// per-parse error map (protocol/parse.ts does) so built-in issues get the same wording:
//   target.groups[0].batchSize.type: got "percentage"; expected one of "number", "percent"
//
// The schemas are split by what they decide: template-bounds.ts (every bound, with its unit, and
// the vocabularies), template-messages.ts (the wording of every problem), template-fields.ts (the
// building blocks), template-schedule.ts (When), template-target.ts (Where), template-actions.ts
// (What). This file puts them together into the template and its Chorus extensions, and
// re-exports every public name.
import { z } from 'zod'
import { canonicalTimeZone } from './schedule.js'
import { COUNT_TYPES, MAX_CATCH_UP_OCCURRENCES, MAX_COUNT_VALUE, MAX_DESCRIPTION_CHARS, MAX_EXCEPTION_RULES, MAX_GLOBAL_EXCEPTION_IDS, MAX_IDENTIFIER_CHARS, MAX_NAME_CHARS, MAX_TIME_ZONE_CHARS, MAX_TIMEOUT_SECONDS } from './template-bounds.js'
import { boundedArray, closedObject, int, isObjectLike, oneOf, text, whenObject } from './template-fields.js'
import { describeValue, got } from './template-messages.js'
import { checkSchedules, ExceptionRuleSchema, ScheduleRuleSchema } from './template-schedule.js'
import { TargetSchema } from './template-target.js'
import { ActionsSchema, type ConditionSchema, type ExpectedInputSchema, type OutputFieldRuleSchema, type RetryBackoffStrategySchema } from './template-actions.js'
import type { NodeFilterSchema } from './template-target.js'

export * from './template-bounds.js'
export { describeValue, templateErrorMap } from './template-messages.js'
export { ScheduleRuleSchema, ExceptionRuleSchema } from './template-schedule.js'
export {
  BatchSizeSchema, SuccessCriterionSchema, FilterAttributeSchema, FilterSkillSchema, FilterConstraintsSchema, NodeFilterSchema, GroupSchema, TargetSchema,
} from './template-target.js'
export {
  SkillSchema, InterpreterSchema, ShellCommandSchema, ExecCommandSchema, GenericCommandSchema, commandSchemaFor, ExpectedInputSchema, OutputFieldRuleSchema,
  ConditionSchema, RetryBackoffStrategySchema, FailureBehaviorSchema, DEFAULT_LIMITS, LimitsSchema, StepSchema, ActionsSchema,
  type ShellCommand, type ExecCommand,
} from './template-actions.js'

/** Amount of the Where extensions (quorum), like batchSize. */
const ExtensionAmountSchema = closedObject(
  { type: z.enum(COUNT_TYPES), value: int(1, MAX_COUNT_VALUE) },
  'an amount {type: "number" | "percent", value}',
).superRefine((a, ctx) => {
  if (a.type === 'percent' && a.value > 100) ctx.addIssue({ code: 'custom', path: ['value'], input: a.value, message: `got ${a.value}; expected a percentage from 1 to 100` })
})

export const MISSED_POLICIES = ['skip', 'runOnceWithin', 'catchUp'] as const

/** `chorus.missed`: the policy is checked first, so a wrong one is reported at `policy`. */
const MissedPolicySchema = z
  .looseObject({ policy: oneOf(MISSED_POLICIES) }, { error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected a missed policy object {policy, withinSeconds | max}` : undefined) })
  .pipe(z.discriminatedUnion('policy', [
    closedObject({ policy: z.literal('skip') }, 'a missed policy {policy: "skip"}'),
    closedObject({ policy: z.literal('runOnceWithin'), withinSeconds: int(1, MAX_TIMEOUT_SECONDS) }, 'a missed policy {policy: "runOnceWithin", withinSeconds}'),
    closedObject({ policy: z.literal('catchUp'), max: int(1, MAX_CATCH_UP_OCCURRENCES) }, 'a missed policy {policy: "catchUp", max}'),
  ]))

/**
 * Chorus extensions: fields Courier does not have, kept in one object so a Courier template
 * stays a Courier template. Every field is optional; README §Extensions documents each.
 */
export const ChorusExtensionSchema = closedObject(
  {
    /** IANA time zone for wall-clock recurrences (default UTC, as Courier). */
    timeZone: text({ min: 1, max: MAX_TIME_ZONE_CHARS }).refine((z) => canonicalTimeZone(z) !== undefined, {
      error: (iss) => `got ${describeValue(iss.input)}, an unknown time zone; expected an IANA time zone name such as "Europe/Paris" or "UTC"`,
    }).optional(),
    /** What an agent does with occurrences it missed while down. */
    missed: MissedPolicySchema.optional(),
    /** Opt in to the coordinator's global exception windows: true for all, or a list of ids. */
    globalExceptions: z.union([z.boolean(), boundedArray(text({ min: 1, max: MAX_IDENTIFIER_CHARS }), MAX_GLOBAL_EXCEPTION_IDS, 0, 'a list of global exception ids')]).optional(),
    /** Job-level quorum: no node starts until this many targets acknowledged the job. */
    quorum: ExtensionAmountSchema.optional(),
    /** How long agents wait for the quorum, from the occurrence (default 30 s). */
    quorumTimeoutSeconds: int(1, MAX_TIMEOUT_SECONDS).optional(),
    /** A rolling slot holder that stops answering: keep its slot (safe, may stall) or release it after leaseSeconds. */
    vanishedHolder: z.enum(['keep', 'release']).optional(),
    /** Lease of a rolling slot: renewed while the holder runs; only read with vanishedHolder "release". */
    leaseSeconds: int(1, MAX_TIMEOUT_SECONDS).optional(),
  },
  'a Chorus extension object {timeZone, missed, globalExceptions, quorum, quorumTimeoutSeconds, vanishedHolder, leaseSeconds}',
)
export type ChorusExtension = z.output<typeof ChorusExtensionSchema>

export const JobTemplateSchema = closedObject(
  {
    name: text({ min: 1, max: MAX_NAME_CHARS }),
    description: text({ max: MAX_DESCRIPTION_CHARS }).default(''),
    scheduleRule: ScheduleRuleSchema,
    exceptionRules: boundedArray(ExceptionRuleSchema, MAX_EXCEPTION_RULES, 0, 'an array of exception rules').default([]),
    target: TargetSchema,
    actions: ActionsSchema,
    chorus: ChorusExtensionSchema.optional(),
  },
  'a job template object {name, description, scheduleRule, exceptionRules, target, actions, chorus}',
).superRefine((t, ctx) => checkSchedules(t as Record<string, unknown>, ctx), whenObject)

/** The template-level rule checks alone: zod skips them when a field already failed, so
 *  protocol/parse.ts runs them too, and every problem of a template is reported at once. */
export const TemplateRuleChecks = z.unknown().superRefine((v, ctx) => {
  if (isObjectLike(v)) checkSchedules(v, ctx)
})

export type JobTemplate = z.output<typeof JobTemplateSchema>
export type JobTemplateInput = z.input<typeof JobTemplateSchema>
export type TemplateGroup = JobTemplate['target']['groups'][number]
export type TemplateStep = JobTemplate['actions']['steps'][number]
export type OutputFieldRule = z.output<typeof OutputFieldRuleSchema>
export type ExpectedInput = z.output<typeof ExpectedInputSchema>
export type StepCondition = z.output<typeof ConditionSchema>
export type RetryBackoffStrategy = z.output<typeof RetryBackoffStrategySchema>
export type NodeFilter = z.output<typeof NodeFilterSchema>
