// Developer aid: prints the trace of one seed, optionally only lines matching a pattern.
//   node dist/sim/trace.js SCENARIO AGENTS SEED [REGEX]
import '../runtime/polyfill.js'
import { runScenario } from './cli.js'
const [scenario = 'fleet-patch', agents = '20', seed = '1', pattern] = process.argv.slice(2)
const re = pattern ? new RegExp(pattern) : undefined
const r = runScenario({ scenario, agents: Number(agents), seed: Number(seed), traceSink: (l) => { if (!re || re.test(l)) process.stdout.write(l + '\n') } })
process.stderr.write(JSON.stringify(r.violations, null, 1) + '\n')
