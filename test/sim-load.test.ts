// The simulator under load: a fleet that joins at once must not collapse at a coordinator whose
// writes are slow, because the runtimes step waiting events together and write them as one batch
// (runtime/loop.ts, group commit) and the simulator models that. Before it did, each event's
// write waited for the one before: fleet-patch --agents 50000 --seed 1 failed liveness (272
// messages per agent, 47,521 runs without a result), and 20,000 agents already queued 35,000
// requests, timed out 54,000 of them and sent 2.3 hellos per agent. The load counters the
// summary prints (sim/load.ts) are what showed it; this file checks them too.
import { describe, expect, it } from 'vitest'
import { SIM_FAST_CRYPTO, useCryptoProvider } from '../protocol/keys.js'
import { RPC_TIMEOUT_MS } from '../protocol/timing.js'
import { MAX_EVENTS_PER_COMMIT } from '../runtime/loop.js'
import { runScenario } from '../sim/cli.js'
import { kindOf } from '../sim/load.js'
import { NO_FAULTS } from '../sim/network.js'
import { builtinTemplate } from '../sim/scenarios.js'
import { World } from '../sim/world.js'

/** Agents that join within the first half second; each enrolling hello writes two batches. */
const JOINING = 300
/** The faults' slow disk: every write takes 20 to 100 ms (sim/world.ts diskLatency). */
const SLOW_DISK = { ...NO_FAULTS, disk_slow: 1 }

function joinAtOnce(seed: number, maxPendingRequests?: number): World {
  const previous = useCryptoProvider(SIM_FAST_CRYPTO)
  try {
    const w = new World({ seed, agents: JOINING, template: builtinTemplate(), checkers: [], ...(maxPendingRequests !== undefined ? { maxPendingRequests } : {}) })
    w.net.faults = { ...SLOW_DISK }
    w.boot()
    for (const a of w.agents) w.at(w.prng.range(0, 500), () => w.startNode(a))
    // No job: the run ends at the first check after the heal (faults off) at 60 s.
    w.safetyEndsAt = 60_000
    w.run()
    return w
  } finally {
    useCryptoProvider(previous)
  }
}

describe('a fleet joining at once, over a slow coordinator disk', () => {
  it(`${JOINING} agents join with one hello each: the coordinator writes their records in batches, within the rpc timeout`, () => {
    const w = joinAtOnce(1)
    const load = w.load.summary()
    // 300 agents × 2 writes × 60 ms on average, one write at a time, is 36 s of queue: past
    // RPC_TIMEOUT_MS, every late hello timed out and was sent again (the collapse).
    expect(w.agents.filter((a) => !a.connected).map((a) => a.id), 'agents not connected at the end').toEqual([])
    expect(load.rpc_sent['hello'], JSON.stringify(load.rpc_failed)).toBe(JOINING)
    expect(load.rpc_failed['hello timeout'] ?? 0).toBe(0)
    expect(load.stepped_after_timeout, 'requests the coordinator stepped after the agent gave up').toBe(0)
    // The queue did build (the test is about a burst): deeper than one batch would show a write per event.
    expect(load.queue_max).toBeGreaterThan(1)
    expect(load.queue_max).toBeLessThanOrEqual(JOINING)
    const joinBins = load.series.filter((b) => b.t_s * 1000 < RPC_TIMEOUT_MS)
    expect(joinBins.reduce((n, b) => n + (b.arrived['hello'] ?? 0), 0), 'hellos that reached the coordinator within the first rpc timeout').toBe(JOINING)
    expect(MAX_EVENTS_PER_COMMIT).toBeGreaterThan(1)
  })
})

describe('a coordinator past its admission bound', () => {
  it('answers with a signed retry-after, which the agents wait out, and every agent joins', () => {
    // 300 hellos at once over a slow disk against a bound of 20 waiting requests.
    const w = joinAtOnce(1, 20)
    const load = w.load.summary()
    expect(load.retry_after_sent, JSON.stringify(load)).toBeGreaterThan(0)
    expect(load.hello_retry_after).toBeGreaterThan(0)
    expect(load.hello_retry_after).toBeLessThanOrEqual(load.retry_after_sent)
    // A refusal is an answer, not a failure: no request ends as "coordinator overloaded" or a timeout.
    expect(Object.keys(load.rpc_failed).filter((k) => /overloaded|timeout/.test(k))).toEqual([])
    expect(load.queue_max).toBeLessThanOrEqual(20)
    expect(w.agents.filter((a) => !a.connected).map((a) => a.id), 'agents not connected at the end').toEqual([])
  })
})

describe('load counters', () => {
  it('kindOf reads the top-level type of a canonical body, not a nested one', () => {
    expect(kindOf({ body: '{"facts":{"type":"x"},"nodeId":"a","type":"hello","v":1}' })).toBe('hello')
    expect(kindOf({ body: '{"a":1}' })).toBe('other')
    expect(kindOf({ body: 7 })).toBe('other')
    expect(kindOf(null)).toBe('other')
  })

  it('fleet-patch: every request sent is counted once by kind, and ended at most once (reply or a reason)', () => {
    const r = runScenario({ scenario: 'fleet-patch', agents: 100, seed: 1 })
    const load = r.load
    const sent = Object.values(load.rpc_sent).reduce((a, b) => a + b, 0)
    const ended = Object.values(load.rpc_outcome).reduce((a, b) => a + b, 0)
    const arrived = load.series.reduce((n, b) => n + Object.values(b.arrived).reduce((a, c) => a + c, 0), 0)
    expect(Object.keys(load.rpc_sent).sort()).toEqual(['hello', 'result', 'sync'])
    expect(load.rpc_sent['hello']).toBeGreaterThanOrEqual(100)
    expect(load.rpc_sent['result']).toBeGreaterThanOrEqual(100)
    expect(ended).toBeLessThanOrEqual(sent)
    expect(load.rpc_outcome['reply']).toBeGreaterThan(sent / 2)
    expect(arrived).toBeLessThanOrEqual(sent)
    expect(arrived).toBeGreaterThan(sent / 2)
    expect(r.violations).toEqual([])
  })
})
