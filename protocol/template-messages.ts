// Messages of the template schemas: every problem says what was got and what is expected
// ("target.groups[0].batchSize.type: got "percentage"; expected one of "number", "percent""),
// with a "did you mean" hint for unknown keys. protocol/template.ts re-exports the public names.
import { z } from 'zod'
import { MAX_QUOTED_KEYS, MAX_QUOTED_VALUE_CHARS } from './template-bounds.js'

// ---------------------------------------------------------------------------------------------
// Message helpers.

/** Short human description of a value for "got ..." messages. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing'
  if (value === null) return 'null'
  if (typeof value === 'string') {
    const shown = value.length > MAX_QUOTED_VALUE_CHARS ? `${value.slice(0, MAX_QUOTED_VALUE_CHARS - 3)}...` : value
    return JSON.stringify(shown) + (value.length > MAX_QUOTED_VALUE_CHARS ? ` (${value.length} characters)` : '')
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
    const shown = keys.slice(0, MAX_QUOTED_KEYS).join(', ') + (keys.length > MAX_QUOTED_KEYS ? ', ...' : '')
    return `an object {${shown}}`
  }
  return `a ${typeof value}`
}

export function quoteList(values: readonly string[]): string {
  return values.map((v) => JSON.stringify(v)).join(', ')
}

export function expectOneOf(values: readonly string[]): string {
  return values.length === 1 ? `expected ${quoteList(values)}` : `expected one of ${quoteList(values)}`
}

export function got(input: unknown): string {
  return input === undefined ? 'missing required field' : `got ${describeValue(input)}`
}


/** "Did you mean": a known key this many edits (Levenshtein) from an unknown one is always suggested, in edits. */
const SUGGEST_MIN_EDITS = 2
/** ... and one edit more is allowed per this many characters of the unknown key, in characters. */
const SUGGEST_CHARS_PER_EDIT = 3
/** An unknown key at least this long that is a prefix of a known one (or extends it) counts as one edit, in characters. */
const SUGGEST_MIN_PREFIX_CHARS = 3

/** Levenshtein distance, used for "did you mean" hints on unknown keys. */
export function editDistance(a: string, b: string): number {
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

export function suggestion(key: string, known: readonly string[]): string {
  const sameLetters = known.find((k) => k.toLowerCase() === key.toLowerCase())
  if (sameLetters !== undefined) return ` (did you mean "${sameLetters}"? keys are case-sensitive)`
  let best: string | undefined
  let bestDistance = Infinity
  for (const k of known) {
    const kl = k.toLowerCase()
    const keyl = key.toLowerCase()
    // A truncated or extended key (schedule / scheduleRule) counts as close.
    const d = key.length >= SUGGEST_MIN_PREFIX_CHARS && (kl.startsWith(keyl) || keyl.startsWith(kl)) ? 1 : editDistance(key, k)
    if (d < bestDistance) {
      best = k
      bestDistance = d
    }
  }
  return best !== undefined && bestDistance <= Math.max(SUGGEST_MIN_EDITS, Math.floor(key.length / SUGGEST_CHARS_PER_EDIT)) ? ` (did you mean "${best}"?)` : ''
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

export function sizeText(origin: string, n: number | bigint): string {
  switch (origin) {
    case 'string': return `${n} character${n === 1 ? '' : 's'}`
    case 'array': case 'set': return `${n} item${n === 1 ? '' : 's'}`
    default: return String(n)
  }
}

export function actualSize(origin: string, input: unknown): string {
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
