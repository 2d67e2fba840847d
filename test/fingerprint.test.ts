// A definition the coordinator validated says so: it carries the coordinator's schema
// fingerprint under its signature, when every target reads one (SCHEMA_AGENT_VERSION). An agent
// with the same fingerprint that verified the signature checks the body's shape instead of
// parsing it with zod again. What zod gives and what the cheap path gives are the same body;
// forged, tampered, foreign or misshapen definitions are still refused.
import { describe, expect, it, vi } from 'vitest'
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { z } from 'zod'
import { coordinatorStep, emptyCoordinatorState, DEFAULT_COORDINATOR_TIMING, type CoordinatorConfig, type CoordinatorEffect, type CoordinatorState } from '../coordinator/core.js'
import { agentStep, emptyAgentState, DEFAULT_AGENT_TIMING, type AgentConfig, type AgentEffect } from '../agent/core.js'
import { ALLOW_EVERYTHING } from '../agent/allowlist.js'
import { generateIdentity, type Identity } from '../protocol/keys.js'
import { parseTemplateObject } from '../protocol/parse.js'
import { AGENT_VERSION } from '../protocol/timing.js'
import { compareVersions } from '../protocol/version.js'
import {
  JobBodySchema, JOB_SCHEMA_FINGERPRINT, JOB_SCHEMA_REVISION, PROTOCOL_VERSION, SCHEMA_AGENT_VERSION, WireBodySchema,
  open, openFromCoordinator, seal, trustedJobBody, type JobBody,
} from '../protocol/wire.js'
import { shellJob } from './helpers/templates.js'
import { enrolHello, TEST_ENROLL_TOKEN } from './helpers/members.js'

const T0 = 1_700_000_000_000
const SAMPLES = fileURLToPath(new URL('../../shared/courier/samples/', import.meta.url))
const coordinator = generateIdentity()
const cfg: CoordinatorConfig = { identity: coordinator, ...DEFAULT_COORDINATOR_TIMING }
const ids = ['node-1', 'node-2', 'node-3']
const keys = new Map<string, Identity>(ids.map((id) => [id, generateIdentity()]))
const ofType = <T extends CoordinatorEffect['type']>(effects: CoordinatorEffect[], type: T) => effects.filter((e): e is Extract<CoordinatorEffect, { type: T }> => e.type === type)
const agentCfg = (nodeId: string): AgentConfig => ({ nodeId, coordinatorKey: coordinator.publicKey, identity: keys.get(nodeId)!, os: 'linux', allow: ALLOW_EVERYTHING, skills: { 'chef-platform/shell-interpreter': ['1.0.0'] }, ...DEFAULT_AGENT_TIMING })

function fleet(version: (nodeId: string) => string = () => AGENT_VERSION): CoordinatorState {
  const state = emptyCoordinatorState()
  for (const id of ids) enrolHello(state, cfg, keys.get(id)!, id, T0, { kernel_name: 'Linux' }, TEST_ENROLL_TOKEN, version(id))
  return state
}

function submit(state: CoordinatorState, nodes = ids): JobBody {
  const parsed = parseTemplateObject(shellJob('fp', nodes, ['true']))
  if (!parsed.ok) throw new Error('test template invalid')
  const effects = coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId: 'job-1', template: parsed.template }, T0 + 1)
  const opened = open(ofType(effects, 'publish')[0]!.envelope, [coordinator.publicKey])
  if (!opened.ok || opened.body.type !== 'job') throw new Error('not a job')
  return opened.body
}

/** A definition as the coordinator signs it, with the fingerprint, from a template that parsed. */
function definition(template: JobBody['template'], extra: Partial<JobBody> = {}, signer = coordinator) {
  const body: JobBody = {
    type: 'job', v: PROTOCOL_VERSION, jobId: 'job-1', issuedAt: T0, expiresAt: T0 + 3_600_000, template,
    resolved: { groups: template.target.groups.map(() => ({ size: 3 })) }, schema: JOB_SCHEMA_FINGERPRINT, ...extra,
  }
  return seal(signer, body)
}

const refusals = (effects: AgentEffect[]) => effects.filter((e) => e.type === 'log' && e.level === 'warn').map((e) => (e as { msg: string }).msg)

describe('the schema fingerprint of a definition', () => {
  it('is the hash of JOB_SCHEMA_REVISION and JobBodySchema as JSON Schema (change the schema: raise the revision and put the new hash in protocol/wire.ts)', () => {
    const json = JSON.stringify(z.toJSONSchema(JobBodySchema, { unrepresentable: 'any', io: 'input' }))
    expect(createHash('sha256').update(`${JOB_SCHEMA_REVISION}:${json}`).digest('base64url').slice(0, 22)).toBe(JOB_SCHEMA_FINGERPRINT)
    expect(compareVersions(AGENT_VERSION, SCHEMA_AGENT_VERSION)).toBeGreaterThanOrEqual(0)
  })

  it('gives the body zod gives, for every Courier sample that parses', () => {
    let compared = 0
    for (const file of readdirSync(SAMPLES).filter((f) => f.endsWith('.json'))) {
      const parsed = parseTemplateObject(JSON.parse(readFileSync(SAMPLES + file, 'utf8')))
      if (!parsed.ok) continue
      const env = definition(parsed.template)
      const cheap = trustedJobBody(JSON.parse(env.body))
      expect(cheap, file).toBeDefined()
      expect(cheap, file).toEqual(WireBodySchema.parse(JSON.parse(env.body)))
      compared++
    }
    expect(compared).toBeGreaterThanOrEqual(15)
  })

  it('is signed into a definition only when every target runs an agent that reads it', () => {
    expect(submit(fleet()).schema).toBe(JOB_SCHEMA_FINGERPRINT)
    // One target on 0.2.0 (it would refuse the field): no fingerprint; nor for a target never registered.
    expect(submit(fleet((id) => (id === 'node-2' ? '0.2.0' : AGENT_VERSION))).schema).toBeUndefined()
    expect(submit(fleet(), [...ids, 'never-seen']).schema).toBeUndefined()
    // Definitions without one still parse (the zod path), as before.
    const body = submit(fleet((id) => (id === 'node-2' ? '0.2.0' : AGENT_VERSION)))
    const agent = emptyAgentState()
    const effects = agentStep(agent, agentCfg('node-1'), { type: 'job', envelope: seal(coordinator, body), via: 'gossip' }, T0 + 2)
    expect(refusals(effects)).toEqual([])
    expect(agent.jobs.has('job-1')).toBe(true)
  })

  it('runs a fingerprinted definition from the coordinator, and every agent still refuses a forged, tampered or misshapen one', () => {
    const parsed = parseTemplateObject(shellJob('fp', ids, ['true']))
    if (!parsed.ok) throw new Error('test template invalid')
    const good = definition(parsed.template, { resolved: { groups: [{ size: 3, nodes: ids }] } })
    const agent = emptyAgentState()
    // Verified, then shape-checked: zod never sees the body (the run starts all the same).
    const zod = vi.spyOn(WireBodySchema, 'safeParse')
    try {
      const effects = agentStep(agent, agentCfg('node-1'), { type: 'job', envelope: good, via: 'gossip' }, T0 + 1)
      expect(refusals(effects)).toEqual([])
      expect(zod).not.toHaveBeenCalled()
      expect(effects.filter((e) => e.type === 'run_step')).toHaveLength(1)
    } finally {
      zod.mockRestore()
    }
    expect(agent.jobs.get('job-1')!.body.schema).toBe(JOB_SCHEMA_FINGERPRINT)

    const tampered = { ...good, body: good.body.replace('"true"', '"rm -rf /"') }
    expect(tampered.body).not.toBe(good.body)
    const foreign = definition(parsed.template, { jobId: 'job-foreign' }, generateIdentity())
    // Signed by the coordinator with the fingerprint, but not the shape of a definition: zod names the field.
    const misshapen = definition({ ...parsed.template, actions: { ...parsed.template.actions, steps: [] } }, { jobId: 'job-misshapen' })
    // Another build's fingerprint: parsed by zod, which refuses what this build's schema does not accept.
    const otherBuild = seal(coordinator, { ...JSON.parse(definition(parsed.template).body), jobId: 'job-other', schema: 'x'.repeat(22), template: { ...parsed.template, scheduleRule: 42 } })
    for (const nodeId of ids) {
      const a = emptyAgentState()
      const said = [tampered, foreign, misshapen, otherBuild].map((envelope) => refusals(agentStep(a, agentCfg(nodeId), { type: 'job', envelope, via: 'gossip' }, T0 + 1)))
      expect(said[0]).toEqual(['refused job message: bad signature (tampered or corrupted)'])
      expect(said[1]).toEqual([`refused job message: signed by untrusted key ${JSON.parse(JSON.stringify(foreign)).signer}`])
      expect(said[2]![0]).toMatch(/^refused job message: invalid body: template\.actions\.steps/)
      expect(said[3]![0]).toMatch(/^refused job message: invalid body: template\.scheduleRule/)
      expect(a.jobs.size).toBe(0)
      expect(a.runs.size).toBe(0)
    }
    // The cheap path is only for the pinned coordinator: the same bytes opened as from anyone else go through zod.
    expect(openFromCoordinator(misshapen, coordinator.publicKey).ok).toBe(false)
  })
})
