// net/connection-list.ts: the connection manager lists every connection in one pass (libp2p's own
// list copies itself once per peer). Real libp2p on 127.0.0.1: the patched list equals the
// library's, in the same order, and is built without concatenating arrays.
import { afterEach, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import { createNet, type Net } from '../net/libp2p.js'
import { waitFor } from '../cli/fleet.js'

const nets: Net[] = []
afterEach(async () => { await Promise.all(nets.splice(0).map((n) => n.stop())) })
const net = async () => { const n = await createNet({ seed: randomBytes(32), listen: ['/ip4/127.0.0.1/tcp/0'] }); nets.push(n); return n }

describe('connection list', () => {
  it('lists the same connections as libp2p, in the same order, with no array concatenation', async () => {
    const server = await net()
    const clients = [await net(), await net(), await net(), await net()]
    for (const c of clients) await c.node.dial(multiaddr(server.addresses()[0]!))
    const cm = (server.node as unknown as { components: { connectionManager: { getConnections(p?: unknown): unknown[] } } }).components.connectionManager
    await waitFor('every client connected', async () => (cm.getConnections().length === clients.length ? true : undefined), 10_000)
    const library = (Object.getPrototypeOf(cm) as { getConnections(this: unknown, p?: unknown): unknown[] }).getConnections
    expect(cm.getConnections).not.toBe(library)
    const theirs = library.call(cm)
    const concat = Array.prototype.concat
    let concats = 0
    Array.prototype.concat = function (this: unknown[], ...args: unknown[]) { concats++; return concat.apply(this, args) } as typeof concat
    let ours: unknown[]
    let viaNode: unknown[]
    try { ours = cm.getConnections(); viaNode = server.node.getConnections() } finally { Array.prototype.concat = concat }
    expect(concats).toBe(0)
    expect(viaNode).toEqual(ours)
    expect(ours).toHaveLength(clients.length)
    expect(ours.every((c, i) => c === theirs[i])).toBe(true)
    // Per peer: the library's own answer.
    const peer = server.node.getPeers()[0]!
    expect(cm.getConnections(peer)).toEqual(library.call(cm, peer))
    // And the library's list does concatenate (what this replaces).
    Array.prototype.concat = function (this: unknown[], ...args: unknown[]) { concats++; return concat.apply(this, args) } as typeof concat
    try { library.call(cm) } finally { Array.prototype.concat = concat }
    expect(concats).toBe(clients.length)
  })
})
