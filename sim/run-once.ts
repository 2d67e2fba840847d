// Developer entry: node dist/sim/run-once.js SCENARIO AGENTS SEED [--json]
import '../runtime/polyfill.js'
import { runSimCommand } from './cli.js'
const [scenario = 'fleet-patch', agents, seed, ...rest] = process.argv.slice(2)
const code = await runSimCommand({
  scenario,
  ...(agents ? { agents: Number(agents) } : {}),
  ...(seed ? { seed: Number(seed) } : {}),
  json: rest.includes('--json'),
  ...(rest.includes('--report') ? { report: rest[rest.indexOf('--report') + 1]! } : {}),
  ...(rest.includes('--seeds') ? { seeds: Number(rest[rest.indexOf('--seeds') + 1]!), seed: undefined } : {}),
})
process.exitCode = code
