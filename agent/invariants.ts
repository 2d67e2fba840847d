// What must hold of an agent's state after every step (see coordinator/invariants.ts). Pure.
import type { AgentState } from './core.js'

export function agentInvariants(state: AgentState, now: number): string[] {
  const problems: string[] = []
  for (const runId of state.outbox.keys()) {
    const run = state.runs.get(runId)
    if (run && run.status !== 'success' && run.status !== 'failure' && run.status !== 'skipped') problems.push(`run ${runId} has a queued result but is ${run.status}`)
  }
  for (const run of state.runs.values()) {
    if (run.inFlight && run.status !== 'running') problems.push(`run ${run.runId} has an attempt in flight but is ${run.status}`)
    if (run.stepIndex < 0) problems.push(`run ${run.runId}: step index ${run.stepIndex}`)
  }
  if (state.sync.watchSentAt > now) problems.push(`a watch sent in the future (${state.sync.watchSentAt} > ${now})`)
  return problems
}
