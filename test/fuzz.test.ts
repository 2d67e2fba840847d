// Fuzzing the template pipeline (sim/fuzz.ts): seeded mutations of every Courier sample, as
// JSON, YAML and TOML, through validation, planning, schedule expansion and step evaluation.
// Every input answers within MAX_INPUT_MS, nothing throws, every rejection names a path.
// `npm run fuzz -- --minutes M` runs fresh seeds; a failing seed found there and fixed is kept
// in REGRESSION_SEEDS.
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { describeOutcome, fuzz, loadSamples, makeInput, MAX_INPUT_MS, runInput } from '../sim/fuzz.js'

const SAMPLES = fileURLToPath(new URL('../../shared/courier/samples/', import.meta.url))
const samples = loadSamples(SAMPLES)

/** Inputs run by CI: 3,000 took 10 to 22 s on the shared 2-core machine. */
const CI_INPUTS = 4000
const CI_FIRST_SEED = 1

/** Seeds that once failed (found by `npm run fuzz`), with what they found. */
const REGRESSION_SEEDS: [seed: number, finding: string][] = [
  [980810, '64 copies of a sparse SECONDLY exception (BYYEARDAY=366) took 3.4 s: each check walked to the next leap day; now identical windows are checked once and a query that finds no start remembers where the next one is'],
  [567069, 'a SECONDLY exception in a zone took 2.2 s to plan: the range check listed 10,000 window starts; dense windows are now checked per instant'],
  [129217, '64 identical exception rules (DAILY;INTERVAL=13;BYMONTH=2 over 694-day windows) took 3.4 s: every stage parsed and expanded each rule again; now parses are cached (steps still charged) and identical windows are expanded once per check'],
]

describe('template fuzzing', () => {
  it('reads every template sample (JSON and the yaml/ twins, not responses/)', () => {
    expect(samples.length).toBeGreaterThanOrEqual(45)
    expect(samples.some((s) => s.name.startsWith('yaml/'))).toBe(true)
    expect(samples.some((s) => s.name.startsWith('responses/'))).toBe(false)
  })

  it('the same seed gives the same input', () => {
    expect(makeInput(samples, 42)).toEqual(makeInput(samples, 42))
  })

  it(`${CI_INPUTS} seeded inputs: each answered within ${MAX_INPUT_MS} ms, no exception, every rejection with a path`, () => {
    const s = fuzz(samples, { firstSeed: CI_FIRST_SEED, count: CI_INPUTS })
    const report = `${s.inputs} inputs, ${s.accepted} accepted, ${(s.totalMs / 1000).toFixed(1)} s; slowest: ${s.slowest ? describeOutcome(s.slowest) : '-'}`
    console.log(`fuzz: ${report}`)
    expect(s.failures.map(describeOutcome)).toEqual([])
    expect(s.inputs).toBe(CI_INPUTS)
    // The later stages are exercised too, not only the validator.
    expect(s.accepted).toBeGreaterThan(CI_INPUTS / 10)
  }, 300_000)

  it.each(REGRESSION_SEEDS)('regression seed %i (%s)', (seed) => {
    const o = runInput(makeInput(samples, seed))
    expect(o.failure, describeOutcome(o)).toBeUndefined()
  })
})
