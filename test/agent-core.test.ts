// The agent core, fed events: no network, no clock, no disk.
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { agentStep, coordinatorAway, emptyAgentState, restoreAgent, COORDINATOR_AWAY_MS, DEFAULT_AGENT_TIMING, DEFERRED_DEL_MAX_MS, nextTickWork, type AgentConfig, type AgentEffect, type AgentState } from '../agent/core.js'
import { generateIdentity } from '../protocol/keys.js'
import { JobTemplateSchema, type JobTemplate } from '../protocol/template.js'
import { PROTOCOL_VERSION, open, seal, type SignedEnvelope } from '../protocol/wire.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { ALLOW_EVERYTHING } from '../agent/allowlist.js'
import { syncReply, ticketEnvelope, ticketReply, type Place } from './helpers/tickets.js'
import { persistInto } from './helpers/persist.js'
import { PEER_PROGRESS_REPEAT_MS } from '../agent/turns.js'

const coordinator = generateIdentity()
const stranger = generateIdentity()
const agentId = generateIdentity()
const T0 = 1_700_000_000_000

const baseTemplate = JobTemplateSchema.parse(JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8')))

function template(patch: (t: JobTemplate) => void = () => {}): JobTemplate {
  const t = structuredClone(baseTemplate)
  patch(t)
  return t
}

function config(nodeId = 'node-1'): AgentConfig {
  return { nodeId, coordinatorKey: coordinator.publicKey, identity: agentId, os: 'linux', allow: ALLOW_EVERYTHING, skills: { 'chef-platform/shell-interpreter': ['1.0.0'] }, ...DEFAULT_AGENT_TIMING }
}

function jobEnvelope(opts: { jobId?: string; sizes?: number[]; t?: JobTemplate; signer?: typeof coordinator; issuedAt?: number; expiresAt?: number } = {}): SignedEnvelope {
  return seal(opts.signer ?? coordinator, {
    type: 'job', v: PROTOCOL_VERSION, jobId: opts.jobId ?? 'job-1', issuedAt: opts.issuedAt ?? T0, expiresAt: opts.expiresAt ?? T0 + 3_600_000,
    template: opts.t ?? template(), resolved: { groups: (opts.sizes ?? [2]).map((size) => ({ size })) },
  })
}

/** The coordinator's answer to the agent's ticket request: node-1 (this agent's key) first in group 0 unless told otherwise. */
function myTicket(cfg: AgentConfig, jobId = 'job-1', place: Place = { group: 0, position: 0 }): SignedEnvelope {
  return ticketReply(coordinator, jobId, cfg.nodeId, cfg.identity.publicKey, place)
}

/** Feeds a job by gossip, then the coordinator's sync reply with this node's ticket; returns the effects of both, in order. */
function accept(state: AgentState, cfg: AgentConfig, now: number, opts: Parameters<typeof jobEnvelope>[0] = {}, place: Place = { group: 0, position: 0 }): AgentEffect[] {
  const onJob = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(opts), via: 'gossip' }, now)
  const onTicket = agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg, opts.jobId, place), to: 'sync' }, now)
  return [...onJob, ...onTicket]
}

function syncsIn(effects: AgentEffect[]) {
  return ofType(effects, 'send').filter((e) => e.kind === 'sync').map((e) => {
    const o = open(e.envelope, [agentId.publicKey])
    if (!o.ok || o.body.type !== 'sync') throw new Error('not a sync')
    return o.body
  })
}

const ofType = <T extends AgentEffect['type']>(effects: AgentEffect[], type: T) => effects.filter((e): e is Extract<AgentEffect, { type: T }> => e.type === type)

function runStepFor(effects: AgentEffect[]) {
  const steps = ofType(effects, 'run_step')
  expect(steps).toHaveLength(1)
  return steps[0]!
}

function finishStep(state: AgentState, cfg: AgentConfig, e: Extract<AgentEffect, { type: 'run_step' }>, status: 'success' | 'failure', now: number, exitCode = status === 'success' ? 0 : 1) {
  return agentStep(state, cfg, { type: 'step_done', runId: e.request.runId, stepNumber: e.request.stepNumber, attempt: e.request.attempt, result: { status, exitCode, stdout: 'out\n', stderr: '' } }, now)
}

describe('agent core', () => {
  it('runs a targeted job once its ticket arrives: persists the run before starting the step, then sends a signed result', () => {
    const state = emptyAgentState()
    const cfg = config()
    const onJob = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0 + 10)
    // The definition alone says nothing of this node's place: it is stored, and nothing runs yet.
    expect(ofType(onJob, 'run_step')).toHaveLength(0)
    expect(state.runs.size).toBe(0)
    expect(ofType(onJob, 'persist').flatMap((p) => p.puts.map((x) => x.key))).toEqual(['job/job-1'])
    const effects = agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg), to: 'sync' }, T0 + 10)
    const kinds = effects.map((e) => e.type)
    expect(kinds.indexOf('persist')).toBeGreaterThanOrEqual(0)
    expect(kinds.indexOf('persist')).toBeLessThan(kinds.indexOf('run_step'))
    const persistedBeforeStep = effects.slice(0, kinds.indexOf('run_step')).flatMap((e) => (e.type === 'persist' ? e.puts.map((p) => p.key) : []))
    expect(persistedBeforeStep).toEqual(expect.arrayContaining([`run/${runIdFor(instanceIdFor('job-1', T0), 'node-1')}`]))
    // The ticket is written after the run it led to: a crash in between leaves a run whose job
    // has no ticket (the node asks again, the run is not created twice), never a ticket without its run.
    const persisted = effects.flatMap((e) => (e.type === 'persist' ? e.puts.map((p) => p.key) : []))
    expect(persisted.lastIndexOf('job/job-1')).toBeGreaterThan(persisted.indexOf(`run/${runIdFor(instanceIdFor('job-1', T0), 'node-1')}`))
    const step1 = runStepFor(effects)
    expect(step1.request).toMatchObject({ stepNumber: 1, attempt: 1, interpreter: 'chef-platform/shell-interpreter', inputs: { dir: '/tmp' }, timeoutMs: 10_000 })

    const after1 = finishStep(state, cfg, step1, 'success', T0 + 20)
    const step2 = runStepFor(after1)
    expect(step2.request.stepNumber).toBe(2)

    const after2 = finishStep(state, cfg, step2, 'success', T0 + 30)
    const sends = ofType(after2, 'send')
    expect(sends).toHaveLength(1)
    const kinds2 = after2.map((e) => e.type)
    expect(kinds2.indexOf('persist')).toBeLessThan(kinds2.indexOf('send'))
    const opened = open(sends[0]!.envelope, [agentId.publicKey])
    expect(opened.ok).toBe(true)
    if (!opened.ok || opened.body.type !== 'result') throw new Error('not a result')
    expect(opened.body).toMatchObject({ nodeId: 'node-1', jobId: 'job-1', status: 'success', group: 0, batch: 0, startedAt: T0 + 10, finishedAt: T0 + 30 })
    expect(opened.body.steps.map((s) => [s.number, s.status, s.attempts])).toEqual([[1, 'success', 1], [2, 'success', 1]])
    expect(state.outbox.size).toBe(1)

    // The coordinator acknowledges: the result leaves the outbox; its record is deleted with the
    // next batch the agent writes anyway, here the next job's (no write of its own for the ack).
    const ack = syncReply(coordinator, { ackRunIds: [opened.body.runId] })
    const afterAck = agentStep(state, cfg, { type: 'reply', envelope: ack }, T0 + 40)
    expect(ofType(afterAck, 'persist')).toEqual([])
    expect(state.outbox.size).toBe(0)
    const next = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope({ jobId: 'job-2' }), via: 'gossip' }, T0 + 50)
    const nextDels = ofType(next, 'persist').flatMap((p) => p.dels)
    expect(nextDels).toEqual([`outbox/${opened.body.runId}`])
    expect(ofType(next, 'persist').flatMap((p) => p.puts.map((x) => x.key))).toEqual(['job/job-2'])
  })

  it('writes an acknowledged result\'s deletion by itself when no other write comes within DEFERRED_DEL_MAX_MS', () => {
    const state = emptyAgentState()
    const cfg = config()
    agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0 + 10)
    const step1 = runStepFor(agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg), to: 'sync' }, T0 + 10))
    const step2 = runStepFor(finishStep(state, cfg, step1, 'success', T0 + 20))
    const runId = step2.request.runId
    finishStep(state, cfg, step2, 'success', T0 + 30)
    agentStep(state, cfg, { type: 'reply', envelope: syncReply(coordinator, { ackRunIds: [runId] }) }, T0 + 40)
    // A tick before the deadline writes nothing; the tick at it deletes the record.
    const early = agentStep(state, cfg, { type: 'tick' }, T0 + 40 + DEFERRED_DEL_MAX_MS - 1)
    expect(ofType(early, 'persist').flatMap((p) => p.dels)).not.toContain(`outbox/${runId}`)
    expect(nextTickWork(state, cfg, T0 + 40 + DEFERRED_DEL_MAX_MS - 1)).toBeLessThanOrEqual(T0 + 40 + DEFERRED_DEL_MAX_MS)
    const due = agentStep(state, cfg, { type: 'tick' }, T0 + 40 + DEFERRED_DEL_MAX_MS)
    expect(ofType(due, 'persist').flatMap((p) => p.dels)).toContain(`outbox/${runId}`)
    expect(state.deferredDels.keys).toEqual([])
  })

  it('takes its group, position and batch from the ticket', () => {
    const state = emptyAgentState()
    const cfg = config()
    const t = template((x) => { x.target.groups.push(structuredClone(x.target.groups[0]!)); x.target.groups[1]!.batchSize = { type: 'number', value: 2 } })
    // Group 1 has 6 nodes in batches of 2 (the job is gated); this node is 5th in it: batch 2.
    accept(state, cfg, T0, { t, sizes: [3, 6] }, { group: 1, position: 4 })
    const run = state.runs.get(runIdFor(instanceIdFor('job-1', T0), 'node-1'))!
    expect(run).toMatchObject({ group: 1, position: 4, batch: 2, gated: true, status: 'waiting' })
  })

  it('refuses jobs signed by another key, tampered jobs, replays and stale definitions', () => {
    const state = emptyAgentState()
    const cfg = config()
    const foreign = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope({ signer: stranger }), via: 'gossip' }, T0)
    expect(ofType(foreign, 'run_step')).toHaveLength(0)
    expect(ofType(foreign, 'log')[0]!.msg).toMatch(/untrusted key/)
    // A foreign job is not even held: the coordinator's ticket for that id finds nothing to run.
    expect(ofType(agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg), to: 'sync' }, T0), 'run_step')).toHaveLength(0)

    const env = jobEnvelope()
    const tampered = { ...env, body: env.body.replace('"hostname"', '"rm -rf /"') }
    expect(tampered.body).not.toBe(env.body)
    const t = agentStep(state, cfg, { type: 'job', envelope: tampered, via: 'gossip' }, T0)
    expect(ofType(t, 'run_step')).toHaveLength(0)
    expect(ofType(t, 'log')[0]!.msg).toMatch(/bad signature/)
    expect(ofType(agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg), to: 'sync' }, T0), 'run_step')).toHaveLength(0)

    const stale = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope({ jobId: 'old', expiresAt: T0 - 1 }), via: 'gossip' }, T0)
    expect(ofType(stale, 'run_step')).toHaveLength(0)
    expect(ofType(stale, 'log')[0]!.msg).toMatch(/stale/)
    expect(ofType(agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg, 'old'), to: 'sync' }, T0), 'run_step')).toHaveLength(0)
    expect(state.jobs.size).toBe(0)

    agentStep(state, cfg, { type: 'job', envelope: env, via: 'gossip' }, T0)
    expect(ofType(agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg), to: 'sync' }, T0), 'run_step')).toHaveLength(1)
    const replay = agentStep(state, cfg, { type: 'job', envelope: env, via: 'sync' }, T0 + 5)
    expect(ofType(replay, 'run_step')).toHaveLength(0)
    expect(syncsIn(replay)).toHaveLength(0)
    // The ticket delivered again starts nothing either.
    expect(ofType(agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg), to: 'sync' }, T0 + 6), 'run_step')).toHaveLength(0)
    expect(state.runs.size).toBe(1)
  })

  it('does nothing but remember a job that does not target it', () => {
    const state = emptyAgentState()
    const cfg = config('node-9')
    const effects = accept(state, cfg, T0, {}, null)
    expect(ofType(effects, 'run_step')).toHaveLength(0)
    expect(state.runs.size).toBe(0)
    expect(state.jobs.has('job-1')).toBe(true)
    expect(state.jobs.get('job-1')!.ticket?.place).toBeNull()
  })

  it('retries a failed step with a new attempt number after the backoff delay, then fails the run', () => {
    const state = emptyAgentState()
    const cfg = config()
    const t = template((x) => {
      x.actions.steps = [x.actions.steps[1]!] // retryCount 1, linear 1 s
    })
    const first = runStepFor(accept(state, cfg, T0, { t }))
    const retry = runStepFor(finishStep(state, cfg, first, 'failure', T0 + 100, 3))
    expect(retry.request.attempt).toBe(2)
    expect(retry.notBefore).toBe(T0 + 100 + 1_000)
    const end = finishStep(state, cfg, retry, 'failure', T0 + 1_200, 3)
    const result = open(ofType(end, 'send')[0]!.envelope)
    if (!result.ok || result.body.type !== 'result') throw new Error('no result')
    expect(result.body.status).toBe('failure')
    expect(result.body.steps[0]).toMatchObject({ status: 'failure', attempts: 2, exitCode: 3 })
  })

  it('marks the remaining steps not_run after a failure', () => {
    const state = emptyAgentState()
    const cfg = config()
    const first = runStepFor(accept(state, cfg, T0))
    const end = finishStep(state, cfg, first, 'failure', T0 + 1)
    const result = open(ofType(end, 'send')[0]!.envelope)
    if (!result.ok || result.body.type !== 'result') throw new Error('no result')
    expect(result.body.steps.map((s) => s.status)).toEqual(['failure', 'not_run'])
  })

  it('after a restart records an attempt that was in flight as failed and never runs it again', () => {
    const state = emptyAgentState()
    const cfg = config()
    const effects = accept(state, cfg, T0)
    expect(ofType(effects, 'run_step')).toHaveLength(1)
    // Replay exactly what the runtime would have persisted, then "crash" before the step finished.
    const db = new Map<string, unknown>()
    for (const p of ofType(effects, 'persist')) for (const put of p.puts) db.set(put.key, structuredClone(put.value))
    const { state: restored, effects: after } = restoreAgent(db.entries(), cfg, T0 + 5_000)
    expect(ofType(after, 'run_step')).toHaveLength(0)
    expect(restored.runs.size).toBe(1)
    const run = [...restored.runs.values()][0]!
    expect(run.status).toBe('failure')
    expect(run.steps[0]).toMatchObject({ status: 'failure', attempts: 1 })
    expect(run.steps[0]!.reason).toMatch(/at most once/)
    expect(ofType(after, 'send')).toHaveLength(1)
    // The ticket was persisted with the job: the restored agent does not ask for it again.
    expect(restored.jobs.get('job-1')!.ticket?.place).toEqual({ group: 0, position: 0 })
  })

  it('a crash between an acknowledgement and the batch that deletes its record re-sends the result, never runs the step again', () => {
    const state = emptyAgentState()
    const cfg = config()
    const db = new Map<string, unknown>()
    // What the runtime commits: every persist of an event, in order, as one batch.
    const commit = persistInto<AgentEffect>(db)
    const s1 = runStepFor(commit(accept(state, cfg, T0)))
    const s2 = runStepFor(commit(finishStep(state, cfg, s1, 'success', T0 + 10)))
    const done = commit(finishStep(state, cfg, s2, 'success', T0 + 20))
    const runId = s2.request.runId
    expect(ofType(done, 'send').map((e) => e.kind)).toEqual(['result'])
    commit(agentStep(state, cfg, { type: 'reply', envelope: syncReply(coordinator, { ackRunIds: [runId] }) }, T0 + 30))
    // SIGKILL here: the acknowledged record is still on disk. The restarted agent sends the
    // result again (the coordinator acknowledges a duplicate again) and runs nothing.
    const early = restoreAgent(db.entries(), cfg, T0 + 40)
    expect(ofType(early.effects, 'run_step')).toEqual([])
    expect(early.state.runs.get(runId)!.status).toBe('success')
    expect(early.state.outbox.has(runId)).toBe(true)
    expect(ofType(agentStep(early.state, cfg, { type: 'connected' }, T0 + 40), 'send').filter((e) => e.kind === 'result')).toHaveLength(1)
    // The next batch carries the deletion: a crash after it re-sends nothing.
    commit(agentStep(state, cfg, { type: 'job', envelope: jobEnvelope({ jobId: 'job-2' }), via: 'gossip' }, T0 + 50))
    const late = restoreAgent(db.entries(), cfg, T0 + 60)
    expect(late.state.outbox.size).toBe(0)
    expect(late.state.runs.get(runId)!.status).toBe('success')
    expect(ofType(agentStep(late.state, cfg, { type: 'connected' }, T0 + 60), 'send').filter((e) => e.kind === 'result')).toEqual([])
  })

  it('takes a reply over a link that proved the coordinator\'s key without checking its signature again, and still only the coordinator\'s', () => {
    const cfg = config()
    const finished = () => {
      const state = emptyAgentState()
      const s1 = runStepFor(accept(state, cfg, T0))
      const s2 = runStepFor(finishStep(state, cfg, s1, 'success', T0 + 10))
      finishStep(state, cfg, s2, 'success', T0 + 20)
      return { state, runId: s2.request.runId }
    }
    const ack = (runId: string) => syncReply(coordinator, { ackRunIds: [runId] })
    const refusedReplies = (effects: AgentEffect[]) => ofType(effects, 'log').filter((l) => l.msg.startsWith('refused reply')).map((l) => l.msg)
    // The link proved the author: a signature the link already covers is not what decides (here a broken one).
    const a = finished()
    const broken = { ...ack(a.runId), sig: 'A'.repeat(86) }
    expect(refusedReplies(agentStep(a.state, cfg, { type: 'reply', envelope: broken, to: 'result', authenticated: true }, T0 + 30))).toEqual([])
    expect(a.state.outbox.size).toBe(0)
    // Without that proof (the simulator, or any other path) the same reply is refused and changes nothing.
    const b = finished()
    expect(refusedReplies(agentStep(b.state, cfg, { type: 'reply', envelope: { ...ack(b.runId), sig: 'A'.repeat(86) }, to: 'result' }, T0 + 30))).toEqual(['refused reply: bad signature (tampered or corrupted)'])
    expect(b.state.outbox.size).toBe(1)
    // Over the authenticated link, a reply signed by another key is still refused.
    const c = finished()
    const foreign = seal(stranger, { type: 'reply', v: PROTOCOL_VERSION, ok: true, ackRunIds: [c.runId], jobs: [], peers: [] })
    expect(refusedReplies(agentStep(c.state, cfg, { type: 'reply', envelope: foreign, to: 'result', authenticated: true }, T0 + 30))).toEqual(["refused reply: signed by another key than the connection's"])
    expect(c.state.outbox.size).toBe(1)
  })

  it('re-sends unacknowledged results with doubling intervals and on reconnect', () => {
    const state = emptyAgentState()
    const cfg = config()
    const s1 = runStepFor(accept(state, cfg, T0))
    const s2 = runStepFor(finishStep(state, cfg, s1, 'success', T0))
    finishStep(state, cfg, s2, 'success', T0)
    const sendTimes: number[] = []
    for (let t = T0; t <= T0 + 10_000; t += 500) {
      if (ofType(agentStep(state, cfg, { type: 'tick' }, t), 'send').some((e) => e.kind === 'result')) sendTimes.push(t - T0)
    }
    expect(sendTimes).toEqual([1_000, 3_000, 7_000])
    const onConnect = agentStep(state, cfg, { type: 'connected' }, T0 + 10_001)
    expect(ofType(onConnect, 'send').map((s) => s.kind)).toEqual(['result', 'sync'])
  })

  it('re-sends a sync that got no answer, and says which jobs it already holds', () => {
    const state = emptyAgentState()
    const cfg = config()
    agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0)
    const first = syncsIn(agentStep(state, cfg, { type: 'connected' }, T0))
    expect(first).toHaveLength(1)
    expect(first[0]!.known).toEqual([{ jobId: 'job-1', version: 0, ticket: false }])
    // The reply never comes: the sync goes out again after SYNC_RETRY_MS, and stops once answered.
    expect(syncsIn(agentStep(state, cfg, { type: 'tick' }, T0 + 2_000))).toHaveLength(0)
    expect(syncsIn(agentStep(state, cfg, { type: 'tick' }, T0 + 5_000))).toHaveLength(1)
    agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg), to: 'sync' }, T0 + 5_100)
    // The run (its step still in flight) has gone on for over RUNNING_REPORT_MS: one sync says it runs, once.
    const report = syncsIn(agentStep(state, cfg, { type: 'tick' }, T0 + 20_000))
    expect(report).toHaveLength(1)
    expect(report[0]!.gated).toEqual([expect.objectContaining({ jobId: 'job-1', state: 'running' })])
    expect(syncsIn(agentStep(state, cfg, { type: 'tick' }, T0 + 21_000))).toHaveLength(0)
    // Anti-entropy: a minute later it syncs anyway, saying it holds the job and its ticket.
    const later = syncsIn(agentStep(state, cfg, { type: 'tick' }, T0 + 66_000))
    expect(later).toHaveLength(1)
    expect(later[0]!.known).toEqual([{ jobId: 'job-1', version: 0, ticket: true }])
  })

  it('accepts jobs delivered in a sync reply, and only from the coordinator', () => {
    const state = emptyAgentState()
    const cfg = config()
    const ticket = ticketEnvelope(coordinator, 'job-1', 'node-1', agentId.publicKey, { group: 0, position: 0 })
    const fake = seal(stranger, { type: 'reply', v: PROTOCOL_VERSION, ok: true, ackRunIds: [], jobs: [jobEnvelope()], tickets: [ticket] })
    expect(ofType(agentStep(state, cfg, { type: 'reply', envelope: fake, to: 'sync' }, T0), 'run_step')).toHaveLength(0)
    expect(state.jobs.size).toBe(0)
    const real = syncReply(coordinator, { jobs: [jobEnvelope()], tickets: [ticket] })
    expect(ofType(agentStep(state, cfg, { type: 'reply', envelope: real, to: 'sync' }, T0), 'run_step')).toHaveLength(1)
  })
})

describe('tickets in the agent core', () => {
  it('refuses a ticket signed by another key, or issued to another node id or another public key', () => {
    const state = emptyAgentState()
    const cfg = config()
    agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0)
    const here = { group: 0, position: 0 }
    const bad = [
      // A well-formed ticket naming this node and key, but signed by a stranger (inside a coordinator-signed reply).
      ticketEnvelope(stranger, 'job-1', 'node-1', agentId.publicKey, here),
      // Signed by the coordinator, but issued to another node id.
      ticketEnvelope(coordinator, 'job-1', 'node-2', agentId.publicKey, here),
      // Signed by the coordinator for this node id, but bound to another key (a node that took over the id elsewhere).
      ticketEnvelope(coordinator, 'job-1', 'node-1', stranger.publicKey, here),
    ]
    for (const [i, ticket] of bad.entries()) {
      const effects = agentStep(state, cfg, { type: 'reply', envelope: syncReply(coordinator, { tickets: [ticket] }), to: 'sync' }, T0 + i)
      expect(ofType(effects, 'run_step')).toHaveLength(0)
      expect(ofType(effects, 'log').map((l) => l.msg).join('\n')).toMatch(/refused (a )?ticket/)
      expect(state.runs.size).toBe(0)
      expect(state.jobs.get('job-1')!.ticket).toBeUndefined()
    }
    // The refusals left the job waiting for its real ticket: it still asks for it, and runs when it comes.
    const ask = syncsIn(agentStep(state, cfg, { type: 'connected' }, T0 + 10))
    expect(ask[0]!.known).toEqual([{ jobId: 'job-1', version: 0, ticket: false }])
    expect(ofType(agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg), to: 'sync' }, T0 + 20), 'run_step')).toHaveLength(1)
  })

  it('creates no run for a place: null ticket and stops asking for it', () => {
    const state = emptyAgentState()
    const cfg = config()
    const onJob = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0)
    expect(syncsIn(onJob)[0]!.known).toEqual([{ jobId: 'job-1', version: 0, ticket: false }])
    const effects = agentStep(state, cfg, { type: 'reply', envelope: myTicket(cfg, 'job-1', null), to: 'sync' }, T0 + 100)
    expect(ofType(effects, 'run_step')).toHaveLength(0)
    expect(syncsIn(effects)).toHaveLength(0)
    expect(state.runs.size).toBe(0)
    // The answer is kept (persisted with the job), so the node does not ask again.
    expect(ofType(effects, 'persist').flatMap((p) => p.puts).find((p) => p.key === 'job/job-1')).toBeDefined()
    for (let t = T0 + 500; t < T0 + 60_000; t += 500) expect(syncsIn(agentStep(state, cfg, { type: 'tick' }, t))).toHaveLength(0)
    const next = syncsIn(agentStep(state, cfg, { type: 'connected' }, T0 + 60_000))
    expect(next).toHaveLength(1)
    expect(next[0]!.known).toEqual([{ jobId: 'job-1', version: 0, ticket: true }])
    expect(state.runs.size).toBe(0)
  })

  it('asks for the tickets of jobs it received in one sync listing them with ticket: false', () => {
    const state = emptyAgentState()
    const cfg = config()
    const gossip = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0)
    const asked = syncsIn(gossip)
    expect(asked).toHaveLength(1)
    expect(asked[0]!).toMatchObject({ nodeId: 'node-1', watch: false, known: [{ jobId: 'job-1', version: 0, ticket: false }] })
    expect(ofType(gossip, 'run_step')).toHaveLength(0)

    // Two jobs in one sync reply (job-1 now with its ticket): still one request, listing those without one first.
    const s2 = emptyAgentState()
    agentStep(s2, cfg, { type: 'job', envelope: jobEnvelope({ jobId: 'job-0' }), via: 'gossip' }, T0)
    agentStep(s2, cfg, { type: 'reply', envelope: myTicket(cfg, 'job-0', null), to: 'sync' }, T0)
    const both = agentStep(s2, cfg, { type: 'reply', envelope: syncReply(coordinator, { jobs: [jobEnvelope({ jobId: 'job-2' }), jobEnvelope({ jobId: 'job-3' })] }), to: 'sync' }, T0 + 10)
    const one = syncsIn(both)
    expect(one).toHaveLength(1)
    expect(one[0]!.known).toEqual([
      { jobId: 'job-2', version: 0, ticket: false },
      { jobId: 'job-3', version: 0, ticket: false },
      { jobId: 'job-0', version: 0, ticket: true },
    ])
    expect(ofType(both, 'run_step')).toHaveLength(0)
  })
})

describe('a watch held at a coordinator that dies', () => {
  it('counts the coordinator away COORDINATOR_AWAY_MS after the connection closed, not after the watch\'s hold', () => {
    const cfg = config()
    const state = emptyAgentState()
    // A rolling rollout, window 1: this node is second, so it waits and keeps a watch at the coordinator.
    const rolling = template((t) => { t.target.groups[0]!.distributionMethod = 'rolling'; t.target.groups[0]!.batchSize = { type: 'number', value: 1 } })
    accept(state, cfg, T0, { t: rolling, sizes: [2] }, { group: 0, position: 1 })
    const watches = syncsIn(agentStep(state, cfg, { type: 'tick' }, T0 + 500)).filter((s) => s.watch)
    expect(watches).toHaveLength(1)
    const closedAt = T0 + 2_000
    expect(coordinatorAway(state, closedAt + COORDINATOR_AWAY_MS)).toBe(false) // the watch may be held WATCH_HOLD_MS
    agentStep(state, cfg, { type: 'disconnected' }, closedAt)
    expect(coordinatorAway(state, closedAt + COORDINATOR_AWAY_MS - 1)).toBe(false)
    expect(coordinatorAway(state, closedAt + COORDINATOR_AWAY_MS)).toBe(true)
    // Back on a connection, the node asks again at once.
    expect(syncsIn(agentStep(state, cfg, { type: 'connected' }, closedAt + 20_000)).length).toBeGreaterThan(0)
  })
})

describe('the peer path while the coordinator is away', () => {
  it('gossips where its gated run stands again every PEER_PROGRESS_REPEAT_MS, and stops once every target is known done', () => {
    const cfg = config()
    const state = emptyAgentState()
    // Rolling, window 1, two targets: this node is second and waits for the first (peer-1).
    const rolling = template((t) => { t.target.groups[0]!.distributionMethod = 'rolling'; t.target.groups[0]!.batchSize = { type: 'number', value: 1 } })
    accept(state, cfg, T0, { t: rolling, sizes: [2] }, { group: 0, position: 1 })
    agentStep(state, cfg, { type: 'tick' }, T0 + 500)
    const closedAt = T0 + 2_000
    agentStep(state, cfg, { type: 'disconnected' }, closedAt)
    const gossiped = (effects: AgentEffect[]) => ofType(effects, 'publish_progress').map((e) => {
      const o = open(e.envelope, [agentId.publicKey])
      if (!o.ok || o.body.type !== 'progress') throw new Error('not a progress message')
      return o.body.event
    })
    const awayAt = closedAt + COORDINATOR_AWAY_MS
    expect(gossiped(agentStep(state, cfg, { type: 'tick' }, awayAt))).toEqual(['ack'])
    // Nothing changed and the repeat is not due: silence; then the same fact again (a peer that missed it learns it now).
    expect(gossiped(agentStep(state, cfg, { type: 'tick' }, awayAt + PEER_PROGRESS_REPEAT_MS - 1))).toEqual([])
    expect(gossiped(agentStep(state, cfg, { type: 'tick' }, awayAt + PEER_PROGRESS_REPEAT_MS))).toEqual(['ack'])
    // The first target's `done` arrives by gossip: this node takes its turn, runs, and is done.
    const peer = generateIdentity()
    const ticket = ticketEnvelope(coordinator, 'job-1', 'peer-1', peer.publicKey, { group: 0, position: 0 })
    const instanceId = instanceIdFor('job-1', T0)
    const done = seal(peer, { type: 'progress', v: PROTOCOL_VERSION, jobId: 'job-1', instanceId, occurrenceAt: T0, nodeId: 'peer-1', event: 'done', status: 'success', at: awayAt + 6_000, ticket })
    const started = agentStep(state, cfg, { type: 'progress', envelope: done }, awayAt + 6_000)
    expect(gossiped(started)).toEqual(['start'])
    // Every step of the job succeeds.
    const finished: AgentEffect[] = []
    for (let next = ofType(started, 'run_step'); next.length > 0;) {
      const effects = finishStep(state, cfg, next[0]!, 'success', awayAt + 7_000)
      finished.push(...effects)
      next = ofType(effects, 'run_step')
    }
    expect(state.runs.get(runIdFor(instanceId, cfg.nodeId))!.status).toBe('success')
    expect(gossiped(finished)).toEqual(['done'])
    // Both targets are known done: nobody can be waiting on this instance, so no more repeats.
    for (const at of [awayAt + 2 * PEER_PROGRESS_REPEAT_MS, awayAt + 3 * PEER_PROGRESS_REPEAT_MS]) expect(gossiped(agentStep(state, cfg, { type: 'tick' }, at))).toEqual([])
  })
})

describe('a coordinator that sheds load', () => {
  it('pauses every request for retryAfterMs, then sends again', () => {
    const cfg = config()
    const state = emptyAgentState()
    // A finished immediate run leaves a result in the outbox.
    const oneStep = template((t) => { t.actions.steps = t.actions.steps.slice(0, 1) })
    const done = finishStep(state, cfg, runStepFor(accept(state, cfg, T0, { t: oneStep })), 'success', T0 + 10)
    expect(ofType(done, 'send').filter((s) => s.kind === 'result')).toHaveLength(1)
    const overloaded = seal(coordinator, { type: 'reply', v: PROTOCOL_VERSION, ok: false, error: 'coordinator overloaded', retryAfterMs: 5_000 })
    agentStep(state, cfg, { type: 'reply', envelope: overloaded, to: 'result' }, T0 + 20)
    // Long past the resend interval, but inside the pause: nothing goes out.
    for (let t = T0 + 1_000; t < T0 + 5_020; t += 500) expect(ofType(agentStep(state, cfg, { type: 'tick' }, t), 'send'), `at +${t - T0} ms`).toEqual([])
    const after = ofType(agentStep(state, cfg, { type: 'tick' }, T0 + 5_100), 'send')
    expect(after.filter((s) => s.kind === 'result')).toHaveLength(1)
    expect(after.filter((s) => s.kind === 'sync').length).toBeGreaterThan(0)
  })
})
