#!/usr/bin/env node
// `chorus agent` without the ES module loader: bin/chorus.js hands `chorus agent` to this file,
// and local fleets (cli/fleet.ts) start agents with it directly (`node bin/chorus-agent.cjs agent
// ...`), which skips compiling Node's ES module loader (~10 ms of an agent's start under the
// agents' V8 flags, with which Node's own code cache for its built-ins does not apply).
//
// It runs dist/bundle/agent.cjs, the agent alone as a classic script, from V8's code cache
// (cli/code-cache.ts: a file beside the script, primed by `npm run build` for AGENT_NODE_FLAGS
// and completed by the first agent to start; a missing, stale or corrupt cache only means
// compiling from source). CHORUS_CODE_CACHE=off, or a build without agent.cjs, runs the agent
// from the ES module bundle instead; CHORUS_CODE_CACHE_LOG=1 prints what the cache did.
'use strict'
// First the built-ins the agent uses, with V8's flags at their defaults for the while, so that
// Node's own code cache for them applies (cli/builtins-first.ts): before anything else loads.
const agentBuiltins = `${__dirname}/../dist/bundle/builtins-first.cjs`
if (process.argv[2] === 'agent' && process.env.CHORUS_CODE_CACHE !== 'off') {
  try { require(agentBuiltins).requireBuiltinsUnderDefaultFlags(require) } catch (err) { if (err?.code !== 'MODULE_NOT_FOUND') throw err }
}
const { join } = require('node:path')
const { existsSync } = require('node:fs')

const agentScript = join(__dirname, '..', 'dist', 'bundle', 'agent.cjs')
if (process.argv[2] === 'agent' && process.env.CHORUS_CODE_CACHE !== 'off' && existsSync(agentScript)) {
  const log = process.env.CHORUS_CODE_CACHE_LOG === '1' ? (line) => process.stderr.write(`chorus: code cache ${line}\n`) : undefined
  require('../dist/bundle/code-cache.cjs').runAgentScript(agentScript, process.argv, log)
} else {
  import('../dist/bundle/entry.js')
}
