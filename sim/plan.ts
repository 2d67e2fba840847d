// `chorus job plan FILE --simulate`: the template over the groups the coordinator resolves now,
// in the simulator (real cores, simulated network, no network faults, one link profile, the
// simulator's step model: durations and failures drawn per seed), K seeds.
// Reports predicted completion (p50, p99), the most nodes running at once per group, failures
// against each group's budget, and the safety properties' verdicts. Bounded: ≤ MAX_PLAN_SEEDS
// seeds, ≤ MAX_PLAN_AGENTS nodes.
import type { JobTemplate } from '../protocol/template.js'
import type { PlanSimulation } from '../protocol/api.js'
import { thresholdFor } from '../protocol/rollout.js'
import { ALL_CHECKERS } from './checkers.js'
import { maxConcurrentByGroup } from './cli.js'
import type { LinkProfileName } from './network.js'
import { planSetup } from './scenarios.js'
import { World } from './world.js'

export const MAX_PLAN_SEEDS = 20
export const MAX_PLAN_AGENTS = 2_000

export type { PlanSimulation } from '../protocol/api.js'

/** The template with each group's targets replaced by the nodes the coordinator resolved for it. */
export function pinTargets(template: JobTemplate, groups: string[][]): JobTemplate {
  return { ...template, target: { ...template.target, groups: template.target.groups.map((g, i) => ({ ...g, nodeListType: 'nodes' as const, nodeIdentifiers: groups[i] ?? [] })) } }
}

/** Failures a group may have and still meet its success criteria. */
export function failureBudget(group: JobTemplate['target']['groups'][number], size: number): number {
  if (group.successCriteria.length === 0) return 0
  return Math.min(...group.successCriteria.map((c) => (c.status === 'success' ? size - thresholdFor(c.numRuns, size) : Math.max(1, thresholdFor(c.numRuns, size)) - 1)))
}

function quantile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!
}

export function simulatePlan(o: { template: JobTemplate; groups: string[][]; seeds: number; profile: LinkProfileName }): PlanSimulation {
  const seeds = Math.min(MAX_PLAN_SEEDS, Math.max(1, o.seeds))
  const ids = [...new Set(o.groups.flat())]
  if (ids.length === 0) throw new Error('the plan targets no node: nothing to simulate')
  if (ids.length > MAX_PLAN_AGENTS) throw new Error(`at most ${MAX_PLAN_AGENTS} nodes are simulated for a plan; this one targets ${ids.length}`)
  const template = pinTargets(o.template, o.groups)
  const completions: number[] = []
  const groups = o.groups.map((nodes, group) => ({ group, nodes: nodes.length, most_running_at_once: 0, failures_max: 0, failure_budget: failureBudget(o.template.target.groups[group]!, nodes.length), within_budget: true }))
  const safety: PlanSimulation['safety'] = Object.fromEntries(ALL_CHECKERS.map((c) => [c.name, 'ok' as const]))
  const outcomes: Record<string, number> = {}
  let undecided = 0
  for (let seed = 1; seed <= seeds; seed++) {
    const world = new World({ seed, agents: ids.length, template, nodeIds: ids, checkers: ALL_CHECKERS })
    planSetup(o.profile)(world)
    world.run()
    const state = world.coordinator.state
    const instance = state ? [...state.instances.values()][0] : undefined
    outcomes[instance?.status ?? 'not created'] = (outcomes[instance?.status ?? 'not created'] ?? 0) + 1
    // The instance is created at submit (an immediate job) and updated when it is decided.
    if (instance && instance.status !== 'running') completions.push((instance.updatedAt - instance.createdAt) / 1000)
    else undecided++
    for (const [g, n] of Object.entries(maxConcurrentByGroup(world))) { const row = groups[Number(g)]; if (row) row.most_running_at_once = Math.max(row.most_running_at_once, n) }
    for (const row of groups) {
      const failed = [...(state?.runs.values() ?? [])].filter((r) => r.group === row.group && r.status !== 'success').length
      row.failures_max = Math.max(row.failures_max, failed)
      row.within_budget &&= failed <= row.failure_budget
    }
    for (const v of world.violations) {
      const prev = safety[v.property]
      const list = prev && prev !== 'ok' ? prev.violated_seeds : []
      if (!list.includes(seed)) list.push(seed)
      safety[v.property] = { violated_seeds: list }
    }
  }
  completions.sort((a, b) => a - b)
  return { seeds, profile: o.profile, nodes: ids.length, completion_s: { p50: quantile(completions, 0.5), p99: quantile(completions, 0.99), undecided_seeds: undecided }, groups, safety, outcomes }
}
