// Bounded pattern evaluation. Every regular expression a template, a filter or a query supplies
// runs here, on RE2 (re2js, pure JavaScript): matching is linear in the input whatever the
// pattern, so `(a+)+$` cannot hang an agent or the coordinator. RE2 syntax is close to
// JavaScript's, minus backreferences (`\1`) and lookaround (`(?=`, `(?!`, `(?<=`, `(?<!`),
// which cannot be matched in linear time and are refused (validate names the field).
//
// Wildcards (`*` any run, `?` one character) in search queries use a two-pointer greedy
// matcher: O(pattern × text) in the worst case, no regex, no backtracking explosion.
import { RE2JS } from 're2js'

/** Compiled patterns kept (least recently used dropped first). */
export const MAX_CACHED_PATTERNS = 256

const cache = new Map<string, RE2JS>()

export type CompiledPattern = { ok: true; re: RE2JS } | { ok: false; message: string }

function remember(source: string, re: RE2JS): void {
  cache.set(source, re)
  if (cache.size > MAX_CACHED_PATTERNS) cache.delete(cache.keys().next().value as string)
}

function explain(source: string, err: unknown): string {
  const raw = err instanceof Error ? err.message : String(err)
  const detail = raw.length > 120 ? `${raw.slice(0, 117)}...` : raw
  const hint = /\\[1-9]|\(\?<?[=!]/.test(source)
    ? '; backreferences and lookaround are not supported (patterns use RE2 syntax, matched in linear time)'
    : '; expected an RE2 regular expression'
  return `invalid regular expression: ${detail}${hint}`
}

/** Compiles (or takes from the cache) a pattern with RE2 semantics. */
export function compilePattern(source: string): CompiledPattern {
  const hit = cache.get(source)
  if (hit !== undefined) {
    cache.delete(source)
    cache.set(source, hit)
    return { ok: true, re: hit }
  }
  try {
    const re = RE2JS.compile(source)
    remember(source, re)
    return { ok: true, re }
  } catch (err) {
    return { ok: false, message: explain(source, err) }
  }
}

/** Why a pattern cannot be used, or undefined when it compiles. */
export function patternProblem(source: string): string | undefined {
  const c = compilePattern(source)
  return c.ok ? undefined : c.message
}

/** Unanchored test (a match anywhere, as Go's regexp.MatchString). */
export function testPattern(re: RE2JS, text: string): boolean {
  return re.test(text)
}

/** Whole-string test (anchored at both ends). */
export function testPatternExact(re: RE2JS, text: string): boolean {
  return re.testExact(text)
}

/** The first match: [whole, group 1, ...] (a group that did not take part is undefined), or null. */
export function execPattern(re: RE2JS, text: string): (string | undefined)[] | null {
  const m = re.exec(text)
  return m === null ? null : Array.from(m, (g) => g ?? undefined)
}

/**
 * Whether `text` matches `pattern`, where `*` is any run of characters and `?` exactly one;
 * everything else is literal. Greedy two-pointer matching: on a mismatch, the last `*` takes
 * one more character and matching resumes after it. O(pattern × text), no recursion.
 */
export function matchesWildcard(pattern: string, text: string): boolean {
  let p = 0
  let t = 0
  let star = -1
  let resume = 0
  while (t < text.length) {
    const c = pattern[p]
    if (c !== undefined && c !== '*' && (c === '?' || c === text[t])) {
      p++
      t++
    } else if (c === '*') {
      star = p++
      resume = t
    } else if (star >= 0) {
      p = star + 1
      t = ++resume
    } else return false
  }
  while (pattern[p] === '*') p++
  return p === pattern.length
}
