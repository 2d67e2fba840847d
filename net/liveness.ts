// Connection liveness with yamux's own ping frames, spread over the interval. libp2p's connection
// monitor pings every connection at the same instant, each ping on a new stream (SYN, a
// multistream-select negotiation, 32 bytes each way, two FINs: about a dozen frames, each its own
// noise message and socket write), and times it out with a timer that, on an event loop that
// lagged, fires before the socket holding the pong is read: a loaded coordinator then dropped
// healthy agents, which redialled and said hello again (README, Sizing). Here each connection is
// pinged once per interval in its own slice of it, with one 12-byte frame each way, and a ping
// that seems late is judged only after the event loop has read its sockets (setImmediate runs
// after the poll phase).
import type { Connection } from '@libp2p/interface'
import type { Libp2p } from 'libp2p'

export interface LivenessOptions {
  /** Each connection is pinged once per this many ms. */
  intervalMs: number
  /** A pong later than this many ms (and not read by the next turn of the event loop) closes the connection. */
  timeoutMs: number
  /** The interval is cut into this many slices; a connection is pinged in its own slice. */
  slices: number
  /** A connection younger than this many ms is not pinged yet (default 0). */
  graceMs?: number
}

interface YamuxLike {
  ping(options?: { signal?: AbortSignal }): Promise<number>
}

/** The muxer of a libp2p connection, if it can ping (yamux can; libp2p does not type it). */
function muxerOf(conn: Connection): YamuxLike | undefined {
  const m = (conn as unknown as { muxer?: Partial<YamuxLike> }).muxer
  return typeof m?.ping === 'function' ? (m as YamuxLike) : undefined
}

/** What a caller (a test, a metric) may observe. */
export interface LivenessEvents {
  ping?(conn: Connection): void
  pong?(conn: Connection, rttMs: number): void
  dead?(conn: Connection, why: string): void
}

/** Starts pinging node's connections; returns the function that stops it. */
export function startLiveness(node: Libp2p, o: LivenessOptions, on: LivenessEvents = {}): () => void {
  const slice = new WeakMap<Connection, number>()
  const pinging = new WeakSet<Connection>()
  let nextSlice = 0
  let tick = 0
  const ping = (conn: Connection, muxer: YamuxLike) => {
    pinging.add(conn)
    on.ping?.(conn)
    let answered = false
    const timer = setTimeout(() => setImmediate(() => {
      if (answered || conn.status !== 'open') return
      const why = `no pong within ${o.timeoutMs} ms`
      on.dead?.(conn, why)
      try { conn.abort(new Error(why)) } catch { /* closing already */ }
    }), o.timeoutMs)
    muxer.ping().then((rtt) => { answered = true; on.pong?.(conn, rtt) }, () => { answered = true /* the muxer closed: libp2p closes the connection */ }).finally(() => {
      clearTimeout(timer)
      pinging.delete(conn)
    })
  }
  const interval = setInterval(() => {
    const now = tick++ % o.slices
    for (const conn of node.getConnections()) {
      let s = slice.get(conn)
      if (s === undefined) { s = nextSlice++ % o.slices; slice.set(conn, s) }
      if (s !== now || conn.status !== 'open' || pinging.has(conn)) continue
      if (o.graceMs && Date.now() - conn.timeline.open < o.graceMs) continue
      const muxer = muxerOf(conn)
      if (muxer) ping(conn, muxer)
    }
  }, Math.max(1, Math.floor(o.intervalMs / o.slices)))
  interval.unref?.()
  return () => clearInterval(interval)
}
