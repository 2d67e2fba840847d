// `npm run bundle:agent`: the agent alone as one classic script (dist/bundle/agent.cjs) for V8's
// code cache (cli/code-cache.ts). Everything is bundled but classic-level's native binding
// (its binding.js, which finds the prebuilt addon beside itself): classic-level's and
// abstract-level's JavaScript then runs from the code cache too, not compiled by Node's module
// loader at every start (~5 ms of an agent's start).
import { build, type Plugin } from 'esbuild'
import { join } from 'node:path'
import { PACKAGE_ROOT } from './paths.js'

/** classic-level's `require('./binding')`, kept as a require of the installed package's file. */
const classicLevelBinding: Plugin = {
  name: 'classic-level-binding',
  setup(b) {
    b.onResolve({ filter: /^\.\/binding(\.js)?$/ }, (a) => (/[\\/]classic-level[\\/]/.test(a.importer) ? { path: 'classic-level/binding.js', external: true } : undefined))
  },
}

await build({
  absWorkingDir: PACKAGE_ROOT,
  entryPoints: ['cli/agent-script.ts'],
  outfile: join(PACKAGE_ROOT, 'dist', 'bundle', 'agent.cjs'),
  bundle: true,
  minifyWhitespace: true,
  minifySyntax: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // Dynamic imports become lazy requires: a module is evaluated when first required, as before.
  supported: { 'dynamic-import': false },
  mainFields: ['module', 'main'],
  logLevel: 'warning',
  logOverride: { 'import-is-undefined': 'silent' },
  define: { 'import.meta.url': '__chorusImportMetaUrl' },
  banner: { js: "const __chorusImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [classicLevelBinding],
})
