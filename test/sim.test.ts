// The simulator: determinism, a fixed seed list over every scenario, and deliberately broken
// cores that the checkers must catch. Every assertion message carries the seed.
import { describe, expect, it } from 'vitest'
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { agentStep, type AgentEffect } from '../agent/core.js'
import { PROTOCOL_VERSION, open, seal } from '../protocol/wire.js'
import { runScenario, runSimCommand, type SeedResult } from '../sim/cli.js'
import { Prng } from '../sim/prng.js'
import { EventHeap } from '../sim/heap.js'
import { SCENARIOS } from '../sim/scenarios.js'
import * as simWorld from '../sim/world.js'
import type { Cores, World } from '../sim/world.js'

const SCENARIO_NAMES = ['fleet-patch', 'partition-heal', 'coordinator-crash', 'edge-offline']
/** Seeds every scenario must pass (CI). Small fleets keep the file well under a minute. */
const FIXED_SEEDS = [1, 2, 3, 7, 42, 1234]
const AGENTS = 24
/** edge-offline simulates 40 minutes, with waiting agents syncing every few seconds: keep it smaller. */
const AGENTS_BY_SCENARIO: Record<string, number> = { 'edge-offline': 12 }

/**
 * Seeds that once failed. Each entry replays its command; `knownBug` marks a core bug that is
 * still open (the entry then asserts the bug still reproduces, so fixing the core flips it:
 * delete `knownBug` and the seed becomes an ordinary regression test).
 */
const REGRESSIONS: { scenario: string; agents: number; seed: number }[] = [
  // A sync that failed was never retried: an agent that missed the gossip never learned the job.
  { scenario: 'edge-offline', agents: 40, seed: 2 },
  { scenario: 'edge-offline', agents: 40, seed: 3 },
  { scenario: 'partition-heal', agents: 21, seed: 2272813389 },
  // A restarted agent without persisted progress dropped the coordinator's progress digests and waited forever.
  { scenario: 'fleet-patch', agents: 100, seed: 2 },
  { scenario: 'fleet-patch', agents: 100, seed: 3 },
]

/**
 * Open core bugs the simulator found. Seeds shift whenever a core changes how many PRNG draws
 * an event costs, so each entry names a scenario and a seed range, and the test asserts that
 * some seed in the range still reproduces the property violation. When the core is fixed this
 * test fails: move the seed it printed to REGRESSIONS and delete the entry.
 */
const KNOWN_CORE_BUGS: { scenario: string; agents: number; seeds: [number, number]; property: string; issue: string; alsoIn: string[] }[] = [
  // (none open)
]

function brief(r: SeedResult): string {
  return `seed ${r.seed} (${r.scenario}, ${r.agents} agents): ${JSON.stringify(r.violations.slice(0, 3))}`
}

describe('prng and event heap', () => {
  it('xoshiro128** is reproducible from its seed and differs between seeds', () => {
    const a = new Prng(99)
    const b = new Prng(99)
    const c = new Prng(100)
    const xs = Array.from({ length: 8 }, () => a.next32())
    expect(Array.from({ length: 8 }, () => b.next32())).toEqual(xs)
    expect(Array.from({ length: 8 }, () => c.next32())).not.toEqual(xs)
    const f = new Prng(5)
    for (let i = 0; i < 1000; i++) {
      const x = f.float()
      expect(x).toBeGreaterThanOrEqual(0)
      expect(x).toBeLessThan(1)
    }
  })

  it('pops by (time, sequence): equal times keep scheduling order', () => {
    const h = new EventHeap()
    const out: string[] = []
    h.push(5, () => out.push('b'))
    h.push(1, () => out.push('a'))
    h.push(5, () => out.push('c'))
    h.push(3, () => out.push('x'))
    h.push(5, () => out.push('d'))
    for (let e = h.pop(); e; e = h.pop()) e.run()
    expect(out).toEqual(['a', 'x', 'b', 'c', 'd'])
  })
})

describe('the simulator mirrors the runtimes', () => {
  it('uses the runtimes\' timing constants', async () => {
    const agentRuntime = await import('../agent/runtime.js')
    const coordinatorRuntime = await import('../coordinator/runtime.js')
    expect(simWorld.AGENT_TICK_MS).toBe(agentRuntime.AGENT_TICK_MS)
    expect(simWorld.RPC_TIMEOUT_MS).toBe(agentRuntime.RPC_TIMEOUT_MS)
    expect(simWorld.REDIAL_MIN_MS).toBe(agentRuntime.REDIAL_MIN_MS)
    expect(simWorld.REDIAL_MAX_MS).toBe(agentRuntime.REDIAL_MAX_MS)
    expect(simWorld.AGENT_VERSION).toBe(agentRuntime.AGENT_VERSION)
    expect(simWorld.COORDINATOR_TICK_MS).toBe(coordinatorRuntime.COORDINATOR_TICK_MS)
    expect(simWorld.MAX_PENDING_REQUESTS).toBe(coordinatorRuntime.MAX_PENDING_REQUESTS)
  })
})

describe('determinism', () => {
  it('the same seed gives the same trace hash; different seeds differ', () => {
    for (const scenario of ['fleet-patch', 'coordinator-crash']) {
      const a = runScenario({ scenario, agents: 20, seed: 11 })
      const b = runScenario({ scenario, agents: 20, seed: 11 })
      const c = runScenario({ scenario, agents: 20, seed: 12 })
      expect(b.trace_hash, `seed 11 (${scenario}) replayed differently`).toBe(a.trace_hash)
      expect(b.messages, `seed 11 (${scenario})`).toBe(a.messages)
      expect(c.trace_hash, `seeds 11 and 12 (${scenario}) gave the same trace`).not.toBe(a.trace_hash)
    }
  })
})

describe('fixed seeds: every property holds', () => {
  for (const scenario of SCENARIO_NAMES) {
    it(`${scenario}: seeds ${FIXED_SEEDS.join(', ')}`, () => {
      for (const seed of FIXED_SEEDS) {
        const r = runScenario({ scenario, agents: AGENTS_BY_SCENARIO[scenario] ?? AGENTS, seed })
        // An open core bug (KNOWN_CORE_BUGS) is tolerated on its own scenario; anything else fails.
        const open = KNOWN_CORE_BUGS.filter((b) => b.scenario === scenario || b.alsoIn.includes(scenario)).map((b) => b.property)
        const unexpected = r.violations.filter((v) => !open.includes(v.property))
        expect(unexpected, brief(r)).toEqual([])
        expect(r.runs_decided, `seed ${seed} (${scenario}): no run finished`).toBeGreaterThan(0)
        if (!open.includes('liveness')) expect(r.converged_after_heal_s, `seed ${seed} (${scenario}) did not converge`).not.toBeNull()
      }
    })
  }

  it('quorum-upgrade is registered and says what it needs', async () => {
    expect(SCENARIOS.map((s) => s.name)).toContain('quorum-upgrade')
    expect(() => runScenario({ scenario: 'quorum-upgrade', seed: 1 })).toThrow(/needs the Where issue/)
  })
})

describe('regression seeds', () => {
  for (const reg of REGRESSIONS) {
    it(`${reg.scenario} --agents ${reg.agents} --seed ${reg.seed}`, () => {
      const r = runScenario({ scenario: reg.scenario, agents: reg.agents, seed: reg.seed })
      expect(r.violations, brief(r)).toEqual([])
    })
  }
  for (const bug of KNOWN_CORE_BUGS) {
    it(`open core bug still reproduces: ${bug.scenario} ${bug.property} (${bug.issue.slice(0, 60)}...)`, () => {
      let found: SeedResult | undefined
      for (let seed = bug.seeds[0]; seed <= bug.seeds[1] && !found; seed++) {
        const r = runScenario({ scenario: bug.scenario, agents: bug.agents, seed })
        if (r.violations.some((v) => v.property === bug.property)) found = r
      }
      expect(found, `no seed in ${bug.seeds.join('..')} reproduces ${bug.property} any more; if the core was fixed, move a seed to REGRESSIONS`).toBeDefined()
      knownFailingSeed = { scenario: bug.scenario, agents: bug.agents, seed: found!.seed }
    })
  }
})

let knownFailingSeed: { scenario: string; agents: number; seed: number } | undefined

describe('broken cores are caught', () => {
  it('at-most-once: a core that re-emits run_step for an attempt already executed', () => {
    let reemitted = 0
    const cores: Partial<Cores> = {
      agentStep(state, config, event, now) {
        const effects = agentStep(state, config, event, now)
        if (event.type === 'step_done' && event.stepNumber === 1 && event.attempt === 1 && reemitted < 3) {
          reemitted++
          const request = { runId: event.runId, jobId: state.runs.get(event.runId)!.jobId, stepNumber: 1, attempt: 1, interpreter: 'chef-platform/shell-interpreter', command: {}, inputs: {}, os: config.os, timeoutMs: 0 }
          effects.push({ type: 'run_step', notBefore: now, request } as AgentEffect)
        }
        return effects
      },
    }
    const seed = 5
    const r = runScenario({ scenario: 'fleet-patch', agents: 20, seed, cores })
    const hits = r.violations.filter((v) => v.property === 'at-most-once')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(seed)
    expect(hits[0]!.detail).toMatch(/executed \(instance .*, step 1, attempt 1\) twice/)
  })

  it('nothing-lost: a core that drops a finished result instead of queueing it', () => {
    let dropped = 0
    const cores: Partial<Cores> = {
      agentStep(state, config, event, now) {
        const effects = agentStep(state, config, event, now)
        const send = effects.find((e): e is Extract<AgentEffect, { type: 'send'; kind: 'result' }> => e.type === 'send' && e.kind === 'result')
        if (!send || event.type !== 'step_done' || dropped >= 1) return effects
        dropped++
        state.outbox.delete(send.runId)
        return effects.filter((e) => e !== send).map((e) => e.type === 'persist' ? { ...e, puts: e.puts.filter((p) => !p.key.startsWith('outbox/')) } : e)
      },
    }
    const seed = 8
    const r = runScenario({ scenario: 'fleet-patch', agents: 20, seed, cores })
    const hits = r.violations.filter((v) => v.property === 'nothing-lost')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(seed)
    expect(hits[0]!.detail).toMatch(/never reached the coordinator/)
  })

  it('authenticity: a core that skips signature checks runs the attacker\'s job', () => {
    // The double "verifies" nothing: it re-seals whatever job body it is given with the
    // pinned key, which is what skipping verification amounts to.
    const cores = (world: World): Partial<Cores> => ({
      agentStep(state, config, event, now) {
        if (event.type === 'job') {
          const env = event.envelope as { body?: unknown }
          if (typeof env?.body === 'string' && !open(env, [config.coordinatorKey]).ok) {
            try {
              const body = JSON.parse(env.body) as { type?: string }
              if (body.type === 'job') return agentStep(state, config, { ...event, envelope: seal(world.coordinator.identity, body as never) }, now)
            } catch { /* garbage stays garbage */ }
          }
        }
        return agentStep(state, config, event, now)
      },
    })
    const seed = 3
    const r = runScenario({ scenario: 'fleet-patch', agents: 20, seed, cores })
    const hits = r.violations.filter((v) => v.property === 'authenticity')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(seed)
    void PROTOCOL_VERSION
  })
})

describe('chorus sim command', () => {
  function capture(): { out: string[]; err: string[]; restore: () => void } {
    const out: string[] = []
    const err: string[] = []
    const o = process.stdout.write.bind(process.stdout)
    const e = process.stderr.write.bind(process.stderr)
    process.stdout.write = ((s: string) => { out.push(String(s)); return true }) as typeof process.stdout.write
    process.stderr.write = ((s: string) => { err.push(String(s)); return true }) as typeof process.stderr.write
    return { out, err, restore: () => { process.stdout.write = o; process.stderr.write = e } }
  }

  it('prints the JSON summary and writes an HTML report', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chorus-sim-'))
    const report = join(dir, 'r.html')
    const cap = capture()
    let code: number
    try {
      code = await runSimCommand({ scenario: 'coordinator-crash', agents: 20, seed: 4, json: true, report })
    } finally { cap.restore() }
    expect(code, cap.err.join('')).toBe(0)
    const summary = JSON.parse(cap.out.join('')) as Record<string, unknown>
    for (const k of ['scenario', 'agents', 'seeds', 'violations', 'liveness_failures', 'sim_time_s', 'wall_s', 'messages', 'bytes_per_node_per_s', 'max_concurrent_by_group', 'trace_hash']) expect(summary).toHaveProperty(k)
    expect(summary.trace_hash).toMatch(/^[0-9a-f]{64}$/)
    const html = readFileSync(report, 'utf8')
    expect(html).toContain('<svg')
    expect(html).toContain('coordinator')
  })

  it('takes a Courier template with --job and refuses unknown scenarios and quorum-upgrade', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chorus-sim-'))
    const job = join(dir, 'job.json')
    writeFileSync(job, readFileSync(new URL('../../shared/courier/samples/samples_multi-node-one-group-immediate-rolling-linux.json', import.meta.url)))
    const cap = capture()
    let codes: number[]
    try {
      codes = [
        await runSimCommand({ scenario: 'fleet-patch', agents: 10, seed: 2, job, json: true }),
        await runSimCommand({ scenario: 'no-such-thing' }),
        await runSimCommand({ scenario: 'quorum-upgrade' }),
      ]
    } finally { cap.restore() }
    expect(codes).toEqual([0, 2, 2])
    expect(cap.err.join('')).toMatch(/needs the Where issue/)
  })

  it('on a violation: exit 1, and stderr names the seed and the command that replays it', async () => {
    const reg = knownFailingSeed
    if (!reg) return
    const cap = capture()
    let code: number
    try {
      code = await runSimCommand({ scenario: reg.scenario, agents: reg.agents, seed: reg.seed, json: true })
    } finally { cap.restore() }
    expect(code).toBe(1)
    expect(cap.err.join('')).toContain(`npx chorus sim --scenario ${reg.scenario} --agents ${reg.agents} --seed ${reg.seed}`)
  })
})
