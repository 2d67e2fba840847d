// Schedules in the cores, fed events and times by hand: recurring occurrences, exceptions,
// cancellations, restarts and clock jumps.
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { agentStep, emptyAgentState, restoreAgent, DEFAULT_AGENT_TIMING, type AgentConfig, type AgentEffect, type AgentState } from '../agent/core.js'
import { coordinatorStep, emptyCoordinatorState, restoreCoordinator, DEFAULT_COORDINATOR_TIMING, nextOccurrencesOf, type CoordinatorEffect } from '../coordinator/core.js'
import { ALLOW_EVERYTHING } from '../agent/allowlist.js'
import { generateIdentity } from '../protocol/keys.js'
import { JobTemplateSchema, type JobTemplate } from '../protocol/template.js'
import { PROTOCOL_VERSION, open, seal, type SignedEnvelope } from '../protocol/wire.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { syncReply, ticketReply } from './helpers/tickets.js'
import { enrolHello } from './helpers/members.js'

const coordinator = generateIdentity()
const T0 = Date.UTC(2026, 10, 24, 5, 0, 0)
const stamp = (ms: number) => new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')

const base = JobTemplateSchema.parse(JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8')))

function template(rule: string, patch: (t: JobTemplate) => void = () => {}): JobTemplate {
  const t = structuredClone(base)
  t.scheduleRule = rule
  t.actions.steps = [t.actions.steps[0]!]
  patch(t)
  return JobTemplateSchema.parse(t)
}

function config(): AgentConfig {
  return { nodeId: 'node-1', coordinatorKey: coordinator.publicKey, identity: generateIdentity(), os: 'linux', allow: ALLOW_EVERYTHING, skills: { 'chef-platform/shell-interpreter': ['1.0.0'] }, ...DEFAULT_AGENT_TIMING }
}

function jobEnvelope(t: JobTemplate, issuedAt = T0, jobId = 'job-r'): SignedEnvelope {
  return seal(coordinator, { type: 'job', v: PROTOCOL_VERSION, jobId, issuedAt, expiresAt: Number.MAX_SAFE_INTEGER, template: t, resolved: { groups: [{ size: 1 }] } })
}

/**
 * Feeds a recurring job by gossip, then the coordinator's sync reply with this node's ticket
 * (first in the only group): only then does the node start the job's schedule. Returns the
 * effects of both events.
 */
function accept(state: AgentState, cfg: AgentConfig, envelope: SignedEnvelope, now: number): AgentEffect[] {
  const jobId = (JSON.parse(envelope.body) as { jobId: string }).jobId
  const onJob = agentStep(state, cfg, { type: 'job', envelope, via: 'gossip' }, now)
  expect(ofType(onJob, 'run_step')).toHaveLength(0)
  expect(state.cursors.has(jobId)).toBe(false)
  return [...onJob, ...agentStep(state, cfg, { type: 'reply', envelope: ticketReply(coordinator, jobId, cfg.nodeId, cfg.identity.publicKey, { group: 0, position: 0 }), to: 'sync' }, now)]
}

const ofType = <T extends AgentEffect['type']>(effects: AgentEffect[], type: T) => effects.filter((e): e is Extract<AgentEffect, { type: T }> => e.type === type)

/** Completes every step the agent starts, at once, and returns the occurrences it started. */
function drive(state: AgentState, cfg: AgentConfig, effects: AgentEffect[], now: number, db?: Map<string, unknown>): number[] {
  const started: number[] = []
  const queue = [...effects]
  while (queue.length > 0) {
    const e = queue.shift()!
    if (e.type === 'persist' && db) {
      for (const p of e.puts) db.set(p.key, structuredClone(p.value))
      for (const d of e.dels) db.delete(d)
    }
    if (e.type === 'run_step') {
      started.push(state.runs.get(e.request.runId)!.occurrenceAt)
      queue.push(...agentStep(state, cfg, { type: 'step_done', runId: e.request.runId, stepNumber: e.request.stepNumber, attempt: e.request.attempt, result: { status: 'success', exitCode: 0, stdout: '', stderr: '' } }, now))
    }
  }
  return started
}

function tickThrough(state: AgentState, cfg: AgentConfig, from: number, to: number, db?: Map<string, unknown>): number[] {
  const started: number[] = []
  for (let t = from; t <= to; t += 500) started.push(...drive(state, cfg, agentStep(state, cfg, { type: 'tick' }, t), t, db))
  return started
}

describe('recurring jobs in the agent core', () => {
  const rule = `RRULE:DTSTART=${stamp(T0)};FREQ=SECONDLY;INTERVAL=2;COUNT=3`

  it('runs each occurrence once, at its time, from the signed definition and the node\'s ticket', () => {
    const state = emptyAgentState()
    const cfg = config()
    const started = drive(state, cfg, accept(state, cfg, jobEnvelope(template(rule)), T0), T0)
    started.push(...tickThrough(state, cfg, T0 + 500, T0 + 10_000))
    expect(started).toEqual([T0, T0 + 2000, T0 + 4000])
    const instances = [...state.runs.values()].map((r) => r.instanceId)
    expect(new Set(instances).size).toBe(3)
    expect(instances).toContain(instanceIdFor('job-r', T0 + 2000))
  })

  it('never fires an occurrence twice across a restart or a clock that jumps backwards', () => {
    const state = emptyAgentState()
    const cfg = config()
    const db = new Map<string, unknown>()
    const started = drive(state, cfg, accept(state, cfg, jobEnvelope(template(rule)), T0), T0, db)
    started.push(...tickThrough(state, cfg, T0 + 500, T0 + 2500, db))
    expect(started).toEqual([T0, T0 + 2000])
    // Restart from what was persisted, with the clock set back 10 s.
    const { state: again, effects } = restoreAgent(db.entries(), cfg, T0 - 10_000)
    started.push(...drive(again, cfg, effects, T0 - 10_000, db))
    started.push(...tickThrough(again, cfg, T0 - 10_000, T0 + 3_000, db))
    expect(started).toEqual([T0, T0 + 2000])
    started.push(...tickThrough(again, cfg, T0 + 3_500, T0 + 8_000, db))
    expect(started).toEqual([T0, T0 + 2000, T0 + 4000])
  })

  it('forgets acknowledged runs after the retention period without ever re-running their occurrences', () => {
    const state = emptyAgentState()
    const cfg = { ...config(), jobRetentionMs: 10_000 }
    drive(state, cfg, accept(state, cfg, jobEnvelope(template(rule)), T0), T0)
    tickThrough(state, cfg, T0 + 500, T0 + 5_000)
    expect(state.runs.size).toBe(3)
    const ack = syncReply(coordinator, { ackRunIds: [...state.outbox.keys()] })
    agentStep(state, cfg, { type: 'reply', envelope: ack, to: 'result' }, T0 + 5_100)
    expect(state.outbox.size).toBe(0)
    const later = tickThrough(state, cfg, T0 + 16_000, T0 + 20_000)
    expect(later).toEqual([])
    expect(state.runs.size).toBe(0)
    expect(state.jobs.has('job-r')).toBe(true) // the job stays: its cursor keeps old occurrences from running again
  })

  it('records occurrences missed while down as skipped, by policy, never silently', () => {
    const state = emptyAgentState()
    const cfg = config()
    const daily = template(`RRULE:DTSTART=${stamp(T0)};FREQ=MINUTELY;COUNT=10`, (t) => { t.chorus = { missed: { policy: 'skip' } } })
    drive(state, cfg, accept(state, cfg, jobEnvelope(daily), T0), T0)
    // The clock jumps 5 minutes forwards (agent down or suspended).
    const effects = agentStep(state, cfg, { type: 'tick' }, T0 + 5 * 60_000 + 30_000)
    const results = ofType(effects, 'send').map((s) => open(s.envelope)).flatMap((o) => (o.ok && o.body.type === 'result' ? [o.body] : []))
    const skipped = results.filter((r) => r.status === 'skipped')
    expect(skipped.map((r) => r.occurrenceAt)).toEqual([1, 2, 3, 4].map((m) => T0 + m * 60_000))
    expect(skipped[0]!.reason).toMatch(/missed: the agent was not running/)
    // The occurrence at +5 min is 30 s late: within the skip policy's tolerance, it runs.
    expect(ofType(effects, 'run_step').map((e) => state.runs.get(e.request.runId)!.occurrenceAt)).toEqual([T0 + 5 * 60_000])
  })

  it('leaves out occurrences inside an exception window and stops on cancellation', () => {
    const state = emptyAgentState()
    const cfg = config()
    const t = template(`RRULE:DTSTART=${stamp(T0)};FREQ=SECONDLY;INTERVAL=2;COUNT=5`, (x) => {
      x.exceptionRules = [{ rrule: `RRULE:DTSTART=${stamp(T0 + 2000)};FREQ=YEARLY;COUNT=1`, duration: 1 }]
    })
    const started = drive(state, cfg, accept(state, cfg, jobEnvelope(t), T0), T0)
    expect(started).toEqual([T0])
    // The window [T0+2s, T0+62s) excludes every later occurrence of this short rule.
    expect(tickThrough(state, cfg, T0 + 500, T0 + 10_000)).toEqual([])

    const s2 = emptyAgentState()
    const r2 = template(`RRULE:DTSTART=${stamp(T0)};FREQ=SECONDLY;INTERVAL=2;COUNT=5`)
    drive(s2, cfg, accept(s2, cfg, jobEnvelope(r2), T0), T0)
    const cancel = seal(coordinator, { type: 'job_state', v: PROTOCOL_VERSION, jobId: 'job-r', version: 2, status: 'active', canceledOccurrences: [T0 + 4000], globalExceptions: [], issuedAt: T0 })
    agentStep(s2, cfg, { type: 'job', envelope: cancel, via: 'gossip' }, T0 + 100)
    expect(tickThrough(s2, cfg, T0 + 500, T0 + 4_500)).toEqual([T0 + 2000])
    const stop = seal(coordinator, { type: 'job_state', v: PROTOCOL_VERSION, jobId: 'job-r', version: 3, status: 'canceled', canceledOccurrences: [T0 + 4000], globalExceptions: [], issuedAt: T0 })
    agentStep(s2, cfg, { type: 'job', envelope: stop, via: 'gossip' }, T0 + 4_700)
    // An older state arriving late does not undo the cancellation.
    agentStep(s2, cfg, { type: 'job', envelope: cancel, via: 'gossip' }, T0 + 4_800)
    expect(tickThrough(s2, cfg, T0 + 5_000, T0 + 20_000)).toEqual([])
  })
})

describe('recurring jobs wait for the node\'s ticket', () => {
  const rule = `RRULE:DTSTART=${stamp(T0)};FREQ=MINUTELY;COUNT=10`

  it('starts the schedule only when the ticket comes, handling every occurrence since the definition was signed', () => {
    const state = emptyAgentState()
    const cfg = config()
    const t = template(rule, (x) => { x.chorus = { missed: { policy: 'skip' } } })
    const onJob = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(t), via: 'gossip' }, T0)
    expect(ofType(onJob, 'run_step')).toHaveLength(0)
    // No ticket yet (the coordinator is slow to answer): the node runs nothing and keeps no cursor.
    expect(tickThrough(state, cfg, T0, T0 + 150_000)).toEqual([])
    expect(state.runs.size).toBe(0)
    expect(state.cursors.has('job-r')).toBe(false)
    // The ticket arrives 2.5 min late: the occurrences at +0 and +1 min are reported missed, the one at +2 min (30 s late) runs.
    const now = T0 + 150_000
    const effects = agentStep(state, cfg, { type: 'reply', envelope: ticketReply(coordinator, 'job-r', 'node-1', cfg.identity.publicKey, { group: 0, position: 0 }), to: 'sync' }, now)
    const results = ofType(effects, 'send').map((s) => open(s.envelope)).flatMap((o) => (o.ok && o.body.type === 'result' ? [o.body] : []))
    expect(results.filter((r) => r.status === 'skipped').map((r) => r.occurrenceAt)).toEqual([T0, T0 + 60_000])
    expect(drive(state, cfg, effects, now)).toEqual([T0 + 120_000])
    expect(tickThrough(state, cfg, now + 500, T0 + 185_000)).toEqual([T0 + 180_000])
  })

  it('never runs an occurrence of a recurring job whose ticket says the node is not targeted', () => {
    const state = emptyAgentState()
    const cfg = config()
    agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(template(rule)), via: 'gossip' }, T0)
    const effects = agentStep(state, cfg, { type: 'reply', envelope: ticketReply(coordinator, 'job-r', 'node-1', cfg.identity.publicKey, null), to: 'sync' }, T0)
    expect(drive(state, cfg, effects, T0)).toEqual([])
    expect(tickThrough(state, cfg, T0 + 500, T0 + 11 * 60_000)).toEqual([])
    expect(state.runs.size).toBe(0)
    expect(ofType(effects, 'send').filter((s) => s.kind === 'result')).toHaveLength(0)
  })
})

describe('recurring jobs in the coordinator core', () => {
  const cfg = { identity: coordinator, ...DEFAULT_COORDINATOR_TIMING }
  const agent = generateIdentity()

  function setup() {
    const state = emptyCoordinatorState()
    enrolHello(state, cfg, agent, 'node-1', T0, { kernel_name: 'Linux' })
    return state
  }

  it('creates an instance per occurrence, marks excluded ones with the reason, and loses none across a restart', () => {
    const state = setup()
    const db = new Map<string, unknown>()
    const apply = (effects: CoordinatorEffect[]) => {
      for (const e of effects) if (e.type === 'persist') { for (const p of e.puts) db.set(p.key, structuredClone(p.value)); for (const d of e.dels) db.delete(d) }
    }
    for (const [k, v] of [...state.nodes].map(([id, n]) => [`node/${id}`, n] as const)) db.set(k, v)
    const t = template(`RRULE:DTSTART=${stamp(T0)};FREQ=SECONDLY;INTERVAL=2;COUNT=3`, (x) => {
      x.exceptionRules = [{ rrule: `RRULE:DTSTART=${stamp(T0 + 4000)};FREQ=YEARLY;COUNT=1`, duration: 1 }]
    })
    apply(coordinatorStep(state, cfg, { type: 'submit', requestId: 's', jobId: 'job-r', template: t }, T0 - 500))
    apply(coordinatorStep(state, cfg, { type: 'tick' }, T0 + 2_100))
    expect([...state.instances.values()].filter((i) => i.jobId === 'job-r')).toHaveLength(2)
    expect(state.jobs.get('job-r')!.history.count).toBe(2)
    // The coordinator dies; it comes back after the last occurrence and catches up.
    const again = restoreCoordinator(db.entries())
    apply(coordinatorStep(again, cfg, { type: 'tick' }, T0 + 9_000))
    const instances = [...again.instances.values()].filter((i) => i.jobId === 'job-r').sort((a, b) => a.occurrenceAt - b.occurrenceAt)
    expect(instances.map((i) => i.occurrenceAt)).toEqual([T0, T0 + 2000, T0 + 4000])
    expect(instances[2]!.status).toBe('excluded')
    expect(instances[2]!.reason).toMatch(/exception window exceptionRules\[0\]/)
    const next = nextOccurrencesOf(again, 'job-r', T0 - 1000, 5)!
    expect(next.map((n) => [n.at, !!n.excluded])).toEqual([[T0, false], [T0 + 2000, false], [T0 + 4000, true]])
  })

  it('accepts a result for an occurrence it has not reached yet and creates its instance', () => {
    const state = setup()
    coordinatorStep(state, cfg, { type: 'submit', requestId: 's', jobId: 'job-r', template: template(`RRULE:DTSTART=${stamp(T0)};FREQ=SECONDLY;INTERVAL=2;COUNT=3`) }, T0 - 500)
    const instanceId = instanceIdFor('job-r', T0 + 2000)
    const body = { type: 'result' as const, v: PROTOCOL_VERSION, runId: runIdFor(instanceId, 'node-1'), jobId: 'job-r', instanceId, nodeId: 'node-1', occurrenceAt: T0 + 2000, group: 0, batch: 0, status: 'success' as const, startedAt: T0 + 2000, finishedAt: T0 + 2100, steps: [] }
    const effects = coordinatorStep(state, cfg, { type: 'rpc', requestId: 'r', envelope: seal(agent, body), peerId: 'p' }, T0 + 1_000)
    const reply = effects.find((e) => e.type === 'reply_rpc')!
    const opened = open((reply as { envelope: SignedEnvelope }).envelope)
    expect(opened.ok && opened.body.type === 'reply' && opened.body.ok).toBe(true)
    expect(state.instances.get(instanceId)!.status).toBe('success')
    // A made-up occurrence is refused.
    const bogus = { ...body, occurrenceAt: T0 + 1000, instanceId: instanceIdFor('job-r', T0 + 1000), runId: runIdFor(instanceIdFor('job-r', T0 + 1000), 'node-1') }
    coordinatorStep(state, cfg, { type: 'rpc', requestId: 'b', envelope: seal(agent, bogus), peerId: 'p' }, T0 + 1_000)
    expect(state.instances.has(instanceIdFor('job-r', T0 + 1000))).toBe(false)
  })
})
