// `npm run build` (after the bundle): primes the code cache of agents started with
// AGENT_NODE_FLAGS (cli/fleet.ts: demo, bench, tests), so that even a fleet's first start after a
// build runs from a cache. Runs itself again under those flags, which name the cache file and
// which V8 checks. Failing to prime only costs the first agent start its speed: it warns, exits 0.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { PACKAGE_ROOT } from './paths.js'
import { AGENT_NODE_FLAGS } from './fleet.js'

const AGENT_SCRIPT = join(PACKAGE_ROOT, 'dist', 'bundle', 'agent.cjs')

if (process.argv[2] === '--child') {
  const { primeAgentScript } = await import('./code-cache.js')
  const result = await primeAgentScript(AGENT_SCRIPT)
  if (result !== 'written') process.stderr.write(`chorus: could not prime the agent's code cache (${result}); agents write it when they start\n`)
  process.exit(0)
} else {
  const r = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, fileURLToPath(import.meta.url), '--child'], { stdio: 'inherit' })
  if (r.status !== 0) process.stderr.write(`chorus: priming the agent's code cache failed (exit ${r.status ?? r.signal}); agents write it when they start\n`)
}
