// Safety and liveness properties, checked on every seed. A checker is a named property with
// optional hooks: `onExec` sees every step attempt as a node starts it, `final` sees the
// world after the liveness phase. Each problem becomes a violation { seed, property, detail }.
// New properties (batches, groups, quorum, exceptions) add a Checker here and to ALL_CHECKERS.
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
      if (!run) { problems.push(`node ${o.node} decided run ${o.runId} (${o.status}) but the coordinator has no such run`); continue }
      if (run.receivedAt === undefined) { problems.push(`node ${o.node} decided run ${o.runId} (${o.status}) but the result never reached the coordinator (coordinator says ${run.status})`); continue }
      const reported = run.steps.map((s) => [s.number, s.status, s.attempts])
      if (run.status !== o.status || JSON.stringify(reported) !== JSON.stringify(o.steps)) {
        problems.push(`run ${o.runId} on ${o.node}: coordinator reports ${run.status} ${JSON.stringify(reported)}, the agent decided ${o.status} ${JSON.stringify(o.steps)}`)
      }
    }
    for (const run of state.runs.values()) {
      if (run.receivedAt !== undefined && !world.outcomes.has(run.runId)) problems.push(`coordinator stored a result for run ${run.runId} (${run.nodeId}, ${run.status}) that no agent decided`)
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

export const ALL_CHECKERS: Checker[] = [authenticity, atMostOnce, nothingLost, liveness]

export function checkersByName(names: string[]): Checker[] {
  return names.map((n) => {
    const c = ALL_CHECKERS.find((x) => x.name === n)
    if (!c) throw new Error(`unknown property ${JSON.stringify(n)}; known: ${ALL_CHECKERS.map((x) => x.name).join(', ')}`)
    return c
  })
}

export type { Checker, World }
