// Where a problem's path (`target.groups[0].batchSize`) is in a JSON template's text, so the
// editor can show its line and select it. YAML and TOML texts are not located (undefined).
import { findNodeAtLocation, parseTree, type Node } from 'jsonc-parser'

/** `a.b[2].c` -> ['a', 'b', 2, 'c']; `$` (the whole template) -> []. */
export function segmentsOf(path: string): (string | number)[] {
  if (path === '$' || path === '') return []
  return [...path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)].map((m) => (m[2] !== undefined ? Number(m[2]) : m[1]!))
}

/** The offset, length and line (1-based) of the deepest part of `path` the text has. */
export function locate(text: string, path: string): { offset: number; length: number; line: number } | undefined {
  if (!text.trimStart().startsWith('{')) return undefined
  const tree = parseTree(text)
  if (!tree) return undefined
  const segs = segmentsOf(path)
  let node: Node | undefined
  for (let n = segs.length; n >= 0 && !node; n--) node = findNodeAtLocation(tree, segs.slice(0, n))
  if (!node) return undefined
  const at = node.parent?.type === 'property' ? node.parent : node
  return { offset: at.offset, length: at.length, line: text.slice(0, at.offset).split('\n').length }
}
