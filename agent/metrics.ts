// Agent metrics (`chorus agent --metrics HOST:PORT`, loopback only): outbox depth, steps
// running, step durations, coordinator reachability; Prometheus text at GET /metrics.
import { createServer, type Server } from 'node:http'
import { Gauge, Histogram, Registry } from 'prom-client'
import { isLoopbackHost } from '../protocol/api.js'

export interface AgentMetricsSource {
  outboxDepth(): number
  runningSteps(): number
  coordinatorReachable(): boolean
}

export class AgentMetrics {
  readonly registry = new Registry()
  readonly steps = new Histogram({ name: 'chorus_agent_step_seconds', help: 'Duration of step attempts', labelNames: ['status'], buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300], registers: [this.registry] })

  constructor(source: AgentMetricsSource) {
    const gauge = (name: string, help: string, read: () => number) => new Gauge({ name, help, registers: [this.registry], collect() { this.set(read()) } })
    gauge('chorus_agent_outbox_depth', 'Results stored, not yet acknowledged by the coordinator', () => source.outboxDepth())
    gauge('chorus_agent_running_steps', 'Step attempts in flight', () => source.runningSteps())
    gauge('chorus_agent_coordinator_reachable', '1 while this agent holds a connection to the coordinator', () => (source.coordinatorReachable() ? 1 : 0))
  }

  /** Serves GET /metrics on a loopback HOST:PORT. */
  async listen(address: string): Promise<Server> {
    const m = /^(.*):(\d+)$/.exec(address)
    const host = m?.[1]?.replace(/^\[|\]$/g, '') ?? ''
    if (!m || !isLoopbackHost(host)) throw new Error(`--metrics ${address}: expected a loopback HOST:PORT, e.g. 127.0.0.1:9464`)
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || req.url !== '/metrics') { res.writeHead(404).end(); return }
      this.registry.metrics().then((text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text), () => res.writeHead(500).end())
    })
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(Number(m[2]), host, resolve))
    return server
  }
}
