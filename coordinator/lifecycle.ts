// The job lifecycle in the API: manual runs, deletion, instance lists, run logs and one node;
// and the paging every list uses (`page`/`size`, or Courier's `pagination.page`/`pagination.size`).
// Lists of history (instances, a node's runs) also answer `pagination.next`, a cursor: the page
// after it is stable while instances arrive (coordinator/history.ts).
import { randomUUID } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { EmptyBodySchema, InstancesQuerySchema, LogsQuerySchema, ObjectParamsSchema } from '../protocol/api.js'
import type { CoordinatorState, NodeRecord } from './core.js'
import { routeKey } from './access.js'
import { jsonBody, notFound, parse, sendAdmin, type ApiHost } from './http.js'
import type { RouteHandler } from './routes.js'
import { instanceSummary } from './report.js'

export interface Page<T> {
  items: T[]
  pagination: { page: number; size: number; total: number }
}

/** One page of a list (pages from 1); `view` maps only the items shown. */
export function pageOf<S, T = S>(all: readonly S[], q: { page: number; size: number }, view: (page: S[]) => T[] = (p) => p as unknown as T[]): Page<T> {
  const from = (q.page - 1) * q.size
  return { items: view(all.slice(from, from + q.size)), pagination: { page: q.page, size: q.size, total: all.length } }
}

export function nodeView(state: CoordinatorState, n: NodeRecord) {
  return {
    nodeId: n.nodeId, alive: state.connected.has(n.nodeId), peerId: n.peerId, publicKey: n.publicKey, facts: n.facts, skills: n.skills,
    agentVersion: n.agentVersion, addrs: n.addrs, firstSeenAt: new Date(n.firstSeenAt).toISOString(), lastSeenAt: new Date(n.lastSeenAt).toISOString(),
  }
}

const objectId = (req: FastifyRequest) => parse(ObjectParamsSchema, req.params, 'params').id

async function runJob(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  jsonBody(req, EmptyBodySchema)
  return sendAdmin(reply, await host.change({ type: 'run_job', jobId: objectId(req), newJobId: randomUUID() }, req.actor), 201)
}

async function deleteJob(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  jsonBody(req, EmptyBodySchema)
  return sendAdmin(reply, await host.change({ type: 'delete_job', jobId: objectId(req) }, req.actor))
}

async function listInstances(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  const q = parse(InstancesQuerySchema, req.query, 'query')
  const page = await host.history.instancePage(q)
  return { ...page, items: page.items.map((i) => instanceSummary(i, host.history.counts(i))) }
}

async function runLogs(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const { step } = parse(LogsQuerySchema, req.query, 'query')
  const run = await host.history.run(objectId(req))
  if (!run) return notFound(reply, `run ${objectId(req)}`)
  const steps = run.steps.filter((s) => step === undefined || s.number === step)
  if (step !== undefined && steps.length === 0) return notFound(reply, `step ${step} in run ${run.runId}`)
  return {
    runId: run.runId, nodeId: run.nodeId, status: run.status,
    items: steps.map((s) => ({ step: s.number, name: s.name, status: s.status, attempts: s.attempts, exitCode: s.exitCode, stdout: s.stdout, stderr: s.stderr, attemptLog: s.attemptLog ?? [] })),
  }
}

async function getNode(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const n = host.state.nodes.get(objectId(req))
  return n ? nodeView(host.state, n) : notFound(reply, `node ${objectId(req)}`)
}

/** The lifecycle routes, by `METHOD url` (registered by buildApi with coordinator/routes.ts's). */
export function lifecycleHandlers(): [string, RouteHandler][] {
  return [
    [routeKey('POST', '/v1/jobs/:id/run'), runJob],
    [routeKey('DELETE', '/v1/jobs/:id'), deleteJob],
    [routeKey('GET', '/v1/instances'), listInstances],
    [routeKey('GET', '/v1/runs/:id/logs'), runLogs],
    [routeKey('GET', '/v1/nodes/:id'), getNode],
  ]
}
