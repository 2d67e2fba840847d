// Pure step semantics for Courier job steps (FORMAT.md §4): input resolution, {{.NAME}}
// substitution, conditions, output extraction and skill version matching. No I/O, no clock,
// no randomness: the agent core calls these while deciding what to do with a step.
//
// Decisions where Courier is silent (FORMAT.md marks them [GAP]/[INF]):
//
// * Substitution. `{{.NAME}}` and `{{ .NAME }}` (any spaces inside the braces) are replaced in
//   ONE pass; a substituted value is never re-scanned, so a value containing `{{.X}}` cannot
//   inject another input. An unknown name is left in place and reported in `missing`;
//   `planStep` turns that into a step failure. Other Go-template syntax is left untouched.
//   Values are inserted verbatim: in a shell line the value is shell code, exactly as in
//   Courier. Use `chorus/exec-interpreter` (argv, no shell) for untrusted values.
// * Inputs. An expected input takes the value available from earlier steps; when absent,
//   its `default` fills in; when there is neither and `required` is true, the step FAILS
//   (it is not skipped) with the reason "required input NAME is missing". An optional input
//   with neither stays absent. `type` "string" (or no type) accepts anything; "number"
//   (also "int", "integer", "float") must parse as a finite number; "boolean" (also "bool")
//   must be "true" or "false"; any other type fails the step.
// * Conditions are ANDed. A condition on an input that is absent is FALSE whatever `negate`
//   says (negate inverts the comparison, not the existence test). `eq` is exact (no trimming:
//   the samples compare against "false\n"). gt/gte/lt/lte compare numerically when both
//   sides, trimmed, parse as finite decimal numbers, else by UTF-16 code units (plain JS
//   string order, no locale). `matches` uses RE2 syntax (protocol/pattern.ts: linear time, no
//   backreferences or lookaround; no flags, unanchored: it tests for a match anywhere, as Go's
//   regexp.MatchString does); an invalid pattern is an error that fails the step rather than
//   silently skipping it (validate refuses it first).
// * Output regEx: the value is the FIRST CAPTURE GROUP when the pattern has one, else the
//   whole match. The inspec_exec / ssl_cert_rotation samples use the group-less expression
//   "0 successful" and then test `eq "0 successful"`, which both readings satisfy; the
//   capture-group rule additionally lets a template extract e.g. a version number
//   (`nginx/([0-9.]+)`), which "whole match only" cannot. A group that did not take part in
//   the match yields "". Optional rules (required false) that do not match yield no value.
// * Output content keeps the source byte-for-byte, trailing newline included.
// * jsonPath supports `$`, `.key`, `['key']` / `["key"]`, `[n]` (negative n counts from the
//   end) and `[*]` / `.*`. A path with a wildcard yields a JSON array of every match; a
//   string result is returned as is, any other JSON value as its JSON text.
import { MAX_OUTPUT_VALUE_CHARS } from '../protocol/wire.js'
import { PLACEHOLDER, type ExpectedInput, type OutputFieldRule, type StepCondition } from '../protocol/template.js'
import { makeRedactor, redactOutputs } from './secrets.js'
import { compilePattern, execPattern, testPattern } from '../protocol/pattern.js'
import { evaluateJsonPath } from '../protocol/jsonpath.js'

export { evaluateJsonPath, parseJsonPath } from '../protocol/jsonpath.js'
export { compareVersions, matchSkillVersion, parseVersionConstraint } from '../protocol/version.js'

export type { ExpectedInput, OutputFieldRule, StepCondition }

/** Longest output value kept: the wire's bound. */
export { MAX_OUTPUT_VALUE_CHARS }

type Scalar = string | number | boolean


function own(record: Record<string, unknown>, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(record, key)
}

// ---------------------------------------------------------------------------------------------
// Substitution.

/** Replaces `{{.NAME}}` / `{{ .NAME }}` with values[NAME] in one pass; unknown names stay and are listed once each. */
export function substitute(text: string, values: Record<string, string>): { text: string; missing: string[] } {
  const missing: string[] = []
  const out = text.replace(PLACEHOLDER, (whole, name: string) => {
    if (own(values, name)) return values[name]!
    if (!missing.includes(name)) missing.push(name)
    return whole
  })
  return { text: out, missing }
}

/**
 * Applies `substitute` to every string inside `command` (arrays and plain objects, any
 * depth; keys are not substituted). Returns a new value; the input is not modified.
 */
export function substituteCommand(command: unknown, values: Record<string, string>): { command: unknown; missing: string[] } {
  const missing = new Set<string>()
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') {
      const r = substitute(v, values)
      for (const m of r.missing) missing.add(m)
      return r.text
    }
    if (Array.isArray(v)) return v.map(walk)
    if (typeof v === 'object' && v !== null) {
      const out: Record<string, unknown> = {}
      for (const [k, item] of Object.entries(v)) {
        Object.defineProperty(out, k, { value: walk(item), enumerable: true, writable: true, configurable: true })
      }
      return out
    }
    return v
  }
  return { command: walk(command), missing: [...missing] }
}

// ---------------------------------------------------------------------------------------------
// Inputs.

export interface StepInputSpec {
  inputs?: Record<string, Scalar>
  expectedInputs?: Record<string, ExpectedInput>
}

export type ResolvedInputs =
  | {
      ok: true
      /** Expected inputs with a value (available or default), by name. */
      values: Record<string, string>
      /** The step's static `inputs`, stringified, with `{{.NAME}}` substituted from `values`. */
      inputs: Record<string, string>
      /** Names (of values and inputs) marked sensitive. */
      sensitive: string[]
      /** Names that took their default. */
      defaulted: string[]
    }
  | { ok: false; reason: string; missing: string[] }

const NUMBER_TYPES = ['number', 'int', 'integer', 'float']
const BOOLEAN_TYPES = ['boolean', 'bool']

function scalarText(v: Scalar): string {
  return typeof v === 'string' ? v : String(v)
}

function parseNumber(s: string): number | undefined {
  const t = s.trim()
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(t)) return undefined
  const n = Number(t)
  return Number.isFinite(n) ? n : undefined
}

/** Applies the step's expectedInputs to the values available from earlier steps (see the header). */
export function resolveInputs(step: StepInputSpec, available: Record<string, string>): ResolvedInputs {
  const values: Record<string, string> = {}
  const sensitive: string[] = []
  const defaulted: string[] = []
  const missing: string[] = []
  const problems: string[] = []
  for (const [name, spec] of Object.entries(step.expectedInputs ?? {})) {
    let value: string | undefined
    if (own(available, name)) value = available[name]
    else if (spec.default !== undefined) {
      value = scalarText(spec.default)
      defaulted.push(name)
    }
    if (spec.sensitive === true) sensitive.push(name)
    if (value === undefined) {
      if (spec.required === true) missing.push(name)
      continue
    }
    const type = (spec.type ?? 'string').toLowerCase()
    if (NUMBER_TYPES.includes(type)) {
      if (parseNumber(value) === undefined) problems.push(`input ${name} must be a number (type ${spec.type})`)
    } else if (BOOLEAN_TYPES.includes(type)) {
      if (value.trim() !== 'true' && value.trim() !== 'false') problems.push(`input ${name} must be "true" or "false" (type ${spec.type})`)
    } else if (type !== 'string') {
      problems.push(`input ${name} has unsupported type ${JSON.stringify(spec.type)}; expected string, number or boolean`)
    }
    values[name] = value
  }
  if (missing.length > 0) {
    const list = missing.join(', ')
    return { ok: false, missing, reason: `required input${missing.length === 1 ? '' : 's'} ${list} ${missing.length === 1 ? 'is' : 'are'} missing (not produced by an earlier step and no default)` }
  }
  if (problems.length > 0) return { ok: false, missing: [], reason: problems.join('; ') }
  const inputs: Record<string, string> = {}
  const unresolved = new Set<string>()
  for (const [k, v] of Object.entries(step.inputs ?? {})) {
    const r = substitute(scalarText(v), values)
    r.missing.forEach((m) => unresolved.add(m))
    inputs[k] = r.text
  }
  if (unresolved.size > 0) {
    const names = [...unresolved].join(', ')
    return { ok: false, missing: [...unresolved], reason: `inputs reference {{.${[...unresolved][0]}}} but ${names} ${unresolved.size === 1 ? 'is not an expected input' : 'are not expected inputs'} of this step` }
  }
  return { ok: true, values, inputs, sensitive, defaulted }
}

// ---------------------------------------------------------------------------------------------
// Conditions.

export interface ConditionSpec {
  inputName: string
  operator: string
  value: string
  negate?: boolean
}

export interface ConditionsVerdict {
  run: boolean
  /** One clause per condition, e.g. `NGINX_FOUND ("true\n") eq "false\n": false`. */
  explanation: string
  /** Set when a condition cannot be evaluated (bad operator, invalid regex): fail the step. */
  error?: string
}

function compareOrdered(a: string, b: string): number {
  const x = parseNumber(a)
  const y = parseNumber(b)
  if (x !== undefined && y !== undefined) return x === y ? 0 : x < y ? -1 : 1
  return a === b ? 0 : a < b ? -1 : 1
}

function show(value: string, masked: boolean): string {
  if (masked) return '[REDACTED]'
  const s = value.length > 80 ? `${value.slice(0, 77)}...` : value
  return JSON.stringify(s)
}

/**
 * Evaluates conditions with AND (see the header for the rules). `sensitive` names have
 * their values masked in the explanation.
 */
export function evaluateConditions(conditions: readonly ConditionSpec[], values: Record<string, string>, sensitive: Iterable<string> = []): ConditionsVerdict {
  if (conditions.length === 0) return { run: true, explanation: 'no conditions' }
  const masked = new Set(sensitive)
  const clauses: string[] = []
  let run = true
  for (const c of conditions) {
    const op = `${c.negate === true ? 'not ' : ''}${c.operator}`
    const hidden = masked.has(c.inputName)
    if (!own(values, c.inputName)) {
      clauses.push(`${c.inputName} (absent) ${op} ${show(c.value, hidden)}: false`)
      run = false
      continue
    }
    const v = values[c.inputName]!
    let result: boolean
    switch (c.operator) {
      case 'eq': result = v === c.value; break
      case 'gt': result = compareOrdered(v, c.value) > 0; break
      case 'gte': result = compareOrdered(v, c.value) >= 0; break
      case 'lt': result = compareOrdered(v, c.value) < 0; break
      case 'lte': result = compareOrdered(v, c.value) <= 0; break
      case 'startsWith': result = v.startsWith(c.value); break
      case 'endsWith': result = v.endsWith(c.value); break
      case 'contains': result = v.includes(c.value); break
      case 'matches': {
        const compiled = compilePattern(c.value)
        if (!compiled.ok) {
          const error = `condition on ${c.inputName}: ${show(c.value, hidden)}: ${compiled.message}`
          return { run: false, explanation: error, error }
        }
        result = testPattern(compiled.re, v)
        break
      }
      default: {
        const error = `condition on ${c.inputName}: unknown operator ${JSON.stringify(c.operator)}`
        return { run: false, explanation: error, error }
      }
    }
    if (c.negate === true) result = !result
    clauses.push(`${c.inputName} (${show(v, hidden)}) ${op} ${show(c.value, hidden)}: ${result}`)
    if (!result) run = false
  }
  return { run, explanation: `${clauses.join('; ')} => ${run ? 'run' : 'skip'}` }
}

// ---------------------------------------------------------------------------------------------
// Outputs.

export interface OutputRuleSpec {
  sourceType: string
  source?: string
  extractMethod: string
  expression?: string
  required?: boolean
  sensitive?: boolean
}

export interface OutputSource {
  stdout: string
  stderr: string
  exitCode: number | null
  /** Contents of the files named by `file` rules (path → content), read by the runtime. */
  files?: Record<string, string>
  /** Contents of the step's artifacts, by artifact name. */
  artifacts?: Record<string, string>
}

export interface ExtractedOutputs {
  values: Record<string, string>
  /** Names of outputs (present in values) whose rule is sensitive. */
  sensitive: string[]
  /** One entry per rule that could not produce a value; a `required` rule's problem fails the step. */
  problems: { name: string; message: string; required: boolean }[]
}

/** The paths `file` rules read: the runtime reads these (bounded) and passes them in `files`. */
export function outputFilesToRead(rules: Record<string, OutputRuleSpec>): string[] {
  const paths = new Set<string>()
  for (const r of Object.values(rules)) if (r.sourceType === 'file' && r.source) paths.add(r.source)
  return [...paths]
}

function sourceText(rule: OutputRuleSpec, src: OutputSource): { text: string } | { error: string } {
  switch (rule.sourceType) {
    case 'output': {
      const stream = rule.source === undefined || rule.source === '' ? 'stdout' : rule.source
      if (stream === 'stdout') return { text: src.stdout }
      if (stream === 'stderr') return { text: src.stderr }
      return { error: `unknown output stream ${JSON.stringify(stream)}; expected "stdout" or "stderr"` }
    }
    case 'exitCode':
      return src.exitCode === null ? { error: 'the step has no exit code (killed or never started)' } : { text: String(src.exitCode) }
    case 'file': {
      if (!rule.source) return { error: 'a file rule needs source (the file path)' }
      const files = src.files ?? {}
      return own(files, rule.source) ? { text: files[rule.source]! } : { error: `file ${rule.source} could not be read` }
    }
    case 'artifact': {
      if (!rule.source) return { error: 'an artifact rule needs source (the artifact name)' }
      const artifacts = src.artifacts ?? {}
      return own(artifacts, rule.source) ? { text: artifacts[rule.source]! } : { error: `the step produced no artifact named ${rule.source}` }
    }
    default:
      return { error: `unknown sourceType ${JSON.stringify(rule.sourceType)}` }
  }
}

function applyExtract(rule: OutputRuleSpec, text: string): { value?: string; error?: string } {
  const method = rule.extractMethod.toLowerCase()
  const expression = rule.expression ?? ''
  if (method === 'content') return { value: text }
  if (method === 'regex') {
    if (expression === '') return { error: 'regEx needs a non-empty expression' }
    const compiled = compilePattern(expression)
    if (!compiled.ok) return { error: compiled.message }
    const m = execPattern(compiled.re, text)
    if (m === null) return { error: `no match for /${expression.length > 120 ? `${expression.slice(0, 117)}...` : expression}/` }
    return { value: m.length > 1 ? (m[1] ?? '') : m[0] }
  }
  if (method === 'jsonpath') {
    let doc: unknown
    try {
      doc = JSON.parse(text)
    } catch {
      return { error: 'source is not valid JSON' }
    }
    const r = evaluateJsonPath(doc, expression)
    if ('error' in r) return { error: r.error }
    if (r.matches.length === 0) return { error: `no value at ${expression}` }
    const result = r.wildcard ? r.matches : r.matches[0]
    return { value: typeof result === 'string' ? result : JSON.stringify(result) }
  }
  return { error: `unknown extractMethod ${JSON.stringify(rule.extractMethod)}` }
}

/** Extracts output values by rule (see the header for the rules). Rule names are the output names. */
export function extractOutputs(rules: Record<string, OutputRuleSpec>, source: OutputSource, maxValueChars = MAX_OUTPUT_VALUE_CHARS): ExtractedOutputs {
  const values: Record<string, string> = {}
  const sensitive: string[] = []
  const problems: ExtractedOutputs['problems'] = []
  for (const [name, rule] of Object.entries(rules)) {
    const required = rule.required === true
    const src = sourceText(rule, source)
    if ('error' in src) {
      problems.push({ name, required, message: `output ${name}: ${src.error}` })
      continue
    }
    const r = applyExtract(rule, src.text)
    if (r.value === undefined) {
      problems.push({ name, required, message: `output ${name}: ${r.error ?? 'no value'}` })
      continue
    }
    if (r.value.length > maxValueChars) {
      problems.push({ name, required, message: `output ${name}: value of ${r.value.length} characters exceeds ${maxValueChars}` })
      continue
    }
    values[name] = r.value
    if (rule.sensitive === true) sensitive.push(name)
  }
  return { values, sensitive, problems }
}

// ---------------------------------------------------------------------------------------------
// Whole-step helpers for the agent core.

export interface PlannableStep extends StepInputSpec {
  command: unknown
  conditions?: readonly ConditionSpec[]
}

export type StepPlan =
  | {
      action: 'run'
      /** The command with every {{.NAME}} substituted. */
      command: unknown
      /** Static inputs, substituted. */
      inputs: Record<string, string>
      /** Resolved expected inputs (the values conditions saw). */
      values: Record<string, string>
      /** Values to redact from this step's stdout/stderr/reason/outputs (sensitive inputs + `knownSecrets`). */
      secrets: string[]
      explanation: string
    }
  | { action: 'skip'; explanation: string }
  | { action: 'fail'; reason: string }

/**
 * Decides what to do with a step given the outputs of earlier steps (`available`):
 * fail (required input missing, bad type, unresolvable {{.NAME}}, invalid condition),
 * skip (conditions false) or run (with the substituted command and inputs).
 * Conditions see the resolved expected inputs, then the static inputs. The command may
 * reference expected inputs and static inputs only (not every earlier output).
 */
export function planStep(step: PlannableStep, available: Record<string, string>, knownSecrets: readonly string[] = []): StepPlan {
  const resolved = resolveInputs(step, available)
  if (!resolved.ok) return { action: 'fail', reason: resolved.reason }
  const scope: Record<string, string> = { ...resolved.inputs, ...resolved.values }
  const verdict = evaluateConditions(step.conditions ?? [], scope, resolved.sensitive)
  if (verdict.error !== undefined) return { action: 'fail', reason: verdict.error }
  if (!verdict.run) return { action: 'skip', explanation: `conditions not met: ${verdict.explanation}` }
  const sub = substituteCommand(step.command, scope)
  if (sub.missing.length > 0) {
    return { action: 'fail', reason: `command references ${sub.missing.map((m) => `{{.${m}}}`).join(', ')}, which ${sub.missing.length === 1 ? 'is not an input' : 'are not inputs'} of this step (declare ${sub.missing.length === 1 ? 'it' : 'them'} in expectedInputs)` }
  }
  const secrets = new Set(knownSecrets)
  for (const name of resolved.sensitive) {
    const v = scope[name]
    if (v !== undefined && v !== '') secrets.add(v)
  }
  return { action: 'run', command: sub.command, inputs: resolved.inputs, values: resolved.values, secrets: [...secrets], explanation: verdict.explanation }
}

export interface InterpreterOutcome {
  status: 'success' | 'failure'
  exitCode: number | null
  stdout: string
  stderr: string
  reason?: string
  /** `file` rule sources read by the runtime (outputFilesToRead), path → content. */
  files?: Record<string, string>
  /** Artifact contents by name. */
  artifacts?: Record<string, string>
}

export interface CompletedStep {
  status: 'success' | 'failure'
  exitCode: number | null
  /** Redacted. */
  stdout: string
  stderr: string
  reason?: string
  /** Raw output values, for later steps' inputs: keep them LOCAL (never log or send). */
  outputs: Record<string, string>
  /** Output values safe to report (sensitive ones are "[REDACTED]"). */
  reportedOutputs: Record<string, string>
  /** The plan's secrets plus this step's sensitive output values: carry them to later steps. */
  secrets: string[]
}

/**
 * Finishes a step attempt: extracts outputs, fails the step when a REQUIRED output rule has
 * no value (only if the interpreter itself succeeded; otherwise its reason stands), and
 * redacts stdout, stderr and reason with every secret (including new sensitive outputs).
 */
export function completeStep(rules: Record<string, OutputRuleSpec>, result: InterpreterOutcome, secrets: readonly string[] = []): CompletedStep {
  const extracted = extractOutputs(rules, result)
  const all = new Set(secrets)
  for (const name of extracted.sensitive) {
    const v = extracted.values[name]
    if (v !== undefined && v.trim() !== '') all.add(v)
  }
  const redactText = makeRedactor(all)
  let status = result.status
  let reason = result.reason
  const failing = extracted.problems.filter((p) => p.required)
  if (status === 'success' && failing.length > 0) {
    status = 'failure'
    reason = failing.map((p) => p.message).join('; ')
  }
  return {
    status,
    exitCode: result.exitCode,
    stdout: redactText(result.stdout),
    stderr: redactText(result.stderr),
    ...(reason !== undefined ? { reason: redactText(reason) } : {}),
    outputs: extracted.values,
    reportedOutputs: redactOutputs(extracted.values, extracted.sensitive, all),
    secrets: [...all],
  }
}
