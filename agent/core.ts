// The agent core: a deterministic state machine. `agentStep(state, event, now)` updates the
// state it is given and returns the effects the runtime must carry out, in order. The core
// never reads a clock, a timer, randomness, the network or the disk: the runtime (and sim/)
// feed it events and the time, and carry out its effects. The state object is owned by the
// caller and updated in place (copying a 10,000-agent simulation on every event would cost
// more than it proves); the same (state, event, now) always yields the same state and effects.
import type { Reason, ReasonCode } from '../protocol/reasons.js'
import type { Identity } from '../protocol/keys.js'
import { checkAllowed, DEFAULT_ALLOWLIST, type AllowlistConfig } from './allowlist.js'
import { completeStep, matchSkillVersion, outputFilesToRead, planStep, type InterpreterOutcome } from './steps.js'
import { argvExposure, makeRedactor, redact, redactCuts, redactDeep, sensitiveInputValues } from './secrets.js'
import { emptyAgentMembership, restoreAgentMember, takeCertificate, takeRevocations, type AgentMembership } from './members.js'
import { cachedSchedule, type JobSchedule } from '../protocol/jobschedule.js'
import { dueOccurrences, nextOccurrences } from '../protocol/schedule.js'
import { decideGate, emptyKnowledge, factFor, isGated, nextGateChange, DEFAULT_LEASE_S, type DoneStatus, type Knowledge, type PeerFact } from '../protocol/gate.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { RPC_TIMEOUT_MS, WATCH_HOLD_MS } from '../protocol/timing.js'
import { backoffDelayMs, batchSizeFor } from '../protocol/rollout.js'
import {
  MAX_ARTIFACTS_PER_STEP, MAX_ARTIFACT_NAME_CHARS, MAX_STEP_NAME_CHARS, MAX_ATTEMPT_LOG, MAX_OUTPUTS_PER_STEP, MAX_REPORTED_ARTIFACT_CHARS, MAX_RESULT_ARTIFACT_CHARS, MAX_SYNC_JOBS, openFromAuthenticatedPeer, type Artifact, MAX_OUTPUT_VALUE_CHARS, MAX_REASON_CHARS, MAX_STEP_OUTPUT_CHARS, PROTOCOL_VERSION, open, seal,
  MAX_GATED_IN_SYNC, type CheckpointBody, type JobBody, type JobStateBody, type ProgressBody, type ResultBody, type SignedEnvelope, type StepOutcome, type TicketBody,
} from '../protocol/wire.js'

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
   * it or the definition carried it (envelope: the ticket; for "not targeted" read from a
   * definition that lists every target's ticket, the definition itself).
   */
  ticket?: { place: TicketBody['place']; envelope: SignedEnvelope }
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
  /** In memory: when this node last sent the coordinator a request, and last had a reply from it. */
  link: { lastRequestAt: number; lastReplyAt: number; gossiping: boolean; quietUntil: number }
  /** This node's membership certificate and the revocations it knows (agent/members.ts). */
  member: AgentMembership
}

/** An unanswered sync is sent again after this long. */
export const SYNC_RETRY_MS = 5_000
/** A run still going this long after its start is reported (one sync): shorter runs send nothing more than their result. */
export const RUNNING_REPORT_MS = 1_000
/** Anti-entropy: even a node that misses nothing syncs this often (gossip can be lost). */
export const SYNC_PERIOD_MS = 60_000
/**
 * While a run waits for its turn the node keeps one watch (a sync the coordinator holds until a
 * checkpoint decides the run, at most WATCH_HOLD_MS = 60 s) in flight; one unanswered this long
 * is taken as lost and sent again.
 */
export const WATCH_RETRY_MS = WATCH_HOLD_MS + RPC_TIMEOUT_MS + 5_000
/** Jobs a sync request says it holds, so the reply carries only what is missing. */
export const MAX_KNOWN_IN_SYNC = 256
/**
 * The coordinator counts as away when a request has gone unanswered this long. Gated runs
 * then gossip their progress (with their tickets) to the other targets directly, so a rollout
 * goes on without the coordinator; while it answers, progress reaches it by sync and comes
 * back to every target as its checkpoints (O(1) per node instead of O(group)).
 */
export const COORDINATOR_AWAY_MS = 12_000
/**
 * Targets gossip their progress to each other while the coordinator is away only in jobs of at
 * most this many targets (a quorum cluster, a small rollout): every gossiped message reaches
 * the whole mesh, so for a large rollout that would be O(targets × fleet) traffic. A larger
 * gated rollout pauses while its targets cannot reach the coordinator (runs already started
 * finish; results wait in the outbox) and resumes when it answers again.
 */
export const PEER_PROGRESS_MAX_TARGETS = 64

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
  /** A signed reply from the coordinator (acks, jobs to sync). */
  | { type: 'reply'; envelope: unknown; to?: 'sync' | 'result' | 'hello' }
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
    sync: { wanted: false, lastSentAt: 0, lastOkAt: 0, ticketWanted: false, watchSentAt: 0 }, link: { lastRequestAt: 0, lastReplyAt: 0, gossiping: false, quietUntil: 0 },
    member: emptyAgentMembership(),
  }
}

/** Finished runs and expired jobs are looked at this often (they are kept jobRetentionMs anyway). */
export const PRUNE_EVERY_MS = 10_000

/** Occurrences handled per recurring job per tick: a bound on the work of one event. */
export const MAX_OCCURRENCES_PER_TICK = 1_000

const key = {
  job: (id: string) => `job/${id}`,
  jobState: (id: string) => `jobstate/${id}`,
  cursor: (id: string) => `cursor/${id}`,
  progress: (id: string) => `progress/${id}`,
  run: (id: string) => `run/${id}`,
  outbox: (id: string) => `outbox/${id}`,
}

/**
 * Rebuilds the state from persisted records. An attempt that was in flight when the agent
 * stopped is recorded as failed, never run again (at most once per (instance, step, attempt));
 * the step's retry policy then decides what happens next.
 */
export function restoreAgent(records: Iterable<[string, unknown]>, config: AgentConfig, now: number): { state: AgentState; effects: AgentEffect[] } {
  const state = emptyAgentState()
  for (const [k, v] of records) {
    if (k.startsWith('job/')) {
      const job = v as KnownJob
      state.jobs.set(job.body.jobId, job)
    } else if (k.startsWith('run/')) {
      const run = v as AgentRun
      state.runs.set(run.runId, run)
    } else if (k.startsWith('jobstate/')) {
      const st = v as KnownJobState
      state.jobStates.set(st.body.jobId, st)
    } else if (k.startsWith('progress/')) {
      const p = v as PersistedProgress
      state.progress.set(p.instanceId, { facts: new Map(p.facts.map(([g, fs]) => [g, new Map(fs)])), version: 0 })
    } else if (k.startsWith('cursor/')) {
      const c = v as { jobId: string; at: number }
      state.cursors.set(c.jobId, c.at)
    } else if (k.startsWith('outbox/')) {
      const entry = v as OutboxEntry
      state.outbox.set(entry.runId, { ...entry, nextSendAt: now, intervalMs: config.resendInitialMs })
    } else restoreAgentMember(state.member, config.coordinatorKey, k, v)
  }
  const effects: AgentEffect[] = []
  for (const run of state.runs.values()) {
    if (run.status !== 'running') continue // waiting runs are evaluated by the next tick
    const job = state.jobs.get(run.jobId)
    if (!job) {
      finishRun(state, config, run, 'failure', now, effects, { code: 'job_lost', text: 'job definition lost' })
      continue
    }
    if (run.awaitingReboot) continue
    if (run.inFlight) {
      effects.push({ type: 'log', level: 'warn', msg: 'attempt interrupted by agent restart; recorded as failed, not run again', fields: { ...runIds(run), step: run.stepIndex + 1, attempt: run.attempt } })
      recordAttempt(state, config, job, run, {
        status: 'failure', exitCode: null, stdout: '', stderr: '',
        reason: 'agent restarted while this attempt was running; not run again (at most once)',
      }, now, effects)
    } else {
      startAttempt(state, config, job, run, now, now, effects)
    }
  }
  // A run that waited for a reboot finds the node back: restoring IS the node coming back.
  completeReboots(state, config, now, effects)
  return { state, effects }
}

export function agentStep(state: AgentState, config: AgentConfig, event: AgentEvent, now: number): AgentEffect[] {
  // Nothing a tick looks at is due before idleUntil (see nextTickWork): the tick returns at once, changing nothing.
  if (event.type === 'tick' && now < state.idleUntil) return []
  const effects = step(state, config, event, now)
  state.idleUntil = nextTickWork(state, config, now)
  return effects
}

/**
 * The earliest time a tick can have work: a waiting run to decide again (new knowledge, or a
 * deadline, quorum window or lease passing), a watch to send or resend, a lease to renew, a
 * recurring occurrence due, the coordinator to declare away, a sync due or to retry, a result
 * to resend, pruning. Computed after every event, so a tick before it is a no-op: the runtime
 * may tick every AGENT_TICK_MS regardless, and the simulator skips those ticks (same result).
 */
export function nextTickWork(state: AgentState, config: AgentConfig, now: number): number {
  let next = state.nextPruneAt
  const at = (t: number) => { if (t < next) next = t }
  let waiting = false
  for (const run of state.runs.values()) {
    if (run.status === 'waiting') {
      waiting = true
      const check = state.gateChecks.get(run.runId)
      if (!check || check.version !== state.progress.get(run.instanceId)?.version) return now
      at(check.recheckAt)
    } else if (run.status === 'running' && run.leaseUntil !== undefined) {
      at(run.leaseUntil - leaseMsOf(state, run) * 2 / 3)
    }
    if (startToReport(run)) at(run.startedAt + RUNNING_REPORT_MS)
  }
  for (const job of state.jobs.values()) {
    if (job.body.template.scheduleRule === 'immediate' || !job.ticket?.place) continue
    const cursor = state.cursors.get(job.body.jobId)
    if (cursor === undefined) continue
    at(Math.max(cursor + 1, state.nextDue.get(job.body.jobId) ?? now))
  }
  if (!state.link.gossiping && state.link.lastRequestAt > state.link.lastReplyAt) at(state.link.lastRequestAt + COORDINATOR_AWAY_MS)
  if (state.sync.wanted) at(Math.max(state.sync.lastSentAt + SYNC_RETRY_MS, state.link.quietUntil))
  else if (state.sync.watchSentAt === 0) at(state.sync.lastOkAt + SYNC_PERIOD_MS)
  if (state.link.quietUntil > now) at(state.link.quietUntil)
  if (waiting) at(state.sync.watchSentAt === 0 ? now : state.sync.watchSentAt + WATCH_RETRY_MS)
  for (const entry of state.outbox.values()) at(entry.nextSendAt)
  return next
}

function step(state: AgentState, config: AgentConfig, event: AgentEvent, now: number): AgentEffect[] {
  const effects: AgentEffect[] = []
  switch (event.type) {
    case 'job':
      onJob(state, config, event.envelope, event.via, now, effects)
      break
    case 'step_done': {
      const run = state.runs.get(event.runId)
      const job = run && state.jobs.get(run.jobId)
      if (!run || !job || run.status !== 'running' || !run.inFlight || run.stepIndex + 1 !== event.stepNumber || run.attempt !== event.attempt) {
        effects.push({ type: 'log', level: 'warn', msg: 'ignoring a step result that matches no attempt in flight', fields: { runId: event.runId, step: event.stepNumber, attempt: event.attempt } })
        break
      }
      recordAttempt(state, config, job, run, event.result, now, effects)
      break
    }
    case 'reply':
      onReply(state, config, event.envelope, now, effects, event.to)
      break
    case 'disconnected':
      // Nothing comes back on a closed connection: a held watch no longer counts as in flight,
      // and "away" is counted from now, not from the end of the watch's hold (which left waiting
      // targets stalled for WATCH_HOLD_MS + RPC_TIMEOUT_MS after a coordinator died).
      state.sync.watchSentAt = 0
      state.link.lastRequestAt = state.link.lastRequestAt > state.link.lastReplyAt ? Math.min(state.link.lastRequestAt, now) : now
      break
    case 'connected':
      for (const entry of state.outbox.values()) {
        entry.nextSendAt = now + entry.intervalMs
        noteRequest(state, now)
        effects.push({ type: 'send', kind: 'result', runId: entry.runId, envelope: entry.envelope })
      }
      state.sync.wanted = true
      state.sync.watchSentAt = 0
      // The sync says where this node's gated runs stand; its reply brings their checkpoints.
      sendSync(state, config, now, effects)
      break
    case 'rebooted':
      completeReboots(state, config, now, effects)
      break
    case 'progress':
      onProgress(state, config, event.envelope, now, effects)
      break
    case 'tick': {
      for (const job of state.jobs.values()) {
        if (job.body.template.scheduleRule !== 'immediate' && job.ticket?.place && state.cursors.has(job.body.jobId)) processSchedule(state, config, job, now, effects)
      }
      let waiting = false
      for (const run of state.runs.values()) {
        if (run.status === 'waiting') {
          waiting = true
          const check = state.gateChecks.get(run.runId)
          if (check && check.version === state.progress.get(run.instanceId)?.version && now < check.recheckAt) continue
          evaluateGate(state, config, run, now, effects)
        } else if (run.status === 'running' && run.leaseUntil !== undefined && run.leaseUntil - now < leaseMsOf(state, run) * 2 / 3) {
          run.leaseUntil = now + leaseMsOf(state, run)
          const kr = knowledgeFor(state, run.instanceId)
          factFor(kr, run.group, run.position).lease = run.leaseUntil
          kr.version++
          publishProgress(state, config, run, 'renew', now, effects)
        }
      }
      reportLongRuns(state, config, now, effects)
      // The coordinator stopped answering: tell the other targets directly where this node's gated runs stand.
      const away = coordinatorAway(state, now)
      if (away && !state.link.gossiping) {
        state.link.gossiping = true
        for (const run of state.runs.values()) {
          if (!run.gated || !state.progress.has(run.instanceId)) continue
          const j = state.jobs.get(run.jobId)
          if (!j || j.body.expiresAt <= now) continue
          if (run.status === 'waiting') gossipProgress(state, config, run, 'ack', now, effects)
          else if (run.status === 'running') gossipProgress(state, config, run, 'start', now, effects)
          else gossipProgress(state, config, run, 'done', now, effects, run.status)
        }
      } else if (!away) state.link.gossiping = false
      // A watch in flight is a sync the coordinator holds: it answers with whatever the node misses.
      if (now - state.sync.lastOkAt >= SYNC_PERIOD_MS && state.sync.watchSentAt === 0) state.sync.wanted = true
      const sinceSent = now - state.sync.lastSentAt
      const quiet = now < state.link.quietUntil // an overloaded coordinator asked for a pause
      if (!quiet && state.sync.wanted && sinceSent >= SYNC_RETRY_MS) sendSync(state, config, now, effects)
      else if (!quiet && waiting && (state.sync.watchSentAt === 0 || now - state.sync.watchSentAt >= WATCH_RETRY_MS)) sendSync(state, config, now, effects, true)
      for (const entry of state.outbox.values()) {
        if (quiet || entry.nextSendAt > now) continue
        entry.intervalMs = Math.min(config.resendMaxMs, entry.intervalMs * 2)
        entry.nextSendAt = now + entry.intervalMs
        noteRequest(state, now)
        effects.push({ type: 'send', kind: 'result', runId: entry.runId, envelope: entry.envelope })
      }
      if (now >= state.nextPruneAt) {
        state.nextPruneAt = now + PRUNE_EVERY_MS
        pruneJobs(state, config, now, effects)
      }
      break
    }
  }
  // Jobs arrived without this node's ticket: one sync asks for all of them.
  if (state.sync.ticketWanted) {
    state.sync.ticketWanted = false
    for (const job of state.jobs.values()) {
      if (job.ticket || job.body.expiresAt <= now) continue
      sendSync(state, config, now, effects)
      break
    }
  }
  return effects
}

function onJob(state: AgentState, config: AgentConfig, envelope: unknown, via: string, now: number, effects: AgentEffect[]): void {
  const opened = open(envelope, [config.coordinatorKey])
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
      takeTicket(state, config, job, { place: null, envelope: envelope as SignedEnvelope }, now, effects)
      return
    }
    // A ticket issued to another key (the node re-registered since): ask the coordinator.
  }
  effects.push({ type: 'log', level: 'debug', msg: 'job received; asking the coordinator for this node\'s ticket', fields: { jobId: body.jobId, via } })
  state.sync.wanted = true
  state.sync.ticketWanted = true
}

/** The node's ticket for a job it holds arrived: run it, schedule it, or note it is not targeted. */
function onTicket(state: AgentState, config: AgentConfig, envelope: SignedEnvelope, now: number, effects: AgentEffect[]): void {
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

function skipRun(state: AgentState, config: AgentConfig, run: AgentRun, now: number, effects: AgentEffect[], reason: Reason): void {
  const steps = state.jobs.get(run.jobId)!.body.template.actions.steps
  run.steps = steps.map((st, i) => ({ number: i + 1, name: st.name.slice(0, MAX_STEP_NAME_CHARS), status: 'not_run' as const, attempts: 0, exitCode: null, outputs: {}, stdout: '', stderr: '' }))
  finishRun(state, config, run, 'skipped', now, effects, reason)
}

function leaseMsOf(state: AgentState, run: AgentRun): number {
  return (state.jobs.get(run.jobId)?.body.template.chorus?.leaseSeconds ?? DEFAULT_LEASE_S) * 1000
}

/**
 * A gated run's state changed (ack, start, renew; done travels in the result). Acks count only
 * towards a quorum and leases only under the release policy: for those jobs the coordinator
 * hears the change in a sync now; for the others the node's next watch (within a tick) says it
 * waits, and its result says it is done. While the coordinator is away, small jobs' targets
 * tell each other by gossip.
 */
function publishProgress(state: AgentState, config: AgentConfig, run: AgentRun, event: ProgressBody['event'], now: number, effects: AgentEffect[], status?: DoneStatus): void {
  const chorus = state.jobs.get(run.jobId)?.body.template.chorus
  if (event !== 'done' && (chorus?.quorum || chorus?.vanishedHolder === 'release')) sendSync(state, config, now, effects)
  if (coordinatorAway(state, now)) gossipProgress(state, config, run, event, now, effects, status)
}

function gossipProgress(state: AgentState, config: AgentConfig, run: AgentRun, event: ProgressBody['event'], now: number, effects: AgentEffect[], status?: DoneStatus): void {
  const job = state.jobs.get(run.jobId)
  const ticket = job?.ticket
  if (!job || !ticket?.place) return
  if (job.body.resolved.groups.reduce((n, g) => n + g.size, 0) > PEER_PROGRESS_MAX_TARGETS) return
  const body: ProgressBody = {
    type: 'progress', v: PROTOCOL_VERSION, jobId: run.jobId, instanceId: run.instanceId, occurrenceAt: run.occurrenceAt,
    nodeId: config.nodeId, event, at: now, ...(status ? { status } : {}), ...(run.leaseUntil !== undefined && (event === 'start' || event === 'renew') ? { leaseUntil: run.leaseUntil } : {}),
    ticket: ticket.envelope,
  }
  effects.push({ type: 'publish_progress', envelope: seal(config.identity, body) })
}

/** A request to the coordinator has gone unanswered for COORDINATOR_AWAY_MS. */
export function coordinatorAway(state: AgentState, now: number): boolean {
  return state.link.lastRequestAt > state.link.lastReplyAt && now - state.link.lastRequestAt >= COORDINATOR_AWAY_MS
}

/** Takes this node's turn if the gate is open, skips the run if the rollout stopped, or keeps waiting. */
function evaluateGate(state: AgentState, config: AgentConfig, run: AgentRun, now: number, effects: AgentEffect[]): void {
  const job = state.jobs.get(run.jobId)
  if (!job || run.status !== 'waiting') return
  const jobState = state.jobStates.get(run.jobId)?.body
  if (jobState && jobState.canceledOccurrences.includes(run.occurrenceAt)) {
    skipRun(state, config, run, now, effects, { code: 'canceled', text: 'canceled before this node\'s turn' })
    return
  }
  const k = knowledgeFor(state, run.instanceId)
  const decision = decideGate(job.body, k, run.group, run.position, run.occurrenceAt, now)
  if (decision.action === 'wait') {
    state.gateChecks.set(run.runId, { version: k.version, recheckAt: nextGateChange(job.body, k, run.group, run.occurrenceAt, now) })
    return
  }
  state.gateChecks.delete(run.runId)
  if (decision.action === 'skip') {
    effects.push({ type: 'log', level: 'warn', msg: 'run not started', fields: { ...runIds(run), reason: decision.reason } })
    skipRun(state, config, run, now, effects, { code: decision.code, text: decision.reason })
    return
  }
  run.status = 'running'
  run.startedAt = now
  if (job.body.template.chorus?.vanishedHolder === 'release') run.leaseUntil = now + leaseMsOf(state, run)
  factFor(k, run.group, run.position).lease = run.leaseUntil ?? Number.MAX_SAFE_INTEGER
  k.version++
  persistProgress(run.instanceId, k, effects)
  effects.push({ type: 'log', level: 'info', msg: 'turn taken; run started', fields: { jobId: run.jobId, runId: run.runId, group: run.group, batch: run.batch, position: run.position } })
  publishProgress(state, config, run, 'start', now, effects)
  startAttempt(state, config, job, run, now, now, effects)
}

interface PersistedProgress {
  instanceId: string
  facts: [number, [number, PeerFact][]][]
}

/** The targets' own facts of an instance (checkpoints are not written: the next one replaces a lost one). */
function persistProgress(instanceId: string, k: Knowledge, effects: AgentEffect[]): void {
  const value: PersistedProgress = { instanceId, facts: [...k.facts].map(([g, fs]) => [g, [...fs]]) }
  effects.push({ type: 'persist', puts: [{ key: key.progress(instanceId), value }], dels: [] })
}

/** Gossip on the progress topic: a peer's progress (while the coordinator is away). Checkpoints come in sync replies only. */
function onProgress(state: AgentState, config: AgentConfig, envelope: unknown, now: number, effects: AgentEffect[]): void {
  const opened = open(envelope)
  if (!opened.ok) {
    effects.push({ type: 'log', level: 'debug', msg: `progress message dropped: ${opened.reason}` })
    return
  }
  if (opened.body.type !== 'progress') return
  const p = opened.body
  if (!state.progress.has(p.instanceId)) return // not an instance this node takes part in (or not yet)
  const job = state.jobs.get(p.jobId)
  if (!job || p.instanceId !== instanceIdFor(p.jobId, p.occurrenceAt)) return
  const ticket = p.ticket ? open(p.ticket, [config.coordinatorKey]) : undefined
  if (!ticket?.ok || ticket.body.type !== 'ticket' || ticket.body.jobId !== p.jobId || ticket.body.nodeId !== p.nodeId || ticket.body.key !== opened.signer || !ticket.body.place) {
    effects.push({ type: 'log', level: 'warn', msg: 'progress refused: no coordinator ticket naming that node, its place and the key that signed it', fields: { nodeId: p.nodeId, jobId: p.jobId } })
    return
  }
  const k = knowledgeFor(state, p.instanceId)
  const { group, position } = ticket.body.place
  const heard = k.facts.get(group)?.has(position) ?? false // a first fact is the acknowledgement
  if (!mergeProgress(factFor(k, group, position), p) && heard) return
  k.version++
  persistProgress(p.instanceId, k, effects)
  reevaluate(state, config, p.instanceId, now, effects)
}

function reevaluate(state: AgentState, config: AgentConfig, instanceId: string, now: number, effects: AgentEffect[]): void {
  for (const run of state.runs.values()) if (run.instanceId === instanceId && run.status === 'waiting') evaluateGate(state, config, run, now, effects)
}

function mergeProgress(f: PeerFact, p: { event: ProgressBody['event']; status?: DoneStatus; leaseUntil?: number }): boolean {
  switch (p.event) {
    case 'ack':
      return false // the fact exists now: that is the acknowledgement
    case 'start':
    case 'renew': {
      const lease = p.leaseUntil ?? Number.MAX_SAFE_INTEGER
      if ((f.lease ?? -1) >= lease) return false
      f.lease = lease
      return true
    }
    case 'done':
      if (f.done || !p.status) return false
      f.done = p.status
      return true
  }
}

function knowledgeFor(state: AgentState, instanceId: string): Knowledge {
  let k = state.progress.get(instanceId)
  if (!k) {
    k = emptyKnowledge()
    state.progress.set(instanceId, k)
  }
  return k
}

/** A coordinator checkpoint (from a sync reply or an answered watch): kept if newer, then the waiting runs look again. */
function onCheckpoint(state: AgentState, config: AgentConfig, cp: CheckpointBody, now: number, effects: AgentEffect[]): void {
  const k = state.progress.get(cp.instanceId)
  if (!k) return // only instances this node takes part in
  if (k.checkpoint && k.checkpoint.seq >= cp.seq) return
  k.checkpoint = cp
  k.version++
  reevaluate(state, config, cp.instanceId, now, effects)
}

/**
 * What this node tells a member peer that asks while the coordinator is away: the definitions
 * of jobs it can show the peer is targeted by (small jobs carry every target's ticket), and
 * newer states of the jobs the peer says it holds. A peer learns nothing about jobs that do
 * not concern it (bounded by MAX_SYNC_JOBS).
 */
export function envelopesForPeer(state: AgentState, peer: { nodeId: string; key: string }, known: readonly { jobId: string; version: number }[], now: number): SignedEnvelope[] {
  const held = new Map(known.map((k) => [k.jobId, k.version]))
  const out: SignedEnvelope[] = []
  for (const job of state.jobs.values()) {
    if (job.body.expiresAt <= now) continue
    const version = held.get(job.body.jobId)
    if (version === undefined && !inlineTicketNames(job.body, peer)) continue
    if (version === undefined) out.push(job.envelope)
    const st = state.jobStates.get(job.body.jobId)
    if (st && st.body.version > (version ?? 0)) out.push(st.envelope)
  }
  return out.slice(-MAX_SYNC_JOBS)
}

/** Whether a job's inline tickets (covered by the definition's signature) place this node and key. */
function inlineTicketNames(body: JobBody, peer: { nodeId: string; key: string }): boolean {
  const t = body.resolved.tickets?.find((x) => x.body.includes(`"nodeId":${JSON.stringify(peer.nodeId)}`))
  if (!t) return false
  const o = openFromAuthenticatedPeer(t, t.signer)
  return o.ok && o.body.type === 'ticket' && o.body.nodeId === peer.nodeId && o.body.key === peer.key && o.body.place !== null
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
 * Starts the current attempt of `run` (step `run.stepIndex`, attempt `run.attempt`), or decides
 * without running anything: a missing skill, a failed input or condition check, or a command the
 * allowlist refuses fail the step; false conditions skip it. Persists the run (in flight) before
 * the `run_step` effect, so an agent that dies meanwhile knows the attempt may have run.
 */
function startAttempt(state: AgentState, config: AgentConfig, job: KnownJob, run: AgentRun, notBefore: number, now: number, effects: AgentEffect[]): void {
  const template = job.body.template
  const step = template.actions.steps[run.stepIndex]!
  const secrets = state.secrets.get(run.runId) ?? { values: {}, secrets: [] }
  const installed = config.skills[step.interpreter.name] ?? []
  const version = matchSkillVersion(installed, step.interpreter.skill)
  let refusal: string | undefined
  if (version === undefined) {
    refusal = installed.length === 0
      ? `skill not installed: interpreter ${step.interpreter.name} is not installed on this node`
      : `skill not installed: ${step.interpreter.name} ${installed.join(', ')} is installed; the step needs ${step.interpreter.skill.minVersion || '*'} to ${step.interpreter.skill.maxVersion || '*'}`
  }
  const plan = refusal === undefined ? planStep(step, { ...run.values, ...secrets.values }, secrets.secrets) : undefined
  if (plan?.action === 'fail') refusal = plan.reason
  if (plan?.action === 'run') {
    const allowed = checkAllowed(config.allow, { interpreter: step.interpreter.name, command: plan.command, os: config.os }, makeRedactor(plan.secrets))
    if (!allowed.ok) refusal = `refused by the agent allowlist, not run: ${allowed.reason}`
    else refusal = argvExposure(step.interpreter.name, plan.command, plan.secrets)
  }
  if (refusal !== undefined || plan?.action === 'skip') {
    const skipped = plan?.action === 'skip'
    const outcome = safeOutcome(state, job, run, {
      number: run.stepIndex + 1, name: step.name.slice(0, MAX_STEP_NAME_CHARS), status: skipped ? 'skipped' : 'failure', attempts: 0,
      exitCode: null, outputs: {}, stdout: '', stderr: '',
      reason: skipped ? (plan as { explanation: string }).explanation : refusal!,
      finishedAt: now,
    })
    effects.push({ type: 'log', level: skipped ? 'info' : 'warn', msg: skipped ? 'step skipped' : 'step refused before running', fields: { ...runIds(run), step: outcome.number, reason: outcome.reason } })
    // A refusal is deterministic: retrying it would refuse again, so it is final for this step.
    afterStep(state, config, job, run, outcome, false, now, effects)
    return
  }
  if (plan?.action !== 'run') return
  const groupTimeoutMs = template.target.groups[run.group]!.timeoutSeconds * 1000
  const stepTimeoutMs = (step.limits?.timeoutSeconds ?? 0) * 1000
  const timeoutMs = stepTimeoutMs > 0 ? Math.min(stepTimeoutMs, groupTimeoutMs || stepTimeoutMs) : groupTimeoutMs
  run.inFlight = true
  effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }], dels: [] })
  effects.push({
    type: 'run_step',
    notBefore,
    request: {
      runId: run.runId, jobId: run.jobId, instanceId: run.instanceId, stepNumber: run.stepIndex + 1, attempt: run.attempt,
      interpreter: step.interpreter.name, command: plan.command, inputs: plan.inputs, os: config.os, timeoutMs,
      limits: { cores: step.limits?.cores ?? 0, cpu: step.limits?.cpu ?? 0 },
      filesToRead: outputFilesToRead(step.outputFieldRules ?? {}),
    },
  })
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : text.slice(text.length - max)
}

function recordAttempt(state: AgentState, config: AgentConfig, job: KnownJob, run: AgentRun, result: StepAttemptResult, now: number, effects: AgentEffect[]): void {
  const step = job.body.template.actions.steps[run.stepIndex]!
  const secrets = state.secrets.get(run.runId) ?? { values: {}, secrets: [] }
  run.inFlight = false
  if (result.interim === 'reboot_pending') {
    // The node reboots now. The step completes when it is back (event `rebooted`, or restore).
    run.awaitingReboot = true
    effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }], dels: [] })
    effects.push({ type: 'log', level: 'info', msg: 'step asked for a reboot; the run resumes when the node is back', fields: { ...runIds(run), step: run.stepIndex + 1 } })
    return
  }
  const plan = planStep(step, { ...run.values, ...secrets.values }, secrets.secrets)
  const known = plan.action === 'run' ? plan.secrets : secrets.secrets
  const done = completeStep(step.outputFieldRules ?? {}, {
    status: result.status, exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr,
    ...(result.reason !== undefined ? { reason: result.reason } : {}),
    ...(result.files ? { files: result.files } : {}),
    ...(result.artifacts ? { artifacts: Object.fromEntries(result.artifacts.map((a) => [a.name, a.encoding === 'utf8' ? a.content : Buffer.from(a.content, 'base64').toString('utf8')])) } : {}),
  }, known)
  if (result.interpreterLog) {
    effects.push({ type: 'log', level: 'info', msg: 'interpreter log', fields: { ...runIds(run), step: run.stepIndex + 1, attempt: run.attempt, log: redactCuts(redact(result.interpreterLog, done.secrets), done.secrets).slice(-4096) } })
  }
  const interpreterOutputs = result.outputs ? Object.fromEntries(Object.entries(result.outputs).filter(([k]) => !(k in done.outputs))) : {}
  const previous = run.steps[run.stepIndex]?.attemptLog ?? []
  const attemptLog = [...previous, { attempt: run.attempt, status: done.status, exitCode: done.exitCode, startedAt: result.startedAt ?? now, finishedAt: now }].slice(-MAX_ATTEMPT_LOG)
  const outcome: StepOutcome = {
    number: run.stepIndex + 1,
    name: step.name.slice(0, MAX_STEP_NAME_CHARS),
    status: done.status,
    attempts: run.attempt,
    exitCode: done.exitCode,
    outputs: Object.fromEntries(Object.entries({ ...interpreterOutputs, ...done.reportedOutputs }).slice(0, MAX_OUTPUTS_PER_STEP)),
    stdout: clip(done.stdout, MAX_STEP_OUTPUT_CHARS),
    stderr: clip(done.stderr, MAX_STEP_OUTPUT_CHARS),
    ...(done.reason ? { reason: done.reason.slice(0, MAX_REASON_CHARS) } : {}),
    startedAt: attemptLog[0]!.startedAt,
    finishedAt: now,
    attemptLog,
    ...(result.artifacts?.length ? { artifacts: reportArtifacts(run, result.artifacts, done.secrets) } : {}),
  }
  if (done.status === 'success') {
    // Sensitive values stay in memory; the rest is persisted with the run for later steps.
    const sensitive = new Set(done.secrets)
    const nextSecrets: RunSecrets = { values: { ...secrets.values }, secrets: done.secrets }
    for (const [k, v] of Object.entries({ ...interpreterOutputs, ...done.outputs })) {
      if (sensitive.has(v) || done.reportedOutputs[k] !== v) nextSecrets.values[k] = v
      else run.values[k] = v
    }
    state.secrets.set(run.runId, nextSecrets)
  } else {
    // Not carried to later steps, but what this attempt revealed is still redacted (safeOutcome).
    state.secrets.set(run.runId, { values: secrets.values, secrets: done.secrets })
  }
  afterStep(state, config, job, run, outcome, true, now, effects)
}

/**
 * The evidence a result carries: each artifact cut to MAX_REPORTED_ARTIFACT_CHARS and the
 * run's total to MAX_RESULT_ARTIFACT_CHARS; text redacted like any output; binary content that
 * contains a secret is dropped.
 */
function reportArtifacts(run: AgentRun, artifacts: NonNullable<StepAttemptResult['artifacts']>, secrets: string[]): Artifact[] {
  let used = 0
  for (const s of run.steps) for (const a of s?.artifacts ?? []) used += a.content.length
  const out: Artifact[] = []
  for (const a of artifacts.slice(0, MAX_ARTIFACTS_PER_STEP)) {
    let content = a.encoding === 'utf8' ? redact(a.content, secrets) : a.content
    if (a.encoding === 'base64' && secrets.some((sec) => sec && Buffer.from(a.content, 'base64').includes(sec))) content = ''
    const room = Math.max(0, Math.min(MAX_REPORTED_ARTIFACT_CHARS, MAX_RESULT_ARTIFACT_CHARS - used))
    const truncated = content.length > room
    if (truncated) content = content.slice(0, a.encoding === 'base64' ? room - (room % 4) : room)
    used += content.length
    out.push({ name: a.name.slice(0, MAX_ARTIFACT_NAME_CHARS), encoding: a.encoding, bytes: a.bytes, content, truncated: truncated || (a.encoding === 'base64' && content === '' && a.content !== '') })
  }
  return out
}

/** Every secret an outcome of the run's current step may contain: the run's known secrets and the step's sensitive inputs. */
function stepSecrets(state: AgentState, job: KnownJob, run: AgentRun): string[] {
  const known = state.secrets.get(run.runId) ?? { values: {}, secrets: [] }
  const step = job.body.template.actions.steps[run.stepIndex]!
  return [...known.secrets, ...sensitiveInputValues(step.expectedInputs, { ...run.values, ...known.values })]
}

/**
 * The one place a step's outcome becomes what is logged, persisted and sent (and, through its
 * reason, the run's reason): every string redacted with stepSecrets (captured output also where
 * its capture cut it, redactCuts), then the reason and the output values bounded (after redaction: a secret cut in half would no longer be recognised).
 */
function safeOutcome(state: AgentState, job: KnownJob, run: AgentRun, outcome: StepOutcome): StepOutcome {
  const secrets = stepSecrets(state, job, run)
  const safe = secrets.length === 0 ? { ...outcome } : redactDeep(outcome, secrets)
  safe.stdout = redactCuts(safe.stdout, secrets)
  safe.stderr = redactCuts(safe.stderr, secrets)
  if (safe.reason !== undefined) safe.reason = safe.reason.slice(0, MAX_REASON_CHARS)
  safe.outputs = Object.fromEntries(Object.entries(safe.outputs).map(([k, v]) => [k, v.slice(0, MAX_OUTPUT_VALUE_CHARS)]))
  return safe
}

/** Retry, go on to the next step, or finish the run, after `outcome` of the current step. */
function afterStep(state: AgentState, config: AgentConfig, job: KnownJob, run: AgentRun, raw: StepOutcome, retryable: boolean, now: number, effects: AgentEffect[]): void {
  const outcome = safeOutcome(state, job, run, raw)
  const steps = job.body.template.actions.steps
  const step = steps[run.stepIndex]!
  run.steps[run.stepIndex] = outcome
  if (outcome.status === 'failure' && retryable && run.attempt <= step.retryCount) {
    // Retry: a new attempt number, so at-most-once per (instance, step, attempt) still holds.
    run.attempt += 1
    const delay = backoffDelayMs(step.failureBehavior.retryBackoffStrategy, run.attempt)
    effects.push({ type: 'log', level: 'info', msg: 'step attempt failed; retrying', fields: { ...runIds(run), step: outcome.number, nextAttempt: run.attempt, delayMs: delay, reason: outcome.reason } })
    startAttempt(state, config, job, run, now + delay, now, effects)
    return
  }
  const ignored = outcome.status === 'failure' && step.failureBehavior.action === 'retryThenIgnore'
  if (outcome.status === 'failure' && !ignored) {
    for (let i = run.stepIndex + 1; i < steps.length; i++) {
      run.steps[i] = { number: i + 1, name: steps[i]!.name.slice(0, MAX_STEP_NAME_CHARS), status: 'not_run', attempts: 0, exitCode: null, outputs: {}, stdout: '', stderr: '', reason: `step ${outcome.number} failed` }
    }
    finishRun(state, config, run, 'failure', now, effects, { code: 'step_failed', text: `step ${outcome.number} (${step.name}) failed: ${outcome.reason ?? 'exit code ' + String(outcome.exitCode)}` })
    return
  }
  if (ignored) effects.push({ type: 'log', level: 'info', msg: 'step failed; failure ignored (retryThenIgnore)', fields: { ...runIds(run), step: outcome.number } })
  if (run.stepIndex + 1 < steps.length) {
    run.stepIndex += 1
    run.attempt = 1
    startAttempt(state, config, job, run, now, now, effects)
    return
  }
  finishRun(state, config, run, 'success', now, effects)
}

/** The node is back from a reboot: the step that asked for it succeeded; go on. */
function completeReboots(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  for (const run of state.runs.values()) {
    if (run.status !== 'running' || !run.awaitingReboot) continue
    const job = state.jobs.get(run.jobId)
    if (!job) continue
    run.awaitingReboot = false
    const step = job.body.template.actions.steps[run.stepIndex]!
    effects.push({ type: 'log', level: 'info', msg: 'node is back from the reboot; run resumes', fields: { ...runIds(run), step: run.stepIndex + 1 } })
    afterStep(state, config, job, run, {
      number: run.stepIndex + 1, name: step.name.slice(0, MAX_STEP_NAME_CHARS), status: 'success', attempts: run.attempt,
      exitCode: 0, outputs: {}, stdout: '', stderr: '', reason: 'node rebooted and came back', finishedAt: now,
    }, false, now, effects)
  }
}

function finishRun(state: AgentState, config: AgentConfig, run: AgentRun, status: 'success' | 'failure' | 'skipped', now: number, effects: AgentEffect[], reason?: Reason): void {
  run.status = status
  run.finishedAt = now
  run.inFlight = false
  state.secrets.delete(run.runId)
  if (reason) { run.reason = reason.text.slice(0, MAX_REASON_CHARS); run.reasonCode = reason.code }
  const body: ResultBody = {
    type: 'result', v: PROTOCOL_VERSION, runId: run.runId, jobId: run.jobId, instanceId: run.instanceId,
    nodeId: config.nodeId, occurrenceAt: run.occurrenceAt, group: run.group, batch: run.batch, status,
    ...(run.reason ? { reason: run.reason } : {}), ...(run.reasonCode ? { reasonCode: run.reasonCode } : {}),
    startedAt: run.startedAt, finishedAt: now, steps: run.steps,
  }
  const envelope = seal(config.identity, body)
  const entry: OutboxEntry = { runId: run.runId, envelope, nextSendAt: now + config.resendInitialMs, intervalMs: config.resendInitialMs }
  state.outbox.set(run.runId, entry)
  // The result is durable before it is sent: a crash after this point re-sends it on restart.
  effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }, { key: key.outbox(run.runId), value: entry }], dels: [] })
  effects.push({ type: 'log', level: 'info', msg: `run finished: ${status}`, fields: { ...runIds(run), reason: run.reason } })
  noteRequest(state, now)
  effects.push({ type: 'send', kind: 'result', runId: run.runId, envelope })
  if (run.gated) {
    const k = state.progress.get(run.instanceId)
    if (k) {
      factFor(k, run.group, run.position).done = status
      k.version++
      persistProgress(run.instanceId, k, effects)
    }
    publishProgress(state, config, run, 'done', now, effects, status)
  }
}

/** The ids every log line about a run carries. */
const runIds = (run: AgentRun) => ({ jobId: run.jobId, instanceId: run.instanceId, runId: run.runId })

const startToReport = (run: AgentRun): boolean => run.status === 'running' && !run.startReported

/** Runs going for RUNNING_REPORT_MS: one sync tells the coordinator they are running (gated or not). */
function reportLongRuns(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  let due = false
  for (const run of state.runs.values()) {
    if (!startToReport(run) || now - run.startedAt < RUNNING_REPORT_MS) continue
    run.startReported = true
    due = true
  }
  if (due) sendSync(state, config, now, effects)
}

/** Asks the coordinator for what this node missed, saying which jobs (and job-state versions) it holds. */
function sendSync(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[], watch = false): void {
  state.sync.lastSentAt = now
  if (watch) state.sync.watchSentAt = now
  state.sync.ticketWanted = false
  const known: { jobId: string; version: number; ticket: boolean }[] = []
  for (const job of state.jobs.values()) known.push({ jobId: job.body.jobId, version: state.jobStates.get(job.body.jobId)?.body.version ?? 0, ticket: job.ticket !== undefined })
  // Jobs without a ticket first, so a bounded list never leaves out one this node waits on.
  known.sort((a, b) => Number(a.ticket) - Number(b.ticket))
  const gated: { instanceId: string; jobId: string; occurrenceAt: number; state: 'waiting' | 'running'; leaseUntil?: number; seq: number }[] = []
  for (const run of state.runs.values()) {
    const reported = run.status === 'running' && run.startReported === true
    if ((!run.gated && !reported) || (run.status !== 'waiting' && run.status !== 'running') || gated.length >= MAX_GATED_IN_SYNC) continue
    gated.push({
      instanceId: run.instanceId, jobId: run.jobId, occurrenceAt: run.occurrenceAt, state: run.status,
      ...(run.leaseUntil !== undefined ? { leaseUntil: run.leaseUntil } : {}), seq: state.progress.get(run.instanceId)?.checkpoint?.seq ?? 0,
    })
  }
  // A watch may be held WATCH_HOLD_MS: only silence beyond that says the coordinator is away.
  noteRequest(state, watch ? now + WATCH_HOLD_MS : now)
  effects.push({ type: 'send', kind: 'sync', envelope: seal(config.identity, { type: 'sync', v: PROTOCOL_VERSION, nodeId: config.nodeId, sentAt: now, known: known.slice(0, MAX_KNOWN_IN_SYNC), gated, watch, certExpiresAt: state.member.certificate?.body.expiresAt ?? 0, revocations: state.member.revoked.version }), ...(watch ? { waitMs: WATCH_HOLD_MS } : {}) })
}

function noteRequest(state: AgentState, at: number): void {
  // Only the first unanswered request counts: a stream of them must not keep "away" from ever arriving.
  if (state.link.lastRequestAt <= state.link.lastReplyAt) state.link.lastRequestAt = at
}

function onReply(state: AgentState, config: AgentConfig, envelope: unknown, now: number, effects: AgentEffect[], to?: 'sync' | 'result' | 'hello'): void {
  const opened = open(envelope, [config.coordinatorKey])
  if (!opened.ok || opened.body.type !== 'reply') {
    effects.push({ type: 'log', level: 'warn', msg: `refused reply: ${opened.ok ? 'type ' + opened.body.type : opened.reason}` })
    return
  }
  const reply = opened.body
  state.link.lastReplyAt = now
  state.link.gossiping = false
  if (to === 'sync') state.sync.watchSentAt = 0
  if (to === 'sync' && reply.ok) {
    state.sync.wanted = false
    state.sync.lastOkAt = now
  }
  const dels: string[] = []
  for (const runId of reply.ackRunIds) {
    if (state.outbox.delete(runId)) dels.push(key.outbox(runId))
  }
  if (dels.length > 0) effects.push({ type: 'persist', puts: [], dels })
  if (!reply.ok) effects.push({ type: 'log', level: 'warn', msg: `coordinator refused a request: ${reply.error ?? 'no reason given'}` })
  if (reply.retryAfterMs) {
    // The coordinator sheds load: nothing goes to it before then (the watch it did not hold counts as lost).
    state.link.quietUntil = Math.max(state.link.quietUntil, now + reply.retryAfterMs)
    state.sync.wanted = true
    state.sync.watchSentAt = 0
  }
  if (reply.certificate) takeCertificate(state.member, config.coordinatorKey, config.nodeId, config.identity.publicKey, reply.certificate, effects)
  if (reply.revocations) takeRevocations(state.member, config.coordinatorKey, config.identity.publicKey, reply.revocations, effects)
  for (const job of reply.jobs) onJob(state, config, job, 'sync', now, effects)
  for (const t of reply.tickets) onTicket(state, config, t, now, effects)
  for (const c of reply.checkpoints) {
    const cp = open(c, [config.coordinatorKey])
    if (cp.ok && cp.body.type === 'checkpoint') onCheckpoint(state, config, cp.body, now, effects)
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
