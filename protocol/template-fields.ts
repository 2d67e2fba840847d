// Building blocks of the template schemas: closed objects (an unknown key is an error naming it),
// strings bounded in characters or UTF-8 bytes, bounded integers, maps and arrays, free-form
// values checked for size and depth, and RE2 patterns.
import { z } from 'zod'
import { patternProblem } from './pattern.js'
import { MAX_FREEFORM_DEPTH, MAX_FREEFORM_ISSUES, MAX_FREEFORM_NODES, MAX_KEY_CHARS, MAX_MAP_ENTRIES, MAX_UTF8_BYTES_PER_CHAR, MAX_VALUE_BYTES, NAME_PATTERN } from './template-bounds.js'
import { actualSize, describeValue, expectOneOf, got, suggestion } from './template-messages.js'

// ---------------------------------------------------------------------------------------------
// Building blocks.

export type Shape = Record<string, z.ZodType>

export function isObjectLike(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export const whenObject = { when: (payload: z.core.ParsePayload) => isObjectLike(payload.value) }

/**
 * An object that rejects unknown keys, one issue per key with the key in the path. Unlike
 * z.strictObject, the check runs even when other fields failed, so every typo is reported.
 * (The object is parsed loose so the check can see the extra keys, then they are dropped.)
 */
export function closedObject<S extends Shape>(shape: S, what: string, typeMessage?: (input: unknown) => string) {
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
export function text(opts: { min?: number; max: number; pattern?: RegExp; expected?: string }) {
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
export function bigText(what = 'a string', min = 0) {
  return z
    .string({ error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected ${what}` : undefined) })
    .superRefine((s, ctx) => {
      if (s.length < min) ctx.addIssue({ code: 'custom', input: s, message: `got ""; expected ${what}` })
      const n = byteLength(s)
      if (n > MAX_VALUE_BYTES) ctx.addIssue({ code: 'custom', input: s, message: `got a value of ${n} bytes; expected at most ${MAX_VALUE_BYTES} bytes` })
    })
}

export function int(min: number, max: number) {
  return z
    .int({ error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected an integer${min === 0 ? ' >= 0' : min === 1 ? ' >= 1' : ''}` : undefined) })
    .min(min)
    .max(max)
}

export function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: (iss) => `${got(iss.input)}; ${expectOneOf(values)}` })
}

/** A map keyed by names, bounded in entries. */
export function namedMap<V extends z.ZodType>(value: V, what: string) {
  const key = text({ min: 1, max: MAX_KEY_CHARS, pattern: NAME_PATTERN, expected: 'a key name made of letters, digits and "_", not starting with a digit' })
  return z
    .record(key, value, { error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected ${what}` : undefined) })
    .superRefine((map, ctx) => {
      const n = Object.keys(map).length
      if (n > MAX_MAP_ENTRIES) ctx.addIssue({ code: 'custom', input: map, message: `got ${n} entries; expected at most ${MAX_MAP_ENTRIES}` })
    })
}

export function boundedArray<T extends z.ZodType>(item: T, max: number, min = 0, what = 'an array') {
  return z
    .array(item, { error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected ${what}` : undefined) })
    .min(min, { error: (iss) => `${actualSize('array', iss.input)}; expected at least ${min} item${min === 1 ? '' : 's'}` })
    .max(max)
}

/** Checks a free-form value: JSON-like types, depth, node count and string sizes. */
export function checkFreeform(value: unknown, ctx: z.core.$RefinementCtx<unknown>, basePath: PropertyKey[] = []): void {
  let nodes = 0
  let reported = 0
  const report = (path: PropertyKey[], input: unknown, message: string) => {
    if (reported++ < MAX_FREEFORM_ISSUES) ctx.addIssue({ code: 'custom', path, input, message })
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
export function openObject(what: string) {
  return z
    .record(z.string(), z.unknown(), { error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected ${what}` : undefined) })
    .superRefine((v, ctx) => {
      const n = Object.keys(v).length
      if (n > MAX_MAP_ENTRIES) ctx.addIssue({ code: 'custom', input: v, message: `got ${n} entries; expected at most ${MAX_MAP_ENTRIES}` })
      checkFreeform(v, ctx)
    })
}

export function forwardIssues(ctx: z.core.$RefinementCtx<unknown>, prefix: PropertyKey[], issues: readonly z.core.$ZodIssue[]): void {
  for (const issue of issues) {
    ctx.addIssue({ code: 'custom', path: [...prefix, ...issue.path], input: issue.input, message: issue.message })
  }
}

/** UTF-8 size of a string; short strings (that cannot exceed MAX_VALUE_BYTES) are not measured. */
export function byteLength(s: string): number {
  return s.length * MAX_UTF8_BYTES_PER_CHAR <= MAX_VALUE_BYTES ? s.length : Buffer.byteLength(s, 'utf8')
}

/** Reports a pattern RE2 cannot use (protocol/pattern.ts) at `path`. */
export function refusePattern(ctx: z.core.$RefinementCtx<unknown>, path: PropertyKey[], source: string): void {
  const problem = patternProblem(source)
  if (problem !== undefined) ctx.addIssue({ code: 'custom', path, input: source, message: `got ${describeValue(source)}: ${problem}` })
}
