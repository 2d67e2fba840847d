// The agent core, fed events: no network, no clock, no disk.
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { agentStep, emptyAgentState, restoreAgent, DEFAULT_AGENT_TIMING, type AgentConfig, type AgentEffect, type AgentState } from '../agent/core.js'
import { generateIdentity } from '../protocol/keys.js'
import { JobTemplateSchema, type JobTemplate } from '../protocol/template.js'
import { PROTOCOL_VERSION, open, seal, type SignedEnvelope } from '../protocol/wire.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { ALLOW_EVERYTHING } from '../agent/allowlist.js'

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

function jobEnvelope(opts: { jobId?: string; nodes?: string[]; t?: JobTemplate; signer?: typeof coordinator; issuedAt?: number; expiresAt?: number } = {}): SignedEnvelope {
  return seal(opts.signer ?? coordinator, {
    type: 'job', v: PROTOCOL_VERSION, jobId: opts.jobId ?? 'job-1', issuedAt: opts.issuedAt ?? T0, expiresAt: opts.expiresAt ?? T0 + 3_600_000,
    template: opts.t ?? template(), resolved: { groups: [{ nodes: opts.nodes ?? ['node-1', 'node-2'] }] },
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
  it('runs a targeted job: persists the run before starting the step, then sends a signed result', () => {
    const state = emptyAgentState()
    const cfg = config()
    const effects = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0 + 10)
    const kinds = effects.map((e) => e.type)
    expect(kinds.indexOf('persist')).toBeLessThan(kinds.indexOf('run_step'))
    const persistedBeforeStep = effects.slice(0, kinds.indexOf('run_step')).flatMap((e) => (e.type === 'persist' ? e.puts.map((p) => p.key) : []))
    expect(persistedBeforeStep).toEqual(expect.arrayContaining(['job/job-1', `run/${runIdFor(instanceIdFor('job-1', T0), 'node-1')}`]))
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

    // The coordinator acknowledges: the result leaves the outbox and its record is deleted.
    const ack = seal(coordinator, { type: 'reply', v: PROTOCOL_VERSION, ok: true, ackRunIds: [opened.body.runId], jobs: [] })
    const afterAck = agentStep(state, cfg, { type: 'reply', envelope: ack }, T0 + 40)
    expect(ofType(afterAck, 'persist')[0]!.dels).toEqual([`outbox/${opened.body.runId}`])
    expect(state.outbox.size).toBe(0)
  })

  it('refuses jobs signed by another key, tampered jobs, replays and stale definitions', () => {
    const state = emptyAgentState()
    const cfg = config()
    const foreign = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope({ signer: stranger }), via: 'gossip' }, T0)
    expect(ofType(foreign, 'run_step')).toHaveLength(0)
    expect(ofType(foreign, 'log')[0]!.msg).toMatch(/untrusted key/)

    const env = jobEnvelope()
    const tampered = { ...env, body: env.body.replace('"hostname"', '"rm -rf /"') }
    const t = agentStep(state, cfg, { type: 'job', envelope: tampered, via: 'gossip' }, T0)
    expect(ofType(t, 'run_step')).toHaveLength(0)
    expect(ofType(t, 'log')[0]!.msg).toMatch(/bad signature/)

    const stale = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope({ jobId: 'old', expiresAt: T0 - 1 }), via: 'gossip' }, T0)
    expect(ofType(stale, 'run_step')).toHaveLength(0)
    expect(ofType(stale, 'log')[0]!.msg).toMatch(/stale/)

    expect(ofType(agentStep(state, cfg, { type: 'job', envelope: env, via: 'gossip' }, T0), 'run_step')).toHaveLength(1)
    const replay = agentStep(state, cfg, { type: 'job', envelope: env, via: 'sync' }, T0 + 5)
    expect(ofType(replay, 'run_step')).toHaveLength(0)
    expect(state.runs.size).toBe(1)
  })

  it('does nothing but remember a job that does not target it', () => {
    const state = emptyAgentState()
    const effects = agentStep(state, config('node-9'), { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0)
    expect(ofType(effects, 'run_step')).toHaveLength(0)
    expect(state.runs.size).toBe(0)
    expect(state.jobs.has('job-1')).toBe(true)
  })

  it('retries a failed step with a new attempt number after the backoff delay, then fails the run', () => {
    const state = emptyAgentState()
    const cfg = config()
    const t = template((x) => {
      x.actions.steps = [x.actions.steps[1]!] // retryCount 1, linear 1 s
    })
    const first = runStepFor(agentStep(state, cfg, { type: 'job', envelope: jobEnvelope({ t }), via: 'gossip' }, T0))
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
    const first = runStepFor(agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0))
    const end = finishStep(state, cfg, first, 'failure', T0 + 1)
    const result = open(ofType(end, 'send')[0]!.envelope)
    if (!result.ok || result.body.type !== 'result') throw new Error('no result')
    expect(result.body.steps.map((s) => s.status)).toEqual(['failure', 'not_run'])
  })

  it('after a restart records an attempt that was in flight as failed and never runs it again', () => {
    const state = emptyAgentState()
    const cfg = config()
    const effects = agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0)
    // Replay exactly what the runtime would have persisted, then "crash" before the step finished.
    const db = new Map<string, unknown>()
    for (const p of ofType(effects, 'persist')) for (const put of p.puts) db.set(put.key, structuredClone(put.value))
    const { state: restored, effects: after } = restoreAgent(db.entries(), cfg, T0 + 5_000)
    expect(ofType(after, 'run_step')).toHaveLength(0)
    const run = [...restored.runs.values()][0]!
    expect(run.status).toBe('failure')
    expect(run.steps[0]).toMatchObject({ status: 'failure', attempts: 1 })
    expect(run.steps[0]!.reason).toMatch(/at most once/)
    expect(ofType(after, 'send')).toHaveLength(1)
  })

  it('re-sends unacknowledged results with doubling intervals and on reconnect', () => {
    const state = emptyAgentState()
    const cfg = config()
    const s1 = runStepFor(agentStep(state, cfg, { type: 'job', envelope: jobEnvelope(), via: 'gossip' }, T0))
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
    const first = ofType(agentStep(state, cfg, { type: 'connected' }, T0), 'send').filter((e) => e.kind === 'sync')
    expect(first).toHaveLength(1)
    const body = open(first[0]!.envelope)
    if (!body.ok || body.body.type !== 'sync') throw new Error('not a sync')
    expect(body.body.known).toEqual([{ jobId: 'job-1', version: 0 }])
    // The reply never comes: the sync goes out again after SYNC_RETRY_MS, and stops once answered.
    expect(ofType(agentStep(state, cfg, { type: 'tick' }, T0 + 2_000), 'send').filter((e) => e.kind === 'sync')).toHaveLength(0)
    expect(ofType(agentStep(state, cfg, { type: 'tick' }, T0 + 5_000), 'send').filter((e) => e.kind === 'sync')).toHaveLength(1)
    const answer = seal(coordinator, { type: 'reply', v: PROTOCOL_VERSION, ok: true, ackRunIds: [], jobs: [], peers: [], progress: [] })
    agentStep(state, cfg, { type: 'reply', envelope: answer, to: 'sync' }, T0 + 5_100)
    expect(ofType(agentStep(state, cfg, { type: 'tick' }, T0 + 20_000), 'send').filter((e) => e.kind === 'sync')).toHaveLength(0)
    // Anti-entropy: a minute later it syncs anyway.
    expect(ofType(agentStep(state, cfg, { type: 'tick' }, T0 + 66_000), 'send').filter((e) => e.kind === 'sync')).toHaveLength(1)
  })

  it('accepts jobs delivered in a sync reply, and only from the coordinator', () => {
    const state = emptyAgentState()
    const cfg = config()
    const fake = seal(stranger, { type: 'reply', v: PROTOCOL_VERSION, ok: true, ackRunIds: [], jobs: [jobEnvelope()] })
    expect(ofType(agentStep(state, cfg, { type: 'reply', envelope: fake }, T0), 'run_step')).toHaveLength(0)
    const real = seal(coordinator, { type: 'reply', v: PROTOCOL_VERSION, ok: true, ackRunIds: [], jobs: [jobEnvelope()] })
    expect(ofType(agentStep(state, cfg, { type: 'reply', envelope: real }, T0), 'run_step')).toHaveLength(1)
  })
})
