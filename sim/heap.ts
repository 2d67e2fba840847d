// The discrete-event queue: a binary min-heap keyed by (time, sequence). The sequence number
// is assigned at scheduling time, so two events due at the same instant run in the order they
// were scheduled: ties never depend on heap internals, and a seed replays identically.

export interface SimEvent {
  /** Simulated time in ms (may be fractional). */
  t: number
  /** Scheduling order; breaks ties between equal times. */
  seq: number
  run: () => void
}

export class EventHeap {
  private items: SimEvent[] = []
  private seq = 0

  get size(): number {
    return this.items.length
  }

  push(t: number, run: () => void): void {
    if (!Number.isFinite(t)) throw new Error(`EventHeap.push: time ${t} is not finite`)
    const e: SimEvent = { t, seq: this.seq++, run }
    const a = this.items
    a.push(e)
    let i = a.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      const parent = a[p]!
      if (parent.t < e.t || (parent.t === e.t && parent.seq < e.seq)) break
      a[i] = parent
      i = p
    }
    a[i] = e
  }

  peekTime(): number {
    return this.items.length > 0 ? this.items[0]!.t : Infinity
  }

  pop(): SimEvent | undefined {
    const a = this.items
    if (a.length === 0) return undefined
    const top = a[0]!
    const last = a.pop()!
    if (a.length > 0) {
      let i = 0
      const n = a.length
      for (;;) {
        const l = 2 * i + 1
        if (l >= n) break
        const r = l + 1
        let c = l
        if (r < n && less(a[r]!, a[l]!)) c = r
        if (!less(a[c]!, last)) break
        a[i] = a[c]!
        i = c
      }
      a[i] = last
    }
    return top
  }
}

function less(x: SimEvent, y: SimEvent): boolean {
  return x.t < y.t || (x.t === y.t && x.seq < y.seq)
}
