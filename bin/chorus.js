#!/usr/bin/env node
// Entry point of the `chorus` command. `npm ci` builds dist/bundle: one minified ES module bundle
// split per subcommand (an agent process loads only what an agent needs), and the agent alone as
// a classic script, agent.cjs, which `chorus agent` runs from V8's code cache (cli/code-cache.ts:
// a cache file beside the script, written by the first agent that started without a usable one;
// a missing, stale or corrupt cache only means compiling from source). CHORUS_CODE_CACHE=off
// runs the agent from the ES module bundle instead; CHORUS_CODE_CACHE_LOG=1 says what the cache did.
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const agentScript = fileURLToPath(new URL('../dist/bundle/agent.cjs', import.meta.url))
if (process.argv[2] === 'agent' && process.env.CHORUS_CODE_CACHE !== 'off' && existsSync(agentScript)) {
  const { runAgentScript } = await import('../dist/cli/code-cache.js')
  const log = process.env.CHORUS_CODE_CACHE_LOG === '1'
  runAgentScript(agentScript, process.argv, log ? (line) => process.stderr.write(`chorus: code cache ${line}\n`) : undefined)
} else {
  await import('../dist/bundle/entry.js')
}
