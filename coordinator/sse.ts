// Server-sent events: the live progress of an instance or of every instance of a job
// (coordinator/events.ts), resumable with Last-Event-ID. The stream ends with `event: end`
// once what it follows is decided.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ObjectParamsSchema, check } from '../protocol/api.js'
import type { CoordinatorState, InstanceRecord } from './core.js'
import type { EventLog, StreamEvent } from './events.js'
import type { History } from './history.js'

/** Streams held at once; more are answered 503. */
export const MAX_EVENT_STREAMS = 1_000
/** A comment line this often keeps proxies and idle timeouts from closing a quiet stream. */
export const SSE_HEARTBEAT_MS = 15_000

export interface EventHost {
  readonly state: CoordinatorState
  readonly events: EventLog
  readonly history: History
}

interface Scope {
  instanceIds(): readonly string[]
  /** Instances to snapshot when the stream cannot replay (finished ones read from the store). */
  snapshots(): Promise<InstanceRecord[]>
  matches(e: StreamEvent): boolean
  ended(): boolean
}

let held = 0

export function eventRoutes(app: FastifyInstance, host: EventHost): void {
  const idOf = (req: FastifyRequest): string | undefined => {
    const r = check(ObjectParamsSchema, req.params, 'params')
    return r.ok ? r.value.id : undefined
  }
  app.get('/v1/instances/:id/events', async (req, reply) => {
    const id = idOf(req)
    const instance = id === undefined ? undefined : await host.history.instance(id)
    if (!instance) return reply.code(404).send({ error: `no instance ${id ?? ''}` })
    return stream(host, req, reply, {
      instanceIds: () => [instance.id],
      snapshots: async () => [instance],
      matches: (e) => e.instanceId === instance.id,
      ended: () => instance.status !== 'running',
    })
  })
  app.get('/v1/jobs/:id/events', async (req, reply) => {
    const id = idOf(req)
    const job = id === undefined ? undefined : host.state.jobs.get(id)
    if (!job) return reply.code(404).send({ error: `no job ${id ?? ''}` })
    // The job's instances in memory (live, or finished since the last tick); a job with none there, its latest one from the store.
    const held = () => [...host.state.instances.values()].filter((i) => i.jobId === job.jobId).map((i) => i.id)
    return stream(host, req, reply, {
      instanceIds: held,
      snapshots: async () => held().length > 0 ? await host.history.instances(held()) : await host.history.instances(await host.history.latestInstanceIds(job.jobId, 1)),
      matches: (e) => e.jobId === job.jobId,
      ended: () => job.status !== 'active' && held().every((i) => host.state.instances.get(i)?.status !== 'running'),
    })
  })
}

function frame(e: StreamEvent): string {
  return `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`
}

async function stream(host: EventHost, req: FastifyRequest, reply: FastifyReply, scope: Scope): Promise<FastifyReply> {
  if (held >= MAX_EVENT_STREAMS) return reply.code(503).send({ error: `at most ${MAX_EVENT_STREAMS} event streams at once; try again later` })
  const last = header(req.headers['last-event-id'])
  const replay = host.events.since(scope.instanceIds(), last)
  // Read before the stream starts (a finished instance's runs come from the store).
  const snapshots = replay ? [] : await Promise.all((await scope.snapshots()).map(async (i) => host.events.snapshot({ runs: new Map((await host.history.runs(i.runIds)).map((r) => [r.runId, r])) }, i, Date.now())))
  held++
  reply.hijack()
  const raw = reply.raw
  raw.writeHead(200, { ...(reply.getHeaders() as Record<string, string>), 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' })
  raw.write('retry: 1000\n\n')
  let lastSeq = -1
  let closed = false
  const seq = (id: string) => Number(id.slice(id.indexOf('.') + 1))
  const send = (events: readonly StreamEvent[]) => {
    if (closed) return
    for (const e of events) {
      if (!scope.matches(e) || (e.type !== 'snapshot' && seq(e.id) <= lastSeq)) continue
      lastSeq = Math.max(lastSeq, seq(e.id))
      raw.write(frame(e))
    }
    if (scope.ended()) finish()
  }
  const unsubscribe = host.events.subscribe(send)
  const heartbeat = setInterval(() => raw.write(': ping\n\n'), SSE_HEARTBEAT_MS)
  const finish = () => {
    if (closed) return
    closed = true
    raw.write('event: end\ndata: {}\n\n')
    raw.end()
  }
  raw.on('close', () => {
    closed = true
    held--
    unsubscribe()
    clearInterval(heartbeat)
  })
  send(replay ?? snapshots)
  return reply
}

function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}
