// The discrete-event queue: a binary min-heap keyed by (time, sequence). The sequence number
// is assigned at scheduling time, so two events due at the same instant run in the order they
// were scheduled: ties never depend on heap internals, and a seed replays identically.
//
// A large run keeps hundreds of thousands of events queued and pushes tens of millions, so the
// heap allocates nothing per push: an event lives in a slot (its time and sequence in typed
// arrays, its callback in a plain array), the heap orders slot numbers (an Int32Array), and a
// popped slot goes back on a free list. Comparisons read two typed arrays, no object.

export interface SimEvent {
  /** Simulated time in ms (may be fractional). */
  t: number
  /** Scheduling order; breaks ties between equal times. */
  seq: number
  run: () => void
}

/** Slots the heap starts with; it doubles when full. */
const INITIAL_SLOTS = 1024

export class EventHeap {
  private times = new Float64Array(INITIAL_SLOTS)
  private seqs = new Float64Array(INITIAL_SLOTS)
  private runs: ((() => void) | undefined)[] = new Array<(() => void) | undefined>(INITIAL_SLOTS).fill(undefined)
  /** Slot numbers in heap order, `count` of them. */
  private order = new Int32Array(INITIAL_SLOTS)
  private count = 0
  /** Free slots (a stack), `freeCount` of them. */
  private free = new Int32Array(INITIAL_SLOTS)
  private freeCount = 0
  /** Slots ever handed out. */
  private used = 0
  private seq = 0
  /** Time of the event popRun() returned last. */
  lastTime = 0

  get size(): number {
    return this.count
  }

  push(t: number, run: () => void): void {
    if (!Number.isFinite(t)) throw new Error(`EventHeap.push: time ${t} is not finite`)
    let slot: number
    if (this.freeCount > 0) slot = this.free[--this.freeCount]!
    else {
      if (this.used === this.times.length) this.grow()
      slot = this.used++
    }
    const seq = this.seq++
    this.times[slot] = t
    this.seqs[slot] = seq
    this.runs[slot] = run
    const order = this.order
    const times = this.times
    const seqs = this.seqs
    let i = this.count++
    while (i > 0) {
      const p = (i - 1) >> 1
      const ps = order[p]!
      const pt = times[ps]!
      if (pt < t || (pt === t && seqs[ps]! < seq)) break
      order[i] = ps
      i = p
    }
    order[i] = slot
  }

  peekTime(): number {
    return this.count === 0 ? Infinity : this.times[this.order[0]!]!
  }

  /** Removes the earliest event and returns its callback (its time in lastTime), or undefined when empty. */
  popRun(): (() => void) | undefined {
    if (this.count === 0) return undefined
    const order = this.order
    const times = this.times
    const seqs = this.seqs
    const top = order[0]!
    const n = --this.count
    if (n > 0) {
      const last = order[n]!
      const lt = times[last]!
      const ls = seqs[last]!
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        if (l >= n) break
        let c = l
        let cs = order[l]!
        let ct = times[cs]!
        const r = l + 1
        if (r < n) {
          const rs = order[r]!
          const rt = times[rs]!
          if (rt < ct || (rt === ct && seqs[rs]! < seqs[cs]!)) { c = r; cs = rs; ct = rt }
        }
        if (!(ct < lt || (ct === lt && seqs[cs]! < ls))) break
        order[i] = cs
        i = c
      }
      order[i] = last
    }
    this.lastTime = times[top]!
    const run = this.runs[top]!
    this.runs[top] = undefined
    this.free[this.freeCount++] = top
    return run
  }

  pop(): SimEvent | undefined {
    if (this.count === 0) return undefined
    const seq = this.seqs[this.order[0]!]!
    const run = this.popRun()!
    return { t: this.lastTime, seq, run }
  }

  private grow(): void {
    const size = this.times.length * 2
    const times = new Float64Array(size); times.set(this.times); this.times = times
    const seqs = new Float64Array(size); seqs.set(this.seqs); this.seqs = seqs
    const order = new Int32Array(size); order.set(this.order); this.order = order
    const free = new Int32Array(size); free.set(this.free); this.free = free
    for (let i = this.runs.length; i < size; i++) this.runs.push(undefined)
  }
}
