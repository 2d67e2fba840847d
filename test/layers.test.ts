// Who may import whom (README "Layout"): protocol/ is pure and imports no role; the coordinator
// imports nothing from agent/; neither role imports the simulator. Read from the sources, type
// imports included, so a shared rule cannot drift back into one role's folder.
import { describe, expect, it } from 'vitest'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

const ROOT = new URL('..', import.meta.url).pathname
const FORBIDDEN: Record<string, string[]> = {
  protocol: ['agent', 'coordinator', 'sim', 'cli', 'net', 'runtime', 'interpreters', 'ui'],
  coordinator: ['agent', 'sim'],
  agent: ['coordinator', 'sim'],
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8')
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"\n]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1] ?? m[2]!)
}

describe('layers', () => {
  for (const [folder, banned] of Object.entries(FORBIDDEN)) {
    it(`${folder}/ imports nothing from ${banned.join(', ')}`, () => {
      const files = readdirSync(join(ROOT, folder)).filter((f) => f.endsWith('.ts'))
      expect(files.length).toBeGreaterThan(3)
      const offending = files.flatMap((f) => importsOf(join(ROOT, folder, f)).filter((spec) => banned.some((b) => spec.startsWith(`../${b}/`))).map((spec) => `${folder}/${f} → ${spec}`))
      expect(offending).toEqual([])
    })
  }

  it('the check sees imports (a file known to import protocol/ is seen doing so)', () => {
    expect(importsOf(join(ROOT, 'coordinator', 'core.ts')).some((s) => s.startsWith('../protocol/'))).toBe(true)
  })
})
