// Redaction of sensitive values (sensitive expected inputs and sensitive outputs) from
// everything a step produces before it is stored, logged or sent: stdout, stderr, the
// failure reason, output values and condition explanations. Pure functions.
//
// What counts as an occurrence of a secret S:
//   * S itself;
//   * S without surrounding whitespace (an output taken with `content` ends in "\n", but the
//     value usually shows up inside other text without it);
//   * S as it appears inside a JSON string literal (quotes, backslashes and control
//     characters escaped), so JSON logs and JSON interpreter output are covered too.
// Empty (or all-whitespace) secrets are ignored. Longer variants are replaced first, so a
// secret that contains another is removed whole. Redaction cannot catch transformed copies
// (base64, split across lines, case-changed): sensitive values should not be printed at all.

export const REDACTED = '[REDACTED]'

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** The literal strings that will be replaced for a set of secrets, longest first. */
export function secretVariants(secrets: Iterable<string>): string[] {
  const variants = new Set<string>()
  for (const s of secrets) {
    if (typeof s !== 'string') continue
    for (const v of [s, s.trim()]) {
      if (v.trim() === '') continue
      variants.add(v)
      const json = JSON.stringify(v).slice(1, -1)
      if (json !== v) variants.add(json)
    }
  }
  return [...variants].sort((a, b) => b.length - a.length || (a < b ? -1 : 1))
}

/** A reusable redactor for one set of secrets (builds the pattern once). */
export function makeRedactor(secrets: Iterable<string>): (text: string) => string {
  const variants = secretVariants(secrets)
  if (variants.length === 0) return (text) => text
  const pattern = new RegExp(variants.map(escapeRegExp).join('|'), 'g')
  return (text) => (text === '' ? text : text.replace(pattern, REDACTED))
}

/** Replaces every occurrence of every secret in `text` with [REDACTED]. */
export function redact(text: string, secrets: Iterable<string>): string {
  return makeRedactor(secrets)(text)
}

/** Redacts every string inside a JSON-like value (keys included); returns a copy. */
export function redactDeep<T>(value: T, secrets: Iterable<string>): T {
  const r = makeRedactor(secrets)
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return r(v)
    if (Array.isArray(v)) return v.map(walk)
    if (typeof v === 'object' && v !== null) {
      const out: Record<string, unknown> = {}
      for (const [k, item] of Object.entries(v)) {
        Object.defineProperty(out, r(k), { value: walk(item), enumerable: true, writable: true, configurable: true })
      }
      return out
    }
    return v
  }
  return walk(value) as T
}

/**
 * Output values as they may be reported: sensitive outputs become [REDACTED] whole, others
 * are redacted for embedded secrets.
 */
export function redactOutputs(values: Record<string, string>, sensitiveNames: Iterable<string>, secrets: Iterable<string>): Record<string, string> {
  const hidden = new Set(sensitiveNames)
  const r = makeRedactor(secrets)
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(values)) out[k] = hidden.has(k) ? REDACTED : r(v)
  return out
}
