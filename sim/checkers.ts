// Safety and liveness properties, checked on every seed. A checker is a named property with
// optional hooks: `onExec` sees every step attempt as a node starts it, `final` sees the
// world after the liveness phase. Each problem becomes a violation { seed, property, detail }.
// New properties (batches, groups, quorum, exceptions) add a Checker here and to ALL_CHECKERS.
import { oracleBatchSize as batchSizeFor, oracleFailureBudget as failureBudget, oracleSuccessNeeded as successNeeded, oracleThreshold as thresholdFor } from './oracle.js'
import { deriveSchedule } from '../protocol/jobschedule.js'
import { exclusionFor } from '../protocol/schedule.js'
import type { JobBody } from '../protocol/wire.js'
import { runIdFor } from '../protocol/ids.js'
import type { Checker, World } from './world.js'

/**
 * (1) Authenticity: a node executes only steps of a job definition the trusted coordinator
 * signed, exactly as signed (same job id, same body).
 */
export const authenticity: Checker = {
  name: 'authenticity',
  onExec(world, exec, request, agent) {
    const legit = world.legitJobs.get(request.jobId)
    if (!legit) return `node ${exec.node} executed step ${exec.step} of job ${request.jobId}, which the coordinator never signed`
    const held = agent.state?.jobs.get(request.jobId)
    if (!held || held.envelope.body !== legit.body) return `node ${exec.node} executed job ${request.jobId} from a definition that differs from the one the coordinator signed`
    // The command itself may differ from the template's ({{.NAME}} substitution), but it is
    // derived from the signed body the node holds, checked above.
    if (request.stepNumber < 1 || request.stepNumber > legit.commands.length) return `node ${exec.node} executed step ${exec.step} of job ${request.jobId}, which has only ${legit.commands.length} steps`
    return undefined
  },
}

/** (2) At most once: no node executes the same (instance, step, attempt) twice, across restarts. */
export const atMostOnce: Checker = {
  name: 'at-most-once',
  onExec(world, exec) {
    const prev = world.executed.get(`${exec.node}|${exec.instanceId}|${exec.step}|${exec.attempt}`)
    if (!prev) return undefined
    return `node ${exec.node} executed (instance ${exec.instanceId}, step ${exec.step}, attempt ${exec.attempt}) twice: at ${(prev.start / 1000).toFixed(3)} s and ${(exec.start / 1000).toFixed(3)} s`
  },
}

/**
 * (7) Nothing lost: every result an agent decided reaches the coordinator, and the coordinator's
 * report (run status, attempts per step) equals the ground truth the simulator recorded.
 */
export const nothingLost: Checker = {
  name: 'nothing-lost',
  final(world) {
    const problems: string[] = []
    const state = world.coordinator.state
    if (!state) return ['the coordinator is down at the end of the run; its report cannot be compared']
    for (const o of world.outcomes.values()) {
      const run = state.runs.get(o.runId)
      // A revoked node's later results are refused by design: the coordinator ended its run as revoked.
      if (world.revokedAt.has(o.node) && run?.status === 'skipped' && run.reasonCode === 'revoked') continue
      if (!run) { problems.push(`node ${o.node} decided run ${o.runId} (${o.status}) but the coordinator has no such run`); continue }
      if (run.receivedAt === undefined) { problems.push(`node ${o.node} decided run ${o.runId} (${o.status}) but the result never reached the coordinator (coordinator says ${run.status})`); continue }
      const reported = run.steps.map((s) => [s.number, s.status, s.attempts])
      if (run.status !== o.status || JSON.stringify(reported) !== JSON.stringify(o.steps)) {
        problems.push(`run ${o.runId} on ${o.node}: coordinator reports ${run.status} ${JSON.stringify(reported)}, the agent decided ${o.status} ${JSON.stringify(o.steps)}`)
      }
    }
    const perNode = new Map<string, string>()
    for (const run of state.runs.values()) {
      if (run.receivedAt !== undefined && !world.outcomes.has(run.runId)) problems.push(`coordinator stored a result for run ${run.runId} (${run.nodeId}, ${run.status}) that no agent decided`)
      const k = `${run.instanceId}|${run.nodeId}`
      const dup = perNode.get(k)
      if (dup !== undefined) problems.push(`coordinator holds two runs (${dup}, ${run.runId}) of instance ${run.instanceId} for ${run.nodeId}: a result counted twice`)
      perNode.set(k, run.runId)
    }
    for (const e of world.execList) {
      if (!world.legitJobs.has(e.jobId)) continue
      const o = world.outcomes.get(e.runId)
      if (!o) continue
      const step = o.steps.find((s) => s[0] === e.step)
      if (!step || step[1] === 'not_run' || step[2] < e.attempt) {
        problems.push(`node ${e.node} executed step ${e.step} attempt ${e.attempt} of run ${e.runId}, but its result reports ${step ? `${step[1]} after ${step[2]} attempt(s)` : 'no such step'}`)
      }
    }
    return problems
  },
}

/** (8) Liveness: after faults stop, everything converges within the stated bound. */
export const liveness: Checker = {
  name: 'liveness',
  final(world) {
    if (world.convergedAt !== undefined) return []
    if (world.healedAt === Infinity) return ['the safety phase never ended']
    return [`not converged ${(world.livenessBoundMs / 1000).toFixed(0)} s (simulated) after faults stopped at ${(world.healedAt / 1000).toFixed(1)} s: ${world.pending(5).join('; ')}`]
  },
}

// ---------------------------------------------------------------- rollout ground truth
//
// The checkers below judge the rollout rules (README "Where") from what the world recorded in
// simulated time, never from the nodes' skewed clocks: when each node first started a step of
// a run (exec start), when its last attempt ended, when its decision became durable
// (outcome.at), when each node accepted the job (its run record became durable), and the
// coordinator's signed resolution of the targets. The rule arithmetic (budgets, thresholds)
// is re-derived from the README in sim/oracle.ts, not imported from protocol/, so a wrong rule
// in the core is not mirrored by the checker.

const DEFAULT_LEASE_MS = 30_000

interface RunTruth {
  node: string
  runId: string
  instanceId: string
  jobId: string
  group: number
  position: number
  occurrenceAt: number
  /** First step attempt started (simulated ms); undefined: the run never executed anything. */
  start?: number
  /** Last step attempt ended (or the end of the run if one is still going). */
  lastEnd?: number
  /** Terminal decision durable (outcome). */
  decidedAt?: number
  status?: string
}

/** Per instance: the runs the world saw, by node id. */
function truth(world: World): Map<string, { body: JobBody; occurrenceAt: number; runs: Map<string, RunTruth> }> {
  const out = new Map<string, { body: JobBody; occurrenceAt: number; runs: Map<string, RunTruth> }>()
  const get = (jobId: string, instanceId: string, node: string, runId: string, group: number, position: number, occurrenceAt: number): RunTruth | undefined => {
    const body = world.jobBodies.get(jobId)
    if (!body) return undefined
    let inst = out.get(instanceId)
    if (!inst) { inst = { body, occurrenceAt, runs: new Map() }; out.set(instanceId, inst) }
    let r = inst.runs.get(node)
    if (!r) { r = { node, runId, instanceId, jobId, group, position, occurrenceAt }; inst.runs.set(node, r) }
    return r
  }
  for (const e of world.execList) {
    const r = get(e.jobId, e.instanceId, e.node, e.runId, e.group, e.position, e.occurrenceAt)
    if (!r) continue
    r.start = Math.min(r.start ?? Infinity, e.start)
    r.lastEnd = Math.max(r.lastEnd ?? -Infinity, e.end ?? world.now)
  }
  for (const o of world.outcomes.values()) {
    const r = get(o.jobId, o.instanceId, o.node, o.runId, o.group, o.position, o.occurrenceAt)
    if (!r) continue
    r.decidedAt = o.at
    r.status = o.status
  }
  // Revocation ends a node's part in the rollout at once (the coordinator counts its run done, not
  // succeeded): what it still runs after that is outside the fleet, as the README says.
  if (world.revokedAt.size === 0) return out
  for (const [instanceId, inst] of out) {
    const groups = world.jobTargets.get(inst.body.jobId)?.groups ?? []
    groups.forEach((g, group) => g.nodes.forEach((node, position) => {
      const revoked = world.revokedAt.get(node)
      if (revoked === undefined) return
      const r = inst.runs.get(node) ?? { node, runId: runIdFor(instanceId, node), instanceId, jobId: inst.body.jobId, group, position, occurrenceAt: inst.occurrenceAt, status: 'skipped' }
      inst.runs.set(node, r)
      r.decidedAt = Math.min(r.decidedAt ?? Infinity, revoked)
      if (r.lastEnd !== undefined) r.lastEnd = Math.min(r.lastEnd, revoked)
    }))
  }
  return out
}

function fmt(ms: number): string {
  return `${(ms / 1000).toFixed(3)} s`
}

/** Simulated time when `nodeId`'s clock reaches group `g`'s deadline (README: budgets add up in a sequential rollout). */
function deadlineFor(world: World, body: JobBody, occurrenceAt: number, g: number, nodeId: string): number {
  const groups = body.template.target.groups
  let local = occurrenceAt
  if (body.template.target.executionType === 'sequential') for (let j = 0; j <= g; j++) local += groups[j]!.timeoutSeconds * 1000
  else local += groups[g]!.timeoutSeconds * 1000
  const node = agentsById(world).get(nodeId)
  return node ? world.simTimeOfLocal(node, local) : Infinity
}

/** The world's agents by node id, built once per world (the groups checker looks one up per target: a scan each was quadratic). */
const agentIndex = new WeakMap<World, Map<string, World['agents'][number]>>()
function agentsById(world: World): Map<string, World['agents'][number]> {
  let m = agentIndex.get(world)
  if (!m || m.size !== world.agents.length) { m = new Map(world.agents.map((a) => [a.id, a])); agentIndex.set(world, m) }
  return m
}

/** How many of the sorted numbers are ≤ x. */
function countAtMost(sorted: number[], x: number): number {
  let lo = 0
  let hi = sorted.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (sorted[mid]! <= x) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** The coordinator tally's code for a released position (coordinator/core.ts Pos.Released). */
const RELEASED = 5
/** A group's members in rollout order, as the coordinator resolved them (the simulator reads its state at publish). */
const membersOf = (world: World, jobId: string, group: number): string[] => world.jobTargets.get(jobId)?.groups[group]?.nodes ?? []
const released = (world: World, runId: string, node: string) => world.releasedAtStart.get(runId)?.includes(node) ?? false

/**
 * (3) Batches. Rolling: at no instant do more than batchSize runs of a group run (a run counts
 * from its first step's start to its last step's end). Batching: no node of batch b + 1 starts
 * before every node of batch b decided (success, failure or skipped). Under vanishedHolder
 * "release" the documented exception (a released holder still running makes k + 1) is
 * reported as a trade-off when a release explains it, and a violation when none does.
 */
export const batches: Checker = {
  name: 'batches',
  onExec(world, exec, request, agent) {
    // Record what the starting node's knowledge counted as released (release policy only).
    if (world.releasedAtStart.has(exec.runId)) return undefined
    const body = world.jobBodies.get(request.jobId)
    if (!body || body.template.chorus?.vanishedHolder !== 'release') return undefined
    // Released as the starting node could know it: a holder whose lease fact it holds ran out,
    // or a target the coordinator's tally released (its checkpoints count those as done).
    const k = agent.state?.progress.get(exec.instanceId)
    const now = world.localNow(agent)
    const targets = world.jobTargets.get(request.jobId)
    const tally = world.coordinator.state?.tallies.get(exec.instanceId)
    const list: string[] = []
    targets?.groups.forEach((g, gi) => g.nodes.forEach((n, pos) => {
      if (n === exec.node) return
      const f = k?.facts.get(gi)?.get(pos)
      if (f?.done) return
      if ((f?.lease !== undefined && f.lease < now) || tally?.groups[gi]?.status[pos] === RELEASED) list.push(n)
    }))
    world.releasedAtStart.set(exec.runId, list)
    return undefined
  },
  final(world) {
    const problems: string[] = []
    for (const [instanceId, inst] of truth(world)) {
      const t = inst.body.template
      const release = t.chorus?.vanishedHolder === 'release'
      t.target.groups.forEach((spec, g) => {
        const members = membersOf(world, inst.body.jobId, g)
        const k = batchSizeFor(spec.batchSize, members.length)
        if (k >= members.length) return
        const runs = members.map((m) => inst.runs.get(m)).filter((r): r is RunTruth => r?.start !== undefined)
        if (spec.distributionMethod === 'rolling') {
          const ev: [number, number, RunTruth][] = []
          for (const r of runs) ev.push([r.start!, 1, r], [r.lastEnd!, -1, r])
          ev.sort((a, b) => a[0] - b[0] || a[1] - b[1])
          const running = new Set<RunTruth>()
          for (const [at, d, r] of ev) {
            if (d < 0) { running.delete(r); continue }
            running.add(r)
            if (running.size <= k) continue
            // Released as any of the running runs saw it when it started: a holder whose lease ran out,
            // or a target counted gone (silent past the lease) that came back and started anyway.
            const rel = [...running].filter((x) => [...running].some((y) => y !== x && released(world, y.runId, x.node)))
            const what = `instance ${instanceId} group ${g} (rolling, window ${k}): ${running.size} runs at once at ${fmt(at)} when ${r.node} (position ${r.position}) started; running: ${[...running].map((x) => `${x.node}@${x.position}`).slice(0, 8).join(', ')}`
            if (release && rel.length > 0 && running.size <= k + rel.length) world.tradeoff('batches', `${what}; ${rel.map((x) => x.node).join(', ')} released (lease expired), documented vanishedHolder "release" trade-off`)
            else problems.push(what)
          }
        } else {
          // The latest decision in each batch (Infinity: a member never decided): a run of batch b
          // that started at or after batch b − 1's latest decision is fine, without a member scan.
          const lastDecided: number[] = []
          for (let i = 0; i < members.length; i++) {
            const d = inst.runs.get(members[i]!)?.decidedAt ?? Number.POSITIVE_INFINITY
            const bi = Math.floor(i / k)
            lastDecided[bi] = Math.max(lastDecided[bi] ?? Number.NEGATIVE_INFINITY, d)
          }
          for (const r of runs) {
            const b = Math.floor(r.position / k)
            if (b === 0 || lastDecided[b - 1]! <= r.start!) continue
            for (const m of members.slice((b - 1) * k, b * k)) {
              const prev = inst.runs.get(m)
              if (prev?.decidedAt !== undefined && prev.decidedAt <= r.start!) continue
              const what = `instance ${instanceId} group ${g} (batching, size ${k}): ${r.node} of batch ${b} started at ${fmt(r.start!)} before ${m} of batch ${b - 1} ${prev?.decidedAt !== undefined ? `decided (at ${fmt(prev.decidedAt)})` : 'ever decided'}`
              if (release && released(world, r.runId, m)) world.tradeoff('batches', `${what}; ${m} released (lease expired), documented vanishedHolder "release" trade-off`)
              else problems.push(what)
              break
            }
          }
        }
      })
    }
    return problems
  },
}

/**
 * (4) Groups. With sequential execution no node of group g + 1 starts before group g finished
 * (every member decided, or group g's time budget passed by the starting node's clock) and met
 * its success criteria (README: the silent ones count as failed); so a group that cannot meet
 * them stops distribution. Also the overshoot bound: failures in a group never exceed its
 * failure budget + batch size (the runs already in flight).
 */
export const groups: Checker = {
  name: 'groups',
  final(world) {
    const problems: string[] = []
    for (const [instanceId, inst] of truth(world)) {
      const t = inst.body.template
      const release = t.chorus?.vanishedHolder === 'release'
      const specs = t.target.groups
      specs.forEach((spec, g) => {
        const members = membersOf(world, inst.body.jobId, g)
        const n = members.length
        const k = batchSizeFor(spec.batchSize, n)
        const failures = members.filter((m) => inst.runs.get(m)?.status === 'failure').length
        const budget = failureBudget(spec.successCriteria, n)
        if (failures > budget + k && n > 0) {
          const what = `instance ${instanceId} group ${g}: ${failures} runs failed, more than the failure budget ${budget} + batch size ${k}`
          if (release) world.tradeoff('groups', `${what} (vanishedHolder "release": released holders do not bound the runs in flight)`)
          else problems.push(what)
        }
        if (t.target.executionType !== 'sequential' || g === 0) return
        const prevMembers = membersOf(world, inst.body.jobId, g - 1)
        const prevSpec = specs[g - 1]!
        const pn = prevMembers.length
        // Decision times of the previous group, sorted: "how many decided (or succeeded) by S" is a
        // binary search, so the check is O(n log n) and a 50,000-agent run stays checkable.
        const decidedAts = prevMembers.map((p) => inst.runs.get(p)?.decidedAt ?? Number.POSITIVE_INFINITY).sort((a, b) => a - b)
        const successAts = prevMembers.flatMap((p) => { const pr = inst.runs.get(p); return pr?.status === 'success' && pr.decidedAt !== undefined ? [pr.decidedAt] : [] }).sort((a, b) => a - b)
        for (const m of members) {
          const r = inst.runs.get(m)
          if (r?.start === undefined) continue
          const S = r.start
          const pastDeadline = S >= deadlineFor(world, inst.body, inst.occurrenceAt, g - 1, m)
          if (countAtMost(decidedAts, S) < pn) {
            const open = prevMembers.filter((p) => { const pr = inst.runs.get(p); return !(pr?.decidedAt !== undefined && pr.decidedAt <= S) })
            const unexplained = open.filter((p) => !(release && released(world, r.runId, p)))
            if (unexplained.length > 0 && !pastDeadline) {
              problems.push(`instance ${instanceId}: ${m} of group ${g} started at ${fmt(S)} before group ${g - 1} finished (${unexplained.length} of ${pn} not decided, e.g. ${unexplained.slice(0, 3).join(', ')}; its time budget had not passed)`)
              continue
            }
          }
          const succeeded = countAtMost(successAts, S)
          const need = successNeeded(prevSpec.successCriteria, pn)
          const pb = failureBudget(prevSpec.successCriteria, pn)
          if (succeeded < need || pn - succeeded > pb) {
            problems.push(`instance ${instanceId}: ${m} of group ${g} started at ${fmt(S)} although group ${g - 1} had not met its success criteria (${succeeded} of ${pn} succeeded, ${need} needed, at most ${pb} may fail): distribution should have stopped`)
          }
        }
      })
    }
    return problems
  },
}

/** (5) Quorum: no node starts a quorum-gated job before the quorum of its targets accepted it (durably held the job). */
export const quorum: Checker = {
  name: 'quorum',
  final(world) {
    const problems: string[] = []
    for (const [instanceId, inst] of truth(world)) {
      const q = inst.body.template.chorus?.quorum
      if (!q) continue
      const targets = inst.body.resolved.groups.reduce((a, g) => a + g.size, 0)
      const need = Math.max(1, thresholdFor(q, targets))
      // Acceptance times sorted once: "how many accepted by the start" is a binary search per run.
      const acceptedAts = [...(world.accepted.get(instanceId) ?? new Map<string, number>()).values()].sort((a, b) => a - b)
      for (const r of inst.runs.values()) {
        if (r.start === undefined) continue
        const before = countAtMost(acceptedAts, r.start)
        if (before < need) problems.push(`instance ${instanceId}: ${r.node} started at ${fmt(r.start)} when ${before} of ${targets} targets had accepted the job; the quorum is ${need}`)
      }
    }
    return problems
  },
}

/**
 * (6) Exceptions: no occurrence inside an exception window runs anywhere, and the coordinator
 * records every such occurrence it reached as excluded (not performed). Missed occurrences
 * (the agent was not running) are reported as skipped with the "missed" reason, ran nothing,
 * and the coordinator holds that same status and reason.
 */
export const exceptions: Checker = {
  name: 'exceptions',
  final(world) {
    const problems: string[] = []
    const c = world.coordinator.state
    for (const [jobId, body] of world.jobBodies) {
      if (body.template.scheduleRule === 'immediate') continue
      const sched = deriveSchedule(body.template, body.issuedAt, [])
      if (!sched.ok) { problems.push(`job ${jobId}: its schedule does not derive: ${sched.message}`); continue }
      const ex = (at: number) => exclusionFor(sched.value.exceptions, at)
      for (const e of world.execList) {
        if (e.jobId !== jobId) continue
        const w = ex(e.occurrenceAt)
        if (w) problems.push(`node ${e.node} ran step ${e.step} of occurrence ${new Date(e.occurrenceAt).toISOString()}, inside the exception window ${new Date(w.windowStartMs).toISOString()}..${new Date(w.windowEndMs).toISOString()}`)
      }
      for (const o of world.outcomes.values()) {
        if (o.jobId !== jobId) continue
        if (ex(o.occurrenceAt) && o.status !== 'skipped') problems.push(`node ${o.node} decided ${o.status} for occurrence ${new Date(o.occurrenceAt).toISOString()}, inside an exception window`)
        if (o.reasonCode === 'missed') {
          if (o.status !== 'skipped') problems.push(`node ${o.node}: missed occurrence ${new Date(o.occurrenceAt).toISOString()} decided ${o.status}, not skipped`)
          if (world.execList.some((e) => e.runId === o.runId)) problems.push(`node ${o.node}: occurrence ${new Date(o.occurrenceAt).toISOString()} was reported missed but ran`)
          const cr = c?.runs.get(o.runId)
          if (cr && cr.receivedAt !== undefined && (cr.status !== 'skipped' || cr.reason !== o.reason)) problems.push(`node ${o.node}: missed occurrence ${new Date(o.occurrenceAt).toISOString()} is ${cr.status} (${cr.reason ?? 'no reason'}) at the coordinator`)
        }
      }
      if (!c) continue
      for (const inst of c.instances.values()) {
        if (inst.jobId !== jobId) continue
        const w = ex(inst.occurrenceAt)
        if (w && inst.status !== 'excluded') problems.push(`coordinator: occurrence ${new Date(inst.occurrenceAt).toISOString()} lies in an exception window but its instance is ${inst.status}`)
        if (!w && inst.status === 'excluded') problems.push(`coordinator: occurrence ${new Date(inst.occurrenceAt).toISOString()} is recorded excluded but no exception window holds it`)
      }
    }
    return problems
  },
}

/** quorum-upgrade: at no instant are more than world.maxUnavailable targets down or upgrading (start of the run to its durable decision). */
export const clusterAvailability: Checker = {
  name: 'cluster-availability',
  final(world) {
    const max = world.maxUnavailable
    if (max === undefined) return []
    const ev: [number, number, string][] = []
    const byNode = new Map<string, [number, number][]>()
    const add = (node: string, a: number, b: number) => { let l = byNode.get(node); if (!l) { l = []; byNode.set(node, l) } l.push([a, b]) }
    for (const inst of truth(world).values()) for (const r of inst.runs.values()) if (r.start !== undefined) add(r.node, r.start, r.decidedAt ?? world.now)
    for (const a of world.agents) {
      for (const [x, y] of a.downIntervals) add(a.id, x, y)
      if (!a.up && a.downSince > 0) add(a.id, a.downSince, world.now)
    }
    for (const [node, list] of byNode) {
      list.sort((p, q) => p[0] - q[0])
      let cur: [number, number] | undefined
      for (const iv of [...list, undefined]) {
        if (iv && cur && iv[0] <= cur[1]) { cur[1] = Math.max(cur[1], iv[1]); continue }
        if (cur) ev.push([cur[0], 1, node], [cur[1], -1, node])
        cur = iv ? [iv[0], iv[1]] : undefined
      }
    }
    ev.sort((a, b) => a[0] - b[0] || a[1] - b[1])
    const now = new Set<string>()
    for (const [at, d, node] of ev) {
      if (d < 0) { now.delete(node); continue }
      now.add(node)
      if (now.size > max) return [`${now.size} cluster members down or upgrading at ${fmt(at)} (${[...now].join(', ')}); at most ${max} may be`]
    }
    return []
  },
}

/**
 * Membership: no result from a non-member counts, and no non-member receives a definition. Rogue
 * hosts (own keys, stolen ids, replayed certificates) receive no definition by gossip or in a
 * reply, none of them is in the registry, every honest node id stays bound to its own key, and
 * no result of a revoked node is stored after its revocation.
 */
export const membership: Checker = {
  name: 'membership',
  final(world) {
    const problems = [...world.rogueReceipts]
    const state = world.coordinator.state
    if (!state) return problems
    const honest = new Map(world.agents.map((a) => [a.id, a.identity.publicKey]))
    const rogueKeys = new Set(world.rogues.map((r) => r.identity.publicKey))
    for (const n of state.nodes.values()) {
      if (rogueKeys.has(n.publicKey)) problems.push(`rogue key ${n.publicKey.slice(0, 8)}… is registered as node ${n.nodeId}`)
      else if (honest.has(n.nodeId) && honest.get(n.nodeId) !== n.publicKey) problems.push(`node id ${n.nodeId} is bound to a key that is not its own`)
    }
    for (const run of state.runs.values()) {
      if (run.receivedAt === undefined) continue
      if (!honest.has(run.nodeId)) problems.push(`a result for ${run.nodeId}, which is no enrolled node, was stored (run ${run.runId})`)
      const revokedAt = world.revokedAt.get(run.nodeId)
      if (revokedAt !== undefined && run.receivedAt > world.localAt(world.coordinator, revokedAt)) problems.push(`a result of revoked node ${run.nodeId} was stored after its revocation (run ${run.runId})`)
    }
    return problems
  },
}

/**
 * coordinator-loss: while the coordinator is down, no gap between consecutive run ends exceeds
 * world.maxRunEndGapMs: waiting targets noticed the lost connection and went on by peer gossip.
 * The crash and, when some run still ended after it, the coordinator's return count as ends too:
 * a target left out of the rollout (no run, or one that never took its turn) until the
 * coordinator came back is a gap from the last run end to the return.
 */
export const coordinatorLossGap: Checker = {
  name: 'coordinator-loss-gap',
  final(world) {
    const bound = world.maxRunEndGapMs
    if (bound === undefined) return []
    const problems: string[] = []
    // A target that was no member yet when the coordinator died (its hello's reply lost) waits for its return by design.
    const outcomes = [...world.outcomes.values()]
    for (const o of outcomes) if (world.notMembersAtLoss.has(o.node)) world.tradeoff('coordinator-loss-gap', `${o.node} held no membership certificate when the coordinator went down (its hello's reply was lost): its run, ended at ${(o.at / 1000).toFixed(1)} s, is not counted`)
    const ends = outcomes.filter((o) => !world.notMembersAtLoss.has(o.node)).map((o) => o.at).sort((a, b) => a - b)
    const s = (t: number) => (t / 1000).toFixed(1)
    for (const [from, to] of world.coordinatorDown) {
      const marks = [from, ...ends.filter((t) => t > from && t <= to)]
      const late = ends.filter((t) => t > to).length
      if (late > 0) marks.push(to)
      for (let i = 1; i < marks.length; i++) {
        const gap = marks[i]! - marks[i - 1]!
        if (gap <= bound) continue
        const what = i === 1 ? `the coordinator's crash at ${s(from)} s` : `the run end at ${s(marks[i - 1]!)} s`
        const until = late > 0 && i === marks.length - 1 ? `its return at ${s(to)} s, ${late} run(s) ending only after it (the rollout stalled)` : `the run end at ${s(marks[i]!)} s`
        problems.push(`${s(gap)} s from ${what} to ${until} while the coordinator was down (bound ${bound / 1000} s)`)
      }
    }
    return problems
  },
}

export const ALL_CHECKERS: Checker[] = [authenticity, atMostOnce, nothingLost, liveness, batches, groups, quorum, exceptions, clusterAvailability, membership, coordinatorLossGap]

export function checkersByName(names: string[]): Checker[] {
  return names.map((n) => {
    const c = ALL_CHECKERS.find((x) => x.name === n)
    if (!c) throw new Error(`unknown property ${JSON.stringify(n)}; known: ${ALL_CHECKERS.map((x) => x.name).join(', ')}`)
    return c
  })
}

export type { Checker, World }
