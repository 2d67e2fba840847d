// Soak: random seeds across the scenarios until the time is up; prints every failing seed with
// the command that replays it. `node dist/sim/soak.js --minutes M [--agents N]`.
// Seeds are drawn from the wall clock here (this is the one place that wants fresh ones);
// each run itself is fully determined by its seed.
import '../runtime/polyfill.js'
import { randomInt } from 'node:crypto'
import { runScenario, replayCommand } from './cli.js'
import { SCENARIOS } from './scenarios.js'

export interface SoakOptions {
  minutes: number
  /** Fleet size per run; small fleets give more seeds per minute. */
  agents?: number
  log?: (line: string) => void
}

export interface SoakResult {
  runs: number
  failures: { scenario: string; agents: number; seed: number; properties: string[]; command: string }[]
}

export function soak(o: SoakOptions): SoakResult {
  const log = o.log ?? ((l: string) => process.stdout.write(l + '\n'))
  const scenarios = SCENARIOS.filter((s) => !s.unavailable)
  const deadline = performance.now() + o.minutes * 60_000
  const result: SoakResult = { runs: 0, failures: [] }
  let i = 0
  while (performance.now() < deadline) {
    const scenario = scenarios[i++ % scenarios.length]!
    const seed = randomInt(0, 2 ** 32 - 1)
    const agents = o.agents ?? 10 + randomInt(0, 60)
    const r = runScenario({ scenario: scenario.name, agents, seed })
    result.runs++
    if (r.violations.length > 0) {
      const properties = [...new Set(r.violations.map((v) => v.property))]
      const command = replayCommand(scenario.name, agents, seed)
      result.failures.push({ scenario: scenario.name, agents, seed, properties, command })
      log(`FAIL ${properties.join(',')}: ${command}`)
      log(`  ${r.violations[0]!.detail.slice(0, 300)}`)
    }
    if (result.runs % 25 === 0) log(`${result.runs} runs, ${result.failures.length} failing, ${((deadline - performance.now()) / 60_000).toFixed(1)} min left`)
  }
  return result
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : undefined
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/.*\//, '/'))) {
  const minutes = Number(arg('--minutes') ?? '5')
  const agents = arg('--agents')
  if (!(minutes > 0)) {
    process.stderr.write('usage: node dist/sim/soak.js --minutes M [--agents N]\n')
    process.exit(2)
  }
  const r = soak({ minutes, ...(agents ? { agents: Number(agents) } : {}) })
  process.stdout.write(`soak: ${r.runs} runs in ${minutes} min, ${r.failures.length} failing seed(s)\n`)
  for (const f of r.failures) process.stdout.write(`  ${f.properties.join(',')}: ${f.command}\n`)
  process.exitCode = r.failures.length > 0 ? 1 : 0
}
