// The discrete-event queue: a binary min-heap keyed by (time, sequence). The sequence number
// is assigned at scheduling time, so two events due at the same instant run in the order they
// were scheduled: ties never depend on heap internals, and a seed replays identically.
import { MinHeap } from '../protocol/minheap.js'

export interface SimEvent {
  /** Simulated time in ms (may be fractional). */
  t: number
  /** Scheduling order; breaks ties between equal times. */
  seq: number
  run: () => void
}

export class EventHeap {
  private readonly heap = new MinHeap<SimEvent>((x, y) => x.t < y.t || (x.t === y.t && x.seq < y.seq))
  private seq = 0

  get size(): number {
    return this.heap.size
  }

  push(t: number, run: () => void): void {
    if (!Number.isFinite(t)) throw new Error(`EventHeap.push: time ${t} is not finite`)
    this.heap.push({ t, seq: this.seq++, run })
  }

  peekTime(): number {
    return this.heap.peek()?.t ?? Infinity
  }

  pop(): SimEvent | undefined {
    return this.heap.pop()
  }
}
