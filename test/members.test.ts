// Who may join, over real processes on 127.0.0.1: enrolment tokens, membership certificates,
// rogue libp2p peers, revocation, approval. Every negative is shown by a later positive.
import { describe, expect, it } from 'vitest'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalFleet, waitFor } from '../cli/fleet.js'
import { apiGet, apiRequest } from '../cli/client.js'
import { withLocalFleet } from './helpers/fleet.js'
import { createNet, type Net } from '../net/libp2p.js'
import { generateIdentity, identityFromSeed, type Identity } from '../protocol/keys.js'
import { PROTOCOL_VERSION, TOPIC_JOBS, decodeEnvelope, encodeEnvelope, open, seal } from '../protocol/wire.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { MEMBER_DEADLINE_MS } from '../protocol/membership.js'
import { shellJob } from './helpers/templates.js'

let fleet: LocalFleet

function job(name: string, nodes: string[], lines: string[]) {
  return JSON.stringify(shellJob(name, nodes, lines, {}, { name: 's' }))
}

interface NodeView { nodeId: string; publicKey: string; facts: Record<string, string> }
const nodes = async () => (await apiGet<{ items: NodeView[] }>(fleet.conn, '/v1/nodes')).items
const log = (i: number) => readFile(fleet.agents[i]!.logFile, 'utf8')
const identityOf = async (dir: string): Promise<Identity> => identityFromSeed(Buffer.from((JSON.parse(await readFile(join(dir, 'identity.json'), 'utf8')) as { seed: string }).seed, 'base64url'))

/** A libp2p node of our own: its own key, no certificate, no token. */
async function rogue(identity = generateIdentity()): Promise<{ net: Net; identity: Identity; heard: string[] }> {
  const net = await createNet({ seed: identity.seed, listen: ['/ip4/127.0.0.1/tcp/0'] })
  const heard: string[] = []
  net.subscribe(TOPIC_JOBS, (data) => heard.push(Buffer.from(data).toString('utf8')))
  return { net, identity, heard }
}

async function enrolToken(name: string, uses: number, ttl = '1h', attributes: Record<string, string> = {}): Promise<string> {
  return fleet.createEnrollToken(name, uses, attributes, ttl)
}

withLocalFleet('chorus-members-', { agents: 2, enrollment: { extraUses: 0, attributes: { role: 'web' } }, attributes: (i) => (i === 0 ? { role: 'db' } : {}) }, (f) => { fleet = f })

describe('enrolment', () => {
  it('an enrolled node cannot override an attribute its token fixed', async () => {
    const n1 = (await nodes()).find((n) => n.nodeId === 'node-1')!
    expect(n1.facts.role).toBe('web')
  })

  it('an agent without a token, with a used-up token or an expired one is refused and never listed; a valid token then enrols', async () => {
    const none = await fleet.addAgent('no-token')
    await fleet.startAgent(none, { enrollTokenFile: null })
    const used = await fleet.addAgent('used-up')
    await fleet.startAgent(used) // the fleet's token had exactly 2 uses, both taken
    const expiredFile = await enrolToken('short', 1, '1s')
    // Start it once the coordinator's own record says the token has expired (not after a guessed time).
    const short = (await apiGet<{ items: { id: string; expiresAt?: string }[] }>(fleet.conn, '/v1/enrollments')).items.find((e) => e.id === 'short')
    expect(short?.expiresAt).toEqual(expect.any(String))
    await waitFor('the 1 s enrolment token to expire', async () => (Date.now() > Date.parse(short!.expiresAt!) ? true : undefined), 10_000, 50)
    const expired = await fleet.addAgent('expired')
    await fleet.startAgent(expired, { enrollTokenFile: expiredFile })
    await waitFor('the three refusals', async () => {
      const logs = await Promise.all([none, used, expired].map(log))
      return logs[0]!.includes('is not enrolled') && logs[1]!.includes('is used up') && logs[2]!.includes('expired') ? true : undefined
    }, 30_000, 200)
    const good = await fleet.addAgent('late-good')
    await fleet.startAgent(good, { enrollTokenFile: await enrolToken('late', 1) })
    await waitFor('the node with a valid token to enrol', async () => ((await nodes()).some((n) => n.nodeId === 'late-good') ? true : undefined), 30_000, 200)
    const ids = (await nodes()).map((n) => n.nodeId)
    expect(ids).not.toContain('no-token')
    expect(ids).not.toContain('used-up')
    expect(ids).not.toContain('expired')
    for (const i of [none, used, expired]) await fleet.stopAgent(i)
  })

  it('refuses a bad enrolment request with the paths of its problems, and creates no token', async () => {
    const ids = async () => (await apiGet<{ items: { id: string }[] }>(fleet.conn, '/v1/enrollments')).items.map((e) => e.id)
    const before = await ids()
    const bad = await apiRequest<{ problems?: { path: string }[] }>(fleet.conn, 'POST', '/v1/enrollments', { uses: 0, ttl: 'soon', attributes: { '': 'x' }, extra: true })
    expect(bad.status).toBe(400)
    expect((bad.body.problems ?? []).map((p) => p.path)).toEqual(expect.arrayContaining(['body.uses', 'body.ttl']))
    expect(await ids()).toEqual(before)
  })

  it('a node cannot take another node\'s id', async () => {
    const before = (await nodes()).find((n) => n.nodeId === 'node-2')!
    const thief = await fleet.addAgent('node-2') // same id, a new data directory: another key
    await fleet.startAgent(thief, { enrollTokenFile: await enrolToken('thief', 1) })
    await waitFor('the thief to be refused', async () => ((await log(thief)).includes('node-2 is enrolled with another key') ? true : undefined), 30_000, 200)
    expect((await nodes()).find((n) => n.nodeId === 'node-2')!.publicKey).toBe(before.publicKey)
    await fleet.stopAgent(thief)
  })
})

describe('a rogue libp2p node with its own key', () => {
  it('reads no definition by subscription or by sync, gets no result counted, and is disconnected by the coordinator and by agents', async () => {
    const r = await rogue()
    try {
      await r.net.node.dial((await import('@multiformats/multiaddr')).multiaddr(`${fleet.multiaddr}/p2p/${(await import('../net/libp2p.js')).peerIdForPublicKey(fleet.publicKey)}`))
      const coordinatorPeer = (await import('../net/libp2p.js')).peerIdForPublicKey(fleet.publicKey)
      // Sync as a node of its own, and as node-1: nothing either way.
      for (const nodeId of ['rogue-1', 'node-1']) {
        const answer = open(decodeEnvelope(await r.net.request(coordinatorPeer, encodeEnvelope(seal(r.identity, { type: 'sync', v: PROTOCOL_VERSION, nodeId, sentAt: Date.now() })), 10_000)), [fleet.publicKey])
        expect(answer.ok && answer.body.type === 'reply' && answer.body.ok).toBe(false)
        expect(answer.ok && answer.body.type === 'reply' ? answer.body.jobs : ['?']).toEqual([])
      }
      // A job runs on the members while the rogue is subscribed to the job topic.
      const id = await fleet.submit(job('members only', ['node-1', 'node-2'], ['echo members']))
      const report = await fleet.waitForJob(id, 60_000)
      expect(report.instances[0]!.status).toBe('success')
      expect(r.heard).toEqual([])
      // A result for node-1's run, signed by the rogue's key, is refused and changes nothing.
      const instanceId = report.instances[0]!.id
      const fake = seal(r.identity, { type: 'result', v: PROTOCOL_VERSION, runId: runIdFor(instanceId, 'node-1'), jobId: id, instanceId, nodeId: 'node-1', occurrenceAt: Date.parse(report.instances[0]!.occurrenceAt), group: 0, batch: 0, status: 'failure', startedAt: Date.now(), finishedAt: Date.now(), steps: [] })
      const refused = open(decodeEnvelope(await r.net.request(coordinatorPeer, encodeEnvelope(fake), 10_000)), [fleet.publicKey])
      expect(refused.ok && refused.body.type === 'reply' && refused.body.ok).toBe(false)
      expect((await fleet.report(id)).instances[0]!.runs.map((x) => x.status)).toEqual(['success', 'success'])
      expect(instanceIdFor(id, Date.parse(report.instances[0]!.occurrenceAt))).toBe(instanceId)
      await waitFor('the coordinator to disconnect the rogue', async () => (r.net.node.getConnections().length === 0 ? true : undefined), MEMBER_DEADLINE_MS + 10_000, 200)
      const coordinatorLog = await readFile(fleet.coordinator.logFile, 'utf8')
      expect(coordinatorLog).toContain('did not enrol in time')
    } finally {
      await r.net.stop()
    }
  }, 60_000)

  it('an agent drops a peer that shows no certificate, or a replayed one', async () => {
    // node-1's own certificate, taken from its store while it is stopped: valid, but for another key.
    await fleet.stopAgent(0)
    const { Level } = await import('level')
    const db = new Level<string, unknown>(join(fleet.agents[0]!.dir, 'db'), { valueEncoding: 'json' })
    const stolen = (await db.get('member/certificate')) as { envelope: unknown }
    await db.close()
    await fleet.startAgent(0)
    await waitFor('node-1 to rejoin', async () => ((await log(0)).split('joined the coordinator').length > 2 ? true : undefined), 30_000, 200)
    const r = await rogue()
    const silent = await rogue()
    try {
      const agentAddr = await agentAddress(0)
      const agentPeer = agentAddr.split('/p2p/')[1]!
      const { multiaddr } = await import('@multiformats/multiaddr')
      // One shows nothing; it asks for a sync, as a peer would with the coordinator away.
      await silent.net.node.dial(multiaddr(agentAddr))
      const answer = open(decodeEnvelope(await silent.net.request(agentPeer, encodeEnvelope(seal(silent.identity, { type: 'sync', v: PROTOCOL_VERSION, nodeId: 'rogue-2', sentAt: Date.now() })), 10_000)))
      expect(answer.ok && answer.body.type === 'reply' && !answer.body.ok && answer.body.jobs.length === 0).toBe(true)
      // A third sends bytes that are no envelope at all: refused the same way.
      const junk = await rogue()
      try {
        await junk.net.node.dial(multiaddr(agentAddr))
        const answer = await junk.net.exchangeMember(agentPeer, Buffer.from('{"not": "a certificate"')).catch(() => new Uint8Array(0))
        expect(answer.byteLength).toBe(0)
        await waitFor('the agent to drop the peer that sent junk', async () => (junk.net.node.getConnections().length === 0 ? true : undefined), 15_000, 100)
      } finally {
        await junk.net.stop()
      }
      // The other replays node-1's certificate.
      await r.net.node.dial(multiaddr(agentAddr))
      const reply = await r.net.exchangeMember(agentPeer, encodeEnvelope(stolen.envelope as never)).catch(() => new Uint8Array(0))
      expect(reply.byteLength).toBe(0)
      await waitFor('the agent to drop the replayer', async () => (r.net.node.getConnections().length === 0 ? true : undefined), 15_000, 100)
      expect(await log(0)).toContain('a replayed certificate')
      await waitFor('the agent to drop the silent peer', async () => (silent.net.node.getConnections().length === 0 ? true : undefined), MEMBER_DEADLINE_MS + 10_000, 200)
    } finally {
      await r.net.stop()
      await silent.net.stop()
    }
  }, 60_000)
})

/** An agent's own libp2p address, from the coordinator's registry. */
async function agentAddress(index: number): Promise<string> {
  const items = (await apiGet<{ items: { nodeId: string; peerId: string; addrs?: string[] }[] }>(fleet.conn, '/v1/nodes')).items
  const n = items.find((x) => x.nodeId === fleet.agents[index]!.nodeId)!
  const a = (n.addrs ?? [])[0]
  if (!a) throw new Error('the registry lists no address for the agent')
  return a.includes('/p2p/') ? a : `${a}/p2p/${n.peerId}`
}

describe('revocation', () => {
  it('refuses a revoked node\'s result (the report says so), skips it in later jobs, and closes its connections', async () => {
    const id = await fleet.submit(job('in flight', ['node-1', 'node-2'], ['sleep 3']))
    await waitFor('node-2 to start', async () => ((await log(1)).split('\n').some((l) => l.includes(id) && l.includes('run started')) ? true : undefined), 30_000, 100)
    const res = await apiRequest<{ nodeId?: string; error?: string }>(fleet.conn, 'POST', '/v1/nodes/node-2/revoke', {})
    expect(res.status).toBe(200)
    const report = await fleet.waitForJob(id, 60_000)
    const run2 = report.instances[0]!.runs.find((x) => x.nodeId === 'node-2')!
    expect(run2.status).toBe('skipped')
    expect(run2.reasonCode).toBe('revoked')
    expect(run2.reason).toMatch(/revoked/)
    // node-2 finishes its step; its result cannot reach the coordinator (its connection was closed and the gate refuses its key).
    await waitFor('node-2 to finish the step', async () => ((await log(1)).split('\n').some((l) => l.includes(run2.runId) && l.includes('run finished')) ? true : undefined), 30_000, 100)
    const later = await fleet.submit(job('after revocation', ['node-1', 'node-2'], ['echo after']))
    const laterReport = await fleet.waitForJob(later, 60_000)
    expect(laterReport.instances[0]!.runs.map((x) => x.nodeId)).toEqual(['node-1'])
    expect((await nodes()).map((n) => n.nodeId)).not.toContain('node-2')
    // Both the node's enrolment and its revocation are in the audit log, under who did them.
    const audit = (await apiGet<{ items: { token: string; role: string; action: string; object: string; outcome: string }[] }>(fleet.conn, '/v1/audit?limit=1000')).items
    expect(audit).toContainEqual(expect.objectContaining({ token: 'enrollment:fleet', role: 'node', action: 'node.enroll', object: 'node-2', outcome: 'ok' }))
    expect(audit).toContainEqual(expect.objectContaining({ token: 'admin', role: 'admin', action: 'node.revoke', object: 'node-2', outcome: 'ok' }))
    expect((await fleet.report(id)).instances[0]!.runs.find((x) => x.nodeId === 'node-2')!.status).toBe('skipped')
    expect((await readFile(fleet.coordinator.logFile, 'utf8')).split('\n').filter((l) => l.includes('"result stored"') && l.includes(run2.runId))).toEqual([])
    // The revocation reached node-1 as signed state: it refuses node-2's key at the gate.
    await waitFor('node-1 to hold the revocation list', async () => ((await log(0)).includes('revocation list updated') ? true : undefined), 30_000, 200)
    const revoked = await identityOf(fleet.agents[1]!.dir)
    await fleet.stopAgent(1)
    const r = await rogue(revoked)
    try {
      const dialed = await r.net.node.dial((await import('@multiformats/multiaddr')).multiaddr(await agentAddress(0))).then(() => 'connected', (err: Error) => err.message)
      if (dialed === 'connected') await waitFor('node-1 to refuse the revoked key', async () => (r.net.node.getConnections().length === 0 ? true : undefined), 10_000, 100)
      expect(r.net.node.getConnections()).toHaveLength(0)
    } finally {
      await r.net.stop()
    }
  }, 90_000)
})

describe('approval mode', () => {
  let approving: LocalFleet
  withLocalFleet('chorus-approve-', { agents: 1, requireApproval: true }, (f) => { approving = f })
  it('keeps an enrolment pending until an admin approves it', async () => {
    await waitFor('the enrolment to wait', async () => ((await apiGet<{ items: { nodeId: string }[] }>(approving.conn, '/v1/nodes/pending')).items.some((p) => p.nodeId === 'node-1') ? true : undefined), 30_000, 200)
    expect((await apiGet<{ items: unknown[] }>(approving.conn, '/v1/nodes')).items).toHaveLength(0)
    expect((await apiRequest(approving.conn, 'POST', '/v1/nodes/node-1/approve', {})).status).toBe(200)
    await approving.waitForNodes(1, 60_000)
    const id = await approving.submit(job('approved', ['node-1'], ['echo ok']))
    expect((await approving.waitForJob(id, 60_000)).instances[0]!.status).toBe('success')
  }, 120_000)
})
