// Parsing and validation of Courier job templates from JSON, YAML or TOML text.
//
// Every format is checked for duplicate keys, which the usual parsers resolve silently
// (last key wins; the ssl_cert_rotation sample loses a step's condition that way):
//   * JSON: jsonc-parser's syntax tree, walked here; comments and trailing commas are refused;
//   * YAML: the `yaml` document tree, walked here (so the duplicate's path is known);
//   * TOML: smol-toml refuses redefinitions; the path is recovered from the error position.
// Then the plain value is validated by JobTemplateSchema (protocol/template.ts).
import { parseTree, type Node as JsonNode, type ParseError } from 'jsonc-parser'
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, type Node as YamlNode } from 'yaml'
import { parse as parseToml, TomlError } from 'smol-toml'
import { JobTemplateSchema, MAX_TEMPLATE_BYTES, TemplateRuleChecks, templateErrorMap, type JobTemplate } from './template.js'
import type { z } from 'zod'

export { MAX_TEMPLATE_BYTES } from './template.js'

export type TemplateFormat = 'json' | 'yaml' | 'toml'

export interface Problem {
  /** Location in the template, such as `actions.steps[0].outputFieldRules.required`; `$` is the root. */
  path: string
  message: string
}

export type ParseResult = { ok: true; template: JobTemplate } | { ok: false; problems: Problem[] }

/** At most this many problems are returned; a last problem says how many were left out. */
export const MAX_PROBLEMS = 100
/** Syntax errors reported per document (later ones are mostly consequences of the first). */
export const MAX_SYNTAX_PROBLEMS = 10
/** YAML alias expansion limit (guards against "billion laughs" documents). */
export const MAX_YAML_ALIAS_COUNT = 100
/**
 * Nesting limit checked on the text before parsing: the JSON and YAML parsers are recursive,
 * and a stack overflow inside them can leave the process unstable. A template needs about 8.
 * (smol-toml has its own limit.)
 */
export const MAX_NESTING_DEPTH = 64
/** YAML block nesting estimate (indentation plus compact "- " indicators) per line. */
export const MAX_YAML_INDENT = 256
/** Longest piece of the input (or of a parser's message) echoed in a problem, in characters. */
export const MAX_SNIPPET_CHARS = 120
/** Longest problem message, in characters (a last guard: snippets are bounded where made). */
export const MAX_MESSAGE_CHARS = 1000

/** `s`, cut to `max` characters with "..." when longer. */
export function clip(s: string, max: number = MAX_SNIPPET_CHARS): string {
  return s.length > max ? `${s.slice(0, max - 3)}...` : s
}

/** Format from a file name: `.yaml`/`.yml` is YAML, `.toml` is TOML, anything else JSON. */
export function formatFromFileName(name: string): TemplateFormat {
  const lower = name.toLowerCase()
  if (lower.endsWith('.yaml') || lower.endsWith('.yml')) return 'yaml'
  if (lower.endsWith('.toml')) return 'toml'
  return 'json'
}

/** Formats a path: `$` for the root, `a.b[0]["odd key"]` otherwise. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = ''
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`
    else {
      const key = String(segment)
      if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) out += out === '' ? key : `.${key}`
      else out += `[${JSON.stringify(key)}]`
    }
  }
  return out === '' ? '$' : out
}

function failure(problems: Problem[]): ParseResult {
  problems = problems.map((p) => ({ path: clip(p.path, MAX_SNIPPET_CHARS * 2), message: clip(p.message, MAX_MESSAGE_CHARS) }))
  if (problems.length > MAX_PROBLEMS) {
    const extra = problems.length - MAX_PROBLEMS
    problems = [...problems.slice(0, MAX_PROBLEMS), { path: '$', message: `${extra} more problem${extra === 1 ? '' : 's'} not shown` }]
  }
  return { ok: false, problems }
}

/** Validates an already-parsed value (for example an HTTP request body). */
export function parseTemplateObject(value: unknown): ParseResult {
  const reserved = reservedKeyProblems(value)
  if (reserved.length > 0) return failure(reserved)
  const result = JobTemplateSchema.safeParse(value, { error: templateErrorMap, reportInput: true })
  if (result.success) return { ok: true, template: result.data }
  const rules = TemplateRuleChecks.safeParse(value, { error: templateErrorMap, reportInput: true })
  return failure(issuesToProblems([...result.error.issues, ...(rules.success ? [] : rules.error.issues)]))
}

/** Why a parsed number cannot stand for what the text said, or undefined. Beyond
 *  Number.MAX_SAFE_INTEGER, JSON.parse and YAML silently round integers (2^53 + 1 reads as
 *  2^53), and 1e309 reads as Infinity; a template has no use for such numbers. */
function numberProblem(v: unknown): string | undefined {
  if (typeof v === 'bigint') return `got the integer ${clip(String(v))}, beyond ${Number.MAX_SAFE_INTEGER} (2^53 - 1); expected a smaller number (quote it to keep it as text)`
  if (typeof v !== 'number') return undefined
  if (!Number.isFinite(v)) return `got ${v}; expected a finite number`
  if (Math.abs(v) > Number.MAX_SAFE_INTEGER) return `got a number that reads as ${v}, beyond ${Number.MAX_SAFE_INTEGER} (2^53 - 1), where numbers stop being exact; expected a smaller number (quote it to keep it as text)`
  return undefined
}

/**
 * Own `__proto__` keys (JSON.parse and our parsers create them) are refused up front: zod
 * drops them silently, and copying them elsewhere could replace an object's prototype.
 * Numbers that parsing could not keep exact (numberProblem) are refused here too, by path.
 */
function reservedKeyProblems(root: unknown): Problem[] {
  const problems: Problem[] = []
  const stack: { value: unknown; path: PropertyKey[] }[] = [{ value: root, path: [] }]
  let visited = 0
  while (stack.length > 0 && visited++ < 1_000_000 && problems.length < MAX_SYNTAX_PROBLEMS) {
    const { value, path } = stack.pop()!
    const bad = numberProblem(value)
    if (bad !== undefined) problems.push({ path: formatPath(path), message: bad })
    if (typeof value !== 'object' || value === null || path.length > MAX_NESTING_DEPTH) continue
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push({ value: value[i] as unknown, path: [...path, i] })
      continue
    }
    if (Object.prototype.hasOwnProperty.call(value, '__proto__')) {
      problems.push({ path: formatPath([...path, '__proto__']), message: 'got the reserved key "__proto__"; expected ordinary keys' })
    }
    for (const [k, v] of Object.entries(value)) stack.push({ value: v as unknown, path: [...path, k] })
  }
  return problems
}

export function issuesToProblems(issues: readonly z.core.$ZodIssue[]): Problem[] {
  const problems: Problem[] = []
  const seen = new Set<string>()
  const add = (path: string, message: string) => {
    const id = `${path}\u0000${message}`
    if (seen.has(id)) return
    seen.add(id)
    problems.push({ path, message })
  }
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) add(formatPath([...issue.path, key]), `unknown key ${JSON.stringify(key)}`)
    } else {
      add(formatPath(issue.path), issue.message)
    }
  }
  return problems
}

/** Parses template text in the given format and validates it. */
export function parseTemplateText(text: string, format: TemplateFormat): ParseResult {
  const bytes = Buffer.byteLength(text, 'utf8')
  if (bytes > MAX_TEMPLATE_BYTES) {
    return failure([{ path: '$', message: `template is ${bytes} bytes; expected at most ${MAX_TEMPLATE_BYTES} bytes (1 MiB)` }])
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  const tooDeep = format === 'json' ? jsonNestingProblem(text) : format === 'yaml' ? yamlNestingProblem(text) : undefined
  if (tooDeep !== undefined) return failure([tooDeep])
  let parsed: Parsed
  try {
    parsed = format === 'yaml' ? parseYaml(text) : format === 'toml' ? parseTomlText(text) : parseJson(text)
  } catch (e) {
    return failure([{ path: '$', message: `cannot parse ${format.toUpperCase()}: ${clip(e instanceof Error ? e.message : String(e))}` }])
  }
  if ('problems' in parsed) return failure(parsed.problems)
  return parseTemplateObject(parsed.value)
}

function nestingProblem(lines: LineIndex, offset: number): Problem {
  return { path: '$', message: `line ${lines.at(offset)}: nesting is deeper than ${MAX_NESTING_DEPTH} levels; expected a shallower document` }
}

/** Exact bracket depth of JSON text, outside strings. */
function jsonNestingProblem(text: string): Problem | undefined {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 0x5c) i++ // backslash: skip the escaped character
      else if (c === 0x22) inString = false
    } else if (c === 0x22) inString = true
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > MAX_NESTING_DEPTH) return nestingProblem(new LineIndex(text), i)
    } else if (c === 0x5d || c === 0x7d) depth = Math.max(0, depth - 1)
  }
  return undefined
}

/**
 * Conservative YAML nesting estimate: flow brackets outside quotes and comments (quote state
 * is reset at each line end), and per line the indentation plus compact "- "/"? " indicators.
 */
function yamlNestingProblem(text: string): Problem | undefined {
  let depth = 0
  let quote = 0
  let lineStart = true
  let indent = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x0a) {
      quote = 0
      lineStart = true
      indent = 0
      continue
    }
    if (lineStart) {
      if (c === 0x20 || c === 0x09 || ((c === 0x2d || c === 0x3f) && (text.charCodeAt(i + 1) === 0x20 || text.charCodeAt(i + 1) === 0x0a))) {
        if (++indent > MAX_YAML_INDENT) {
          return { path: '$', message: `line ${new LineIndex(text).at(i)}: indentation or nesting is deeper than ${MAX_YAML_INDENT} levels; expected a shallower document` }
        }
        continue
      }
      lineStart = false
    }
    if (quote !== 0) {
      if (quote === 0x22 && c === 0x5c) i++
      else if (c === quote) quote = 0
    } else if (c === 0x22 || c === 0x27) quote = c
    else if (c === 0x23 && (i === 0 || text.charCodeAt(i - 1) === 0x20 || text.charCodeAt(i - 1) === 0x09)) {
      while (i + 1 < text.length && text.charCodeAt(i + 1) !== 0x0a) i++ // comment
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > MAX_NESTING_DEPTH) return nestingProblem(new LineIndex(text), i)
    } else if (c === 0x5d || c === 0x7d) depth = Math.max(0, depth - 1)
  }
  return undefined
}

type Parsed = { value: unknown } | { problems: Problem[] }

// ---------------------------------------------------------------------------------------------
// JSON

class LineIndex {
  private readonly starts: number[] = [0]
  constructor(text: string) {
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.starts.push(i + 1)
  }
  /** 1-based `line:column` of a 0-based offset. */
  at(offset: number): string {
    let lo = 0
    let hi = this.starts.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if ((this.starts[mid] ?? 0) <= offset) lo = mid
      else hi = mid - 1
    }
    return `${lo + 1}:${offset - (this.starts[lo] ?? 0) + 1}`
  }
}

const JSON_ERRORS: Record<number, string> = {
  1: 'unexpected character',
  2: 'invalid number',
  3: 'expected a property name in double quotes',
  4: 'expected a value',
  5: 'expected ":"',
  6: 'expected "," or a closing bracket',
  7: 'expected "}"',
  8: 'expected "]"',
  9: 'expected the end of the document',
  10: 'comments are not allowed in JSON',
  11: 'unterminated comment',
  12: 'unterminated string',
  13: 'unterminated number',
  14: 'invalid unicode escape',
  15: 'invalid escape character',
  16: 'invalid character in string',
}

/** Sets an own property, even for `__proto__` (which the schema then reports as unknown). */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })
}

function parseJson(text: string): Parsed {
  const lines = new LineIndex(text)
  const errors: ParseError[] = []
  const root = parseTree(text, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false })
  if (errors.length > 0) {
    return {
      problems: errors.slice(0, MAX_SYNTAX_PROBLEMS).map((e) => ({
        path: '$',
        message: `line ${lines.at(e.offset)}: JSON syntax error: ${JSON_ERRORS[e.error] ?? `error ${e.error}`}${e.error === 1 ? ` ${JSON.stringify(text.slice(e.offset, e.offset + Math.min(Math.max(e.length, 1), 20)))}` : ''}`,
      })),
    }
  }
  if (root === undefined) return { problems: [{ path: '$', message: 'empty document; expected a JSON object' }] }

  const problems: Problem[] = []
  const build = (node: JsonNode, path: PropertyKey[]): unknown => {
    switch (node.type) {
      case 'object': {
        const out: Record<string, unknown> = {}
        const firstSeen = new Map<string, number>()
        for (const property of node.children ?? []) {
          const [keyNode, valueNode] = property.children ?? []
          if (keyNode === undefined) continue
          const key = String(keyNode.value)
          const first = firstSeen.get(key)
          if (first !== undefined) {
            problems.push({
              path: formatPath([...path, key]),
              message: `duplicate key ${JSON.stringify(key)} at line ${lines.at(keyNode.offset)} (first at line ${lines.at(first)}); expected each key once in an object`,
            })
          } else firstSeen.set(key, keyNode.offset)
          setOwn(out, key, valueNode === undefined ? undefined : build(valueNode, [...path, key]))
        }
        return out
      }
      case 'array':
        return (node.children ?? []).map((child, i) => build(child, [...path, i]))
      default:
        return node.value
    }
  }
  const value = build(root, [])
  return problems.length > 0 ? { problems } : { value }
}

// ---------------------------------------------------------------------------------------------
// YAML

function parseYaml(text: string): Parsed {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, uniqueKeys: false, prettyErrors: false, strict: true, version: '1.2' })
  const at = (offset: number) => {
    const pos = lineCounter.linePos(offset)
    return `${pos.line}:${pos.col}`
  }
  if (doc.errors.length > 0) {
    return {
      problems: doc.errors.slice(0, MAX_SYNTAX_PROBLEMS).map((e) => ({
        path: '$',
        message: `line ${at(e.pos[0])}: YAML syntax error: ${clip(e.message.split('\n')[0] ?? '')}`,
      })),
    }
  }

  const problems: Problem[] = []
  const walk = (node: unknown, path: PropertyKey[]): void => {
    if (isMap(node)) {
      const firstSeen = new Map<string, number>()
      for (const pair of node.items) {
        const keyNode = pair.key as YamlNode | null
        const offset = keyNode?.range?.[0] ?? 0
        let key: string
        if (keyNode === null || keyNode === undefined) key = ''
        else if (isScalar(keyNode)) key = String(keyNode.value)
        else {
          problems.push({ path: formatPath(path), message: `line ${at(offset)}: got a complex (non-scalar) key; expected plain string keys` })
          continue
        }
        const first = firstSeen.get(key)
        if (first !== undefined) {
          problems.push({
            path: formatPath([...path, key]),
            message: `duplicate key ${JSON.stringify(key)} at line ${at(offset)} (first at line ${at(first)}); expected each key once in a mapping`,
          })
        } else firstSeen.set(key, offset)
        walk(pair.value, [...path, key])
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => walk(item, [...path, i]))
    } else if (isAlias(node)) {
      // The anchored node is checked where it is defined.
    }
  }
  walk(doc.contents, [])
  if (problems.length > 0) return { problems }

  try {
    return { value: doc.toJS({ maxAliasCount: MAX_YAML_ALIAS_COUNT }) }
  } catch (e) {
    return { problems: [{ path: '$', message: `YAML error: ${clip(e instanceof Error ? e.message : String(e))}` }] }
  }
}

// ---------------------------------------------------------------------------------------------
// TOML

const TOML_PROBE = '__chorus_duplicate_probe__'

/** Reads a (dotted) TOML key starting at `start`; returns its segments and end index. */
function readTomlKey(line: string, start: number): { segments: string[]; end: number } | undefined {
  const segments: string[] = []
  let i = start
  for (;;) {
    while (line[i] === ' ' || line[i] === '\t') i++
    const c = line[i]
    if (c === '"') {
      let j = i + 1
      while (j < line.length && line[j] !== '"') j += line[j] === '\\' ? 2 : 1
      try {
        segments.push(JSON.parse(line.slice(i, j + 1)) as string)
      } catch {
        segments.push(line.slice(i + 1, j))
      }
      i = j + 1
    } else if (c === "'") {
      const j = line.indexOf("'", i + 1)
      if (j < 0) return undefined
      segments.push(line.slice(i + 1, j))
      i = j + 1
    } else {
      const m = /^[A-Za-z0-9_-]+/.exec(line.slice(i))
      if (m === null) break
      segments.push(m[0])
      i += m[0].length
    }
    while (line[i] === ' ' || line[i] === '\t') i++
    if (line[i] !== '.') break
    i++
  }
  return segments.length > 0 ? { segments, end: i } : undefined
}

function findProbe(value: unknown, path: PropertyKey[]): PropertyKey[] | undefined {
  if (Array.isArray(value)) {
    for (let i = value.length - 1; i >= 0; i--) {
      const found = findProbe(value[i], [...path, i])
      if (found !== undefined) return found
    }
  } else if (typeof value === 'object' && value !== null) {
    if (Object.prototype.hasOwnProperty.call(value, TOML_PROBE)) return path
    for (const [k, v] of Object.entries(value)) {
      const found = findProbe(v, [...path, k])
      if (found !== undefined) return found
    }
  }
  return undefined
}

/**
 * Best-effort path of the key smol-toml refused as a redefinition at `line`:`column` (1-based).
 * The enclosing table is found by parsing the text before that line with a probe key appended.
 */
function tomlDuplicatePath(text: string, line: number, column: number): PropertyKey[] | undefined {
  const lines = text.split(/\r?\n/)
  const errLine = lines[line - 1]
  if (errLine === undefined) return undefined
  const first = errLine.search(/\S/)
  if (first < 0) return undefined
  if (errLine[first] === '[') {
    // A table header: resolve it against the text before it, so arrays of tables get the
    // index of their last element (the one a header refers to).
    const header = readTomlKey(errLine, first + (errLine[first + 1] === '[' ? 2 : 1))
    if (header === undefined) return undefined
    let node: unknown
    try {
      node = parseToml(lines.slice(0, line - 1).join('\n'))
    } catch {
      return header.segments
    }
    const path: PropertyKey[] = []
    for (const segment of header.segments) {
      if (Array.isArray(node) && node.length > 0) {
        path.push(node.length - 1)
        node = node[node.length - 1]
      }
      path.push(segment)
      node = typeof node === 'object' && node !== null ? (node as Record<string, unknown>)[segment] : undefined
    }
    return path
  }
  const lineKey = readTomlKey(errLine, first)
  if (lineKey === undefined) return undefined
  let context: PropertyKey[] = []
  try {
    const prefix = `${lines.slice(0, line - 1).join('\n')}\n${TOML_PROBE} = true\n`
    context = findProbe(parseToml(prefix), []) ?? []
  } catch {
    return undefined
  }
  const path: PropertyKey[] = [...context, ...lineKey.segments]
  // Inside an inline table (`a = {b = 1, b = 2}`) the column points at the inner key.
  if (column - 1 > lineKey.end) {
    const inner = readTomlKey(errLine, column - 1)
    if (inner !== undefined) path.push(...inner.segments)
  }
  return path
}

function parseTomlText(text: string): Parsed {
  try {
    return { value: parseToml(text) }
  } catch (e) {
    if (!(e instanceof TomlError)) {
      return { problems: [{ path: '$', message: `TOML error: ${clip(e instanceof Error ? e.message : String(e))}` }] }
    }
    const reason = clip((e.message.split('\n')[0] ?? '').replace(/^Invalid TOML document:\s*/, ''))
    if (/redefine|already defined|duplicate/i.test(reason)) {
      const path = tomlDuplicatePath(text, e.line, e.column)
      const key = path?.[path.length - 1]
      return {
        problems: [{
          path: path === undefined ? '$' : formatPath(path),
          message: `duplicate key${key === undefined ? '' : ` ${JSON.stringify(String(key))}`} at line ${e.line}:${e.column} (${reason}); expected each key and table to be defined once`,
        }],
      }
    }
    return { problems: [{ path: '$', message: `line ${e.line}:${e.column}: TOML syntax error: ${reason}` }] }
  }
}

/** One line per problem: `FILE: json.path: message`. */
export function formatProblems(file: string, problems: Problem[]): string[] {
  return problems.map((p) => `${file}: ${p.path}: ${p.message}`)
}
