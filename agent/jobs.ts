// Jobs and tickets: what the agent core decides about the definitions it holds. Accepting a
// signed definition (or refusing it), taking this node's ticket (its place, or "not targeted"),
// creating the runs of an immediate job or of a recurring job's due occurrences, applying a job's
// signed state (cancellations, exceptions), and forgetting what is no longer needed.
import type { Reason } from '../protocol/reasons.js'
import { takeRevocations } from './members.js'
import { cachedSchedule, type JobSchedule } from '../protocol/jobschedule.js'
import { dueOccurrences, nextOccurrences } from '../protocol/schedule.js'
import { factFor, isGated } from '../protocol/gate.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { batchSizeFor } from '../protocol/rollout.js'
import { openFromAuthenticatedPeer, openFromCoordinator, open, type JobBody, type JobStateBody, type SignedEnvelope } from '../protocol/wire.js'
import { key, type AgentConfig, type AgentEffect, type AgentRun, type AgentState, type KnownJob } from './state.js'
import { skipRun, startAttempt } from './attempts.js'
import { evaluateGate, knowledgeFor, publishProgress } from './turns.js'

/** Finished runs and expired jobs are looked at this often (they are kept jobRetentionMs anyway). */
export const PRUNE_EVERY_MS = 10_000

/** Occurrences handled per recurring job per tick: a bound on the work of one event. */
export const MAX_OCCURRENCES_PER_TICK = 1_000

export function onJob(state: AgentState, config: AgentConfig, envelope: unknown, via: string, now: number, effects: AgentEffect[]): void {
  const opened = openFromCoordinator(envelope, config.coordinatorKey)
  if (!opened.ok) {
    effects.push({ type: 'log', level: 'warn', msg: `refused job message: ${opened.reason}`, fields: { via } })
    return
  }
  if (opened.body.type === 'job_state') {
    onJobState(state, config, opened.body, envelope as SignedEnvelope, now, effects)
    return
  }
  if (opened.body.type === 'revocations') {
    takeRevocations(state.member, config.coordinatorKey, config.identity.publicKey, envelope, effects)
    return
  }
  if (opened.body.type !== 'job') {
    effects.push({ type: 'log', level: 'warn', msg: `refused message on the job path: type ${opened.body.type}`, fields: { via } })
    return
  }
  const body = opened.body
  if (state.jobs.has(body.jobId)) {
    effects.push({ type: 'log', level: 'debug', msg: 'job already known (duplicate or replay); ignored', fields: { jobId: body.jobId, via } })
    return
  }
  if (body.expiresAt <= now) {
    effects.push({ type: 'log', level: 'warn', msg: 'refused stale job definition (past its expiry)', fields: { jobId: body.jobId, expiresAt: body.expiresAt, via } })
    return
  }
  const job: KnownJob = { body, envelope: envelope as SignedEnvelope, via }
  state.jobs.set(body.jobId, job)
  effects.push({ type: 'persist', puts: [{ key: key.job(body.jobId), value: job }], dels: [] })
  // Whether and where this node is targeted is in its ticket: a small job carries every target's
  // (covered by the definition's signature, so read, not verified again); else ask for it now.
  const inline = body.resolved.tickets
  if (inline) {
    // Canonical JSON: this node's ticket is the one whose body names it (parsed once, below).
    const mine = inline.find((t) => t.body.includes(`"nodeId":${JSON.stringify(config.nodeId)}`))
    const o = mine && openFromAuthenticatedPeer(mine, config.coordinatorKey)
    if (o?.ok && o.body.type === 'ticket' && o.body.jobId === body.jobId && o.body.nodeId === config.nodeId && o.body.key === config.identity.publicKey) {
      takeTicket(state, config, job, { place: o.body.place, envelope: mine! }, now, effects)
      return
    }
    // Every target's ticket is there and none names this node: it is not targeted.
    if (!mine && inline.length === body.resolved.groups.reduce((n, g) => n + g.size, 0)) {
      takeTicket(state, config, job, { place: null }, now, effects)
      return
    }
    // A ticket issued to another key (the node re-registered since): ask the coordinator.
  }
  // A larger job may list every group's targets in rollout order (covered by the signature too).
  const place = placeInRoster(body, config.nodeId)
  if (place !== undefined) {
    takeTicket(state, config, job, { place }, now, effects)
    return
  }
  effects.push({ type: 'log', level: 'debug', msg: 'job received; asking the coordinator for this node\'s ticket', fields: { jobId: body.jobId, via } })
  state.sync.wanted = true
  state.sync.ticketWanted = true
}

/**
 * This node's place from a definition's roster: its group and index there (the first group that
 * lists it, as the coordinator places it), null when every group has a roster and none lists it,
 * undefined when the definition has none (the node asks for its ticket).
 */
export function placeInRoster(body: JobBody, nodeId: string): { group: number; position: number } | null | undefined {
  const groups = body.resolved.groups
  if (groups.length === 0 || groups.some((g) => g.nodes === undefined)) return undefined
  for (let group = 0; group < groups.length; group++) {
    const position = groups[group]!.nodes!.indexOf(nodeId)
    if (position >= 0) return { group, position }
  }
  return null
}

/** The node's ticket for a job it holds arrived: run it, schedule it, or note it is not targeted. */
export function onTicket(state: AgentState, config: AgentConfig, envelope: SignedEnvelope, now: number, effects: AgentEffect[]): void {
  const opened = open(envelope, [config.coordinatorKey])
  if (!opened.ok || opened.body.type !== 'ticket') {
    effects.push({ type: 'log', level: 'warn', msg: `refused ticket: ${opened.ok ? 'type ' + opened.body.type : opened.reason}` })
    return
  }
  const t = opened.body
  if (t.nodeId !== config.nodeId || t.key !== config.identity.publicKey) {
    effects.push({ type: 'log', level: 'warn', msg: 'refused a ticket issued to another node or key', fields: { jobId: t.jobId, nodeId: t.nodeId } })
    return
  }
  const job = state.jobs.get(t.jobId)
  if (!job || job.ticket) return
  takeTicket(state, config, job, { place: t.place, envelope }, now, effects)
}

function takeTicket(state: AgentState, config: AgentConfig, job: KnownJob, ticket: NonNullable<KnownJob['ticket']>, now: number, effects: AgentEffect[]): void {
  job.ticket = ticket
  onPlaced(state, config, job, now, effects)
  // Written after the run (or cursor) it leads to: a crash in between leaves a run whose job has
  // no ticket yet (the node asks again; the run is not created twice), never a placed job without its run.
  effects.push({ type: 'persist', puts: [{ key: key.job(job.body.jobId), value: job }], dels: [] })
}

function onPlaced(state: AgentState, config: AgentConfig, job: KnownJob, now: number, effects: AgentEffect[]): void {
  const body = job.body
  const via = job.via ?? 'sync'
  if (!job.ticket?.place) {
    effects.push({ type: 'log', level: 'info', msg: 'job accepted; this node is not targeted', fields: { jobId: body.jobId } })
    return
  }
  if (body.expiresAt <= now) return
  if (body.template.scheduleRule === 'immediate') {
    createRun(state, config, job, body.issuedAt, now, effects, via)
    return
  }
  // A recurring job: occurrences from the moment it was signed are this node's to handle
  // (a cursor that survived a crash while the ticket was being written is kept, never reset).
  if (!state.cursors.has(body.jobId)) {
    state.cursors.set(body.jobId, body.issuedAt - 1)
    effects.push({ type: 'persist', puts: [{ key: key.cursor(body.jobId), value: { jobId: body.jobId, at: body.issuedAt - 1 } }], dels: [] })
  }
  effects.push({ type: 'log', level: 'info', msg: 'recurring job accepted', fields: { jobId: body.jobId, rule: body.template.scheduleRule, via } })
  processSchedule(state, config, job, now, effects)
}

/** This node's group and position in a job (from its ticket), if it is targeted. */
function placeOf(job: KnownJob): { group: number; position: number; size: number } | undefined {
  const place = job.ticket?.place
  if (!place) return undefined
  return { ...place, size: job.body.resolved.groups[place.group]?.size ?? 0 }
}

function scheduleOf(state: AgentState, job: KnownJob): JobSchedule | null {
  return cachedSchedule(state.schedules, job.body.jobId, job.body.template, job.body.issuedAt, state.jobStates.get(job.body.jobId)?.body.globalExceptions ?? [])
}

/**
 * Handles the occurrences of a recurring job that came due since the cursor: runs them,
 * records the ones the agent missed (policy per job) as skipped, and leaves out those in an
 * exception window. The cursor only moves forwards, so a clock that jumps back never makes an
 * occurrence fire twice, and one that jumps forwards makes them missed, never silently lost.
 */
function processSchedule(state: AgentState, config: AgentConfig, job: KnownJob, now: number, effects: AgentEffect[]): void {
  const jobId = job.body.jobId
  const cursor = state.cursors.get(jobId)!
  if (now <= cursor) return
  const nextDue = state.nextDue.get(jobId)
  if (nextDue !== undefined && now < nextDue) return // nothing can be due: no rule walk, no write
  const jobState = state.jobStates.get(jobId)?.body
  if (jobState?.status === 'canceled') return
  const sched = scheduleOf(state, job)
  if (!sched) return
  const due = dueOccurrences(sched.schedule, sched.exceptions, cursor, now, sched.policy, MAX_OCCURRENCES_PER_TICK)
  state.nextDue.set(jobId, nextOccurrences(sched.schedule, due.handledThroughMs, 1)[0] ?? Number.POSITIVE_INFINITY)
  if (due.run.length === 0 && due.missed.length === 0 && due.excluded.length === 0 && due.handledThroughMs === cursor) return
  const canceled = new Set(jobState?.canceledOccurrences ?? [])
  for (const at of due.run) {
    if (canceled.has(at)) {
      effects.push({ type: 'log', level: 'info', msg: 'occurrence canceled; not run', fields: { jobId, occurrenceAt: at } })
      continue
    }
    createRun(state, config, job, at, now, effects, 'schedule')
  }
  for (const at of due.missed) {
    if (canceled.has(at)) continue
    createRun(state, config, job, at, now, effects, 'schedule', { code: 'missed', text: `missed: the agent was not running at ${new Date(at).toISOString()} (missed-occurrence policy ${sched.policy.kind})` })
  }
  for (const ex of due.excluded) {
    effects.push({ type: 'log', level: 'info', msg: 'occurrence inside an exception window; not performed', fields: { jobId, occurrenceAt: ex.at, source: ex.source, window: [ex.windowStartMs, ex.windowEndMs] } })
  }
  state.cursors.set(jobId, due.handledThroughMs)
  effects.push({ type: 'persist', puts: [{ key: key.cursor(jobId), value: { jobId, at: due.handledThroughMs } }], dels: [] })
}

/** Creates this node's run of one occurrence and starts it, or records it skipped with `skipReason`. */
function createRun(state: AgentState, config: AgentConfig, job: KnownJob, occurrenceAt: number, now: number, effects: AgentEffect[], via: string, skipReason?: Reason): void {
  const body = job.body
  const member = placeOf(job)
  if (!member) return
  const instanceId = instanceIdFor(body.jobId, occurrenceAt)
  const runId = runIdFor(instanceId, config.nodeId)
  if (state.runs.has(runId)) return
  const groupSpec = body.template.target.groups[member.group]!
  const batch = Math.floor(member.position / batchSizeFor(groupSpec.batchSize, member.size))
  const gated = isGated(body)
  const run: AgentRun = {
    runId, jobId: body.jobId, instanceId, occurrenceAt, group: member.group, batch, position: member.position, gated,
    status: gated ? 'waiting' : 'running', startedAt: now, stepIndex: 0, attempt: 1, inFlight: false, values: {}, steps: [],
  }
  state.runs.set(runId, run)
  if (skipReason !== undefined) {
    skipRun(state, config, run, now, effects, skipReason)
    return
  }
  effects.push({ type: 'persist', puts: [{ key: key.run(runId), value: run }], dels: [] })
  if (gated) {
    effects.push({ type: 'log', level: 'info', msg: 'job accepted; run waits for its turn', fields: { jobId: body.jobId, instanceId, runId, occurrenceAt, group: member.group, batch, position: member.position, via } })
    knowledgeFor(state, instanceId).version++
    factFor(knowledgeFor(state, instanceId), run.group, run.position)
    publishProgress(state, config, run, 'ack', now, effects)
    evaluateGate(state, config, run, now, effects)
    return
  }
  effects.push({ type: 'log', level: 'info', msg: 'job accepted; run started', fields: { jobId: body.jobId, instanceId, runId, occurrenceAt, group: member.group, batch, via } })
  startAttempt(state, config, job, run, now, now, effects)
}

function onJobState(state: AgentState, config: AgentConfig, body: JobStateBody, envelope: SignedEnvelope, now: number, effects: AgentEffect[]): void {
  const known = state.jobStates.get(body.jobId)
  if (known && known.body.version >= body.version) return
  state.jobStates.set(body.jobId, { body, envelope })
  state.schedules.delete(body.jobId)
  state.nextDue.delete(body.jobId)
  effects.push({ type: 'persist', puts: [{ key: key.jobState(body.jobId), value: { body, envelope } }], dels: [] })
  effects.push({ type: 'log', level: 'info', msg: 'job state updated', fields: { jobId: body.jobId, version: body.version, status: body.status, canceledOccurrences: body.canceledOccurrences.length, globalExceptions: body.globalExceptions.length } })
  // Pending runs of canceled occurrences never start; running ones finish.
  for (const run of state.runs.values()) {
    if (run.jobId === body.jobId && run.status === 'waiting' && body.canceledOccurrences.includes(run.occurrenceAt)) {
      skipRun(state, config, run, now, effects, { code: 'canceled', text: 'canceled before this node\'s turn' })
    }
  }
}

/**
 * Forgets what is no longer needed, so a long-lived agent with recurring jobs stays bounded:
 * finished runs whose result the coordinator acknowledged, jobRetentionMs after they finished
 * (the schedule cursor, not the run record, keeps an occurrence from running twice), with their
 * progress; and jobs past their expiry plus jobRetentionMs once none of their runs is open.
 */
function pruneJobs(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  const dels: string[] = []
  const openJobs = new Set<string>()
  for (const [runId, run] of state.runs) {
    const finished = run.status === 'success' || run.status === 'failure' || run.status === 'skipped'
    if (!finished || state.outbox.has(runId)) {
      openJobs.add(run.jobId)
      continue
    }
    if ((run.finishedAt ?? now) + config.jobRetentionMs > now) continue
    state.runs.delete(runId)
    dels.push(key.run(runId))
    if (state.progress.delete(run.instanceId)) dels.push(key.progress(run.instanceId))
  }
  for (const [jobId, job] of state.jobs) {
    if (job.body.expiresAt + config.jobRetentionMs > now || openJobs.has(jobId)) continue
    state.jobs.delete(jobId)
    state.schedules.delete(jobId)
    state.nextDue.delete(jobId)
    dels.push(key.job(jobId))
    if (state.jobStates.delete(jobId)) dels.push(key.jobState(jobId))
    if (state.cursors.delete(jobId)) dels.push(key.cursor(jobId))
    for (const [runId, run] of state.runs) {
      if (run.jobId !== jobId) continue
      state.runs.delete(runId)
      dels.push(key.run(runId))
    }
  }
  if (dels.length > 0) effects.push({ type: 'persist', puts: [], dels })
}

/** Tick: each recurring job this node is placed in handles the occurrences that came due. */
export function tickSchedules(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  for (const job of state.jobs.values()) {
    if (job.body.template.scheduleRule !== 'immediate' && job.ticket?.place && state.cursors.has(job.body.jobId)) processSchedule(state, config, job, now, effects)
  }
}

/** Tick: finished runs and expired jobs are looked at every PRUNE_EVERY_MS. */
export function tickPrune(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  if (now < state.nextPruneAt) return
  state.nextPruneAt = now + PRUNE_EVERY_MS
  pruneJobs(state, config, now, effects)
}
