// Inbound handshakes are bounded (net/libp2p.ts MAX_PENDING_HANDSHAKES), on loopback too: over
// the bound a dial is refused at once instead of joining a pile of handshakes that all slow each
// other down, and a freed slot takes the next dial. Real libp2p on 127.0.0.1.
import { afterEach, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { multiaddr } from '@multiformats/multiaddr'
import { createNet, dialReachedBusyPeer, linkTransport, MAX_PENDING_HANDSHAKES, type Net } from '../net/libp2p.js'
import { waitFor } from '../cli/fleet.js'

const nets: Net[] = []
const sockets: Socket[] = []
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy()
  await Promise.all(nets.splice(0).map((n) => n.stop()))
})

async function net(maxPendingHandshakes?: number): Promise<Net> {
  const n = await createNet({ seed: randomBytes(32), listen: ['/ip4/127.0.0.1/tcp/0'], ...(maxPendingHandshakes ? { maxPendingHandshakes } : {}) })
  nets.push(n)
  return n
}

/** A TCP connection that opens and then says nothing: it holds a handshake slot until it closes. */
async function stall(addr: string): Promise<Socket> {
  const m = /\/ip4\/([\d.]+)\/tcp\/(\d+)/.exec(addr)!
  const s = connect(Number(m[2]), m[1]!)
  sockets.push(s)
  await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('error', reject) })
  return s
}

describe('inbound handshakes', () => {
  it('refuses a dial while the bound is taken by stalled handshakes, and takes it once one closes', async () => {
    const server = await net(2)
    const addr = server.addresses()[0]!
    const stalled = [await stall(addr), await stall(addr)]
    // Both slots held: a real dial is refused (the socket is closed at once, well before the 10 s upgrade timeout).
    const client = await net()
    const refused = await client.node.dial(multiaddr(addr), { signal: AbortSignal.timeout(8_000) }).then(() => 'connected', (e: Error) => e.name)
    expect(refused).not.toBe('connected')
    expect(refused).not.toBe('TimeoutError')
    expect(server.node.getConnections()).toHaveLength(0)
    // One stalled handshake gives up: its slot takes the next dial.
    stalled[0]!.destroy()
    await waitFor('a dial through the freed slot', async () => {
      try {
        await client.node.dial(multiaddr(addr), { signal: AbortSignal.timeout(5_000) })
        return true
      } catch { return undefined }
    }, 20_000, 100)
    // The dialler is done first; the server registers the connection as its side finishes.
    await waitFor('the server holds the connection', async () => (server.node.getConnections().filter((c) => c.status === 'open').length === 1 ? true : undefined), 10_000, 20)
  })

  it('dials refused while the slots were taken all get in on a redial once they free up', async () => {
    const server = await net(2)
    const addr = server.addresses()[0]!
    const stalled = [await stall(addr), await stall(addr)]
    const clients = await Promise.all(Array.from({ length: 8 }, () => net()))
    const refusals = new Map<Net, number>()
    const joined = Promise.all(clients.map(async (c) => {
      for (;;) {
        try {
          await c.node.dial(multiaddr(addr), { signal: AbortSignal.timeout(5_000) })
          return
        } catch {
          refusals.set(c, (refusals.get(c) ?? 0) + 1)
          await new Promise((r) => setTimeout(r, 50 + Math.random() * 100))
        }
      }
    }))
    await waitFor('every client refused once', async () => (refusals.size === clients.length ? true : undefined), 20_000, 20)
    for (const s of stalled) s.destroy()
    await joined
    await waitFor('the server holds all 8', async () => (server.node.getConnections().filter((c) => c.status === 'open').length === 8 ? true : undefined), 10_000, 20)
    expect(MAX_PENDING_HANDSHAKES).toBeGreaterThan(2)
  }, 60_000)

  it('the agent shell hears a dial refused by a busy peer (its handshake bound) as busy, and one to a port nothing listens on as away', async () => {
    const server = await net(1)
    const addr = server.addresses()[0]!
    await stall(addr)
    const client = linkTransport(await net())
    const dial = (to: string) => new Promise<Error | undefined>((resolve) => client.dial(server.peerId, [to], 8_000, resolve))
    const busy = await dial(addr)
    expect(busy?.message).toMatch(/ECONNRESET|EOF|ended/)
    expect((busy as { peerBusy?: boolean }).peerBusy).toBe(true)
    await server.stop()
    nets.splice(nets.indexOf(server), 1)
    const away = await dial(addr)
    expect(away?.message).toMatch(/ECONNREFUSED/)
    expect((away as { peerBusy?: boolean }).peerBusy).toBeUndefined()
    expect(dialReachedBusyPeer(new Error('dial timed out after 10000 ms'))).toBe(false)
    // A listener that takes the TCP connection and then says nothing: the dial times out, busy.
    const mute = await net(1)
    const muteAddr = mute.addresses()[0]!
    await stall(muteAddr)
    const silent = createServer((sock) => { sockets.push(sock) })
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const timedOut = await new Promise<Error | undefined>((resolve) => client.dial(mute.peerId, [`/ip4/127.0.0.1/tcp/${(silent.address() as AddressInfo).port}`], 1_000, resolve))
    silent.close()
    expect(timedOut?.name).toMatch(/Timeout|Abort/)
    expect((timedOut as { peerBusy?: boolean }).peerBusy).toBe(true)
  })

  it('after a refused dial the next attempt probes the port with a bare TCP connect: no libp2p dial until it answers, then one that connects', async () => {
    const seed = randomBytes(32)
    const server = await createNet({ seed, listen: ['/ip4/127.0.0.1/tcp/0'] })
    nets.push(server)
    const addr = server.addresses()[0]!
    const port = Number(/\/tcp\/(\d+)/.exec(addr)![1])
    const peer = server.peerId
    await server.stop()
    nets.splice(nets.indexOf(server), 1)
    const clientNet = await net()
    let libp2pDials = 0
    const library = clientNet.node.dial.bind(clientNet.node)
    ;(clientNet.node as { dial: typeof library }).dial = (...args: Parameters<typeof library>) => { libp2pDials++; return library(...args) }
    const client = linkTransport(clientNet)
    const dial = () => new Promise<Error | undefined>((resolve) => client.dial(peer, [addr], 8_000, resolve))
    const first = await dial()
    expect(first?.message).toMatch(/ECONNREFUSED/)
    expect(libp2pDials).toBe(1)
    const second = await dial()
    expect(second?.message).toMatch(/ECONNREFUSED \(probed\)/)
    expect((second as { peerBusy?: boolean }).peerBusy).toBeUndefined()
    expect(libp2pDials, 'a refused probe makes no libp2p dial').toBe(1)
    // The peer comes back on the same port (a coordinator restarted): the probe goes through, then the dial.
    const back = await createNet({ seed, listen: [`/ip4/127.0.0.1/tcp/${port}`] })
    nets.push(back)
    expect(await dial()).toBeUndefined()
    expect(libp2pDials).toBe(2)
    expect(clientNet.node.getConnections().some((c) => c.remotePeer.toString() === back.peerId)).toBe(true)
  })
})
