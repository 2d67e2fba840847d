// Load counters of one run: what the agents asked the coordinator (per message kind), how those
// requests ended (a reply, or a failure by reason), how the coordinator's queue grew over
// simulated time. They read the world and never draw from the PRNG or schedule an event, so a
// seed's trace is the same with or without them. `chorus sim --json` prints them as `load`:
// where a big fleet's messages go, and whether a cliff is a congestion collapse (requests that
// time out in a long queue and are sent again) or something else.

/** Width of one bin of the queue-depth series, in simulated ms. */
export const LOAD_BIN_MS = 10_000
/** Most bins kept (a longer run keeps its first bins: the cliff is early, at join and at publish). */
export const LOAD_MAX_BINS = 400

/** One bin of the series: requests that reached the coordinator, failures seen by agents, the deepest queue. */
export interface LoadBin {
  /** Start of the bin, simulated s. */
  t_s: number
  /** Requests that arrived at the coordinator in this bin, by kind. */
  arrived: Record<string, number>
  /** Requests that failed at the agent in this bin (any reason). */
  failed: number
  /** Deepest coordinator queue (events waiting for its core) seen in this bin. */
  queue_max: number
}

export interface LoadSummary {
  /** Requests agents sent to the coordinator, by kind (hello, sync, result, …). */
  rpc_sent: Record<string, number>
  /** Of those, by how they ended at the agent: `reply`, or the failure's reason. */
  rpc_outcome: Record<string, number>
  /** Failures by kind and reason ("hello timeout"), the largest first. */
  rpc_failed: Record<string, number>
  /** Hellos the coordinator answered with a refusal, and those of them with a retry-after. */
  hello_refused: number
  hello_retry_after: number
  /** Requests the coordinator refused at MAX_PENDING_REQUESTS with a signed retry-after answer. */
  retry_after_sent: number
  /** Requests the coordinator's core stepped after the agent had given up on them (wasted work). */
  stepped_after_timeout: number
  /** Sync requests agents sent to peers. */
  peer_rpc_sent: number
  /** Deepest coordinator queue over the run, and when (simulated s). */
  queue_max: number
  queue_max_at_s: number
  series: LoadBin[]
}

/** The kind of a signed request, from its body (canonical JSON: the top-level "type" is the last one). */
export function kindOf(envelope: unknown): string {
  const body = (envelope as { body?: unknown } | null)?.body
  if (typeof body !== 'string') return 'other'
  const at = body.lastIndexOf('"type":"')
  if (at < 0) return 'other'
  const end = body.indexOf('"', at + 8)
  return end < 0 ? 'other' : body.slice(at + 8, Math.min(end, at + 8 + 24))
}

export class LoadCounters {
  readonly rpcSent = new Map<string, number>()
  readonly outcome = new Map<string, number>()
  readonly failed = new Map<string, number>()
  helloRefused = 0
  helloRetryAfter = 0
  steppedAfterTimeout = 0
  retryAfterSent = 0
  peerRpcSent = 0
  queueMax = 0
  queueMaxAt = 0
  private readonly bins: LoadBin[] = []

  private static inc(m: Map<string, number>, k: string): void {
    m.set(k, (m.get(k) ?? 0) + 1)
  }

  private bin(now: number): LoadBin | undefined {
    const k = Math.floor(now / LOAD_BIN_MS)
    if (k >= LOAD_MAX_BINS) return undefined
    while (this.bins.length <= k) this.bins.push({ t_s: (this.bins.length * LOAD_BIN_MS) / 1000, arrived: {}, failed: 0, queue_max: 0 })
    return this.bins[k]
  }

  sent(kind: string): void {
    LoadCounters.inc(this.rpcSent, kind)
  }

  /** A request reached the coordinator; `depth` is its queue once the request joined it. */
  arrived(kind: string, depth: number, now: number): void {
    const b = this.bin(now)
    if (b) {
      b.arrived[kind] = (b.arrived[kind] ?? 0) + 1
      if (depth > b.queue_max) b.queue_max = depth
    }
    if (depth > this.queueMax) { this.queueMax = depth; this.queueMaxAt = now }
  }

  ended(kind: string, why: string | 'reply', now: number): void {
    LoadCounters.inc(this.outcome, why)
    if (why === 'reply') return
    LoadCounters.inc(this.failed, `${kind} ${why}`)
    const b = this.bin(now)
    if (b) b.failed++
  }

  summary(): LoadSummary {
    const obj = (m: Map<string, number>) => Object.fromEntries([...m].sort((a, b) => b[1] - a[1]))
    return {
      rpc_sent: obj(this.rpcSent), rpc_outcome: obj(this.outcome), rpc_failed: obj(this.failed),
      hello_refused: this.helloRefused, hello_retry_after: this.helloRetryAfter,
      retry_after_sent: this.retryAfterSent, stepped_after_timeout: this.steppedAfterTimeout, peer_rpc_sent: this.peerRpcSent,
      queue_max: this.queueMax, queue_max_at_s: Math.round(this.queueMaxAt) / 1000,
      series: this.bins,
    }
  }
}
