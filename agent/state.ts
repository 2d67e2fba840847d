// The agent core's state, events and effects (agent/core.ts is the dispatcher that steps them).
// Types and the store keys only: what the core decides lives in jobs.ts, turns.ts, attempts.ts
// and link.ts.
import type { ReasonCode } from '../protocol/reasons.js'
import type { Identity } from '../protocol/keys.js'
import type { AllowlistConfig } from './allowlist.js'
import type { InterpreterOutcome } from './steps.js'
import { emptyAgentMembership, type AgentMembership } from './members.js'
import type { JobSchedule } from '../protocol/jobschedule.js'
import type { Knowledge } from '../protocol/gate.js'
import type { JobBody, JobStateBody, SignedEnvelope, StepOutcome, TicketBody } from '../protocol/wire.js'

export type Os = 'linux' | 'darwin' | 'windows'

export interface AgentConfig {
  nodeId: string
  /** The only key whose job definitions and replies this agent accepts. */
  coordinatorKey: string
  /** Signs this agent's results and hellos (ed25519 signatures are deterministic). */
  identity: Identity
  os: Os
  /** First resend delay for an unacknowledged result; doubles up to resendMaxMs. */
  resendInitialMs: number
  resendMaxMs: number
  /** Job definitions are kept this long after they expire, then forgotten. */
  jobRetentionMs: number
  /** What this node permits (interpreters and command patterns); anything else never runs. */
  allow: AllowlistConfig
  /** Installed interpreter skills and their versions, by interpreter name. */
  skills: Record<string, string[]>
}

export const DEFAULT_AGENT_TIMING = {
  resendInitialMs: 1_000,
  resendMaxMs: 30_000,
  jobRetentionMs: 24 * 3_600_000,
} as const

/** Version reported for the built-in interpreters: it satisfies every Courier sample's skill range. */
export const BUILTIN_SKILL_VERSION = '1.0.0'

/** A run of one job instance on this node, as persisted under `run/<runId>`. */
export interface AgentRun {
  runId: string
  jobId: string
  instanceId: string
  /** The occurrence this run belongs to (the job's issuedAt for an immediate job). */
  occurrenceAt: number
  group: number
  batch: number
  /** waiting: its turn has not come (batch, window, earlier group, quorum). */
  status: 'waiting' | 'running' | 'success' | 'failure' | 'skipped'
  /** Position in its group's signed order. */
  position: number
  /** Whether the targets of this job wait on each other (it then publishes progress). */
  gated: boolean
  /** Release policy: the current lease of this node's slot ends then. */
  leaseUntil?: number
  /** A run still going RUNNING_REPORT_MS after its start was reported in a sync. */
  startReported?: boolean
  startedAt: number
  finishedAt?: number
  reason?: string
  /** The reason as a code (protocol/reasons.ts). */
  reasonCode?: ReasonCode
  /** Index into the template's steps of the step being executed. */
  stepIndex: number
  /** Attempt number of that step, from 1. */
  attempt: number
  /**
   * True from the moment the attempt is handed to the runtime until its result is recorded.
   * It is persisted before the attempt starts: an agent that restarts and finds it set knows
   * the attempt may have run and records it as failed instead of running it again.
   */
  inFlight: boolean
  /** True while a restart-interpreter step waits for the node to come back from its reboot. */
  awaitingReboot?: boolean
  /** Non-sensitive output values of earlier steps, by name (inputs of later steps). */
  values: Record<string, string>
  steps: StepOutcome[]
}

/**
 * Sensitive values of a run: kept in memory only, never persisted, logged or sent. After an
 * agent restart they are gone, and a later step that needs one fails with that reason.
 */
export interface RunSecrets {
  values: Record<string, string>
  secrets: string[]
}

export interface OutboxEntry {
  runId: string
  envelope: SignedEnvelope
  nextSendAt: number
  intervalMs: number
}

export interface KnownJob {
  body: JobBody
  envelope: SignedEnvelope
  /**
   * This node's ticket (its place in the job, or null: not targeted), once the coordinator sent
   * it or the definition carried it. envelope: the ticket; absent when the definition alone
   * says it (its roster, or every target's ticket and none for this node), or, before 0.2.0,
   * the definition itself in that case.
   */
  ticket?: { place: TicketBody['place']; envelope?: SignedEnvelope }
  /** How the definition reached this node (gossip, sync, peer), for the logs. */
  via?: string
}

export interface KnownJobState {
  body: JobStateBody
  envelope: SignedEnvelope
}

export interface AgentState {
  jobs: Map<string, KnownJob>
  /** The latest signed state (cancellations, global exceptions) of each job, by job id. */
  jobStates: Map<string, KnownJobState>
  /** Per recurring job: every occurrence at or before this time has been handled (run, missed or excluded). */
  cursors: Map<string, number>
  /** Derived from jobs and job states; rebuilt on demand, never persisted. */
  schedules: Map<string, JobSchedule | null>
  /** Derived, in memory: the next occurrence after each recurring job's cursor (no work before it). */
  nextDue: Map<string, number>
  runs: Map<string, AgentRun>
  /** Results stored locally and re-sent until the coordinator acknowledges them. */
  outbox: Map<string, OutboxEntry>
  /** In memory only: see RunSecrets. */
  secrets: Map<string, RunSecrets>
  /** What this node knows of the other targets' progress, per gated instance. */
  progress: Map<string, Knowledge>
  /** In memory: the sync with the coordinator (jobs, tickets, job states, checkpoints the node missed). */
  sync: { wanted: boolean; lastSentAt: number; lastOkAt: number; ticketWanted: boolean; watchSentAt: number }
  /** In memory, per waiting run: the knowledge version it last decided on and when time alone could change the answer. */
  gateChecks: Map<string, { version: number; recheckAt: number }>
  /** In memory: the next time finished runs and expired jobs are looked at for pruning. */
  nextPruneAt: number
  /** In memory: a tick before this time has nothing to do (nextTickWork). */
  idleUntil: number
  /**
   * In memory: when this node last sent the coordinator a request, and last had a reply from it;
   * while the coordinator is away, when this node next gossips where its gated runs stand (0: not away).
   */
  link: { lastRequestAt: number; lastReplyAt: number; gossipAt: number; quietUntil: number }
  /** This node's membership certificate and the revocations it knows (agent/members.ts). */
  member: AgentMembership
  /**
   * In memory: store keys whose deletion waits for the next batch the agent writes anyway (the
   * outbox records of acknowledged results), and the time by which they are written regardless
   * (link.ts flushDeferredDels, after every event; the crash-safety argument is in README, "Nothing lost, at most once").
   */
  deferredDels: { keys: string[]; flushBy: number }
}

/** What the runtime reports of one step attempt: the interpreter's outcome (steps.ts) plus what only the runtime knows. */
export interface StepAttemptResult extends Omit<InterpreterOutcome, 'artifacts'> {
  /** Evidence the interpreter attached (interpreters/artifacts.ts bounds). */
  artifacts?: { name: string; encoding: 'utf8' | 'base64'; content: string; bytes: number }[]
  /** Values the interpreter reported itself; output rules of the same name take precedence. */
  outputs?: Record<string, string>
  /** The restart interpreter asked for a reboot: the step completes when the node is back. */
  interim?: 'reboot_pending'
  /** When the attempt really started (after its backoff delay), if the runtime knows. */
  startedAt?: number
  /** The interpreter's own diagnostic log (bounded); logged by the core after redaction. */
  interpreterLog?: string
}

export type AgentEvent =
  | { type: 'job'; envelope: unknown; via: 'gossip' | 'sync' | 'peer' }
  | { type: 'step_done'; runId: string; stepNumber: number; attempt: number; result: StepAttemptResult }
  /**
   * A signed reply from the coordinator (acks, jobs to sync). authenticated: it came over a link
   * that proved the coordinator's key (AgentShellOptions.authenticatedLink); its signature is then
   * not checked again (the envelopes inside it are, each on its own).
   */
  | { type: 'reply'; envelope: unknown; to?: 'sync' | 'result' | 'hello'; authenticated?: boolean }
  /** The coordinator became reachable: resend everything now and ask for missed jobs. */
  | { type: 'connected' }
  /** The connection to the coordinator closed: a watch it held is gone with it. */
  | { type: 'disconnected' }
  | { type: 'tick' }
  /** The node is back from a reboot a step asked for (the runtime's simulated reboot, or a real one seen at restore). */
  | { type: 'rebooted' }
  /** Another target's progress, from gossip (verified against the key the job definition names). */
  | { type: 'progress'; envelope: unknown }

export interface StepRunRequest {
  runId: string
  jobId: string
  instanceId: string
  stepNumber: number
  attempt: number
  interpreter: string
  command: unknown
  inputs: Record<string, string>
  os: Os
  /** 0 means no limit. */
  timeoutMs: number
  /** CPU limits of the step (0 = unlimited). */
  limits: { cores: number; cpu: number }
  /** Files the runtime reads after the attempt for `file` output rules. */
  filesToRead: string[]
}

export type AgentEffect =
  | { type: 'persist'; puts: { key: string; value: unknown }[]; dels: string[] }
  | { type: 'run_step'; notBefore: number; request: StepRunRequest }
  | { type: 'send'; kind: 'result'; runId: string; envelope: SignedEnvelope }
  /** waitMs: the coordinator may hold the reply this long (a watch): wait that much longer for it. */
  | { type: 'send'; kind: 'sync'; envelope: SignedEnvelope; waitMs?: number }
  /** Gossip to the other targets of a gated rollout (TOPIC_PROGRESS). */
  | { type: 'publish_progress'; envelope: SignedEnvelope }
  | { type: 'log'; level: 'debug' | 'info' | 'warn'; msg: string; fields?: Record<string, unknown> }
  /** Peers with these keys were revoked: drop their connections, admit them no more. */
  | { type: 'revoked'; keys: string[] }

export function emptyAgentState(): AgentState {
  return {
    jobs: new Map(), jobStates: new Map(), cursors: new Map(), schedules: new Map(), nextDue: new Map(), runs: new Map(), outbox: new Map(), secrets: new Map(), progress: new Map(),
    gateChecks: new Map(), nextPruneAt: 0, idleUntil: 0,
    sync: { wanted: false, lastSentAt: 0, lastOkAt: 0, ticketWanted: false, watchSentAt: 0 }, link: { lastRequestAt: 0, lastReplyAt: 0, gossipAt: 0, quietUntil: 0 },
    member: emptyAgentMembership(), deferredDels: { keys: [], flushBy: 0 },
  }
}

/** Milliseconds in a second: templates give durations in seconds, the core counts in milliseconds. */
export const MS_PER_S = 1000

/** Keys of the records the core persists (restoreAgent reads them back). */
export const key = {
  job: (id: string) => `job/${id}`,
  jobState: (id: string) => `jobstate/${id}`,
  cursor: (id: string) => `cursor/${id}`,
  progress: (id: string) => `progress/${id}`,
  run: (id: string) => `run/${id}`,
  outbox: (id: string) => `outbox/${id}`,
}

/** The ids every log line about a run carries. */
export const runIds = (run: AgentRun) => ({ jobId: run.jobId, instanceId: run.instanceId, runId: run.runId })
