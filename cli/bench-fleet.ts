// `chorus bench fleet`: N real agents packed K to a process (cli/fleet-pack.ts: each agent its
// own key, peer id and libp2p node, an in-memory store and a no-op interpreter) against one real
// coordinator process, so that what is measured is the coordinator and the network: join time,
// fan-out, the rate results are stored in a burst, the coordinator's memory and CPU per agent,
// and how long the fleet takes to come back after the coordinator is SIGKILLed and restarted.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, open, readFile } from 'node:fs/promises'
import { cpus, loadavg, totalmem } from 'node:os'
import { join } from 'node:path'
import { LocalFleet, waitFor } from './fleet.js'
import { apiGet } from './client.js'
import { CHORUS_BIN } from './paths.js'
import { cpuMs, fanoutJob, median, rssMb } from './bench.js'
import { MAX_AGENTS_PER_PACK, type PackReply, type PackRequest, type PackStatus } from './fleet-pack.js'

/** Agents per pack process by default: 1,000 agents are 20 processes. */
export const DEFAULT_AGENTS_PER_PROCESS = 50
/** The attribute every bench agent has and every bench job targets. */
const BENCH_ATTRIBUTES = { bench: 'fleet' }
/** How long the fleet may take to join, per agent, on top of JOIN_BASE_TIMEOUT_MS. */
const JOIN_BASE_TIMEOUT_MS = 60_000
const JOIN_TIMEOUT_PER_AGENT_MS = 1_000
/** How long one round (or the reconnect) may take before the bench gives up. */
const ROUND_TIMEOUT_MS = 180_000
/** Polling interval of the API and of the packs while a round runs. */
const POLL_MS = 10
const STATUS_POLL_MS = 100
/** Gossipsub exchanges subscriptions after the connections open: a warm-up round proves it, then this pause. */
const SETTLE_MS = 2_000
/** The round after the reconnect: agents the coordinator's gossip misses get the job at their next periodic sync (SYNC_PERIOD_MS, 60 s). */
const AFTER_RECONNECT_TIMEOUT_MS = 90_000
/** A pack answers a status request within this time. */
const PACK_REPLY_TIMEOUT_MS = 30_000
/** Pack processes get this long to stop their agents before they are SIGKILLed. */
const PACK_EXIT_TIMEOUT_MS = 15_000
/**
 * Debug: after the coordinator's RSS is read, the bench waits this long (ms) with every agent
 * connected and says so on stderr, so that its memory can be looked at from outside (a heap
 * snapshot by `--heapsnapshot-signal` in CHORUS_COORDINATOR_NODE_FLAGS). Unset: no wait.
 */
const HOLD_MS = Number(process.env.CHORUS_BENCH_FLEET_HOLD_MS ?? 0) || 0

export interface FleetBenchOptions {
  agents: number
  perProcess: number
  rounds: number
  historyRuns: number
  /** Agents joining at once across the fleet (each pack starts its share, the next when one has joined). */
  joining: number
  /** SIGKILL and restart the coordinator at the end of each measurement (default true; off to profile a coordinator that exits normally). */
  reconnect?: boolean
  /** Keep the data directories and logs (their path goes to stderr). */
  keep?: boolean
}

/** Progress on stderr: stdout is the JSON. */
function note(msg: string): void {
  process.stderr.write(`bench fleet: ${msg}\n`)
}

/** The same job as `bench fanout` (its shell step is run by the packs' no-op interpreter), aimed at the bench attribute. */
function fleetJob(round: number, name = 'bench fleet'): string {
  const job = JSON.parse(fanoutJob(round)) as { name: string; target: { groups: { filter: { constraints: { attributes: { value: string[] }[] } } }[] } }
  job.name = `${name} round ${round}`
  job.target.groups[0]!.filter.constraints.attributes[0]!.value = [BENCH_ATTRIBUTES.bench]
  return JSON.stringify(job)
}

/** One pack process and its IPC channel. */
class Pack {
  private nextId = 1
  private readonly waiting = new Map<number, (s: PackStatus) => void>()
  private started?: (r: Extract<PackReply, { type: 'started' }>) => void
  errors: string[] = []

  constructor(readonly proc: ChildProcess) {
    proc.on('message', (m: PackReply) => {
      if (m.type === 'status') { this.waiting.get(m.id)?.(m.status); this.waiting.delete(m.id) }
      else if (m.type === 'started') this.started?.(m)
      else if (m.type === 'error') this.errors.push(m.error)
    })
  }

  send(msg: PackRequest): void {
    if (this.proc.connected) this.proc.send(msg)
  }

  start(msg: Extract<PackRequest, { type: 'start' }>): Promise<Extract<PackReply, { type: 'started' }>> {
    const p = new Promise<Extract<PackReply, { type: 'started' }>>((resolve, reject) => {
      this.started = resolve
      this.proc.once('exit', (code) => reject(new Error(`pack process ${this.proc.pid} exited with code ${code} while starting: ${this.errors.join('; ')}`)))
    })
    this.send(msg)
    return p
  }

  status(since: number): Promise<PackStatus> {
    const id = this.nextId++
    return new Promise<PackStatus>((resolve, reject) => {
      const timer = setTimeout(() => { this.waiting.delete(id); reject(new Error(`pack ${this.proc.pid} did not answer a status request in ${PACK_REPLY_TIMEOUT_MS} ms`)) }, PACK_REPLY_TIMEOUT_MS)
      this.waiting.set(id, (s) => { clearTimeout(timer); resolve(s) })
      this.send({ type: 'status', id, since })
    })
  }

  async stop(): Promise<void> {
    const p = this.proc
    if (p.exitCode !== null || p.signalCode !== null) return
    const exited = new Promise<void>((r) => p.once('exit', () => r()))
    this.send({ type: 'stop' })
    const timer = setTimeout(() => { if (p.exitCode === null) p.kill('SIGKILL') }, PACK_EXIT_TIMEOUT_MS)
    await exited
    clearTimeout(timer)
  }
}

/** The packs' agents summed; `synced` counts those whose last sync succeeded at or after `since` (ms; the default 1 counts every agent that ever synced). */
async function statusOf(packs: Pack[], since = 1): Promise<PackStatus> {
  const all = await Promise.all(packs.map((p) => p.status(since)))
  return all.reduce((a, s) => ({
    running: a.running + s.running, connected: a.connected + s.connected, synced: a.synced + s.synced, drops: a.drops + s.drops, held: a.held + s.held, stepsDone: a.stepsDone + s.stepsDone,
    peerRounds: a.peerRounds + s.peerRounds, failures: a.failures + s.failures, busyFailures: a.busyFailures + s.busyFailures,
  }))
}

/** V8 flags for the agent pack processes (none by default; e.g. `--cpu-prof --cpu-prof-dir=DIR` to profile them). */
const PACK_NODE_FLAGS = (process.env.CHORUS_PACK_NODE_FLAGS ?? '').split(' ').filter(Boolean)

/** A counter of the coordinator's /metrics, summed over its label sets. */
async function metric(fleet: LocalFleet, name: string, labels = ''): Promise<number> {
  const res = await fetch(`http://${fleet.api}/metrics`, { headers: { authorization: `Bearer ${fleet.token}` } })
  const text = await res.text()
  let sum = 0
  for (const line of text.split('\n')) if (line.startsWith(name) && line.includes(labels)) sum += Number(line.split(' ').pop())
  return sum
}

const round3 = (x: number) => Number(x.toFixed(3))

/** Submits a job to every bench agent and waits for all N results to be stored; returns the job's instance id and the seconds it took. */
async function runJob(fleet: LocalFleet, n: number, text: string, timeoutMs = ROUND_TIMEOUT_MS): Promise<number> {
  const start = performance.now()
  const jobId = await fleet.submit(text)
  const { instanceIds } = await apiGet<{ instanceIds: string[] }>(fleet.conn, `/v1/jobs/${jobId}`)
  let results = 0
  await waitFor(`all ${n} results`, async () => {
    const inst = await apiGet<{ counts: Record<string, number> }>(fleet.conn, `/v1/instances/${instanceIds[0]}`)
    results = (inst.counts.success ?? 0) + (inst.counts.failure ?? 0)
    return results >= n ? true : undefined
  }, timeoutMs, POLL_MS).catch((err: Error) => { throw new Error(`${err.message} (${results} arrived)`) })
  return (performance.now() - start) / 1000
}

/**
 * The measured figures (also with history): fan-out rounds (coordinator CPU over them), burst
 * rounds (every agent holds its step until all have one, then all results are sent at once),
 * the coordinator's RSS, and the reconnect after a SIGKILL.
 */
async function measure(fleet: LocalFleet, packs: Pack[], o: FleetBenchOptions, idleRssMb: number, label: string) {
  const n = o.agents
  const drops0 = (await statusOf(packs)).drops
  const t0m = performance.now()
  const packsCpu = async () => (await Promise.all(packs.map((p) => cpuMs(p.proc.pid)))).reduce((a, c) => a + (c?.self ?? 0), 0)
  const cpu0 = await cpuMs(fleet.coordinator.proc.pid)
  const packs0 = await packsCpu()
  const syncs0 = await metric(fleet, 'chorus_rpc_requests_total', 'type="sync"')
  const fanout: number[] = []
  for (let r = 1; r <= o.rounds; r++) fanout.push(await runJob(fleet, n, fleetJob(r, `${label} fanout`)))
  const cpu1 = await cpuMs(fleet.coordinator.proc.pid)
  const packs1 = await packsCpu()
  const syncs1 = await metric(fleet, 'chorus_rpc_requests_total', 'type="sync"')
  note(`${label}: fan-out ${fanout.map((t) => t.toFixed(2)).join(', ')} s`)
  const cpuPerJob = cpu0 && cpu1 ? (cpu1.self - cpu0.self) / o.rounds : null

  const burst: number[] = []
  for (let r = 1; r <= o.rounds; r++) {
    for (const p of packs) p.send({ type: 'hold', on: true })
    // A pack handles its messages in order: once it answers a status request, it holds. Without
    // this wait, a busy pack could see the job before the hold, run its steps at once, and the
    // round never saw all N held (it timed out once at 250 agents on a loaded machine).
    await statusOf(packs)
    const jobId = await fleet.submit(fleetJob(r, `${label} burst`))
    const { instanceIds } = await apiGet<{ instanceIds: string[] }>(fleet.conn, `/v1/jobs/${jobId}`)
    await waitFor(`all ${n} steps held`, async () => ((await statusOf(packs)).held >= n ? true : undefined), ROUND_TIMEOUT_MS, STATUS_POLL_MS)
    const released = performance.now()
    for (const p of packs) p.send({ type: 'hold', on: false })
    await waitFor(`all ${n} burst results`, async () => {
      const inst = await apiGet<{ counts: Record<string, number> }>(fleet.conn, `/v1/instances/${instanceIds[0]}`)
      return (inst.counts.success ?? 0) + (inst.counts.failure ?? 0) >= n ? true : undefined
    }, ROUND_TIMEOUT_MS, POLL_MS)
    burst.push(n / ((performance.now() - released) / 1000))
  }
  note(`${label}: burst ${burst.map(Math.round).join(', ')} results/s`)
  const rss = (await rssMb(fleet.coordinator.proc.pid)) ?? 0
  const packRss = (await Promise.all(packs.map((p) => rssMb(p.proc.pid)))).reduce<number>((a, b) => a + (b ?? 0), 0)
  if (HOLD_MS > 0) {
    note(`${label}: holding ${HOLD_MS} ms with every agent connected (coordinator pid ${fleet.coordinator.proc.pid})`)
    await new Promise((r) => setTimeout(r, HOLD_MS))
  }

  const figures = {
    fanout_s: round3(median(fanout)),
    fanout_s_max: round3(Math.max(...fanout)),
    fanout_s_all: fanout.map(round3),
    results_per_s: Math.round(median(burst)),
    results_per_s_all: burst.map(Math.round),
    coordinator_rss_mb: rss,
    coordinator_rss_kb_per_agent: Math.round(((rss - idleRssMb) * 1024) / n),
    coordinator_cpu_ms_per_job: cpuPerJob === null ? null : Number(cpuPerJob.toFixed(1)),
    coordinator_cpu_ms_per_job_per_agent: cpuPerJob === null ? null : Number((cpuPerJob / n).toFixed(3)),
    packs_rss_mb: Math.round(packRss),
    // The agents' own CPU per job (verify, parse, store, sign, send; no-op step), over the fan-out
    // rounds: with the packs on the coordinator's cores, N × this bounds fanout_s from below.
    packs_cpu_ms_per_job_per_agent: Number(((packs1 - packs0) / o.rounds / n).toFixed(3)),
    // Syncs per agent and fan-out job: ~0 when targets take their place from the definition (a
    // roster or inline tickets), ≥ 1 when each asks for its ticket (periodic syncs add a few).
    fanout_syncs_per_agent_job: Number(((syncs1 - syncs0) / n / o.rounds).toFixed(3)),
    // Agents seen admitted and then not, per agent and minute, over the rounds (0 on a quiet fleet).
    link_drops_per_agent_min: Number((((await statusOf(packs)).drops - drops0) / n / ((performance.now() - t0m) / 60_000)).toFixed(3)),
  }
  if (o.reconnect === false) return { ...figures, reconnect_s: null }
  // Reconnect: SIGKILL, restart on the same data directory (same key, same ports), until every
  // agent has been admitted again and has synced since the kill (a sync answered means both).
  const killedAt = Date.now()
  const t0 = performance.now()
  const reconnectPacks0 = await packsCpu()
  const links0 = await statusOf(packs)
  await fleet.killCoordinator('SIGKILL')
  await fleet.startCoordinator()
  const coordinatorUpS = (performance.now() - t0) / 1000
  note(`${label}: coordinator restarted in ${coordinatorUpS.toFixed(1)} s`)
  let last: PackStatus | undefined
  // A fleet that does not come back within ROUND_TIMEOUT_MS is a figure too: reconnect_s is then null.
  const back = await waitFor('every agent to reconnect and sync', async () => {
    last = await statusOf(packs, killedAt)
    return last.synced >= n ? true : undefined
  }, ROUND_TIMEOUT_MS, STATUS_POLL_MS).then(() => true, () => false)
  const reconnectS = (performance.now() - t0) / 1000
  const reconnectPacksMs = (await packsCpu()) - reconnectPacks0
  const reconnectCoordinatorMs = (await cpuMs(fleet.coordinator.proc.pid))?.self ?? null
  note(`${label}: ${back ? `every agent reconnected and synced ${reconnectS.toFixed(1)} s after the kill` : `${last?.synced ?? 0} of ${n} agents synced within ${ROUND_TIMEOUT_MS / 1000} s of the kill`}`)
  const hellos = await metric(fleet, 'chorus_rpc_requests_total', 'type="hello"')
  const syncs = await metric(fleet, 'chorus_rpc_requests_total', 'type="sync"')
  // A job after the restart reaches every agent (those its gossip misses get it at their next
  // periodic sync): they are synced, not just connected. Reported, not required.
  let after: number | null = null
  let afterError: string | undefined
  try { after = await runJob(fleet, n, fleetJob(1, `${label} after reconnect`), AFTER_RECONNECT_TIMEOUT_MS) } catch (err) { afterError = (err as Error).message }
  note(`${label}: fan-out after the reconnect ${after === null ? afterError : `${after.toFixed(2)} s`}`)
  return {
    ...figures,
    reconnect_s: back ? Number(reconnectS.toFixed(2)) : null,
    reconnect_synced_agents: last?.synced ?? 0,
    reconnect_coordinator_up_s: Number(coordinatorUpS.toFixed(2)),
    reconnect_hellos: hellos,
    // Over the fleet, from the kill until every agent synced: the agents' rounds of dials to their
    // peers, their failed attempts to reach the coordinator, and those that found it busy.
    reconnect_peer_rounds: (last?.peerRounds ?? 0) - links0.peerRounds,
    reconnect_failed_attempts: (last?.failures ?? 0) - links0.failures,
    reconnect_busy_attempts: (last?.busyFailures ?? 0) - links0.busyFailures,
    // CPU per agent from the kill until every agent synced: the packs' (dials, handshakes, the
    // agents' syncs with each other while the coordinator is away, hellos) and the restarted
    // coordinator's (start-up included). With every agent on the bench's cores, N × their sum
    // over the cores bounds reconnect_s from below.
    reconnect_packs_cpu_ms_per_agent: Number((reconnectPacksMs / n).toFixed(1)),
    reconnect_coordinator_cpu_ms_per_agent: reconnectCoordinatorMs === null ? null : Number((reconnectCoordinatorMs / n).toFixed(1)),
    reconnect_syncs: syncs,
    fanout_after_reconnect_s: after === null ? null : round3(after),
    ...(afterError ? { fanout_after_reconnect_error: afterError } : {}),
  }
}

export async function benchFleet(o: FleetBenchOptions) {
  if (o.perProcess > MAX_AGENTS_PER_PACK) throw new Error(`--per-process: at most ${MAX_AGENTS_PER_PACK}, got ${o.perProcess}`)
  const n = o.agents
  const load = { start: loadavg().map((x) => Number(x.toFixed(2))), end: [] as number[] }
  // The coordinator only: the agents are the packs'. Its enrolment token admits all N.
  const fleet = new LocalFleet({ agents: 0, enrollment: { extraUses: n, attributes: BENCH_ATTRIBUTES }, ...(o.keep ? { keepDirs: true } : {}) })
  const packs: Pack[] = []
  // Interrupted (Ctrl-C, a timeout's SIGTERM): end the coordinator and the packs too, by pid, before exiting.
  const interrupted = () => {
    for (const p of [fleet.coordinator?.proc, ...packs.map((k) => k.proc)]) if (p?.pid && p.exitCode === null) p.kill('SIGKILL')
    process.exit(130)
  }
  process.once('SIGINT', interrupted)
  process.once('SIGTERM', interrupted)
  try {
    await fleet.start()
    if (o.keep) note(`data directories and logs in ${fleet.baseDir}`)
    await new Promise((r) => setTimeout(r, 500))
    const idleRssMb = (await rssMb(fleet.coordinator.proc.pid)) ?? 0
    const enrollToken = (await readFile(fleet.enrollTokenFile, 'utf8')).trim()
    const t0 = performance.now()
    const packCount = Math.ceil(n / o.perProcess)
    const parallel = Math.max(1, Math.ceil(o.joining / packCount))
    // Every pack process starts at once; each starts `parallel` agents at a time, the next when one has joined.
    for (let first = 0, i = 0; first < n; first += o.perProcess, i++) {
      const dir = join(fleet.baseDir, `pack-${i + 1}`)
      await mkdir(dir, { recursive: true })
      const log = await open(join(dir, 'pack.log'), 'a')
      const proc = spawn(process.execPath, [...PACK_NODE_FLAGS, CHORUS_BIN, 'agent-pack'], { stdio: ['ignore', log.fd, log.fd, 'ipc'], env: { ...process.env, CHORUS_LOG_LEVEL: process.env.CHORUS_LOG_LEVEL ?? 'warn' } })
      proc.once('exit', () => void log.close())
      const pack = new Pack(proc)
      packs.push(pack)
      const agents = Array.from({ length: Math.min(o.perProcess, n - first) }, (_, j) => ({ nodeId: `fleet-${first + j + 1}`, dataDir: join(dir, `agent-${first + j + 1}`) }))
      void pack.start({ type: 'start', join: fleet.multiaddr, coordinatorKey: fleet.publicKey, enrollToken, attributes: {}, agents, parallel }).then((r) => {
        if (r.failed.length) pack.errors.push(...r.failed.map((f) => `${f.nodeId}: ${f.error}`))
      }, (err: Error) => pack.errors.push(err.message))
    }
    await waitFor(`${n} agents to join`, async () => {
      const failed = packs.flatMap((p) => p.errors)
      if (failed.length) throw new Error(`agents failed to start: ${failed.slice(0, 3).join('; ')}`)
      const s = await statusOf(packs)
      if (s.synced < n) return undefined
      const nodes = await apiGet<{ pagination: { total: number } }>(fleet.conn, '/v1/nodes?size=1')
      return nodes.pagination.total >= n ? true : undefined
    }, JOIN_BASE_TIMEOUT_MS + JOIN_TIMEOUT_PER_AGENT_MS * n, STATUS_POLL_MS).catch((err: Error) => { throw new Error(`${err.message}; see the pack logs in ${fleet.baseDir}`) })
    const joinS = (performance.now() - t0) / 1000
    note(`${n} agents joined in ${joinS.toFixed(1)} s`)
    // What the idle fleet costs (pings, gossipsub heartbeats, agent ticks), before any job.
    const idle0 = await Promise.all([fleet.coordinator.proc.pid, ...packs.map((p) => p.proc.pid)].map(cpuMs))
    const idleT = performance.now()
    await new Promise((r) => setTimeout(r, SETTLE_MS))
    const idle1 = await Promise.all([fleet.coordinator.proc.pid, ...packs.map((p) => p.proc.pid)].map(cpuMs))
    const idleS = (performance.now() - idleT) / 1000
    const used = (i: number) => (idle1[i] && idle0[i] ? idle1[i]!.self - idle0[i]!.self : 0)
    const coordinatorIdle = Math.round(used(0) / idleS)
    const packsIdle = Math.round(packs.reduce((a, _, i) => a + used(i + 1), 0) / idleS)
    // Warm-up: gossipsub has exchanged subscriptions once every agent got a job this way.
    const warmupS = await runJob(fleet, n, fleetJob(0, 'bench fleet warm-up'))
    await new Promise((r) => setTimeout(r, SETTLE_MS))
    const figures = await measure(fleet, packs, o, idleRssMb, 'bench fleet')
    let withHistory: Record<string, unknown> | undefined
    if (o.historyRuns > 0) {
      // No faster real path: every record is a real run, from jobs run to completion before the measured rounds.
      const jobs = Math.ceil(o.historyRuns / n)
      const t = performance.now()
      for (let j = 1; j <= jobs; j++) await runJob(fleet, n, fleetJob(j, 'bench fleet history'))
      const fillS = (performance.now() - t) / 1000
      const instances = (await apiGet<{ pagination: { total: number } }>(fleet.conn, '/v1/instances?size=1')).pagination.total
      withHistory = { history_runs: jobs * n, history_jobs: jobs, history_fill_s: Number(fillS.toFixed(1)), instances_stored: instances, ...(await measure(fleet, packs, o, idleRssMb, 'bench fleet history')) }
    }
    load.end = loadavg().map((x) => Number(x.toFixed(2)))
    return {
      agents: n,
      per_process: o.perProcess,
      processes: packs.length,
      rounds: o.rounds,
      start_pacing: `${packs.length} processes spawned at once; each starts ${parallel} agent(s) at a time, the next when one has joined (at most ${parallel * packs.length} joining at once)`,
      join_s: Number(joinS.toFixed(2)),
      warmup_fanout_s: round3(warmupS),
      coordinator_idle_rss_mb: idleRssMb,
      // CPU ms per wall second with every agent joined and no job: 1000 would be one core busy.
      coordinator_idle_cpu_ms_per_s: coordinatorIdle,
      packs_idle_cpu_ms_per_s: packsIdle,
      ...figures,
      ...(withHistory ? { with_history: withHistory } : {}),
      machine: { cpus: cpus().length, memory_gb: Math.round(totalmem() / 2 ** 30), loadavg_start: load.start, loadavg_end: load.end },
    }
  } finally {
    process.off('SIGINT', interrupted)
    process.off('SIGTERM', interrupted)
    await Promise.all(packs.map((p) => p.stop()))
    await fleet.stop()
  }
}
