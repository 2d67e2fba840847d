// Requests over one long-lived stream per peer (net/rpc-mux.ts), over real libp2p on 127.0.0.1:
// replies find their requests in any order, a held request fails the moment its connection
// closes, a handler's exception fails only its own request, hostile frames close only the stream
// that sent them, a peer without the protocol is still served one stream per request, and the
// window updates of yamux are sent once half a window is used, not after every frame.
import { afterEach, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Stream } from '@libp2p/interface'
import { MAX_NON_MEMBER_FRAME_BYTES, createNet, withDeadline, type Net } from '../net/libp2p.js'
import { FrameDecoder, MAX_MUX_PENDING, MuxFrameError, encodeFrame, serveMux } from '../net/rpc-mux.js'
import { PROTOCOL_RPC_MUX } from '../protocol/wire.js'
import { waitFor } from '../cli/fleet.js'

const nets: Net[] = []
afterEach(async () => { await Promise.all(nets.splice(0).map((n) => n.stop())) })

async function pair(serverOpts: { isMember?: (peer: string) => boolean } = {}): Promise<{ server: Net; client: Net }> {
  const server = await createNet({ seed: randomBytes(32), listen: ['/ip4/127.0.0.1/tcp/0'], ...serverOpts })
  const client = await createNet({ seed: randomBytes(32), listen: ['/ip4/127.0.0.1/tcp/0'] })
  nets.push(server, client)
  await client.node.dial(multiaddr(server.addresses()[0]!))
  return { server, client }
}

const text = (b: Uint8Array) => new TextDecoder().decode(b)
const bytes = (s: string) => new TextEncoder().encode(s)
/** Frames sent by every yamux muxer of this process, by type, while fn runs (the muxer class is not exported: it is found from a live connection of net). */
async function countFrames<T>(net: Net, fn: () => Promise<T>): Promise<{ result: T; data: number; window: number }> {
  const muxer = (net.node.getConnections()[0] as unknown as { muxer: object }).muxer
  // sendFrame is bound into each stream when it is created; send() (header byte 1: the type) is not.
  const proto = Object.getPrototypeOf(muxer) as { send(encoded: { get?(i: number): number; [i: number]: number }): unknown }
  const library = proto.send
  let data = 0
  let window = 0
  proto.send = function (this: unknown, encoded) {
    const type = typeof encoded.get === 'function' ? encoded.get(1) : encoded[1]
    if (type === 0) data++
    if (type === 1) window++
    return library.call(this, encoded)
  }
  try {
    return { result: await fn(), data, window }
  } finally {
    proto.send = library
  }
}

describe('withDeadline', () => {
  it('passes a settled promise through and rejects one that never settles once its time is up', async () => {
    expect(await withDeadline(Promise.resolve(7), 1_000, 'x')).toBe(7)
    await expect(withDeadline(Promise.reject(new Error('no')), 1_000, 'x')).rejects.toThrow('no')
    await expect(withDeadline(new Promise(() => {}), 50, 'dial')).rejects.toThrow('dial timed out after 50 ms')
  })
})

describe('frame decoder', () => {
  it('splits frames arriving in pieces of any size, several to a chunk', () => {
    const frames = [encodeFrame(0, 1, bytes('one')), encodeFrame(0, 2, new Uint8Array(0)), encodeFrame(1, 0xffff_ffff, bytes('x'.repeat(300)))]
    const all = new Uint8Array(frames.reduce((n, f) => n + f.byteLength, 0))
    let at = 0
    for (const f of frames) { all.set(f, at); at += f.byteLength }
    for (const size of [1, 2, 3, 5, 9, 13, 64, all.byteLength]) {
      const d = new FrameDecoder(() => 1_000)
      const got = []
      for (let i = 0; i < all.byteLength; i += size) got.push(...d.push(all.subarray(i, i + size)))
      expect(got.map((f) => [f.kind, f.id, text(f.payload)]), `pieces of ${size}`).toEqual([[0, 1, 'one'], [0, 2, ''], [1, 0xffff_ffff, 'x'.repeat(300)]])
      expect(d.buffered).toBe(0)
    }
  })

  it('refuses a frame over the limit from its header alone, and a length below the header', () => {
    const d = new FrameDecoder(() => 10)
    expect(() => d.push(encodeFrame(0, 1, new Uint8Array(11)).subarray(0, 4))).toThrow(MuxFrameError)
    expect(() => new FrameDecoder(() => 10).push(new Uint8Array([0, 0, 0, 4, 0, 0, 0, 0]))).toThrow(/below its 5-byte header/)
  })
})

describe('rpc over one stream per peer', () => {
  it('matches replies to requests finishing in any order, on one stream, with two data frames and no window update per rpc', async () => {
    const { server, client } = await pair()
    await server.handleRpc(async (data) => {
      const [how, n] = text(data).split(':')
      if (how === 'slow') await new Promise((r) => setTimeout(r, (20 - (Number(n) % 20)) * 2)) // later requests finish first
      return bytes(`reply ${n}`)
    })
    const replies = await Promise.all(Array.from({ length: 40 }, (_, n) => client.request(server.peerId, bytes(`slow:${n}`), 10_000)))
    expect(replies.map(text)).toEqual(Array.from({ length: 40 }, (_, n) => `reply ${n}`))
    const { data, window } = await countFrames(client, async () => { for (let n = 0; n < 200; n++) await client.request(server.peerId, bytes(`fast:${n}`), 10_000) })
    // Two data frames per rpc (request and reply) and nothing else (the old protocol: 5 + 8 window updates).
    expect(data).toBe(400)
    expect(window).toBe(0)
    const streams = client.node.getConnections(peerIdFromString(server.peerId)).flatMap((c) => c.streams).filter((s) => s.protocol === PROTOCOL_RPC_MUX)
    expect(streams).toHaveLength(1)
  })

  it('writes each noise message to the socket once, not its length and its ciphertext apart', async () => {
    const { server, client } = await pair()
    await server.handleRpc(async (data) => data)
    await client.request(server.peerId, bytes('warm'), 10_000)
    const socket = (client.node.getConnections()[0] as unknown as { maConn: { socket: { write(...a: unknown[]): boolean } } }).maConn.socket
    const write = socket.write
    let writes = 0
    socket.write = function (this: unknown, ...a: unknown[]) { writes++; return write.apply(this, a) }
    try {
      for (let n = 0; n < 100; n++) await client.request(server.peerId, bytes(`r${n}`), 10_000)
    } finally {
      socket.write = write
    }
    // One request frame each (a stray window update or ping may add a few); the library alone writes 200.
    expect(writes).toBeGreaterThanOrEqual(100)
    expect(writes).toBeLessThan(110)
  })

  it('a held request fails as soon as its connection closes, not at its timeout', async () => {
    const { server, client } = await pair()
    let arrived!: () => void
    const held = new Promise<void>((r) => { arrived = r })
    await server.handleRpc(async (data) => {
      if (text(data) === 'hold') { arrived(); return new Promise<Uint8Array>(() => {}) }
      return data
    })
    const watch = client.request(server.peerId, bytes('hold'), 600_000).then(() => 'replied', (err: Error) => err.message)
    await held
    await client.hangUp(server.peerId)
    expect(await watch).toMatch(/rpc stream closed/)
    // A new connection, a new stream: requests go on.
    await client.node.dial(multiaddr(server.addresses()[0]!))
    expect(text(await client.request(server.peerId, bytes('after'), 10_000))).toBe('after')
  })

  it("a handler's exception fails only its own request, and the stream serves the next", async () => {
    const { server, client } = await pair()
    await server.handleRpc(async (data) => { if (text(data) === 'bad') throw new Error('no such thing'); return data })
    const [bad, good] = await Promise.all([
      client.request(server.peerId, bytes('bad'), 10_000).then(() => 'replied', (err: Error) => err.message),
      client.request(server.peerId, bytes('good'), 10_000).then(text),
    ])
    expect(bad).toMatch(/the peer failed the request: no such thing/)
    expect(good).toBe('good')
    expect(text(await client.request(server.peerId, bytes('next'), 10_000))).toBe('next')
  })

  it('a non-member cannot send a large request: its stream closes, the server goes on', async () => {
    const { server, client } = await pair({ isMember: () => false })
    await server.handleRpc(async (data) => bytes(`got ${data.byteLength}`))
    const large = await client.request(server.peerId, new Uint8Array(MAX_NON_MEMBER_FRAME_BYTES + 1), 10_000).then(() => 'replied', (err: Error) => err.message)
    expect(large).toMatch(/rpc stream closed/)
    expect(text(await client.request(server.peerId, new Uint8Array(100), 10_000))).toBe('got 100')
  })

  it('fails a request at once past MAX_MUX_PENDING waiting on one peer', async () => {
    const { server, client } = await pair()
    let release!: () => void
    const gate = new Promise<void>((r) => { release = r })
    await server.handleRpc(async (data) => { await gate; return data })
    const waiting = Array.from({ length: MAX_MUX_PENDING }, (_, n) => client.request(server.peerId, bytes(String(n)), 30_000))
    await expect(client.request(server.peerId, bytes('one more'), 30_000)).rejects.toThrow(/already wait on this peer/)
    release()
    expect((await Promise.all(waiting)).map(text)).toEqual(Array.from({ length: MAX_MUX_PENDING }, (_, n) => String(n)))
  })

  it('serves a peer without the protocol one stream per request', async () => {
    const { server, client } = await pair()
    await server.handleRpc(async (data) => data)
    await server.node.unhandle(PROTOCOL_RPC_MUX)
    expect(text(await client.request(server.peerId, bytes('legacy'), 10_000))).toBe('legacy')
    expect(text(await client.request(server.peerId, bytes('again'), 10_000))).toBe('again')
  })

  it('closes a stream that sends a reply frame, garbage or a request it never finishes; others are served', async () => {
    const { server, client } = await pair()
    const PROTO = '/chorus/test-mux/1.0.0'
    await server.node.handle(PROTO, (stream: Stream, connection) => {
      serveMux(stream, connection.remotePeer.toString(), async (d) => d, { maxPayload: () => 1_000, maxConcurrent: 4, partialDeadlineMs: 300 })
    })
    const closes = async (send: Uint8Array) => {
      const s = await client.node.dialProtocol(peerIdFromString(server.peerId), PROTO)
      const closed = new Promise<string>((r) => s.addEventListener('close', () => r('closed')))
      s.send(send)
      return closed
    }
    expect(await closes(encodeFrame(1, 7, bytes('a reply')))).toBe('closed')
    expect(await closes(new Uint8Array([0, 0, 0, 1, 9]))).toBe('closed')
    expect(await closes(encodeFrame(0, 7, bytes('x'.repeat(2_000))).subarray(0, 8))).toBe('closed') // over the limit
    expect(await closes(encodeFrame(0, 7, bytes('never finished')).subarray(0, 10))).toBe('closed') // the 300 ms deadline
    // Trickled a byte every 100 ms: later bytes of the same frame do not reset the deadline.
    {
      const s = await client.node.dialProtocol(peerIdFromString(server.peerId), PROTO)
      const closed = new Promise<string>((r) => s.addEventListener('close', () => r('closed')))
      const frame = encodeFrame(0, 8, bytes('x'.repeat(100)))
      let sent = 0
      const trickle = setInterval(() => { if (sent < frame.byteLength && s.writeStatus === 'writable') s.send(frame.subarray(sent, ++sent)) }, 100)
      expect(await closed).toBe('closed')
      clearInterval(trickle)
      expect(sent).toBeLessThan(frame.byteLength)
    }
    // A well-formed request on a fresh stream is answered.
    const s = await client.node.dialProtocol(peerIdFromString(server.peerId), PROTO)
    const reply = new Promise<Uint8Array>((r) => { const d = new FrameDecoder(() => 1_000); s.addEventListener('message', (e) => { const f = d.push(e.data)[0]; if (f) r(f.payload) }) })
    s.send(encodeFrame(0, 1, bytes('fine')))
    expect(text(await reply)).toBe('fine')
  })

  it('moves large replies with window updates only once half a window is used', async () => {
    const { server, client } = await pair()
    const big = new Uint8Array(256 * 1024).fill(7)
    await server.handleRpc(async () => big)
    const { data, window } = await countFrames(client, async () => {
      for (let n = 0; n < 20; n++) expect((await client.request(server.peerId, bytes('big'), 30_000)).byteLength).toBe(big.byteLength)
    })
    expect(data).toBeGreaterThan(20)
    expect(window).toBeGreaterThan(0) // the sender was granted more window: no stall
    expect(window).toBeLessThanOrEqual(data / 2) // the library alone answers every data frame with one
  })
})

describe('whenGossipReaches', () => {
  it('resolves once a publish would reach the peer, and the publish right after it does; false after its timeout otherwise', async () => {
    const { server, client } = await pair()
    const ready = server.whenGossipReaches(client.peerId, 'chorus/test/v1', 10_000)
    const got = new Promise<string>((resolve) => client.subscribe('chorus/test/v1', (data) => resolve(text(data))))
    expect(await ready).toBe(true)
    // Published at once: gossip sends it to this peer (a subscription heard before its stream was open counted 0 recipients).
    expect(await server.publish('chorus/test/v1', bytes('job'))).toBe(1)
    expect(await got).toBe('job')
    expect(await server.whenGossipReaches(client.peerId, 'chorus/other/v1', 200)).toBe(false)
  })

  it('many waits share one poll: each ends on its own, true for the peer that subscribes, false at its own timeout', async () => {
    const { server, client } = await pair()
    const real = globalThis.setInterval
    let intervals = 0
    globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => { intervals++; return real(...args) }) as typeof setInterval
    let waits: Promise<boolean>[]
    let ready: Promise<boolean>
    try {
      waits = Array.from({ length: 100 }, (_, i) => server.whenGossipReaches(`${client.peerId}-not-${i}`, 'chorus/test/v1', 100 + i * 10))
      ready = server.whenGossipReaches(client.peerId, 'chorus/test/v1', 10_000)
    } finally {
      globalThis.setInterval = real
    }
    expect(intervals).toBe(1)
    client.subscribe('chorus/test/v1', () => {})
    expect(await ready).toBe(true)
    const settled = await Promise.all(waits.map((w, i) => w.then((ok) => ({ ok, i }))))
    expect(settled.every((r) => r.ok === false)).toBe(true)
  })
})

describe('a peer that goes away mid-request', () => {
  it('with more requests in flight than are served at once: the server neither throws nor stops serving others', async () => {
    const { server, client } = await pair()
    let started = 0
    let finished = 0
    await server.handleRpc(async (data) => { started++; await new Promise((r) => setTimeout(r, 300)); finished++; return data })
    const unhandled: unknown[] = []
    const onUnhandled = (e: unknown) => unhandled.push(e)
    process.on('unhandledRejection', onUnhandled)
    try {
      const all = Array.from({ length: 40 }, (_, n) => client.request(server.peerId, bytes(String(n)), 10_000).catch(() => 'failed'))
      await waitFor('the first requests to be handled', async () => (started >= 16 ? true : undefined), 10_000, 10)
      await client.hangUp(server.peerId)
      expect(new Set(await Promise.all(all))).toEqual(new Set(['failed']))
      // The handlers finish after the stream closed; a new client is served by the same server.
      const other = await createNet({ seed: randomBytes(32), listen: ['/ip4/127.0.0.1/tcp/0'] })
      nets.push(other)
      await other.node.dial(multiaddr(server.addresses()[0]!))
      expect(text(await other.request(server.peerId, bytes('still'), 10_000))).toBe('still')
      // Every handler of the closed stream has ended (their replies had nowhere to go) before the check.
      await waitFor('the closed stream\'s handlers to end', async () => (finished === started ? true : undefined), 10_000, 10)
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})
