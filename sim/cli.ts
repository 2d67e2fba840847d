// `chorus sim`: runs a scenario over one seed or many, checks every property, prints a JSON
// summary on stdout and, on any violation, the seed and the exact command that replays it.
import { readFile, writeFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { formatFromFileName, parseTemplateText } from '../protocol/parse.js'
import type { JobTemplate } from '../protocol/template.js'
import { ALL_CHECKERS } from './checkers.js'
import { SCENARIOS, builtinTemplate, findScenario, namedTargets, type Scenario } from './scenarios.js'
import { ED25519, SIM_FAST_CRYPTO, useCryptoProvider } from '../protocol/keys.js'
import { World, type Checker, type Cores, type StepModel } from './world.js'
import { renderReport } from './report.js'
import type { LoadSummary } from './load.js'

export interface Violation {
  seed: number
  property: string
  detail: string
}

export interface ScenarioRunOptions {
  scenario: string
  seed: number
  agents?: number
  /** A validated template; the built-in patch job when absent. */
  template?: JobTemplate
  /** Test doubles for the cores (a deliberately broken core must be caught); a function sees the world first. */
  cores?: Partial<Cores> | ((world: World) => Partial<Cores>)
  checkers?: Checker[]
  stepModel?: Partial<StepModel>
  /** Keep the data the HTML report needs. */
  timeline?: boolean
  /** Debugging aid: receives every trace line. */
  traceSink?: (line: string) => void
  /** Tick every agent every AGENT_TICK_MS even when idle (WorldOptions.tickAll; slower, same trace). */
  tickAll?: boolean
  /** Sign and verify with real ed25519 (default: the fast provider of the same semantics, protocol/keys.ts SIM_FAST_CRYPTO). */
  realCrypto?: boolean
}

export interface SeedResult {
  scenario: string
  seed: number
  agents: number
  violations: Violation[]
  liveness_failed: boolean
  sim_time_s: number
  wall_s: number
  /** CPU time of this process (user + system) while the seed ran, in s: wall time on a loaded machine overstates the cost. */
  cpu_s: number
  messages: number
  bytes_per_node_per_s: number
  bytes_coordinator_per_s: number
  max_concurrent_by_group: Record<string, number>
  trace_hash: string
  /** Liveness bound of this run (sim/bound.ts) and how it was derived. */
  liveness_bound_s: number
  liveness_formula: string
  /** Progress gossiped between targets (only while the coordinator is away, jobs of ≤ 64 targets). */
  progress_messages: number
  /** Documented trade-offs observed (vanishedHolder "release" overflow): reported, not violations. */
  tradeoffs: Violation[]
  converged_after_heal_s: number | null
  events: number
  core_steps: number
  step_attempts: number
  runs_decided: number
  peak_rss_mb: number
  notes: string[]
  /** Requests per kind, their outcomes and the coordinator's queue over time (sim/load.ts). */
  load: LoadSummary
  /** The finished world, for the report and for tests that look deeper. */
  world: World
}

export class SimUsageError extends Error {
  override name = 'SimUsageError'
}

/** Runs one seed of one scenario. Throws SimUsageError for an unknown or unavailable scenario. */
export function runScenario(o: ScenarioRunOptions): SeedResult {
  const scenario = findScenario(o.scenario)
  if (!scenario) throw new SimUsageError(`unknown scenario ${JSON.stringify(o.scenario)}; known: ${SCENARIOS.map((s) => s.name).join(', ')}`)
  if (scenario.unavailable) throw new SimUsageError(scenario.unavailable)
  const agents = o.agents ?? scenario.defaultAgents
  if (!Number.isInteger(agents) || agents < 1 || agents > 100_000) throw new SimUsageError(`--agents must be an integer from 1 to 100000; got ${agents}`)
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) throw new SimUsageError(`--seed must be an integer from 0 to 4294967295; got ${o.seed}`)
  const template = o.template ?? scenario.template?.(o.seed) ?? builtinTemplate()
  const wall0 = performance.now()
  const cpu0 = process.cpuUsage()
  // Identities are made and messages signed inside this window; the world's envelopes are
  // opened under the same provider by the checkers before it closes.
  const previous = useCryptoProvider(o.realCrypto ? ED25519 : SIM_FAST_CRYPTO)
  try {
    return runWorld(o, scenario, agents, template, wall0, cpu0)
  } finally {
    useCryptoProvider(previous)
  }
}

function runWorld(o: ScenarioRunOptions, scenario: Scenario, agents: number, template: JobTemplate, wall0: number, cpu0: NodeJS.CpuUsage): SeedResult {
  const world = new World({
    seed: o.seed, agents, template, nodeIds: namedTargets(template), checkers: o.checkers ?? ALL_CHECKERS,
    ...(o.cores ? { cores: o.cores } : {}), ...(o.stepModel ?? scenario.stepModel ? { stepModel: { ...scenario.stepModel, ...o.stepModel } } : {}), timeline: o.timeline ?? false,
    ...(o.traceSink ? { traceSink: o.traceSink } : {}), ...(o.tickAll ? { tickAll: true } : {}), ...(scenario.rogues ? { rogues: scenario.rogues } : {}),
  })
  scenario.setup(world)
  world.run()
  const wall_s = (performance.now() - wall0) / 1000
  const cpu = process.cpuUsage(cpu0)
  const simS = Math.max(world.now / 1000, 1e-3)
  let bytes = 0
  for (const n of world.nodes) if (n.kind !== 'attacker') bytes += n.bytesSent + n.bytesRecv
  const nodeCount = world.nodes.length - 1
  const violations = world.violations.map((v) => ({ seed: o.seed, property: v.property, detail: v.detail }))
  return {
    scenario: scenario.name, seed: o.seed, agents,
    violations,
    liveness_failed: violations.some((v) => v.property === 'liveness'),
    sim_time_s: round(simS, 3),
    wall_s: round(wall_s, 3),
    cpu_s: round((cpu.user + cpu.system) / 1e6, 3),
    messages: world.messages,
    bytes_per_node_per_s: round(bytes / nodeCount / simS, 1),
    bytes_coordinator_per_s: round((world.coordinator.bytesSent + world.coordinator.bytesRecv) / simS, 1),
    max_concurrent_by_group: maxConcurrentByGroup(world),
    trace_hash: world.traceHash(),
    liveness_bound_s: round(world.livenessBoundMs / 1000, 1),
    liveness_formula: world.livenessFormula,
    progress_messages: world.progressMessages,
    tradeoffs: world.tradeoffs.map((v) => ({ seed: o.seed, property: v.property, detail: v.detail })),
    converged_after_heal_s: world.convergedAt === undefined ? null : round((world.convergedAt - world.healedAt) / 1000, 3),
    events: world.events,
    core_steps: world.coreSteps,
    step_attempts: world.execList.length,
    runs_decided: world.outcomes.size,
    peak_rss_mb: round(Math.max(world.peakRss, process.memoryUsage.rss()) / 1048576, 1),
    notes: world.notes,
    load: world.load.summary(),
    world,
  }
}

/** Most nodes executing a step of the job at the same instant, per group. */
export function maxConcurrentByGroup(world: World): Record<string, number> {
  const byGroup = new Map<number, [number, number][]>()
  for (const e of world.execList) {
    if (!world.legitJobs.has(e.jobId)) continue
    let list = byGroup.get(e.group)
    if (!list) { list = []; byGroup.set(e.group, list) }
    list.push([e.start, 1], [e.end ?? world.now, -1])
  }
  const out: Record<string, number> = {}
  for (const [g, list] of [...byGroup].sort((a, b) => a[0] - b[0])) {
    list.sort((a, b) => a[0] - b[0] || a[1] - b[1])
    let cur = 0
    let max = 0
    for (const [, d] of list) { cur += d; if (cur > max) max = cur }
    out[String(g)] = max
  }
  return out
}

function round(x: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

export interface SimCommandOptions {
  scenario: string
  agents?: number
  seed?: number
  seeds?: number
  job?: string
  json?: boolean
  report?: string
  /** Real ed25519 instead of the fast provider. */
  realCrypto?: boolean
  /** Test doubles for the cores (tests only: the command line has no way to set them). */
  cores?: ScenarioRunOptions['cores']
}

export interface SimSummary {
  scenario: string
  agents: number
  seeds: number[]
  violations: Violation[]
  liveness_failures: number
  sim_time_s: number
  wall_s: number
  /** CPU seconds (user + system) over the seeds. */
  cpu_s: number
  /** Simulator events (heap pops) over the seeds, and per wall second. */
  events: number
  events_per_s: number
  messages: number
  bytes_per_node_per_s: number
  max_concurrent_by_group: Record<string, number>
  trace_hash: string
  /** Largest liveness bound over the seeds, and the formula of the first seed (sim/bound.ts). */
  liveness_bound_s: number
  liveness_formula: string
  documented_tradeoffs: Violation[]
  peak_rss_mb: number
  /** One seed's load counters (sim/load.ts); absent over several seeds (a series does not add up). */
  load?: LoadSummary
}

export function replayCommand(scenario: string, agents: number, seed: number, job?: string): string {
  return `npx chorus sim --scenario ${scenario} --agents ${agents} --seed ${seed}${job ? ` --job ${job}` : ''}`
}

/**
 * The `chorus sim` command. Returns the exit code: 0 when every property held on every seed,
 * 1 on any violation (the seeds and replay commands go to stderr), 2 on a usage error.
 */
export async function runSimCommand(o: SimCommandOptions): Promise<number> {
  const scenario = findScenario(o.scenario)
  if (!scenario) {
    process.stderr.write(`chorus sim: unknown scenario ${JSON.stringify(o.scenario)}; known: ${SCENARIOS.map((s) => s.name).join(', ')}\n`)
    return 2
  }
  if (scenario.unavailable) {
    process.stderr.write(`chorus sim: ${scenario.unavailable}\n`)
    return 2
  }
  if (o.seed !== undefined && o.seeds !== undefined) {
    process.stderr.write('chorus sim: give --seed S (one run) or --seeds K (K runs from seed 1), not both\n')
    return 2
  }
  let template: JobTemplate | undefined
  if (o.job) {
    let text: string
    try { text = await readFile(o.job, 'utf8') } catch (err) {
      process.stderr.write(`chorus sim: cannot read --job ${o.job}: ${(err as Error).message}\n`)
      return 2
    }
    const parsed = parseTemplateText(text, formatFromFileName(o.job))
    if (!parsed.ok) {
      process.stderr.write(`chorus sim: --job ${o.job} is not a valid job template:\n${parsed.problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}\n`)
      return 2
    }
    template = parsed.template
  }
  const agents = o.agents ?? scenario.defaultAgents
  const count = o.seeds ?? 1
  if (!Number.isInteger(count) || count < 1 || count > 1_000_000) {
    process.stderr.write(`chorus sim: --seeds must be a positive integer; got ${o.seeds}\n`)
    return 2
  }
  const first = o.seed ?? 1
  const seeds = Array.from({ length: count }, (_, i) => (first + i) >>> 0)
  const results: SeedResult[] = []
  for (const seed of seeds) {
    let r: SeedResult
    try {
      r = runScenario({ scenario: scenario.name, seed, agents, ...(template ? { template } : {}), timeline: Boolean(o.report) && seeds.length === 1, ...(o.realCrypto ? { realCrypto: true } : {}), ...(o.cores ? { cores: o.cores } : {}) })
    } catch (err) {
      if (err instanceof SimUsageError) { process.stderr.write(`chorus sim: ${err.message}\n`); return 2 }
      throw err
    }
    if (r.world.refusal) {
      process.stderr.write(`chorus sim: seed ${seed}: ${r.world.refusal}\n`)
      return 2
    }
    results.push(r)
    if (!o.json && seeds.length > 1) {
      process.stderr.write(`seed ${seed}: ${r.violations.length === 0 ? 'ok' : `${r.violations.length} violation(s)`} (${r.sim_time_s.toFixed(0)} s simulated, ${r.wall_s.toFixed(1)} s wall)\n`)
    }
    for (const note of r.notes) process.stderr.write(`seed ${seed}: note: ${note}\n`)
  }
  const summary = summarize(scenario.name, agents, results)
  process.stdout.write(JSON.stringify(summary, null, o.json ? 0 : 2) + '\n')
  if (o.report) {
    const last = results[results.length - 1]!
    await writeFile(o.report, renderReport(last, summary))
    process.stderr.write(`report written to ${o.report}${seeds.length > 1 ? ` (timeline omitted: it shows one seed; rerun with --seed ${last.seed})` : ''}\n`)
  }
  if (summary.violations.length > 0) {
    const failing = [...new Set(summary.violations.map((v) => v.seed))]
    for (const seed of failing) {
      const props = [...new Set(summary.violations.filter((v) => v.seed === seed).map((v) => v.property))]
      process.stderr.write(`FAILED seed ${seed} (${props.join(', ')}): replay with\n  ${replayCommand(scenario.name, agents, seed, o.job)}\n`)
      for (const v of summary.violations.filter((x) => x.seed === seed).slice(0, 5)) process.stderr.write(`    ${v.property}: ${v.detail}\n`)
    }
    return 1
  }
  return 0
}

export function summarize(scenario: string, agents: number, results: SeedResult[]): SimSummary {
  const mcg: Record<string, number> = {}
  for (const r of results) for (const [g, v] of Object.entries(r.max_concurrent_by_group)) mcg[g] = Math.max(mcg[g] ?? 0, v)
  const trace = results.length === 1 ? results[0]!.trace_hash : createHash('sha256').update(results.map((r) => r.trace_hash).join('\n')).digest('hex')
  const sim = results.reduce((a, r) => a + r.sim_time_s, 0)
  const wall = results.reduce((a, r) => a + r.wall_s, 0)
  const events = results.reduce((a, r) => a + r.events, 0)
  return {
    scenario, agents,
    seeds: results.map((r) => r.seed),
    violations: results.flatMap((r) => r.violations),
    liveness_failures: results.filter((r) => r.liveness_failed).length,
    sim_time_s: round(sim, 3),
    wall_s: round(wall, 3),
    cpu_s: round(results.reduce((a, r) => a + r.cpu_s, 0), 3),
    events,
    events_per_s: Math.round(events / Math.max(wall, 1e-3)),
    messages: results.reduce((a, r) => a + r.messages, 0),
    bytes_per_node_per_s: round(results.reduce((a, r) => a + r.bytes_per_node_per_s * r.sim_time_s, 0) / Math.max(sim, 1e-3), 1),
    max_concurrent_by_group: mcg,
    trace_hash: trace,
    liveness_bound_s: Math.max(...results.map((r) => r.liveness_bound_s)),
    liveness_formula: results[0]?.liveness_formula ?? '',
    documented_tradeoffs: results.flatMap((r) => r.tradeoffs).slice(0, 50),
    peak_rss_mb: Math.max(...results.map((r) => r.peak_rss_mb)),
    ...(results.length === 1 ? { load: results[0]!.load } : {}),
  }
}
