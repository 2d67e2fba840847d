// What: the template's actions (`actions.steps`: interpreters and their commands, inputs, output
// rules, conditions, retries, limits), and the check that every placeholder resolves.
import { z } from 'zod'
import { parseJsonPath } from './jsonpath.js'
import { compareVersions, parseVersion } from './version.js'
import {
  ACCESS_MODES, BACKOFF_TYPES, CONDITION_OPERATORS, EXEC_INTERPRETERS, EXTRACT_METHODS, FAILURE_ACTIONS, INTERPRETER_NAME_PATTERN, MAX_BACKOFF_ARGUMENTS, MAX_COMMAND_LINES,
  MAX_CONDITIONS, MAX_DELAY_SECONDS, MAX_DESCRIPTION_CHARS, MAX_FREEFORM_NODES, MAX_IDENTIFIER_CHARS, MAX_INPUT_TYPE_CHARS, MAX_KEY_CHARS, MAX_LIMIT_CORES, MAX_LIMIT_CPU,
  MAX_NAME_CHARS, MAX_RETRY_COUNT, MAX_STEPS, MAX_TIMEOUT_SECONDS, MAX_VALUE_BYTES, MAX_VERSION_CHARS, NAME_PATTERN, PLACEHOLDER, SHELL_INTERPRETER, SHELL_OS_KEYS, SOURCE_TYPES, VERSION_PATTERN,
} from './template-bounds.js'
import { boundedArray, bigText, byteLength, checkFreeform, closedObject, forwardIssues, int, isObjectLike, namedMap, oneOf, openObject, refusePattern, text, whenObject } from './template-fields.js'
import { describeValue, expectOneOf, got, quoteList, templateErrorMap } from './template-messages.js'

// ---------------------------------------------------------------------------------------------
// Actions.

export const SkillSchema = closedObject(
  {
    minVersion: text({ min: 1, max: MAX_VERSION_CHARS, pattern: VERSION_PATTERN, expected: 'a version string such as "1.0.0" or "2" (quote it in YAML)' }),
    maxVersion: text({ min: 1, max: MAX_VERSION_CHARS, pattern: VERSION_PATTERN, expected: 'a version string such as "1.9.99" or "2" (quote it in YAML); maxVersion is mandatory since Courier 1.2' }),
  },
  'a skill object {minVersion, maxVersion}',
).superRefine((s, ctx) => {
  if (typeof s.minVersion !== 'string' || typeof s.maxVersion !== 'string') return
  for (const key of ['minVersion', 'maxVersion'] as const) {
    if (VERSION_PATTERN.test(s[key]) && parseVersion(s[key]) === undefined) {
      ctx.addIssue({ code: 'custom', path: [key], input: s[key], message: `got ${describeValue(s[key])}; expected a version such as "1.2.3", "1.9.996.1" or "2.0.0-rc.1" (dot-separated pre-release identifiers, none empty)` })
    }
  }
  const d = compareVersions(s.minVersion, s.maxVersion)
  if (d !== undefined && d > 0) {
    ctx.addIssue({ code: 'custom', path: ['maxVersion'], input: s.maxVersion, message: `got ${JSON.stringify(s.maxVersion)}, lower than minVersion ${JSON.stringify(s.minVersion)}; expected maxVersion >= minVersion` })
  }
}, whenObject)

export const InterpreterSchema = closedObject(
  {
    name: text({ min: 1, max: MAX_IDENTIFIER_CHARS, pattern: INTERPRETER_NAME_PATTERN, expected: 'an interpreter skill name "<origin>/<package>" such as "chef-platform/shell-interpreter"' }),
    skill: SkillSchema,
  },
  'an interpreter object {name, skill}',
)

const commandLines = boundedArray(bigText('a command line (non-empty string)', 1), MAX_COMMAND_LINES, 1, 'an array of command lines')

/** Command of `chef-platform/shell-interpreter`: command lines per OS. */
export const ShellCommandSchema = closedObject(
  { linux: commandLines.optional(), windows: commandLines.optional(), darwin: commandLines.optional() },
  'a shell command object {linux, windows, darwin} with arrays of command lines',
).superRefine((c, ctx) => {
  if (!SHELL_OS_KEYS.some((k) => (c as Record<string, unknown>)[k] !== undefined)) {
    ctx.addIssue({ code: 'custom', input: c, message: `got ${describeValue(c)}; expected at least one of ${quoteList(SHELL_OS_KEYS)} with a list of command lines` })
  }
}, whenObject)
export type ShellCommand = z.output<typeof ShellCommandSchema>

/** Command of the exec-style interpreters (EXEC_INTERPRETERS): `{exec, args?}`. */
export const ExecCommandSchema = closedObject(
  {
    exec: text({ min: 1, max: MAX_NAME_CHARS, expected: 'the name of the interpreter command, such as "run", "scan" or "machine_reboot"' }),
    args: openObject('an object of command arguments').optional(),
  },
  'an exec command object {exec, args}',
)
export type ExecCommand = z.output<typeof ExecCommandSchema>

/** Command of any other interpreter: a non-empty free-form object. */
export const GenericCommandSchema = openObject('a command object').superRefine((c, ctx) => {
  if (Object.keys(c).length === 0) ctx.addIssue({ code: 'custom', input: c, message: 'got {}; expected a non-empty command object' })
})

/** The command schema for an interpreter name (FORMAT.md §5). */
export function commandSchemaFor(interpreterName: string): z.ZodType {
  if (interpreterName === SHELL_INTERPRETER) return ShellCommandSchema
  if ((EXEC_INTERPRETERS as readonly string[]).includes(interpreterName)) return ExecCommandSchema
  return GenericCommandSchema
}

const scalarValue = z
  .union([z.string(), z.number(), z.boolean()], { error: (iss) => `${got(iss.input)}; expected a string, number or boolean` })
  .superRefine((v, ctx) => {
    if (typeof v === 'number' && !Number.isFinite(v)) ctx.addIssue({ code: 'custom', input: v, message: `got ${v}; expected a finite number` })
    if (typeof v === 'string') {
      const n = byteLength(v)
      if (n > MAX_VALUE_BYTES) ctx.addIssue({ code: 'custom', input: undefined, message: `got a value of ${n} bytes; expected at most ${MAX_VALUE_BYTES} bytes` })
    }
  })

export const ExpectedInputSchema = closedObject(
  {
    type: text({ min: 1, max: MAX_INPUT_TYPE_CHARS }).optional(),
    default: scalarValue.optional(),
    required: z.boolean().optional(),
    sensitive: z.boolean().optional(),
  },
  'an expected input object {type, default, required, sensitive}',
)

const OUTPUT_RULE_TEXT = 'an output rule object {sourceType, source, extractMethod, expression}'

const extractMethod = z
  .string({ error: (iss) => `${got(iss.input)}; ${expectOneOf(EXTRACT_METHODS)} (case-insensitive)` })
  .transform((s, ctx): (typeof EXTRACT_METHODS)[number] => {
    const canonical = EXTRACT_METHODS.find((m) => m.toLowerCase() === s.toLowerCase())
    if (canonical === undefined) {
      ctx.addIssue({ code: 'custom', input: s, message: `got ${describeValue(s)}; ${expectOneOf(EXTRACT_METHODS)} (case-insensitive)` })
      return z.NEVER
    }
    return canonical
  })

export const OutputFieldRuleSchema = closedObject(
  {
    sourceType: oneOf(SOURCE_TYPES),
    source: text({ max: MAX_NAME_CHARS }).optional(),
    extractMethod,
    expression: bigText().optional(),
    required: z.boolean().optional(),
    sensitive: z.boolean().optional(),
  },
  OUTPUT_RULE_TEXT,
  // The job_reboot sample has `"outputFieldRules": {"required": false}`: a scalar where a rule
  // (keyed by output name) belongs.
  (input) => `expected ${OUTPUT_RULE_TEXT} keyed by output name, got ${describeValue(input)}`,
).superRefine((r, ctx) => {
  const method = typeof r.extractMethod === 'string' ? r.extractMethod.toLowerCase() : undefined
  if ((method === 'regex' || method === 'jsonpath') && (r.expression === undefined || r.expression === '')) {
    ctx.addIssue({ code: 'custom', path: ['expression'], input: r.expression, message: `${got(r.expression)}; expected a non-empty expression because extractMethod is ${JSON.stringify(r.extractMethod)}` })
  } else if (method === 'regex' && typeof r.expression === 'string') {
    refusePattern(ctx, ['expression'], r.expression)
  } else if (method === 'jsonpath' && typeof r.expression === 'string') {
    const parsed = parseJsonPath(r.expression)
    if ('error' in parsed) ctx.addIssue({ code: 'custom', path: ['expression'], input: r.expression, message: `got ${describeValue(r.expression)}: ${parsed.error}` })
  }
}, whenObject)

export const ConditionSchema = closedObject(
  {
    inputName: text({ min: 1, max: MAX_KEY_CHARS, pattern: NAME_PATTERN, expected: 'the name of an input (letters, digits and "_")' }),
    operator: oneOf(CONDITION_OPERATORS),
    value: bigText('a string (quote numbers in YAML)'),
    negate: z.boolean().default(false),
  },
  'a condition object {inputName, operator, value, negate}',
).superRefine((c, ctx) => {
  if (c.operator === 'matches' && typeof c.value === 'string') refusePattern(ctx, ['value'], c.value)
}, whenObject)

const backoffKeys = ['type', 'name', 'delaySeconds', 'arguments']

export const RetryBackoffStrategySchema = closedObject(
  {
    type: oneOf(BACKOFF_TYPES).optional(),
    /** Legacy alias of `type` (placeholder templates and beta samples). */
    name: oneOf(BACKOFF_TYPES).optional(),
    delaySeconds: int(0, MAX_DELAY_SECONDS),
    arguments: boundedArray(z.unknown(), MAX_BACKOFF_ARGUMENTS)
      .superRefine((a, ctx) => checkFreeform(a, ctx))
      .default([]),
  },
  `a backoff object {${backoffKeys.join(', ')}}`,
)
  .superRefine((b, ctx) => {
    const raw = b as Record<string, unknown>
    if (raw.type === undefined && raw.name === undefined) {
      ctx.addIssue({ code: 'custom', path: ['type'], input: undefined, message: `missing required field; ${expectOneOf(BACKOFF_TYPES)} (the legacy key "name" is also accepted)` })
    } else if (raw.type !== undefined && raw.name !== undefined && raw.type !== raw.name) {
      ctx.addIssue({ code: 'custom', path: ['name'], input: raw.name, message: `got ${describeValue(raw.name)}, which conflicts with type ${describeValue(raw.type)}; expected only "type" (or equal values)` })
    }
  }, whenObject)
  .transform(({ type, name, delaySeconds, arguments: args }) => ({
    type: (type ?? name) as (typeof BACKOFF_TYPES)[number],
    delaySeconds,
    arguments: args,
  }))

export const FailureBehaviorSchema = closedObject(
  { action: oneOf(FAILURE_ACTIONS), retryBackoffStrategy: RetryBackoffStrategySchema },
  'a failure behaviour object {action, retryBackoffStrategy}',
)

/** 0 means unlimited. Courier servers echo cpu: 1; Chorus enforces only a cpu the template writes. */
export const DEFAULT_LIMITS = { cores: 0, cpu: 0, timeoutSeconds: 0 } as const

export const LimitsSchema = closedObject(
  {
    cores: int(0, MAX_LIMIT_CORES).default(DEFAULT_LIMITS.cores),
    cpu: z.number().min(0).max(MAX_LIMIT_CPU).default(DEFAULT_LIMITS.cpu),
    timeoutSeconds: int(0, MAX_TIMEOUT_SECONDS).default(DEFAULT_LIMITS.timeoutSeconds),
  },
  'a limits object {cores, cpu, timeoutSeconds}',
)

export const StepSchema = closedObject(
  {
    name: text({ min: 1, max: MAX_NAME_CHARS }),
    description: text({ max: MAX_DESCRIPTION_CHARS }).default(''),
    interpreter: InterpreterSchema,
    command: openObject('a command object (its shape depends on interpreter.name)'),
    inputs: namedMap(scalarValue, 'an object of input values').default({}),
    expectedInputs: namedMap(ExpectedInputSchema, 'an object of expected inputs keyed by name').default({}),
    outputFieldRules: namedMap(OutputFieldRuleSchema, 'an object of output rules keyed by output name')
      .superRefine((rules, ctx) => {
        // The 00_empty placeholder (and job_reboot) write rule fields directly in the map.
        const ruleFields = ['sourceType', 'source', 'extractMethod', 'expression', 'required', 'sensitive']
        const flat = Object.keys(rules).filter((k) => ruleFields.includes(k) && !isObjectLike((rules as Record<string, unknown>)[k]))
        if (flat.length > 0) {
          ctx.addIssue({ code: 'custom', input: rules, message: `got rule field${flat.length === 1 ? '' : 's'} ${quoteList(flat)} directly in the map; expected a map from output names to rules, such as {"MY_OUTPUT": {"sourceType": "output", "source": "stdout", "extractMethod": "content"}}` })
        }
      }, whenObject)
      .default({}),
    conditions: boundedArray(ConditionSchema, MAX_CONDITIONS, 0, 'an array of conditions').default([]),
    retryCount: int(0, MAX_RETRY_COUNT),
    failureBehavior: FailureBehaviorSchema,
    limits: LimitsSchema.default({ ...DEFAULT_LIMITS }),
  },
  'a step object {name, interpreter, command, retryCount, failureBehavior, ...}',
).superRefine((s, ctx) => {
  // The command's shape depends on the interpreter (FORMAT.md §5).
  const raw = s as Record<string, unknown>
  const interpreter = raw.interpreter
  const command = raw.command
  if (!isObjectLike(interpreter) || typeof interpreter.name !== 'string' || !isObjectLike(command)) return
  checkPlaceholders(raw, ctx)
  const schema = commandSchemaFor(interpreter.name)
  if (schema === GenericCommandSchema) return // already checked as the field's own schema
  const result = schema.safeParse(command, { error: templateErrorMap, reportInput: true })
  if (!result.success) forwardIssues(ctx, ['command'], result.error.issues)
}, whenObject)

/** Each string in `value` (any depth, bounded by the free-form limits) with its path. */
function stringsIn(value: unknown, path: PropertyKey[], out: { path: PropertyKey[]; text: string }[] = []): { path: PropertyKey[]; text: string }[] {
  if (typeof value === 'string') out.push({ path, text: value })
  else if (Array.isArray(value)) value.forEach((v, i) => stringsIn(v, [...path, i], out))
  else if (isObjectLike(value)) for (const [k, v] of Object.entries(value)) stringsIn(v, [...path, k], out)
  return out
}

/**
 * Every `{{.NAME}}` must resolve when the step runs (agent/steps.ts planStep): in the command,
 * to an expected input or a static input of the step; in a static input, to an expected input.
 */
function checkPlaceholders(step: Record<string, unknown>, ctx: z.core.$RefinementCtx<unknown>): void {
  const keys = (v: unknown) => (isObjectLike(v) ? Object.keys(v) : [])
  const expected = new Set(keys(step.expectedInputs))
  const declared = new Set([...expected, ...keys(step.inputs)])
  const check = (where: PropertyKey[], value: unknown, known: Set<string>, what: string) => {
    for (const { path, text } of stringsIn(value, where).slice(0, MAX_FREEFORM_NODES)) {
      const unknown = [...new Set([...text.matchAll(PLACEHOLDER)].map((m) => m[1]!))].filter((n) => !known.has(n))
      if (unknown.length === 0) continue
      const list = unknown.map((n) => `{{.${n}}}`).join(', ')
      ctx.addIssue({ code: 'custom', path, input: text, message: `references ${list}, which ${unknown.length === 1 ? 'is' : 'are'} not ${what} of this step; expected ${unknown.length === 1 ? 'it' : 'them'} declared in expectedInputs` })
    }
  }
  check(['command'], step.command, declared, 'an expected input or a static input')
  check(['inputs'], step.inputs, expected, 'an expected input')
}

export const ActionsSchema = closedObject(
  {
    accessMode: oneOf(ACCESS_MODES),
    steps: boundedArray(StepSchema, MAX_STEPS, 1, 'an array of steps'),
  },
  'an actions object {accessMode, steps}',
)
