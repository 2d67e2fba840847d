// The coordinator's HTTP API. One onRequest hook refuses what is not for this API (foreign
// Host, a browser's cross-origin or form request) and checks the bearer token, or the web
// console's session cookie (coordinator/sessions.ts, coordinator/ui.ts), against the role the
// route table (coordinator/access.ts) gives the route; every body, query and parameter is
// checked by its schema (protocol/api.ts) before it reaches the core, and bad input is a 400
// `{error, problems: [{path, message}]}`.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { z } from 'zod'
import { MAX_TEMPLATE_BYTES, parseTemplateText, type TemplateFormat } from '../protocol/parse.js'
import type { JobTemplate } from '../protocol/template.js'
import {
  AuditQuerySchema, CancelBodySchema, CursorPageQuerySchema, ReportQuerySchema, JobsQuerySchema, PageQuerySchema, PlanQuerySchema, EmptyBodySchema, EnrollmentBodySchema, ExceptionBodySchema, FilterBodySchema, IdParamsSchema, ListBodySchema, NameParamsSchema, NextQuerySchema,
  NodesQuerySchema, ObjectParamsSchema, TokenBodySchema, check, parseJsonText, type Problem,
} from '../protocol/api.js'
import {
  ROUTES, bearerOf, browserRefusal, hashToken, isPublic, isStateChanging, newToken, requiredRole, roleAllows, routeKey,
} from './access.js'
import {
  nextOccurrencesOf, selectNodes, tokenByHash, tokenView,
  type Actor, type AuditRecord, type JobRecord, type TokenRecord, type CoordinatorEffect, type CoordinatorState, type RequestEvent, type SubmitOutcome,
} from './core.js'
import { planJob } from './plan.js'
import { simulateInChild } from './plan-sim.js'
import { enrollmentSummary, newEnrollment } from './members.js'
import { ENROLL_TOKEN_PREFIX } from '../protocol/membership.js'
import { CHORUS_HEADER } from '../protocol/headers.js'
import { openApiDocument } from './openapi.js'
import { eventRoutes, type EventHost } from './sse.js'
import { lifecycleRoutes, nodeView, pageOf } from './lifecycle.js'
import { SessionStore } from './sessions.js'
import { sessionOf, uiRoutes } from './ui.js'
import { instanceReport, instanceSummary, jobSummary, runReport, type JobReport } from './report.js'
import { CursorError, type History } from './history.js'

export type AdminOutcome = Extract<CoordinatorEffect, { type: 'reply_admin' }>['outcome']
type Change = RequestEvent extends infer E ? (E extends RequestEvent ? Omit<E, 'actor' | 'requestId'> : never) : never

/** What the API needs of the runtime. */
export interface ApiHost extends EventHost {
  readonly state: CoordinatorState
  readonly logger: Logger
  /** Host header values accepted (filled once the server is bound). */
  readonly hosts: Set<string>
  readonly scheme: 'http' | 'https'
  change(event: Change, actor: Actor | undefined): Promise<AdminOutcome>
  submit(template: JobTemplate, actor: Actor | undefined): Promise<SubmitOutcome>
  audit(since: number, limit: number): Promise<AuditRecord[]>
  /** Finished instances and runs, read from the store. */
  readonly history: History
  /** Prometheus text (coordinator/metrics.ts). */
  metricsText(): Promise<string>
  /** Closes a revoked node's connections. */
  hangUp(peerId: string): void
}

declare module 'fastify' {
  interface FastifyRequest {
    actor?: Actor
  }
}

/** Bad input: answered 400 with the problems by the error handler. */
export class BadInput extends Error {
  constructor(message: string, readonly problems: Problem[]) {
    super(message)
  }
}

export function parse<S extends z.ZodType>(schema: S, value: unknown, at: string): z.output<S> {
  const r = check(schema, value, at)
  if (!r.ok) throw new BadInput(`invalid ${at}`, r.problems)
  return r.value
}

export function jsonBody<S extends z.ZodType>(req: FastifyRequest, schema: S): z.output<S> {
  const json = parseJsonText(typeof req.body === 'string' ? req.body : '')
  if (!json.ok) throw new BadInput('invalid body', json.problems)
  return parse(schema, json.value, 'body')
}

/** The template text of a request and its format (by content type). */
export function templateTextOf(req: FastifyRequest): { text: string; format: TemplateFormat } {
  const ct = String(req.headers['content-type'] ?? 'application/json')
  const format: TemplateFormat = /yaml/.test(ct) ? 'yaml' : /toml/.test(ct) ? 'toml' : 'json'
  return { text: typeof req.body === 'string' ? req.body : '', format }
}

function templateOf(req: FastifyRequest): JobTemplate {
  const { text, format } = templateTextOf(req)
  const parsed = parseTemplateText(text, format)
  if (!parsed.ok) throw new BadInput('invalid job template', parsed.problems)
  return parsed.template
}

/** The core's answer; a 400 always carries problems (the shape of every bad-input answer). */
export function sendAdmin(reply: FastifyReply, outcome: AdminOutcome, okStatus = 200): FastifyReply {
  if (outcome.ok) return reply.code(okStatus).send(outcome.detail ?? { ok: true })
  const problems = outcome.problems ?? (outcome.status === 400 ? [{ path: 'body', message: outcome.error }] : undefined)
  return reply.code(outcome.status).send({ error: outcome.error, ...(problems ? { problems } : {}) })
}

export function notFound(reply: FastifyReply, what: string): FastifyReply {
  return reply.code(404).send({ error: `no ${what}` })
}

export function buildApi(host: ApiHost, https?: { cert: Buffer; key: Buffer }): FastifyInstance {
  const app = (https ? Fastify({ logger: false, bodyLimit: MAX_TEMPLATE_BYTES, exposeHeadRoutes: false, https }) : Fastify({ logger: false, bodyLimit: MAX_TEMPLATE_BYTES, exposeHeadRoutes: false })) as unknown as FastifyInstance
  // Templates are parsed by our own parser so duplicate keys are caught: take every body as text.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body))
  const registered = guardRoutes(app)
  app.addHook('onRequest', async (_req, reply) => { reply.header(CHORUS_HEADER, '1') })
  const sessions = new SessionStore()
  app.addHook('onRequest', async (req, reply) => authorize(host, sessions, req, reply))
  // One line per request: method, route, status, time, token name.
  app.addHook('onResponse', async (req, reply) => {
    host.logger.info({ method: req.method, route: req.routeOptions.url ?? req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime), token: req.actor?.name ?? null }, 'api request')
  })
  app.setErrorHandler((err: Error & { statusCode?: number }, req, reply) => {
    if (err instanceof BadInput) return reply.code(400).send({ error: err.message, problems: err.problems })
    if (err instanceof CursorError) return reply.code(400).send({ error: err.message, problems: [{ path: 'query.cursor', message: err.message }] })
    const status = err.statusCode ?? 500
    if (status >= 500) host.logger.error({ err, method: req.method, url: req.url }, 'API request failed')
    return reply.code(status).send({ error: err.message })
  })
  app.get('/healthz', async () => ({ ok: true }))
  // Built now: a route of the table without documentation stops the start.
  const doc = openApiDocument()
  app.get('/v1/openapi.json', async () => doc)
  app.get('/metrics', async (_req, reply) => reply.type('text/plain; version=0.0.4; charset=utf-8').send(await host.metricsText()))
  jobRoutes(app, host)
  runRoutes(app, host)
  savedRoutes(app, host)
  accessRoutes(app, host)
  memberRoutes(app, host)
  eventRoutes(app, host)
  lifecycleRoutes(app, host)
  uiRoutes(app, { sessions, scheme: host.scheme })
  // Listed routes nobody serves yet answer 501 (behind the same role check).
  for (const r of ROUTES) {
    if (registered.has(routeKey(r.method, r.url))) continue
    app.route({ method: r.method, url: r.url, handler: async (_req, reply) => reply.code(501).send({ error: `${r.method} ${r.url} is not implemented by this coordinator` }) })
  }
  return app
}

/** Refuses to register a route missing from the route table; returns the routes registered. */
function guardRoutes(app: FastifyInstance): Set<string> {
  const registered = new Set<string>()
  app.addHook('onRoute', (opts) => {
    for (const method of [opts.method].flat()) {
      if (isPublic(method, opts.url)) continue
      if (!ROUTES.some((r) => r.method === method && r.url === opts.url)) throw new Error(`route ${method} ${opts.url} is not in the route table (coordinator/access.ts ROUTES)`)
      registered.add(routeKey(method, opts.url))
    }
  })
  return registered
}

function refuse(reply: FastifyReply, status: number, body: { error: string; requiredRole?: string }): FastifyReply {
  return reply.code(status).send(body)
}

async function authorize(host: ApiHost, sessions: SessionStore, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
  const refused = browserRefusal({ method: req.method, host: req.headers.host, origin: req.headers.origin, contentType: req.headers['content-type'] }, host.hosts, host.scheme)
  if (refused) return refuse(reply, refused.status, { error: refused.error })
  const url = req.routeOptions.url
  if (isPublic(req.method, url)) return undefined
  const needs = requiredRole(req.method, url)
  const caller = callerOf(host, sessions, req)
  if (caller.refusal) return refuse(reply, caller.refusal.status, { error: caller.refusal.error, requiredRole: needs })
  const record = caller.record
  if (!record) return refuse(reply, 401, { error: caller.none ? 'missing Authorization: Bearer TOKEN (chorus tokens; the first admin token is in DATA/admin.token) or a console session (chorus ui)' : 'unknown, expired or revoked token or session', requiredRole: needs })
  if (!roleAllows(record.role, needs)) return refuse(reply, 403, { error: `token ${record.name} has role ${record.role}; ${req.method} ${url} needs ${needs}`, requiredRole: needs })
  req.actor = { name: record.name, role: record.role }
  return undefined
}

/**
 * The token record of a request: its bearer token, else its console session (which has the
 * role of the token that made its login code). A session's state-changing request must come
 * from this API's own origin (with SameSite=Strict and the JSON content type: the CSRF defence).
 */
function callerOf(host: ApiHost, sessions: SessionStore, req: FastifyRequest): { record?: TokenRecord; none?: boolean; refusal?: { status: number; error: string } } {
  const now = Date.now()
  const token = bearerOf(req.headers.authorization)
  if (token !== undefined) return { record: tokenByHash(host.state, hashToken(token), now) }
  const session = sessionOf(req)
  const who = session === undefined ? undefined : sessions.actorOf(session, now)
  if (session === undefined) return { none: true }
  if (who && isStateChanging(req.method) && req.headers.origin === undefined) return { refusal: { status: 403, error: 'a state-changing request with a session cookie needs the Origin header of this API' } }
  return { record: who && tokenByHash(host.state, who.tokenHash, now) }
}

type IdReq = FastifyRequest<{ Params: { id: string } }>
const objectId = (req: FastifyRequest) => parse(ObjectParamsSchema, req.params, 'params').id

function jobRoutes(app: FastifyInstance, host: ApiHost): void {
  app.post('/v1/jobs', async (req, reply) => {
    const outcome = await host.submit(templateOf(req), req.actor)
    if (!outcome.ok) return reply.code(422).send({ error: 'job cannot be targeted', problems: outcome.problems })
    return reply.code(201).send({ id: outcome.jobId, instanceIds: outcome.instanceIds, targets: outcome.targets, ...(outcome.warnings?.length ? { warnings: outcome.warnings } : {}) })
  })
  app.post('/v1/plan', async (req, reply) => {
    const q = parse(PlanQuerySchema, req.query, 'query')
    const template = templateOf(req)
    const plan = planJob(host.state, template, Date.now())
    if (!plan.ok) return reply.code(422).send({ error: 'job cannot be targeted', problems: plan.problems })
    if (q.simulate === undefined) return plan.plan
    const simulation = simulateInChild({ template, groups: plan.plan.groups.map((g) => g.nodes.map((n) => n.nodeId)), seeds: q.simulate, profile: q.profile })
    if (!simulation) return reply.code(503).send({ error: 'a plan simulation is running already; try again when it is done' })
    return { ...plan.plan, simulation: await simulation.catch((err: Error) => { throw new BadInput('cannot simulate this plan', [{ path: 'query.simulate', message: err.message }]) }) }
  })
  app.get('/v1/jobs', async (req) => {
    const q = parse(JobsQuerySchema, req.query, 'query')
    const jobs = [...host.state.jobs.values()].filter((j) => (!q.status || j.status === q.status) && (!q.name || j.name.includes(q.name)))
    return pageOf(jobs.sort((a, b) => b.createdAt - a.createdAt), q, (page) => page.map((j) => jobRow(host.state, j, Date.now())))
  })
  app.get('/v1/jobs/:id', async (req: IdReq, reply) => {
    const job = host.state.jobs.get(objectId(req))
    if (!job) return notFound(reply, `job ${req.params.id}`)
    // The latest instances only: all of them page through GET /v1/instances?job=ID.
    return { ...jobSummary(job), template: job.template, instanceIds: await host.history.latestInstanceIds(job.jobId, JOB_INSTANCE_IDS_SHOWN), instanceCount: job.history.count }
  })
  app.post('/v1/jobs/:id/cancel', async (req: IdReq, reply) => {
    const { occurrences } = jsonBody(req, CancelBodySchema)
    return sendAdmin(reply, await host.change({ type: 'cancel', jobId: objectId(req), ...(occurrences ? { occurrences } : {}) }, req.actor))
  })
  app.get('/v1/jobs/:id/next', async (req: IdReq, reply) => {
    const { count } = parse(NextQuerySchema, req.query, 'query')
    const next = nextOccurrencesOf(host.state, objectId(req), Date.now(), count)
    if (!next) return notFound(reply, `job ${req.params.id}`)
    return { items: next.map((o) => ({ ...o, at: new Date(o.at).toISOString() })) }
  })
  app.get('/v1/reports/:id', async (req: IdReq, reply) => {
    const q = parse(ReportQuerySchema, req.query, 'query')
    return await reportOf(host, objectId(req), q) ?? notFound(reply, `job or instance ${req.params.id}`)
  })
}

/** `GET /v1/jobs/:id` lists this many of the job's latest instance ids. */
export const JOB_INSTANCE_IDS_SHOWN = 100

/** The report of a job (a page of its instances, in occurrence order, each with its runs) or of one instance. */
async function reportOf(host: ApiHost, id: string, q: { page: number; size: number; cursor?: string }): Promise<JobReport | undefined> {
  const job = host.state.jobs.get(id)
  if (job) {
    const page = await host.history.instancePage({ ...q, job: job.jobId, oldestFirst: true })
    const instances = await Promise.all(page.items.map(async (i) => instanceReport(i, await host.history.runs(i.runIds))))
    return { job: jobSummary(job), instances, pagination: page.pagination }
  }
  const instance = await host.history.instance(id)
  const parent = instance && host.state.jobs.get(instance.jobId)
  if (instance && parent) return { job: jobSummary(parent), instances: [instanceReport(instance, await host.history.runs(instance.runIds))] }
  return undefined
}

/** A job of the list: its summary, its next occurrence and its last instance's outcome. */
function jobRow(state: CoordinatorState, job: JobRecord, now: number) {
  const next = nextOccurrencesOf(state, job.jobId, now, 1)?.[0]
  const last = job.history.latest
  return { ...jobSummary(job), nextAt: next ? new Date(next.at).toISOString() : null, lastInstance: last ? { id: last.id, status: last.status } : null }
}

function runRoutes(app: FastifyInstance, host: ApiHost): void {
  const instance = (req: FastifyRequest) => host.history.instance(objectId(req))
  const run = (req: FastifyRequest) => host.history.run(objectId(req))
  app.get('/v1/instances/:id', async (req: IdReq, reply) => { const i = await instance(req); return i ? instanceSummary(i, host.history.counts(i)) : notFound(reply, `instance ${req.params.id}`) })
  app.get('/v1/instances/:id/runs', async (req: IdReq, reply) => {
    const q = parse(PageQuerySchema, req.query, 'query')
    const i = await instance(req)
    if (!i) return notFound(reply, `instance ${req.params.id}`)
    // runIds is the instance's own index of its runs (fixed at creation): positions are stable.
    const from = (q.page - 1) * q.size
    return { items: (await host.history.runs(i.runIds.slice(from, from + q.size))).map(runReport), pagination: { page: q.page, size: q.size, total: i.runIds.length } }
  })
  app.get('/v1/runs/:id', async (req: IdReq, reply) => { const r = await run(req); return r ? runReport(r) : notFound(reply, `run ${req.params.id}`) })
  app.get('/v1/runs/:id/artifacts', async (req: IdReq, reply) => {
    const r = await run(req)
    if (!r) return notFound(reply, `run ${req.params.id}`)
    return { items: r.steps.flatMap((s) => (s.artifacts ?? []).map((a) => ({ step: s.number, name: a.name, encoding: a.encoding, bytes: a.bytes, truncated: a.truncated }))) }
  })
  app.get<{ Params: { id: string; step: string; name: string } }>('/v1/runs/:id/steps/:step/artifacts/:name', async (req, reply) => {
    const a = (await run(req))?.steps.find((s) => s.number === Number(req.params.step))?.artifacts?.find((x) => x.name === req.params.name)
    if (!a) return notFound(reply, `artifact ${req.params.name} on step ${req.params.step} of run ${req.params.id}`)
    return reply.header('x-chorus-truncated', String(a.truncated)).type(a.encoding === 'utf8' ? 'text/plain; charset=utf-8' : 'application/octet-stream').send(a.encoding === 'utf8' ? a.content : Buffer.from(a.content, 'base64'))
  })
  app.get('/v1/nodes', async (req, reply) => {
    const q = parse(NodesQuerySchema, req.query, 'query')
    let nodes = [...host.state.nodes.values()]
    if (q.search) {
      const sel = selectNodes(host.state, { query: q.search }, 'search')
      if ('problems' in sel) return reply.code(400).send({ error: 'invalid search', problems: sel.problems.map((p) => ({ ...p, path: 'query.search' })) })
      const keep = new Set(sel.nodes)
      nodes = nodes.filter((n) => keep.has(n.nodeId))
    }
    return pageOf(nodes, q, (page) => page.map((n) => nodeView(host.state, n)))
  })
  app.get('/v1/nodes/:id/runs', async (req: IdReq) => {
    const q = parse(CursorPageQuerySchema, req.query, 'query')
    const page = await host.history.nodeRunPage(objectId(req), q)
    return { ...page, items: page.items.map((r) => ({ ...runReport(r), instanceId: r.instanceId, jobId: r.jobId })) }
  })
}

function savedRoutes(app: FastifyInstance, host: ApiHost): void {
  const id = (req: FastifyRequest) => parse(IdParamsSchema, req.params, 'params').id
  app.get('/v1/exceptions', async (req) => pageOf([...host.state.globals.values()], parse(PageQuerySchema, req.query, 'query')))
  app.post('/v1/exceptions', async (req, reply) => sendAdmin(reply, await host.change({ type: 'add_exception', exception: jsonBody(req, ExceptionBodySchema) }, req.actor)))
  app.delete('/v1/exceptions/:id', async (req, reply) => {
    jsonBody(req, EmptyBodySchema)
    return sendAdmin(reply, await host.change({ type: 'remove_exception', id: id(req) }, req.actor))
  })
  app.get('/v1/lists', async (req) => pageOf([...host.state.lists.values()], parse(PageQuerySchema, req.query, 'query')))
  app.put('/v1/lists/:id', async (req, reply) => {
    const listId = id(req)
    const b = jsonBody(req, ListBodySchema)
    return sendAdmin(reply, await host.change({ type: 'save_list', list: { id: listId, name: b.name ?? listId, nodes: [...new Set(b.nodes)] } }, req.actor))
  })
  app.get('/v1/filters', async (req) => pageOf([...host.state.filters.values()], parse(PageQuerySchema, req.query, 'query')))
  app.put('/v1/filters/:id', async (req, reply) => {
    const filterId = id(req)
    const b = jsonBody(req, FilterBodySchema)
    const filter = { id: filterId, name: b.name ?? filterId, ...(b.query !== undefined ? { query: b.query } : {}), ...(b.constraints !== undefined ? { constraints: b.constraints } : {}) }
    return sendAdmin(reply, await host.change({ type: 'save_filter', filter }, req.actor))
  })
  for (const kind of ['list', 'filter'] as const) {
    app.delete(`/v1/${kind}s/:id`, async (req, reply) => {
      jsonBody(req, EmptyBodySchema)
      return sendAdmin(reply, await host.change({ type: 'delete_saved', kind, id: id(req) }, req.actor))
    })
  }
}

function accessRoutes(app: FastifyInstance, host: ApiHost): void {
  app.get('/v1/tokens', async (req) => pageOf([...host.state.tokens.values()], parse(PageQuerySchema, req.query, 'query'), (p) => p.map(tokenView)))
  app.post('/v1/tokens', async (req, reply) => {
    const b = jsonBody(req, TokenBodySchema)
    const token = newToken()
    const now = Date.now()
    const record = { name: b.name, role: b.role, hash: hashToken(token), createdAt: now, ...(b.ttl !== undefined ? { expiresAt: now + b.ttl } : {}), ...(req.actor ? { createdBy: req.actor.name } : {}) }
    const outcome = await host.change({ type: 'create_token', token: record }, req.actor)
    if (!outcome.ok) return sendAdmin(reply, outcome)
    // Shown once: only its hash is kept.
    return reply.code(201).header('cache-control', 'no-store').send({ ...(outcome.detail as object), token })
  })
  app.delete('/v1/tokens/:name', async (req, reply) => {
    jsonBody(req, EmptyBodySchema)
    return sendAdmin(reply, await host.change({ type: 'revoke_token', name: parse(NameParamsSchema, req.params, 'params').name }, req.actor))
  })
  app.get('/v1/audit', async (req) => {
    const q = parse(AuditQuerySchema, req.query, 'query')
    const items = await host.audit(q.since ?? 0, q.limit + 1)
    return { items: items.slice(0, q.limit), more: items.length > q.limit }
  })
}

/** Fleet membership (admin): enrolment tokens, enrolments awaiting approval, revocation. */
function memberRoutes(app: FastifyInstance, host: ApiHost): void {
  const members = () => host.state.members
  app.post('/v1/enrollments', async (req, reply) => {
    const b = jsonBody(req, EnrollmentBodySchema)
    const token = newToken(ENROLL_TOKEN_PREFIX)
    const enrollment = newEnrollment({ id: b.name ?? `enroll-${hashToken(token).slice(0, 8)}`, token, uses: b.uses, ttlMs: b.ttl, attributes: b.attributes, ...(req.actor ? { createdBy: req.actor.name } : {}) }, Date.now())
    const outcome = await host.change({ type: 'create_enrollment', enrollment }, req.actor)
    if (!outcome.ok) return sendAdmin(reply, outcome)
    // Shown once: only its hash is kept.
    return reply.code(201).header('cache-control', 'no-store').send({ ...(outcome.detail as object), token })
  })
  app.get('/v1/enrollments', async (req) => pageOf([...members().enrollments.values()], parse(PageQuerySchema, req.query, 'query'), (p) => p.map(enrollmentSummary)))
  app.delete('/v1/enrollments/:id', async (req, reply) => {
    jsonBody(req, EmptyBodySchema)
    return sendAdmin(reply, await host.change({ type: 'delete_enrollment', id: parse(IdParamsSchema, req.params, 'params').id }, req.actor))
  })
  app.get('/v1/nodes/pending', async (req) => pageOf([...members().pending.values()], parse(PageQuerySchema, req.query, 'query'), (page) => page.map((p) => ({ nodeId: p.nodeId, peerId: p.peerId, publicKey: p.key, enrollment: p.enrollment, attributes: p.attributes, facts: p.facts, requestedAt: new Date(p.requestedAt).toISOString() }))))
  app.get('/v1/nodes/revoked', async (req) => pageOf([...members().revoked.values()], parse(PageQuerySchema, req.query, 'query'), (page) => page.map((r) => ({ nodeId: r.nodeId, publicKey: r.key, revokedAt: new Date(r.at).toISOString() }))))
  for (const action of ['approve', 'reject', 'revoke'] as const) {
    app.post(`/v1/nodes/:id/${action}`, async (req, reply) => {
      jsonBody(req, EmptyBodySchema)
      const outcome = await host.change({ type: `${action}_node`, nodeId: parse(IdParamsSchema, req.params, 'params').id }, req.actor)
      if (outcome.ok && action === 'revoke') host.hangUp((outcome.detail as { peerId: string }).peerId)
      return sendAdmin(reply, outcome)
    })
  }
}
