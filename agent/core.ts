// The agent core: a deterministic state machine. `agentStep(state, event, now)` updates the
// state it is given and returns the effects the runtime must carry out, in order. The core
// never reads a clock, a timer, randomness, the network or the disk: the runtime (and sim/)
// feed it events and the time, and carry out its effects. The state object is owned by the
// caller and updated in place (copying a 10,000-agent simulation on every event would cost
// more than it proves); the same (state, event, now) always yields the same state and effects.
//
// This file is the dispatcher: it restores the state, hands each event to the module that
// decides it, and says when a tick next has work. The decisions live by subject:
//   jobs.ts      definitions, tickets (targeting), runs of occurrences, job states, pruning;
//   turns.ts     turn-taking: progress, checkpoints, the gate, leases;
//   attempts.ts  attempts of a run's steps, retries, step results, finishing a run;
//   link.ts      the coordinator link (syncs, watches, replies, resends, away) and peers.
// The types are in state.ts; everything callers import is re-exported from here.
import type { AgentConfig, AgentEffect, AgentEvent, AgentRun, AgentState, KnownJob, KnownJobState, OutboxEntry } from './state.js'
import { emptyAgentState, runIds } from './state.js'
import { restoreAgentMember } from './members.js'
import { completeReboots, finishRun, onStepDone, recordAttempt, startAttempt } from './attempts.js'
import { onJob, tickPrune, tickSchedules } from './jobs.js'
import { leaseMsOf, onProgress, renewBeforeEndMs, tickAway, tickTurns, type PersistedProgress } from './turns.js'
import {
  askForMissingTickets, flushDeferredDels, onConnected, onDisconnected, onReply, reportLongRuns, startToReport, tickResend, tickSync,
  COORDINATOR_AWAY_MS, RUNNING_REPORT_MS, SYNC_PERIOD_MS, SYNC_RETRY_MS, WATCH_RETRY_MS,
} from './link.js'

export {
  emptyAgentState, DEFAULT_AGENT_TIMING, BUILTIN_SKILL_VERSION,
  type Os, type AgentConfig, type AgentRun, type RunSecrets, type OutboxEntry, type KnownJob, type KnownJobState, type AgentState,
  type StepAttemptResult, type AgentEvent, type StepRunRequest, type AgentEffect,
} from './state.js'
export { coordinatorAway, envelopesForPeer, COORDINATOR_AWAY_MS, DEFERRED_DEL_MAX_MS, MAX_DEFERRED_DELS, MAX_KNOWN_IN_SYNC, RUNNING_REPORT_MS, SYNC_PERIOD_MS, SYNC_RETRY_MS, WATCH_RETRY_MS } from './link.js'
export { PEER_PROGRESS_MAX_TARGETS, waitsOnPeers } from './turns.js'
export { MAX_OCCURRENCES_PER_TICK, PRUNE_EVERY_MS } from './jobs.js'

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
  flushDeferredDels(state, now, effects)
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
      at(run.leaseUntil - renewBeforeEndMs(leaseMsOf(state, run)))
    }
    if (startToReport(run)) at(run.startedAt + RUNNING_REPORT_MS)
  }
  for (const job of state.jobs.values()) {
    if (job.body.template.scheduleRule === 'immediate' || !job.ticket?.place) continue
    const cursor = state.cursors.get(job.body.jobId)
    if (cursor === undefined) continue
    at(Math.max(cursor + 1, state.nextDue.get(job.body.jobId) ?? now))
  }
  if (state.link.gossipAt !== 0) at(state.link.gossipAt)
  else if (state.link.lastRequestAt > state.link.lastReplyAt) at(state.link.lastRequestAt + COORDINATOR_AWAY_MS)
  if (state.sync.wanted) at(Math.max(state.sync.lastSentAt + SYNC_RETRY_MS, state.link.quietUntil))
  else if (state.sync.watchSentAt === 0) at(state.sync.lastOkAt + SYNC_PERIOD_MS)
  if (state.link.quietUntil > now) at(state.link.quietUntil)
  if (waiting) at(state.sync.watchSentAt === 0 ? now : state.sync.watchSentAt + WATCH_RETRY_MS)
  for (const entry of state.outbox.values()) at(entry.nextSendAt)
  if (state.deferredDels.keys.length > 0) at(state.deferredDels.flushBy)
  return next
}

function step(state: AgentState, config: AgentConfig, event: AgentEvent, now: number): AgentEffect[] {
  const effects: AgentEffect[] = []
  switch (event.type) {
    case 'job': onJob(state, config, event.envelope, event.via, now, effects); break
    case 'step_done': onStepDone(state, config, event, now, effects); break
    case 'reply': onReply(state, config, event.envelope, now, effects, event.to, event.authenticated); break
    case 'disconnected': onDisconnected(state, now); break
    case 'connected': onConnected(state, config, now, effects); break
    case 'rebooted': completeReboots(state, config, now, effects); break
    case 'progress': onProgress(state, config, event.envelope, now, effects); break
    case 'tick': onTick(state, config, now, effects); break
  }
  askForMissingTickets(state, config, now, effects)
  return effects
}

/** A tick: what time alone can make due, in this order (the traces depend on it). */
function onTick(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  tickSchedules(state, config, now, effects)
  const waiting = tickTurns(state, config, now, effects)
  reportLongRuns(state, config, now, effects)
  tickAway(state, config, now, effects)
  tickSync(state, config, now, effects, waiting)
  tickResend(state, config, now, effects)
  tickPrune(state, config, now, effects)
}
