// Watches: how targets waiting for their turn hear of the progress that admits them, in O(1)
// messages per target instead of a gossip flood per change.
//
// A waiting agent sends a sync with `watch: true` and the checkpoint sequence it holds for each
// waiting instance. The coordinator answers at once if a newer checkpoint would already decide
// the run (start it, or skip it), and otherwise holds the request (at most WATCH_HOLD_MS, below
// the agents' rpc timeout) until a change decides it. The agent still decides for itself from
// the checkpoint it receives: the coordinator only chooses *when* to answer.
//
// Deciding who to wake after a change costs O(woken + groups), not O(watchers): within a group a
// node is admitted no later than every node after it (rolling: the window condition needs one
// more done node per position; batching: a later batch needs strictly more), so watchers sit in a
// min-heap by position and the coordinator pops from the front until the first one that still waits.

/** A held sync request. */
export interface Watcher {
  requestId: string
  nodeId: string
  /** The coordinator answers by then whatever happens (below the agents' RPC_TIMEOUT_MS). */
  heldUntil: number
  /** Checkpoint sequence the node holds, per waiting instance. */
  seqs: Map<string, number>
  /** Where the node waits, per instance: the heaps it sits in. */
  places: { instanceId: string; group: number; position: number }[]
  answered: boolean
}

import { MinHeap } from '../protocol/minheap.js'
import { WATCH_HOLD_MS } from '../protocol/timing.js'
export { WATCH_HOLD_MS }
/** Held requests at once, below the runtime's MAX_PENDING_REQUESTS (60,000); past this a watch is answered at once (a plain poll). */
export const MAX_WATCHERS = 50_000

/** Watchers by position (ties by arrival); answered ones are dropped when they reach the front. */
export class WatchHeap {
  private readonly heap = new MinHeap<{ position: number; seq: number; w: Watcher }>((x, y) => x.position < y.position || (x.position === y.position && x.seq < y.seq))
  private seq = 0

  get size(): number {
    return this.heap.size
  }

  push(position: number, w: Watcher): void {
    this.heap.push({ position, seq: this.seq++, w })
  }

  /** The front watcher (answered ones are dropped on the way). */
  peek(): { position: number; w: Watcher } | undefined {
    while (this.heap.peek()?.w.answered) this.heap.pop()
    return this.heap.peek()
  }

  pop(): { position: number; w: Watcher } | undefined {
    return this.heap.pop()
  }
}

export interface Watches {
  /** instance id → group → heap of watchers by position. */
  byInstance: Map<string, Map<number, WatchHeap>>
  /** Every held watcher in arrival order (hold times are equal, so this is also expiry order). */
  queue: Watcher[]
  /** Held and not answered. */
  held: number
}

export function emptyWatches(): Watches {
  return { byInstance: new Map(), queue: [], held: 0 }
}

export function hold(ws: Watches, w: Watcher): void {
  ws.queue.push(w)
  ws.held++
  for (const p of w.places) {
    let groups = ws.byInstance.get(p.instanceId)
    if (!groups) { groups = new Map(); ws.byInstance.set(p.instanceId, groups) }
    let heap = groups.get(p.group)
    if (!heap) { heap = new WatchHeap(); groups.set(p.group, heap) }
    heap.push(p.position, w)
  }
}

export function markAnswered(ws: Watches, w: Watcher): void {
  if (w.answered) return
  w.answered = true
  ws.held--
}

/** Watchers whose hold ran out (answered ones are dropped from the queue on the way). */
export function expired(ws: Watches, now: number): Watcher[] {
  const out: Watcher[] = []
  let i = 0
  for (; i < ws.queue.length; i++) {
    const w = ws.queue[i]!
    if (w.answered) continue
    if (w.heldUntil > now) break
    out.push(w)
  }
  if (i > 0) ws.queue.splice(0, i)
  return out
}

/** Drops the heaps of an instance no longer live. */
export function forgetInstance(ws: Watches, instanceId: string): void {
  ws.byInstance.delete(instanceId)
}
