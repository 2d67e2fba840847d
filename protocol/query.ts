// Search queries (`chorus nodes --search`, `filter.query`, saved filters): the grammar and its
// parser. Pure; matching is in coordinator/targeting.ts (matchQuery).
// Grammar (whitespace separates tokens; keywords are case-insensitive):
//   query  := or
//   or     := and ( "OR" and )*
//   and    := not ( ["AND"] not )*          two terms side by side mean AND
//   not    := "NOT" not | "-" atom | atom
//   atom   := "(" query ")" | term
//   term   := NAME ":" VALUE                 VALUE may use * (any run of characters) and ?
//                                            (one character); quote it "like this" for spaces
// NAME is an attribute name (a fact, a --attr, or "node" for the node id, "skill" for an
// installed skill name). Matching is case-sensitive on values. Examples:
//   role:webapp AND env:prod
//   os:linux (role:web OR role:api) NOT env:dev
//   hostname:web-* -skill:chef-platform/ansible-interpreter

export type Query =
  | { kind: 'term'; name: string; pattern: string }
  | { kind: 'not'; q: Query }
  | { kind: 'and'; qs: Query[] }
  | { kind: 'or'; qs: Query[] }

export const MAX_QUERY_CHARS = 2048

export function parseQuery(text: string): { ok: true; query: Query } | { ok: false; message: string } {
  if (text.length > MAX_QUERY_CHARS) return { ok: false, message: `a query is at most ${MAX_QUERY_CHARS} characters` }
  const tokens: string[] = []
  const re = /\s*(\(|\)|-(?=[^\s])|"(?:[^"\\]|\\.)*"|[^\s()"]+(?:"(?:[^"\\]|\\.)*")?)/gy
  let m: RegExpExecArray | null
  let pos = 0
  while (pos < text.length) {
    re.lastIndex = pos
    m = re.exec(text)
    if (!m) {
      if (/^\s*$/.test(text.slice(pos))) break
      return { ok: false, message: `cannot read the query at character ${pos + 1}: ${JSON.stringify(text.slice(pos, pos + 20))}` }
    }
    tokens.push(m[1]!)
    pos = re.lastIndex
  }
  let i = 0
  const peek = () => tokens[i]
  const isKw = (t: string | undefined, kw: string) => t !== undefined && t.toUpperCase() === kw
  function parseOr(): Query {
    const qs = [parseAnd()]
    while (isKw(peek(), 'OR')) { i++; qs.push(parseAnd()) }
    return qs.length === 1 ? qs[0]! : { kind: 'or', qs }
  }
  function parseAnd(): Query {
    const qs = [parseNot()]
    for (;;) {
      const t = peek()
      if (t === undefined || t === ')' || isKw(t, 'OR')) break
      if (isKw(t, 'AND')) i++
      qs.push(parseNot())
    }
    return qs.length === 1 ? qs[0]! : { kind: 'and', qs }
  }
  function parseNot(): Query {
    const t = peek()
    if (isKw(t, 'NOT')) { i++; return { kind: 'not', q: parseNot() } }
    if (t === '-') { i++; return { kind: 'not', q: parseAtom() } }
    return parseAtom()
  }
  function parseAtom(): Query {
    const t = tokens[i++]
    if (t === undefined) throw new Error('the query ends too early; expected a term such as role:web')
    if (t === '(') {
      const q = parseOr()
      if (tokens[i++] !== ')') throw new Error('a "(" is not closed')
      return q
    }
    const colon = t.indexOf(':')
    if (colon <= 0) throw new Error(`expected NAME:VALUE, got ${JSON.stringify(t)}`)
    let value = t.slice(colon + 1)
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = JSON.parse(value) as string
    return { kind: 'term', name: t.slice(0, colon), pattern: value }
  }
  try {
    if (tokens.length === 0) return { ok: false, message: 'the query is empty; expected e.g. role:webapp AND env:prod' }
    const query = parseOr()
    if (i < tokens.length) return { ok: false, message: `unexpected ${JSON.stringify(tokens[i])} at token ${i + 1}` }
    return { ok: true, query }
  } catch (err) {
    return { ok: false, message: (err as Error).message }
  }
}

