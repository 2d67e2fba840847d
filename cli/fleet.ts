// A local fleet on loopback: one coordinator process and N agent processes with temporary
// data directories. Used by `chorus demo`, `chorus bench` and the integration tests. Every
// process it starts it ends itself, by pid.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, mkdir, readFile, rm, open, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { apiGet, apiPostText, apiRequest, contentTypeFor, type ApiConn } from './client.js'
import type { JobReport } from '../coordinator/report.js'

import { CHORUS_BIN, PACKAGE_ROOT } from './paths.js'
/**
 * What agents are started with: `chorus agent` through its CommonJS entry, which is what
 * bin/chorus.js runs for `chorus agent` too, without compiling Node's ES module loader first.
 */
export const AGENT_BIN = join(PACKAGE_ROOT, 'bin', 'chorus-agent.cjs')
/** Agents started at once: more at a time only makes the 2-core start-up slower. */
export const AGENT_START_PARALLELISM = 25
/**
 * Old generation an agent starts with, in MB: above the ~20 MB a started agent holds, so that
 * starting runs no full collection (two, ~50 ms of a ~260 ms start, with V8's default); the
 * garbage it leaves (~4 MB) is collected once the agent idles (README, Benchmarks).
 */
export const AGENT_INITIAL_OLD_SPACE_MB = 32
/**
 * V8 flags for agent processes: a small young generation keeps an idle agent's RSS low; --no-opt
 * leaves an agent's code to the interpreter and baseline compiler: TurboFan recompiling the few
 * functions a job runs cost ~2 ms of CPU per job on V8's worker thread and ~50 ms at start, and
 * saved nothing on the main thread (README, Benchmarks). --memory-reducer-single-gc: V8's memory
 * reducer collects an agent's start-up garbage 8-14 s after it started with up to three full
 * collections, ~110 ms of CPU per agent (a third of its start); one does it for ~50 ms and leaves
 * ~1-3 MB more RSS (README, "Where an agent's time goes"). `npm run build` primes the agent's code
 * cache for exactly these flags (cli/prime-agent-cache.ts).
 * Each V8 flag here needs its default in cli/builtins-first.ts, which the agent sets while it
 * loads Node's built-ins (test/builtins-first.test.ts fails otherwise).
 */
export const AGENT_NODE_FLAGS = process.env.CHORUS_AGENT_NODE_FLAGS !== undefined
  ? process.env.CHORUS_AGENT_NODE_FLAGS.split(' ').filter(Boolean)
  : ['--max-semi-space-size=1', '--optimize-for-size', '--v8-pool-size=1', '--max-old-space-size=96', `--initial-old-space-size=${AGENT_INITIAL_OLD_SPACE_MB}`, '--no-opt', '--memory-reducer-single-gc']
/** V8 flags for the coordinator process (none by default; e.g. `--cpu-prof --cpu-prof-dir=DIR` to profile a bench). */
export const COORDINATOR_NODE_FLAGS = (process.env.CHORUS_COORDINATOR_NODE_FLAGS ?? '').split(' ').filter(Boolean)

export interface ProcInfo {
  proc: ChildProcess
  dir: string
  logFile: string
}

export interface FleetOptions {
  agents: number
  nodeIdPrefix?: string
  /** Extra `--attr k=v` per agent index. */
  attributes?: (index: number) => Record<string, string>
  baseDir?: string
  keepDirs?: boolean
  /** Agent configuration file passed to every agent (`--config`). */
  agentConfigFile?: string
  /** Agent configuration written to a file and passed to every agent; ignored when agentConfigFile is set. */
  agentConfig?: Record<string, unknown>
  /** Per-agent configuration (by index), written to the agent's directory; overrides the shared one. */
  agentConfigFor?: (index: number) => Record<string, unknown> | undefined
  /** The enrolment token the fleet creates for its agents: its extra uses (for agents a test adds) and fixed attributes. */
  enrollment?: { extraUses?: number; attributes?: Record<string, string> }
  /** Start the coordinator with --require-approval. */
  requireApproval?: boolean
}

async function spawnLogged(args: string[], logFile: string, nodeFlags: string[] = [], bin = CHORUS_BIN): Promise<ChildProcess> {
  const fh = await open(logFile, 'a')
  const proc = spawn(process.execPath, [...nodeFlags, bin, ...args], { stdio: ['ignore', fh.fd, fh.fd], env: { ...process.env, CHORUS_LOG_LEVEL: process.env.CHORUS_LOG_LEVEL ?? 'info' } })
  proc.once('exit', () => void fh.close())
  proc.once('error', () => void fh.close())
  return proc
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastErr: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v !== undefined) return v
    } catch (err) { lastErr = err }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`)
    await new Promise((r) => setTimeout(r, intervalMs))
  }
}

function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve()
  return new Promise((r) => proc.once('exit', () => r()))
}

export class LocalFleet {
  coordinator!: ProcInfo
  agents: (ProcInfo & { nodeId: string })[] = []
  api = ''
  /** The coordinator's admin token (DATA/admin.token), sent on every API call. */
  token = ''
  publicKey = ''
  multiaddr = ''
  baseDir = ''
  private apiPort = 0
  private p2pPort = 0
  /** The enrolment token file every agent gets (mode 0600), made once the coordinator is up. */
  enrollTokenFile = ''

  constructor(private readonly opts: FleetOptions) {}

  /** The API address with the admin token, for cli/client.ts. */
  get conn(): ApiConn {
    return { api: this.api, token: this.token }
  }

  get nodeIds(): string[] {
    return this.agents.map((a) => a.nodeId)
  }

  async start(): Promise<this> {
    this.baseDir = this.opts.baseDir ?? (await mkdtemp(join(tmpdir(), 'chorus-fleet-')))
    try {
      await this.startAll()
    } catch (err) {
      // Keep the logs of a fleet that failed to start: they say why.
      await this.stop({ keepDirs: true })
      throw new Error(`${(err as Error).message} (logs kept in ${this.baseDir})`)
    }
    return this
  }

  private async startAll(): Promise<void> {
    if (!this.opts.agentConfigFile && this.opts.agentConfig) {
      this.opts.agentConfigFile = join(this.baseDir, 'agent-config.json')
      await writeFile(this.opts.agentConfigFile, JSON.stringify(this.opts.agentConfig, null, 2))
    }
    await this.startCoordinator()
    this.enrollTokenFile = await this.createEnrollToken('fleet', this.opts.agents + (this.opts.enrollment?.extraUses ?? 4), this.opts.enrollment?.attributes)
    const prefix = this.opts.nodeIdPrefix ?? 'node-'
    for (let i = 0; i < this.opts.agents; i++) await this.addAgent(`${prefix}${i + 1}`)
    for (let i = 0; i < this.agents.length; i += AGENT_START_PARALLELISM) {
      const slice = this.agents.slice(i, i + AGENT_START_PARALLELISM)
      await Promise.all(slice.map((_, j) => this.startAgent(i + j)))
    }
    if (!this.opts.requireApproval) await this.waitForNodes(this.agents.length, 30_000 + 500 * this.agents.length)
  }

  /** Creates an enrolment token through the API (as an admin would) and writes it to a 0600 file; returns the file. */
  async createEnrollToken(name: string, uses: number, attributes: Record<string, string> = {}, ttl = '1h'): Promise<string> {
    const res = await apiRequest<{ token?: string; error?: string }>(this.conn, 'POST', '/v1/enrollments', { name, uses, ttl, attributes })
    if (res.status !== 201 || !res.body.token) throw new Error(`could not create an enrolment token (HTTP ${res.status}): ${res.body.error ?? ''}`)
    const file = join(this.baseDir, `${name}.enroll-token`)
    await writeFile(file, res.body.token + '\n', { mode: 0o600 })
    return file
  }

  async startCoordinator(): Promise<void> {
    const dir = join(this.baseDir, 'coordinator')
    await mkdir(dir, { recursive: true })
    await rm(join(dir, 'endpoints.json'), { force: true })
    const listen = `/ip4/127.0.0.1/tcp/${this.p2pPort}`
    const api = `127.0.0.1:${this.apiPort}`
    const logFile = join(dir, 'coordinator.log')
    const proc = await spawnLogged(['coordinator', '--data', dir, '--listen', listen, '--api', api, ...(this.opts.requireApproval ? ['--require-approval'] : [])], logFile, COORDINATOR_NODE_FLAGS)
    this.coordinator = { proc, dir, logFile }
    const endpoints = await waitFor('the coordinator to start', async () => {
      if (proc.exitCode !== null) throw new Error(`coordinator exited with code ${proc.exitCode}; see ${logFile}`)
      return JSON.parse(await readFile(join(dir, 'endpoints.json'), 'utf8')) as { api: string; publicKey: string; multiaddrs: string[] }
    }, 30_000)
    this.api = endpoints.api
    this.token = (await readFile(join(dir, 'admin.token'), 'utf8')).trim()
    this.publicKey = endpoints.publicKey
    const addr = endpoints.multiaddrs.find((m) => m.startsWith('/ip4/127.0.0.1/tcp/')) ?? endpoints.multiaddrs[0]!
    this.multiaddr = addr.replace(/\/p2p\/.*$/, '')
    this.p2pPort = Number(/\/tcp\/(\d+)/.exec(addr)?.[1] ?? 0)
    this.apiPort = Number(endpoints.api.split(':').pop())
  }

  /** Starts agent `index`; `enrollTokenFile` null starts it without a token (it must not be admitted). */
  async startAgent(index: number, opts: { enrollTokenFile?: string | null } = {}): Promise<void> {
    const a = this.agents[index]!
    const attrs = this.opts.attributes?.(index) ?? {}
    const args = ['agent', '--data', a.dir, '--join', this.multiaddr, `--coordinator-key=${this.publicKey}`, '--node-id', a.nodeId]
    const tokenFile = opts.enrollTokenFile === undefined ? this.enrollTokenFile : opts.enrollTokenFile
    if (tokenFile) args.push('--enroll-token-file', tokenFile)
    for (const [k, v] of Object.entries(attrs)) args.push('--attr', `${k}=${v}`)
    const own = this.opts.agentConfigFor?.(index)
    if (own) {
      const file = join(a.dir, 'agent-config.json')
      await writeFile(file, JSON.stringify(own, null, 2))
      args.push('--config', file)
    } else if (this.opts.agentConfigFile) args.push('--config', this.opts.agentConfigFile)
    a.proc = await spawnLogged(args, a.logFile, AGENT_NODE_FLAGS, AGENT_BIN)
  }

  /** Adds an agent (data directory, node id) without starting it; returns its index. */
  async addAgent(nodeId: string): Promise<number> {
    const dir = join(this.baseDir, `agent-${this.agents.length + 1}`)
    await mkdir(dir, { recursive: true })
    this.agents.push({ nodeId, dir, logFile: join(dir, 'agent.log'), proc: undefined as unknown as ChildProcess })
    return this.agents.length - 1
  }

  async waitForNodes(count: number, timeoutMs: number): Promise<void> {
    await waitFor(`${count} agents to join`, async () => {
      const nodes = await apiGet<{ items: unknown[] }>(this.conn, '/v1/nodes')
      return nodes.items.length >= count ? true : undefined
    }, timeoutMs, 200)
  }

  async submit(text: string, fileName = 'job.json'): Promise<string> {
    const res = await apiPostText<{ id?: string; problems?: { path: string; message: string }[] }>(this.conn, '/v1/jobs', text, contentTypeFor(fileName))
    if (res.status !== 201 || !res.body.id) {
      throw new Error(`submit refused (HTTP ${res.status}): ${(res.body.problems ?? []).map((p) => `${p.path}: ${p.message}`).join('; ')}`)
    }
    return res.body.id
  }

  report(id: string): Promise<JobReport> {
    return apiGet<JobReport>(this.conn, `/v1/reports/${id}`)
  }

  async waitForJob(id: string, timeoutMs: number, intervalMs = 100): Promise<JobReport> {
    return waitFor(`job ${id} to finish`, async () => {
      const r = await this.report(id)
      return r.instances.length > 0 && r.instances.every((i) => i.status !== 'running') ? r : undefined
    }, timeoutMs, intervalMs)
  }

  async killCoordinator(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.coordinator.proc
    if (p.pid && p.exitCode === null) p.kill(signal)
    await exited(p)
  }

  async stopAgent(index: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const p = this.agents[index]!.proc
    if (p?.pid && p.exitCode === null && p.signalCode === null) p.kill(signal)
    if (p) await exited(p)
  }

  /** Ends every process this fleet started; removes the data directories unless asked to keep them. */
  async stop(opts: { keepDirs?: boolean } = {}): Promise<void> {
    await Promise.all(this.agents.map((a, i) => (a.proc ? this.stopAgent(i) : undefined)))
    if (this.coordinator) await this.killCoordinator('SIGTERM')
    if (!(opts.keepDirs ?? this.opts.keepDirs) && !this.opts.baseDir) await rm(this.baseDir, { recursive: true, force: true })
  }
}
