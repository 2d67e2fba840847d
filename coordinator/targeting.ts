// Which nodes a group targets: attribute filters (Node Management style constraints), skill
// version constraints, and a search query in the spirit of Push Jobs' `--search`. Pure.
import type { RE2JS } from 're2js'
import { compareVersions, matchSkillVersion, parseVersionConstraint } from '../protocol/version.js'
import { compilePattern, matchesWildcard, testPattern } from '../protocol/pattern.js'
import type { Query } from '../protocol/query.js'
import { FILTER_OPERATORS } from '../protocol/template.js'

export { MAX_QUERY_CHARS, parseQuery, type Query } from '../protocol/query.js'

function describePattern(v: string): string {
  return JSON.stringify(v.length > 120 ? `${v.slice(0, 117)}...` : v)
}

export interface NodeView {
  nodeId: string
  facts: Record<string, string>
  /** Installed skills (interpreters) and their versions. */
  skills: Record<string, string[]>
}

export interface AttributeConstraint {
  name: string
  operator: string
  value?: string[]
}

export interface SkillConstraint {
  name: string
  version?: string[]
}

/**
 * Attribute operators (case-insensitive). Every operator but the negated ones is true when ANY
 * of the listed values matches; the negated ones are true when NONE does. A node without the
 * attribute matches only the negated operators.
 *   =, EQ, IN           equal to a value
 *   !=, NE, NOT IN      equal to none of the values
 *   MATCHES             matches a regular expression (RE2 syntax, linear time, unanchored)
 *   NOT MATCHES         matches none of the regular expressions
 *   STARTS_WITH, ENDS_WITH, CONTAINS    string tests
 *   >, >=, <, <=        numeric when both sides are numbers, else version order (1.10 > 1.9)
 */
export const ATTRIBUTE_OPERATORS = FILTER_OPERATORS

function compareValues(a: string, b: string): number {
  const x = Number(a)
  const y = Number(b)
  if (a.trim() !== '' && b.trim() !== '' && Number.isFinite(x) && Number.isFinite(y)) return x - y
  return compareVersions(a, b) ?? a.localeCompare(b)
}

/** Compiles one attribute constraint, or says what is wrong with it. */
export function compileAttribute(c: AttributeConstraint): ((facts: Record<string, string>) => boolean) | { error: string; field: 'operator' | 'value' } {
  const op = c.operator.trim().toUpperCase().replace(/\s+/g, ' ')
  const values = c.value ?? []
  const has = (f: Record<string, string>) => f[c.name] !== undefined
  switch (op) {
    case '=': case 'EQ': case 'IN':
      return (f) => has(f) && values.includes(f[c.name]!)
    case '!=': case 'NE': case 'NOT IN':
      return (f) => !has(f) || !values.includes(f[c.name]!)
    case 'MATCHES': case 'NOT MATCHES': {
      const res: RE2JS[] = []
      for (const v of values) {
        const compiled = compilePattern(v)
        if (!compiled.ok) return { error: `${describePattern(v)}: ${compiled.message}`, field: 'value' }
        res.push(compiled.re)
      }
      const any = (text: string) => res.some((r) => testPattern(r, text))
      return op === 'MATCHES' ? (f) => has(f) && any(f[c.name]!) : (f) => !has(f) || !any(f[c.name]!)
    }
    case 'STARTS_WITH': return (f) => has(f) && values.some((v) => f[c.name]!.startsWith(v))
    case 'ENDS_WITH': return (f) => has(f) && values.some((v) => f[c.name]!.endsWith(v))
    case 'CONTAINS': return (f) => has(f) && values.some((v) => f[c.name]!.includes(v))
    case '>': return (f) => has(f) && values.some((v) => compareValues(f[c.name]!, v) > 0)
    case '>=': return (f) => has(f) && values.some((v) => compareValues(f[c.name]!, v) >= 0)
    case '<': return (f) => has(f) && values.some((v) => compareValues(f[c.name]!, v) < 0)
    case '<=': return (f) => has(f) && values.some((v) => compareValues(f[c.name]!, v) <= 0)
    default:
      return { error: `unsupported operator ${JSON.stringify(c.operator)}; expected one of ${ATTRIBUTE_OPERATORS.map((o) => `"${o}"`).join(', ')}`, field: 'operator' }
  }
}

/** A skill constraint holds when some installed version satisfies every listed constraint ("<= 1.9.996", "= 0.1.0", "4.x"). */
export function compileSkill(c: SkillConstraint): ((skills: Record<string, string[]>) => boolean) | { error: string } {
  for (const text of c.version ?? []) {
    const parsed = parseVersionConstraint(text)
    if ('error' in parsed) return { error: `invalid version constraint ${JSON.stringify(text)}: ${parsed.error}; expected e.g. ">= 1.2", "= 0.1.0", "4.x"` }
  }
  const all = (c.version ?? []).join(', ')
  return (skills) => matchSkillVersion(skills[c.name] ?? [], {}, all) !== undefined
}

// ---------------------------------------------------------------------------------------------
// Search queries: the grammar and parser are in protocol/query.ts (validate checks them too).

export function matchQuery(q: Query, node: NodeView): boolean {
  switch (q.kind) {
    case 'not': return !matchQuery(q.q, node)
    case 'and': return q.qs.every((x) => matchQuery(x, node))
    case 'or': return q.qs.some((x) => matchQuery(x, node))
    case 'term': {
      const test = (text: string) => matchesWildcard(q.pattern, text)
      if (q.name === 'node') return test(node.nodeId)
      if (q.name === 'skill') return Object.keys(node.skills).some(test)
      const v = node.facts[q.name]
      return v !== undefined && test(v)
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Warnings: targets named by id that the coordinator has never seen (they run once they join).

export interface TargetWarning {
  path: string
  message: string
}

/** Warnings listed per plan or submit; one last warning counts the rest. */
export const MAX_TARGET_WARNINGS = 100

/** Node ids of `nodes` groups and saved lists that `known` does not know, with their paths. */
export function unknownTargetWarnings(
  groups: readonly { nodeListType: string; nodeIdentifiers?: readonly string[]; listId?: string | undefined }[],
  listNodes: (listId: string) => readonly string[] | undefined,
  known: (nodeId: string) => boolean,
): TargetWarning[] {
  const found: TargetWarning[] = []
  const message = (id: string) => `node ${JSON.stringify(id)} has never been seen by this coordinator; it runs only once its agent joins (check the spelling)`
  groups.forEach((g, gi) => {
    if (g.nodeListType === 'nodes') {
      (g.nodeIdentifiers ?? []).forEach((id, j) => { if (!known(id)) found.push({ path: `target.groups[${gi}].nodeIdentifiers[${j}]`, message: message(id) }) })
    } else if (g.nodeListType === 'savedList' && g.listId !== undefined) {
      for (const id of listNodes(g.listId) ?? []) if (!known(id)) found.push({ path: `target.groups[${gi}].listId`, message: `saved list ${JSON.stringify(g.listId)}: ${message(id)}` })
    }
  })
  if (found.length <= MAX_TARGET_WARNINGS) return found
  const rest = found.length - MAX_TARGET_WARNINGS
  return [...found.slice(0, MAX_TARGET_WARNINGS), { path: 'target', message: `${rest} more node${rest === 1 ? '' : 's'} never seen by this coordinator` }]
}
