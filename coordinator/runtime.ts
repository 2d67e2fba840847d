// The coordinator runtime: libp2p (publishes jobs, answers agents' rpc), level (every record),
// an HTTP API on loopback, and a ticker. Decisions live in the coordinator core.
import { randomUUID } from 'node:crypto'
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Level } from 'level'
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify'
import type { Logger } from 'pino'
import { loadOrCreateIdentity, type Identity } from '../protocol/keys.js'
import { TOPIC_JOBS, TOPIC_PROGRESS, decodeEnvelope, encodeEnvelope } from '../protocol/wire.js'
import { MAX_TEMPLATE_BYTES, parseTemplateText, type TemplateFormat } from '../protocol/parse.js'
import type { JobTemplate } from '../protocol/template.js'
import { createNet, type Net } from '../net/libp2p.js'
import { CoreLoop } from '../protocol/loop.js'
import { subscribeEnvelopes } from '../protocol/transport.js'
import {
  DEFAULT_COORDINATOR_TIMING, coordinatorStep, nextOccurrencesOf, restoreCoordinator, selectNodes,
  type CoordinatorConfig, type CoordinatorEffect, type CoordinatorEvent, type CoordinatorState, type SubmitOutcome,
} from './core.js'
import { planJob } from './plan.js'
import { registerMemberRoutes } from './api-members.js'
import { MEMBER_DEADLINE_MS } from '../protocol/membership.js'
import { peerIdOf } from '../protocol/keys.js'
import { buildReport, instanceReport, instanceSummary, jobSummary, runReport } from './report.js'

import { COORDINATOR_TICK_MS, MAX_PENDING_REQUESTS } from '../protocol/timing.js'
export { COORDINATOR_TICK_MS, MAX_PENDING_REQUESTS }
export const DEFAULT_LISTEN = '/ip4/127.0.0.1/tcp/7700'
export const DEFAULT_API = '127.0.0.1:7070'

type AdminOutcome = Extract<CoordinatorEffect, { type: 'reply_admin' }>['outcome']

export interface CoordinatorOptions {
  dataDir: string
  listen?: string[]
  api?: string
  logger: Logger
  /** Called when continuing would be unsafe (default: exit with code 70). */
  onFatal?: (err: unknown) => void
  /** Enrolments wait for `chorus nodes approve` (as salt-key). */
  requireApproval?: boolean
}

export interface Endpoints {
  peerId: string
  publicKey: string
  multiaddrs: string[]
  api: string
  pid: number
}

export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(text)
  if (!m) throw new Error(`expected HOST:PORT, e.g. 127.0.0.1:7070; got "${text}"`)
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) }
}

export class CoordinatorRuntime {
  state!: CoordinatorState
  private config!: CoordinatorConfig
  private db!: Level<string, unknown>
  private net!: Net
  private identity!: Identity
  private http!: FastifyInstance
  private loop!: CoreLoop<CoordinatorEvent, CoordinatorEffect>
  private ticker?: NodeJS.Timeout
  private readonly pending = new Map<string, (value: unknown) => void>()
  private stopped = false
  endpoints!: Endpoints

  constructor(private readonly opts: CoordinatorOptions) {}

  async start(): Promise<Endpoints> {
    await mkdir(this.opts.dataDir, { recursive: true })
    this.identity = (await loadOrCreateIdentity(this.opts.dataDir)).identity
    this.config = { identity: this.identity, ...DEFAULT_COORDINATOR_TIMING, ...(this.opts.requireApproval ? { requireApproval: true } : {}) }
    this.db = new Level<string, unknown>(join(this.opts.dataDir, 'db'), { valueEncoding: 'json' })
    await this.db.open()
    const records: [string, unknown][] = []
    for await (const entry of this.db.iterator()) records.push(entry)
    this.state = restoreCoordinator(records)
    this.loop = new CoreLoop<CoordinatorEvent, CoordinatorEffect>({
      step: (event, now) => coordinatorStep(this.state, this.config, event, now),
      commit: (ops) => this.db.batch(ops),
      execute: (effect) => this.execute(effect),
      now: () => Date.now(),
      onError: (err) => {
        this.opts.logger.fatal({ err }, 'coordinator cannot continue safely; exiting (state is restored from the store on restart)')
        ;(this.opts.onFatal ?? (() => process.exit(70)))(err)
      },
    })

    this.net = await createNet({
      seed: this.identity.seed, listen: this.opts.listen ?? [DEFAULT_LISTEN], fastLiveness: true,
      isMember: (peerId) => this.isMember(peerId), isDenied: (peerId) => this.revokedPeers().has(peerId),
    })
    this.net.node.addEventListener('peer:connect', (evt) => {
      const peerId = evt.detail.toString()
      if (!this.isMember(peerId)) this.enrolOrLeave(peerId)
      void this.dispatch({ type: 'link', peerId, up: true })
    })
    this.net.node.addEventListener('peer:disconnect', (evt) => void this.dispatch({ type: 'link', peerId: evt.detail.toString(), up: false }))
    subscribeEnvelopes(this.net, TOPIC_PROGRESS, (envelope) => void this.dispatch({ type: 'progress', envelope }))
    await this.net.handleRpc(async (data, from) => {
      const envelope = decodeEnvelope(data)
      const wasMember = this.isMember(from)
      const reply = await this.request<Uint8Array>((requestId) => ({ type: 'rpc', requestId, envelope, peerId: from }))
      // A hello that enrolled this peer: gossip reaches it from now on, not after the next heartbeat.
      if (!wasMember && this.isMember(from)) this.net.refreshPeer(from)
      return reply
    })

    this.http = this.buildApi()
    const { host, port } = parseHostPort(this.opts.api ?? DEFAULT_API)
    await this.http.listen({ host, port })
    const addr = this.http.server.address()
    const api = typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : String(addr)
    this.endpoints = { peerId: this.net.peerId, publicKey: this.identity.publicKey, multiaddrs: this.net.addresses(), api, pid: process.pid }
    const file = join(this.opts.dataDir, 'endpoints.json')
    await writeFile(`${file}.tmp`, JSON.stringify(this.endpoints, null, 2) + '\n')
    await rename(`${file}.tmp`, file)
    this.ticker = setInterval(() => void this.dispatch({ type: 'tick' }), COORDINATOR_TICK_MS)
    this.opts.logger.info({ ...this.endpoints, jobs: this.state.jobs.size, nodes: this.state.nodes.size }, 'coordinator started')
    return this.endpoints
  }

  /** An enrolled node's connection: its peer id is the one its enrolled key gives. */
  private isMember(peerId: string): boolean {
    const nodeId = this.state.byPeer.get(peerId)
    return nodeId !== undefined && this.state.nodes.get(nodeId)?.peerId === peerId
  }

  private revokedCache = { size: -1, peers: new Set<string>() }
  /** Peer ids of revoked nodes: the connection gater refuses them. */
  private revokedPeers(): Set<string> {
    const revoked = this.state.members.revoked
    if (this.revokedCache.size !== revoked.size) this.revokedCache = { size: revoked.size, peers: new Set([...revoked.values()].map((r) => peerIdOf(r.key))) }
    return this.revokedCache.peers
  }

  /** A peer that is not a member may only enrol (a hello with a token), within MEMBER_DEADLINE_MS: then it is disconnected. */
  private enrolOrLeave(peerId: string): void {
    setTimeout(() => {
      if (this.stopped || this.isMember(peerId)) return
      this.opts.logger.warn({ peerId, deadlineMs: MEMBER_DEADLINE_MS }, 'disconnected a peer that did not enrol in time (no valid enrolment token, or awaiting approval)')
      void this.net.hangUp(peerId)
    }, MEMBER_DEADLINE_MS).unref()
  }

  private request<T>(make: (requestId: string) => CoordinatorEvent): Promise<T> {
    if (this.pending.size >= MAX_PENDING_REQUESTS) return Promise.reject(new Error('coordinator overloaded: too many pending requests'))
    const requestId = randomUUID()
    const promise = new Promise<T>((resolve) => this.pending.set(requestId, resolve as (v: unknown) => void))
    void this.dispatch(make(requestId))
    return promise
  }

  dispatch(event: CoordinatorEvent): Promise<void> {
    if (this.stopped) return Promise.resolve()
    return this.loop.dispatch(event)
  }

  private execute(e: CoordinatorEffect): void {
    switch (e.type) {
      case 'publish':
        this.net.publish(TOPIC_JOBS, encodeEnvelope(e.envelope)).then(
          (recipients) => this.opts.logger.info({ recipients }, 'job definition published'),
          // Agents that miss the gossip fetch the job with their next sync.
          (err) => this.opts.logger.warn({ err: (err as Error).message }, 'publish failed; agents will sync the job'),
        )
        break
      case 'reply_rpc':
        this.resolve(e.requestId, encodeEnvelope(e.envelope))
        break
      case 'reply_submit':
      case 'reply_admin':
        this.resolve(e.requestId, e.outcome)
        break
      case 'log':
        this.opts.logger[e.level](e.fields ?? {}, e.msg)
        break
      case 'persist':
        break
    }
  }

  private resolve(requestId: string, value: unknown): void {
    const done = this.pending.get(requestId)
    this.pending.delete(requestId)
    done?.(value)
  }

  private admin(make: (requestId: string) => CoordinatorEvent): Promise<AdminOutcome> {
    return this.request<AdminOutcome>(make)
  }

  submit(template: JobTemplate): Promise<SubmitOutcome> {
    return this.request<SubmitOutcome>((requestId) => ({ type: 'submit', requestId, jobId: randomUUID(), template }))
  }

  private buildApi(): FastifyInstance {
    const app = Fastify({ logger: false, bodyLimit: MAX_TEMPLATE_BYTES })
    // Templates are parsed by our own parser so duplicate keys are caught: take every body as text.
    app.removeAllContentTypeParsers()
    app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body))

    app.get('/healthz', async () => ({ ok: true }))
    app.post('/v1/jobs', async (req, reply) => {
      const ct = String(req.headers['content-type'] ?? 'application/json')
      const format: TemplateFormat = /yaml/.test(ct) ? 'yaml' : /toml/.test(ct) ? 'toml' : 'json'
      const parsed = parseTemplateText(typeof req.body === 'string' ? req.body : '', format)
      if (!parsed.ok) return reply.code(400).send({ error: 'invalid job template', problems: parsed.problems })
      const outcome = await this.submit(parsed.template)
      if (!outcome.ok) return reply.code(422).send({ error: 'job cannot be targeted', problems: outcome.problems })
      return reply.code(201).send({ id: outcome.jobId, instanceIds: outcome.instanceIds, targets: outcome.targets })
    })
    app.get('/v1/jobs', async () => ({ items: [...this.state.jobs.values()].map(jobSummary) }))
    const sendAdmin = (reply: FastifyReply, outcome: AdminOutcome) => (outcome.ok ? reply.send(outcome.detail ?? { ok: true }) : reply.code(outcome.status).send({ error: outcome.error }))
    app.post<{ Params: { id: string } }>('/v1/jobs/:id/cancel', async (req, reply) => {
      let body: { occurrences?: unknown } = {}
      try { body = req.body ? (JSON.parse(String(req.body)) as typeof body) : {} } catch { return reply.code(400).send({ error: 'body: expected JSON {"occurrences": ["2026-01-01T00:00:00Z", ...]} or nothing' }) }
      let occurrences: number[] | undefined
      if (body.occurrences !== undefined) {
        if (!Array.isArray(body.occurrences) || body.occurrences.length === 0) return reply.code(400).send({ error: 'occurrences: expected a non-empty array of ISO 8601 times or ms' })
        occurrences = body.occurrences.map((o) => (typeof o === 'number' ? o : Date.parse(String(o))))
        if (occurrences.some((o) => !Number.isFinite(o))) return reply.code(400).send({ error: 'occurrences: every entry must be an ISO 8601 time (e.g. 2026-11-24T05:00:00Z) or ms since the epoch' })
      }
      return sendAdmin(reply, await this.admin((requestId) => ({ type: 'cancel', requestId, jobId: req.params.id, ...(occurrences ? { occurrences } : {}) })))
    })
    app.get<{ Params: { id: string }; Querystring: { count?: string } }>('/v1/jobs/:id/next', async (req, reply) => {
      const count = Math.min(1000, Math.max(1, Number(req.query.count ?? 10) || 10))
      const next = nextOccurrencesOf(this.state, req.params.id, Date.now(), count)
      if (!next) return reply.code(404).send({ error: `no job ${req.params.id}` })
      return { items: next.map((o) => ({ ...o, at: new Date(o.at).toISOString() })) }
    })
    app.get('/v1/exceptions', async () => ({ items: [...this.state.globals.values()] }))
    app.post('/v1/exceptions', async (req, reply) => {
      let body: { id?: unknown; rrule?: unknown; duration?: unknown }
      try { body = JSON.parse(String(req.body ?? '')) as typeof body } catch { return reply.code(400).send({ error: 'body: expected JSON {"id", "rrule", "duration"}' }) }
      if (typeof body.id !== 'string' || !/^[A-Za-z0-9._:@-]{1,128}$/.test(body.id)) return reply.code(400).send({ error: 'id: expected 1 to 128 letters, digits or . _ : @ -' })
      if (typeof body.rrule !== 'string') return reply.code(400).send({ error: 'rrule: expected a rule such as "RRULE:FREQ=WEEKLY;BYDAY=SA"' })
      if (!Number.isInteger(body.duration) || (body.duration as number) < 1) return reply.code(400).send({ error: 'duration: expected a whole number of minutes, at least 1' })
      return sendAdmin(reply, await this.admin((requestId) => ({ type: 'add_exception', requestId, exception: { id: body.id as string, rrule: body.rrule as string, duration: body.duration as number } })))
    })
    app.delete<{ Params: { id: string } }>('/v1/exceptions/:id', async (req, reply) => sendAdmin(reply, await this.admin((requestId) => ({ type: 'remove_exception', requestId, id: req.params.id }))))
    app.get<{ Params: { id: string } }>('/v1/jobs/:id', async (req, reply) => {
      const job = this.state.jobs.get(req.params.id)
      if (!job) return reply.code(404).send({ error: `no job ${req.params.id}` })
      return { ...jobSummary(job), template: job.template, instanceIds: job.instanceIds }
    })
    app.get<{ Params: { id: string } }>('/v1/instances/:id', async (req, reply) => {
      const inst = this.state.instances.get(req.params.id)
      if (!inst) return reply.code(404).send({ error: `no instance ${req.params.id}` })
      return instanceSummary(this.state, inst)
    })
    app.get<{ Params: { id: string } }>('/v1/instances/:id/runs', async (req, reply) => {
      const inst = this.state.instances.get(req.params.id)
      if (!inst) return reply.code(404).send({ error: `no instance ${req.params.id}` })
      return { items: instanceReport(this.state, inst).runs }
    })
    app.get<{ Params: { id: string } }>('/v1/runs/:id', async (req, reply) => {
      const run = this.state.runs.get(req.params.id)
      if (!run) return reply.code(404).send({ error: `no run ${req.params.id}` })
      return runReport(run)
    })
    app.get<{ Params: { id: string } }>('/v1/runs/:id/artifacts', async (req, reply) => {
      const run = this.state.runs.get(req.params.id)
      if (!run) return reply.code(404).send({ error: `no run ${req.params.id}` })
      return { items: run.steps.flatMap((s) => (s.artifacts ?? []).map((a) => ({ step: s.number, name: a.name, encoding: a.encoding, bytes: a.bytes, truncated: a.truncated }))) }
    })
    app.get<{ Params: { id: string; step: string; name: string } }>('/v1/runs/:id/steps/:step/artifacts/:name', async (req, reply) => {
      const run = this.state.runs.get(req.params.id)
      const a = run?.steps.find((s) => s.number === Number(req.params.step))?.artifacts?.find((x) => x.name === req.params.name)
      if (!a) return reply.code(404).send({ error: `no artifact ${req.params.name} on step ${req.params.step} of run ${req.params.id}` })
      return reply.header('x-chorus-truncated', String(a.truncated)).type(a.encoding === 'utf8' ? 'text/plain; charset=utf-8' : 'application/octet-stream').send(a.encoding === 'utf8' ? a.content : Buffer.from(a.content, 'base64'))
    })
    app.get<{ Params: { id: string } }>('/v1/reports/:id', async (req, reply) => {
      const report = buildReport(this.state, req.params.id)
      if (!report) return reply.code(404).send({ error: `no job or instance ${req.params.id}` })
      return report
    })
    app.get<{ Querystring: { search?: string } }>('/v1/nodes', async (req, reply) => {
      let nodes = [...this.state.nodes.values()]
      if (req.query.search) {
        const sel = selectNodes(this.state, { query: req.query.search }, 'search')
        if ('problems' in sel) return reply.code(400).send({ error: sel.problems.map((p) => p.message).join('; ') })
        const keep = new Set(sel.nodes)
        nodes = nodes.filter((n) => keep.has(n.nodeId))
      }
      return {
        items: nodes.map((n) => ({
          nodeId: n.nodeId, alive: this.state.connected.has(n.nodeId), peerId: n.peerId, publicKey: n.publicKey, facts: n.facts, skills: n.skills,
          agentVersion: n.agentVersion, addrs: n.addrs, firstSeenAt: new Date(n.firstSeenAt).toISOString(), lastSeenAt: new Date(n.lastSeenAt).toISOString(),
        })),
      }
    })
    app.post('/v1/plan', async (req, reply) => {
      const ct = String(req.headers['content-type'] ?? 'application/json')
      const parsed = parseTemplateText(typeof req.body === 'string' ? req.body : '', /yaml/.test(ct) ? 'yaml' : /toml/.test(ct) ? 'toml' : 'json')
      if (!parsed.ok) return reply.code(400).send({ error: 'invalid job template', problems: parsed.problems })
      const plan = planJob(this.state, parsed.template, Date.now())
      if (!plan.ok) return reply.code(422).send({ error: 'job cannot be targeted', problems: plan.problems })
      return plan.plan
    })
    const savedBody = (req: { body: unknown }): Record<string, unknown> | undefined => {
      try { const b = JSON.parse(String(req.body ?? '')) as unknown; return typeof b === 'object' && b !== null ? (b as Record<string, unknown>) : undefined } catch { return undefined }
    }
    const idOk = (id: unknown): id is string => typeof id === 'string' && /^[A-Za-z0-9._:@-]{1,128}$/.test(id)
    app.get('/v1/lists', async () => ({ items: [...this.state.lists.values()] }))
    app.put<{ Params: { id: string } }>('/v1/lists/:id', async (req, reply) => {
      const b = savedBody(req)
      if (!idOk(req.params.id)) return reply.code(400).send({ error: 'id: expected 1 to 128 letters, digits or . _ : @ -' })
      if (!b || !Array.isArray(b.nodes) || b.nodes.some((n) => typeof n !== 'string')) return reply.code(400).send({ error: 'body: expected {"name": "...", "nodes": ["node-id", ...]}' })
      return sendAdmin(reply, await this.admin((requestId) => ({ type: 'save_list', requestId, list: { id: req.params.id, name: typeof b.name === 'string' ? b.name : req.params.id, nodes: [...new Set(b.nodes as string[])] } })))
    })
    app.get('/v1/filters', async () => ({ items: [...this.state.filters.values()] }))
    app.put<{ Params: { id: string } }>('/v1/filters/:id', async (req, reply) => {
      const b = savedBody(req)
      if (!idOk(req.params.id)) return reply.code(400).send({ error: 'id: expected 1 to 128 letters, digits or . _ : @ -' })
      if (!b || (b.query === undefined && b.constraints === undefined)) return reply.code(400).send({ error: 'body: expected {"name", "query": "role:web AND env:prod"} and/or {"constraints": {"attributes": [...], "skills": [...]}}' })
      const filter = { id: req.params.id, name: typeof b.name === 'string' ? b.name : req.params.id, ...(b.query !== undefined ? { query: String(b.query) } : {}), ...(b.constraints !== undefined ? { constraints: b.constraints as never } : {}) }
      return sendAdmin(reply, await this.admin((requestId) => ({ type: 'save_filter', requestId, filter })))
    })
    registerMemberRoutes(app, {
      state: () => this.state,
      admin: (make) => this.admin(make),
      onRevoked: (peerId) => void this.net.hangUp(peerId),
    })
    for (const kind of ['list', 'filter'] as const) {
      app.delete<{ Params: { id: string } }>(`/v1/${kind}s/:id`, async (req, reply) => sendAdmin(reply, await this.admin((requestId) => ({ type: 'delete_saved', requestId, kind, id: req.params.id }))))
    }
    return app
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.ticker) clearInterval(this.ticker)
    await this.loop?.close()
    await this.http?.close()
    await this.net?.stop()
    await this.db?.close()
  }
}
