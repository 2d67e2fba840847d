// Jobs and their schedules: submit (targets resolved, definition signed), the instance of an
// occurrence, cancellations, global exceptions, manual runs, deletion, and which occurrences are
// real and due.
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { type JobSchedule, cachedSchedule, deriveSchedule, optsInto } from '../protocol/jobschedule.js'
import { batchSizeFor } from '../protocol/rollout.js'
import { exclusionFor, nextOccurrences, occurrencesBetween, planOccurrences } from '../protocol/schedule.js'
import type { JobTemplate } from '../protocol/template.js'
import { type JobBody, type JobStateBody, MAX_CANCELED_OCCURRENCES, MAX_ENVELOPE_BYTES, MAX_GLOBAL_EXCEPTIONS, MAX_INLINE_TICKETS, MAX_ROSTER_BYTES, MAX_ROSTER_TARGETS, PROTOCOL_VERSION, ROSTER_AGENT_VERSION, SCHEMA_AGENT_VERSION, JOB_SCHEMA_FINGERPRINT, seal } from '../protocol/wire.js'
import { compareVersions } from '../protocol/version.js'
import { countInstance, dropInstance, forgetJob, liveOf, maybeComplete } from './instances.js'
import { resolveTargets, targetWarnings } from './registry.js'
import { signTicket } from './rpc.js'
import { type CoordinatorConfig, type CoordinatorEffect, type CoordinatorEvent, type CoordinatorState, type InstanceRecord, type JobRecord, MAX_INSTANCES_PER_TICK, type RequestEvent, type RunRecord } from './state.js'
import { IDX, historyKeysOf, key } from './storekeys.js'

/**
 * Whether an occurrence of the job has had its instance, whether or not it is in memory: an
 * immediate job's one occurrence (created at submit), a recurring job's at or before its
 * cursor (the tick creates every one it passes), or one created ahead of the cursor.
 */
export function hadInstance(job: JobRecord, at: number): boolean {
  if (job.template.scheduleRule === 'immediate') return at === job.createdAt
  return (job.cursor !== undefined && at <= job.cursor) || (job.history.ahead ?? []).includes(at)
}

export function scheduleOf(state: CoordinatorState, job: JobRecord): JobSchedule | null {
  return cachedSchedule(state.schedules, job.jobId, job.template, job.createdAt, job.jobState.globalExceptions)
}

export function spanMs(template: JobTemplate): number {
  const timeouts = template.target.groups.map((g) => g.timeoutSeconds * 1000)
  return template.target.executionType === 'sequential' ? timeouts.reduce((a, b) => a + b, 0) : Math.max(0, ...timeouts)
}

export function onSubmit(state: CoordinatorState, config: CoordinatorConfig, requestId: string, jobId: string, template: JobTemplate, now: number, effects: CoordinatorEffect[]): void {
  const globals = [...state.globals.values()].filter((g) => optsInto(template, g.id))
  const derived = deriveSchedule(template, now, globals)
  if (!derived.ok) {
    effects.push({ type: 'reply_submit', requestId, outcome: { ok: false, problems: [{ path: derived.path, message: derived.message }] } })
    return
  }
  const recurring = template.scheduleRule !== 'immediate'
  const first = recurring ? nextOccurrences(derived.value.schedule, now - 1, 1)[0] : now
  if (first === undefined) {
    effects.push({ type: 'reply_submit', requestId, outcome: { ok: false, problems: [{ path: 'scheduleRule', message: 'the rule has no occurrence from now on (check DTSTART, COUNT and UNTIL)' }] } })
    return
  }
  const resolved = resolveTargets(state, template)
  if ('problems' in resolved) {
    effects.push({ type: 'reply_submit', requestId, outcome: { ok: false, problems: resolved.problems } })
    return
  }
  // A definition is replay-protected by its id and, after the last occurrence, by its expiry.
  let expiresAt = now + config.jobTtlMs
  if (recurring) {
    const last = lastOccurrence(derived.value)
    expiresAt = last === undefined ? Number.MAX_SAFE_INTEGER : last + spanMs(template) + config.jobTtlMs
  }
  const members = resolved.groups.flatMap((g, group) => g.nodes.map((nodeId, position) => ({ nodeId, group, position })))
  // Small jobs carry their targets' tickets, gated or not: a target knows its place from the
  // definition alone. An ungated one starts without a round trip; a gated one's target takes part
  // in the rollout even if the coordinator dies before answering its ticket request (gossip or a
  // peer brings the definition, its place is inside; MAX_INLINE_TICKETS = PEER_PROGRESS_MAX_TARGETS,
  // the jobs whose targets go on by peer gossip). Without them a slow target that asked for its
  // ticket just before the crash was left out until the coordinator came back.
  const inline = members.length <= MAX_INLINE_TICKETS && members.every((m) => state.nodes.has(m.nodeId))
    // The same bytes ticketFor gives later for this node (issuedAt is the job's creation time).
    ? members.map((m) => signTicket(config, jobId, now, state.nodes.get(m.nodeId)!, { group: m.group, position: m.position }))
    : undefined
  // A larger one lists its targets (the roster) when that is short and every target reads it: the
  // same places, with no ticket round trip per target (tickets stay for older agents).
  const roster = !inline && rosterFits(state, members.length, resolved.groups)
  const groups = resolved.groups.map((g) => (roster ? { size: g.nodes.length, nodes: g.nodes } : { size: g.nodes.length }))
  // Validated here with this schema: targets that check the fingerprint skip zod (protocol/wire.ts trustedJobBody).
  const schema = allRunAtLeast(state, members.map((m) => m.nodeId), SCHEMA_AGENT_VERSION)
  const body: JobBody = { type: 'job', v: PROTOCOL_VERSION, jobId, issuedAt: now, expiresAt, template, resolved: { groups, ...(inline ? { tickets: inline } : {}) }, ...(schema ? { schema: JOB_SCHEMA_FINGERPRINT } : {}) }
  const envelope = seal(config.identity, body)
  if (envelope.body.length > MAX_ENVELOPE_BYTES) {
    // No node could open it: refuse now, clearly (the template itself is what is too big).
    effects.push({ type: 'reply_submit', requestId, outcome: { ok: false, problems: [{ path: 'target', message: `the signed definition would be ${envelope.body.length} bytes, over the ${MAX_ENVELOPE_BYTES}-byte limit of a message; shorten the template (long node lists belong in a saved list or filter)` }] } })
    return
  }
  const jobState: JobStateBody = { type: 'job_state', v: PROTOCOL_VERSION, jobId, version: 1, status: 'active', canceledOccurrences: [], globalExceptions: globals, issuedAt: now }
  const job: JobRecord = {
    jobId, name: template.name, status: 'active', createdAt: now, template, envelope, resolved, history: { count: 0, byStatus: {} },
    ...(recurring ? { cursor: now - 1 } : {}), jobState, stateEnvelope: seal(config.identity, jobState),
  }
  state.jobs.set(jobId, job)
  state.derived.jobs.delete(jobId)
  state.schedules.set(jobId, derived.value)
  const puts: { key: string; value: unknown }[] = []
  const instanceIds = recurring ? [] : [materializeInstance(state, config, job, now, now, puts).id]
  puts.push({ key: key.job(jobId), value: job })
  effects.push({ type: 'persist', puts, dels: [] })
  effects.push({ type: 'publish', envelope })
  if (globals.length > 0) effects.push({ type: 'publish', envelope: job.stateEnvelope })
  const targets = resolved.groups.reduce((n, g) => n + g.nodes.length, 0)
  effects.push({ type: 'log', level: 'info', msg: 'job published', fields: { jobId, instanceIds, targets, recurring } })
  effects.push({ type: 'reply_submit', requestId, outcome: { ok: true, jobId, instanceIds, targets, warnings: targetWarnings(state, template) } })
}

/**
 * Whether a definition lists its targets (resolved.groups[].nodes): above MAX_INLINE_TICKETS and
 * at most MAX_ROSTER_TARGETS targets, at most MAX_ROSTER_BYTES of ids, each target registered with
 * an agent that reads a roster.
 */
export function rosterFits(state: CoordinatorState, targets: number, groups: readonly { nodes: readonly string[] }[]): boolean {
  if (targets <= MAX_INLINE_TICKETS || targets > MAX_ROSTER_TARGETS) return false
  let bytes = 0
  for (const g of groups) {
    for (const nodeId of g.nodes) {
      bytes += nodeId.length + 3
      if (bytes > MAX_ROSTER_BYTES) return false
    }
  }
  return allRunAtLeast(state, groups.flatMap((g) => g.nodes), ROSTER_AGENT_VERSION)
}

/** Whether every target registered with an agent of `version` or later (each distinct version compared once: 100,000 comparisons took 70 ms). */
function allRunAtLeast(state: CoordinatorState, nodeIds: readonly string[], version: string): boolean {
  const verdicts = new Map<string, boolean>()
  for (const nodeId of nodeIds) {
    const v = state.nodes.get(nodeId)?.agentVersion
    if (v === undefined) return false
    let ok = verdicts.get(v)
    if (ok === undefined) { ok = (compareVersions(v, version) ?? -1) >= 0; verdicts.set(v, ok) }
    if (!ok) return false
  }
  return nodeIds.length > 0
}

/** Slack added to the end of a wall-clock rule (its time zone may put the last occurrence up to a day later), in ms. */
export const WALL_CLOCK_SLACK_MS = 86_400_000

/** A refused deletion names this many of the job's live instances. */
export const LIVE_IDS_SHOWN = 5

/** An upper bound on the last occurrence (WALL_CLOCK_SLACK_MS for wall-clock rules), or undefined when the rule never ends. */
export function lastOccurrence(sched: JobSchedule): number | undefined {
  const s = sched.schedule
  if (s.kind === 'immediate') return s.atMs
  if (s.rule.untilMs !== undefined) return s.rule.untilMs
  if (s.rule.untilWallMs !== undefined) return s.rule.untilWallMs + WALL_CLOCK_SLACK_MS
  if (s.lastWallMs !== undefined) return s.lastWallMs + WALL_CLOCK_SLACK_MS
  return undefined
}

/**
 * Creates the instance of one occurrence with a pending run per targeted node. An occurrence
 * inside an exception window or canceled gets an instance too, already decided, so the report
 * shows it as not performed and why; its runs are `skipped` (a late result replaces that).
 */
export function materializeInstance(state: CoordinatorState, config: CoordinatorConfig, job: JobRecord, occurrenceAt: number, now: number, puts: { key: string; value: unknown }[]): InstanceRecord {
  const instanceId = instanceIdFor(job.jobId, occurrenceAt)
  const existing = state.instances.get(instanceId)
  if (existing) return existing
  const sched = scheduleOf(state, job)
  const exclusion = job.template.scheduleRule !== 'immediate' && sched ? exclusionFor(sched.exceptions, occurrenceAt) : undefined
  const canceled = job.jobState.canceledOccurrences.includes(occurrenceAt)
  const notPerformed = exclusion
    ? `not performed: inside the ${exclusion.source} exception window ${exclusion.source === 'global' ? `"${exclusion.id}" ` : `exceptionRules[${exclusion.ruleIndex}] `}from ${new Date(exclusion.windowStartMs).toISOString()} to ${new Date(exclusion.windowEndMs).toISOString()}`
    : canceled ? 'not performed: occurrence canceled' : undefined
  const instance: InstanceRecord = {
    id: instanceId, jobId: job.jobId, status: exclusion ? 'excluded' : canceled ? 'canceled' : 'running', occurrenceAt,
    createdAt: now, updatedAt: now, deadlineAt: occurrenceAt + spanMs(job.template) + config.timeoutGraceMs, runIds: [],
    ...(notPerformed ? { reason: notPerformed } : {}),
  }
  job.resolved.groups.forEach((g, gi) => {
    const size = batchSizeFor(job.template.target.groups[gi]!.batchSize, g.nodes.length)
    g.nodes.forEach((nodeId, i) => {
      const runId = runIdFor(instanceId, nodeId)
      const run: RunRecord = {
        runId, instanceId, jobId: job.jobId, nodeId, group: gi, batch: Math.floor(i / size),
        status: notPerformed ? 'skipped' : 'pending', ...(notPerformed ? { reason: notPerformed } : {}), steps: [],
      }
      state.runs.set(runId, run)
      instance.runIds.push(runId)
      puts.push({ key: key.run(runId), value: run })
    })
  })
  state.instances.set(instanceId, instance)
  if (instance.status === 'running') {
    state.live.add(instanceId)
    state.openRuns.set(instanceId, instance.runIds.length)
  } else {
    instance.counts = { skipped: instance.runIds.length }
  }
  countInstance(job.history, instance.status, 1)
  job.history.latest = { id: instanceId, status: instance.status }
  if (job.cursor !== undefined && occurrenceAt > job.cursor) (job.history.ahead ??= []).push(occurrenceAt)
  puts.push({ key: key.instance(instanceId), value: instance })
  puts.push(
    { key: IDX.job(job.jobId, occurrenceAt, instanceId), value: 1 }, { key: IDX.all(now, instanceId), value: 1 },
    { key: IDX.status(instance.status, now, instanceId), value: 1 }, { key: IDX.jobStatus(job.jobId, instance.status, occurrenceAt, instanceId), value: 1 },
  )
  for (const g of job.resolved.groups) for (const nodeId of g.nodes) puts.push({ key: IDX.node(nodeId, now, runIdFor(instanceId, nodeId)), value: 1 })
  return instance
}

/** Signs a new version of the job's state and publishes it. */
export function bumpJobState(config: CoordinatorConfig, job: JobRecord, patch: Partial<Pick<JobStateBody, 'status' | 'canceledOccurrences' | 'globalExceptions'>>, now: number, effects: CoordinatorEffect[]): void {
  job.jobState = { ...job.jobState, ...patch, version: job.jobState.version + 1, issuedAt: now }
  job.stateEnvelope = seal(config.identity, job.jobState)
  effects.push({ type: 'publish', envelope: job.stateEnvelope })
}

export function onCancel(state: CoordinatorState, config: CoordinatorConfig, requestId: string, jobId: string, occurrences: number[] | undefined, now: number, effects: CoordinatorEffect[]): void {
  const job = state.jobs.get(jobId)
  if (!job) {
    effects.push({ type: 'reply_admin', requestId, outcome: { ok: false, status: 404, error: `no job ${jobId}` } })
    return
  }
  if (job.status !== 'active') {
    effects.push({ type: 'reply_admin', requestId, outcome: { ok: false, status: 409, error: `job ${jobId} is ${job.status}; only an active job can be canceled` } })
    return
  }
  const puts: { key: string; value: unknown }[] = []
  if (!occurrences) {
    job.status = 'canceled'
    bumpJobState(config, job, { status: 'canceled' }, now, effects)
  } else {
    const sched = scheduleOf(state, job)
    const valid = occurrences.filter((at) => sched && occurrencesBetween(sched.schedule, at, at + 1, 1).includes(at))
    const invalid = occurrences.filter((at) => !valid.includes(at))
    if (invalid.length > 0) {
      effects.push({ type: 'reply_admin', requestId, outcome: { ok: false, status: 400, error: `not occurrences of job ${jobId}: ${invalid.map((t) => new Date(t).toISOString()).join(', ')} (see chorus job next)`, problems: [{ path: 'body.occurrences', message: 'not occurrences of this job (see chorus job next)' }] } })
      return
    }
    const merged = [...new Set([...job.jobState.canceledOccurrences, ...valid])].sort((a, b) => a - b).slice(-MAX_CANCELED_OCCURRENCES)
    bumpJobState(config, job, { canceledOccurrences: merged }, now, effects)
    // Pending runs of live instances of these occurrences: the agents report them skipped if they had not started.
  }
  puts.push({ key: key.job(jobId), value: job })
  effects.push({ type: 'persist', puts, dels: [] })
  effects.push({ type: 'log', level: 'info', msg: occurrences ? 'occurrences canceled' : 'job canceled', fields: { jobId, occurrences, version: job.jobState.version } })
  effects.push({ type: 'reply_admin', requestId, outcome: { ok: true, detail: { jobId, status: job.status, version: job.jobState.version, canceledOccurrences: job.jobState.canceledOccurrences.map((t) => new Date(t).toISOString()) } } })
}

export function onGlobalException(state: CoordinatorState, config: CoordinatorConfig, event: Extract<CoordinatorEvent, { type: 'add_exception' | 'remove_exception' }>, now: number, effects: CoordinatorEffect[]): void {
  const puts: { key: string; value: unknown }[] = []
  const dels: string[] = []
  let id: string
  if (event.type === 'add_exception') {
    id = event.exception.id
    if (!state.globals.has(id) && state.globals.size >= MAX_GLOBAL_EXCEPTIONS) {
      effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 409, error: `at most ${MAX_GLOBAL_EXCEPTIONS} global exceptions; remove one first` } })
      return
    }
    const check = deriveSchedule({ scheduleRule: 'immediate', exceptionRules: [], target: { executionType: 'parallel', groups: [] }, actions: { accessMode: 'agent', steps: [] } } as unknown as JobTemplate, now, [event.exception])
    if (!check.ok) {
      effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 400, error: check.message, problems: [{ path: 'body.rrule', message: check.message }] } })
      return
    }
    state.globals.set(id, event.exception)
    puts.push({ key: key.global(id), value: event.exception })
  } else {
    id = event.id
    if (!state.globals.delete(id)) {
      effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 404, error: `no global exception ${id}` } })
      return
    }
    dels.push(key.global(id))
  }
  // Every active job that opted in gets a new signed state: its future occurrences are recomputed.
  const affected: string[] = []
  for (const job of state.jobs.values()) {
    if (job.status !== 'active' || !optsInto(job.template, id)) continue
    const globals = [...state.globals.values()].filter((g) => optsInto(job.template, g.id))
    bumpJobState(config, job, { globalExceptions: globals }, now, effects)
    state.schedules.delete(job.jobId)
    puts.push({ key: key.job(job.jobId), value: job })
    affected.push(job.jobId)
  }
  effects.push({ type: 'persist', puts, dels })
  effects.push({ type: 'log', level: 'info', msg: event.type === 'add_exception' ? 'global exception added' : 'global exception removed', fields: { id, affectedJobs: affected.length } })
  effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: true, detail: { id, affectedJobs: affected } } })
}

/** The next `count` occurrences after `afterMs`, each with why it will not run, if it will not. */
export function nextOccurrencesOf(state: CoordinatorState, jobId: string, afterMs: number, count: number): { at: number; excluded?: string; canceled?: boolean }[] | undefined {
  const job = state.jobs.get(jobId)
  if (!job) return undefined
  const sched = scheduleOf(state, job)
  if (!sched) return []
  if (job.status !== 'active') return []
  const canceled = new Set(job.jobState.canceledOccurrences)
  return planOccurrences(sched.schedule, sched.exceptions, afterMs, count).map((o) => ({
    at: o.at,
    ...(o.excluded ? { excluded: `${o.excluded.source} exception ${o.excluded.source === 'global' ? o.excluded.id : `exceptionRules[${o.excluded.ruleIndex}]`} (${new Date(o.excluded.windowStartMs).toISOString()} to ${new Date(o.excluded.windowEndMs).toISOString()})` } : {}),
    ...(canceled.has(o.at) ? { canceled: true } : {}),
  }))
}

/**
 * How far past this coordinator's clock an occurrence may lie for a result (or progress) to
 * create its instance: the clock skew allowed between agents and coordinator, in milliseconds.
 * A later occurrence is refused and leaves nothing behind.
 */
export const OCCURRENCE_GRACE_MS = 5 * 60_000

/** Whether `at` is an occurrence of the job: of its schedule from its creation on (agents start there), or its creation for an immediate job. */
export function realOccurrence(state: CoordinatorState, job: JobRecord, at: number): boolean {
  if (at < job.createdAt) return false
  if (job.template.scheduleRule === 'immediate') return at === job.createdAt
  const sched = scheduleOf(state, job)
  return !!sched && occurrencesBetween(sched.schedule, at, at + 1, 1).includes(at)
}

/** Whether the coordinator may create the instance of an occurrence now: a real one, no later than now + OCCURRENCE_GRACE_MS. */
export function dueOccurrence(state: CoordinatorState, job: JobRecord, at: number, now: number): boolean {
  return at <= now + OCCURRENCE_GRACE_MS && realOccurrence(state, job, at)
}

/** A manual run: the stored job's template submitted again as an immediate job under a new id. */
export function onRunJob(state: CoordinatorState, config: CoordinatorConfig, event: Extract<RequestEvent, { type: 'run_job' }>, now: number, effects: CoordinatorEffect[]): void {
  const stored = state.jobs.get(event.jobId)
  if (!stored) return void effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 404, error: `no job ${event.jobId}` } })
  const submitted: CoordinatorEffect[] = []
  onSubmit(state, config, event.requestId, event.newJobId, { ...stored.template, scheduleRule: 'immediate' }, now, submitted)
  const run = state.jobs.get(event.newJobId)
  if (run) run.runOf = stored.jobId
  for (const e of submitted) {
    if (e.type !== 'reply_submit') { effects.push(e); continue }
    const o = e.outcome
    effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: o.ok ? { ok: true, detail: { id: o.jobId, instanceIds: o.instanceIds, targets: o.targets, runOf: stored.jobId } } : { ok: false, status: 422, error: 'job cannot be targeted', problems: o.problems } })
  }
}

/** Deletes a job with its instances and runs, unless one is live or more are to come. */
export function onDeleteJob(state: CoordinatorState, event: Extract<RequestEvent, { type: 'delete_job' }>, effects: CoordinatorEffect[]): void {
  const answer = (outcome: Extract<CoordinatorEffect, { type: 'reply_admin' }>['outcome']) => effects.push({ type: 'reply_admin', requestId: event.requestId, outcome })
  const job = state.jobs.get(event.jobId)
  if (!job) return void answer({ ok: false, status: 404, error: `no job ${event.jobId}` })
  const live = liveOf(state, job.jobId)
  if (live.length > 0) return void answer({ ok: false, status: 409, error: `job ${job.jobId} has ${live.length} live instance(s) (${live.slice(0, LIVE_IDS_SHOWN).join(', ')}): wait for them or cancel the job (chorus job cancel ${job.jobId}), then delete it` })
  if (job.status === 'active' && job.template.scheduleRule !== 'immediate') return void answer({ ok: false, status: 409, error: `job ${job.jobId} is recurring and active: cancel it first (chorus job cancel ${job.jobId})` })
  // Instances in memory go now; the rest of its history (the idx/job/ index) the runtime prunes in batches after.
  const dels = [key.job(job.jobId)]
  for (const inst of [...state.instances.values()]) {
    if (inst.jobId !== job.jobId) continue
    const runs = inst.runIds.map((id) => state.runs.get(id)).filter((r): r is RunRecord => r !== undefined)
    dels.push(...historyKeysOf(inst, runs))
    dropInstance(state, inst)
  }
  forgetJob(state, job.jobId)
  effects.push({ type: 'persist', puts: [], dels })
  answer({ ok: true, detail: { deleted: job.jobId, instances: job.history.count } })
}

/** The tick's part for recurring jobs: an instance for every occurrence that came due (MAX_INSTANCES_PER_TICK per job at most). */
export function tickOccurrences(state: CoordinatorState, config: CoordinatorConfig, now: number, effects: CoordinatorEffect[]): void {
  // Recurring jobs: an instance for every occurrence that came due (a restarted coordinator
  // catches up on those it slept through, so no schedule is lost).
  for (const job of state.jobs.values()) {
    if (job.status !== 'active' || job.cursor === undefined || job.cursor >= now) continue
    const sched = scheduleOf(state, job)
    if (!sched) continue
    const due = occurrencesBetween(sched.schedule, job.cursor + 1, now + 1, MAX_INSTANCES_PER_TICK)
    const puts: { key: string; value: unknown }[] = []
    const ahead = new Set(job.history.ahead ?? [])
    // An occurrence created ahead of the cursor (by a result) has its instance, in memory or finished.
    for (const at of due) if (!ahead.has(at)) materializeInstance(state, config, job, at, now, puts)
    job.cursor = due.length === MAX_INSTANCES_PER_TICK ? due[due.length - 1]! : now
    if (job.history.ahead) {
      job.history.ahead = job.history.ahead.filter((at) => at > job.cursor!)
      if (job.history.ahead.length === 0) delete job.history.ahead
    }
    maybeComplete(state, job)
    puts.push({ key: key.job(job.jobId), value: job })
    effects.push({ type: 'persist', puts, dels: [] })
    if (due.length > 0) effects.push({ type: 'log', level: 'info', msg: 'occurrences due', fields: { jobId: job.jobId, occurrences: due.map((t) => new Date(t).toISOString()) } })
  }
}
