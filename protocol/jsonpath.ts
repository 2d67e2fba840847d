// The JSONPath subset of output rules (`extractMethod: jsonPath`): `$`, `.key`, `['key']` /
// `["key"]`, `[n]` (negative n counts from the end), `[*]` / `.*`. Pure; validate refuses any
// other syntax (recursive descent `..`, filters, slices) at the rule's `expression`.

function own(record: Record<string, unknown>, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(record, key)
}

type PathSegment = { kind: 'key'; key: string } | { kind: 'index'; index: number } | { kind: 'wildcard' }

const KEY = /[A-Za-z_$][A-Za-z0-9_$-]*/y
const BRACKETS: [RegExp, (m: RegExpExecArray) => PathSegment][] = [
  [/\[\s*\*\s*\]/y, () => ({ kind: 'wildcard' })],
  [/\[\s*(-?\d{1,15})\s*\]/y, (m) => ({ kind: 'index', index: Number(m[1]) })],
  [/\[\s*'((?:[^'\\]|\\.)*)'\s*\]/y, (m) => ({ kind: 'key', key: m[1]!.replace(/\\(.)/g, '$1') })],
  [/\[\s*"((?:[^"\\]|\\.)*)"\s*\]/y, (m) => ({ kind: 'key', key: m[1]!.replace(/\\(.)/g, '$1') })],
]

/** Matches a sticky regex at position i (no slicing: linear in the path). */
function at(re: RegExp, p: string, i: number): RegExpExecArray | null {
  re.lastIndex = i
  return re.exec(p)
}

function bracket(p: string, i: number): { segment: PathSegment; length: number } | undefined {
  for (const [re, make] of BRACKETS) {
    const m = at(re, p, i)
    if (m) return { segment: make(m), length: m[0].length }
  }
  return undefined
}

/** Parses `$`, `.key`, `['key']`, `["key"]`, `[n]`, `[*]`, `.*`. */
export function parseJsonPath(path: string): PathSegment[] | { error: string } {
  const p = path.trim()
  if (!p.startsWith('$')) return { error: `JSONPath ${JSON.stringify(p.slice(0, 40))} must start with $` }
  const segments: PathSegment[] = []
  let i = 1
  while (i < p.length) {
    const ch = p[i]
    if (ch === '.') {
      if (p[i + 1] === '.') return { error: 'recursive descent (..) is not supported; expected $, .key, [\'key\'], [n], [*] or .*' }
      if (p[i + 1] === '*') {
        segments.push({ kind: 'wildcard' })
        i += 2
        continue
      }
      const m = at(KEY, p, i + 1)
      if (!m) return { error: `expected a key name after "." at position ${i}` }
      segments.push({ kind: 'key', key: m[0] })
      i += 1 + m[0].length
    } else if (ch === '[') {
      const b = bracket(p, i)
      if (b === undefined) return { error: `unsupported JSONPath syntax at position ${i}: ${JSON.stringify(p.slice(i, i + 20))}; expected $, .key, ['key'], [n], [*] or .*` }
      segments.push(b.segment)
      i += b.length
    } else {
      return { error: `unexpected ${JSON.stringify(ch)} at position ${i}` }
    }
  }
  return segments
}

/** Evaluates the JSONPath subset against a parsed JSON document. No eval, no filters. */
export function evaluateJsonPath(doc: unknown, path: string): { matches: unknown[]; wildcard: boolean } | { error: string } {
  const segments = parseJsonPath(path)
  if (!Array.isArray(segments)) return segments
  let current: unknown[] = [doc]
  let wildcard = false
  for (const seg of segments) {
    const next: unknown[] = []
    for (const node of current) {
      if (seg.kind === 'wildcard') {
        wildcard = true
        if (Array.isArray(node)) next.push(...node)
        else if (typeof node === 'object' && node !== null) next.push(...Object.values(node))
      } else if (seg.kind === 'index') {
        if (Array.isArray(node)) {
          const idx = seg.index < 0 ? node.length + seg.index : seg.index
          if (idx >= 0 && idx < node.length) next.push(node[idx])
        }
      } else if (typeof node === 'object' && node !== null && !Array.isArray(node) && own(node as Record<string, unknown>, seg.key)) {
        next.push((node as Record<string, unknown>)[seg.key])
      }
    }
    current = next
  }
  return { matches: current, wildcard }
}

