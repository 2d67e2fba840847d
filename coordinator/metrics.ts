// Prometheus metrics of the coordinator (GET /metrics, a reader token): gauges read from the
// state at scrape time (runs, instances, nodes, held watches, the core loop's queue), and
// counters and histograms the runtime feeds (rpc requests by type, result ingest latency,
// commit batch sizes, gossip in and out). Its own registry: nothing global.
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { CoordinatorState } from './core.js'

/** Rpc body types counted by name; anything else is "other". */
const RPC_TYPES = new Set(['hello', 'sync', 'result'])

/** The top-level `type` of a canonical JSON body (sorted keys: only `v` follows `type`). */
export function rpcTypeOf(body: string | undefined): string {
  if (!body) return 'other'
  const at = body.lastIndexOf('"type":"')
  const type = at < 0 ? '' : body.slice(at + 8, body.indexOf('"', at + 8))
  return RPC_TYPES.has(type) ? type : 'other'
}

export interface MetricsSource {
  readonly state: CoordinatorState
  /** Events waiting for the core loop. */
  queued(): number
}

export class CoordinatorMetrics {
  readonly registry = new Registry()
  readonly rpc = new Counter({ name: 'chorus_rpc_requests_total', help: 'Agent rpc requests by type', labelNames: ['type'], registers: [this.registry] })
  readonly ingest = new Histogram({ name: 'chorus_result_ingest_seconds', help: 'From a result rpc arriving to its acknowledgement (verified, stored durably)', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry] })
  readonly commits = new Histogram({ name: 'chorus_commit_batch_ops', help: 'Store operations per group commit of the core loop', buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000], registers: [this.registry] })
  readonly runsFinished = new Counter({ name: 'chorus_runs_finished_total', help: 'Runs that reached a final status since the coordinator started, by status (each run once)', labelNames: ['status'], registers: [this.registry] })
  readonly gossip = new Counter({ name: 'chorus_gossip_messages_total', help: 'Gossip messages in (progress) and out (job definitions and states)', labelNames: ['direction'], registers: [this.registry] })

  constructor(source: MetricsSource) {
    const gauge = (name: string, help: string, labelNames: string[], collect: (g: Gauge) => void) =>
      new Gauge({ name, help, labelNames, registers: [this.registry], collect() { collect(this) } })
    gauge('chorus_runs', 'Runs held in memory (live instances, and those finished since the last tick) by status', ['status'], (g) => setBy(g, [...source.state.runs.values()].map((r) => r.status)))
    gauge('chorus_instances', 'Instances in the store (not pruned) by status, from the jobs\' counts', ['status'], (g) => {
      g.reset()
      for (const j of source.state.jobs.values()) for (const [status, n] of Object.entries(j.history.byStatus)) g.inc({ status }, n)
    })
    gauge('chorus_nodes_enrolled', 'Nodes enrolled', [], (g) => g.set(source.state.nodes.size))
    gauge('chorus_nodes_alive', 'Nodes connected now', [], (g) => g.set(source.state.connected.size))
    gauge('chorus_held_watches', 'Sync requests held until a checkpoint decides a waiting run', [], (g) => g.set(source.state.watches.held))
    gauge('chorus_core_queue_depth', 'Events waiting for the core loop', [], (g) => g.set(source.queued()))
  }

  async text(): Promise<string> {
    return this.registry.metrics()
  }
}

function setBy(g: Gauge, values: string[]): void {
  g.reset()
  const n = new Map<string, number>()
  for (const v of values) n.set(v, (n.get(v) ?? 0) + 1)
  for (const [status, count] of n) g.set({ status }, count)
}
