// The coordinator core: a deterministic state machine, like the agent core. It signs job
// definitions, keeps the node registry, stores results exactly once, and derives instance
// status. The runtime supplies ids (job UUIDs) and time; it carries out the effects.
import type { Identity } from '../protocol/keys.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { batchSizeFor, thresholdFor } from '../protocol/rollout.js'
import type { JobTemplate } from '../protocol/template.js'
import {
  MAX_SYNC_JOBS, MAX_TARGET_NODES, PROTOCOL_VERSION, open, seal,
  type HelloBody, type JobBody, type ResultBody, type SignedEnvelope, type StepOutcome,
} from '../protocol/wire.js'

export interface CoordinatorConfig {
  identity: Identity
  /** How long agents accept an immediate job's definition after it was signed. */
  jobTtlMs: number
  /** Added to the group timeouts before a run without a result is marked timed out. */
  timeoutGraceMs: number
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
  firstSeenAt: number
  lastSeenAt: number
}

export interface JobRecord {
  jobId: string
  name: string
  status: 'active' | 'completed'
  createdAt: number
  template: JobTemplate
  envelope: SignedEnvelope
  instanceIds: string[]
}

export type InstanceStatus = 'running' | 'success' | 'failure'

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
}

export interface RunRecord {
  runId: string
  instanceId: string
  jobId: string
  nodeId: string
  group: number
  batch: number
  status: 'pending' | 'running' | 'success' | 'failure' | 'timeout'
  reason?: string
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
}

export interface SubmitProblem {
  path: string
  message: string
}

export type CoordinatorEvent =
  | { type: 'submit'; requestId: string; jobId: string; template: JobTemplate }
  | { type: 'rpc'; requestId: string; envelope: unknown; peerId: string }
  | { type: 'tick' }

export type SubmitOutcome =
  | { ok: true; jobId: string; instanceIds: string[]; targets: number }
  | { ok: false; problems: SubmitProblem[] }

export type CoordinatorEffect =
  | { type: 'persist'; puts: { key: string; value: unknown }[]; dels: string[] }
  | { type: 'publish'; envelope: SignedEnvelope }
  | { type: 'reply_rpc'; requestId: string; envelope: SignedEnvelope }
  | { type: 'reply_submit'; requestId: string; outcome: SubmitOutcome }
  | { type: 'log'; level: 'debug' | 'info' | 'warn'; msg: string; fields?: Record<string, unknown> }

export function emptyCoordinatorState(): CoordinatorState {
  return { jobs: new Map(), instances: new Map(), runs: new Map(), nodes: new Map() }
}

const key = {
  job: (id: string) => `job/${id}`,
  instance: (id: string) => `instance/${id}`,
  run: (id: string) => `run/${id}`,
  node: (id: string) => `node/${id}`,
}

export function restoreCoordinator(records: Iterable<[string, unknown]>): CoordinatorState {
  const state = emptyCoordinatorState()
  for (const [k, v] of records) {
    if (k.startsWith('job/')) { const r = v as JobRecord; state.jobs.set(r.jobId, r) }
    else if (k.startsWith('instance/')) { const r = v as InstanceRecord; state.instances.set(r.id, r) }
    else if (k.startsWith('run/')) { const r = v as RunRecord; state.runs.set(r.runId, r) }
    else if (k.startsWith('node/')) { const r = v as NodeRecord; state.nodes.set(r.nodeId, r) }
  }
  return state
}

export function coordinatorStep(state: CoordinatorState, config: CoordinatorConfig, event: CoordinatorEvent, now: number): CoordinatorEffect[] {
  const effects: CoordinatorEffect[] = []
  switch (event.type) {
    case 'submit':
      onSubmit(state, config, event.requestId, event.jobId, event.template, now, effects)
      break
    case 'rpc':
      onRpc(state, config, event.requestId, event.envelope, event.peerId, now, effects)
      break
    case 'tick':
      onTick(state, now, effects)
      break
  }
  return effects
}

/** Resolves a template's targets against the registry: one node list per group, in rollout order. */
export function resolveTargets(state: CoordinatorState, template: JobTemplate): { groups: { nodes: string[] }[] } | { problems: SubmitProblem[] } {
  const problems: SubmitProblem[] = []
  const groups: { nodes: string[] }[] = []
  const taken = new Map<string, number>()
  template.target.groups.forEach((g, gi) => {
    const path = `target.groups[${gi}]`
    let nodes: string[] = []
    switch (g.nodeListType) {
      case 'nodes':
        nodes = [...new Set(g.nodeIdentifiers ?? [])]
        break
      case 'filter': {
        const attributes = g.filter?.constraints?.attributes ?? []
        const skills = g.filter?.constraints?.skills ?? []
        if (skills.length > 0) problems.push({ path: `${path}.filter.constraints.skills`, message: 'skill constraints are not supported by this coordinator yet; target by attributes or node ids' })
        const matchers: ((facts: Record<string, string>) => boolean)[] = []
        attributes.forEach((a, ai) => {
          const values = a.value ?? []
          const op = a.operator.toUpperCase()
          if (op === '=' || op === 'EQ' || op === 'EQUALS') matchers.push((f) => values.includes(f[a.name] ?? '\u0000'))
          else if (op === '!=' || op === 'NE') matchers.push((f) => !values.includes(f[a.name] ?? '\u0000'))
          else if (op === 'MATCHES') {
            const res: RegExp[] = []
            for (const v of values) {
              try { res.push(new RegExp(v)) } catch (err) {
                problems.push({ path: `${path}.filter.constraints.attributes[${ai}].value`, message: `invalid regular expression ${JSON.stringify(v)}: ${(err as Error).message}` })
              }
            }
            matchers.push((f) => f[a.name] !== undefined && res.some((r) => r.test(f[a.name]!)))
          } else {
            problems.push({ path: `${path}.filter.constraints.attributes[${ai}].operator`, message: `unsupported operator ${JSON.stringify(a.operator)}; expected one of "=", "!=", "MATCHES"` })
          }
        })
        nodes = [...state.nodes.values()].filter((n) => matchers.every((m) => m(n.facts))).map((n) => n.nodeId).sort()
        break
      }
      case 'savedList':
        problems.push({ path: `${path}.listId`, message: `unknown saved list ${JSON.stringify(g.listId)}; no saved lists are defined on this coordinator` })
        break
      case 'savedFilter':
        problems.push({ path: `${path}.filterId`, message: `unknown saved filter ${JSON.stringify(g.filterId)}; no saved filters are defined on this coordinator` })
        break
    }
    const kept: string[] = []
    for (const n of nodes) {
      // A node belongs to the first group that names it: it runs the job once.
      if (taken.has(n)) continue
      taken.set(n, gi)
      kept.push(n)
    }
    if (kept.length > MAX_TARGET_NODES) problems.push({ path, message: `${kept.length} nodes exceed the limit of ${MAX_TARGET_NODES} per group` })
    groups.push({ nodes: kept })
  })
  if (problems.length > 0) return { problems }
  if (groups.every((g) => g.nodes.length === 0)) return { problems: [{ path: 'target.groups', message: 'the target matches no node; check the node ids or filters (`chorus nodes` lists the known nodes)' }] }
  return { groups }
}

function deadlineFor(template: JobTemplate, start: number, graceMs: number): number {
  const timeouts = template.target.groups.map((g) => g.timeoutSeconds * 1000)
  const span = template.target.executionType === 'sequential' ? timeouts.reduce((a, b) => a + b, 0) : Math.max(0, ...timeouts)
  return start + span + graceMs
}

function onSubmit(state: CoordinatorState, config: CoordinatorConfig, requestId: string, jobId: string, template: JobTemplate, now: number, effects: CoordinatorEffect[]): void {
  if (template.scheduleRule !== 'immediate') {
    effects.push({ type: 'reply_submit', requestId, outcome: { ok: false, problems: [{ path: 'scheduleRule', message: `recurring and future schedules are not supported yet; use "immediate"` }] } })
    return
  }
  const resolved = resolveTargets(state, template)
  if ('problems' in resolved) {
    effects.push({ type: 'reply_submit', requestId, outcome: { ok: false, problems: resolved.problems } })
    return
  }
  const body: JobBody = { type: 'job', v: PROTOCOL_VERSION, jobId, issuedAt: now, expiresAt: now + config.jobTtlMs, template, resolved }
  const envelope = seal(config.identity, body)
  const instanceId = instanceIdFor(jobId, now)
  const job: JobRecord = { jobId, name: template.name, status: 'active', createdAt: now, template, envelope, instanceIds: [instanceId] }
  const instance: InstanceRecord = { id: instanceId, jobId, status: 'running', occurrenceAt: now, createdAt: now, updatedAt: now, deadlineAt: deadlineFor(template, now, config.timeoutGraceMs), runIds: [] }
  const puts: { key: string; value: unknown }[] = [{ key: key.job(jobId), value: job }]
  resolved.groups.forEach((g, gi) => {
    const size = batchSizeFor(template.target.groups[gi]!.batchSize, g.nodes.length)
    g.nodes.forEach((nodeId, i) => {
      const runId = runIdFor(instanceId, nodeId)
      const run: RunRecord = { runId, instanceId, jobId, nodeId, group: gi, batch: Math.floor(i / size), status: 'pending', steps: [] }
      state.runs.set(runId, run)
      instance.runIds.push(runId)
      puts.push({ key: key.run(runId), value: run })
    })
  })
  state.jobs.set(jobId, job)
  state.instances.set(instanceId, instance)
  puts.push({ key: key.instance(instanceId), value: instance })
  effects.push({ type: 'persist', puts, dels: [] })
  effects.push({ type: 'publish', envelope })
  effects.push({ type: 'log', level: 'info', msg: 'job published', fields: { jobId, instanceId, targets: instance.runIds.length } })
  effects.push({ type: 'reply_submit', requestId, outcome: { ok: true, jobId, instanceIds: [instanceId], targets: instance.runIds.length } })
}

function reply(config: CoordinatorConfig, requestId: string, fields: { ok: boolean; error?: string; ackRunIds?: string[]; jobs?: SignedEnvelope[] }): CoordinatorEffect {
  return { type: 'reply_rpc', requestId, envelope: seal(config.identity, { type: 'reply', v: PROTOCOL_VERSION, ackRunIds: [], jobs: [], ...fields }) }
}

function onRpc(state: CoordinatorState, config: CoordinatorConfig, requestId: string, envelope: unknown, peerId: string, now: number, effects: CoordinatorEffect[]): void {
  const opened = open(envelope)
  if (!opened.ok) {
    effects.push({ type: 'log', level: 'warn', msg: `refused rpc: ${opened.reason}`, fields: { peerId } })
    effects.push(reply(config, requestId, { ok: false, error: opened.reason }))
    return
  }
  const body = opened.body
  switch (body.type) {
    case 'hello':
      onHello(state, config, requestId, body, opened.signer, now, effects)
      return
    case 'result':
      onResult(state, config, requestId, body, opened.signer, now, effects)
      return
    case 'sync': {
      const node = state.nodes.get(body.nodeId)
      if (!node || node.publicKey !== opened.signer) {
        effects.push(reply(config, requestId, { ok: false, error: `unknown node ${body.nodeId} or key mismatch; send hello first` }))
        return
      }
      touch(state, node, now, effects)
      // Active, unexpired jobs that target this node, newest last, bounded.
      const jobs: SignedEnvelope[] = []
      for (const job of state.jobs.values()) {
        if (job.status !== 'active' || job.createdAt + config.jobTtlMs <= now) continue
        const targeted = job.instanceIds.some((iid) => state.runs.has(runIdFor(iid, body.nodeId)))
        if (targeted) jobs.push(job.envelope)
      }
      effects.push(reply(config, requestId, { ok: true, jobs: jobs.slice(-MAX_SYNC_JOBS) }))
      return
    }
    default:
      effects.push(reply(config, requestId, { ok: false, error: `unexpected message type ${body.type}` }))
  }
}

function touch(state: CoordinatorState, node: NodeRecord, now: number, effects: CoordinatorEffect[]): void {
  // lastSeenAt is kept in memory on every contact but persisted at most once a minute.
  const persistedStale = now - node.lastSeenAt > 60_000
  node.lastSeenAt = now
  if (persistedStale) effects.push({ type: 'persist', puts: [{ key: key.node(node.nodeId), value: node }], dels: [] })
  void state
}

function onHello(state: CoordinatorState, config: CoordinatorConfig, requestId: string, body: HelloBody, signer: string, now: number, effects: CoordinatorEffect[]): void {
  const existing = state.nodes.get(body.nodeId)
  if (existing && existing.publicKey !== signer) {
    // Trust on first use: a node id stays bound to the key that first registered it.
    effects.push({ type: 'log', level: 'warn', msg: 'refused hello: node id is registered with another key', fields: { nodeId: body.nodeId } })
    effects.push(reply(config, requestId, { ok: false, error: `node id ${body.nodeId} is registered with another key` }))
    return
  }
  const node: NodeRecord = {
    nodeId: body.nodeId, publicKey: signer, peerId: body.peerId, facts: body.facts, agentVersion: body.agentVersion,
    firstSeenAt: existing?.firstSeenAt ?? now, lastSeenAt: now,
  }
  state.nodes.set(body.nodeId, node)
  effects.push({ type: 'persist', puts: [{ key: key.node(body.nodeId), value: node }], dels: [] })
  if (!existing) effects.push({ type: 'log', level: 'info', msg: 'node registered', fields: { nodeId: body.nodeId, peerId: body.peerId } })
  effects.push(reply(config, requestId, { ok: true }))
}

function onResult(state: CoordinatorState, config: CoordinatorConfig, requestId: string, body: ResultBody, signer: string, now: number, effects: CoordinatorEffect[]): void {
  const node = state.nodes.get(body.nodeId)
  if (!node || node.publicKey !== signer) {
    effects.push(reply(config, requestId, { ok: false, error: `result for node ${body.nodeId} is not signed by that node's registered key; send hello first` }))
    return
  }
  touch(state, node, now, effects)
  const run = state.runs.get(body.runId)
  if (!run || run.nodeId !== body.nodeId || run.instanceId !== body.instanceId || runIdFor(body.instanceId, body.nodeId) !== body.runId) {
    effects.push({ type: 'log', level: 'warn', msg: 'refused a result for a run this coordinator does not expect', fields: { runId: body.runId, nodeId: body.nodeId } })
    // Acknowledge anyway: the agent must not retry a result that can never be accepted.
    effects.push(reply(config, requestId, { ok: false, error: `run ${body.runId} is not expected from node ${body.nodeId}`, ackRunIds: [body.runId] }))
    return
  }
  if (run.receivedAt !== undefined) {
    // Stored once already: a re-send after a lost acknowledgement. Acknowledge again.
    effects.push({ type: 'log', level: 'debug', msg: 'duplicate result acknowledged again', fields: { runId: body.runId, nodeId: body.nodeId } })
    effects.push(reply(config, requestId, { ok: true, ackRunIds: [body.runId] }))
    return
  }
  run.status = body.status
  run.startedAt = body.startedAt
  run.finishedAt = body.finishedAt
  run.receivedAt = now
  run.steps = body.steps
  if (body.reason) run.reason = body.reason
  else delete run.reason
  const puts: { key: string; value: unknown }[] = [{ key: key.run(run.runId), value: run }]
  const instance = state.instances.get(run.instanceId)
  if (instance) {
    instance.updatedAt = now
    const job = state.jobs.get(instance.jobId)
    const jobStatusBefore = job?.status
    settleInstance(state, instance, now)
    puts.push({ key: key.instance(instance.id), value: instance })
    if (job && job.status !== jobStatusBefore) puts.push({ key: key.job(job.jobId), value: job })
  }
  // Stored durably before the acknowledgement leaves: an agent forgets a result only once it is safe here.
  effects.push({ type: 'persist', puts, dels: [] })
  effects.push({ type: 'log', level: 'info', msg: 'result stored', fields: { runId: body.runId, nodeId: body.nodeId, status: body.status, instanceStatus: instance?.status } })
  effects.push(reply(config, requestId, { ok: true, ackRunIds: [body.runId] }))
}

const TERMINAL = new Set(['success', 'failure', 'timeout'])

/**
 * An instance is decided once every run is terminal. It succeeds when every group meets
 * every success criterion: a `success` criterion needs at least numRuns successful runs; a
 * `failure` criterion is a failure budget, met while fewer than numRuns runs failed. A group
 * without criteria needs all its runs to succeed. Once decided the status does not change
 * (as in Courier: later reports from nodes update the run, not the instance).
 */
export function settleInstance(state: CoordinatorState, instance: InstanceRecord, now: number): void {
  if (instance.status !== 'running') return
  const runs = instance.runIds.map((id) => state.runs.get(id)!).filter(Boolean)
  if (!runs.every((r) => TERMINAL.has(r.status))) return
  const job = state.jobs.get(instance.jobId)
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
  if (job && job.instanceIds.every((id) => state.instances.get(id)?.status !== 'running')) job.status = 'completed'
}

function onTick(state: CoordinatorState, now: number, effects: CoordinatorEffect[]): void {
  for (const instance of state.instances.values()) {
    if (instance.status !== 'running' || instance.deadlineAt > now) continue
    const puts: { key: string; value: unknown }[] = []
    for (const runId of instance.runIds) {
      const run = state.runs.get(runId)
      if (!run || TERMINAL.has(run.status)) continue
      run.status = 'timeout'
      run.reason = 'no result before the group timeout: the node was unreachable or still running'
      puts.push({ key: key.run(runId), value: run })
    }
    settleInstance(state, instance, now)
    puts.push({ key: key.instance(instance.id), value: instance })
    const job = state.jobs.get(instance.jobId)
    if (job) puts.push({ key: key.job(job.jobId), value: job })
    effects.push({ type: 'persist', puts, dels: [] })
    effects.push({ type: 'log', level: 'warn', msg: 'instance deadline passed', fields: { instanceId: instance.id, status: instance.status } })
  }
}

export function jobKeyFor(jobId: string): string {
  return key.job(jobId)
}
