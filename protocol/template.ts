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
import { canonicalTimeZone, MAX_EXCEPTION_DURATION_MINUTES, MAX_TEMPLATE_RRULE_STEPS, newBudget, parseExceptionRule, parseScheduleRule, type ScheduleOptions } from './schedule.js'
import { patternProblem } from './pattern.js'
import { parseJsonPath } from './jsonpath.js'
import { compareVersions, parseVersion, parseVersionConstraint } from './version.js'
import { MAX_QUERY_CHARS, parseQuery } from './query.js'
import { z } from 'zod'

// ---------------------------------------------------------------------------------------------
// Bounds. Courier documents none (FORMAT.md §9), so these are Chorus's own limits.

/** Largest template text accepted by the parsers, in UTF-8 bytes. */
export const MAX_TEMPLATE_BYTES = 1024 * 1024
/** Template and step names, and other short labels, in characters. */
export const MAX_NAME_CHARS = 256
/** Template and step descriptions, in characters. */
export const MAX_DESCRIPTION_CHARS = 4096
/** `scheduleRule` and `exceptionRules[].rrule`, in characters. */
export const MAX_RRULE_CHARS = 1024
export const MAX_EXCEPTION_RULES = 64
/** Upper bound on an exception window's `duration` (its unit is undocumented). */
export const MAX_GROUPS = 100
export const MAX_SUCCESS_CRITERIA = 16
export const MAX_NODE_IDENTIFIERS = 100_000
/** Node IDs, list and filter IDs, interpreter names, filter attribute names, in characters. */
export const MAX_IDENTIFIER_CHARS = 256
/** Entries in `filter.constraints.attributes` / `.skills`, and values per entry. */
export const MAX_FILTER_CONSTRAINTS = 256
export const MAX_FILTER_VALUES = 1000
/** `batchSize.value` and `numRuns.value` when `type` is "number". */
export const MAX_COUNT_VALUE = MAX_NODE_IDENTIFIERS
/** Group and step timeouts: 30 days. */
export const MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
export const MAX_STEPS = 100
/** Command lines per OS in a shell command. */
export const MAX_COMMAND_LINES = 1000
/** Any single value: a command line, an input value, an expression, a condition value (UTF-8 bytes). */
export const MAX_VALUE_BYTES = 64 * 1024
/** Entries in `inputs`, `expectedInputs`, `outputFieldRules`, `command.args`. */
export const MAX_MAP_ENTRIES = 256
/** Keys of maps (input and output names) in characters. */
export const MAX_KEY_CHARS = 128
export const MAX_CONDITIONS = 64
export const MAX_RETRY_COUNT = 100
export const MAX_DELAY_SECONDS = 24 * 3600
export const MAX_BACKOFF_ARGUMENTS = 64
/** `interpreter.skill.minVersion` / `maxVersion`, in characters. */
export const MAX_VERSION_CHARS = 64
export const MAX_LIMIT_CORES = 1024
export const MAX_LIMIT_CPU = 1024
/** Free-form values (open objects listed in the header): nesting depth and total nodes. */
export const MAX_FREEFORM_DEPTH = 16
export const MAX_FREEFORM_NODES = 10_000

// ---------------------------------------------------------------------------------------------
// Enumerations (case-sensitive except EXTRACT_METHODS, FORMAT.md §10.6).

export const EXECUTION_TYPES = ['sequential', 'parallel'] as const
export const COUNT_TYPES = ['number', 'percent'] as const
export const DISTRIBUTION_METHODS = ['batching', 'rolling'] as const
export const RUN_STATUSES = ['success', 'failure'] as const
export const NODE_LIST_TYPES = ['nodes', 'savedList', 'savedFilter', 'filter'] as const
/** Accepted spellings that are normalised to a canonical NODE_LIST_TYPES value. */
export const NODE_LIST_TYPE_ALIASES = { node: 'nodes' } as const
/** Only `agent` is seen anywhere; Chorus runs every step through its agent. */
export const ACCESS_MODES = ['agent'] as const
export const SOURCE_TYPES = ['artifact', 'exitCode', 'file', 'output'] as const
export const EXTRACT_METHODS = ['regEx', 'jsonPath', 'content'] as const
export const CONDITION_OPERATORS = [
  'eq', 'gt', 'gte', 'lt', 'lte', 'matches', 'startsWith', 'endsWith', 'contains',
] as const
export const FAILURE_ACTIONS = ['retryThenFail', 'retryThenIgnore'] as const
export const BACKOFF_TYPES = ['none', 'linear', 'exponential', 'polynomial'] as const
export const SHELL_OS_KEYS = ['linux', 'windows', 'darwin'] as const
/** `filter.constraints.attributes[].operator` (case-insensitive; README "Job templates"). */
export const FILTER_OPERATORS = ['=', 'EQ', 'IN', '!=', 'NE', 'NOT IN', 'MATCHES', 'NOT MATCHES', 'STARTS_WITH', 'ENDS_WITH', 'CONTAINS', '>', '>=', '<', '<='] as const

export const SHELL_INTERPRETER = 'chef-platform/shell-interpreter'
/** Interpreters whose command is `{exec, args?}` (FORMAT.md §5). */
export const EXEC_INTERPRETERS = [
  'chef-platform/chef-client-interpreter',
  'chef-platform/inspec-interpreter',
  'chef-platform/restart-interpreter',
] as const

export const ZERO_UUID = '00000000-0000-0000-0000-000000000000'

const NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/
/** `{{.NAME}}` / `{{ .NAME }}` in commands and inputs (agent/steps.ts substitutes them). */
export const PLACEHOLDER = /\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g
const INTERPRETER_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)+$/
const VERSION_PATTERN = /^[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.+-]+)?$/
const RRULE_PATTERN = /^RRULE:[A-Z]+=[^;\s]+(;[A-Z]+=[^;\s]+)*$/

// ---------------------------------------------------------------------------------------------
// Message helpers.

/** Short human description of a value for "got ..." messages. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing'
  if (value === null) return 'null'
  if (typeof value === 'string') {
    const shown = value.length > 60 ? `${value.slice(0, 57)}...` : value
    return JSON.stringify(shown) + (value.length > 60 ? ` (${value.length} characters)` : '')
  }
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  if (typeof value === 'bigint') return `${value}n`
  if (Array.isArray(value)) return value.length === 0 ? '[]' : `an array of ${value.length} item${value.length === 1 ? '' : 's'}`
  if (typeof value === 'object') {
    const proto = Object.getPrototypeOf(value) as unknown
    if (proto !== Object.prototype && proto !== null) {
      const ctor = (value as { constructor?: { name?: string } }).constructor?.name
      return `a ${ctor ?? 'non-plain'} object`
    }
    const keys = Object.keys(value)
    if (keys.length === 0) return '{}'
    const shown = keys.slice(0, 4).join(', ') + (keys.length > 4 ? ', ...' : '')
    return `an object {${shown}}`
  }
  return `a ${typeof value}`
}

function quoteList(values: readonly string[]): string {
  return values.map((v) => JSON.stringify(v)).join(', ')
}

function expectOneOf(values: readonly string[]): string {
  return values.length === 1 ? `expected ${quoteList(values)}` : `expected one of ${quoteList(values)}`
}

function got(input: unknown): string {
  return input === undefined ? 'missing required field' : `got ${describeValue(input)}`
}

/** UTF-8 size of a string; short strings (that cannot exceed MAX_VALUE_BYTES) are not measured. */
function byteLength(s: string): number {
  return s.length * 3 <= MAX_VALUE_BYTES ? s.length : Buffer.byteLength(s, 'utf8')
}

/** Levenshtein distance, used for "did you mean" hints on unknown keys. */
function editDistance(a: string, b: string): number {
  const al = a.toLowerCase()
  const bl = b.toLowerCase()
  let prev = Array.from({ length: bl.length + 1 }, (_, i) => i)
  for (let i = 1; i <= al.length; i++) {
    const cur = [i]
    for (let j = 1; j <= bl.length; j++) {
      const cost = al[i - 1] === bl[j - 1] ? 0 : 1
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost))
    }
    prev = cur
  }
  return prev[bl.length] ?? 0
}

function suggestion(key: string, known: readonly string[]): string {
  const sameLetters = known.find((k) => k.toLowerCase() === key.toLowerCase())
  if (sameLetters !== undefined) return ` (did you mean "${sameLetters}"? keys are case-sensitive)`
  let best: string | undefined
  let bestDistance = Infinity
  for (const k of known) {
    const kl = k.toLowerCase()
    const keyl = key.toLowerCase()
    // A truncated or extended key (schedule / scheduleRule) counts as close.
    const d = key.length >= 3 && (kl.startsWith(keyl) || keyl.startsWith(kl)) ? 1 : editDistance(key, k)
    if (d < bestDistance) {
      best = k
      bestDistance = d
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? ` (did you mean "${best}"?)` : ''
}

const EXPECTED_TYPE_TEXT: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'a boolean (true or false)',
  object: 'an object',
  record: 'an object',
  array: 'an array',
  null: 'null',
}

function sizeText(origin: string, n: number | bigint): string {
  switch (origin) {
    case 'string': return `${n} character${n === 1 ? '' : 's'}`
    case 'array': case 'set': return `${n} item${n === 1 ? '' : 's'}`
    default: return String(n)
  }
}

function actualSize(origin: string, input: unknown): string {
  if (origin === 'string' && typeof input === 'string') return `got a string of ${input.length} characters`
  if (origin === 'array' && Array.isArray(input)) return input.length === 0 ? 'got []' : `got ${input.length} items`
  return got(input)
}

/**
 * Error map giving every built-in zod issue a "got X; expected Y" message. Pass it as the
 * `error` parse parameter; schema-level messages below take precedence over it.
 */
export const templateErrorMap: z.core.$ZodErrorMap = (issue) => {
  switch (issue.code) {
    case 'invalid_type': {
      const expected = EXPECTED_TYPE_TEXT[issue.expected] ?? issue.expected
      if (issue.expected === 'int' && typeof issue.input === 'number') return `got ${issue.input}; expected an integer`
      return `${got(issue.input)}; expected ${expected}`
    }
    case 'invalid_value':
      return `${got(issue.input)}; ${expectOneOf(issue.values.map((v) => String(v)))}`
    case 'too_small': {
      const bound = issue.inclusive === false ? 'more than' : 'at least'
      return `${actualSize(issue.origin, issue.input)}; expected ${bound} ${sizeText(issue.origin, issue.minimum)}`
    }
    case 'too_big': {
      const bound = issue.inclusive === false ? 'less than' : 'at most'
      return `${actualSize(issue.origin, issue.input)}; expected ${bound} ${sizeText(issue.origin, issue.maximum)}`
    }
    case 'invalid_format': {
      if (issue.format === 'starts_with' && 'prefix' in issue) return `${got(issue.input)}; expected a string starting with ${JSON.stringify(issue.prefix)}`
      return `${got(issue.input)}; expected a string in ${issue.format} format`
    }
    case 'invalid_key':
      return issue.issues[0]?.message ?? `invalid key ${describeValue(issue.input)}`
    case 'unrecognized_keys':
      return `unknown key${issue.keys.length === 1 ? '' : 's'} ${quoteList(issue.keys)}`
    case 'invalid_union':
      return `${got(issue.input)}; expected one of the allowed forms`
    case 'not_multiple_of':
      return `${got(issue.input)}; expected a multiple of ${issue.divisor}`
    default:
      return undefined
  }
}

// ---------------------------------------------------------------------------------------------
// Building blocks.

type Shape = Record<string, z.ZodType>

function isObjectLike(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

const whenObject = { when: (payload: z.core.ParsePayload) => isObjectLike(payload.value) }

/**
 * An object that rejects unknown keys, one issue per key with the key in the path. Unlike
 * z.strictObject, the check runs even when other fields failed, so every typo is reported.
 * (The object is parsed loose so the check can see the extra keys, then they are dropped.)
 */
function closedObject<S extends Shape>(shape: S, what: string, typeMessage?: (input: unknown) => string) {
  const known = Object.keys(shape)
  const message = typeMessage ?? ((input: unknown) => `${got(input)}; expected ${what}`)
  return z
    .looseObject(shape, { error: (iss) => (iss.code === 'invalid_type' ? message(iss.input) : undefined) })
    .superRefine((value, ctx) => {
      for (const key of Object.keys(value as object)) {
        if (Object.prototype.hasOwnProperty.call(shape, key)) continue
        ctx.addIssue({
          code: 'custom',
          path: [key],
          input: (value as Record<string, unknown>)[key],
          message: `unknown key ${JSON.stringify(key)}${suggestion(key, known)}; expected only ${known.join(', ')}`,
        })
      }
    }, whenObject)
    .transform((value) => {
      const out: Record<string, unknown> = {}
      for (const key of known) if (Object.prototype.hasOwnProperty.call(value, key)) out[key] = (value as Record<string, unknown>)[key]
      return out as z.output<z.ZodObject<S, z.core.$strip>>
    })
}

/** A string bounded in characters (short fields) with an optional pattern. */
function text(opts: { min?: number; max: number; pattern?: RegExp; expected?: string }) {
  const { min = 0, max, pattern, expected } = opts
  let s = z.string({ error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected ${expected ?? 'a string'}` : undefined) })
  if (min > 0) s = s.min(min, { abort: true, error: (iss) => (min === 1 ? `got ""; expected a non-empty string` : `${actualSize('string', iss.input)}; expected at least ${min} characters`) })
  s = s.max(max, { abort: true })
  if (pattern !== undefined) {
    s = s.regex(pattern, { error: (iss) => `${got(iss.input)}; expected ${expected ?? `a string matching ${pattern}`}` })
  }
  return s
}

/** A string bounded in UTF-8 bytes (large values: command lines, expressions, input values). */
function bigText(what = 'a string', min = 0) {
  return z
    .string({ error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected ${what}` : undefined) })
    .superRefine((s, ctx) => {
      if (s.length < min) ctx.addIssue({ code: 'custom', input: s, message: `got ""; expected ${what}` })
      const n = byteLength(s)
      if (n > MAX_VALUE_BYTES) ctx.addIssue({ code: 'custom', input: s, message: `got a value of ${n} bytes; expected at most ${MAX_VALUE_BYTES} bytes` })
    })
}

function int(min: number, max: number) {
  return z
    .int({ error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected an integer${min === 0 ? ' >= 0' : min === 1 ? ' >= 1' : ''}` : undefined) })
    .min(min)
    .max(max)
}

function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: (iss) => `${got(iss.input)}; ${expectOneOf(values)}` })
}

/** A map keyed by names, bounded in entries. */
function namedMap<V extends z.ZodType>(value: V, what: string) {
  const key = text({ min: 1, max: MAX_KEY_CHARS, pattern: NAME_PATTERN, expected: 'a key name made of letters, digits and "_", not starting with a digit' })
  return z
    .record(key, value, { error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected ${what}` : undefined) })
    .superRefine((map, ctx) => {
      const n = Object.keys(map).length
      if (n > MAX_MAP_ENTRIES) ctx.addIssue({ code: 'custom', input: map, message: `got ${n} entries; expected at most ${MAX_MAP_ENTRIES}` })
    })
}

function boundedArray<T extends z.ZodType>(item: T, max: number, min = 0, what = 'an array') {
  return z
    .array(item, { error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected ${what}` : undefined) })
    .min(min, { error: (iss) => `${actualSize('array', iss.input)}; expected at least ${min} item${min === 1 ? '' : 's'}` })
    .max(max)
}

/** Checks a free-form value: JSON-like types, depth, node count and string sizes. */
function checkFreeform(value: unknown, ctx: z.core.$RefinementCtx<unknown>, basePath: PropertyKey[] = []): void {
  let nodes = 0
  let reported = 0
  const report = (path: PropertyKey[], input: unknown, message: string) => {
    if (reported++ < 10) ctx.addIssue({ code: 'custom', path, input, message })
  }
  const walk = (v: unknown, path: PropertyKey[], depth: number): void => {
    if (++nodes > MAX_FREEFORM_NODES) {
      if (nodes === MAX_FREEFORM_NODES + 1) report(basePath, undefined, `value is too large; expected at most ${MAX_FREEFORM_NODES} nested values`)
      return
    }
    if (depth > MAX_FREEFORM_DEPTH) {
      report(path, undefined, `value is nested too deeply; expected at most ${MAX_FREEFORM_DEPTH} levels`)
      return
    }
    if (v === null || typeof v === 'boolean') return
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) report(path, v, `got ${v}; expected a finite number`)
      return
    }
    if (typeof v === 'string') {
      const n = byteLength(v)
      if (n > MAX_VALUE_BYTES) report(path, undefined, `got a value of ${n} bytes; expected at most ${MAX_VALUE_BYTES} bytes`)
      return
    }
    if (Array.isArray(v)) {
      v.forEach((item, i) => walk(item, [...path, i], depth + 1))
      return
    }
    if (typeof v === 'object') {
      const proto = Object.getPrototypeOf(v) as unknown
      if (proto !== Object.prototype && proto !== null) {
        report(path, v, `got ${describeValue(v)}; expected a string, number, boolean, null, array or object`)
        return
      }
      for (const [k, item] of Object.entries(v)) {
        if (k.length > MAX_KEY_CHARS) report([...path, k], undefined, `key has ${k.length} characters; expected at most ${MAX_KEY_CHARS}`)
        walk(item, [...path, k], depth + 1)
      }
      return
    }
    report(path, v, `got ${describeValue(v)}; expected a string, number, boolean, null, array or object`)
  }
  walk(value, basePath, 0)
}

/** An object with free-form content (see the header). */
function openObject(what: string) {
  return z
    .record(z.string(), z.unknown(), { error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected ${what}` : undefined) })
    .superRefine((v, ctx) => {
      const n = Object.keys(v).length
      if (n > MAX_MAP_ENTRIES) ctx.addIssue({ code: 'custom', input: v, message: `got ${n} entries; expected at most ${MAX_MAP_ENTRIES}` })
      checkFreeform(v, ctx)
    })
}

function forwardIssues(ctx: z.core.$RefinementCtx<unknown>, prefix: PropertyKey[], issues: readonly z.core.$ZodIssue[]): void {
  for (const issue of issues) {
    ctx.addIssue({ code: 'custom', path: [...prefix, ...issue.path], input: issue.input, message: issue.message })
  }
}

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
function checkSchedules(raw: Record<string, unknown>, ctx: z.core.$RefinementCtx<unknown>): void {
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

// ---------------------------------------------------------------------------------------------
// Target.

function countSchema(what: string, minValue: number) {
  return closedObject({ type: oneOf(COUNT_TYPES), value: int(minValue, MAX_COUNT_VALUE) }, what).superRefine((v, ctx) => {
    if (v.type === 'percent' && typeof v.value === 'number' && v.value > 100) {
      ctx.addIssue({ code: 'custom', path: ['value'], input: v.value, message: `got ${v.value}; expected at most 100 when type is "percent"` })
    }
  }, whenObject)
}

export const BatchSizeSchema = countSchema('a batch size object {type, value}', 1)

export const SuccessCriterionSchema = closedObject(
  {
    numRuns: countSchema('a run count object {type, value}', 0),
    status: oneOf(RUN_STATUSES),
  },
  'a success criterion object {numRuns, status}',
)

export const FilterAttributeSchema = closedObject(
  {
    name: text({ min: 1, max: MAX_IDENTIFIER_CHARS }),
    operator: text({ min: 1, max: 32 }),
    value: boundedArray(bigText(), MAX_FILTER_VALUES, 1, 'an array of strings'),
  },
  'a filter attribute object {name, operator, value}',
).superRefine((a, ctx) => {
  if (typeof a.operator !== 'string') return
  const op = a.operator.trim().toUpperCase().replace(/\s+/g, ' ')
  if (!(FILTER_OPERATORS as readonly string[]).includes(op)) {
    ctx.addIssue({ code: 'custom', path: ['operator'], input: a.operator, message: `got ${describeValue(a.operator)}; ${expectOneOf(FILTER_OPERATORS)} (case-insensitive)` })
  } else if ((op === 'MATCHES' || op === 'NOT MATCHES') && Array.isArray(a.value)) {
    a.value.forEach((v: unknown, j: number) => { if (typeof v === 'string') refusePattern(ctx, ['value', j], v) })
  }
}, whenObject)

export const FilterSkillSchema = closedObject(
  {
    name: text({ min: 1, max: MAX_IDENTIFIER_CHARS }),
    version: boundedArray(text({ min: 1, max: MAX_NAME_CHARS }), MAX_FILTER_VALUES, 0, 'an array of version constraints'),
  },
  'a filter skill object {name, version}',
).superRefine((k, ctx) => {
  if (!Array.isArray(k.version)) return
  k.version.forEach((v: unknown, j: number) => {
    const parsed = typeof v === 'string' ? parseVersionConstraint(v) : []
    if ('error' in parsed) ctx.addIssue({ code: 'custom', path: ['version', j], input: v, message: `got ${describeValue(v)}: ${parsed.error}; expected e.g. ">= 1.2", "= 0.1.0", "~> 18.2", "4.x"` })
  })
}, whenObject)

export const FilterConstraintsSchema = closedObject(
  {
    attributes: boundedArray(FilterAttributeSchema, MAX_FILTER_CONSTRAINTS).default([]),
    skills: boundedArray(FilterSkillSchema, MAX_FILTER_CONSTRAINTS).default([]),
  },
  'a constraints object {attributes, skills}',
)

/** Chorus extension `filter.query`: a search query (protocol/query.ts). */
const FilterQuerySchema = text({ min: 1, max: MAX_QUERY_CHARS, expected: 'a search query such as "role:webapp AND env:prod"' }).superRefine((q, ctx) => {
  const parsed = parseQuery(q)
  if (!parsed.ok) ctx.addIssue({ code: 'custom', input: q, message: `got ${describeValue(q)}: ${parsed.message}` })
})

/** Node Management query. Its root is open (see the header); `constraints` is closed. */
export const NodeFilterSchema = z
  .looseObject(
    { constraints: FilterConstraintsSchema.optional(), query: FilterQuerySchema.optional() },
    { error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected a filter object {constraints, query} or null` : undefined) },
  )
  .superRefine((v, ctx) => {
    const rest: Record<string, unknown> = {}
    for (const [k, item] of Object.entries(v)) if (k !== 'constraints' && k !== 'query') rest[k] = item
    checkFreeform(rest, ctx)
  })

const nodeListType = z
  .enum([...NODE_LIST_TYPES, ...(Object.keys(NODE_LIST_TYPE_ALIASES) as (keyof typeof NODE_LIST_TYPE_ALIASES)[])], {
    error: (iss) => `${got(iss.input)}; ${expectOneOf(NODE_LIST_TYPES)}`,
  })
  .transform((v): (typeof NODE_LIST_TYPES)[number] => (v in NODE_LIST_TYPE_ALIASES ? NODE_LIST_TYPE_ALIASES[v as keyof typeof NODE_LIST_TYPE_ALIASES] : (v as (typeof NODE_LIST_TYPES)[number])))

function isUnsetId(v: unknown): boolean {
  return v === undefined || v === '' || v === ZERO_UUID
}

export const GroupSchema = closedObject(
  {
    timeoutSeconds: int(1, MAX_TIMEOUT_SECONDS),
    batchSize: BatchSizeSchema,
    distributionMethod: oneOf(DISTRIBUTION_METHODS),
    successCriteria: boundedArray(SuccessCriterionSchema, MAX_SUCCESS_CRITERIA, 1, 'an array of success criteria'),
    earlyTermination: z.boolean().default(false),
    nodeListType,
    nodeIdentifiers: boundedArray(text({ min: 1, max: MAX_IDENTIFIER_CHARS }), MAX_NODE_IDENTIFIERS, 0, 'an array of node identifiers').default([]),
    listId: text({ max: MAX_IDENTIFIER_CHARS, expected: 'a saved node list ID (string)' }).optional(),
    filterId: text({ max: MAX_IDENTIFIER_CHARS, expected: 'a saved filter ID (string)' }).optional(),
    filter: NodeFilterSchema.nullable().default(null),
  },
  'a group object {timeoutSeconds, batchSize, distributionMethod, successCriteria, nodeListType, ...}',
).superRefine((g, ctx) => {
  // The selector named by nodeListType must be present (FORMAT.md §10.9). Server fill-ins for
  // unused selectors (filter: null, zero UUIDs) are tolerated. Wrongly typed fields have been
  // reported already, so only missing/empty ones are reported here.
  const raw = g as Record<string, unknown>
  const type = raw.nodeListType === 'node' ? 'nodes' : raw.nodeListType
  switch (type) {
    case 'nodes': {
      const ids = raw.nodeIdentifiers
      if (ids === undefined || (Array.isArray(ids) && ids.length === 0)) {
        ctx.addIssue({ code: 'custom', path: ['nodeIdentifiers'], input: ids, message: `${got(ids)}; expected a non-empty list of node IDs because nodeListType is "nodes"` })
      } else if (Array.isArray(ids)) {
        const seen = new Map<unknown, number>()
        ids.forEach((id, i) => {
          const first = seen.get(id)
          if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['nodeIdentifiers', i], input: id, message: `got duplicate node ID ${describeValue(id)} (also at [${first}]); expected each node once` })
          else seen.set(id, i)
        })
      }
      break
    }
    case 'savedList':
      if (isUnsetId(raw.listId)) {
        ctx.addIssue({ code: 'custom', path: ['listId'], input: raw.listId, message: `${got(raw.listId)}; expected the ID of a saved node list because nodeListType is "savedList"` })
      }
      break
    case 'savedFilter':
      if (isUnsetId(raw.filterId)) {
        ctx.addIssue({ code: 'custom', path: ['filterId'], input: raw.filterId, message: `${got(raw.filterId)}; expected the ID of a saved filter because nodeListType is "savedFilter"` })
      }
      break
    case 'filter': {
      const f = raw.filter
      if (f === undefined || f === null) {
        ctx.addIssue({ code: 'custom', path: ['filter'], input: f, message: `${got(f)}; expected a filter object {constraints: {attributes, skills}} because nodeListType is "filter"` })
      } else if (isObjectLike(f)) {
        const c = f.constraints
        const count = (x: unknown) => (Array.isArray(x) ? x.length : 0)
        const empty = c === undefined || (isObjectLike(c) && count(c.attributes) + count(c.skills) === 0)
        if (empty && f.query === undefined) {
          ctx.addIssue({ code: 'custom', path: ['filter', 'constraints'], input: c, message: `${got(c)}; expected at least one attribute or skill constraint, or a filter.query, because nodeListType is "filter"` })
        }
      }
      break
    }
  }
}, whenObject)

export const TargetSchema = closedObject(
  {
    executionType: oneOf(EXECUTION_TYPES),
    groups: boundedArray(GroupSchema, MAX_GROUPS, 1, 'an array of groups'),
  },
  'a target object {executionType, groups}',
)

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
    type: text({ min: 1, max: 32 }).optional(),
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

/** Reports a pattern RE2 cannot use (protocol/pattern.ts) at `path`. */
function refusePattern(ctx: z.core.$RefinementCtx<unknown>, path: PropertyKey[], source: string): void {
  const problem = patternProblem(source)
  if (problem !== undefined) ctx.addIssue({ code: 'custom', path, input: source, message: `got ${describeValue(source)}: ${problem}` })
}

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

/** Amount of the Where extensions (quorum), like batchSize. */
const ExtensionAmountSchema = closedObject(
  { type: z.enum(COUNT_TYPES), value: int(1, MAX_COUNT_VALUE) },
  'an amount {type: "number" | "percent", value}',
).superRefine((a, ctx) => {
  if (a.type === 'percent' && a.value > 100) ctx.addIssue({ code: 'custom', path: ['value'], input: a.value, message: `got ${a.value}; expected a percentage from 1 to 100` })
})

export const MAX_GLOBAL_EXCEPTION_IDS = 64

export const MISSED_POLICIES = ['skip', 'runOnceWithin', 'catchUp'] as const

/** `chorus.missed`: the policy is checked first, so a wrong one is reported at `policy`. */
const MissedPolicySchema = z
  .looseObject({ policy: oneOf(MISSED_POLICIES) }, { error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected a missed policy object {policy, withinSeconds | max}` : undefined) })
  .pipe(z.discriminatedUnion('policy', [
    closedObject({ policy: z.literal('skip') }, 'a missed policy {policy: "skip"}'),
    closedObject({ policy: z.literal('runOnceWithin'), withinSeconds: int(1, MAX_TIMEOUT_SECONDS) }, 'a missed policy {policy: "runOnceWithin", withinSeconds}'),
    closedObject({ policy: z.literal('catchUp'), max: int(1, 1000) }, 'a missed policy {policy: "catchUp", max}'),
  ]))

/**
 * Chorus extensions: fields Courier does not have, kept in one object so a Courier template
 * stays a Courier template. Every field is optional; README §Extensions documents each.
 */
export const ChorusExtensionSchema = closedObject(
  {
    /** IANA time zone for wall-clock recurrences (default UTC, as Courier). */
    timeZone: text({ min: 1, max: 64 }).refine((z) => canonicalTimeZone(z) !== undefined, {
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
