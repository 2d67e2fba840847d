// `chorus job plan`: what a template would do on this fleet now, without running anything.
import { batchSizeFor, thresholdFor } from '../protocol/rollout.js'
import type { JobTemplate } from '../protocol/template.js'
import { deriveSchedule, optsInto } from '../protocol/jobschedule.js'
import { planOccurrences } from '../protocol/schedule.js'
import { DEFAULT_LEASE_S, DEFAULT_QUORUM_TIMEOUT_S, failureBudget, groupWindow } from '../protocol/gate.js'
import { resolveTargets, targetWarnings, type CoordinatorState, type SubmitProblem } from './core.js'
import { PROTOCOL_VERSION, type JobBody } from '../protocol/wire.js'
import type { TargetWarning } from './targeting.js'

export interface Plan {
  name: string
  schedule: { rule: string; next: { at: string; excluded?: string }[] }
  executionType: string
  quorum?: { need: number; total: number; timeoutSeconds: number }
  vanishedHolder: 'keep' | 'release'
  leaseSeconds?: number
  groups: {
    group: number
    distributionMethod: string
    batchSize: number
    batches: number
    timeoutSeconds: number
    /** Seconds after the occurrence by which the group must be done (budgets add up when sequential). */
    deadlineAfterSeconds: number
    successCriteria: string[]
    /** Failures the group can take before distribution stops. */
    failureBudget: number
    nodes: { nodeId: string; position: number; batch: number; alive: boolean; known: boolean }[]
  }[]
  /** Things that will not stop the job but may surprise: target ids never seen. */
  warnings: TargetWarning[]
}

export function planJob(state: CoordinatorState, template: JobTemplate, now: number): { ok: true; plan: Plan } | { ok: false; problems: SubmitProblem[] } {
  const resolved = resolveTargets(state, template)
  if ('problems' in resolved) return { ok: false, problems: resolved.problems }
  const globals = [...state.globals.values()].filter((g) => optsInto(template, g.id))
  const sched = deriveSchedule(template, now, globals)
  if (!sched.ok) return { ok: false, problems: [{ path: sched.path, message: sched.message }] }
  const body: JobBody = { type: 'job', v: PROTOCOL_VERSION, jobId: 'plan', issuedAt: now, expiresAt: now, template, resolved: { groups: resolved.groups.map((g) => ({ size: g.nodes.length })) } }
  const total = resolved.groups.reduce((n, g) => n + g.nodes.length, 0)
  const q = template.chorus?.quorum
  const plan: Plan = {
    name: template.name,
    schedule: {
      rule: template.scheduleRule,
      next: planOccurrences(sched.value.schedule, sched.value.exceptions, now - 1, 5).map((o) => ({
        at: new Date(o.at).toISOString(),
        ...(o.excluded ? { excluded: `${o.excluded.source} exception ${o.excluded.source === 'global' ? o.excluded.id : `exceptionRules[${o.excluded.ruleIndex}]`}` } : {}),
      })),
    },
    executionType: template.target.executionType,
    ...(q ? { quorum: { need: Math.max(1, thresholdFor(q, total)), total, timeoutSeconds: template.chorus?.quorumTimeoutSeconds ?? DEFAULT_QUORUM_TIMEOUT_S } } : {}),
    vanishedHolder: template.chorus?.vanishedHolder ?? 'keep',
    ...(template.chorus?.vanishedHolder === 'release' ? { leaseSeconds: template.chorus.leaseSeconds ?? DEFAULT_LEASE_S } : {}),
    groups: resolved.groups.map((g, gi) => {
      const spec = template.target.groups[gi]!
      const size = batchSizeFor(spec.batchSize, g.nodes.length)
      return {
        group: gi,
        distributionMethod: spec.distributionMethod,
        batchSize: size,
        batches: Math.ceil(g.nodes.length / size),
        timeoutSeconds: spec.timeoutSeconds,
        deadlineAfterSeconds: (groupWindow(body, 0, gi).deadlineAt) / 1000,
        successCriteria: spec.successCriteria.map((c) => `${c.status} ${c.numRuns.value}${c.numRuns.type === 'percent' ? ' %' : ''} (${thresholdFor(c.numRuns, g.nodes.length)} of ${g.nodes.length})`),
        failureBudget: failureBudget(spec.successCriteria, g.nodes.length),
        nodes: g.nodes.map((nodeId, position) => ({ nodeId, position, batch: Math.floor(position / size), alive: state.connected.has(nodeId), known: state.nodes.has(nodeId) })),
      }
    }),
    warnings: targetWarnings(state, template),
  }
  return { ok: true, plan }
}

export function formatPlan(p: Plan): string {
  const lines = [`plan for "${p.name}": ${p.executionType} groups, schedule ${p.schedule.rule}`]
  lines.push(`  next occurrences: ${p.schedule.next.map((n) => n.at + (n.excluded ? ` (excluded: ${n.excluded})` : '')).join(', ') || 'none'}`)
  if (p.quorum) lines.push(`  quorum: ${p.quorum.need} of ${p.quorum.total} targets must acknowledge within ${p.quorum.timeoutSeconds} s`)
  lines.push(`  a vanished slot holder: ${p.vanishedHolder}${p.leaseSeconds ? ` (lease ${p.leaseSeconds} s)` : ''}`)
  for (const g of p.groups) {
    lines.push(`  group ${g.group}: ${g.distributionMethod}, batch size ${g.batchSize} (${g.batches} batch${g.batches === 1 ? '' : 'es'}), timeout ${g.timeoutSeconds} s (done by +${g.deadlineAfterSeconds} s), criteria ${g.successCriteria.join('; ') || 'all succeed'}, stops after ${g.failureBudget + 1} failure(s)`)
    for (const n of g.nodes) lines.push(`    ${String(n.position).padStart(4)}  batch ${String(n.batch).padStart(3)}  ${n.nodeId}${n.known ? (n.alive ? '' : '  (not connected)') : '  (never seen by this coordinator)'}`)
  }
  for (const w of p.warnings ?? []) lines.push(`  warning: ${w.path}: ${w.message}`)
  return lines.join('\n')
}
