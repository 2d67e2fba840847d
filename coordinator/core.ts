// The coordinator core: a deterministic state machine, like the agent core. It signs job
// definitions, keeps the node registry, stores results exactly once, and derives instance
// status. The runtime supplies ids (job UUIDs) and time; it carries out the effects.
import type { ReasonCode } from '../protocol/reasons.js'
import { peerIdOf, type Identity } from '../protocol/keys.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { batchSizeFor, thresholdFor } from '../protocol/rollout.js'
import type { JobTemplate } from '../protocol/template.js'
import type { Role } from '../protocol/api.js'
import { decideGate, isGated, quorumRule, DEFAULT_LEASE_S } from '../protocol/gate.js'
import { emptyWatches, expired, forgetInstance, hold, markAnswered, MAX_WATCHERS, WATCH_HOLD_MS, type Watcher, type Watches } from './watch.js'
import { admit, certificateDue, certificateFor, emptyMembership, enrollmentSummary, factsWith, memberKey, restoreMemberRecord, revoke, MAX_ENROLLMENTS, type EnrollmentRecord, type Membership } from './members.js'
import { compileAttribute, compileSkill, matchQuery, parseQuery, unknownTargetWarnings, type AttributeConstraint, type SkillConstraint, type TargetWarning } from './targeting.js'
import { cachedSchedule, deriveSchedule, optsInto, type GlobalException, type JobSchedule } from '../protocol/jobschedule.js'
import { exclusionFor, nextOccurrences, occurrencesBetween, planOccurrences } from '../protocol/schedule.js'
import {
  MAX_CANCELED_OCCURRENCES, MAX_ENVELOPE_BYTES, MAX_GLOBAL_EXCEPTIONS, MAX_PEERS_SHARED, MAX_SYNC_JOBS, MAX_TARGET_NODES, PROTOCOL_VERSION, open, seal,
  MAX_CHECKPOINTS_IN_REPLY, MAX_INLINE_TICKETS, openFromAuthenticatedPeer,
  type CheckpointBody, type HelloBody, type JobBody, type JobStateBody, type PeerInfo, type ResultBody, type SignedEnvelope, type StepOutcome, type SyncRequestBody,
} from '../protocol/wire.js'

export interface CoordinatorConfig {
  identity: Identity
  /** How long agents accept an immediate job's definition after it was signed. */
  jobTtlMs: number
  /** Added to the group timeouts before a run without a result is marked timed out. */
  timeoutGraceMs: number
  /** Enrolments wait for an admin's approval (`chorus nodes approve`), as salt-key. */
  requireApproval?: boolean
  /**
   * Finished instances and their runs leave memory at the next tick: the runtime reads them
   * from the store (coordinator/history.ts). The simulator keeps them, to compare its ground
   * truth with every run the coordinator holds.
   */
  dropFinished?: boolean
}

export const DEFAULT_COORDINATOR_TIMING = {
  jobTtlMs: 24 * 3_600_000,
  timeoutGraceMs: 5_000,
} as const

export interface NodeRecord {
  nodeId: string
  publicKey: string
  peerId: string
  facts: Record<string, string>
  agentVersion: string
  /** libp2p addresses the agent listens on, shared with other agents for the mesh. */
  addrs: string[]
  /** Installed skills (interpreters) and their versions. */
  skills: Record<string, string[]>
  firstSeenAt: number
  lastSeenAt: number
  /** Attributes the enrolment token fixed (they override the agent's own facts of the same name). */
  attributes?: Record<string, string>
  /** The enrolment token the node joined with. */
  enrolledWith?: string
}

export interface JobRecord {
  jobId: string
  name: string
  /** active: occurrences still to come or running; canceled: no new instances; completed: all done. */
  status: 'active' | 'canceled' | 'completed'
  createdAt: number
  template: JobTemplate
  envelope: SignedEnvelope
  /** Who the job targets, per group in rollout order, with their keys: kept here, handed out one ticket at a time. */
  resolved: Targets
  /** What the coordinator keeps of the job's instances; the list itself is the store's idx/job/ index. */
  history: JobHistory
  /** Recurring jobs: every occurrence at or before this time has an instance. */
  cursor?: number
  /** A manual run (`chorus job run`): the stored job whose template this job runs. */
  runOf?: string
  /** The job's signed mutable state (cancellations, global exceptions), version ≥ 1. */
  jobState: JobStateBody
  stateEnvelope: SignedEnvelope
}

/** Bounded: counts, the latest instance, and the occurrences after the cursor that have an instance. */
export interface JobHistory {
  /** Instances created and not pruned (retention) or deleted. */
  count: number
  byStatus: Partial<Record<InstanceStatus, number>>
  latest?: { id: string; status: InstanceStatus }
  /**
   * Recurring jobs: occurrences after `cursor` whose instance a result or progress created
   * before the tick reached them (at most MAX_AHEAD_OCCURRENCES). Every occurrence at or before
   * the cursor has had its instance: with this list the core knows, without the finished
   * instances in memory, that an occurrence must never get a second one.
   */
  ahead?: number[]
}

/** Occurrences a job may have ahead of its cursor (OCCURRENCE_GRACE_MS of a schedule at most this dense). */
export const MAX_AHEAD_OCCURRENCES = 1_000

/** A job's targets as the coordinator resolved them at submit (agents only see the group sizes and their own ticket). */
export interface Targets {
  groups: { nodes: string[] }[]
  keys: Record<string, string>
}

/** excluded: the occurrence fell in an exception window; canceled: canceled before it ran. Neither ran. */
export type InstanceStatus = 'running' | 'success' | 'failure' | 'excluded' | 'canceled' | 'quorum_failed'

export interface InstanceRecord {
  id: string
  jobId: string
  status: InstanceStatus
  occurrenceAt: number
  createdAt: number
  updatedAt: number
  /** After this time runs without a result are marked `timeout`. */
  deadlineAt: number
  runIds: string[]
  /** Why an excluded, canceled or quorum_failed instance was not performed. */
  reason?: string
  /** Targets that acknowledged the job (gated jobs: from their syncs, or their progress gossip while this coordinator was away). */
  acks?: string[]
  /** quorum_failed: the targets that did not acknowledge in time. */
  quorumMissing?: string[]
  /** Runs by status, written when the instance finishes (and kept up to date by late results). */
  counts?: Record<string, number>
}

export interface RunRecord {
  runId: string
  instanceId: string
  jobId: string
  nodeId: string
  group: number
  batch: number
  status: 'pending' | 'running' | 'success' | 'failure' | 'timeout' | 'skipped'
  reason?: string
  /** The reason as a code (protocol/reasons.ts): what reports filter on and control flow checks. */
  reasonCode?: ReasonCode
  startedAt?: number
  finishedAt?: number
  receivedAt?: number
  steps: StepOutcome[]
}

export interface CoordinatorState {
  jobs: Map<string, JobRecord>
  instances: Map<string, InstanceRecord>
  runs: Map<string, RunRecord>
  nodes: Map<string, NodeRecord>
  /** Global exception windows, by id; jobs opt in through `chorus.globalExceptions`. */
  globals: Map<string, GlobalException>
  lists: Map<string, SavedList>
  filters: Map<string, SavedFilter>
  /** Derived, not persisted: node ids with a live connection to this coordinator now. */
  connected: Set<string>
  /** Derived, not persisted: instances still running (the tick looks only at these). */
  live: Set<string>
  /** Derived, not persisted: runs of each live instance not yet terminal (settling is O(1) until it reaches 0). */
  openRuns: Map<string, number>
  /** Instances whose acks changed since they were last written (written on the next tick). */
  dirty: Set<string>
  /** Derived, not persisted: parsed schedules by job id. */
  schedules: Map<string, JobSchedule | null>
  /** Derived, not persisted (rebuilt from runs and acks): progress of live gated instances, for checkpoints. */
  tallies: Map<string, InstanceTally>
  /** In memory: held sync requests of waiting targets (coordinator/watch.ts); a restart drops them and agents ask again. */
  watches: Watches
  /** Derived, not persisted: node id by libp2p peer id. */
  byPeer: Map<string, string>
  /** Derived, not persisted: node ids in registration order (mesh peers are drawn from it). */
  pool: string[]
  /** Enrolment tokens, enrolments awaiting approval, revoked nodes and the signed revocation list. */
  members: Membership
  /** In memory: hellos per enrolled node in the current minute (HELLO_WINDOW_MS), against MAX_HELLOS_PER_WINDOW. */
  hellos: Map<string, { since: number; count: number }>
  /** In memory: when each node's record was last written for a mere contact (NODE_TOUCH_PERSIST_MS); a restart writes it again at the first contact. */
  touchPersistedAt: Map<string, number>
  /** API tokens by name (only their SHA-256 hash is kept). */
  tokens: Map<string, TokenRecord>
  /** Derived, not persisted: token name by hash. */
  tokenByHash: Map<string, string>
  /** Derived: instances that left `running` in the current step (their status index is written at its end). */
  settled: Set<string>
  /** Derived (dropFinished): finished instances to drop from memory at the next tick, with their runs. */
  finished: Set<string>
  /** Derived, not persisted: caches of what the records say (a restart starts them empty, as a crash loses them). */
  derived: DerivedCaches
}

/**
 * What the core computes once from its records and keeps for the next steps. Every entry is
 * rebuilt on demand from the records, so an empty one (a restart, a crash) changes nothing
 * but the time the next steps take. Bounded by the records they derive from, or by a named bound.
 */
export interface DerivedCaches {
  /** Signed replies by content (same fields, same signing key): at most REPLY_CACHE_MAX entries, oldest out. */
  replies: Map<string, SignedEnvelope>
  /** By job id, for the job record it was built from (one entry per job in memory). */
  jobs: Map<string, JobDerived>
  /** By instance id: the instance's acks as a set, for the instance record it was built from (one per instance in memory). */
  acks: Map<string, { of: InstanceRecord; set: Set<string> }>
}

/** What a job record gives once: its parsed definition, whether it is gated, its targets' places, its signed tickets. */
export interface JobDerived {
  of: JobRecord
  body?: JobBody
  gated?: boolean
  /** node id → (group, position) in the job's resolved targets (one entry per target). */
  places?: Map<string, { group: number; position: number }>
  /** Signed tickets by node id, with the key they were signed for (one per node that asked). */
  tickets: Map<string, { key: string; envelope: SignedEnvelope }>
}

export function emptyDerivedCaches(): DerivedCaches {
  return { replies: new Map(), jobs: new Map(), acks: new Map() }
}

/** Who asked for a state change (an API token), recorded in the audit log. */
export interface Actor {
  name: string
  role: Role
}

export interface TokenRecord {
  name: string
  role: Role
  /** SHA-256 of the token, hex: the token itself is shown once and never stored. */
  hash: string
  createdAt: number
  expiresAt?: number
  createdBy?: string
}

/** One audited state change (`audit/<time>/<requestId>` in the store; never loaded at restore). */
export interface AuditRecord {
  at: string
  requestId: string
  token: string
  role: string
  action: string
  object: string
  /** `ok`, or the status and error the coordinator answered. */
  outcome: string
}

export const MAX_TOKENS = 1_000

/** Per position of a group: what the coordinator knows of that target's run. */
const enum Pos { Unknown = 0, Acked = 1, Started = 2, Succeeded = 3, Failed = 4, Released = 5 }

export interface GroupTally {
  status: Uint8Array
  /** Lease ends of started targets (release policy), by position. */
  leases: Map<number, number>
  acked: number
  done: number
  succeeded: number
  prefix: number
  frontier: number
}

export interface InstanceTally {
  groups: GroupTally[]
  seq: number
  /** Changed since the last checkpoint was signed. */
  dirty: boolean
  body?: CheckpointBody
  envelope?: SignedEnvelope
}

export interface SubmitProblem {
  path: string
  message: string
}

/** The state changes an operator asks for through the API: each carries who asked (audited when given). */
export type RequestEvent =
  | { type: 'submit'; requestId: string; jobId: string; template: JobTemplate; actor?: Actor }
  /** Cancel a whole job (no new instances), or only the given occurrences (ms). */
  | { type: 'cancel'; requestId: string; jobId: string; occurrences?: number[]; actor?: Actor }
  /** A manual run (as Courier's): a new immediate job with the stored job's template (`runOf` names it). */
  | { type: 'run_job'; requestId: string; jobId: string; newJobId: string; actor?: Actor }
  /** Forgets a job, its instances and runs; refused while an instance is live. */
  | { type: 'delete_job'; requestId: string; jobId: string; actor?: Actor }
  | { type: 'add_exception'; requestId: string; exception: GlobalException; actor?: Actor }
  | { type: 'save_list'; requestId: string; list: SavedList; actor?: Actor }
  | { type: 'save_filter'; requestId: string; filter: SavedFilter; actor?: Actor }
  | { type: 'delete_saved'; requestId: string; kind: 'list' | 'filter'; id: string; actor?: Actor }
  | { type: 'remove_exception'; requestId: string; id: string; actor?: Actor }
  /** The runtime draws the token and hashes it; the core keeps the hash. */
  | { type: 'create_token'; requestId: string; token: TokenRecord; actor?: Actor }
  | { type: 'revoke_token'; requestId: string; name: string; actor?: Actor }
  /** An admin created an enrolment token (the runtime drew it; only its hash is here). */
  | { type: 'create_enrollment'; requestId: string; enrollment: EnrollmentRecord; actor?: Actor }
  | { type: 'delete_enrollment'; requestId: string; id: string; actor?: Actor }
  /** Revoke an enrolled node: its results are refused, it leaves every target list, its peers drop it. */
  | { type: 'revoke_node'; requestId: string; nodeId: string; actor?: Actor }
  /** Approval mode: admit or refuse a node waiting in `chorus nodes pending`. */
  | { type: 'approve_node'; requestId: string; nodeId: string; actor?: Actor }
  | { type: 'reject_node'; requestId: string; nodeId: string; actor?: Actor }

export type CoordinatorEvent =
  | RequestEvent
  /**
   * `history`: the runtime looked up, in the store, the run a result names that is not in
   * memory (a finished instance's): what it found (nothing: no such run). Absent: not looked up.
   */
  | { type: 'rpc'; requestId: string; envelope: unknown; peerId: string; history?: { run?: RunRecord; instance?: InstanceRecord } }
  | { type: 'tick' }
  /** Retention (or a deleted job's history): finished instances the runtime read from the store, to delete with their runs and index entries; and audit keys. */
  | { type: 'prune'; items: { instance: InstanceRecord; runs: { runId: string; nodeId: string }[] }[]; auditKeys: string[] }
  /** An agent's progress gossip (acks and starts of gated rollouts). */
  | { type: 'progress'; envelope: unknown }
  /** The transport saw a peer's connection open or close. */
  | { type: 'link'; peerId: string; up: boolean }

export type SubmitOutcome =
  | { ok: true; jobId: string; instanceIds: string[]; targets: number; warnings: TargetWarning[] }
  | { ok: false; problems: SubmitProblem[] }

export type CoordinatorEffect =
  | { type: 'persist'; puts: { key: string; value: unknown }[]; dels: string[] }
  /** Gossip on the jobs topic: job definitions and job states. */
  | { type: 'publish'; envelope: SignedEnvelope }
  | { type: 'reply_rpc'; requestId: string; envelope: SignedEnvelope }
  | { type: 'reply_submit'; requestId: string; outcome: SubmitOutcome }
  /** A refusal may name the problems of the request's body (`body.…` paths, as the API's schemas do). */
  | { type: 'reply_admin'; requestId: string; outcome: { ok: true; detail?: unknown } | { ok: false; status: number; error: string; problems?: SubmitProblem[] } }
  | { type: 'log'; level: 'debug' | 'info' | 'warn'; msg: string; fields?: Record<string, unknown> }

export function emptyCoordinatorState(): CoordinatorState {
  return { jobs: new Map(), instances: new Map(), runs: new Map(), nodes: new Map(), globals: new Map(), lists: new Map(), filters: new Map(), connected: new Set(), live: new Set(), openRuns: new Map(), dirty: new Set(), schedules: new Map(), tallies: new Map(), watches: emptyWatches(), byPeer: new Map(), pool: [], tokens: new Map(), tokenByHash: new Map(), members: emptyMembership(), hellos: new Map(), touchPersistedAt: new Map(), settled: new Set(), finished: new Set(), derived: emptyDerivedCaches() }
}

const key = {
  job: (id: string) => `job/${id}`,
  instance: (id: string) => `instance/${id}`,
  run: (id: string) => `run/${id}`,
  node: (id: string) => `node/${id}`,
  global: (id: string) => `gexc/${id}`,
  list: (id: string) => `list/${id}`,
  filter: (id: string) => `filter/${id}`,
  token: (name: string) => `token/${name}`,
  audit: (at: number, requestId: string) => `${AUDIT_PREFIX}${String(at).padStart(16, '0')}/${requestId}`,
}

/** Store keys of records (instance/ID, run/ID), for the runtime's reads. */
export const recordKey = { instance: key.instance, run: key.run, job: key.job }

/** A time in ms as 16 digits: keys sort by it. */
export const timeKey = (ms: number): string => String(Math.max(0, Math.floor(ms))).padStart(16, '0')

/**
 * The indexes of finished history, kept in the store (value 1; the key is the entry). Each key
 * ends in an immutable sort key (a time, then the id), so a page scanned after a key is stable
 * while new instances arrive. Instance → runs is the instance record's own `runIds`.
 */
export const IDX = {
  /** A job's instances by occurrence. */
  job: (jobId: string, occurrenceAt: number, id: string) => `idx/job/${jobId}/${timeKey(occurrenceAt)}/${id}`,
  jobPrefix: (jobId: string) => `idx/job/${jobId}/`,
  /** A job's instances of one status, by occurrence. */
  jobStatus: (jobId: string, status: string, occurrenceAt: number, id: string) => `idx/jobstatus/${jobId}/${status}/${timeKey(occurrenceAt)}/${id}`,
  jobStatusPrefix: (jobId: string, status: string) => `idx/jobstatus/${jobId}/${status}/`,
  /** Every instance by creation. */
  all: (createdAt: number, id: string) => `idx/inst/${timeKey(createdAt)}/${id}`,
  allPrefix: 'idx/inst/',
  /** Instances of one status by creation. */
  status: (status: string, createdAt: number, id: string) => `idx/status/${status}/${timeKey(createdAt)}/${id}`,
  statusPrefix: (status: string) => `idx/status/${status}/`,
  /** A node's runs by their instance's creation. */
  node: (nodeId: string, createdAt: number, runId: string) => `idx/node/${nodeId}/${timeKey(createdAt)}/${runId}`,
  nodePrefix: (nodeId: string) => `idx/node/${nodeId}/`,
} as const

/** The id at the end of an index key. */
export const idOfIndexKey = (k: string): string => k.slice(k.lastIndexOf('/') + 1)

/** Every key an instance's history holds: its record, its runs and its index entries. */
export function historyKeysOf(instance: InstanceRecord, runs: readonly { runId: string; nodeId: string }[]): string[] {
  const keys = [key.instance(instance.id), IDX.job(instance.jobId, instance.occurrenceAt, instance.id), IDX.all(instance.createdAt, instance.id)]
  for (const s of new Set([instance.status, 'running'])) keys.push(IDX.status(s, instance.createdAt, instance.id), IDX.jobStatus(instance.jobId, s, instance.occurrenceAt, instance.id))
  for (const id of instance.runIds) keys.push(key.run(id))
  for (const r of runs) keys.push(IDX.node(r.nodeId, instance.createdAt, r.runId))
  return keys
}

/** Audit records live under this prefix, ordered by time; `auditKeyFrom` gives the first key at or after a time. */
export const AUDIT_PREFIX = 'audit/'
export const auditKeyFrom = (at: number): string => `${AUDIT_PREFIX}${String(Math.max(0, Math.floor(at))).padStart(16, '0')}`

const TERMINAL = new Set(['success', 'failure', 'timeout', 'skipped'])

/** Instances a recurring job gets per tick at most (a coordinator back after a long outage catches up over several ticks). */
export const MAX_INSTANCES_PER_TICK = 1_000

export function restoreCoordinator(records: Iterable<[string, unknown]>): CoordinatorState {
  const state = emptyCoordinatorState()
  for (const [k, v] of records) {
    if (k.startsWith('job/')) { const r = v as JobRecord & { instanceIds?: string[] }; delete r.instanceIds; state.jobs.set(r.jobId, r) }
    else if (k.startsWith('instance/')) { const r = v as InstanceRecord; state.instances.set(r.id, r) }
    else if (k.startsWith('run/')) { const r = v as RunRecord; state.runs.set(r.runId, r) }
    else if (k.startsWith('node/')) { const r = v as NodeRecord; state.nodes.set(r.nodeId, { ...r, addrs: r.addrs ?? [], skills: r.skills ?? {} }); state.byPeer.set(r.peerId, r.nodeId) }
    else if (k.startsWith('list/')) { const r = v as SavedList; state.lists.set(r.id, r) }
    else if (k.startsWith('filter/')) { const r = v as SavedFilter; state.filters.set(r.id, r) }
    else if (k.startsWith('gexc/')) { const r = v as GlobalException; state.globals.set(r.id, r) }
    else if (k.startsWith('token/')) { const r = v as TokenRecord; state.tokens.set(r.name, r); state.tokenByHash.set(r.hash, r.name) }
    else restoreMemberRecord(state.members, k, v)
  }
  // A job written before its history was counted: counted from the instances given here.
  for (const job of state.jobs.values()) {
    if (job.history) continue
    job.history = { count: 0, byStatus: {} }
    for (const inst of state.instances.values()) if (inst.jobId === job.jobId) countInstance(job.history, inst.status, 1)
  }
  for (const inst of state.instances.values()) {
    if (inst.status !== 'running') continue
    state.live.add(inst.id)
    state.openRuns.set(inst.id, inst.runIds.filter((r) => !TERMINAL.has(state.runs.get(r)?.status ?? 'pending')).length)
  }
  return state
}

/** What each request event changes, for the audit log (a new request event is one line here). */
const AUDITED: { [T in RequestEvent['type']]: (e: Extract<RequestEvent, { type: T }>) => { action: string; object: string } } = {
  submit: (e) => ({ action: 'job.submit', object: e.jobId }),
  cancel: (e) => ({ action: e.occurrences ? 'job.cancel_occurrences' : 'job.cancel', object: e.jobId }),
  run_job: (e) => ({ action: 'job.run', object: e.jobId }),
  delete_job: (e) => ({ action: 'job.delete', object: e.jobId }),
  add_exception: (e) => ({ action: 'exception.add', object: e.exception.id }),
  remove_exception: (e) => ({ action: 'exception.remove', object: e.id }),
  save_list: (e) => ({ action: 'list.set', object: e.list.id }),
  save_filter: (e) => ({ action: 'filter.set', object: e.filter.id }),
  delete_saved: (e) => ({ action: `${e.kind}.delete`, object: e.id }),
  create_token: (e) => ({ action: 'token.create', object: e.token.name }),
  revoke_token: (e) => ({ action: 'token.revoke', object: e.name }),
  create_enrollment: (e) => ({ action: 'enrollment.create', object: e.enrollment.id }),
  delete_enrollment: (e) => ({ action: 'enrollment.delete', object: e.id }),
  revoke_node: (e) => ({ action: 'node.revoke', object: e.nodeId }),
  approve_node: (e) => ({ action: 'node.approve', object: e.nodeId }),
  reject_node: (e) => ({ action: 'node.reject', object: e.nodeId }),
}

function isRequestEvent(event: CoordinatorEvent): event is RequestEvent {
  return Object.hasOwn(AUDITED, event.type)
}

/**
 * One step of the core. A request event (an operator's state change) whose input still makes a
 * handler throw is refused with the reason logged instead of stopping the coordinator: every
 * request handler checks its input before it changes anything, so a throw leaves the state as
 * it was, and the effects produced so far are dropped. A request with an actor gets its audit
 * record as a persist of the same step: the change and its record commit in one batch.
 */
export function coordinatorStep(state: CoordinatorState, config: CoordinatorConfig, event: CoordinatorEvent, now: number): CoordinatorEffect[] {
  if (!isRequestEvent(event)) {
    const effects = stepEvent(state, config, event, now)
    flushSettled(state, config, effects)
    return effects
  }
  let effects: CoordinatorEffect[]
  try {
    effects = stepEvent(state, config, event, now)
  } catch (err) {
    effects = refusal(event, `refused: ${(err as Error).message ?? String(err)}`)
  }
  flushSettled(state, config, effects)
  if (event.actor) effects.push(auditEffect(event, event.actor, effects, now))
  return effects
}

/** Adds `delta` instances of a status to a job's counts. */
function countInstance(h: JobHistory, status: InstanceStatus, delta: number): void {
  h.count += delta
  h.byStatus[status] = (h.byStatus[status] ?? 0) + delta
  if (h.byStatus[status]! <= 0) delete h.byStatus[status]
}

/** Runs of an instance by status (what lists show without reading every run). */
function runCounts(state: CoordinatorState, instance: InstanceRecord): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const id of instance.runIds) {
    const status = state.runs.get(id)?.status
    if (status) counts[status] = (counts[status] ?? 0) + 1
  }
  return counts
}

/**
 * Instances that finished in this step: their final record (with its run counts and acks),
 * their status index entries and their job's counts go in one persist, the last of the step
 * (the runtime commits a step's persists as one batch). With dropFinished they leave memory at
 * the next tick.
 */
function flushSettled(state: CoordinatorState, config: CoordinatorConfig, effects: CoordinatorEffect[]): void {
  if (state.settled.size === 0) return
  const puts: { key: string; value: unknown }[] = []
  const dels: string[] = []
  const jobs = new Set<JobRecord>()
  for (const id of state.settled) {
    const inst = state.instances.get(id)
    if (!inst || inst.status === 'running') continue
    inst.counts = runCounts(state, inst)
    state.dirty.delete(id)
    puts.push({ key: key.instance(id), value: inst })
    puts.push({ key: IDX.status(inst.status, inst.createdAt, id), value: 1 }, { key: IDX.jobStatus(inst.jobId, inst.status, inst.occurrenceAt, id), value: 1 })
    dels.push(IDX.status('running', inst.createdAt, id), IDX.jobStatus(inst.jobId, 'running', inst.occurrenceAt, id))
    const job = state.jobs.get(inst.jobId)
    if (job) {
      countInstance(job.history, 'running', -1)
      countInstance(job.history, inst.status, 1)
      if (job.history.latest?.id === id) job.history.latest = { id, status: inst.status }
      jobs.add(job)
    }
    if (config.dropFinished) state.finished.add(id)
  }
  state.settled.clear()
  for (const job of jobs) puts.push({ key: key.job(job.jobId), value: job })
  effects.push({ type: 'persist', puts, dels })
}

/** Finished instances leave memory with their runs (dropFinished): from here on they are read from the store. */
function dropFinished(state: CoordinatorState): void {
  for (const id of state.finished) {
    const inst = state.instances.get(id)
    state.finished.delete(id)
    if (inst && inst.status !== 'running') dropInstance(state, inst)
  }
}

function dropInstance(state: CoordinatorState, inst: InstanceRecord): void {
  for (const runId of inst.runIds) state.runs.delete(runId)
  state.instances.delete(inst.id)
  state.live.delete(inst.id)
  state.openRuns.delete(inst.id)
  state.tallies.delete(inst.id)
  state.dirty.delete(inst.id)
  state.finished.delete(inst.id)
  state.derived.acks.delete(inst.id)
  forgetInstance(state.watches, inst.id)
}

/**
 * Whether an occurrence of the job has had its instance, whether or not it is in memory: an
 * immediate job's one occurrence (created at submit), a recurring job's at or before its
 * cursor (the tick creates every one it passes), or one created ahead of the cursor.
 */
function hadInstance(job: JobRecord, at: number): boolean {
  if (job.template.scheduleRule === 'immediate') return at === job.createdAt
  return (job.cursor !== undefined && at <= job.cursor) || (job.history.ahead ?? []).includes(at)
}

/** Retention: deletes finished instances (never a live one) with their runs and index entries, and audit records. */
function onPrune(state: CoordinatorState, event: Extract<CoordinatorEvent, { type: 'prune' }>, effects: CoordinatorEffect[]): void {
  const dels: string[] = []
  const jobs = new Set<JobRecord>()
  let instances = 0
  for (const { instance, runs } of event.items) {
    const held = state.instances.get(instance.id)
    if (state.live.has(instance.id) || instance.status === 'running' || (held && held.status === 'running')) continue
    dels.push(...historyKeysOf(instance, runs))
    instances++
    if (held) dropInstance(state, held)
    const job = state.jobs.get(instance.jobId)
    if (job) {
      countInstance(job.history, instance.status, -1)
      if (job.history.latest?.id === instance.id) delete job.history.latest
      jobs.add(job)
    }
  }
  const audit = event.auditKeys.filter((k) => k.startsWith(AUDIT_PREFIX))
  dels.push(...audit)
  const puts = [...jobs].map((job) => ({ key: key.job(job.jobId), value: job }))
  if (dels.length === 0) return
  effects.push({ type: 'persist', puts, dels })
  effects.push({ type: 'log', level: 'debug', msg: 'pruned history', fields: { instances, auditRecords: audit.length } })
}

function refusal(event: RequestEvent, error: string): CoordinatorEffect[] {
  const log: CoordinatorEffect = { type: 'log', level: 'warn', msg: 'request refused: its input made the core throw; nothing changed', fields: { type: event.type, requestId: event.requestId, error } }
  if (event.type === 'submit') return [log, { type: 'reply_submit', requestId: event.requestId, outcome: { ok: false, problems: [{ path: '$', message: error }] } }]
  return [log, { type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 400, error } }]
}

function auditEffect(event: RequestEvent, actor: Actor, effects: CoordinatorEffect[], now: number): CoordinatorEffect {
  const what = (AUDITED[event.type] as (e: RequestEvent) => { action: string; object: string })(event)
  return auditPut(now, event.requestId, { token: actor.name, role: actor.role, ...what, outcome: outcomeOf(event.requestId, effects) })
}

/** One audit record, written with the change it records (same persist batch). */
function auditPut(now: number, requestId: string, what: Omit<AuditRecord, 'at' | 'requestId'>): CoordinatorEffect {
  const record: AuditRecord = { at: new Date(now).toISOString(), requestId, ...what }
  return { type: 'persist', puts: [{ key: key.audit(now, requestId), value: record }], dels: [] }
}

function outcomeOf(requestId: string, effects: CoordinatorEffect[]): string {
  for (const e of effects) {
    if ((e.type !== 'reply_admin' && e.type !== 'reply_submit') || e.requestId !== requestId) continue
    if (e.outcome.ok) return 'ok'
    const text = 'status' in e.outcome ? `${e.outcome.status} ${e.outcome.error}` : `422 ${e.outcome.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`
    return text.slice(0, 1000)
  }
  return 'no reply'
}

/** The token with this hash, unless it expired. */
export function tokenByHash(state: CoordinatorState, hash: string, now: number): TokenRecord | undefined {
  const name = state.tokenByHash.get(hash)
  const t = name === undefined ? undefined : state.tokens.get(name)
  return t && t.hash === hash && (t.expiresAt === undefined || t.expiresAt > now) ? t : undefined
}

function onToken(state: CoordinatorState, event: Extract<RequestEvent, { type: 'create_token' | 'revoke_token' }>, effects: CoordinatorEffect[]): void {
  const answer = (outcome: Extract<CoordinatorEffect, { type: 'reply_admin' }>['outcome']) => effects.push({ type: 'reply_admin', requestId: event.requestId, outcome })
  if (event.type === 'revoke_token') {
    const t = state.tokens.get(event.name)
    if (!t) return void answer({ ok: false, status: 404, error: `no token named ${event.name}` })
    state.tokens.delete(t.name)
    state.tokenByHash.delete(t.hash)
    effects.push({ type: 'persist', puts: [], dels: [key.token(t.name)] })
    return void answer({ ok: true, detail: { revoked: t.name } })
  }
  const t = event.token
  if (state.tokens.has(t.name)) return void answer({ ok: false, status: 409, error: `a token named ${t.name} exists; revoke it first or choose another name` })
  if (state.tokens.size >= MAX_TOKENS) return void answer({ ok: false, status: 409, error: `at most ${MAX_TOKENS} tokens; revoke one first` })
  state.tokens.set(t.name, t)
  state.tokenByHash.set(t.hash, t.name)
  effects.push({ type: 'persist', puts: [{ key: key.token(t.name), value: t }], dels: [] })
  answer({ ok: true, detail: tokenView(t) })
}

/** What the API shows of a token: never its hash. */
export function tokenView(t: TokenRecord): { name: string; role: Role; createdAt: string; expiresAt: string | null; createdBy?: string } {
  return { name: t.name, role: t.role, createdAt: new Date(t.createdAt).toISOString(), expiresAt: t.expiresAt === undefined ? null : new Date(t.expiresAt).toISOString(), ...(t.createdBy ? { createdBy: t.createdBy } : {}) }
}

function stepEvent(state: CoordinatorState, config: CoordinatorConfig, event: CoordinatorEvent, now: number): CoordinatorEffect[] {
  const effects: CoordinatorEffect[] = []
  switch (event.type) {
    case 'create_token':
    case 'revoke_token':
      onToken(state, event, effects)
      break
    case 'submit':
      onSubmit(state, config, event.requestId, event.jobId, event.template, now, effects)
      break
    case 'rpc':
      onRpc(state, config, event.requestId, event.envelope, event.peerId, now, effects, event.history)
      break
    case 'tick':
      dropFinished(state)
      onTick(state, config, now, effects)
      break
    case 'prune':
      onPrune(state, event, effects)
      break
    case 'cancel':
      onCancel(state, config, event.requestId, event.jobId, event.occurrences, now, effects)
      break
    case 'run_job':
      onRunJob(state, config, event, now, effects)
      break
    case 'delete_job':
      onDeleteJob(state, event, effects)
      break
    case 'add_exception':
    case 'remove_exception':
      onGlobalException(state, config, event, now, effects)
      break
    case 'progress':
      onProgress(state, config, event.envelope, now, effects)
      break
    case 'link': {
      for (const n of state.nodes.values()) {
        if (n.peerId !== event.peerId) continue
        if (event.up) state.connected.add(n.nodeId)
        else {
          state.connected.delete(n.nodeId)
          n.lastSeenAt = now
          effects.push({ type: 'log', level: 'info', msg: 'node disconnected', fields: { nodeId: n.nodeId } })
        }
      }
      break
    }
    case 'save_list': {
      const problems = event.list.nodes.length > MAX_TARGET_NODES ? [`at most ${MAX_TARGET_NODES} nodes`] : []
      if (!state.lists.has(event.list.id) && state.lists.size >= MAX_SAVED) problems.push(`at most ${MAX_SAVED} saved lists`)
      if (problems.length) { effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 400, error: problems.join('; ') } }); break }
      state.lists.set(event.list.id, event.list)
      effects.push({ type: 'persist', puts: [{ key: key.list(event.list.id), value: event.list }], dels: [] })
      effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: true, detail: event.list } })
      break
    }
    case 'save_filter': {
      const check = selectNodes(state, event.filter, 'body')
      if ('problems' in check) { effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 400, error: check.problems.map((p) => `${p.path}: ${p.message}`).join('; '), problems: check.problems } }); break }
      if (!state.filters.has(event.filter.id) && state.filters.size >= MAX_SAVED) { effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 409, error: `at most ${MAX_SAVED} saved filters` } }); break }
      state.filters.set(event.filter.id, event.filter)
      effects.push({ type: 'persist', puts: [{ key: key.filter(event.filter.id), value: event.filter }], dels: [] })
      effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: true, detail: { ...event.filter, matches: check.nodes } } })
      break
    }
    case 'create_enrollment':
    case 'delete_enrollment':
    case 'revoke_node':
    case 'approve_node':
    case 'reject_node':
      onMembership(state, config, event, now, effects)
      break
    case 'delete_saved': {
      const map = event.kind === 'list' ? state.lists : state.filters
      if (!map.delete(event.id)) { effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 404, error: `no saved ${event.kind} ${event.id}` } }); break }
      effects.push({ type: 'persist', puts: [], dels: [event.kind === 'list' ? key.list(event.id) : key.filter(event.id)] })
      effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: true, detail: { deleted: event.id } } })
      break
    }
  }
  return effects
}

/** Resolves a template's targets against the registry: one node list per group, in rollout order. */
export interface SavedList {
  id: string
  name: string
  nodes: string[]
}

/** A saved filter: Node Management style constraints and/or a search query. */
export interface SavedFilter {
  id: string
  name: string
  constraints?: { attributes?: AttributeConstraint[]; skills?: SkillConstraint[] }
  query?: string
}

export const MAX_SAVED = 1_000

/**
 * The nodes of the registry a filter selects, sorted by node id (the rollout order), or the
 * problems with the filter, each with the path below `path`.
 */
export function selectNodes(state: CoordinatorState, filter: { constraints?: { attributes?: AttributeConstraint[]; skills?: SkillConstraint[] }; query?: unknown } | null | undefined, path: string): { nodes: string[] } | { problems: SubmitProblem[] } {
  const problems: SubmitProblem[] = []
  const tests: ((n: MatchView) => boolean)[] = []
  ;(filter?.constraints?.attributes ?? []).forEach((a, ai) => {
    const m = compileAttribute(a)
    if (typeof m === 'function') tests.push((n) => m(n.withNode))
    else problems.push({ path: `${path}.constraints.attributes[${ai}].${m.field}`, message: m.error })
  })
  ;(filter?.constraints?.skills ?? []).forEach((c, ci) => {
    const m = compileSkill(c)
    if (typeof m === 'function') tests.push((n) => m(n.skills))
    else problems.push({ path: `${path}.constraints.skills[${ci}].version`, message: m.error })
  })
  if (filter?.query !== undefined) {
    if (typeof filter.query !== 'string') problems.push({ path: `${path}.query`, message: 'expected a search query string such as "role:webapp AND env:prod"' })
    else {
      const q = parseQuery(filter.query)
      if (q.ok) tests.push((n) => matchQuery(q.query, n))
      else problems.push({ path: `${path}.query`, message: q.message })
    }
  }
  if (problems.length > 0) return { problems }
  return { nodes: [...state.nodes.values()].filter((n) => { const v = matchView(n); return tests.every((t) => t(v)) }).map((n) => n.nodeId).sort() }
}

interface MatchView { nodeId: string; facts: Record<string, string>; skills: Record<string, string[]>; withNode: Record<string, string> }

/** A node's facts and skills without a prototype: a lookup of "constructor" or "__proto__" finds only what the node has. */
function matchView(n: NodeRecord): MatchView {
  const facts = Object.assign(Object.create(null) as Record<string, string>, n.facts)
  return { nodeId: n.nodeId, facts, skills: Object.assign(Object.create(null) as Record<string, string[]>, n.skills), withNode: Object.assign(Object.create(null) as Record<string, string>, facts, { node: n.nodeId }) }
}

/** Resolves a template's targets against the registry: one node list per group, in rollout order. */
export function resolveTargets(state: CoordinatorState, template: JobTemplate): Targets | { problems: SubmitProblem[] } {
  const problems: SubmitProblem[] = []
  const groups: { nodes: string[] }[] = []
  const taken = new Map<string, number>()
  template.target.groups.forEach((g, gi) => {
    const path = `target.groups[${gi}]`
    let nodes: string[] = []
    const select = (filter: Parameters<typeof selectNodes>[1], at: string) => {
      const r = selectNodes(state, filter, at)
      if ('problems' in r) problems.push(...r.problems)
      else nodes = r.nodes
    }
    switch (g.nodeListType) {
      case 'nodes':
        nodes = [...new Set(g.nodeIdentifiers ?? [])]
        break
      case 'filter':
        select(g.filter as Parameters<typeof selectNodes>[1], `${path}.filter`)
        break
      case 'savedList': {
        const list = state.lists.get(String(g.listId))
        if (!list) problems.push({ path: `${path}.listId`, message: `unknown saved list ${JSON.stringify(g.listId)}; known lists: ${[...state.lists.keys()].slice(0, 10).join(', ') || 'none'} (chorus lists)` })
        else nodes = [...list.nodes]
        break
      }
      case 'savedFilter': {
        const f = state.filters.get(String(g.filterId))
        if (!f) problems.push({ path: `${path}.filterId`, message: `unknown saved filter ${JSON.stringify(g.filterId)}; known filters: ${[...state.filters.keys()].slice(0, 10).join(', ') || 'none'} (chorus filters)` })
        else select(f, `${path}.filterId(${f.id})`)
        break
      }
    }
    const kept: string[] = []
    for (const n of nodes) {
      // A node belongs to the first group that names it: it runs the job once. A revoked node runs nothing.
      if (taken.has(n) || (state.members.revoked.has(n) && !state.nodes.has(n))) continue
      taken.set(n, gi)
      kept.push(n)
    }
    if (kept.length > MAX_TARGET_NODES) problems.push({ path, message: `${kept.length} nodes exceed the limit of ${MAX_TARGET_NODES} per group` })
    groups.push({ nodes: kept })
  })
  if (problems.length > 0) return { problems }
  if (groups.every((g) => g.nodes.length === 0)) return { problems: [{ path: 'target.groups', message: 'the target matches no node; check the node ids or filters (`chorus nodes` lists the known nodes)' }] }
  const keys: Record<string, string> = {}
  for (const g of groups) for (const n of g.nodes) {
    const rec = state.nodes.get(n)
    if (rec) keys[n] = rec.publicKey
  }
  return { groups, keys }
}

function scheduleOf(state: CoordinatorState, job: JobRecord): JobSchedule | null {
  return cachedSchedule(state.schedules, job.jobId, job.template, job.createdAt, job.jobState.globalExceptions)
}

function spanMs(template: JobTemplate): number {
  const timeouts = template.target.groups.map((g) => g.timeoutSeconds * 1000)
  return template.target.executionType === 'sequential' ? timeouts.reduce((a, b) => a + b, 0) : Math.max(0, ...timeouts)
}

/** Target node ids this coordinator has never seen (plan and submit warn about them). */
export function targetWarnings(state: CoordinatorState, template: JobTemplate): TargetWarning[] {
  return unknownTargetWarnings(template.target.groups, (id) => state.lists.get(id)?.nodes, (id) => state.nodes.has(id))
}

function onSubmit(state: CoordinatorState, config: CoordinatorConfig, requestId: string, jobId: string, template: JobTemplate, now: number, effects: CoordinatorEffect[]): void {
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
  // Small ungated jobs carry their targets' tickets: a gated job's targets talk to the coordinator
  // anyway (acks, watches), an ungated one's would otherwise wait one round trip to start.
  const inline = members.length <= MAX_INLINE_TICKETS && members.every((m) => state.nodes.has(m.nodeId))
    && !isGated({ template, resolved: { groups: resolved.groups.map((g) => ({ size: g.nodes.length })) } } as JobBody)
    // The same bytes ticketFor gives later for this node (issuedAt is the job's creation time).
    ? members.map((m) => signTicket(config, jobId, now, state.nodes.get(m.nodeId)!, { group: m.group, position: m.position }))
    : undefined
  const body: JobBody = { type: 'job', v: PROTOCOL_VERSION, jobId, issuedAt: now, expiresAt, template, resolved: { groups: resolved.groups.map((g) => ({ size: g.nodes.length })), ...(inline ? { tickets: inline } : {}) } }
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

/** An upper bound on the last occurrence (a day of slack for wall-clock rules), or undefined when the rule never ends. */
function lastOccurrence(sched: JobSchedule): number | undefined {
  const s = sched.schedule
  if (s.kind === 'immediate') return s.atMs
  const DAY = 86_400_000
  if (s.rule.untilMs !== undefined) return s.rule.untilMs
  if (s.rule.untilWallMs !== undefined) return s.rule.untilWallMs + DAY
  if (s.lastWallMs !== undefined) return s.lastWallMs + DAY
  return undefined
}

/**
 * Creates the instance of one occurrence with a pending run per targeted node. An occurrence
 * inside an exception window or canceled gets an instance too, already decided, so the report
 * shows it as not performed and why; its runs are `skipped` (a late result replaces that).
 */
function materializeInstance(state: CoordinatorState, config: CoordinatorConfig, job: JobRecord, occurrenceAt: number, now: number, puts: { key: string; value: unknown }[]): InstanceRecord {
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
function bumpJobState(config: CoordinatorConfig, job: JobRecord, patch: Partial<Pick<JobStateBody, 'status' | 'canceledOccurrences' | 'globalExceptions'>>, now: number, effects: CoordinatorEffect[]): void {
  job.jobState = { ...job.jobState, ...patch, version: job.jobState.version + 1, issuedAt: now }
  job.stateEnvelope = seal(config.identity, job.jobState)
  effects.push({ type: 'publish', envelope: job.stateEnvelope })
}

function onCancel(state: CoordinatorState, config: CoordinatorConfig, requestId: string, jobId: string, occurrences: number[] | undefined, now: number, effects: CoordinatorEffect[]): void {
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

function onGlobalException(state: CoordinatorState, config: CoordinatorConfig, event: Extract<CoordinatorEvent, { type: 'add_exception' | 'remove_exception' }>, now: number, effects: CoordinatorEffect[]): void {
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
 * Replies that say the same (most: "ok", with the same checkpoints) are the same signed bytes:
 * ed25519 is deterministic, so one signature serves them all. Bounded (REPLY_CACHE_MAX entries, oldest out; kept in state.derived.replies).
 */
export const REPLY_CACHE_MAX = 256

type ReplyFields = { ok: boolean; error?: string; ackRunIds?: string[]; jobs?: SignedEnvelope[]; peers?: PeerInfo[]; tickets?: SignedEnvelope[]; checkpoints?: SignedEnvelope[]; certificate?: SignedEnvelope; revocations?: SignedEnvelope; pending?: boolean }

function reply(state: CoordinatorState, config: CoordinatorConfig, requestId: string, fields: ReplyFields): CoordinatorEffect {
  const replyCache = state.derived.replies
  const body = { type: 'reply' as const, v: PROTOCOL_VERSION as typeof PROTOCOL_VERSION, ackRunIds: [] as string[], jobs: [] as SignedEnvelope[], peers: [] as PeerInfo[], tickets: [] as SignedEnvelope[], checkpoints: [] as SignedEnvelope[], ...fields }
  const cacheable = body.ackRunIds.length === 0 && body.jobs.length === 0 && body.peers.length === 0 && body.tickets.length === 0 && !body.certificate && !body.revocations && !body.pending
  if (!cacheable) return { type: 'reply_rpc', requestId, envelope: seal(config.identity, body) }
  const k = `${config.identity.publicKey}|${body.ok}|${body.error ?? ''}|${body.checkpoints.map((c) => c.sig).join(',')}`
  let envelope = replyCache.get(k)
  if (!envelope) {
    envelope = seal(config.identity, body)
    if (replyCache.size >= REPLY_CACHE_MAX) replyCache.delete(replyCache.keys().next().value!)
    replyCache.set(k, envelope)
  }
  return { type: 'reply_rpc', requestId, envelope }
}

/** The derived entry of a job record (a new record, e.g. after a restart, starts a new one). */
export function derivedOf(state: CoordinatorState, job: JobRecord): JobDerived {
  let d = state.derived.jobs.get(job.jobId)
  if (!d || d.of !== job) {
    d = { of: job, tickets: new Map() }
    state.derived.jobs.set(job.jobId, d)
  }
  return d
}

/** node id → (group, position) of a job's targets, built once per job record. */
export function placeIn(state: CoordinatorState, job: JobRecord, nodeId: string): { group: number; position: number } | undefined {
  const d = derivedOf(state, job)
  let index = d.places
  if (!index) {
    index = new Map()
    job.resolved.groups.forEach((g, group) => g.nodes.forEach((n, position) => { if (!index!.has(n)) index!.set(n, { group, position }) }))
    d.places = index
  }
  return index.get(nodeId)
}

/** Signed tickets, by job then node (ed25519 is deterministic: a ticket signed again would be the same bytes). */
/** A node's ticket for a job: its place (or null, not targeted) and the key it registered with. */
export function ticketFor(state: CoordinatorState, config: CoordinatorConfig, job: JobRecord, node: NodeRecord): SignedEnvelope {
  const cache = derivedOf(state, job).tickets
  let t = cache.get(node.nodeId)
  if (!t || t.key !== node.publicKey) {
    t = { key: node.publicKey, envelope: signTicket(config, job.jobId, job.createdAt, node, placeIn(state, job, node.nodeId) ?? null) }
    cache.set(node.nodeId, t)
  }
  return t.envelope
}

/** The one way a ticket is signed: at submit (inline in a small job) and on request give the same bytes. */
function signTicket(config: CoordinatorConfig, jobId: string, issuedAt: number, node: NodeRecord, place: { group: number; position: number } | null): SignedEnvelope {
  return seal(config.identity, { type: 'ticket', v: PROTOCOL_VERSION, jobId, nodeId: node.nodeId, key: node.publicKey, place, issuedAt })
}

/** The progress of a live gated instance as counts per group, built from its runs and acks once, then kept up to date. */
function tallyOf(state: CoordinatorState, instance: InstanceRecord, job: JobRecord): InstanceTally {
  let t = state.tallies.get(instance.id)
  if (t) return t
  t = { groups: job.resolved.groups.map((g) => ({ status: new Uint8Array(g.nodes.length), leases: new Map(), acked: 0, done: 0, succeeded: 0, prefix: 0, frontier: 0 })), seq: 0, dirty: true }
  state.tallies.set(instance.id, t)
  const acks = new Set(instance.acks ?? [])
  for (const runId of instance.runIds) {
    const run = state.runs.get(runId)
    const place = run && placeIn(state, job, run.nodeId)
    if (!run || !place) continue
    const st = run.status === 'success' ? Pos.Succeeded : TERMINAL.has(run.status) && run.receivedAt !== undefined ? Pos.Failed : run.status === 'running' ? Pos.Started : acks.has(run.nodeId) ? Pos.Acked : Pos.Unknown
    markPosition(t, place.group, place.position, st)
  }
  return t
}

/** Raises what is known of one position (knowledge only grows; a released target may still report its end). */
function markPosition(t: InstanceTally, group: number, position: number, to: Pos, leaseUntil?: number): boolean {
  const g = t.groups[group]
  if (!g || position >= g.status.length) return false
  const from = g.status[position] as Pos
  if (leaseUntil !== undefined && (to === Pos.Started) && (g.leases.get(position) ?? -1) < leaseUntil) { g.leases.set(position, leaseUntil); t.dirty = true }
  const isDone = (s: Pos) => s === Pos.Succeeded || s === Pos.Failed || s === Pos.Released
  if (from === to || isDone(from) && !isDone(to) || (from === Pos.Started && to === Pos.Acked)) return false
  if ((from === Pos.Succeeded || from === Pos.Failed) && isDone(to)) return false
  g.status[position] = to
  if (from === Pos.Unknown) g.acked++
  if (!isDone(from) && isDone(to)) g.done++
  if (to === Pos.Succeeded) g.succeeded++
  if (isDone(to)) g.leases.delete(position)
  if (to !== Pos.Acked && position + 1 > g.frontier) g.frontier = position + 1
  while (g.prefix < g.status.length && isDone(g.status[g.prefix] as Pos)) g.prefix++
  t.dirty = true
  return true
}

/**
 * Release policy: a holder whose lease ran out, and a target that never acknowledged within
 * leaseSeconds of the occurrence, count as done (not succeeded) in the checkpoints, so the
 * rollout goes on without them (by this coordinator's clock; the README says what it costs).
 */
function releaseVanished(job: JobRecord, instance: InstanceRecord, t: InstanceTally, now: number): boolean {
  const leaseMs = (job.template.chorus?.leaseSeconds ?? DEFAULT_LEASE_S) * 1000
  const silentToo = now >= instance.occurrenceAt + leaseMs
  let changed = false
  t.groups.forEach((g, gi) => {
    for (const [pos, until] of g.leases) if (until < now && g.status[pos] === Pos.Started) changed = markPosition(t, gi, pos, Pos.Released) || changed
    if (!silentToo || g.acked >= g.status.length) return
    for (let pos = 0; pos < g.status.length; pos++) if (g.status[pos] === Pos.Unknown) changed = markPosition(t, gi, pos, Pos.Released) || changed
  })
  return changed
}

/** The instance's current checkpoint, signed again only when the tally changed since the last one. */
function checkpointOf(config: CoordinatorConfig, instance: InstanceRecord, t: InstanceTally, now: number): { body: CheckpointBody; envelope: SignedEnvelope } {
  if (t.dirty || !t.envelope || !t.body) {
    t.dirty = false
    // Sequence numbers are coordinator timestamps in microseconds (or one more than the last):
    // a restarted coordinator, whose tallies start over from its records, still issues newer
    // checkpoints (signing takes tens of µs, so the count cannot run ahead of the clock).
    t.seq = Math.max(t.seq + 1, Math.floor(now) * 1000)
    t.body = {
      type: 'checkpoint', v: PROTOCOL_VERSION, jobId: instance.jobId, instanceId: instance.id, occurrenceAt: instance.occurrenceAt, seq: t.seq, issuedAt: now,
      groups: t.groups.map((g) => ({ acked: g.acked, done: g.done, succeeded: g.succeeded, prefix: g.prefix, frontier: g.frontier })),
    }
    t.envelope = seal(config.identity, t.body)
  }
  return { body: t.body, envelope: t.envelope }
}

/** Whether the job's targets wait on each other (only those instances get tallies and checkpoints). */
function gatedJob(state: CoordinatorState, job: JobRecord): boolean {
  const d = derivedOf(state, job)
  if (d.gated === undefined) d.gated = isGated(bodyOf(state, job))
  return d.gated
}

/** The signed definition's body, parsed once per job record (gate decisions need it on every wake). */
function bodyOf(state: CoordinatorState, job: JobRecord): JobBody {
  const d = derivedOf(state, job)
  if (!d.body) {
    const o = open(job.envelope)
    if (!o.ok || o.body.type !== 'job') throw new Error(`job ${job.jobId}: stored definition does not open (${o.ok ? o.body.type : o.reason})`)
    d.body = o.body
  }
  return d.body
}

/** Records what a target said of its run (ack, start with its lease, end) and wakes the watchers it decides. */
function noteProgress(state: CoordinatorState, config: CoordinatorConfig, instance: InstanceRecord, job: JobRecord, nodeId: string, to: Pos, now: number, effects: CoordinatorEffect[], leaseUntil?: number): void {
  if (instance.status !== 'running' || !gatedJob(state, job)) return
  const place = placeIn(state, job, nodeId)
  if (!place) return
  const t = tallyOf(state, instance, job)
  if (markPosition(t, place.group, place.position, to, leaseUntil)) wake(state, config, instance, job, t, now, effects)
}

/** What a waiting target at (group, position) would decide from the checkpoint alone. */
function decisionAt(state: CoordinatorState, job: JobRecord, cp: CheckpointBody, group: number, position: number, occurrenceAt: number, now: number): 'start' | 'wait' | 'skip' {
  return decideGate(bodyOf(state, job), { facts: new Map(), checkpoint: cp, version: 0 }, group, position, occurrenceAt, now).action
}

/**
 * After a change: answers, group by group, the front watchers the new checkpoint decides, and
 * stops at the first that still waits (see coordinator/watch.ts for why that is enough).
 * A watcher that already holds this checkpoint and still waits (its clock says otherwise) is
 * left for its hold to run out, so a disagreement cannot turn into a request loop.
 */
function wake(state: CoordinatorState, config: CoordinatorConfig, instance: InstanceRecord, job: JobRecord, t: InstanceTally, now: number, effects: CoordinatorEffect[]): void {
  const groups = state.watches.byInstance.get(instance.id)
  if (!groups || groups.size === 0) return
  const cp = checkpointOf(config, instance, t, now)
  for (const [group, heap] of groups) {
    for (let front = heap.peek(); front; front = heap.peek()) {
      if (decisionAt(state, job, cp.body, group, front.position, instance.occurrenceAt, now) === 'wait') break
      heap.pop()
      if ((front.w.seqs.get(instance.id) ?? 0) < cp.body.seq) answerWatcher(state, config, front.w, now, effects)
    }
  }
}

function answerWatcher(state: CoordinatorState, config: CoordinatorConfig, w: Watcher, now: number, effects: CoordinatorEffect[]): void {
  if (w.answered) return
  markAnswered(state.watches, w)
  // A node revoked while its watch was held learns nothing more: no checkpoint may start its run.
  if (!state.nodes.has(w.nodeId)) { effects.push(reply(state, config, w.requestId, { ok: false, error: `node ${w.nodeId} is revoked` })); return }
  effects.push(reply(state, config, w.requestId, { ok: true, checkpoints: checkpointsFor(state, config, w.nodeId, now) }))
}

/** Current checkpoints of the live gated instances that target a node. */
export function checkpointsFor(state: CoordinatorState, config: CoordinatorConfig, nodeId: string, now: number): SignedEnvelope[] {
  const out: SignedEnvelope[] = []
  for (const id of state.live) {
    const inst = state.instances.get(id)
    const job = inst && state.jobs.get(inst.jobId)
    if (!inst || !job || !gatedJob(state, job) || !placeIn(state, job, nodeId)) continue
    out.push(checkpointOf(config, inst, tallyOf(state, inst, job), now).envelope)
    if (out.length >= MAX_CHECKPOINTS_IN_REPLY) break
  }
  return out
}

/**
 * A sync with `watch`: held until a newer checkpoint decides one of the node's waiting runs, or
 * for WATCH_HOLD_MS. Returns false when the request must be answered now (a newer checkpoint
 * already decides a run, nothing to wait on, or MAX_WATCHERS reached).
 */
function tryHold(state: CoordinatorState, config: CoordinatorConfig, requestId: string, nodeId: string, gated: SyncRequestBody['gated'], now: number): boolean {
  if (state.watches.held >= MAX_WATCHERS) return false
  const w: Watcher = { requestId, nodeId, heldUntil: now + WATCH_HOLD_MS, seqs: new Map(), places: [], answered: false }
  for (const g of gated) {
    if (g.state !== 'waiting') continue
    const inst = state.instances.get(g.instanceId)
    const job = inst && state.jobs.get(inst.jobId)
    if (!inst || !job || inst.status !== 'running' || !gatedJob(state, job)) continue
    const place = placeIn(state, job, nodeId)
    if (!place) continue
    const cp = checkpointOf(config, inst, tallyOf(state, inst, job), now)
    if (cp.body.seq > (g.seq ?? 0) && decisionAt(state, job, cp.body, place.group, place.position, inst.occurrenceAt, now) !== 'wait') return false
    w.seqs.set(g.instanceId, g.seq ?? 0)
    w.places.push({ instanceId: g.instanceId, ...place })
  }
  if (w.places.length === 0) return false
  hold(state.watches, w)
  return true
}

/** A sync says which gated runs the node has waiting (acknowledged) or running (slot held until leaseUntil). */
function noteGated(state: CoordinatorState, config: CoordinatorConfig, nodeId: string, gated: SyncRequestBody['gated'], now: number, effects: CoordinatorEffect[]): void {
  for (const g of gated) {
    const job = state.jobs.get(g.jobId)
    if (!job || instanceIdFor(g.jobId, g.occurrenceAt) !== g.instanceId) continue
    const instance = state.instances.get(g.instanceId)
    // Only the job's targets acknowledge (a quorum counts them): anyone else's claim changes nothing.
    if (!instance || !targets(state, job, nodeId)) continue
    recordAck(state, instance, nodeId)
    if (g.state === 'running') markStarted(state, instance, nodeId, now, effects)
    noteProgress(state, config, instance, job, nodeId, g.state === 'running' ? Pos.Started : Pos.Acked, now, effects, g.state === 'running' ? (g.leaseUntil ?? Number.MAX_SAFE_INTEGER) : undefined)
  }
}

function recordAck(state: CoordinatorState, instance: InstanceRecord, nodeId: string): void {
  const acks = ackSet(state, instance)
  if (acks.has(nodeId)) return
  acks.add(nodeId)
  ;(instance.acks ??= []).push(nodeId)
  // Acks are written with the instance at its next status change or tick, not one write per ack.
  state.dirty.add(instance.id)
}

function markStarted(state: CoordinatorState, instance: InstanceRecord, nodeId: string, at: number, effects: CoordinatorEffect[]): void {
  const run = state.runs.get(runIdFor(instance.id, nodeId))
  if (!run || run.status !== 'pending') return
  run.status = 'running'
  run.startedAt = at
  effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }], dels: [] })
}

function onProgress(state: CoordinatorState, config: CoordinatorConfig, envelope: unknown, now: number, effects: CoordinatorEffect[]): void {
  const opened = open(envelope)
  if (!opened.ok || opened.body.type !== 'progress') return
  const p = opened.body
  const job = state.jobs.get(p.jobId)
  if (!job || job.resolved.keys[p.nodeId] !== opened.signer || instanceIdFor(p.jobId, p.occurrenceAt) !== p.instanceId) return
  const puts: { key: string; value: unknown }[] = []
  let instance = state.instances.get(p.instanceId)
  if (!instance) {
    if (hadInstance(job, p.occurrenceAt) || !dueOccurrence(state, job, p.occurrenceAt, now)) return
    if (job.template.scheduleRule !== 'immediate' && (job.history.ahead ?? []).length >= MAX_AHEAD_OCCURRENCES) return
    instance = materializeInstance(state, config, job, p.occurrenceAt, now, puts)
    puts.push({ key: key.job(job.jobId), value: job })
  }
  recordAck(state, instance, p.nodeId)
  if (puts.length > 0) effects.push({ type: 'persist', puts, dels: [] })
  if (p.event === 'start' || p.event === 'renew') markStarted(state, instance, p.nodeId, p.at, effects)
  const to = p.event === 'done' ? (p.status === 'success' ? Pos.Succeeded : Pos.Failed) : p.event === 'ack' ? Pos.Acked : Pos.Started
  noteProgress(state, config, instance, job, p.nodeId, to, now, effects, p.event === 'start' || p.event === 'renew' ? (p.leaseUntil ?? Number.MAX_SAFE_INTEGER) : undefined)
}

/** The instance's acks as a set, built once per instance record. */
function ackSet(state: CoordinatorState, instance: InstanceRecord): Set<string> {
  let entry = state.derived.acks.get(instance.id)
  if (!entry || entry.of !== instance) {
    entry = { of: instance, set: new Set(instance.acks ?? []) }
    state.derived.acks.set(instance.id, entry)
  }
  return entry.set
}

function quorumOf(job: JobRecord): { need: number; total: number; timeoutMs: number } | undefined {
  return quorumRule(job.template.chorus, job.resolved.groups.reduce((n, g) => n + g.nodes.length, 0))
}

/** The quorum window closed without enough acknowledgements and no node started: nothing will run. */
function failQuorum(state: CoordinatorState, job: JobRecord, instance: InstanceRecord, now: number, puts: { key: string; value: unknown }[]): void {
  const acks = new Set(instance.acks ?? [])
  const missing = job.resolved.groups.flatMap((g) => g.nodes).filter((n) => !acks.has(n))
  instance.status = 'quorum_failed'
  state.settled.add(instance.id)
  instance.quorumMissing = missing
  instance.reason = `quorum failed: ${acks.size} of ${quorumOf(job)!.total} targets acknowledged, ${quorumOf(job)!.need} needed; no acknowledgement from ${missing.join(', ')}`
  instance.updatedAt = now
  state.live.delete(instance.id)
  state.openRuns.delete(instance.id)
  for (const runId of instance.runIds) {
    const run = state.runs.get(runId)
    if (!run || run.status !== 'pending') continue
    setRunStatus(state, run, 'skipped')
    run.reason = acks.has(run.nodeId) ? 'not started: quorum failed' : 'not started: quorum failed; this node never acknowledged the job (unreachable?)'
    run.reasonCode = 'quorum_failed'
    puts.push({ key: key.run(runId), value: run })
  }
  puts.push({ key: key.instance(instance.id), value: instance })
  maybeComplete(state, job)
  puts.push({ key: key.job(job.jobId), value: job })
}

/** Whether the job's resolved targets include the node. */
function targets(state: CoordinatorState, job: JobRecord, nodeId: string): boolean {
  return placeIn(state, job, nodeId) !== undefined
}

/** The signed definitions and states an agent should hold and does not: active or recent jobs that target it. */
export function envelopesFor(state: CoordinatorState, nodeId: string, now: number, ttlMs: number, known: readonly { jobId: string; version: number }[] = []): SignedEnvelope[] {
  const held = new Map(known.map((k) => [k.jobId, k.version]))
  const out: SignedEnvelope[] = []
  for (const job of state.jobs.values()) {
    const live = job.status === 'active' || job.createdAt + ttlMs > now
    if (!live || !targets(state, job, nodeId)) continue
    const version = held.get(job.jobId)
    if (version === undefined) out.push(job.envelope)
    const stateWorthSending = job.jobState.version > 1 || job.jobState.globalExceptions.length > 0
    if (stateWorthSending && (version ?? 0) < job.jobState.version) out.push(job.stateEnvelope)
  }
  return out.slice(-MAX_SYNC_JOBS)
}

/**
 * The registered node a connection belongs to, when the transport authenticated it: the peer id
 * libp2p's noise handshake proved is the one derived from the node's registered key.
 */
function nodeOnAuthenticatedPeer(state: CoordinatorState, peerId: string): NodeRecord | undefined {
  const nodeId = state.byPeer.get(peerId)
  const node = nodeId === undefined ? undefined : state.nodes.get(nodeId)
  return node && node.peerId === peerId && peerIdOf(node.publicKey) === peerId ? node : undefined
}

function onRpc(state: CoordinatorState, config: CoordinatorConfig, requestId: string, envelope: unknown, peerId: string, now: number, effects: CoordinatorEffect[], history?: { run?: RunRecord; instance?: InstanceRecord }): void {
  // Syncs (most of the traffic: watches, periodic syncs) from a transport-authenticated node skip
  // the second signature check; hellos and results (stored as evidence) are always verified.
  const peer = nodeOnAuthenticatedPeer(state, peerId)
  const fast = peer ? openFromAuthenticatedPeer(envelope, peer.publicKey) : undefined
  const opened = fast?.ok && fast.body.type === 'sync' && fast.body.nodeId === peer!.nodeId ? fast : open(envelope)
  if (!opened.ok) {
    effects.push({ type: 'log', level: 'warn', msg: `refused rpc: ${opened.reason}`, fields: { peerId } })
    effects.push(reply(state, config, requestId, { ok: false, error: opened.reason }))
    return
  }
  const body = opened.body
  switch (body.type) {
    case 'hello':
      if (peerIdOf(opened.signer) !== peerId || body.peerId !== peerId) {
        effects.push({ type: 'log', level: 'warn', msg: 'refused hello: not sent over the connection of its signing key', fields: { nodeId: body.nodeId, peerId } })
        effects.push(reply(state, config, requestId, { ok: false, error: 'a hello must come over the connection of the key that signs it' }))
        return
      }
      onHello(state, config, requestId, body, opened.signer, now, effects)
      return
    case 'result':
      onResult(state, config, requestId, body, opened.signer, now, effects, history)
      return
    case 'sync': {
      const node = state.nodes.get(body.nodeId)
      if (!node || node.publicKey !== opened.signer) {
        effects.push(reply(state, config, requestId, { ok: false, error: `unknown node ${body.nodeId} or key mismatch; send hello first` }))
        return
      }
      touch(state, node, now, effects)
      noteGated(state, config, body.nodeId, body.gated, now, effects)
      const jobs = envelopesFor(state, body.nodeId, now, config.jobTtlMs, body.known)
      const tickets = ticketsFor(state, config, node, jobs, body.known)
      const renew = certificateDue(body.certExpiresAt, now) ? { certificate: certificateFor(config.identity, node, now) } : {}
      const extra = { ...renew, ...revocationsFor(state, body.revocations) }
      if (body.watch && jobs.length === 0 && tickets.length === 0 && Object.keys(extra).length === 0 && tryHold(state, config, requestId, body.nodeId, body.gated, now)) return
      effects.push(reply(state, config, requestId, { ok: true, jobs, tickets, checkpoints: checkpointsFor(state, config, body.nodeId, now), ...extra }))
      return
    }
    default:
      effects.push(reply(state, config, requestId, { ok: false, error: `unexpected message type ${body.type}` }))
  }
}

/** Tickets for the jobs a sync reply sends and those the node holds without its ticket (bounded). */
function ticketsFor(state: CoordinatorState, config: CoordinatorConfig, node: NodeRecord, sent: SignedEnvelope[], known: SyncRequestBody['known']): SignedEnvelope[] {
  const ids = new Set<string>()
  for (const k of known) if (!k.ticket) ids.add(k.jobId)
  for (const env of sent) {
    const o = open(env, [config.identity.publicKey])
    if (o.ok && o.body.type === 'job') ids.add(o.body.jobId)
  }
  const out: SignedEnvelope[] = []
  for (const id of ids) {
    const job = state.jobs.get(id)
    if (job) out.push(ticketFor(state, config, job, node))
    if (out.length >= MAX_SYNC_JOBS) break
  }
  return out
}

/** Node records written at most this often for a mere contact (lastSeenAt is kept in memory on every one). */
export const NODE_TOUCH_PERSIST_MS = 60_000

function touch(state: CoordinatorState, node: NodeRecord, now: number, effects: CoordinatorEffect[]): void {
  node.lastSeenAt = now
  state.connected.add(node.nodeId)
  if (now - (state.touchPersistedAt.get(node.nodeId) ?? 0) < NODE_TOUCH_PERSIST_MS) return
  state.touchPersistedAt.set(node.nodeId, now)
  effects.push({ type: 'persist', puts: [{ key: key.node(node.nodeId), value: node }], dels: [] })
}

function onHello(state: CoordinatorState, config: CoordinatorConfig, requestId: string, body: HelloBody, signer: string, now: number, effects: CoordinatorEffect[]): void {
  const existing = state.nodes.get(body.nodeId)
  const refuse = (reason: string) => {
    effects.push({ type: 'log', level: 'warn', msg: `refused hello: ${reason}`, fields: { nodeId: body.nodeId, peerId: body.peerId } })
    effects.push(reply(state, config, requestId, { ok: false, error: reason }))
  }
  if (existing && existing.publicKey !== signer) return refuse(`node id ${body.nodeId} is enrolled with another key`)
  if (existing && !helloAllowed(state, body.nodeId, now)) return refuse(`too many hellos from ${body.nodeId}: at most ${MAX_HELLOS_PER_WINDOW} a minute; redial later`)
  if (existing) return registerContact(state, config, requestId, existing, { body, signer, attributes: existing.attributes, enrolledWith: existing.enrolledWith }, now, effects)
  const holder = state.byPeer.get(peerIdOf(signer))
  if (holder !== undefined && holder !== body.nodeId) return refuse(`this key is enrolled as node ${holder}; one key holds one node id`)
  const a = admit(state.members, body, signer, config.requireApproval === true, now)
  if (a.kind === 'refused') return refuse(a.reason)
  if (a.puts.length > 0) effects.push({ type: 'persist', puts: a.puts, dels: [] })
  // A node's enrolment is a state change like an operator's: audited under the token it used.
  if (a.puts.length > 0) effects.push(auditPut(now, requestId, { token: `enrollment:${a.kind === 'pending' ? a.record.enrollment : a.enrollment.id}`, role: 'node', action: a.kind === 'pending' ? 'node.enroll_request' : 'node.enroll', object: body.nodeId, outcome: a.kind === 'pending' ? 'awaits approval' : 'ok' }))
  if (a.kind === 'pending') {
    if (a.puts.length > 0) effects.push({ type: 'log', level: 'info', msg: 'enrolment awaits approval (chorus nodes approve)', fields: { nodeId: body.nodeId, enrollment: a.record.enrollment } })
    effects.push(reply(state, config, requestId, { ok: false, pending: true, error: `enrolment of ${body.nodeId} awaits an admin's approval (chorus nodes approve ${body.nodeId})` }))
    return
  }
  effects.push({ type: 'log', level: 'info', msg: 'node enrolled', fields: { nodeId: body.nodeId, peerId: body.peerId, enrollment: a.enrollment.id } })
  registerContact(state, config, requestId, undefined, { body, signer, attributes: a.attributes, enrolledWith: a.enrollment.id }, now, effects)
}

/** Hellos one enrolled node may send in HELLO_WINDOW_MS (an agent sends one per connection); more are refused and change nothing. */
export const MAX_HELLOS_PER_WINDOW = 12
export const HELLO_WINDOW_MS = 60_000

function helloAllowed(state: CoordinatorState, nodeId: string, now: number): boolean {
  const w = state.hellos.get(nodeId)
  if (!w || now - w.since >= HELLO_WINDOW_MS) { state.hellos.set(nodeId, { since: now, count: 1 }); return true }
  w.count++
  return w.count <= MAX_HELLOS_PER_WINDOW
}

/** Records an enrolled node's hello (facts, addresses, skills) and answers with its certificate and mesh peers. */
function registerContact(state: CoordinatorState, config: CoordinatorConfig, requestId: string, existing: NodeRecord | undefined, hello: { body: HelloBody; signer: string; attributes?: Record<string, string>; enrolledWith?: string }, now: number, effects: CoordinatorEffect[]): void {
  const { body, attributes, enrolledWith } = hello
  const node: NodeRecord = {
    nodeId: body.nodeId, publicKey: hello.signer, peerId: body.peerId, facts: factsWith(body.facts, attributes), agentVersion: body.agentVersion,
    addrs: body.addrs, skills: body.skills, firstSeenAt: existing?.firstSeenAt ?? now, lastSeenAt: now,
    ...(attributes && Object.keys(attributes).length > 0 ? { attributes } : {}), ...(enrolledWith ? { enrolledWith } : {}),
  }
  state.nodes.set(body.nodeId, node)
  if (!existing && state.pool.length === state.nodes.size - 1) state.pool.push(body.nodeId)
  if (!existing) state.hellos.set(body.nodeId, { since: now, count: 1 })
  if (existing && existing.peerId !== node.peerId) state.byPeer.delete(existing.peerId)
  state.byPeer.set(node.peerId, node.nodeId)
  state.touchPersistedAt.set(node.nodeId, now)
  state.connected.add(body.nodeId)
  effects.push({ type: 'persist', puts: [{ key: key.node(body.nodeId), value: node }], dels: [] })
  effects.push(reply(state, config, requestId, { ok: true, peers: meshPeersFor(state, body.nodeId), certificate: certificateFor(config.identity, node, now), ...revocationsFor(state, 0) }))
}

/** The signed revocation list for a reply, when the node holds an older version. */
function revocationsFor(state: CoordinatorState, heldVersion: number): { revocations?: SignedEnvelope } {
  const r = state.members.revocations
  return r && r.body.version > heldVersion ? { revocations: r.envelope } : {}
}

type MembershipEvent = Extract<CoordinatorEvent, { type: 'create_enrollment' | 'delete_enrollment' | 'revoke_node' | 'approve_node' | 'reject_node' }>

function onMembership(state: CoordinatorState, config: CoordinatorConfig, event: MembershipEvent, now: number, effects: CoordinatorEffect[]): void {
  const m = state.members
  const answer = (outcome: Extract<CoordinatorEffect, { type: 'reply_admin' }>['outcome'], puts: { key: string; value: unknown }[] = [], dels: string[] = []) => {
    if (puts.length > 0 || dels.length > 0) effects.push({ type: 'persist', puts, dels })
    effects.push({ type: 'reply_admin', requestId: event.requestId, outcome })
  }
  switch (event.type) {
    case 'create_enrollment': {
      const e = event.enrollment
      if (m.enrollments.has(e.id)) return answer({ ok: false, status: 409, error: `an enrolment token named ${e.id} exists; choose another --name or delete it` })
      if (m.enrollments.size >= MAX_ENROLLMENTS) return answer({ ok: false, status: 409, error: `at most ${MAX_ENROLLMENTS} enrolment tokens; delete used ones first` })
      m.enrollments.set(e.id, e)
      return answer({ ok: true, detail: enrollmentSummary(e) }, [{ key: memberKey.enrollment(e.id), value: e }])
    }
    case 'delete_enrollment':
      if (!m.enrollments.delete(event.id)) return answer({ ok: false, status: 404, error: `no enrolment token ${event.id}` })
      return answer({ ok: true, detail: { deleted: event.id } }, [], [memberKey.enrollment(event.id)])
    case 'approve_node': {
      const p = m.pending.get(event.nodeId)
      if (!p) return answer({ ok: false, status: 404, error: `no enrolment of ${event.nodeId} awaits approval (chorus nodes pending)` })
      if (state.nodes.has(p.nodeId)) return answer({ ok: false, status: 409, error: `node id ${p.nodeId} is enrolled already` })
      m.pending.delete(p.nodeId)
      const node: NodeRecord = { nodeId: p.nodeId, publicKey: p.key, peerId: p.peerId, facts: factsWith(p.facts, p.attributes), agentVersion: '', addrs: [], skills: {}, firstSeenAt: now, lastSeenAt: now, attributes: p.attributes, enrolledWith: p.enrollment }
      state.nodes.set(node.nodeId, node)
      state.byPeer.set(node.peerId, node.nodeId)
      effects.push({ type: 'log', level: 'info', msg: 'node enrolled (approved)', fields: { nodeId: node.nodeId } })
      return answer({ ok: true, detail: { nodeId: node.nodeId, approved: true } }, [{ key: key.node(node.nodeId), value: node }], [memberKey.pending(node.nodeId)])
    }
    case 'reject_node':
      if (!m.pending.delete(event.nodeId)) return answer({ ok: false, status: 404, error: `no enrolment of ${event.nodeId} awaits approval (chorus nodes pending)` })
      return answer({ ok: true, detail: { nodeId: event.nodeId, rejected: true } }, [], [memberKey.pending(event.nodeId)])
    case 'revoke_node': {
      const node = state.nodes.get(event.nodeId)
      if (!node) return answer({ ok: false, status: 404, error: `no enrolled node ${event.nodeId} (chorus nodes)` })
      const puts = revoke(m, config.identity, node, now)
      state.nodes.delete(node.nodeId)
      state.byPeer.delete(node.peerId)
      state.connected.delete(node.nodeId)
      state.hellos.delete(node.nodeId)
      for (const w of state.watches.queue) if (w.nodeId === node.nodeId) answerWatcher(state, config, w, now, effects)
      closeRunsOf(state, config, node.nodeId, `node revoked at ${new Date(now).toISOString()}: its results are refused`, now, effects, puts)
      effects.push({ type: 'log', level: 'warn', msg: 'node revoked', fields: { nodeId: node.nodeId, peerId: node.peerId } })
      effects.push({ type: 'publish', envelope: m.revocations!.envelope })
      return answer({ ok: true, detail: { nodeId: node.nodeId, peerId: node.peerId, revokedAt: new Date(now).toISOString() } }, puts, [key.node(node.nodeId)])
    }
  }
}

/** Ends a node's open runs in live instances (revocation): they count as done, not succeeded. */
function closeRunsOf(state: CoordinatorState, config: CoordinatorConfig, nodeId: string, reason: string, now: number, effects: CoordinatorEffect[], puts: { key: string; value: unknown }[]): void {
  for (const id of state.live) {
    const instance = state.instances.get(id)
    const job = instance && state.jobs.get(instance.jobId)
    const run = instance && state.runs.get(runIdFor(instance.id, nodeId))
    if (!instance || !job || !run || TERMINAL.has(run.status)) continue
    setRunStatus(state, run, 'skipped')
    run.reason = reason
    run.reasonCode = 'revoked'
    noteProgress(state, config, instance, job, nodeId, Pos.Failed, now, effects)
    const before = instance.status
    settleInstance(state, instance, now)
    puts.push({ key: key.run(run.runId), value: run })
    if (instance.status !== before) puts.push({ key: key.instance(instance.id), value: instance }, { key: key.job(job.jobId), value: job })
  }
}

/** Agents introduced to a new agent, and the positions drawn from the pool to find them (some are itself, or have no address). */
export const MESH_PEERS_INTRODUCED = 3
export const MESH_DRAWS = 12

/**
 * A few other agents for a new agent to connect to, so gossip keeps flowing when the
 * coordinator is away. Chosen deterministically (positions in the pool of registered nodes
 * drawn from a hash of the node id) so every node gets a spread of different peers without the
 * coordinator keeping any randomness; O(1) per hello, whatever the fleet size.
 */
function meshPeersFor(state: CoordinatorState, nodeId: string): PeerInfo[] {
  const pool = meshPool(state)
  const out: PeerInfo[] = []
  const seen = new Set<string>([nodeId])
  for (let k = 0; k < MESH_DRAWS && out.length < Math.min(MESH_PEERS_INTRODUCED, MAX_PEERS_SHARED) && pool.length > 0; k++) {
    const n = state.nodes.get(pool[fnv1a(`${nodeId}|${k}`) % pool.length]!)
    if (!n || seen.has(n.nodeId) || n.addrs.length === 0) continue
    seen.add(n.nodeId)
    out.push({ peerId: n.peerId, addrs: n.addrs })
  }
  return out
}

/** Node ids in registration order (derived, not persisted: a restored coordinator lists them in key order). */
function meshPool(state: CoordinatorState): string[] {
  if (state.pool.length !== state.nodes.size) state.pool = [...state.nodes.keys()]
  return state.pool
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}

/**
 * How far past this coordinator's clock an occurrence may lie for a result (or progress) to
 * create its instance: the clock skew allowed between agents and coordinator, in milliseconds.
 * A later occurrence is refused and leaves nothing behind.
 */
export const OCCURRENCE_GRACE_MS = 5 * 60_000

/** Whether `at` is an occurrence of the job: of its schedule from its creation on (agents start there), or its creation for an immediate job. */
function realOccurrence(state: CoordinatorState, job: JobRecord, at: number): boolean {
  if (at < job.createdAt) return false
  if (job.template.scheduleRule === 'immediate') return at === job.createdAt
  const sched = scheduleOf(state, job)
  return !!sched && occurrencesBetween(sched.schedule, at, at + 1, 1).includes(at)
}

/** Whether the coordinator may create the instance of an occurrence now: a real one, no later than now + OCCURRENCE_GRACE_MS. */
function dueOccurrence(state: CoordinatorState, job: JobRecord, at: number, now: number): boolean {
  return at <= now + OCCURRENCE_GRACE_MS && realOccurrence(state, job, at)
}

/** `stored`: the run is a finished instance's, read from the store (with its instance record, when found). */
type ResultVerdict = { run: RunRecord; stored?: InstanceRecord } | { job: JobRecord } | { error: string; retry?: true }

/**
 * Whether a result is accepted, decided before anything is created or changed: it comes from the
 * run's target (a node of the job's resolved targets), for a run that exists, or for the instance
 * of a due occurrence not created yet. Returns the run, or the job whose instance must be created
 * first, or why it is refused (`retry`: an occurrence that is not due yet, which will be).
 */
function acceptResult(state: CoordinatorState, config: CoordinatorConfig, body: ResultBody, now: number, history?: { run?: RunRecord; instance?: InstanceRecord }): ResultVerdict {
  const refused = { error: `run ${body.runId} is not expected from node ${body.nodeId}` }
  if (runIdFor(body.instanceId, body.nodeId) !== body.runId) return refused
  const run = state.runs.get(body.runId)
  if (run) return run.nodeId === body.nodeId && run.instanceId === body.instanceId ? { run } : refused
  const job = state.jobs.get(body.jobId)
  if (!job || state.instances.has(body.instanceId) || instanceIdFor(job.jobId, body.occurrenceAt) !== body.instanceId) return refused
  if (hadInstance(job, body.occurrenceAt)) {
    // A finished instance's run (not in memory): as the store holds it, or refused.
    const stored = history?.run
    if (stored && stored.runId === body.runId && stored.nodeId === body.nodeId && stored.instanceId === body.instanceId) return { run: stored, stored: history?.instance?.id === body.instanceId ? history.instance : undefined }
    if (!history && config.dropFinished) return { error: `run ${body.runId} belongs to a finished instance; send it again`, retry: true }
    return refused
  }
  if (job.template.scheduleRule !== 'immediate' && (job.history.ahead ?? []).length >= MAX_AHEAD_OCCURRENCES) return { error: `job ${job.jobId} has ${MAX_AHEAD_OCCURRENCES} occurrences ahead of the coordinator's clock; send it again later`, retry: true }
  if (!targets(state, job, body.nodeId)) return { error: `node ${body.nodeId} is not a target of job ${job.jobId}` }
  if (!realOccurrence(state, job, body.occurrenceAt)) return refused
  if (body.occurrenceAt > now + OCCURRENCE_GRACE_MS) return { error: `occurrence ${new Date(body.occurrenceAt).toISOString()} of job ${job.jobId} is not due yet (more than ${OCCURRENCE_GRACE_MS / 60_000} min ahead of the coordinator's clock); send it again later`, retry: true }
  return { job }
}

function onResult(state: CoordinatorState, config: CoordinatorConfig, requestId: string, body: ResultBody, signer: string, now: number, effects: CoordinatorEffect[], history?: { run?: RunRecord; instance?: InstanceRecord }): void {
  const node = state.nodes.get(body.nodeId)
  const revoked = state.members.revoked.get(body.nodeId)
  if (revoked && revoked.key === signer && !(node && node.publicKey === signer)) {
    effects.push({ type: 'log', level: 'warn', msg: 'refused a result from a revoked node', fields: { jobId: body.jobId, instanceId: body.instanceId, runId: body.runId, nodeId: body.nodeId } })
    // Acknowledged so that it is not sent again: it will never be accepted.
    effects.push(reply(state, config, requestId, { ok: false, error: `node ${body.nodeId} is revoked: its results are refused`, ackRunIds: [body.runId] }))
    return
  }
  if (!node || node.publicKey !== signer) {
    effects.push(reply(state, config, requestId, { ok: false, error: `result for node ${body.nodeId} is not signed by that node's registered key; send hello first` }))
    return
  }
  const verdict = acceptResult(state, config, body, now, history)
  if ('error' in verdict) {
    // Refused: nothing is created, changed or written.
    effects.push({ type: 'log', level: 'warn', msg: 'refused a result for a run this coordinator does not expect', fields: { jobId: body.jobId, instanceId: body.instanceId, runId: body.runId, nodeId: body.nodeId, reason: verdict.error } })
    // Acknowledged unless it will be accepted later: the agent must not retry a result that never can.
    effects.push(reply(state, config, requestId, { ok: false, error: verdict.error, ...('retry' in verdict ? {} : { ackRunIds: [body.runId] }) }))
    return
  }
  touch(state, node, now, effects)
  const early: { key: string; value: unknown }[] = []
  if ('job' in verdict) {
    // An occurrence the agent reached before this coordinator did (clock skew, or the coordinator was down).
    materializeInstance(state, config, verdict.job, body.occurrenceAt, now, early)
    early.push({ key: key.job(verdict.job.jobId), value: verdict.job })
  }
  const run = 'run' in verdict ? verdict.run : state.runs.get(body.runId)!
  if (run.receivedAt !== undefined) {
    // Stored once already: a re-send after a lost acknowledgement. Acknowledge again.
    effects.push({ type: 'log', level: 'debug', msg: 'duplicate result acknowledged again', fields: { jobId: body.jobId, instanceId: body.instanceId, runId: body.runId, nodeId: body.nodeId } })
    effects.push(reply(state, config, requestId, { ok: true, ackRunIds: [body.runId] }))
    return
  }
  const statusBefore0 = run.status
  setRunStatus(state, run, body.status)
  {
    const inst = state.instances.get(run.instanceId)
    const job = inst && state.jobs.get(inst.jobId)
    if (inst && job) noteProgress(state, config, inst, job, body.nodeId, body.status === 'success' ? Pos.Succeeded : Pos.Failed, now, effects)
  }
  run.startedAt = body.startedAt
  run.finishedAt = body.finishedAt
  run.receivedAt = now
  run.steps = body.steps
  if (body.reason) run.reason = body.reason
  else delete run.reason
  if (body.reasonCode) run.reasonCode = body.reasonCode
  else delete run.reasonCode
  const puts: { key: string; value: unknown }[] = [...early, { key: key.run(run.runId), value: run }]
  const stored = 'stored' in verdict ? verdict.stored : undefined
  if (stored?.counts) {
    // A late result for a finished instance: its stored counts follow, its status does not (as in memory).
    stored.counts[statusBefore0] = (stored.counts[statusBefore0] ?? 1) - 1
    if (stored.counts[statusBefore0]! <= 0) delete stored.counts[statusBefore0]
    stored.counts[run.status] = (stored.counts[run.status] ?? 0) + 1
    puts.push({ key: key.instance(stored.id), value: stored })
  }
  const instance = state.instances.get(run.instanceId)
  if (instance) {
    // The instance record is written when its status changes, not on every result (it lists every run).
    instance.updatedAt = now
    const job = state.jobs.get(instance.jobId)
    const jobStatusBefore = job?.status
    const statusBefore = instance.status
    settleInstance(state, instance, now)
    if (instance.status !== statusBefore) puts.push({ key: key.instance(instance.id), value: instance })
    else if (instance.status !== 'running' && instance.counts) { instance.counts = runCounts(state, instance); puts.push({ key: key.instance(instance.id), value: instance }) }
    if (job && job.status !== jobStatusBefore) puts.push({ key: key.job(job.jobId), value: job })
  }
  // Stored durably before the acknowledgement leaves: an agent forgets a result only once it is safe here.
  effects.push({ type: 'persist', puts, dels: [] })
  effects.push({ type: 'log', level: 'info', msg: 'result stored', fields: { jobId: run.jobId, instanceId: run.instanceId, runId: body.runId, nodeId: body.nodeId, status: body.status, instanceStatus: instance?.status } })
  effects.push(reply(state, config, requestId, { ok: true, ackRunIds: [body.runId] }))
}

/** Changes a run's status, keeping the count of its instance's open runs. */
function setRunStatus(state: CoordinatorState, run: RunRecord, status: RunRecord['status']): void {
  const wasOpen = !TERMINAL.has(run.status)
  run.status = status
  if (wasOpen && TERMINAL.has(status)) {
    const open = state.openRuns.get(run.instanceId)
    if (open !== undefined) state.openRuns.set(run.instanceId, open - 1)
  }
}

/**
 * An instance is decided once every run is terminal. It succeeds when every group meets
 * every success criterion: a `success` criterion needs at least numRuns successful runs; a
 * `failure` criterion is a failure budget, met while fewer than numRuns runs failed. A group
 * without criteria needs all its runs to succeed. Once decided the status does not change
 * (as in Courier: later reports from nodes update the run, not the instance).
 */
export function settleInstance(state: CoordinatorState, instance: InstanceRecord, now: number): void {
  if (instance.status !== 'running') return
  if ((state.openRuns.get(instance.id) ?? 0) > 0) return
  const runs = instance.runIds.map((id) => state.runs.get(id)!).filter(Boolean)
  if (!runs.every((r) => TERMINAL.has(r.status))) return
  const job = state.jobs.get(instance.jobId)
  if (job && quorumOf(job) && runs.every((r) => r.status === 'skipped' || r.status === 'timeout') && runs.some((r) => r.reasonCode === 'quorum_failed')) {
    failQuorum(state, job, instance, now, [])
    return
  }
  let ok = true
  job?.template.target.groups.forEach((g, gi) => {
    const groupRuns = runs.filter((r) => r.group === gi)
    const n = groupRuns.length
    if (g.successCriteria.length === 0) {
      ok &&= groupRuns.every((r) => r.status === 'success')
      return
    }
    for (const c of g.successCriteria) {
      const threshold = thresholdFor(c.numRuns, n)
      if (c.status === 'success') ok &&= groupRuns.filter((r) => r.status === 'success').length >= threshold
      else ok &&= groupRuns.filter((r) => r.status !== 'success').length < Math.max(1, threshold)
    }
  })
  instance.status = ok ? 'success' : 'failure'
  instance.updatedAt = now
  state.settled.add(instance.id)
  state.live.delete(instance.id)
  state.openRuns.delete(instance.id)
  if (job) maybeComplete(state, job)
}

/** The job's live instances (O(live)). */
function liveOf(state: CoordinatorState, jobId: string): string[] {
  const out: string[] = []
  for (const id of state.live) if (state.instances.get(id)?.jobId === jobId && state.instances.get(id)?.status === 'running') out.push(id)
  return out
}

/** A job is completed once it will have no new instance and none is running. */
function maybeComplete(state: CoordinatorState, job: JobRecord): void {
  if (job.status !== 'active') return
  if (liveOf(state, job.jobId).length > 0) return
  if (job.template.scheduleRule !== 'immediate') {
    const sched = state.schedules.get(job.jobId) ?? null
    if (!sched || job.cursor === undefined) return
    if (nextOccurrences(sched.schedule, job.cursor, 1).length > 0) return
  }
  job.status = 'completed'
}

function onTick(state: CoordinatorState, config: CoordinatorConfig, now: number, effects: CoordinatorEffect[]): void {
  if (state.dirty.size > 0) {
    const puts = [...state.dirty].flatMap((id) => { const inst = state.instances.get(id); return inst ? [{ key: key.instance(id), value: inst }] : [] })
    state.dirty.clear()
    effects.push({ type: 'persist', puts, dels: [] })
  }
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
  for (const id of state.tallies.keys()) if (!state.live.has(id)) { state.tallies.delete(id); forgetInstance(state.watches, id) }
  for (const w of expired(state.watches, now)) answerWatcher(state, config, w, now, effects)
  for (const id of [...state.live]) {
    const instance = state.instances.get(id)
    if (!instance || instance.status !== 'running') {
      state.live.delete(id)
      state.tallies.delete(id)
      forgetInstance(state.watches, id)
      continue
    }
    const tally = state.tallies.get(id)
    const tallyJob = state.jobs.get(instance.jobId)
    if (tally && tallyJob && tallyJob.template.chorus?.vanishedHolder === 'release' && releaseVanished(tallyJob, instance, tally, now)) {
      wake(state, config, instance, tallyJob, tally, now, effects)
    }
    const job0 = state.jobs.get(instance.jobId)
    const q = job0 && quorumOf(job0)
    if (job0 && q && now >= instance.occurrenceAt + q.timeoutMs && (instance.acks ?? []).length < q.need
      && instance.runIds.every((r) => state.runs.get(r)?.status === 'pending' || state.runs.get(r)?.status === 'skipped')) {
      const puts: { key: string; value: unknown }[] = []
      failQuorum(state, job0, instance, now, puts)
      effects.push({ type: 'persist', puts, dels: [] })
      effects.push({ type: 'log', level: 'warn', msg: 'quorum failed', fields: { jobId: instance.jobId, instanceId: instance.id, missing: instance.quorumMissing } })
      continue
    }
    if (instance.deadlineAt > now) continue
    const puts: { key: string; value: unknown }[] = []
    for (const runId of instance.runIds) {
      const run = state.runs.get(runId)
      if (!run || TERMINAL.has(run.status)) continue
      setRunStatus(state, run, 'timeout')
      run.reason = 'no result before the group timeout: the node was unreachable or still running'
      run.reasonCode = 'no_result'
      puts.push({ key: key.run(runId), value: run })
    }
    settleInstance(state, instance, now)
    puts.push({ key: key.instance(instance.id), value: instance })
    const job = state.jobs.get(instance.jobId)
    if (job) puts.push({ key: key.job(job.jobId), value: job })
    effects.push({ type: 'persist', puts, dels: [] })
    effects.push({ type: 'log', level: 'warn', msg: 'instance deadline passed', fields: { jobId: instance.jobId, instanceId: instance.id, status: instance.status } })
  }
}

/** A manual run: the stored job's template submitted again as an immediate job under a new id. */
function onRunJob(state: CoordinatorState, config: CoordinatorConfig, event: Extract<RequestEvent, { type: 'run_job' }>, now: number, effects: CoordinatorEffect[]): void {
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
function onDeleteJob(state: CoordinatorState, event: Extract<RequestEvent, { type: 'delete_job' }>, effects: CoordinatorEffect[]): void {
  const answer = (outcome: Extract<CoordinatorEffect, { type: 'reply_admin' }>['outcome']) => effects.push({ type: 'reply_admin', requestId: event.requestId, outcome })
  const job = state.jobs.get(event.jobId)
  if (!job) return void answer({ ok: false, status: 404, error: `no job ${event.jobId}` })
  const live = liveOf(state, job.jobId)
  if (live.length > 0) return void answer({ ok: false, status: 409, error: `job ${job.jobId} has ${live.length} live instance(s) (${live.slice(0, 5).join(', ')}): wait for them or cancel the job (chorus job cancel ${job.jobId}), then delete it` })
  if (job.status === 'active' && job.template.scheduleRule !== 'immediate') return void answer({ ok: false, status: 409, error: `job ${job.jobId} is recurring and active: cancel it first (chorus job cancel ${job.jobId})` })
  // Instances in memory go now; the rest of its history (the idx/job/ index) the runtime prunes in batches after.
  const dels = [key.job(job.jobId)]
  for (const inst of [...state.instances.values()]) {
    if (inst.jobId !== job.jobId) continue
    const runs = inst.runIds.map((id) => state.runs.get(id)).filter((r): r is RunRecord => r !== undefined)
    dels.push(...historyKeysOf(inst, runs))
    dropInstance(state, inst)
  }
  state.jobs.delete(job.jobId)
  state.schedules.delete(job.jobId)
  state.derived.jobs.delete(job.jobId)
  effects.push({ type: 'persist', puts: [], dels })
  answer({ ok: true, detail: { deleted: job.jobId, instances: job.history.count } })
}
