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

/**
 * The values of a step's sensitive expected inputs (available from earlier steps, else their
 * default): they must be redacted from whatever the step leaves behind, even when the step
 * fails before it runs (a refused command, a failed input check).
 */
export function sensitiveInputValues(expectedInputs: Record<string, { sensitive?: boolean; default?: unknown }> | undefined, available: Record<string, string>): string[] {
  const out: string[] = []
  for (const [name, spec] of Object.entries(expectedInputs ?? {})) {
    if (spec.sensitive !== true) continue
    const v = Object.prototype.hasOwnProperty.call(available, name) ? available[name] : spec.default === undefined ? undefined : String(spec.default)
    if (v !== undefined && v.trim() !== '') out.push(v)
  }
  return out
}

/**
 * Interpreters whose substituted command becomes a program's argv, readable by every local user
 * in /proc/PID/cmdline while it runs, with the `args` keys that go to the environment instead.
 */
const ARGV_INTERPRETERS: Record<string, readonly string[]> = {
  'chorus/exec-interpreter': [],
  'chef-platform/chef-client-interpreter': [],
  'chef-platform/inspec-interpreter': ['licenseKey', 'licenseServer'],
  'chef-platform/ansible-interpreter': [],
  'chef-platform/restart-interpreter': [],
}

function argvStrings(interpreter: string, command: unknown): string[] {
  const envKeys = ARGV_INTERPRETERS[interpreter]
  if (envKeys === undefined || typeof command !== 'object' || command === null) return []
  const c = command as Record<string, unknown>
  if (Array.isArray(c.argv)) return c.argv.map(String)
  const args = typeof c.args === 'object' && c.args !== null ? Object.entries(c.args as Record<string, unknown>) : []
  return [String(c.exec), ...args.filter(([k]) => !envKeys.includes(k)).map(([, v]) => (typeof v === 'string' ? v : JSON.stringify(v)))]
}

/**
 * Why a command may not run because a secret would be in a program's argv (see
 * ARGV_INTERPRETERS), or undefined. The shell interpreter's script goes on stdin, an external
 * interpreter's request too: neither is in argv.
 */
export function argvExposure(interpreter: string, command: unknown, secrets: readonly string[]): string | undefined {
  const variants = secretVariants(secrets)
  if (variants.length === 0 || !argvStrings(interpreter, command).some((a) => variants.some((v) => a.includes(v)))) return undefined
  return `a sensitive value would be in the command line of ${interpreter}, which every local user can read (/proc/PID/cmdline); not run: pass secrets to chef-platform/shell-interpreter, whose script goes to the shell on stdin`
}

/** The marker a bounded capture puts where it dropped bytes (interpreters/process.ts OutputCapture). */
const OMITTED_MARKER = /(\n\[\.\.\. \d+ bytes omitted \.\.\.\]\n)/
/** Shorter pieces of a secret next to a cut are left alone (they would match ordinary text). */
export const MIN_SECRET_PIECE = 4

/**
 * Length of the longest piece of a secret (not the whole secret) that `text` ends with and the
 * secret starts with (`atEnd`), or that `text` starts with and the secret ends with; 0 if none.
 */
function pieceLength(text: string, variants: readonly string[], atEnd: boolean): number {
  let best = 0
  for (const v of variants) {
    for (let n = Math.min(v.length - 1, text.length); n >= MIN_SECRET_PIECE && n > best; n--) {
      if (atEnd ? text.endsWith(v.slice(0, n)) : text.startsWith(v.slice(v.length - n))) { best = n; break }
    }
  }
  return best
}

/**
 * Captured output keeps its head and tail and drops the middle (the "[... N bytes omitted ...]"
 * marker), before anything knows the secrets: a secret cut there survives in pieces that plain
 * redaction does not recognise. Replaces a piece of a secret (at least MIN_SECRET_PIECE
 * characters) just before or just after each marker.
 */
export function redactCuts(text: string, secrets: Iterable<string>): string {
  const variants = secretVariants(secrets)
  if (variants.length === 0 || !OMITTED_MARKER.test(text)) return text
  const parts = text.split(OMITTED_MARKER)
  for (let i = 0; i < parts.length; i += 2) {
    const seg = parts[i]!
    const end = i + 1 < parts.length ? pieceLength(seg, variants, true) : 0
    const start = i > 0 ? pieceLength(seg, variants, false) : 0
    if (start + end >= seg.length && start + end > 0) parts[i] = REDACTED
    else parts[i] = (start > 0 ? REDACTED : '') + seg.slice(start, seg.length - end) + (end > 0 ? REDACTED : '')
  }
  return parts.join('')
}
