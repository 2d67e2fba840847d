// Connection liveness (net/liveness.ts) over real libp2p on 127.0.0.1: each connection is pinged
// in its own slice of the interval, a pinger whose event loop was blocked past the timeout does
// not drop healthy peers (their pongs are read before the verdict), and a peer that stops
// answering (a stopped process) is dropped.
import { afterEach, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { spawn, type ChildProcess } from 'node:child_process'
import { multiaddr } from '@multiformats/multiaddr'
import type { Connection } from '@libp2p/interface'
import { createNet, type Net } from '../net/libp2p.js'
import { startLiveness } from '../net/liveness.js'
import { waitFor } from '../cli/fleet.js'

const nets: Net[] = []
const stops: (() => void)[] = []
const procs: ChildProcess[] = []
afterEach(async () => {
  for (const s of stops.splice(0)) s()
  for (const p of procs.splice(0)) { p.kill('SIGCONT'); p.kill('SIGKILL') }
  await Promise.all(nets.splice(0).map((n) => n.stop()))
})

const net = async () => { const n = await createNet({ seed: randomBytes(32), listen: ['/ip4/127.0.0.1/tcp/0'] }); nets.push(n); return n }

describe('liveness pings', () => {
  it('pings each connection once per interval, a slice of them at a time', async () => {
    const pinger = await net()
    const peers = await Promise.all(Array.from({ length: 12 }, () => net()))
    for (const p of peers) await pinger.node.dial(multiaddr(p.addresses()[0]!))
    const pings: { conn: string; at: number }[] = []
    const pongs = new Map<string, number>()
    stops.push(startLiveness(pinger.node, { intervalMs: 600, timeoutMs: 5_000, slices: 4 }, {
      ping: (c) => pings.push({ conn: c.id, at: Date.now() }),
      pong: (c) => pongs.set(c.id, (pongs.get(c.id) ?? 0) + 1),
    }))
    const ids = pinger.node.getConnections().map((c) => c.id)
    await waitFor('every connection answered three pings', async () => (ids.every((id) => (pongs.get(id) ?? 0) >= 3) ? true : undefined), 30_000, 50)
    // Spread: pings are sent in groups of ⌈12 / 4⌉ = 3 per tick, never all 12 at once.
    const byTick = new Map<number, number>()
    for (const p of pings) byTick.set(Math.floor(p.at / 10), (byTick.get(Math.floor(p.at / 10)) ?? 0) + 1)
    expect(Math.max(...byTick.values())).toBeLessThanOrEqual(6)
    // Each connection's pings are an interval apart, not every tick.
    const first = pings.filter((p) => p.conn === ids[0])
    expect(first.length).toBeLessThan(pings.length / 6)
  })

  it("a pinger whose event loop was blocked past the timeout keeps its healthy peers", async () => {
    const pinger = await net()
    const peer = await net()
    await pinger.node.dial(multiaddr(peer.addresses()[0]!))
    const dead: string[] = []
    let pongs = 0
    let block = false
    let blocked = false
    stops.push(startLiveness(pinger.node, { intervalMs: 200, timeoutMs: 300, slices: 1 }, {
      dead: (_c, why) => dead.push(why),
      pong: () => { pongs++ },
      // Once: block this event loop for five timeouts right after a ping is sent (setImmediate
      // runs before the loop polls its sockets), so that its pong waits unread in the socket.
      ping: () => {
        if (!block || blocked) return
        blocked = true
        setImmediate(() => { const until = Date.now() + 1_500; while (Date.now() < until) { /* busy */ } })
      },
    }))
    await waitFor('a first pong', async () => (pongs > 0 ? true : undefined), 10_000, 20)
    block = true
    await waitFor('the block', async () => (blocked ? true : undefined), 10_000, 20)
    const before = pongs
    await waitFor('two more pongs after the block', async () => (pongs >= before + 2 ? true : undefined), 10_000, 20)
    expect(dead).toEqual([])
    expect(pinger.node.getConnections().filter((c) => c.status === 'open')).toHaveLength(1)
  })

  it('with skipHeard, does not ping a connection it keeps hearing from, and pings it once it falls silent', async () => {
    const pinger = await net()
    const chatty = await net()
    const quiet = await net()
    for (const p of [chatty, quiet]) await pinger.node.dial(multiaddr(p.addresses()[0]!))
    const chattyConn = pinger.node.getConnections(chatty.node.peerId)[0]!
    const pings = new Map<string, number>()
    // The chatty peer pings the pinger every 50 ms: a frame arrives well inside every 300 ms interval.
    const stopChatter = startLiveness(chatty.node, { intervalMs: 50, timeoutMs: 5_000, slices: 1 })
    stops.push(stopChatter)
    stops.push(startLiveness(pinger.node, { intervalMs: 300, timeoutMs: 1_000, slices: 1, skipHeard: true }, {
      ping: (c) => pings.set(c.id, (pings.get(c.id) ?? 0) + 1),
    }))
    const quietConn = pinger.node.getConnections(quiet.node.peerId)[0]!
    await waitFor('the quiet peer pinged three times', async () => ((pings.get(quietConn.id) ?? 0) >= 3 ? true : undefined), 10_000, 20)
    // The first check may come before the muxer's frames are stamped; after it, none while chatty talks.
    const whileChatty = pings.get(chattyConn.id) ?? 0
    expect(whileChatty).toBeLessThanOrEqual(1)
    stopChatter()
    await waitFor('the chatty peer pinged once it fell silent', async () => ((pings.get(chattyConn.id) ?? 0) > whileChatty ? true : undefined), 10_000, 20)
  })

  it('drops the connection of a peer that stops answering', async () => {
    const pinger = await net()
    // The peer is another process, stopped with SIGSTOP: its socket stays open, nothing answers.
    // (the built dist/, as the fleet tests' processes use the built bundle)
    const child = spawn(process.execPath, ['--input-type=module', '-e', `
      import('./dist/runtime/polyfill.js').then(() => import('./dist/net/libp2p.js')).then(async ({ createNet }) => {
        const n = await createNet({ seed: new Uint8Array(32).fill(9), listen: ['/ip4/127.0.0.1/tcp/0'] })
        console.log(n.addresses()[0])
      })`], { stdio: ['ignore', 'pipe', 'inherit'] })
    procs.push(child)
    const addr = await new Promise<string>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim())))
    await pinger.node.dial(multiaddr(addr))
    const dead: Connection[] = []
    let pongs = 0
    // skipHeard, as the coordinator runs it: the pongs themselves count as heard.
    stops.push(startLiveness(pinger.node, { intervalMs: 200, timeoutMs: 500, slices: 1, skipHeard: true }, { dead: (c) => dead.push(c), pong: () => { pongs++ } }))
    await waitFor('two pongs', async () => (pongs > 1 ? true : undefined), 10_000, 20)
    child.kill('SIGSTOP')
    await waitFor('the stopped peer dropped', async () => (pinger.node.getConnections().length === 0 ? true : undefined), 10_000, 50)
    expect(dead).toHaveLength(1)
  })
})
