// The API's routes: one function per route, and the table (by `METHOD url`, as in the route table
// of coordinator/access.ts) that buildApi (coordinator/http.ts) registers them from. Every
// handler parses its parameters, query and body with their schemas first (bad input is a 400
// with problems, by the error handler); state changes go through `host.change` (the core) and
// are answered by sendAdmin. The role a route needs is not here: the onRequest hook checks it
// against access.ts before any handler runs. The server-sent events (sse.ts) and the web
// console's routes (ui.ts) register themselves.
import type { FastifyReply, FastifyRequest } from 'fastify'
import { parseTemplateText } from '../protocol/parse.js'
import type { JobTemplate } from '../protocol/template.js'
import {
  AuditQuerySchema, CancelBodySchema, CursorPageQuerySchema, EmptyBodySchema, EnrollmentBodySchema, ExceptionBodySchema, FilterBodySchema, IdParamsSchema, JobsQuerySchema, ListBodySchema,
  NameParamsSchema, NextQuerySchema, NodesQuerySchema, ObjectParamsSchema, PageQuerySchema, PlanQuerySchema, ReportQuerySchema, TokenBodySchema,
} from '../protocol/api.js'
import { ENROLL_TOKEN_PREFIX } from '../protocol/membership.js'
import { hashToken, newToken, routeKey, type Method } from './access.js'
import { nextOccurrencesOf, selectNodes, tokenView, type CoordinatorState, type InstanceRecord, type JobRecord, type RunRecord } from './core.js'
import { BadInput, jsonBody, notFound, parse, sendAdmin, templateTextOf, type ApiHost } from './http.js'
import { lifecycleHandlers, nodeView, pageOf } from './lifecycle.js'
import { enrollmentSummary, newEnrollment } from './members.js'
import { openApiDocument } from './openapi.js'
import { planJob } from './plan.js'
import { simulateInChild } from './plan-sim.js'
import { instanceReport, instanceSummary, jobSummary, runReport, type JobReport } from './report.js'

/** A route's handler: what it returns is the answer (or the reply it sent). */
export type RouteHandler = (host: ApiHost, req: FastifyRequest, reply: FastifyReply) => Promise<unknown>

/** An enrolment token created without a name is named `enroll-` and this many hex characters of its hash. */
export const ENROLLMENT_ID_HEX_CHARS = 8

/** `GET /v1/jobs/:id` lists this many of the job's latest instance ids. */
export const JOB_INSTANCE_IDS_SHOWN = 100

/** The object id of a route's `:id`, checked by its schema. */
export const objectId = (req: FastifyRequest): string => parse(ObjectParamsSchema, req.params, 'params').id
/** The `:id` as sent, for a 404's message. */
const rawId = (req: FastifyRequest): string => (req.params as { id: string }).id
/** A saved object's `:id` (exceptions, lists, filters, enrolments, nodes), checked by its schema. */
const savedId = (req: FastifyRequest): string => parse(IdParamsSchema, req.params, 'params').id

function templateOf(req: FastifyRequest): JobTemplate {
  const { text, format } = templateTextOf(req)
  const parsed = parseTemplateText(text, format)
  if (!parsed.ok) throw new BadInput('invalid job template', parsed.problems)
  return parsed.template
}

async function metrics(host: ApiHost, _req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  return reply.type('text/plain; version=0.0.4; charset=utf-8').send(await host.metricsText())
}

async function openApi(): Promise<unknown> {
  return openApiDocument()
}

// Jobs.

async function submitJob(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const outcome = await host.submit(templateOf(req), req.actor)
  if (!outcome.ok) return reply.code(422).send({ error: 'job cannot be targeted', problems: outcome.problems })
  return reply.code(201).send({ id: outcome.jobId, instanceIds: outcome.instanceIds, targets: outcome.targets, ...(outcome.warnings?.length ? { warnings: outcome.warnings } : {}) })
}

async function planJobRoute(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const q = parse(PlanQuerySchema, req.query, 'query')
  const template = templateOf(req)
  const plan = planJob(host.state, template, Date.now())
  if (!plan.ok) return reply.code(422).send({ error: 'job cannot be targeted', problems: plan.problems })
  if (q.simulate === undefined) return plan.plan
  const simulation = simulateInChild({ template, groups: plan.plan.groups.map((g) => g.nodes.map((n) => n.nodeId)), seeds: q.simulate, profile: q.profile })
  if (!simulation) return reply.code(503).send({ error: 'a plan simulation is running already; try again when it is done' })
  return { ...plan.plan, simulation: await simulation.catch((err: Error) => { throw new BadInput('cannot simulate this plan', [{ path: 'query.simulate', message: err.message }]) }) }
}

async function listJobs(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  const q = parse(JobsQuerySchema, req.query, 'query')
  const jobs = [...host.state.jobs.values()].filter((j) => (!q.status || j.status === q.status) && (!q.name || j.name.includes(q.name)))
  return pageOf(jobs.sort((a, b) => b.createdAt - a.createdAt), q, (page) => page.map((j) => jobRow(host.state, j, Date.now())))
}

/** A job of the list: its summary, its next occurrence and its last instance's outcome. */
function jobRow(state: CoordinatorState, job: JobRecord, now: number) {
  const next = nextOccurrencesOf(state, job.jobId, now, 1)?.[0]
  const last = job.history.latest
  return { ...jobSummary(job), nextAt: next ? new Date(next.at).toISOString() : null, lastInstance: last ? { id: last.id, status: last.status } : null }
}

async function getJob(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const job = host.state.jobs.get(objectId(req))
  if (!job) return notFound(reply, `job ${rawId(req)}`)
  // The latest instances only: all of them page through GET /v1/instances?job=ID.
  return { ...jobSummary(job), template: job.template, instanceIds: await host.history.latestInstanceIds(job.jobId, JOB_INSTANCE_IDS_SHOWN), instanceCount: job.history.count }
}

async function cancelJob(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const { occurrences } = jsonBody(req, CancelBodySchema)
  return sendAdmin(reply, await host.change({ type: 'cancel', jobId: objectId(req), ...(occurrences ? { occurrences } : {}) }, req.actor))
}

async function nextOccurrences(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const { count } = parse(NextQuerySchema, req.query, 'query')
  const next = nextOccurrencesOf(host.state, objectId(req), Date.now(), count)
  if (!next) return notFound(reply, `job ${rawId(req)}`)
  return { items: next.map((o) => ({ ...o, at: new Date(o.at).toISOString() })) }
}

async function getReport(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const q = parse(ReportQuerySchema, req.query, 'query')
  const report = await reportOf(host, objectId(req), q)
  if (!report) return notFound(reply, `job or instance ${rawId(req)}`)
  return reply.type('application/json; charset=utf-8').send(await reportText(host, report))
}

/** A report before its instances' runs are read: its job, the instances (a job's page of them, or the one asked for), the page. */
interface PendingReport {
  job: JobReport['job']
  instances: InstanceRecord[]
  pagination?: JobReport['pagination']
}

/** The report of a job (a page of its instances, in occurrence order, each with its runs) or of one instance. */
async function reportOf(host: ApiHost, id: string, q: { page: number; size: number; cursor?: string }): Promise<PendingReport | undefined> {
  const job = host.state.jobs.get(id)
  if (job) {
    const page = await host.history.instancePage({ ...q, job: job.jobId, oldestFirst: true })
    return { job: jobSummary(job), instances: page.items, pagination: page.pagination }
  }
  const instance = await host.history.instance(id)
  const parent = instance && host.state.jobs.get(instance.jobId)
  if (instance && parent) return { job: jobSummary(parent), instances: [instance] }
  return undefined
}

/**
 * The JSON text of a JobReport (the same text as JSON.stringify of it), built one instance at a
 * time: each instance's runs are read (one range once it is finished) while the one before is
 * turned into text, and let go after, so at most two instances' records are held at once, not
 * the page's. The text goes out as one string: streamed as chunks, the coordinator's RSS grew by
 * about 20 MB per 30 job pages of 5,000 runs until a full collection (the chunks' buffers live
 * outside the heap), where one string per reply stays flat.
 */
async function reportText(host: ApiHost, r: PendingReport): Promise<string> {
  const parts = [`{"job":${JSON.stringify(r.job)},"instances":[`]
  let next = r.instances.length > 0 ? runsOf(host, r.instances[0]!) : undefined
  for (const [n, instance] of r.instances.entries()) {
    const runs = await next!
    next = n + 1 < r.instances.length ? runsOf(host, r.instances[n + 1]!) : undefined
    parts.push((n > 0 ? ',' : '') + JSON.stringify(instanceReport(instance, runs)))
  }
  parts.push(r.pagination === undefined ? ']}' : `],"pagination":${JSON.stringify(r.pagination)}}`)
  return parts.join('')
}

/** An instance's runs, read ahead: a read left behind when an earlier one failed must not become an unhandled rejection. */
function runsOf(host: ApiHost, instance: InstanceRecord): Promise<RunRecord[]> {
  const read = host.history.instanceRuns(instance)
  read.catch(() => undefined)
  return read
}

// Instances, runs and nodes.

async function getInstance(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const i = await host.history.instance(objectId(req))
  return i ? instanceSummary(i, host.history.counts(i)) : notFound(reply, `instance ${rawId(req)}`)
}

async function listInstanceRuns(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const q = parse(PageQuerySchema, req.query, 'query')
  const i = await host.history.instance(objectId(req))
  if (!i) return notFound(reply, `instance ${rawId(req)}`)
  // runIds is the instance's own index of its runs (fixed at creation): positions are stable.
  const from = (q.page - 1) * q.size
  return { items: (await host.history.runs(i.runIds.slice(from, from + q.size))).map(runReport), pagination: { page: q.page, size: q.size, total: i.runIds.length } }
}

async function getRun(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const r = await host.history.run(objectId(req))
  return r ? runReport(r) : notFound(reply, `run ${rawId(req)}`)
}

async function listArtifacts(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const r = await host.history.run(objectId(req))
  if (!r) return notFound(reply, `run ${rawId(req)}`)
  return { items: r.steps.flatMap((s) => (s.artifacts ?? []).map((a) => ({ step: s.number, name: a.name, encoding: a.encoding, bytes: a.bytes, truncated: a.truncated }))) }
}

async function getArtifact(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const params = req.params as { id: string; step: string; name: string }
  const a = (await host.history.run(objectId(req)))?.steps.find((s) => s.number === Number(params.step))?.artifacts?.find((x) => x.name === params.name)
  if (!a) return notFound(reply, `artifact ${params.name} on step ${params.step} of run ${params.id}`)
  return reply.header('x-chorus-truncated', String(a.truncated)).type(a.encoding === 'utf8' ? 'text/plain; charset=utf-8' : 'application/octet-stream').send(a.encoding === 'utf8' ? a.content : Buffer.from(a.content, 'base64'))
}

async function listNodes(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const q = parse(NodesQuerySchema, req.query, 'query')
  let nodes = [...host.state.nodes.values()]
  if (q.search) {
    const sel = selectNodes(host.state, { query: q.search }, 'search')
    if ('problems' in sel) return reply.code(400).send({ error: 'invalid search', problems: sel.problems.map((p) => ({ ...p, path: 'query.search' })) })
    const keep = new Set(sel.nodes)
    nodes = nodes.filter((n) => keep.has(n.nodeId))
  }
  return pageOf(nodes, q, (page) => page.map((n) => nodeView(host.state, n)))
}

async function listNodeRuns(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  const q = parse(CursorPageQuerySchema, req.query, 'query')
  const page = await host.history.nodeRunPage(objectId(req), q)
  return { ...page, items: page.items.map((r) => ({ ...runReport(r), instanceId: r.instanceId, jobId: r.jobId })) }
}

// Global exceptions, saved lists and filters.

async function listExceptions(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  return pageOf([...host.state.globals.values()], parse(PageQuerySchema, req.query, 'query'))
}

async function addException(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  return sendAdmin(reply, await host.change({ type: 'add_exception', exception: jsonBody(req, ExceptionBodySchema) }, req.actor))
}

async function removeException(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  jsonBody(req, EmptyBodySchema)
  return sendAdmin(reply, await host.change({ type: 'remove_exception', id: savedId(req) }, req.actor))
}

async function listLists(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  return pageOf([...host.state.lists.values()], parse(PageQuerySchema, req.query, 'query'))
}

async function saveList(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const listId = savedId(req)
  const b = jsonBody(req, ListBodySchema)
  return sendAdmin(reply, await host.change({ type: 'save_list', list: { id: listId, name: b.name ?? listId, nodes: [...new Set(b.nodes)] } }, req.actor))
}

async function listFilters(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  return pageOf([...host.state.filters.values()], parse(PageQuerySchema, req.query, 'query'))
}

async function saveFilter(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const filterId = savedId(req)
  const b = jsonBody(req, FilterBodySchema)
  const filter = { id: filterId, name: b.name ?? filterId, ...(b.query !== undefined ? { query: b.query } : {}), ...(b.constraints !== undefined ? { constraints: b.constraints } : {}) }
  return sendAdmin(reply, await host.change({ type: 'save_filter', filter }, req.actor))
}

/** `DELETE /v1/lists/:id` and `DELETE /v1/filters/:id`. */
function deleteSaved(kind: 'list' | 'filter'): RouteHandler {
  return async (host, req, reply) => {
    jsonBody(req, EmptyBodySchema)
    return sendAdmin(reply, await host.change({ type: 'delete_saved', kind, id: savedId(req) }, req.actor))
  }
}

// API tokens and the audit log (admin).

async function listTokens(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  return pageOf([...host.state.tokens.values()], parse(PageQuerySchema, req.query, 'query'), (p) => p.map(tokenView))
}

async function createToken(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const b = jsonBody(req, TokenBodySchema)
  const token = newToken()
  const now = Date.now()
  const record = { name: b.name, role: b.role, hash: hashToken(token), createdAt: now, ...(b.ttl !== undefined ? { expiresAt: now + b.ttl } : {}), ...(req.actor ? { createdBy: req.actor.name } : {}) }
  const outcome = await host.change({ type: 'create_token', token: record }, req.actor)
  if (!outcome.ok) return sendAdmin(reply, outcome)
  // Shown once: only its hash is kept.
  return reply.code(201).header('cache-control', 'no-store').send({ ...(outcome.detail as object), token })
}

async function revokeToken(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  jsonBody(req, EmptyBodySchema)
  return sendAdmin(reply, await host.change({ type: 'revoke_token', name: parse(NameParamsSchema, req.params, 'params').name }, req.actor))
}

async function listAudit(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  const q = parse(AuditQuerySchema, req.query, 'query')
  const items = await host.audit(q.since ?? 0, q.limit + 1)
  return { items: items.slice(0, q.limit), more: items.length > q.limit }
}

// Fleet membership (admin): enrolment tokens, enrolments awaiting approval, revocation.

async function createEnrollment(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const b = jsonBody(req, EnrollmentBodySchema)
  const token = newToken(ENROLL_TOKEN_PREFIX)
  const enrollment = newEnrollment({ id: b.name ?? `enroll-${hashToken(token).slice(0, ENROLLMENT_ID_HEX_CHARS)}`, token, uses: b.uses, ttlMs: b.ttl, attributes: b.attributes, ...(req.actor ? { createdBy: req.actor.name } : {}) }, Date.now())
  const outcome = await host.change({ type: 'create_enrollment', enrollment }, req.actor)
  if (!outcome.ok) return sendAdmin(reply, outcome)
  // Shown once: only its hash is kept.
  return reply.code(201).header('cache-control', 'no-store').send({ ...(outcome.detail as object), token })
}

async function listEnrollments(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  return pageOf([...host.state.members.enrollments.values()], parse(PageQuerySchema, req.query, 'query'), (p) => p.map(enrollmentSummary))
}

async function deleteEnrollment(host: ApiHost, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  jsonBody(req, EmptyBodySchema)
  return sendAdmin(reply, await host.change({ type: 'delete_enrollment', id: savedId(req) }, req.actor))
}

async function listPending(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  return pageOf([...host.state.members.pending.values()], parse(PageQuerySchema, req.query, 'query'), (page) => page.map((p) => ({ nodeId: p.nodeId, peerId: p.peerId, publicKey: p.key, enrollment: p.enrollment, attributes: p.attributes, facts: p.facts, requestedAt: new Date(p.requestedAt).toISOString() })))
}

async function listRevoked(host: ApiHost, req: FastifyRequest): Promise<unknown> {
  return pageOf([...host.state.members.revoked.values()], parse(PageQuerySchema, req.query, 'query'), (page) => page.map((r) => ({ nodeId: r.nodeId, publicKey: r.key, revokedAt: new Date(r.at).toISOString() })))
}

/** `POST /v1/nodes/:id/approve`, `…/reject` and `…/revoke`: a revoked node's connections are closed too. */
function decideNode(action: 'approve' | 'reject' | 'revoke'): RouteHandler {
  return async (host, req, reply) => {
    jsonBody(req, EmptyBodySchema)
    const outcome = await host.change({ type: `${action}_node`, nodeId: savedId(req) }, req.actor)
    if (outcome.ok && action === 'revoke') host.hangUp((outcome.detail as { peerId: string }).peerId)
    return sendAdmin(reply, outcome)
  }
}

const at = (method: Method, url: string): string => routeKey(method, url)

/**
 * Every route this module and lifecycle.ts serve, by `METHOD url` (each must be in access.ts
 * ROUTES: buildApi refuses one that is not). Built when called, not at import: lifecycle.ts
 * and this module import each other through http.ts.
 */
export function routeHandlers(): ReadonlyMap<string, RouteHandler> {
  return new Map<string, RouteHandler>([
    [at('GET', '/metrics'), metrics],
    [at('GET', '/v1/openapi.json'), openApi],
    [at('POST', '/v1/jobs'), submitJob],
    [at('POST', '/v1/plan'), planJobRoute],
    [at('GET', '/v1/jobs'), listJobs],
    [at('GET', '/v1/jobs/:id'), getJob],
    [at('POST', '/v1/jobs/:id/cancel'), cancelJob],
    [at('GET', '/v1/jobs/:id/next'), nextOccurrences],
    [at('GET', '/v1/reports/:id'), getReport],
    [at('GET', '/v1/instances/:id'), getInstance],
    [at('GET', '/v1/instances/:id/runs'), listInstanceRuns],
    [at('GET', '/v1/runs/:id'), getRun],
    [at('GET', '/v1/runs/:id/artifacts'), listArtifacts],
    [at('GET', '/v1/runs/:id/steps/:step/artifacts/:name'), getArtifact],
    [at('GET', '/v1/nodes'), listNodes],
    [at('GET', '/v1/nodes/:id/runs'), listNodeRuns],
    [at('GET', '/v1/exceptions'), listExceptions],
    [at('POST', '/v1/exceptions'), addException],
    [at('DELETE', '/v1/exceptions/:id'), removeException],
    [at('GET', '/v1/lists'), listLists],
    [at('PUT', '/v1/lists/:id'), saveList],
    [at('DELETE', '/v1/lists/:id'), deleteSaved('list')],
    [at('GET', '/v1/filters'), listFilters],
    [at('PUT', '/v1/filters/:id'), saveFilter],
    [at('DELETE', '/v1/filters/:id'), deleteSaved('filter')],
    [at('GET', '/v1/tokens'), listTokens],
    [at('POST', '/v1/tokens'), createToken],
    [at('DELETE', '/v1/tokens/:name'), revokeToken],
    [at('GET', '/v1/audit'), listAudit],
    [at('POST', '/v1/enrollments'), createEnrollment],
    [at('GET', '/v1/enrollments'), listEnrollments],
    [at('DELETE', '/v1/enrollments/:id'), deleteEnrollment],
    [at('GET', '/v1/nodes/pending'), listPending],
    [at('GET', '/v1/nodes/revoked'), listRevoked],
    [at('POST', '/v1/nodes/:id/approve'), decideNode('approve')],
    [at('POST', '/v1/nodes/:id/reject'), decideNode('reject')],
    [at('POST', '/v1/nodes/:id/revoke'), decideNode('revoke')],
    ...lifecycleHandlers(),
  ])
}
