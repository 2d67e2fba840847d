// The event loop both runtimes wrap around their core, with group commit: events that arrive
// while a write is in progress are stepped through the core together, their `persist` effects
// go to the store as ONE atomic batch, and only then are their other effects carried out. The
// rule "a persist is durable before any later effect runs" holds for the whole group. Under
// load this turns N sequential store writes into one, which is what keeps 100 results arriving
// at once from queueing behind 100 disk writes.

/** Events stepped through the core per group commit. */
export const MAX_EVENTS_PER_COMMIT = 256
/** Events waiting for the core; beyond this dispatch() rejects (the caller retries later). */
export const MAX_QUEUED_EVENTS = 100_000

export interface PersistEffect {
  type: 'persist'
  puts: { key: string; value: unknown }[]
  dels: string[]
}

export type BatchOp = { type: 'put'; key: string; value: unknown } | { type: 'del'; key: string }

export interface LoopHooks<E, F extends { type: string }> {
  step(event: E, now: number): F[]
  commit(ops: BatchOp[]): Promise<void>
  /** Carries out one non-persist effect. It must not block the loop for long: start work, don't await it. */
  execute(effect: F): void
  now(): number
  onError(err: unknown): void
}

export class CoreLoop<E, F extends { type: string }> {
  private inbox: { event: E; done: () => void }[] = []
  private draining = false
  private closed = false

  constructor(private readonly hooks: LoopHooks<E, F>) {}

  /** Resolves once the event's effects have been carried out (persists durable, others started). */
  dispatch(event: E): Promise<void> {
    if (this.closed) return Promise.resolve()
    if (this.inbox.length >= MAX_QUEUED_EVENTS) return Promise.reject(new Error('event queue full'))
    return new Promise((done) => {
      this.inbox.push({ event, done })
      if (!this.draining) void this.drain()
    })
  }

  /** Events waiting for the core (metrics). */
  queued(): number {
    return this.inbox.length
  }

  /** Runs effects produced outside dispatch (e.g. on restore) with the same ordering rule. */
  async apply(effects: F[]): Promise<void> {
    await this.carryOut(effects)
  }

  private async drain(): Promise<void> {
    this.draining = true
    try {
      while (this.inbox.length > 0 && !this.closed) {
        const group = this.inbox.splice(0, MAX_EVENTS_PER_COMMIT)
        const effects: F[] = []
        for (const item of group) {
          try {
            effects.push(...this.hooks.step(item.event, this.hooks.now()))
          } catch (err) {
            this.hooks.onError(err)
          }
        }
        try {
          await this.carryOut(effects)
        } catch (err) {
          this.hooks.onError(err)
        }
        for (const item of group) item.done()
      }
    } finally {
      this.draining = false
    }
  }

  private async carryOut(effects: F[]): Promise<void> {
    // The last write of a key in the group is the one the store keeps: only that one is encoded
    // (an agent writes a new job and its run twice in the event that accepts them).
    const ops = new Map<string, BatchOp>()
    for (const e of effects) {
      if (e.type !== 'persist') continue
      const p = e as unknown as PersistEffect
      for (const put of p.puts) { ops.delete(put.key); ops.set(put.key, { type: 'put', key: put.key, value: put.value }) }
      for (const key of p.dels) { ops.delete(key); ops.set(key, { type: 'del', key }) }
    }
    if (ops.size > 0) await this.hooks.commit([...ops.values()])
    for (const e of effects) if (e.type !== 'persist') this.hooks.execute(e)
  }

  /** Stops accepting events and waits for the group in progress. */
  async close(): Promise<void> {
    this.closed = true
    while (this.draining) await new Promise((r) => setTimeout(r, 5))
    for (const item of this.inbox.splice(0)) item.done()
  }
}
