// Gossip streams opened side by side. @libp2p/gossipsub 17.1.1 opens its outbound stream to each
// peer from one serial queue (outboundInflightQueue, consumed by a `for await` loop): each open
// waits for the previous one's multistream-select round trip. A coordinator restarted under a
// fleet gets all its connections at once, so the last peer's stream (without which a publish
// skips that peer, and a hello's reply waits up to HELLO_GOSSIP_WAIT_MS) comes after N round
// trips: in one instrumented restart at 500 agents on the 2-core bench machine, 24 of 487
// connected agents had one 27 s after it (README, How it works). Over a WAN, N × the round trip.
//
// Here the queue is replaced by at most MAX_GOSSIP_STREAM_OPENS opens at once, one per peer: a
// peer pushed again while its open runs (gossipsub pushes on connect and on every inbound
// stream) is opened again after it, as the serial queue would have (the library's own check then
// returns at once if the first open succeeded). Installed by net/libp2p.ts after the node starts.
import type { GossipSub } from '@libp2p/gossipsub'

/** Outbound gossip stream opens at once, per node (each a multistream-select round trip). */
export const MAX_GOSSIP_STREAM_OPENS = 64

interface Job { peerId: { toString(): string }; connection: unknown }
interface Internals {
  outboundInflightQueue: { push(job: Job): void; end(): void }
  createOutboundStream(peerId: Job['peerId'], connection: unknown): Promise<void>
}

export interface GossipStreamOpener {
  /** Opens running now (at most MAX_GOSSIP_STREAM_OPENS), and peers waiting for a slot. */
  stats(): { running: number; waiting: number }
}

export function openGossipStreamsConcurrently(pubsub: GossipSub, maxAtOnce = MAX_GOSSIP_STREAM_OPENS): GossipStreamOpener {
  const g = pubsub as unknown as Internals
  // waiting: peers with no open running, oldest first; again: peers pushed while theirs runs.
  // Each holds at most one entry per peer (the latest connection), so both are bounded by the
  // connections the node admits.
  const waiting = new Map<string, Job>()
  const again = new Map<string, Job>()
  const running = new Set<string>()
  let ended = false
  // The library's queue ends (after any peer already in it); its loop then returns.
  g.outboundInflightQueue.end()
  const pump = () => {
    for (const [id, job] of waiting) {
      if (running.size >= maxAtOnce) return
      waiting.delete(id)
      running.add(id)
      // createOutboundStream catches its own errors; the catch is for a library that does not.
      g.createOutboundStream(job.peerId, job.connection).catch(() => {}).finally(() => {
        running.delete(id)
        const next = again.get(id)
        if (next && !ended) { again.delete(id); waiting.set(id, next) }
        pump()
      })
    }
  }
  g.outboundInflightQueue = {
    push(job) {
      if (ended) return
      const id = job.peerId.toString()
      if (running.has(id)) again.set(id, job)
      else waiting.set(id, job)
      pump()
    },
    end() { ended = true; waiting.clear(); again.clear() },
  }
  return { stats: () => ({ running: running.size, waiting: waiting.size }) }
}
