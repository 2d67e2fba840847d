// Reports: pure views over the coordinator state, as JSON and as a readable text table.
import type { CoordinatorState, InstanceRecord, JobRecord, RunRecord } from './core.js'

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString())

export interface StepReport {
  number: number
  name: string
  status: string
  attempts: number
  exitCode: number | null
  outputs: Record<string, string>
  reason?: string
  stdout: string
  stderr: string
  attemptLog: { attempt: number; status: string; exitCode: number | null; startedAt: string | null; finishedAt: string | null }[]
  /** Evidence attached by the step (content: `chorus artifacts RUN_ID`). */
  artifacts: { name: string; encoding: string; bytes: number; truncated: boolean }[]
}

export interface RunReport {
  runId: string
  nodeId: string
  group: number
  batch: number
  status: string
  reason?: string
  /** The reason as a code (protocol/reasons.ts). */
  reasonCode?: string
  startedAt: string | null
  finishedAt: string | null
  receivedAt: string | null
  steps: StepReport[]
}

export interface InstanceReport {
  id: string
  jobId: string
  /** running (live), or past: success, failure, excluded, canceled */
  status: string
  occurrenceAt: string | null
  reason?: string
  /** quorum_failed: the targets that did not acknowledge in time */
  quorumMissing?: string[]
  createdAt: string | null
  updatedAt: string | null
  counts: Record<string, number>
  runs: RunReport[]
}

export interface JobReport {
  job: {
    id: string; name: string; status: string; createdAt: string | null; scheduleRule: string; runOf?: string
    /** All the job's instances (not only this page): how many, by status (retention removes pruned ones). */
    instances: { total: number; byStatus: Record<string, number> }
  }
  /** A job's report: a page of its instances in occurrence order (`pagination`); an instance's: that one. */
  instances: InstanceReport[]
  pagination?: { page: number; size: number; total: number | null; next: string | null }
}

export function runReport(run: RunRecord): RunReport {
  return {
    runId: run.runId,
    nodeId: run.nodeId,
    group: run.group,
    batch: run.batch,
    status: run.status,
    ...(run.reason ? { reason: run.reason } : {}),
    ...(run.reasonCode ? { reasonCode: run.reasonCode } : {}),
    startedAt: iso(run.startedAt),
    finishedAt: iso(run.finishedAt),
    receivedAt: iso(run.receivedAt),
    steps: run.steps.map((s) => ({
      number: s.number, name: s.name, status: s.status, attempts: s.attempts, exitCode: s.exitCode,
      outputs: s.outputs, ...(s.reason ? { reason: s.reason } : {}), stdout: s.stdout, stderr: s.stderr,
      attemptLog: (s.attemptLog ?? []).map((a) => ({ attempt: a.attempt, status: a.status, exitCode: a.exitCode, startedAt: iso(a.startedAt), finishedAt: iso(a.finishedAt) })),
      artifacts: (s.artifacts ?? []).map((a) => ({ name: a.name, encoding: a.encoding, bytes: a.bytes, truncated: a.truncated })),
    })),
  }
}

/** An instance without its runs: cheap enough to poll (counts: its runs by status). */
export function instanceSummary(instance: InstanceRecord, counts: Record<string, number>): Omit<InstanceReport, 'runs'> {
  return {
    id: instance.id, jobId: instance.jobId, status: instance.status, occurrenceAt: iso(instance.occurrenceAt),
    ...(instance.reason ? { reason: instance.reason } : {}),
    ...(instance.quorumMissing ? { quorumMissing: instance.quorumMissing } : {}),
    createdAt: iso(instance.createdAt), updatedAt: iso(instance.updatedAt), counts,
  }
}

/** Runs by status. */
export function countRuns(runs: readonly RunRecord[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const r of runs) counts[r.status] = (counts[r.status] ?? 0) + 1
  return counts
}

/** An instance with its runs (those given: in memory, or read from the store). */
export function instanceReport(instance: InstanceRecord, runs: readonly RunRecord[]): InstanceReport {
  return { ...instanceSummary(instance, countRuns(runs)), runs: runs.map(runReport) }
}

export function jobSummary(job: JobRecord): JobReport['job'] {
  return {
    id: job.jobId, name: job.name, status: job.status, createdAt: iso(job.createdAt), scheduleRule: job.template.scheduleRule, ...(job.runOf ? { runOf: job.runOf } : {}),
    instances: { total: job.history.count, byStatus: { ...job.history.byStatus } },
  }
}

/** The report for a job id or an instance id over the instances held in memory (the core's tests; the API reads the store: coordinator/history.ts). */
export function buildReport(state: CoordinatorState, id: string): JobReport | undefined {
  const withRuns = (i: InstanceRecord) => instanceReport(i, i.runIds.map((r) => state.runs.get(r)).filter((r): r is RunRecord => r !== undefined))
  const job = state.jobs.get(id)
  if (job) return { job: jobSummary(job), instances: [...state.instances.values()].filter((i) => i.jobId === id).sort((a, b) => a.occurrenceAt - b.occurrenceAt).map(withRuns) }
  const instance = state.instances.get(id)
  const parent = instance && state.jobs.get(instance.jobId)
  if (instance && parent) return { job: jobSummary(parent), instances: [withRuns(instance)] }
  return undefined
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)))
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()).join('\n')
}

export function formatReport(report: JobReport): string {
  const lines: string[] = []
  lines.push(`job ${report.job.id}  "${report.job.name}"  ${report.job.status}  created ${report.job.createdAt}`)
  const all = report.job.instances
  if (all && all.total > 0) lines.push(`instances: ${all.total} (${Object.entries(all.byStatus).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ')})`)
  for (const inst of report.instances) {
    const counts = Object.entries(inst.counts).map(([k, v]) => `${k} ${v}`).join(', ')
    lines.push('', `instance ${inst.id}  occurrence ${inst.occurrenceAt}  ${inst.status.toUpperCase()}  (${counts || 'no runs'})${inst.reason ? `  ${inst.reason}` : ''}`)
    const rows = [['NODE', 'GROUP', 'BATCH', 'STATUS', 'STARTED', 'FINISHED', 'STEPS', 'REASON']]
    for (const r of inst.runs) {
      const steps = r.steps.map((s) => `${s.number}:${s.status}${s.attempts > 1 ? `x${s.attempts}` : ''}${s.exitCode !== null && s.exitCode !== 0 ? `(exit ${s.exitCode})` : ''}`).join(' ')
      rows.push([r.nodeId, String(r.group), String(r.batch), r.status, r.startedAt?.slice(11, 23) ?? '-', r.finishedAt?.slice(11, 23) ?? '-', steps || '-', r.reason ?? ''])
    }
    lines.push(table(rows))
  }
  return lines.join('\n')
}
