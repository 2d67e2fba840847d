// Redial jitter: a fleet that lost its coordinator at once spreads its redials over half to one and a half the backoff.
import { describe, expect, it } from 'vitest'
import { jitteredMs } from '../protocol/timing.js'

describe('jittered redial', () => {
  it('spreads a delay over [ms/2, 3ms/2) and covers that range', () => {
    expect(jitteredMs(1_000, 0)).toBe(500)
    expect(jitteredMs(1_000, 0.5)).toBe(1_000)
    expect(jitteredMs(1_000, 0.999999)).toBeLessThan(1_500)
    expect(jitteredMs(1_000, 7)).toBeLessThan(1_500) // a bad draw is clamped
    const draws = Array.from({ length: 200 }, (_, i) => jitteredMs(10_000, i / 200))
    expect(Math.min(...draws)).toBe(5_000)
    expect(Math.max(...draws)).toBeGreaterThan(14_900)
    expect(new Set(draws).size).toBe(200)
  })
})
