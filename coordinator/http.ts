// The coordinator's HTTP API. One onRequest hook refuses what is not for this API (foreign
// Host, a browser's cross-origin or form request) and checks the bearer token, or the web
// console's session cookie (coordinator/sessions.ts, coordinator/ui.ts), against the role the
// route table (coordinator/access.ts) gives the route; every body, query and parameter is
// checked by its schema (protocol/api.ts) before it reaches the core, and bad input is a 400
// `{error, problems: [{path, message}]}`. The handlers, one function per route, are in
// coordinator/routes.ts (and lifecycle.ts); buildApi registers them from the route table.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { z } from 'zod'
import { MAX_TEMPLATE_BYTES, type TemplateFormat } from '../protocol/parse.js'
import type { JobTemplate } from '../protocol/template.js'
import { check, parseJsonText, type Problem } from '../protocol/api.js'
import { ROUTES, bearerOf, browserRefusal, hashToken, isPublic, isStateChanging, requiredRole, roleAllows, routeKey } from './access.js'
import { tokenByHash, type Actor, type AuditRecord, type TokenRecord, type CoordinatorEffect, type CoordinatorState, type RequestEvent, type SubmitOutcome } from './core.js'
import { CHORUS_HEADER } from '../protocol/headers.js'
import { openApiDocument } from './openapi.js'
import { eventRoutes, type EventHost } from './sse.js'
import { routeHandlers } from './routes.js'
import { SessionStore } from './sessions.js'
import { sessionOf, uiRoutes } from './ui.js'
import { CursorError, type History } from './history.js'

export { JOB_INSTANCE_IDS_SHOWN } from './routes.js'

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

/** The core's answer; a 400 always carries problems (the shape of every bad-input answer). */
export function sendAdmin(reply: FastifyReply, outcome: AdminOutcome, okStatus = 200): FastifyReply {
  if (outcome.ok) return reply.code(okStatus).send(outcome.detail ?? { ok: true })
  const problems = outcome.problems ?? (outcome.status === 400 ? [{ path: 'body', message: outcome.error }] : undefined)
  return reply.code(outcome.status).send({ error: outcome.error, ...(problems ? { problems } : {}) })
}

export function notFound(reply: FastifyReply, what: string): FastifyReply {
  return reply.code(404).send({ error: `no ${what}` })
}

/** The API server: its hooks (Chorus header, browser checks and authorisation, one log line per request, errors), then its routes. */
export function buildApi(host: ApiHost, https?: { cert: Buffer; key: Buffer }): FastifyInstance {
  const app = (https ? Fastify({ logger: false, bodyLimit: MAX_TEMPLATE_BYTES, exposeHeadRoutes: false, https }) : Fastify({ logger: false, bodyLimit: MAX_TEMPLATE_BYTES, exposeHeadRoutes: false })) as unknown as FastifyInstance
  // Templates are parsed by our own parser so duplicate keys are caught: take every body as text.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body))
  const registered = guardRoutes(app)
  const sessions = new SessionStore()
  installHooks(app, host, sessions)
  registerRoutes(app, host, sessions, registered)
  return app
}

function installHooks(app: FastifyInstance, host: ApiHost, sessions: SessionStore): void {
  app.addHook('onRequest', async (_req, reply) => { reply.header(CHORUS_HEADER, '1') })
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
}

/**
 * The routes of the table (coordinator/access.ts ROUTES) with their handlers (coordinator/routes.ts),
 * the events and the console, which register themselves; a listed route nobody serves answers 501.
 */
function registerRoutes(app: FastifyInstance, host: ApiHost, sessions: SessionStore, registered: Set<string>): void {
  app.get('/healthz', async () => ({ ok: true }))
  // Built now: a route of the table without documentation stops the start.
  openApiDocument()
  const handlers = routeHandlers()
  for (const r of ROUTES) {
    const handler = handlers.get(routeKey(r.method, r.url))
    if (handler) app.route({ method: r.method, url: r.url, handler: (req, reply) => handler(host, req, reply) })
  }
  for (const key of handlers.keys()) if (!registered.has(key)) throw new Error(`route ${key} has a handler but is not in the route table (coordinator/access.ts ROUTES)`)
  eventRoutes(app, host)
  uiRoutes(app, { sessions, scheme: host.scheme })
  // Listed routes nobody serves yet answer 501 (behind the same role check).
  for (const r of ROUTES) {
    if (registered.has(routeKey(r.method, r.url))) continue
    app.route({ method: r.method, url: r.url, handler: async (_req, reply) => reply.code(501).send({ error: `${r.method} ${r.url} is not implemented by this coordinator` }) })
  }
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
