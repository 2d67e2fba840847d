// Connection liveness with yamux's own ping frames, spread over the interval. libp2p's connection
// monitor pings every connection at the same instant, each ping on a new stream (SYN, a
// multistream-select negotiation, 32 bytes each way, two FINs: about a dozen frames, each its own
// noise message and socket write), and times it out with a timer that, on an event loop that
// lagged, fires before the socket holding the pong is read: a loaded coordinator then dropped
// healthy agents, which redialled and said hello again (README, Sizing). Here each connection is
// pinged once per interval in its own slice of it, with one 12-byte frame each way, and a ping
// that seems late is judged only after the event loop has read its sockets (setImmediate runs
// after the poll phase). With skipHeard (the coordinator), a connection that delivered any frame
// within the interval is not pinged in it: its traffic, or its own pings, already show it alive.
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
  /**
   * A connection that delivered a frame (data, a window update, the peer's own ping, or the pong
   * of our last ping) within the interval is not pinged in this one: it just showed it is alive.
   * A silent one is pinged as before, so a stopped peer is dropped at most two intervals and the
   * timeout after its last frame.
   */
  skipHeard?: boolean
}

interface YamuxLike {
  ping(options?: { signal?: AbortSignal }): Promise<number>
  /** When the muxer last read a frame (ms since epoch), stamped by heardFrames below. */
  chorusHeardAt?: number
}

/** The muxer of a libp2p connection, if it can ping (yamux can; libp2p does not type it). */
function muxerOf(conn: Connection): YamuxLike | undefined {
  const m = (conn as unknown as { muxer?: Partial<YamuxLike> }).muxer
  return typeof m?.ping === 'function' ? (m as YamuxLike) : undefined
}

/** Stamps every frame a muxer of this class reads (its prototype's handleFrame, once); false if it has none. */
function heardFrames(muxer: YamuxLike): boolean {
  const proto = Object.getPrototypeOf(muxer) as { handleFrame?: (this: YamuxLike, frame: unknown) => unknown; chorusHeard?: true }
  if (proto.chorusHeard) return true
  const library = proto.handleFrame
  if (typeof library !== 'function') return false
  proto.handleFrame = function (this: YamuxLike, frame: unknown) {
    this.chorusHeardAt = Date.now()
    return library.call(this, frame)
  }
  proto.chorusHeard = true
  return true
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
      if (!muxer) continue
      if (o.skipHeard && heardFrames(muxer) && muxer.chorusHeardAt !== undefined && Date.now() - muxer.chorusHeardAt < o.intervalMs) continue
      ping(conn, muxer)
    }
  }, Math.max(1, Math.floor(o.intervalMs / o.slices)))
  interval.unref?.()
  return () => clearInterval(interval)
}
