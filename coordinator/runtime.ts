// The coordinator runtime: libp2p (publishes jobs, answers agents' rpc), level (every record),
// the HTTP API (coordinator/http.ts; https beyond loopback), the first admin token, and a
// ticker. Decisions live in the coordinator core.
import { randomUUID } from 'node:crypto'
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Level } from 'level'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { Identity } from '../protocol/keys.js'
import { loadOrCreateIdentity } from '../runtime/identity.js'
import { PROTOCOL_VERSION, TOPIC_JOBS, TOPIC_PROGRESS, decodeEnvelope, encodeEnvelope, seal } from '../protocol/wire.js'
import type { JobTemplate } from '../protocol/template.js'
import { CoordinatorOptionsSchema, check, problemsText } from '../protocol/api.js'
import { createNet, type Net } from '../net/libp2p.js'
import { CoreLoop } from '../runtime/loop.js'
import { WarnLimiter, reportDropped } from '../protocol/loglimit.js'
import { subscribeEnvelopes } from '../protocol/transport.js'
import {
  AUDIT_PREFIX, DEFAULT_COORDINATOR_TIMING, IDX, auditKeyFrom, coordinatorStep, idOfIndexKey, recordKey, restoreCoordinator,
  type Actor, type AuditRecord, type CoordinatorConfig, type CoordinatorEffect, type CoordinatorEvent, type CoordinatorState, type InstanceRecord, type RequestEvent, type RunRecord, type SubmitOutcome,
} from './core.js'
import { LevelStore, type Store } from './store.js'
import { History, loadLive } from './history.js'
import { migrateHistory } from './migrate.js'
import { allowedHosts, hashToken, newToken } from './access.js'
import { EventLog } from './events.js'
import { CoordinatorMetrics, rpcTypeOf } from './metrics.js'
import { buildApi, type AdminOutcome, type ApiHost } from './http.js'
import { MEMBER_DEADLINE_MS } from '../protocol/membership.js'
import { peerIdOf } from '../protocol/keys.js'

import { COORDINATOR_TICK_MS, MAX_PENDING_REQUESTS, RETRY_AFTER_MIN_MS, RETRY_AFTER_SPREAD_MS } from '../protocol/timing.js'
export { COORDINATOR_TICK_MS, MAX_PENDING_REQUESTS, RETRY_AFTER_MIN_MS, RETRY_AFTER_SPREAD_MS }
export const DEFAULT_LISTEN = '/ip4/127.0.0.1/tcp/7700'
export const DEFAULT_API = '127.0.0.1:7070'
/**
 * The longest a hello's reply waits for gossip to reach the peer on the job topic, in ms: half
 * the agent's RPC_TIMEOUT_MS, so the wait does not time its hello out (at 10 s, 1,000 agents
 * reconnecting sent 1.47 hellos each; at 3 s some were still unreachable by gossip when answered).
 */
export const HELLO_GOSSIP_WAIT_MS = 5_000
/** The first key after every audit record. */
const AUDIT_END = `${AUDIT_PREFIX.slice(0, -1)}0`

/** Days finished history (instances, runs with their artifacts, audit records) is kept by default (`--retain-days`). */
export const DEFAULT_RETAIN_DAYS = 30
export const DAY_MS = 86_400_000
/** Finished instances one prune batch deletes at most (with their runs, up to PRUNE_BATCH_RUNS), and audit records. */
export const PRUNE_BATCH_INSTANCES = 200
export const PRUNE_BATCH_RUNS = 20_000
export const PRUNE_BATCH_AUDIT = 5_000
/** How often the pruner looks for history past the retention, in ms. */
export const PRUNE_INTERVAL_MS = 10 * 60_000

export interface CoordinatorOptions {
  dataDir: string
  listen?: string[]
  /** HOST:PORT of the HTTP API; beyond loopback only with tlsCert and tlsKey. */
  api?: string
  /** More names clients may use in the Host header (`--api-host NAME[:PORT]`). */
  apiHosts?: string[]
  /** PEM files: the API serves https. */
  tlsCert?: string
  tlsKey?: string
  logger: Logger
  /** Called when continuing would be unsafe (default: exit with code 70). */
  onFatal?: (err: unknown) => void
  /** Enrolments wait for `chorus nodes approve` (as salt-key). */
  requireApproval?: boolean
  /** Finished history older than this many days is pruned (default DEFAULT_RETAIN_DAYS). */
  retainDays?: number
  /** Instances per prune batch (default PRUNE_BATCH_INSTANCES; tests make it small). */
  pruneBatch?: number
  /** ms between prune rounds (default PRUNE_INTERVAL_MS); 0: only when pruneNow() is called. */
  pruneIntervalMs?: number
}

export interface Endpoints {
  peerId: string
  publicKey: string
  multiaddrs: string[]
  api: string
  /** The API's base URL, with its scheme. */
  apiUrl: string
  pid: number
}

/** The first admin token is written here (mode 0600) on the coordinator's first start. */
export const ADMIN_TOKEN_FILE = 'admin.token'

export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(text)
  if (!m) throw new Error(`expected HOST:PORT, e.g. 127.0.0.1:7070; got "${text}"`)
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) }
}

/** A store another process holds: "another coordinator (pid N) holds DIR"; other errors as they are. */
async function lockedError(err: Error & { cause?: { code?: string } }, dataDir: string): Promise<Error> {
  if (err.cause?.code !== 'LEVEL_LOCKED') return err
  const pid = await readFile(join(dataDir, 'endpoints.json'), 'utf8').then((t) => (JSON.parse(t) as { pid?: number }).pid, () => undefined)
  return new Error(`another coordinator (pid ${pid ?? 'unknown'}) holds ${dataDir}: stop it first, or give another --data`)
}

export class CoordinatorRuntime implements ApiHost {
  state!: CoordinatorState
  /** Live progress events, derived from every core step (coordinator/events.ts). */
  readonly events = new EventLog()
  readonly metrics = new CoordinatorMetrics(this)
  hosts = new Set<string>()
  scheme: 'http' | 'https' = 'http'
  private config!: CoordinatorConfig
  private db!: Level<string, unknown>
  private store!: Store
  history!: History
  private pruner?: NodeJS.Timeout
  private retainDays = DEFAULT_RETAIN_DAYS
  private pruning?: Promise<PruneStats>
  /** Restore figures: records loaded, ms (bench history reads them from the log). */
  restored = { records: 0, liveInstances: 0, ms: 0 }
  private net!: Net
  private identity!: Identity
  private http!: FastifyInstance
  private loop!: CoreLoop<CoordinatorEvent, CoordinatorEffect>
  private ticker?: NodeJS.Timeout
  private readonly pending = new Map<string, (value: unknown) => void>()
  private stopped = false
  /** Warn lines (refusals) are bounded per message text (protocol/loglimit.ts). */
  private readonly warns = new WarnLimiter()
  endpoints!: Endpoints

  constructor(private readonly opts: CoordinatorOptions) {}

  get logger(): Logger {
    return this.opts.logger
  }

  async start(): Promise<Endpoints> {
    const options = check(CoordinatorOptionsSchema, { ...this.opts, logger: undefined, onFatal: undefined }, 'options')
    if (!options.ok) throw new Error(problemsText(options.problems))
    const o = options.value
    this.retainDays = o.retainDays
    await mkdir(this.opts.dataDir, { recursive: true })
    this.identity = (await loadOrCreateIdentity(this.opts.dataDir)).identity
    this.config = { identity: this.identity, ...DEFAULT_COORDINATOR_TIMING, dropFinished: true, ...(this.opts.requireApproval ? { requireApproval: true } : {}) }
    this.db = new Level<string, unknown>(join(this.opts.dataDir, 'db'), { valueEncoding: 'json' })
    await this.db.open().catch(async (err: Error & { cause?: { code?: string } }) => { throw await lockedError(err, this.opts.dataDir) })
    this.store = new LevelStore(this.db)
    const t0 = performance.now()
    await migrateHistory(this.store, this.opts.logger)
    const records = await loadLive(this.store)
    this.state = restoreCoordinator(records)
    this.restored = { records: records.length, liveInstances: this.state.instances.size, ms: Math.round(performance.now() - t0) }
    this.history = new History(this.store, () => this.state)
    this.events.trackLive(this.state)
    this.loop = new CoreLoop<CoordinatorEvent, CoordinatorEffect>({
      step: (event, now) => {
        const effects = coordinatorStep(this.state, this.config, event, now)
        for (const e of this.events.observe(this.state, effects, now)) if (e.type === 'run_finished' && e.status) this.metrics.runsFinished.inc({ status: e.status })
        return effects
      },
      commit: (ops) => {
        this.metrics.commits.observe(ops.length)
        return this.store.batch(ops)
      },
      execute: (effect) => this.execute(effect),
      now: () => Date.now(),
      onError: (err) => {
        this.opts.logger.fatal({ err }, 'coordinator cannot continue safely; exiting (state is restored from the store on restart)')
        ;(this.opts.onFatal ?? (() => process.exit(70)))(err)
      },
    })
    await this.createAdminTokenOnFirstStart()

    this.net = await createNet({
      seed: this.identity.seed, listen: this.opts.listen ?? [DEFAULT_LISTEN], fastLiveness: true, identifyOnConnect: false,
      isMember: (peerId) => this.isMember(peerId), isDenied: (peerId) => this.revokedPeers().has(peerId),
      onLivenessDrop: (peerId, why) => { if (this.warns.allow('dropped a connection that did not answer pings', Date.now())) this.opts.logger.warn({ peerId, why }, 'dropped a connection that did not answer pings') },
    })
    this.net.node.addEventListener('peer:connect', (evt) => {
      const peerId = evt.detail.toString()
      if (!this.isMember(peerId)) this.enrolOrLeave(peerId)
      void this.dispatch({ type: 'link', peerId, up: true })
    })
    this.net.node.addEventListener('peer:disconnect', (evt) => void this.dispatch({ type: 'link', peerId: evt.detail.toString(), up: false }))
    subscribeEnvelopes(this.net, TOPIC_PROGRESS, (envelope) => {
      this.metrics.gossip.inc({ direction: 'in' })
      void this.dispatch({ type: 'progress', envelope })
    })
    await this.net.handleRpc(async (data, from) => {
      const envelope = decodeEnvelope(data)
      const wasMember = this.isMember(from)
      const type = rpcTypeOf((envelope as { body?: string }).body)
      this.metrics.rpc.inc({ type })
      const ingested = type === 'result' ? this.metrics.ingest.startTimer() : undefined
      // Shed load with an answer, not a timeout: the agent pauses (jittered, so a fleet does not come back at once).
      if (this.pending.size >= MAX_PENDING_REQUESTS) return this.overloaded()
      const history = type === 'result' ? await this.storedRunOf(envelope) : undefined
      const reply = await this.request<Uint8Array>((requestId) => ({ type: 'rpc', requestId, envelope, peerId: from, ...(history ? { history } : {}) }))
      ingested?.()
      // A hello that enrolled this peer: gossip reaches it from now on, not after the next heartbeat.
      if (!wasMember && this.isMember(from)) this.net.refreshPeer(from)
      // The agent syncs once this reply arrives, and is sent later jobs by gossip only. Until
      // gossip has heard it subscribe and opened its own stream to it (a burst of connections
      // after a restart takes seconds), a publish skips it, and the job would reach it only at
      // its periodic sync, a minute later: the reply waits for that (bounded).
      if (type === 'hello' && this.isMember(from)) await this.net.whenGossipReaches(from, TOPIC_JOBS, HELLO_GOSSIP_WAIT_MS)
      return reply
    })

    const tls = o.tlsCert && o.tlsKey ? { cert: await readFile(o.tlsCert), key: await readFile(o.tlsKey) } : undefined
    this.scheme = tls ? 'https' : 'http'
    this.http = buildApi(this, tls)
    const { host, port } = parseHostPort(o.api)
    await this.http.listen({ host, port })
    const addr = this.http.server.address()
    const bound = typeof addr === 'object' && addr ? addr.port : port
    this.hosts = allowedHosts(host, bound, o.apiHosts)
    const api = `${host.includes(':') ? `[${host}]` : host}:${bound}`
    this.endpoints = { peerId: this.net.peerId, publicKey: this.identity.publicKey, multiaddrs: this.net.addresses(), api, apiUrl: `${this.scheme}://${api}`, pid: process.pid }
    const file = join(this.opts.dataDir, 'endpoints.json')
    await writeFile(`${file}.tmp`, JSON.stringify(this.endpoints, null, 2) + '\n')
    await rename(`${file}.tmp`, file)
    this.ticker = setInterval(() => {
      reportDropped(this.warns, (fields, msg) => this.opts.logger.warn(fields, msg), Date.now())
      void this.dispatch({ type: 'tick' })
    }, COORDINATOR_TICK_MS)
    const every = this.opts.pruneIntervalMs ?? PRUNE_INTERVAL_MS
    if (every > 0) {
      this.pruner = setInterval(() => void this.pruneNow().catch((err: Error) => this.opts.logger.warn({ err: err.message }, 'pruning failed; the next round tries again')), every)
      this.pruner.unref()
    }
    this.opts.logger.info({ ...this.endpoints, jobs: this.state.jobs.size, nodes: this.state.nodes.size, liveInstances: this.restored.liveInstances, restoreMs: this.restored.ms }, 'coordinator started')
    return this.endpoints
  }

  /**
   * A result for a run not in memory, of a job that is: the run and its instance as the store
   * holds them (a finished instance's), handed to the core with the result. The body is read
   * only for its ids here; the core verifies the envelope.
   */
  private async storedRunOf(envelope: unknown): Promise<{ run?: RunRecord; instance?: InstanceRecord } | undefined> {
    let body: { runId?: unknown; instanceId?: unknown; jobId?: unknown }
    try {
      body = JSON.parse(String((envelope as { body?: unknown }).body)) as typeof body
    } catch {
      return undefined
    }
    const { runId, instanceId, jobId } = body ?? {}
    const ok = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 256
    if (!ok(runId) || !ok(instanceId) || !ok(jobId) || this.state.runs.has(runId) || this.state.instances.has(instanceId) || !this.state.jobs.has(jobId)) return undefined
    const [run, instance] = await this.store.getMany([recordKey.run(runId), recordKey.instance(instanceId)]) as [RunRecord | undefined, InstanceRecord | undefined]
    return { ...(run ? { run } : {}), ...(instance ? { instance } : {}) }
  }

  /**
   * One retention round: finished instances created before now − retainDays, and audit records
   * older than that, deleted through the core in batches (PRUNE_BATCH_INSTANCES), yielding to
   * the event loop between batches. A live instance is never pruned (the core checks it too).
   */
  pruneNow(now = Date.now()): Promise<PruneStats> {
    this.pruning ??= this.pruneRound(now).finally(() => { this.pruning = undefined })
    return this.pruning
  }

  private async pruneRound(now: number): Promise<PruneStats> {
    const cutoff = now - this.retainDays * DAY_MS
    const stats: PruneStats = { instances: 0, auditRecords: 0, batches: 0 }
    let after: string | undefined
    for (;;) {
      if (this.stopped) return stats
      const keys: string[] = []
      for await (const k of this.store.keys({ prefix: IDX.allPrefix, ...(after ? { gt: after } : {}), lt: IDX.all(cutoff, ''), limit: this.opts.pruneBatch ?? PRUNE_BATCH_INSTANCES })) keys.push(k)
      if (keys.length === 0) break
      after = keys.at(-1)
      const items = await this.prunable(keys.map(idOfIndexKey), cutoff)
      if (items.length > 0) {
        await this.dispatch({ type: 'prune', items, auditKeys: [] })
        stats.instances += items.length
        stats.batches++
      }
      await new Promise((r) => setImmediate(r))
    }
    for (;;) {
      if (this.stopped) return stats
      const auditKeys: string[] = []
      for await (const k of this.store.keys({ gte: AUDIT_PREFIX, lt: auditKeyFrom(cutoff), limit: PRUNE_BATCH_AUDIT })) auditKeys.push(k)
      if (auditKeys.length === 0) break
      await this.dispatch({ type: 'prune', items: [], auditKeys })
      stats.auditRecords += auditKeys.length
      stats.batches++
      await new Promise((r) => setImmediate(r))
    }
    if (stats.batches > 0) this.opts.logger.info({ ...stats, retainDays: this.retainDays }, 'pruned history past the retention')
    return stats
  }

  /** Finished instances of these ids (updated before the cutoff) with their runs' node ids, up to PRUNE_BATCH_RUNS runs. */
  private async prunable(ids: string[], cutoff: number): Promise<{ instance: InstanceRecord; runs: { runId: string; nodeId: string }[] }[]> {
    const out: { instance: InstanceRecord; runs: { runId: string; nodeId: string }[] }[] = []
    let runs = 0
    for (const v of await this.store.getMany(ids.map(recordKey.instance))) {
      const instance = v as InstanceRecord | undefined
      if (!instance || instance.status === 'running' || this.state.live.has(instance.id) || instance.updatedAt >= cutoff) continue
      if (runs > 0 && runs + instance.runIds.length > PRUNE_BATCH_RUNS) break
      runs += instance.runIds.length
      out.push({ instance, runs: await this.runNodes(instance) })
    }
    return out
  }

  private async runNodes(instance: InstanceRecord): Promise<{ runId: string; nodeId: string }[]> {
    const values = await this.store.getMany(instance.runIds.map(recordKey.run))
    return values.filter((r): r is RunRecord => r !== undefined).map((r) => ({ runId: r.runId, nodeId: r.nodeId }))
  }

  /** A deleted job's history, pruned in batches after the deletion (its live state went with it). */
  private async purgeJob(jobId: string): Promise<void> {
    for (;;) {
      if (this.stopped || this.state.jobs.has(jobId)) return
      const keys: string[] = []
      for await (const k of this.store.keys({ prefix: IDX.jobPrefix(jobId), limit: this.opts.pruneBatch ?? PRUNE_BATCH_INSTANCES })) keys.push(k)
      if (keys.length === 0) return
      const values = await this.store.getMany(keys.map((k) => recordKey.instance(idOfIndexKey(k))))
      const items: { instance: InstanceRecord; runs: { runId: string; nodeId: string }[] }[] = []
      const orphans: string[] = []
      for (const [i, v] of values.entries()) {
        const instance = v as InstanceRecord | undefined
        if (instance) items.push({ instance, runs: await this.runNodes(instance) })
        else orphans.push(keys[i]!)
      }
      if (orphans.length > 0) await this.store.batch(orphans.map((key) => ({ type: 'del' as const, key })))
      if (items.length > 0) await this.dispatch({ type: 'prune', items, auditKeys: [] })
      await new Promise((r) => setImmediate(r))
    }
  }

  /** Events waiting for the core loop. */
  queued(): number {
    return this.loop?.queued() ?? 0
  }

  metricsText(): Promise<string> {
    return this.metrics.text()
  }

  /** A signed "retry after" answer: RETRY_AFTER_MIN_MS plus up to RETRY_AFTER_SPREAD_MS at random. */
  private overloaded(): Uint8Array {
    const retryAfterMs = RETRY_AFTER_MIN_MS + Math.floor(Math.random() * RETRY_AFTER_SPREAD_MS)
    return encodeEnvelope(seal(this.identity, { type: 'reply', v: PROTOCOL_VERSION, ok: false, error: `coordinator overloaded (${MAX_PENDING_REQUESTS} requests waiting); retry in ${retryAfterMs} ms`, retryAfterMs }))
  }

  /** Closes a peer's connections (a revoked node). */
  hangUp(peerId: string): void {
    void this.net.hangUp(peerId)
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
        this.metrics.gossip.inc({ direction: 'out' })
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
        if (e.level !== 'warn' || this.warns.allow(e.msg, Date.now())) this.opts.logger[e.level](e.fields ?? {}, e.msg)
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

  /** A state change an operator asked for (audited with its actor). */
  async change(event: Parameters<ApiHost['change']>[0], actor: Actor | undefined): Promise<AdminOutcome> {
    const outcome = await this.request<AdminOutcome>((requestId) => ({ ...event, requestId, ...(actor ? { actor } : {}) }) as RequestEvent)
    if (outcome.ok && event.type === 'delete_job') void this.purgeJob(event.jobId).catch((err: Error) => this.opts.logger.warn({ err: err.message, jobId: event.jobId }, 'pruning a deleted job\'s history failed; retention removes it later'))
    return outcome
  }

  submit(template: JobTemplate, actor?: Actor): Promise<SubmitOutcome> {
    return this.request<SubmitOutcome>((requestId) => ({ type: 'submit', requestId, jobId: randomUUID(), template, ...(actor ? { actor } : {}) }))
  }

  /** Up to `limit` audit records from `since` (ms) on, oldest first, read from the store. */
  async audit(since: number, limit: number): Promise<AuditRecord[]> {
    const out: AuditRecord[] = []
    for await (const [, value] of this.store.scan({ gte: auditKeyFrom(since), lt: AUDIT_END, limit })) out.push(value as AuditRecord)
    return out
  }

  /** The first start (no token yet): an admin token, written to DATA/admin.token (0600) before it is stored. */
  private async createAdminTokenOnFirstStart(): Promise<void> {
    if (this.state.tokens.size > 0) return
    const token = newToken()
    const file = join(this.opts.dataDir, ADMIN_TOKEN_FILE)
    await rm(`${file}.tmp`, { force: true })
    await writeFile(`${file}.tmp`, `${token}\n`, { mode: 0o600 })
    await chmod(`${file}.tmp`, 0o600)
    await rename(`${file}.tmp`, file)
    const outcome = await this.change({ type: 'create_token', token: { name: 'admin', role: 'admin', hash: hashToken(token), createdAt: Date.now() } }, { name: 'coordinator', role: 'admin' })
    if (!outcome.ok) throw new Error(`cannot create the admin token: ${outcome.error}`)
    this.opts.logger.info({ file }, 'created the admin token (name "admin") on first start; it is in this file, readable only by this user')
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.ticker) clearInterval(this.ticker)
    if (this.pruner) clearInterval(this.pruner)
    await this.pruning?.catch(() => undefined)
    await this.loop?.close()
    await this.http?.close()
    await this.net?.stop()
    await this.store?.close()
  }
}

export interface PruneStats {
  instances: number
  auditRecords: number
  batches: number
}
