// The coordinator core's state, events and effects (coordinator/core.ts is the dispatcher that
// steps them). Types, bounds and the empty state only: what the core decides lives in
// registry.ts, jobs.ts, instances.ts, tally.ts, results.ts, rpc.ts and admin.ts.
import type { Role } from '../protocol/api.js'
import type { GlobalException, JobSchedule } from '../protocol/jobschedule.js'
import type { Identity } from '../protocol/keys.js'
import type { ReasonCode } from '../protocol/reasons.js'
import type { JobTemplate } from '../protocol/template.js'
import type { CheckpointBody, JobBody, JobStateBody, SignedEnvelope, StepOutcome } from '../protocol/wire.js'
import { type EnrollmentRecord, type Membership, emptyMembership } from './members.js'
import type { AttributeConstraint, SkillConstraint, TargetWarning } from './targeting.js'
import { type Watches, emptyWatches } from './watch.js'

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
  /** Signed tickets by node id, with the key they were signed for (one per registered node that asked, at most). */
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
export enum Pos { Unknown = 0, Acked = 1, Started = 2, Succeeded = 3, Failed = 4, Released = 5 }

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
  return {
    jobs: new Map(), instances: new Map(), runs: new Map(), nodes: new Map(), globals: new Map(), lists: new Map(), filters: new Map(),
    connected: new Set(), live: new Set(), openRuns: new Map(), dirty: new Set(), schedules: new Map(), tallies: new Map(), watches: emptyWatches(),
    byPeer: new Map(), pool: [], tokens: new Map(), tokenByHash: new Map(), members: emptyMembership(), hellos: new Map(), touchPersistedAt: new Map(),
    settled: new Set(), finished: new Set(), derived: emptyDerivedCaches(),
  }
}

export const TERMINAL = new Set(['success', 'failure', 'timeout', 'skipped'])

/** Instances a recurring job gets per tick at most (a coordinator back after a long outage catches up over several ticks). */
export const MAX_INSTANCES_PER_TICK = 1_000

/** A saved node list: targets by name (`chorus lists`). */
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
