// A binary min-heap under a strict order `before(a, b)`: the simulator's event queue and the
// coordinator's watchers (by position) both use it. Ties must be broken by the order itself
// (e.g. a sequence number), so the pop order never depends on the heap's internals.

export class MinHeap<T> {
  private readonly items: T[] = []

  constructor(private readonly before: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.items.length
  }

  peek(): T | undefined {
    return this.items[0]
  }

  push(e: T): void {
    const a = this.items
    a.push(e)
    let i = a.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      const parent = a[p]!
      if (this.before(parent, e)) break
      a[i] = parent
      i = p
    }
    a[i] = e
  }

  pop(): T | undefined {
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
        if (r < n && this.before(a[r]!, a[l]!)) c = r
        if (!this.before(a[c]!, last)) break
        a[i] = a[c]!
        i = c
      }
      a[i] = last
    }
    return top
  }
}
