#!/usr/bin/env node
// Entry point of the `chorus` command. `npm ci` builds dist/bundle: one minified ES module bundle
// split per subcommand (an agent process loads only what an agent needs), and for `chorus agent`
// the agent alone as a classic script run from V8's code cache (bin/chorus-agent.cjs).
import { createRequire } from 'node:module'

if (process.argv[2] === 'agent') createRequire(import.meta.url)('./chorus-agent.cjs')
else await import('../dist/bundle/entry.js')
