// `chorus bench history --runs N`: fills a coordinator store with N runs through the real write
// path (the coordinator core's steps and their persist batches into level: a recurring job on
// K nodes, one instance a minute of virtual time; every RESULT_EVERY-th instance gets a signed
// result from every node, the others end by their deadline), then starts a real coordinator
// process on it and measures its restart time, its RSS (after the restart, once it caught up,
// after the reads with its anonymous part, and the reads' peak), and the median latency of a
// report, an instance list and a run show over the HTTP API.
import type { Command } from 'commander'
import type { JobTemplate } from '../protocol/template.js'
import type { CoordinatorConfig, CoordinatorEffect, CoordinatorEvent, NodeRecord } from '../coordinator/core.js'
import type { StoreOp } from '../coordinator/store.js'

/** Loaded when the bench runs: registering the command (every CLI start) loads none of it. */
async function modules() {
  const [cp, fs, os, path, net, level, keys, wire, ids, identity, parse, core, store, paths, client, bench] = await Promise.all([
    import('node:child_process'), import('node:fs/promises'), import('node:os'), import('node:path'), import('node:net'), import('level'),
    import('../protocol/keys.js'), import('../protocol/wire.js'), import('../protocol/ids.js'), import('../runtime/identity.js'), import('../protocol/parse.js'),
    import('../coordinator/core.js'), import('../coordinator/store.js'), import('./paths.js'), import('./client.js'), import('./bench.js'),
  ])
  return { spawn: cp.spawn, ...fs, tmpdir: os.tmpdir, join: path.join, createServer: net.createServer, Level: (level.Level ?? (level as unknown as { default: typeof level }).default.Level) as typeof level.Level, ...keys, ...wire, ...ids, ...identity, ...parse, ...core, ...store, ...paths, ...client, median: bench.median }
}
type M = Awaited<ReturnType<typeof modules>>

/** Every this many instances gets a result from each node (with a step and its output); the rest time out. */
export const RESULT_EVERY = 10
/** Requests timed per measured call. */
export const LATENCY_SAMPLES = 30
/**
 * Wait after the restart before the reads, in ms: the restarted coordinator first catches up on
 * the occurrences missed since the fill's clock stopped (about 30 instances of K runs, created
 * and timed out at once), which is restart work, not the reads' (their peak RSS is reset after it).
 */
export const SETTLE_MS = 5_000
const MINUTE_MS = 60_000

function job(m: M, timeoutSeconds: number, count?: number): JobTemplate {
  const text = JSON.stringify({
    name: 'bench history', scheduleRule: `RRULE:FREQ=MINUTELY;INTERVAL=1${count ? `;COUNT=${count}` : ''}`, exceptionRules: [],
    target: { executionType: 'parallel', groups: [{ timeoutSeconds, batchSize: { type: 'percent', value: 100 }, distributionMethod: 'batching', successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }], nodeListType: 'filter', filter: { constraints: { attributes: [{ name: 'bench', operator: '=', value: ['history'] }] } } }] },
    actions: { accessMode: 'agent', steps: [{ name: 'uptime', interpreter: { name: 'chef-platform/shell-interpreter', skill: { minVersion: '1.0.0', maxVersion: '1.9.99' } }, command: { linux: ['uptime'] }, retryCount: 0, failureBehavior: { action: 'retryThenFail', retryBackoffStrategy: { type: 'none', delaySeconds: 0, arguments: [] } } }] },
  })
  const parsed = m.parseTemplateText(text, 'json')
  if (!parsed.ok) throw new Error(`bench template: ${JSON.stringify(parsed.problems)} (timeout ${timeoutSeconds} s)`)
  return parsed.template
}

async function freePort(m: M): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = m.createServer().listen(0, '127.0.0.1', () => { const a = s.address(); s.close(() => resolve(typeof a === 'object' && a ? a.port : 0)) }).on('error', reject)
  })
}

/** A process's memory from /proc/PID/status in MB: VmRSS (resident), VmHWM (its peak since it started or since clear_refs reset it), RssAnon (resident without mapped files: heap and native allocations). */
async function rssMb(m: M, pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon' = 'VmRSS'): Promise<number | null> {
  const kb = Number(new RegExp(`${field}:\\s+(\\d+)`).exec(await m.readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''))?.[1])
  return Number.isFinite(kb) && kb > 0 ? Math.round(kb / 102.4) / 10 : null
}

export interface FillOptions {
  runs: number
  nodes: number
  /** The fill's virtual clock ends about 30 minutes before this. */
  now: number
  jobId?: string
  /** The job's group timeout (default 30 s). */
  timeoutSeconds?: number
  /** Every this many instances gets results (default RESULT_EVERY). */
  resultEvery?: number
  /** Leave the last instance live: no results for it and no final ticks past its deadline. */
  openLast?: boolean
  /** The job ends with the fill's instances (COUNT in its rule): a coordinator started on the store creates no more (tests: a minute boundary would add one). */
  finite?: boolean
}

/** Fills DIR's store through the core; returns ids to read back and how long it took. */
export async function fillHistory(dir: string, o: FillOptions): Promise<{ jobId: string; instanceIds: string[]; runIds: string[]; fill_s: number; instances: number }> {
  return fillWith(await modules(), dir, o)
}

async function fillWith(m: M, dir: string, o: FillOptions): Promise<{ jobId: string; instanceIds: string[]; runIds: string[]; fill_s: number; instances: number }> {
  const t0 = performance.now()
  const { identity } = await m.loadOrCreateIdentity(dir)
  const config: CoordinatorConfig = { identity, ...m.DEFAULT_COORDINATOR_TIMING, dropFinished: true }
  const store = new m.LevelStore(new m.Level<string, unknown>(m.join(dir, 'db'), { valueEncoding: 'json' }))
  const keys = Array.from({ length: o.nodes }, () => m.generateIdentity())
  const start = o.now - Math.ceil(o.runs / o.nodes + 30) * MINUTE_MS
  const nodes: [string, NodeRecord][] = keys.map((k, i) => {
    const nodeId = `bench-${String(i).padStart(5, '0')}`
    return [`node/${nodeId}`, { nodeId, publicKey: k.publicKey, peerId: m.peerIdOf(k.publicKey), facts: { bench: 'history', hostname: nodeId }, agentVersion: 'bench', addrs: [], skills: { 'chef-platform/shell-interpreter': ['1.0.0'] }, firstSeenAt: start, lastSeenAt: start }]
  })
  // The nodes are live state written as records (enrolment is not what this measures); the history goes through the core.
  await store.batch(nodes.map(([key, value]) => ({ type: 'put', key, value })))
  const state = m.restoreCoordinator(nodes)
  const step = async (events: CoordinatorEvent[], now: number): Promise<CoordinatorEffect[]> => {
    const effects = events.flatMap((e) => m.coordinatorStep(state, config, e, now))
    const ops: StoreOp[] = []
    for (const e of effects) if (e.type === 'persist') { for (const p of e.puts) ops.push({ type: 'put', key: p.key, value: p.value }); for (const d of e.dels) ops.push({ type: 'del', key: d }) }
    await store.batch(ops)
    return effects
  }
  const jobId = o.jobId ?? 'bench-history-job'
  const submitted = (await step([{ type: 'submit', requestId: 'submit', jobId, template: job(m, o.timeoutSeconds ?? 30, o.finite ? Math.ceil(o.runs / o.nodes) : undefined), actor: { name: 'bench', role: 'admin' } }], start)).find((e) => e.type === 'reply_submit')
  if (!submitted || submitted.type !== 'reply_submit' || !submitted.outcome.ok) throw new Error(`bench job refused: ${JSON.stringify(submitted)}`)
  const instanceIds: string[] = []
  const runIds: string[] = []
  const wanted = Math.ceil(o.runs / o.nodes)
  let now = start
  for (let k = 0; instanceIds.length < wanted; k++) {
    if (k > 8 * wanted + 10) throw new Error(`the bench job made ${instanceIds.length} instances in ${k} minutes`)
    // Ticks 4 times a minute, as a coordinator does more often: an instance is created before its deadline.
    now += MINUTE_MS / 4
    const before = new Set(state.live)
    await step([{ type: 'tick' }], now)
    const created = [...state.live].filter((id) => !before.has(id)).map((id) => state.instances.get(id)!)
    for (const inst of created) {
      instanceIds.push(inst.id)
      const every = o.resultEvery ?? RESULT_EVERY
      if ((instanceIds.length - 1) % every !== 0 || (o.openLast && instanceIds.length === wanted)) continue
      const results: CoordinatorEvent[] = keys.map((key, i) => {
        const nodeId = nodes[i]![1].nodeId
        const runId = m.runIdFor(inst.id, nodeId)
        if (i % 97 === 0) runIds.push(runId)
        const envelope = m.seal(key, {
          type: 'result', v: m.PROTOCOL_VERSION, runId, jobId, instanceId: inst.id, nodeId, occurrenceAt: inst.occurrenceAt, group: 0, batch: 0, status: 'success', startedAt: inst.occurrenceAt + 10, finishedAt: inst.occurrenceAt + 900,
          steps: [{ number: 1, name: 'uptime', status: 'success', attempts: 1, exitCode: 0, outputs: {}, stdout: ` ${nodeId} up 12 days,  3:04,  0 users,  load average: 0.08, 0.03, 0.01\n`, stderr: '' }],
        })
        return { type: 'rpc', requestId: `r${k}.${i}`, envelope, peerId: m.peerIdOf(key.publicKey) }
      })
      await step(results, now + 1_000)
    }
  }
  const occurrence = now
  // Past every deadline: the rest time out, and every instance is finished and out of memory.
  if (!o.openLast) {
    await step([{ type: 'tick' }], occurrence + 10 * MINUTE_MS)
    await step([{ type: 'tick' }], occurrence + 10 * MINUTE_MS + 1)
  }
  await store.close()
  return { jobId, instanceIds, runIds, fill_s: (performance.now() - t0) / 1000, instances: instanceIds.length }
}

async function timed(m: M, samples: number, call: (i: number) => Promise<unknown>): Promise<number> {
  const ms: number[] = []
  for (let i = 0; i < samples; i++) {
    const t = performance.now()
    await call(i)
    ms.push(performance.now() - t)
  }
  return Number(m.median(ms).toFixed(2))
}

export async function benchHistory(o: { runs: number; nodes: number; keep?: boolean }) {
  const m = await modules()
  const dir = await m.mkdtemp(m.join(m.tmpdir(), 'chorus-bench-history-'))
  const fill = await fillWith(m, dir, { runs: o.runs, nodes: o.nodes, now: Date.now() })
  const port = await freePort(m)
  const t0 = performance.now()
  const proc = m.spawn(process.execPath, [m.CHORUS_BIN, 'coordinator', '--data', dir, '--api', `127.0.0.1:${port}`, '--listen', '/ip4/127.0.0.1/tcp/0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CHORUS_LOG_LEVEL: 'warn' } })
  let output = ''
  proc.stdout!.on('data', (d: Buffer) => { output += d.toString() })
  proc.stderr!.on('data', (d: Buffer) => { output += d.toString() })
  try {
    const api = `127.0.0.1:${port}`
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`coordinator exited (${proc.exitCode}): ${output.slice(-2000)}`)
      if (output.includes('coordinator ready')) break
      if (performance.now() - t0 > 300_000) throw new Error('coordinator not ready after 300 s')
      await new Promise((r) => setTimeout(r, 10))
    }
    const restartS = (performance.now() - t0) / 1000
    const token = (await m.readFile(m.join(dir, 'admin.token'), 'utf8')).trim()
    const conn = { api, token }
    const rss = await rssMb(m, proc.pid!)
    await new Promise((r) => setTimeout(r, SETTLE_MS))
    const rssSettled = await rssMb(m, proc.pid!)
    // "5" resets the peak (VmHWM) to the current RSS: what follows is the reads' own peak.
    await m.writeFile(`/proc/${proc.pid}/clear_refs`, '5').catch(() => undefined)
    const pick = <T>(xs: T[], i: number) => xs[(i * 7919) % xs.length]!
    const report = await timed(m, LATENCY_SAMPLES, (i) => m.apiGet(conn, `/v1/reports/${pick(fill.instanceIds, i)}`))
    const jobReport = await timed(m, LATENCY_SAMPLES, () => m.apiGet(conn, `/v1/reports/${fill.jobId}?size=5`))
    const list = await timed(m, LATENCY_SAMPLES, () => m.apiGet(conn, `/v1/instances?size=50`))
    const listJob = await timed(m, LATENCY_SAMPLES, (i) => m.apiGet(conn, `/v1/instances?job=${fill.jobId}&status=failure&size=50&page=${1 + (i % 5)}`))
    const runShow = await timed(m, LATENCY_SAMPLES, (i) => m.apiGet(conn, `/v1/runs/${pick(fill.runIds, i)}`))
    const rssAfter = await rssMb(m, proc.pid!)
    const rssAnonAfter = await rssMb(m, proc.pid!, 'RssAnon')
    const rssPeak = await rssMb(m, proc.pid!, 'VmHWM')
    return {
      runs: fill.instances * o.nodes, nodes: o.nodes, instances: fill.instances,
      fill_s: Number(fill.fill_s.toFixed(1)),
      restart_s: Number(restartS.toFixed(2)),
      rss_mb: rss,
      rss_mb_settled: rssSettled,
      rss_mb_after_reads: rssAfter,
      rss_anon_mb_after_reads: rssAnonAfter,
      rss_peak_mb_reads: rssPeak,
      report_instance_ms_median: report,
      report_job_page_ms_median: jobReport,
      instance_list_ms_median: list,
      instance_list_job_status_ms_median: listJob,
      run_show_ms_median: runShow,
    }
  } finally {
    proc.kill('SIGTERM')
    await new Promise((r) => (proc.exitCode !== null ? r(undefined) : proc.once('exit', r)))
    if (!o.keep) await m.rm(dir, { recursive: true, force: true })
  }
}

export function registerBenchHistory(bench: Command): void {
  bench.command('history')
    .description('Fill a store with N runs through the coordinator core, restart a coordinator on it; print restart time, RSS and API latencies as JSON')
    .option('--runs <n>', 'runs to store', (v) => Math.max(1, Math.floor(Number(v))), 100_000)
    .option('--nodes <k>', 'nodes the recurring job targets (runs per instance)', (v) => Math.max(1, Math.floor(Number(v))), 1_000)
    .option('--keep', 'keep the data directory')
    .option('--json', 'print JSON (the only format)')
    .addHelpText('after', '\nExample: chorus bench history --runs 1000000 --json')
    .action(async (o: { runs: number; nodes: number; keep?: boolean }) => {
      process.stdout.write(JSON.stringify(await benchHistory(o)) + '\n')
    })
}
