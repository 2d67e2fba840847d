// Per-peer budgets over a real coordinator on 127.0.0.1: hellos per node per minute, facts per
// hello, the largest request a non-member may send, concurrent rpc streams per connection and
// the time a stream may take to deliver its request. The fleet keeps working throughout.
import { describe, expect, it } from 'vitest'
import { readFile } from 'node:fs/promises'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import { LocalFleet, waitFor } from '../cli/fleet.js'
import { apiGet } from '../cli/client.js'
import { withLocalFleet } from './helpers/fleet.js'
import { MAX_CONNECTIONS_PER_PEER, MAX_INBOUND_RPC_STREAMS, RPC_REQUEST_DEADLINE_MS, createNet, peerIdForPublicKey, type Net } from '../net/libp2p.js'
import { generateIdentity, type Identity } from '../protocol/keys.js'
import { MAX_FACTS, PROTOCOL_RPC, PROTOCOL_VERSION, TOPIC_JOBS, decodeEnvelope, encodeEnvelope, open, seal, type ReplyBody } from '../protocol/wire.js'
import { MAX_HELLOS_PER_WINDOW } from '../coordinator/core.js'

let fleet: LocalFleet
withLocalFleet('chorus-budgets-', { agents: 1 }, (f) => { fleet = f })

async function peer(): Promise<{ net: Net; identity: Identity; coordinator: string }> {
  const identity = generateIdentity()
  const net = await createNet({ seed: identity.seed, listen: ['/ip4/127.0.0.1/tcp/0'] })
  const coordinator = peerIdForPublicKey(fleet.publicKey)
  net.subscribe(TOPIC_JOBS, () => {}) // as an agent does: a hello's reply waits until gossip reaches the peer (HELLO_GOSSIP_WAIT_MS)
  await net.node.dial(multiaddr(`${fleet.multiaddr}/p2p/${coordinator}`))
  return { net, identity, coordinator }
}

async function hello(p: { net: Net; identity: Identity; coordinator: string }, nodeId: string, facts: Record<string, string>, enrollToken?: string): Promise<ReplyBody | 'no reply'> {
  const env = seal(p.identity, { type: 'hello', v: PROTOCOL_VERSION, nodeId, peerId: p.net.peerId, addrs: [], facts, agentVersion: 'test', sentAt: Date.now(), ...(enrollToken ? { enrollToken } : {}) })
  try {
    const o = open(decodeEnvelope(await p.net.request(p.coordinator, encodeEnvelope(env), 10_000)), [fleet.publicKey])
    return o.ok && o.body.type === 'reply' ? o.body : 'no reply'
  } catch { return 'no reply' }
}

const nodes = async () => (await apiGet<{ items: { nodeId: string; facts: Record<string, string> }[] }>(fleet.conn, '/v1/nodes')).items

describe('per-peer budgets', () => {
  it('an enrolled node gets MAX_HELLOS_PER_WINDOW hellos a minute; the rest are refused and change nothing', async () => {
    const p = await peer()
    try {
      const token = (await readFile(await fleet.createEnrollToken('flood', 1), 'utf8')).trim()
      const replies: (ReplyBody | 'no reply')[] = []
      for (let k = 0; k < MAX_HELLOS_PER_WINDOW + 8; k++) replies.push(await hello(p, 'flooder', { round: String(k) }, token))
      const ok = replies.filter((r) => r !== 'no reply' && r.ok).length
      expect(ok).toBe(MAX_HELLOS_PER_WINDOW)
      expect(replies.at(-1)).toMatchObject({ ok: false, error: expect.stringMatching(/too many hellos/) })
      // The record holds the last accepted hello's facts, not a refused one's.
      expect((await nodes()).find((n) => n.nodeId === 'flooder')!.facts.round).toBe(String(MAX_HELLOS_PER_WINDOW - 1))
    } finally {
      await p.net.stop()
    }
  }, 60_000)

  it('a hello with too many or too large facts is refused, and a non-member cannot send a large request at all', async () => {
    const p = await peer()
    try {
      const token = (await readFile(await fleet.createEnrollToken('big', 2), 'utf8')).trim()
      const many = Object.fromEntries(Array.from({ length: MAX_FACTS + 1 }, (_, i) => [`f${i}`, 'x']))
      expect(await hello(p, 'many-facts', many, token)).toMatchObject({ ok: false, error: expect.stringMatching(/at most 128 facts/) })
      const large = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`f${i}`, 'y'.repeat(1_000)]))
      expect(await hello(p, 'large-facts', large, token)).toMatchObject({ ok: false, error: expect.stringMatching(/total at most/) })
      const huge = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`f${i}`, 'z'.repeat(1_000)]))
      expect(await hello(p, 'huge-facts', huge, token)).toBe('no reply')
      const ids = (await nodes()).map((n) => n.nodeId)
      for (const id of ['many-facts', 'large-facts', 'huge-facts']) expect(ids).not.toContain(id)
      // The token's uses were not spent on refused hellos: it still enrols a node.
      expect(await hello(p, 'small-facts', { ok: '1' }, token)).toMatchObject({ ok: true })
    } finally {
      await p.net.stop()
    }
  }, 60_000)

  it('lets one peer hold at most MAX_CONNECTIONS_PER_PEER connections', async () => {
    const p = await peer()
    try {
      const addr = multiaddr(`${fleet.multiaddr}/p2p/${p.coordinator}`)
      const outcomes = []
      for (let k = 0; k < 4; k++) outcomes.push(await p.net.node.dial(addr, { force: true, signal: AbortSignal.timeout(5_000) }).then(() => 'open', (err: Error) => err.name))
      // Wait for the positive event (the coordinator closed those over the limit), not for a guessed time.
      const openNow = () => p.net.node.getConnections(peerIdFromString(p.coordinator)).filter((c) => c.status === 'open')
      const open = await waitFor(`at most ${MAX_CONNECTIONS_PER_PEER} connections to stay open`, async () => { const o = openNow(); return o.length <= MAX_CONNECTIONS_PER_PEER ? o : undefined }, 15_000, 50)
      expect(open.length).toBeLessThanOrEqual(MAX_CONNECTIONS_PER_PEER)
      // Not cut off either: its first connections stay open (the line before held for any count up to the limit, 0 too).
      expect(open.length).toBeGreaterThanOrEqual(1)
      expect(outcomes.filter((o) => o === 'open').length).toBeGreaterThanOrEqual(1)
    } finally {
      await p.net.stop()
    }
  }, 60_000)

  it('holds at most MAX_INBOUND_RPC_STREAMS silent streams per connection and closes them after the deadline', async () => {
    const p = await peer()
    try {
      const opened = await Promise.all(Array.from({ length: MAX_INBOUND_RPC_STREAMS + 24 }, async () => {
        try {
          const s = await p.net.node.dialProtocol(peerIdFromString(p.coordinator), PROTOCOL_RPC, { signal: AbortSignal.timeout(5_000) })
          const started = Date.now()
          // Send nothing; wait for the coordinator to close or reset the stream.
          const ended = await lpStream(s).read({ signal: AbortSignal.timeout(RPC_REQUEST_DEADLINE_MS + 15_000) }).then(() => Date.now(), () => Date.now())
          return ended - started
        } catch { return 0 }
      }))
      const held = opened.filter((ms) => ms >= 1_000)
      expect(held.length).toBeLessThanOrEqual(MAX_INBOUND_RPC_STREAMS)
      expect(held.length).toBeGreaterThan(0)
      for (const ms of held) expect(ms).toBeLessThan(RPC_REQUEST_DEADLINE_MS + 10_000)
      // The coordinator still serves its fleet.
      const id = await fleet.submit(JSON.stringify({
        name: 'still serving', scheduleRule: 'immediate', exceptionRules: [],
        target: { executionType: 'parallel', groups: [{ timeoutSeconds: 60, batchSize: { type: 'percent', value: 100 }, distributionMethod: 'batching', successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }], nodeListType: 'nodes', nodeIdentifiers: ['node-1'] }] },
        actions: { accessMode: 'agent', steps: [{ name: 's', interpreter: { name: 'chef-platform/shell-interpreter', skill: { minVersion: '1.0.0', maxVersion: '1.9.99' } }, command: { linux: ['hostname'] }, retryCount: 0, failureBehavior: { action: 'retryThenFail', retryBackoffStrategy: { type: 'none', delaySeconds: 0, arguments: [] } } }] },
      }))
      expect((await fleet.waitForJob(id, 60_000)).instances[0]!.status).toBe('success')
    } finally {
      await p.net.stop()
    }
  }, 90_000)
})
