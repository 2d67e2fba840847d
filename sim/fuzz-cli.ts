// `npm run fuzz -- --minutes M` (or `--count N`, `--seed S` for the first seed, `--samples DIR`):
// runs sim/fuzz.ts on fresh seeds until the time or the count is up and prints every failing
// seed with the command that replays it. Exit status 1 when any input failed.
import '../runtime/polyfill.js'
import { randomInt } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { describeOutcome, fuzz, loadSamples, MAX_INPUT_MS } from './fuzz.js'

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : undefined
}

const DEFAULT_SAMPLES = fileURLToPath(new URL('../../../shared/courier/samples/', import.meta.url))

function main(): number {
  const minutes = arg('--minutes') === undefined ? undefined : Number(arg('--minutes'))
  const count = Number(arg('--count') ?? (minutes === undefined ? '1000' : 'Infinity'))
  const firstSeed = Number(arg('--seed') ?? randomInt(0, 2 ** 32 - 1))
  if ((minutes !== undefined && !(minutes > 0)) || !(count > 0) || !Number.isInteger(firstSeed)) {
    process.stderr.write('usage: node dist/sim/fuzz-cli.js [--minutes M] [--count N] [--seed FIRST] [--samples DIR]\n')
    return 2
  }
  const samples = loadSamples(arg('--samples') ?? process.env.CHORUS_SAMPLES ?? DEFAULT_SAMPLES)
  const deadlineMs = minutes === undefined ? undefined : performance.now() + minutes * 60_000
  process.stdout.write(`fuzz: ${samples.length} samples, first seed ${firstSeed}, bound ${MAX_INPUT_MS} ms per input\n`)
  const s = fuzz(samples, { firstSeed, count, ...(deadlineMs !== undefined ? { deadlineMs } : {}), onFailure: (f) => process.stdout.write(`FAIL ${describeOutcome(f)}\n`) })
  process.stdout.write(`fuzz: ${s.inputs} inputs (${s.accepted} accepted, ${s.inputs - s.accepted} rejected), all answered in ${(s.totalMs / 1000).toFixed(1)} s; ${s.failures.length} failing\n`)
  if (s.slowest) process.stdout.write(`slowest: ${describeOutcome(s.slowest)}\n`)
  return s.failures.length > 0 ? 1 : 0
}

process.exitCode = main()
