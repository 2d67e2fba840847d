// The agent runtime: carries out the agent core's effects with libp2p, level, child
// processes and real timers, and feeds the core events. All decisions live in the core.
import { hostname, cpus, totalmem, networkInterfaces, type as osType, platform, arch, release } from 'node:os'
import { mkdir, open as openFile, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Level } from 'level'
import type { AbstractLevel } from 'abstract-level'
import type { Logger } from 'pino'
import type { Identity } from '../protocol/keys.js'
import { loadOrCreateIdentity } from '../runtime/identity.js'
import { AgentConfigSchema, check, parseJsonText, problemsText } from '../protocol/api.js'
import { FactsSchema, TOPIC_JOBS, TOPIC_PROGRESS, decodeEnvelope, encodeEnvelope, MAX_STEP_OUTPUT_CHARS } from '../protocol/wire.js'
import { createNet, linkTransport, peerIdForPublicKey, type Net } from '../net/libp2p.js'
import { CoreLoop } from '../runtime/loop.js'
import { WarnLimiter, reportDropped } from '../protocol/loglimit.js'
import { MEMBER_DEADLINE_MS, checkMember } from '../protocol/membership.js'
import { peerIdOf } from '../protocol/keys.js'
import { subscribeEnvelopes } from '../protocol/transport.js'
import { BUILTIN_INTERPRETER_NAMES, builtinInterpreters, findInterpreter } from '../interpreters/registry.js'
import { discoverExternalInterpreters, type ExternalInterpreterConfig } from '../interpreters/external.js'
import { limitSupport } from '../interpreters/limits.js'
import { restartModeFrom, type RestartMode } from '../interpreters/restart.js'
import type { Interpreter } from '../interpreters/types.js'
import { ALLOW_EVERYTHING, DEFAULT_ALLOWLIST, parseAllowlist, type AllowlistConfig } from './allowlist.js'
import {
  BUILTIN_SKILL_VERSION, DEFAULT_AGENT_TIMING, agentStep, restoreAgent, type AgentConfig, type AgentEffect, type AgentEvent, type AgentState, type Os,
} from './core.js'

import { RepeatedWarning, dialFailure } from './warnings.js'
import type { AgentMetrics } from './metrics.js'
import type { Server } from 'node:http'
import { AGENT_TICK_MS, AGENT_VERSION, REDIAL_MAX_MS, REDIAL_MIN_MS, RPC_TIMEOUT_MS, jitteredMs } from '../protocol/timing.js'
import { AgentShell, MAX_KNOWN_PEERS, PEER_SYNC_FANOUT } from './shell.js'
export { AGENT_TICK_MS, AGENT_VERSION, REDIAL_MAX_MS, REDIAL_MIN_MS, RPC_TIMEOUT_MS, MAX_KNOWN_PEERS, PEER_SYNC_FANOUT }
/** Bytes read from each file named by a `file` output rule. */
export const MAX_OUTPUT_FILE_BYTES = 16 * 1024
/** How long a simulated reboot (restart interpreter in simulate mode) keeps the run waiting. */
export const SIMULATED_REBOOT_MS = 1_000

/**
 * Agent configuration file (`chorus agent --config FILE`, JSON). Every field is optional.
 * - allow: the allowlist, `{ "interpreters": [{ "name": "...", "commands": ["exact", "/regex/"] | "any" }] }`
 *   (default: agent/allowlist.ts DEFAULT_ALLOWLIST, read-only commands only), or the string "any".
 * - interpreters: external interpreters, `[{ "name", "path", "version" }]` (see interpreters/external.ts).
 * - attributes: custom attributes advertised to the coordinator (tags, roles, environment, ...).
 * - restartMode: "real" (default) or "simulate" for the restart interpreter.
 */
export interface AgentFileConfig {
  allow?: AllowlistConfig | 'any'
  interpreters?: ExternalInterpreterConfig[]
  attributes?: Record<string, string>
  restartMode?: RestartMode
}

export async function loadAgentConfig(file: string): Promise<AgentFileConfig> {
  const json = parseJsonText(await readFile(file, 'utf8'), '$')
  const checked = json.ok ? check(AgentConfigSchema, json.value, '') : json
  if (!checked.ok) throw new Error(`${file}: ${problemsText(checked.problems)}`)
  const { allow, ...rest } = checked.value
  const out: AgentFileConfig = { ...rest }
  if (allow === 'any') out.allow = 'any'
  else if (allow !== undefined) {
    const parsed = parseAllowlist(allow)
    if ('errors' in parsed) throw new Error(`${file}: allow: ${parsed.errors.join('; ')}`)
    out.allow = parsed
  }
  return out
}

export interface AgentOptions {
  dataDir: string
  join: string
  coordinatorKey: string
  nodeId?: string
  listen?: string[]
  attributes?: Record<string, string>
  /** From the config file; defaults as documented on AgentFileConfig. */
  fileConfig?: AgentFileConfig
  logger: Logger
  /** Called when continuing would be unsafe (default: exit with code 70). */
  onFatal?: (err: unknown) => void
  /** Presented on the first hello, until the coordinator has enrolled this node (chorus enroll create). */
  enrollToken?: string
  /** Loopback HOST:PORT to serve Prometheus metrics on (agent/metrics.ts). */
  metrics?: string
  /** The store (default: a level database in DATA/db); `chorus bench fleet` passes a memory-level one. */
  store?: AbstractLevel<string | Buffer | Uint8Array, string, unknown>
  /** The interpreters, replacing the built-in ones (`chorus bench fleet` passes a no-op one). */
  interpreters?: Map<string, Interpreter>
}

/** Peers (other agents) whose certificates this agent checked and holds at once. */
export const MAX_VERIFIED_PEERS = 256

export function nodeFacts(attributes: Record<string, string> = {}): Record<string, string> {
  let primaryIp = ''
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (!primaryIp && a.family === 'IPv4' && !a.internal) primaryIp = a.address
    }
  }
  return {
    hostname: hostname(),
    kernel_name: osType(),
    kernel_release: release(),
    os: platform(),
    arch: arch(),
    primary_ip: primaryIp || '127.0.0.1',
    cpus: String(cpus().length),
    memory: String(totalmem()),
    ...attributes,
  }
}

function currentOs(): Os {
  const p = platform()
  return p === 'darwin' ? 'darwin' : p === 'win32' ? 'windows' : 'linux'
}

async function resolveNodeId(dataDir: string, given?: string): Promise<string> {
  const file = join(dataDir, 'node-id')
  let stored: string | undefined
  try { stored = (await readFile(file, 'utf8')).trim() } catch { /* first start */ }
  if (given && stored && given !== stored) throw new Error(`--node-id ${given} differs from the id ${stored} this data directory was created with (${file}); use another --data directory`)
  const id = given ?? stored ?? hostname()
  if (!stored) await writeFile(file, id + '\n')
  return id
}

export class AgentRuntime {
  private state!: AgentState
  private config!: AgentConfig
  private db!: AbstractLevel<string | Buffer | Uint8Array, string, unknown>
  private net!: Net
  private identity!: Identity
  private coordinatorPeer = ''
  private joinAddr = ''
  private loop!: CoreLoop<AgentEvent, AgentEffect>
  private ticker?: NodeJS.Timeout
  private warnings!: RepeatedWarning
  private metrics?: AgentMetrics
  private metricsServer?: Server
  private readonly aborter = new AbortController()
  private interpreters = new Map<string, Interpreter>()
  private simulateReboots = false
  /** Redial, hello, send gating and peer sync around the core (agent/shell.ts, shared with the simulator). */
  private shell!: AgentShell
  private stopped = false
  /** Warn lines (refusals) are bounded per message text (protocol/loglimit.ts). */
  private readonly warns = new WarnLimiter()
  /** Other agents that showed a valid membership certificate on this connection: peer id → node id and key. */
  private readonly verified = new Map<string, { nodeId: string; key: string; expiresAt: number }>()
  nodeId = ''

  /** Whether the coordinator admitted this agent on the current connection, and when a sync last succeeded (ms, 0 = never). */
  get link(): { connected: boolean; lastSyncOkAt: number; peerRounds: number; failures: number; busyFailures: number } {
    const c = this.shell?.counts ?? { peerRounds: 0, failures: 0, busyFailures: 0 }
    return { connected: this.shell?.connected ?? false, lastSyncOkAt: this.state?.sync.lastOkAt ?? 0, ...c }
  }

  constructor(private readonly opts: AgentOptions) {}

  async start(): Promise<void> {
    await mkdir(this.opts.dataDir, { recursive: true })
    this.identity = (await loadOrCreateIdentity(this.opts.dataDir)).identity
    // Scratch directories of attempts a crash interrupted (those attempts are never resumed).
    await rm(join(this.opts.dataDir, 'work'), { recursive: true, force: true })
    this.nodeId = await resolveNodeId(this.opts.dataDir, this.opts.nodeId)
    // Every line this agent logs names it.
    this.opts.logger = this.opts.logger.child({ nodeId: this.nodeId })
    const log = this.opts.logger
    // The coordinator refuses a hello whose facts exceed the bounds: say so now, not at every redial.
    const facts = FactsSchema.safeParse(nodeFacts(this.opts.attributes))
    if (!facts.success) throw new Error(`attributes: ${facts.error.issues[0]?.message ?? 'invalid'} (--attr and the config file's attributes, with the ${Object.keys(nodeFacts()).length} facts the agent reports)`)
    const fc = this.opts.fileConfig ?? {}
    const restartMode = fc.restartMode ?? restartModeFrom(process.env)
    this.simulateReboots = restartMode === 'simulate'
    this.interpreters = this.opts.interpreters ?? builtinInterpreters({ restartMode })
    const skills: Record<string, string[]> = {}
    for (const name of BUILTIN_INTERPRETER_NAMES) skills[name] = [BUILTIN_SKILL_VERSION]
    if (fc.interpreters?.length) {
      const ext = await discoverExternalInterpreters(fc.interpreters, BUILTIN_INTERPRETER_NAMES)
      for (const p of ext.problems) log.warn({ problem: p }, 'external interpreter not loaded')
      for (const [name, interp] of ext.interpreters) this.interpreters.set(name, interp)
      for (const [name, versions] of ext.versions) skills[name] = versions
    }
    const allow = fc.allow === 'any' ? ALLOW_EVERYTHING : fc.allow ?? DEFAULT_ALLOWLIST
    if (fc.allow === 'any') log.warn('allowlist is "any": this agent runs every command of every signed job')
    const support = await limitSupport()
    log.info({ limits: support }, 'step limit support on this host')
    this.config = { nodeId: this.nodeId, coordinatorKey: this.opts.coordinatorKey, identity: this.identity, os: currentOs(), allow, skills, ...DEFAULT_AGENT_TIMING }
    this.db = this.opts.store ?? new Level<string, unknown>(join(this.opts.dataDir, 'db'), { valueEncoding: 'json' })
    await this.db.open()
    const records: [string, unknown][] = []
    for await (const entry of this.db.iterator()) records.push(entry)
    const restored = restoreAgent(records, this.config, Date.now())
    this.state = restored.state
    this.loop = new CoreLoop<AgentEvent, AgentEffect>({
      step: (event, now) => agentStep(this.state, this.config, event, now),
      commit: (ops) => this.db.batch(ops),
      execute: (effect) => this.execute(effect),
      now: () => Date.now(),
      onError: (err) => this.fatal(err),
    })

    this.warnings = new RepeatedWarning(log)
    this.coordinatorPeer = peerIdForPublicKey(this.opts.coordinatorKey)
    this.joinAddr = this.opts.join.includes('/p2p/') ? this.opts.join : `${this.opts.join}/p2p/${this.coordinatorPeer}`
    if (!this.joinAddr.endsWith(`/p2p/${this.coordinatorPeer}`)) {
      throw new Error(`--join ${this.opts.join} names a peer other than the one --coordinator-key belongs to (${this.coordinatorPeer})`)
    }
    this.net = await createNet({
      seed: this.identity.seed, listen: this.opts.listen ?? ['/ip4/127.0.0.1/tcp/0'], trustedPublisher: this.coordinatorPeer,
      // The pinned coordinator speaks our gossip: no identify with it (net/libp2p.ts gossipPeer).
      gossipPeer: (peerId) => peerId === this.coordinatorPeer,
      isMember: (peerId) => this.isMember(peerId), isDenied: (peerId) => this.isRevokedPeer(peerId),
    })
    await this.net.handleMember((theirs, from) => (this.admitPeer(theirs, from) ? this.myCertificate() : undefined))
    this.net.node.addEventListener('connection:open', (evt) => {
      const peerId = evt.detail.remotePeer.toString()
      if (peerId !== this.coordinatorPeer) void this.exchangeCertificates(peerId, evt.detail.direction === 'outbound')
    })
    const undecodable = (reason: string) => log.warn({ err: reason }, 'undecodable gossip message dropped')
    subscribeEnvelopes(this.net, TOPIC_JOBS, (envelope) => void this.dispatch({ type: 'job', envelope, via: 'gossip' }), undecodable)
    subscribeEnvelopes(this.net, TOPIC_PROGRESS, (envelope) => void this.dispatch({ type: 'progress', envelope }), undecodable)
    this.net.node.addEventListener('peer:disconnect', (evt) => { this.verified.delete(evt.detail.toString()) })
    this.shell = new AgentShell({
      transport: linkTransport(this.net), clock: { now: () => Date.now() }, identity: this.identity, nodeId: this.nodeId,
      coordinatorKey: this.opts.coordinatorKey, coordinatorPeer: this.coordinatorPeer, coordinatorAddr: this.joinAddr,
      state: () => this.state, dispatch: (event, then) => { void this.dispatch(event).then(then) },
      facts: () => nodeFacts(this.opts.attributes), skills: this.config.skills,
      ...(this.opts.enrollToken ? { enrollToken: this.opts.enrollToken } : {}),
      jitter: (ms) => jitteredMs(ms, Math.random()),
      memberOf: (peerId) => (this.isMember(peerId) ? this.verified.get(peerId) : undefined),
      // libp2p dials the coordinator by its peer id: noise proves its key, or the connection fails.
      authenticatedLink: true,
      hooks: {
        dialFailed: (err, retryInMs) => {
          const why = dialFailure(err, this.opts.join, this.opts.coordinatorKey)
          this.warnings.warn(why.kind, { err: err.message, retryInMs }, why.msg)
        },
        refused: (why, retryInMs) => this.opts.logger[why.pending ? 'info' : 'error']({ coordinator: this.coordinatorPeer, retryInMs }, `the coordinator did not admit this node: ${why.error ?? 'no reason given'}`),
        joined: () => {
          log.info({ coordinator: this.coordinatorPeer }, 'joined the coordinator')
          this.warnings.clear('key')
          this.warnings.clear('reach')
        },
        lost: () => log.warn('lost the connection to the coordinator; results stay queued and are re-sent'),
        sendFailed: (err) => log.debug({ err: err.message }, 'send to coordinator failed; will retry'),
      },
    })
    // A peer's sync request: decoded here (hostile bytes), answered by the shell from the core's state.
    await this.net.handleRpc(async (data, from) => {
      let request: unknown
      try { request = decodeEnvelope(data) } catch (err) { request = { undecodable: (err as Error).message } }
      return encodeEnvelope(this.shell.answerPeer(request, from))
    })
    await this.loop.apply(restored.effects)
    log.info({ nodeId: this.nodeId, peerId: this.net.peerId, publicKey: this.identity.publicKey, join: this.joinAddr, restoredRuns: this.state.runs.size, queuedResults: this.state.outbox.size }, 'agent started')
    if (this.opts.metrics) await this.serveMetrics(this.opts.metrics)
    this.ticker = setInterval(() => this.onTick(), AGENT_TICK_MS)
    this.onTick()
  }

  private async serveMetrics(address: string): Promise<void> {
    // Loaded only when asked for: prom-client loads node:http, https and zlib, ~10 % of an agent's start.
    const { AgentMetrics } = await import('./metrics.js')
    this.metrics = new AgentMetrics({
      outboxDepth: () => this.state.outbox.size,
      runningSteps: () => [...this.state.runs.values()].filter((r) => r.inFlight).length,
      coordinatorReachable: () => this.shell.connected,
    })
    this.metricsServer = await this.metrics.listen(address)
    this.opts.logger.info({ metrics: `http://${address}/metrics` }, 'serving metrics')
  }

  /** Events are stepped through the core in order; see CoreLoop for the group commit. */
  dispatch(event: AgentEvent): Promise<void> {
    if (this.stopped) return Promise.resolve()
    return this.loop.dispatch(event).catch((err) => this.opts.logger.warn({ err: (err as Error).message }, 'event dropped'))
  }

  private execute(e: AgentEffect): void {
    switch (e.type) {
      case 'run_step':
        void this.runStep(e)
        break
      case 'send':
        this.shell.send(e.envelope, e.kind, e.kind === 'sync' ? e.waitMs ?? 0 : 0)
        break
      case 'publish_progress':
        this.net.publish(TOPIC_PROGRESS, encodeEnvelope(e.envelope)).catch((err) => this.opts.logger.debug({ err: (err as Error).message }, 'progress publish failed'))
        break
      case 'log':
        if (e.level !== 'warn' || this.warns.allow(e.msg, Date.now())) this.opts.logger[e.level](e.fields ?? {}, e.msg)
        break
      case 'revoked':
        for (const [peerId, v] of this.verified) if (e.keys.includes(v.key)) { this.verified.delete(peerId); void this.net.hangUp(peerId) }
        break
      case 'persist':
        break
    }
  }

  /** The coordinator, or another agent whose certificate this agent checked on this connection (and that is still valid). */
  private isMember(peerId: string): boolean {
    if (peerId === this.coordinatorPeer) return true
    const v = this.verified.get(peerId)
    return v !== undefined && v.expiresAt > Date.now() && !this.state.member.revoked.keys.has(v.key)
  }

  private revokedCache = { version: 0, peers: new Set<string>() }
  private isRevokedPeer(peerId: string): boolean {
    const r = this.state.member.revoked
    if (this.revokedCache.version !== r.version) this.revokedCache = { version: r.version, peers: new Set([...r.keys].map(peerIdOf)) }
    return this.revokedCache.peers.has(peerId)
  }

  private myCertificate(): Uint8Array {
    const cert = this.state.member.certificate
    return cert ? encodeEnvelope(cert.envelope) : new Uint8Array(0)
  }

  /** Checks a peer's certificate (no coordinator needed: its key, the revocation list, the clock). */
  private admitPeer(bytes: Uint8Array, peerId: string): boolean {
    let envelope: unknown
    try { envelope = decodeEnvelope(bytes) } catch { envelope = undefined }
    const check = checkMember(envelope, this.opts.coordinatorKey, peerId, this.state.member.revoked, Date.now())
    if (!check.ok || this.verified.size >= MAX_VERIFIED_PEERS) {
      this.opts.logger.warn({ peerId, reason: check.ok ? `already ${MAX_VERIFIED_PEERS} peers` : check.reason }, 'refused a peer: no valid membership certificate')
      void this.net.hangUp(peerId)
      return false
    }
    this.verified.set(peerId, { nodeId: check.body.nodeId, key: check.body.key, expiresAt: check.body.expiresAt })
    this.net.refreshPeer(peerId)
    return true
  }

  /**
   * Another agent connected: one exchange shows both certificates. The side that dialled sends
   * its own and reads the peer's; the side that was dialled answers in handleMember. A peer that
   * shows none in time is dropped.
   */
  private async exchangeCertificates(peerId: string, dialled: boolean): Promise<void> {
    const deadline = setTimeout(() => {
      if (!this.stopped && !this.verified.has(peerId)) void this.net.hangUp(peerId)
    }, MEMBER_DEADLINE_MS)
    deadline.unref()
    if (!dialled || !this.state.member.certificate) return
    try {
      this.admitPeer(await this.net.exchangeMember(peerId, this.myCertificate()), peerId)
    } catch (err) {
      this.opts.logger.debug({ peerId, err: (err as Error).message }, 'membership exchange failed')
    }
  }

  /** The core threw or the store failed: memory may be ahead of disk. Crash; the restart restores from disk. */
  private fatal(err: unknown): void {
    this.opts.logger.fatal({ err }, 'agent cannot continue safely; exiting (state is restored from the store on restart)')
    ;(this.opts.onFatal ?? (() => process.exit(70)))(err)
  }

  private async runStep(e: Extract<AgentEffect, { type: 'run_step' }>): Promise<void> {
    const r = e.request
    const wait = e.notBefore - Date.now()
    if (wait > 0) await new Promise((res) => setTimeout(res, wait))
    if (this.stopped) return
    const startedAt = Date.now()
    const interpreter = findInterpreter(r.interpreter, this.interpreters)
    const workDir = join(this.opts.dataDir, 'work', r.runId, `${r.stepNumber}-${r.attempt}`)
    const artifactDir = join(workDir, 'artifacts')
    const scratch = interpreter?.usesWorkDir !== false
    if (scratch) await mkdir(artifactDir, { recursive: true })
    const limited = r.limits.cores > 0 || r.limits.cpu > 0
    const result = interpreter
      ? await interpreter.run({
        runId: r.runId, stepNumber: r.stepNumber, attempt: r.attempt, interpreter: r.interpreter, command: r.command,
        inputs: r.inputs, os: r.os, timeoutMs: r.timeoutMs, maxOutputBytes: MAX_STEP_OUTPUT_CHARS, ...(scratch ? { workDir, artifactDir } : {}),
        env: { CHORUS_NODE_ID: this.nodeId, CHORUS_JOB_ID: r.jobId, CHORUS_INSTANCE_ID: r.instanceId, CHORUS_RUN_ID: r.runId, CHORUS_STEP: String(r.stepNumber), CHORUS_ATTEMPT: String(r.attempt) },
        ...(limited ? { limits: r.limits } : {}),
      }, this.aborter.signal)
      : { status: 'failure' as const, exitCode: null, stdout: '', stderr: '', truncated: false, durationMs: 0, reason: `skill not installed: interpreter ${r.interpreter} is not available on this node` }
    if (this.stopped) return // the process is going away: the attempt stays in flight and is recorded as interrupted on restart
    this.metrics?.steps.observe({ status: result.status }, (Date.now() - startedAt) / 1000)
    const files: Record<string, string> = {}
    for (const path of r.filesToRead) {
      try {
        const fh = await openFile(path, 'r')
        try {
          const buf = Buffer.alloc(MAX_OUTPUT_FILE_BYTES)
          const { bytesRead } = await fh.read(buf, 0, MAX_OUTPUT_FILE_BYTES, 0)
          files[path] = buf.subarray(0, bytesRead).toString('utf8')
        } finally { await fh.close() }
      } catch { /* a missing file is a missing value; the output rule decides */ }
    }
    const artifacts = (result.artifacts ?? []).map((a) => ({ name: a.name, encoding: a.encoding, content: a.content, bytes: a.bytes }))
    if (result.limitsReport?.length) this.opts.logger.info({ runId: r.runId, step: r.stepNumber, limits: result.limitsReport }, 'step limits')
    if (scratch) await rm(join(this.opts.dataDir, 'work', r.runId), { recursive: true, force: true }).catch(() => {})
    await this.dispatch({
      type: 'step_done', runId: r.runId, stepNumber: r.stepNumber, attempt: r.attempt,
      result: {
        status: result.status, exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr,
        ...(result.reason ? { reason: result.reason } : {}),
        ...(r.filesToRead.length ? { files } : {}),
        ...(result.artifacts?.length ? { artifacts } : {}),
        ...(result.outputs ? { outputs: result.outputs } : {}),
        ...(result.interim ? { interim: result.interim } : {}),
        ...(result.interpreterLog ? { interpreterLog: result.interpreterLog } : {}),
        startedAt,
      },
    })
    if (result.interim === 'reboot_pending' && this.simulateReboots) {
      // Simulated reboot: the node "comes back" after a moment and the run resumes.
      setTimeout(() => void this.dispatch({ type: 'rebooted' }), SIMULATED_REBOOT_MS)
    }
  }

  private onTick(): void {
    if (this.stopped) return
    reportDropped(this.warns, (fields, msg) => this.opts.logger.warn(fields, msg), Date.now())
    void this.dispatch({ type: 'tick' })
    this.shell.tick()
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.shell?.stop()
    if (this.ticker) clearInterval(this.ticker)
    this.metricsServer?.close()
    this.aborter.abort()
    await this.loop?.close()
    await this.net?.stop()
    await this.db?.close()
  }
}
