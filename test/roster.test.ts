// A definition above MAX_INLINE_TICKETS targets lists each group's targets in rollout order (its
// roster) when every target reads one: each target takes the place its ticket would give, from
// the definition alone, with no round trip. Older agents, long rosters and unregistered targets
// keep the ticket path; a roster is covered by the definition's signature.
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { coordinatorStep, emptyCoordinatorState, DEFAULT_COORDINATOR_TIMING, type CoordinatorConfig, type CoordinatorEffect, type CoordinatorState } from '../coordinator/core.js'
import { agentStep, emptyAgentState, DEFAULT_AGENT_TIMING, type AgentConfig, type AgentEffect } from '../agent/core.js'
import { ALLOW_EVERYTHING } from '../agent/allowlist.js'
import { generateIdentity, peerIdOf, type Identity } from '../protocol/keys.js'
import { JobTemplateSchema, type JobTemplate } from '../protocol/template.js'
import { AGENT_VERSION } from '../protocol/timing.js'
import { JobBodySchema, MAX_INLINE_TICKETS, MAX_ROSTER_BYTES, MAX_ROSTER_TARGETS, PROTOCOL_VERSION, ROSTER_AGENT_VERSION, open, seal, type JobBody, type SignedEnvelope } from '../protocol/wire.js'
import { MEMBER_CERT_TTL_MS } from '../protocol/membership.js'
import { compareVersions } from '../protocol/version.js'
import { enrolHello, TEST_ENROLL_TOKEN } from './helpers/members.js'

const T0 = 1_700_000_000_000
const coordinator = generateIdentity()
const cfg: CoordinatorConfig = { identity: coordinator, ...DEFAULT_COORDINATOR_TIMING }
const base = JobTemplateSchema.parse(JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8')))
const N = MAX_INLINE_TICKETS + 16
const ids = Array.from({ length: N }, (_, i) => `node-${String(i).padStart(3, '0')}`)
const keys = new Map<string, Identity>(ids.map((id) => [id, generateIdentity()]))
keys.set('outsider', generateIdentity())

const ofType = <T extends CoordinatorEffect['type']>(effects: CoordinatorEffect[], type: T) => effects.filter((e): e is Extract<CoordinatorEffect, { type: T }> => e.type === type)
const agentOfType = <T extends AgentEffect['type']>(effects: AgentEffect[], type: T) => effects.filter((e): e is Extract<AgentEffect, { type: T }> => e.type === type)

/** Two groups by node list: the first 30 (rolling, one at a time), then everyone (a node is in the first group naming it). */
function twoGroups(): JobTemplate {
  const t = structuredClone(base)
  const g0 = structuredClone(t.target.groups[0]!)
  g0.nodeListType = 'nodes'
  g0.nodeIdentifiers = [...ids.slice(0, 30)].reverse()
  delete (g0 as { filter?: unknown }).filter
  g0.distributionMethod = 'rolling'
  g0.batchSize = { type: 'number', value: 1 }
  const g1 = structuredClone(g0)
  g1.distributionMethod = 'batching'
  g1.batchSize = { type: 'percent', value: 100 }
  g1.nodeIdentifiers = [...ids]
  t.target.groups = [g0, g1]
  t.target.executionType = 'parallel'
  return t
}

function fleet(version: (nodeId: string) => string = () => AGENT_VERSION): CoordinatorState {
  const state = emptyCoordinatorState()
  for (const id of ids) enrolHello(state, cfg, keys.get(id)!, id, T0, { kernel_name: 'Linux' }, TEST_ENROLL_TOKEN, version(id))
  return state
}

function submit(state: CoordinatorState, template: JobTemplate, jobId = 'job-1'): { envelope: SignedEnvelope; body: JobBody } {
  const effects = coordinatorStep(state, cfg, { type: 'submit', requestId: 'r', jobId, template }, T0 + 1)
  const envelope = ofType(effects, 'publish')[0]!.envelope
  const opened = open(envelope, [coordinator.publicKey])
  if (!opened.ok || opened.body.type !== 'job') throw new Error(`not a job: ${JSON.stringify(effects.filter((e) => e.type === 'reply_submit'))}`)
  return { envelope, body: opened.body }
}

const agentCfg = (nodeId: string): AgentConfig => ({ nodeId, coordinatorKey: coordinator.publicKey, identity: keys.get(nodeId)!, os: 'linux', allow: ALLOW_EVERYTHING, skills: { 'chef-platform/shell-interpreter': ['1.0.0'] }, ...DEFAULT_AGENT_TIMING })

/** The place the coordinator gives a node when it asks for its ticket (the path without a roster). */
function ticketPlace(state: CoordinatorState, nodeId: string): unknown {
  const env = seal(keys.get(nodeId)!, { type: 'sync', v: PROTOCOL_VERSION, nodeId, sentAt: T0 + 2, certExpiresAt: T0 + MEMBER_CERT_TTL_MS, known: [{ jobId: 'job-1', version: 0, ticket: false }] })
  const reply = ofType(coordinatorStep(state, cfg, { type: 'rpc', requestId: `s-${nodeId}`, envelope: env, peerId: peerIdOf(keys.get(nodeId)!.publicKey) }, T0 + 2), 'reply_rpc')[0]!
  const opened = open(reply.envelope, [coordinator.publicKey])
  if (!opened.ok || opened.body.type !== 'reply') throw new Error('bad reply')
  const t = opened.body.tickets.map((x) => open(x, [coordinator.publicKey])).find((o) => o.ok && o.body.type === 'ticket' && o.body.jobId === 'job-1')
  if (!t?.ok || t.body.type !== 'ticket') throw new Error(`no ticket for ${nodeId}`)
  return t.body.place
}

describe('a roster in a large definition', () => {
  it('the agents of this build read rosters', () => {
    expect(compareVersions(AGENT_VERSION, ROSTER_AGENT_VERSION)).toBeGreaterThanOrEqual(0)
  })

  it('places every target where its ticket would, with no round trip; a node it does not list is not targeted', () => {
    const state = fleet()
    const { envelope, body } = submit(state, twoGroups())
    expect(body.resolved.tickets).toBeUndefined()
    expect(body.resolved.groups.map((g) => g.nodes?.length)).toEqual([30, N - 30])
    for (const nodeId of [ids[0]!, ids[29]!, ids[30]!, ids[N - 1]!]) {
      const agent = emptyAgentState()
      const effects = agentStep(agent, agentCfg(nodeId), { type: 'job', envelope, via: 'gossip' }, T0 + 3)
      expect(agentOfType(effects, 'send').filter((e) => e.kind === 'sync'), nodeId).toHaveLength(0)
      expect(agent.sync.ticketWanted).toBe(false)
      const place = agent.jobs.get('job-1')!.ticket?.place
      expect(place, nodeId).toEqual(ticketPlace(state, nodeId))
      const run = [...agent.runs.values()][0]!
      expect(run).toMatchObject({ group: place!.group, position: place!.position })
      // The rolling group's first target starts at once; its others wait their turn. Everyone in the batching group starts.
      expect(agentOfType(effects, 'run_step').length, nodeId).toBe(place!.group === 1 || place!.position === 0 ? 1 : 0)
    }
    const outsider = emptyAgentState()
    const effects = agentStep(outsider, agentCfg('outsider'), { type: 'job', envelope, via: 'gossip' }, T0 + 3)
    expect(outsider.jobs.get('job-1')!.ticket?.place).toBeNull()
    expect(outsider.runs.size).toBe(0)
    expect(agentOfType(effects, 'send')).toHaveLength(0)
  })

  it('keeps tickets when one target runs an older agent, when a target never registered, and at or below MAX_INLINE_TICKETS', () => {
    const older = fleet((id) => (id === ids[5] ? '0.1.0' : AGENT_VERSION))
    const { envelope, body } = submit(older, twoGroups())
    expect(body.resolved.groups.every((g) => g.nodes === undefined)).toBe(true)
    const agent = emptyAgentState()
    const effects = agentStep(agent, agentCfg(ids[40]!), { type: 'job', envelope, via: 'gossip' }, T0 + 3)
    expect(agent.runs.size).toBe(0)
    expect(agentOfType(effects, 'send').filter((e) => e.kind === 'sync')).toHaveLength(1)

    const state = fleet()
    const ghost = twoGroups()
    ghost.target.groups[1]!.nodeIdentifiers = [...ids, 'never-seen']
    expect(submit(state, ghost).body.resolved.groups.every((g) => g.nodes === undefined)).toBe(true)

    const small = twoGroups()
    small.target.groups[1]!.nodeIdentifiers = ids.slice(0, MAX_INLINE_TICKETS)
    const smallBody = submit(fleet(), small).body
    expect(smallBody.resolved.tickets).toHaveLength(MAX_INLINE_TICKETS)
    expect(smallBody.resolved.groups.every((g) => g.nodes === undefined)).toBe(true)
  })

  it('keeps tickets above MAX_ROSTER_TARGETS targets', () => {
    const state = emptyCoordinatorState()
    const many = Array.from({ length: MAX_ROSTER_TARGETS + 1 }, (_, i) => `n${i}`)
    for (const id of many) enrolHello(state, cfg, generateIdentity(), id, T0, { kernel_name: 'Linux' }, TEST_ENROLL_TOKEN, AGENT_VERSION)
    const t = twoGroups()
    t.target.groups = [t.target.groups[1]!]
    t.target.groups[0]!.nodeIdentifiers = many
    expect(JSON.stringify(many).length).toBeLessThan(MAX_ROSTER_BYTES)
    expect(submit(state, t).body.resolved.groups[0]!.nodes).toBeUndefined()
    t.target.groups[0]!.nodeIdentifiers = many.slice(1)
    expect(submit(state, t, 'job-2').body.resolved.groups[0]!.nodes).toHaveLength(MAX_ROSTER_TARGETS)
  })

  it('keeps tickets when the roster would pass MAX_ROSTER_BYTES', () => {
    const state = emptyCoordinatorState()
    // Ids of 120 characters: 123 bytes each in the roster, so this many do not fit.
    const count = Math.floor(MAX_ROSTER_BYTES / 123) + 1
    const long = Array.from({ length: count }, (_, i) => `${'x'.repeat(114)}-${String(i).padStart(5, '0')}`)
    for (const id of long) enrolHello(state, cfg, generateIdentity(), id, T0, { kernel_name: 'Linux' }, TEST_ENROLL_TOKEN, AGENT_VERSION)
    const t = twoGroups()
    t.target.groups = [t.target.groups[1]!]
    t.target.groups[0]!.nodeIdentifiers = long
    expect(submit(state, t).body.resolved.groups[0]!.nodes).toBeUndefined()
    t.target.groups[0]!.nodeIdentifiers = long.slice(0, count - 1)
    expect(submit(state, t, 'job-2').body.resolved.groups[0]!.nodes).toHaveLength(count - 1)
  })

  it('a roster edited after signing, or one whose length is not the group size, is refused', () => {
    const { envelope } = submit(fleet(), twoGroups())
    const forged = { ...envelope, body: envelope.body.replace(`"${ids[40]}"`, '"outsider"') }
    expect(forged.body).not.toBe(envelope.body)
    const agent = emptyAgentState()
    agentStep(agent, agentCfg('outsider'), { type: 'job', envelope: forged, via: 'gossip' }, T0 + 3)
    expect(agent.jobs.size).toBe(0)
    const body = JSON.parse(envelope.body) as JobBody
    body.resolved.groups[0]!.nodes = body.resolved.groups[0]!.nodes!.slice(1)
    const parsed = JobBodySchema.safeParse(body)
    expect(parsed.success).toBe(false)
    expect(JSON.stringify(parsed.error?.issues)).toContain('a roster lists exactly size node ids')
    // Garbage in a roster: an id with characters no node id has, a roster longer than MAX_ROSTER_TARGETS.
    const odd = JSON.parse(envelope.body) as JobBody
    odd.resolved.groups[1]!.nodes![0] = 'node 0/../x'
    expect(JobBodySchema.safeParse(odd).error?.issues[0]?.path).toEqual(['resolved', 'groups', 1, 'nodes', 0])
    const long = JSON.parse(envelope.body) as JobBody
    long.resolved.groups[1] = { size: MAX_ROSTER_TARGETS + 1, nodes: Array.from({ length: MAX_ROSTER_TARGETS + 1 }, (_, i) => `n${i}`) }
    expect(JobBodySchema.safeParse(long).error?.issues[0]?.path).toEqual(['resolved', 'groups', 1, 'nodes'])
  })
})
