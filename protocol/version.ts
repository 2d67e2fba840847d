// Skill and attribute versions. Numeric dot parts of any length (Chef writes 4-part versions
// such as 1.9.996.1 or 18.2.7.1; missing parts count as 0, so "1" = "1.0.0"), then, on a tie,
// pre-releases as semver orders them (the `semver` package's identifier order: numeric
// identifiers numerically, below alphanumeric ones; a shorter prefix first; a release above
// its pre-releases: 1.0.0-rc.2 < 1.0.0-rc.10 < 1.0.0). Build metadata (+...) is ignored.
//
// Ranges follow semver for pre-releases too: a pre-release version satisfies a set of
// constraints (and min/max bounds) only when one of them names a pre-release of the same
// numeric version, so "< 2.0.0" does not take 2.0.0-rc.1, while ">= 2.0.0-rc.1" does. With
// no constraint at all, any installed version is taken. Chef's `~>` and wildcards stay.
import semver from 'semver'

export interface ParsedVersion {
  parts: number[]
  pre: string
}

export function parseVersion(v: string): ParsedVersion | undefined {
  const m = /^\s*v?(\d{1,15}(?:\.\d{1,15}){0,15})(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?\s*$/.exec(v)
  if (!m) return undefined
  const parts = m[1]!.split('.').map(Number)
  if (parts.some((n) => !Number.isSafeInteger(n))) return undefined
  return { parts, pre: m[2] ?? '' }
}

/**
 * Orders versions (see the header). Undefined when either does not parse.
 */
export function compareVersions(a: string, b: string): number | undefined {
  const x = parseVersion(a)
  const y = parseVersion(b)
  if (!x || !y) return undefined
  return compareParsed(x, y)
}

function compareParts(x: ParsedVersion, y: ParsedVersion): number {
  for (let i = 0; i < Math.max(x.parts.length, y.parts.length); i++) {
    const d = (x.parts[i] ?? 0) - (y.parts[i] ?? 0)
    if (d !== 0) return d < 0 ? -1 : 1
  }
  return 0
}

/** semver's pre-release order, identifier by identifier. */
function comparePre(a: string, b: string): number {
  if (a === b) return 0
  if (a === '') return 1
  if (b === '') return -1
  const x = a.split('.')
  const y = b.split('.')
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (x[i] === undefined) return -1
    if (y[i] === undefined) return 1
    const d = semver.compareIdentifiers(x[i]!, y[i]!)
    if (d !== 0) return d
  }
  return 0
}

export function compareParsed(x: ParsedVersion, y: ParsedVersion): number {
  return compareParts(x, y) || comparePre(x.pre, y.pre)
}

/** One comparator: its test and, when it names a version, that version (for pre-releases). */
interface Clause {
  test: (v: ParsedVersion) => boolean
  target?: ParsedVersion
}

const ORDER_TESTS: Record<string, (d: number) => boolean> = {
  '=': (d) => d === 0, '==': (d) => d === 0, '!=': (d) => d !== 0,
  '>': (d) => d > 0, '>=': (d) => d >= 0, '<': (d) => d < 0, '<=': (d) => d <= 0,
}

function wildcardClause(op: string, ver: string): Clause | { error: string } | undefined {
  const wild = /^(?:(\d{1,15}(?:\.\d{1,15})*)\.)?[xX*]$/.exec(ver)
  if (!wild) return undefined
  if (op !== '=' && op !== '==') return { error: `wildcard ${ver} only works with = (got ${op})` }
  const prefix = wild[1] ? wild[1].split('.').map(Number) : []
  return { test: (v) => prefix.every((n, i) => (v.parts[i] ?? 0) === n) }
}

/** `~> 1.2` means >= 1.2 and < 2; `~> 1.2.3` means >= 1.2.3 and < 1.3 (any number of parts). */
function pessimisticClause(target: ParsedVersion): Clause {
  const n = target.parts.length
  const upper = n <= 1 ? [target.parts[0]! + 1] : [...target.parts.slice(0, n - 2), target.parts[n - 2]! + 1]
  const up: ParsedVersion = { parts: upper, pre: '' }
  return { target, test: (v) => compareParsed(v, target) >= 0 && compareParsed(v, up) < 0 }
}

function parseClause(raw: string): Clause | { error: string } {
  const m = /^\s*(==|=|!=|>=|<=|>|<|~>)?\s*(\S+)\s*$/.exec(raw)
  if (!m) return { error: `invalid version constraint ${JSON.stringify(raw.trim().slice(0, 60))}` }
  const op = m[1] ?? '='
  const ver = m[2]!
  const wild = wildcardClause(op, ver)
  if (wild !== undefined) return wild
  const target = parseVersion(ver)
  if (!target) return { error: `invalid version ${JSON.stringify(ver.slice(0, 60))} in constraint` }
  if (op === '~>') return pessimisticClause(target)
  const order = ORDER_TESTS[op]!
  return { target, test: (v) => order(compareParsed(v, target)) }
}

/**
 * Parses a filter-skill version constraint: comma-separated clauses, each `OP VERSION` with
 * OP one of = == != > >= < <= ~> (no OP means =), or a wildcard `4.x` / `4.*` / `*`
 * (optionally after = or ==).
 */
export function parseVersionConstraint(constraint: string): Clause[] | { error: string } {
  const clauses: Clause[] = []
  const text = constraint.trim()
  if (text === '') return clauses
  for (const raw of text.split(',')) {
    const c = parseClause(raw)
    if ('error' in c) return c
    clauses.push(c)
  }
  return clauses
}

/** Whether `v` satisfies every clause, with semver's rule for pre-releases (see the header). */
function satisfies(v: ParsedVersion, clauses: readonly Clause[]): boolean {
  if (!clauses.every((c) => c.test(v))) return false
  if (v.pre === '' || clauses.length === 0) return true
  return clauses.some((c) => c.target !== undefined && c.target.pre !== '' && compareParts(c.target, v) === 0)
}

/**
 * The highest installed version with minVersion <= v <= maxVersion (bounds optional) that also
 * satisfies `constraint` (parseVersionConstraint). Installed versions that do not parse are
 * ignored; an invalid bound or constraint matches nothing.
 */
export function matchSkillVersion(installed: readonly string[], skill: { minVersion?: string; maxVersion?: string }, constraint?: string): string | undefined {
  const clauses = constraint === undefined ? [] : parseVersionConstraint(constraint)
  if (!Array.isArray(clauses)) return undefined
  for (const [bound, op] of [[skill.minVersion, '>='], [skill.maxVersion, '<=']] as const) {
    if (!bound) continue
    const c = parseClause(`${op} ${bound}`)
    if ('error' in c) return undefined
    clauses.push(c)
  }
  let best: { raw: string; v: ParsedVersion } | undefined
  for (const raw of installed) {
    const v = parseVersion(raw)
    if (!v || !satisfies(v, clauses)) continue
    if (!best || compareParsed(v, best.v) > 0) best = { raw, v }
  }
  return best?.raw
}
