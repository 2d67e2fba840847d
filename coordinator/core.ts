// The coordinator core: a deterministic state machine, like the agent core. It signs job
// definitions, keeps the node registry, stores results exactly once, and derives instance
// status. The runtime supplies ids (job UUIDs) and time; it carries out the effects. The state
// object is owned by the caller and updated in place; the same (state, event, now) always
// yields the same state and effects.
//
// This file is the dispatcher: it restores the state, hands each event to the module that
// decides it, and audits operators' requests. The decisions live by subject:
//   registry.ts   nodes: hellos, enrolment and revocation, contacts, mesh peers, target selection;
//   jobs.ts       submit, schedules and occurrences, cancel, global exceptions, manual runs, deletion;
//   instances.ts  instances in memory: history counts, the tick (deadlines, quorum windows), dropping, pruning;
//   tally.ts      gated rollouts: tallies, checkpoints, progress, acks and the watches they wake;
//   results.ts    results stored exactly once, and the status an instance settles on;
//   rpc.ts        the agents' requests (hello, sync, result), signed replies and tickets;
//   admin.ts      API tokens, saved lists and filters, the audit log.
// The types are in state.ts, the store keys in storekeys.ts, the caches in derived.ts;
// everything callers import is re-exported from here.
import type { GlobalException } from '../protocol/jobschedule.js'
import { AUDITED, auditEffect, onDeleteSaved, onSaveFilter, onSaveList, onToken, refusal } from './admin.js'
import { countInstance, dropFinished, flushSettled, onPrune, onTick } from './instances.js'
import { onCancel, onDeleteJob, onGlobalException, onRunJob, onSubmit } from './jobs.js'
import { restoreMemberRecord } from './members.js'
import { onLink, onMembership } from './registry.js'
import { onRpc } from './rpc.js'
import {
  TERMINAL, emptyCoordinatorState,
  type CoordinatorConfig, type CoordinatorEffect, type CoordinatorEvent, type CoordinatorState, type InstanceRecord, type JobRecord, type NodeRecord, type RequestEvent, type RunRecord,
  type SavedFilter, type SavedList, type TokenRecord,
} from './state.js'
import { onProgress } from './tally.js'
export {
  DEFAULT_COORDINATOR_TIMING, MAX_AHEAD_OCCURRENCES, MAX_INSTANCES_PER_TICK, MAX_SAVED, MAX_TOKENS, emptyCoordinatorState, emptyDerivedCaches,
  type CoordinatorConfig, type NodeRecord, type JobRecord, type JobHistory, type Targets, type InstanceStatus, type InstanceRecord, type RunRecord,
  type CoordinatorState, type DerivedCaches, type JobDerived, type Actor, type TokenRecord, type AuditRecord, type GroupTally, type InstanceTally,
  type SubmitProblem, type RequestEvent, type CoordinatorEvent, type SubmitOutcome, type CoordinatorEffect, type SavedList, type SavedFilter,
} from './state.js'
export { recordKey, timeKey, IDX, idOfIndexKey, historyKeysOf, AUDIT_PREFIX, auditKeyFrom } from './storekeys.js'
export { tokenByHash, tokenView } from './admin.js'
export { REPLY_CACHE_MAX, placeIn, derivedOf } from './derived.js'
export {
  selectNodes, resolveTargets, targetWarnings, NODE_TOUCH_PERSIST_MS, MAX_HELLOS_PER_WINDOW, HELLO_WINDOW_MS, MESH_PEERS_INTRODUCED, MESH_DRAWS,
} from './registry.js'
export { nextOccurrencesOf, OCCURRENCE_GRACE_MS } from './jobs.js'
export { checkpointsFor } from './tally.js'
export { ticketFor, envelopesFor } from './rpc.js'
export { settleInstance } from './results.js'

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

function stepEvent(state: CoordinatorState, config: CoordinatorConfig, event: CoordinatorEvent, now: number): CoordinatorEffect[] {
  const effects: CoordinatorEffect[] = []
  switch (event.type) {
    case 'rpc': onRpc(state, config, event.requestId, event.envelope, event.peerId, now, effects, event.history); break
    case 'progress': onProgress(state, config, event.envelope, now, effects); break
    case 'link': onLink(state, event.peerId, event.up, now, effects); break
    case 'tick': dropFinished(state); onTick(state, config, now, effects); break
    case 'prune': onPrune(state, event, effects); break
    case 'submit': onSubmit(state, config, event.requestId, event.jobId, event.template, now, effects); break
    case 'cancel': onCancel(state, config, event.requestId, event.jobId, event.occurrences, now, effects); break
    case 'run_job': onRunJob(state, config, event, now, effects); break
    case 'delete_job': onDeleteJob(state, event, effects); break
    case 'add_exception': case 'remove_exception': onGlobalException(state, config, event, now, effects); break
    case 'create_token': case 'revoke_token': onToken(state, event, effects); break
    case 'save_list': onSaveList(state, event, effects); break
    case 'save_filter': onSaveFilter(state, event, effects); break
    case 'delete_saved': onDeleteSaved(state, event, effects); break
    case 'create_enrollment': case 'delete_enrollment': case 'revoke_node': case 'approve_node': case 'reject_node':
      onMembership(state, config, event, now, effects)
      break
  }
  return effects
}
