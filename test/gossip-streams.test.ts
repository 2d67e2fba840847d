// Gossip streams to peers open side by side (net/gossip-streams.ts): one peer slow to answer
// the stream's negotiation no longer holds back every peer after it. Real libp2p on 127.0.0.1
// for the first test (the slow peer's round trip held by a gate the test opens); the opener's
// bound and its re-push rule over a scripted pubsub for the second.
import { afterEach, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import type { GossipSub } from '@libp2p/gossipsub'
import { createNet, type Net, type NetOptions } from '../net/libp2p.js'
import { openGossipStreamsConcurrently } from '../net/gossip-streams.js'

const TOPIC = 'chorus/test/v1'
const nets: Net[] = []
/** Subscribes `n` to TOPIC; resolves with the first message it gets, as text. */
const firstMessage = (n: Net) => new Promise<string>((resolve) => n.subscribe(TOPIC, (data) => resolve(new TextDecoder().decode(data))))
afterEach(async () => { await Promise.all(nets.splice(0).map((n) => n.stop())) })

async function net(opts: Partial<NetOptions> = {}): Promise<Net> {
  const n = await createNet({ seed: randomBytes(32), listen: ['/ip4/127.0.0.1/tcp/0'], ...opts })
  nets.push(n)
  return n
}

describe('gossip streams', () => {
  it('a peer whose stream negotiation hangs does not hold back the stream to a peer that connected after it', async () => {
    const server = await net()
    const slow = await net()
    const fast = await net()
    server.subscribe(TOPIC, () => {})
    slow.subscribe(TOPIC, () => {})
    fast.subscribe(TOPIC, () => {})
    // Every stream the server opens to the slow peer waits for the gate (as over a slow link).
    let open: () => void = () => {}
    const gate = new Promise<void>((resolve) => { open = resolve })
    server.node.addEventListener('connection:open', (evt) => {
      const conn = evt.detail
      if (conn.remotePeer.toString() !== slow.peerId) return
      const library = conn.newStream.bind(conn)
      ;(conn as { newStream: typeof conn.newStream }).newStream = async (...args: Parameters<typeof conn.newStream>) => { await gate; return library(...args) }
    })
    const addr = multiaddr(server.addresses()[0]!)
    await slow.node.dial(addr)
    // The server has queued its stream to the slow peer (it heard the slow peer's own stream) before the fast one dials.
    await new Promise<void>((resolve) => {
      const check = () => ((server.node.services.pubsub as unknown as { streamsInbound: Map<string, unknown> }).streamsInbound.has(slow.peerId) ? resolve() : setTimeout(check, 20))
      check()
    })
    await fast.node.dial(addr)
    expect(await server.whenGossipReaches(fast.peerId, TOPIC, 10_000)).toBe(true)
    expect(await server.whenGossipReaches(slow.peerId, TOPIC, 1), 'the slow peer is still behind its gate').toBe(false)
    open()
    expect(await server.whenGossipReaches(slow.peerId, TOPIC, 10_000)).toBe(true)
  })

  it('a node that does not identify on connect (the coordinator) still learns the peer from its gossip stream and reaches it', async () => {
    const server = await net({ identifyOnConnect: false })
    const client = await net()
    const identified = { server: 0, client: 0 }
    server.node.addEventListener('peer:identify', () => { identified.server++ })
    client.node.addEventListener('peer:identify', () => { identified.client++ })
    server.subscribe(TOPIC, () => {})
    const got = firstMessage(client)
    await client.node.dial(multiaddr(server.addresses()[0]!))
    expect(await server.whenGossipReaches(client.peerId, TOPIC, 10_000)).toBe(true)
    expect(await server.publish(TOPIC, new TextEncoder().encode('job'))).toBe(1)
    expect(await got).toBe('job')
    // By the time the job arrived, the client had identified the server; the server never asked.
    expect(identified).toEqual({ server: 0, client: 1 })
  })

  it('with neither end identifying (an agent that knows its coordinator speaks gossip), gossip flows both ways at once', async () => {
    const server = await net({ identifyOnConnect: false })
    const client = await net({ gossipPeer: (p) => p === server.peerId })
    const identified = { server: 0, client: 0 }
    server.node.addEventListener('peer:identify', () => { identified.server++ })
    client.node.addEventListener('peer:identify', () => { identified.client++ })
    const atServer = firstMessage(server)
    const atClient = firstMessage(client)
    await client.node.dial(multiaddr(server.addresses()[0]!))
    expect(await server.whenGossipReaches(client.peerId, TOPIC, 10_000)).toBe(true)
    expect(await client.whenGossipReaches(server.peerId, TOPIC, 10_000)).toBe(true)
    expect(await server.publish(TOPIC, new TextEncoder().encode('job'))).toBe(1)
    expect(await client.publish(TOPIC, new TextEncoder().encode('result'))).toBe(1)
    expect(await atClient).toBe('job')
    expect(await atServer).toBe('result')
    expect(identified).toEqual({ server: 0, client: 0 })
    // A third node the client does not presume is identified as before, and gossips too.
    const other = await net()
    const atOther = firstMessage(other)
    await client.node.dial(multiaddr(other.addresses()[0]!))
    expect(await client.whenGossipReaches(other.peerId, TOPIC, 10_000)).toBe(true)
    expect(await client.publish(TOPIC, new TextEncoder().encode('to both'))).toBe(2)
    expect(await atOther).toBe('to both')
    expect(identified.client).toBe(1)
  })

  it('opens at most maxAtOnce at once, one per peer; a peer pushed again while its open runs is opened again after it; nothing after end()', async () => {
    const started: string[] = []
    const finish = new Map<string, (() => void)[]>()
    const fake = {
      outboundInflightQueue: { push: () => {}, end: () => {} },
      createOutboundStream: (peerId: { toString(): string }) => {
        const id = peerId.toString()
        started.push(id)
        return new Promise<void>((resolve) => { finish.set(id, [...(finish.get(id) ?? []), resolve]) })
      },
    }
    const opener = openGossipStreamsConcurrently(fake as unknown as GossipSub, 2)
    const q = (fake as unknown as { outboundInflightQueue: { push(j: { peerId: string; connection: unknown }): void; end(): void } }).outboundInflightQueue
    const push = (id: string) => q.push({ peerId: id, connection: {} })
    push('a'); push('b'); push('c'); push('a')
    expect(started).toEqual(['a', 'b'])
    expect(opener.stats()).toEqual({ running: 2, waiting: 1 })
    const done = async (id: string) => { finish.get(id)!.shift()!(); await new Promise((r) => setImmediate(r)) }
    await done('b')
    expect(started).toEqual(['a', 'b', 'c'])
    await done('a')
    // a's second push waited for its first open, then took the free slot.
    expect(started).toEqual(['a', 'b', 'c', 'a'])
    q.end()
    push('d')
    await done('c')
    await done('a')
    expect(started).toEqual(['a', 'b', 'c', 'a'])
    expect(opener.stats()).toEqual({ running: 0, waiting: 0 })
  })
})
