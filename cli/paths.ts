// Paths inside the installed package, found from wherever this module was loaded (TypeScript
// sources under vitest, dist/ after tsc, or dist/bundle/ after esbuild).
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'bin', 'chorus.js')) && existsSync(join(dir, 'package.json'))) return dir
    dir = dirname(dir)
  }
  throw new Error('cannot find the chorus package root (bin/chorus.js) above ' + fileURLToPath(import.meta.url))
}

export const PACKAGE_ROOT = findRoot()
export const CHORUS_BIN = join(PACKAGE_ROOT, 'bin', 'chorus.js')
export const EXAMPLES_DIR = join(PACKAGE_ROOT, 'examples')
