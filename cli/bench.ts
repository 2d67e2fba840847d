// `chorus bench fanout`: time from submitting an immediate job to all N results stored at the
// coordinator, over R rounds, with N real agent processes on loopback.
import { readFile } from 'node:fs/promises'
import { LocalFleet, waitFor } from './fleet.js'
import { apiFetch, apiGet } from './client.js'
import { MAX_PAGE_SIZE } from '../protocol/api.js'

/** A field of /proc/PID/status in MB: VmRSS (what the kernel counts, shared pages of the Node binary included) or RssAnon (private). */
async function statusMb(pid: number | undefined, field: 'VmRSS' | 'RssAnon'): Promise<number | null> {
  if (!pid) return null
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8')
    const kb = Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1])
    return Number.isFinite(kb) ? Math.round((kb / 1024) * 10) / 10 : null
  } catch {
    return null
  }
}
export const rssMb = (pid: number | undefined) => statusMb(pid, 'VmRSS')

/** Clock ticks per second of /proc/PID/stat times (USER_HZ: 100 on Linux for every architecture Node supports). */
const USER_HZ = 100

/** CPU time of a process in ms from /proc/PID/stat: its own (user + system) and its waited-for children's (the steps). */
export async function cpuMs(pid: number | undefined): Promise<{ self: number; children: number } | null> {
  if (!pid) return null
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which is in parentheses and may hold spaces: state is field 3.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = (i: number) => Number(f[i - 3])
    return { self: ((ticks(14) + ticks(15)) * 1000) / USER_HZ, children: ((ticks(16) + ticks(17)) * 1000) / USER_HZ }
  } catch {
    return null
  }
}

/** CPU used between two samples of the same processes, in ms per job (per agent for agents). */
function cpuPerJob(before: ({ self: number; children: number } | null)[], after: ({ self: number; children: number } | null)[], jobs: number): { self: number; children: number } {
  let self = 0
  let children = 0
  after.forEach((a, i) => {
    const b = before[i]
    if (!a || !b) return
    self += a.self - b.self
    children += a.children - b.children
  })
  return { self: Number((self / jobs).toFixed(2)), children: Number((children / jobs).toFixed(2)) }
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

export function fanoutJob(round: number): string {
  return JSON.stringify({
    name: `bench fanout round ${round}`,
    scheduleRule: 'immediate',
    exceptionRules: [],
    target: {
      executionType: 'parallel',
      groups: [{
        timeoutSeconds: 60, batchSize: { type: 'percent', value: 100 }, distributionMethod: 'batching',
        successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }],
        nodeListType: 'filter', filter: { constraints: { attributes: [{ name: 'bench', operator: '=', value: ['yes'] }] } },
      }],
    },
    actions: {
      accessMode: 'agent',
      steps: [{
        name: 'hostname',
        interpreter: { name: 'chef-platform/shell-interpreter', skill: { minVersion: '1.0.0', maxVersion: '1.9.99' } },
        command: { linux: ['hostname'] },
        retryCount: 0,
        failureBehavior: { action: 'retryThenFail', retryBackoffStrategy: { type: 'none', delaySeconds: 0, arguments: [] } },
      }],
    },
  })
}

/** Longest a round may take before the benchmark gives up. */
const ROUND_TIMEOUT_MS = 120_000

/** Reads GET /v1/instances/:id/events until its `event: end` (the instance is decided) or the time is up. */
async function untilDecided(fleet: LocalFleet, instanceId: string, timeoutMs: number): Promise<void> {
  const res = await apiFetch(fleet.conn, `/v1/instances/${instanceId}/events`, { timeoutMs })
  if (!res.ok || !res.body) return
  const decoder = new TextDecoder()
  let text = ''
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    // Keep only the tail: the marker is all we look for.
    text = (text + decoder.decode(chunk, { stream: true })).slice(-4096)
    if (/^event: end$/m.test(text)) break
  }
  await res.body.cancel().catch(() => {})
}

/** The times of one run as GET /v1/instances/:id/runs reports them (ISO strings; agents and coordinator share this machine's clock). */
interface RunTimes {
  startedAt?: string
  finishedAt?: string
  receivedAt?: string
  steps: { attemptLog: { startedAt: string; finishedAt: string }[] }[]
}

/**
 * Where a round's time went, per run, in seconds: delivery (submit → the agent holds the
 * definition and its place and creates the run: coordinator planning and signing, gossip,
 * verification, and above MAX_INLINE_TICKETS targets the ticket round trip), start (run created
 * → its first step's process started), step (the first attempt of the first step) and result
 * (run finished at the agent → result stored at the coordinator: signing, persisting, the rpc,
 * the coordinator's verification and commit).
 */
interface Phases { delivery: number[]; start: number[]; step: number[]; result: number[] }

function phasesOf(runs: { items: RunTimes[] }, submittedAt: number, into: Phases): void {
  const ms = (iso: string | undefined) => (iso === undefined ? NaN : Date.parse(iso))
  const push = (list: number[], from: number, to: number) => { if (Number.isFinite(from) && Number.isFinite(to)) list.push((to - from) / 1000) }
  for (const r of runs.items) {
    const attempt = r.steps[0]?.attemptLog[0]
    push(into.delivery, submittedAt, ms(r.startedAt))
    push(into.start, ms(r.startedAt), ms(attempt?.startedAt))
    push(into.step, ms(attempt?.startedAt), ms(attempt?.finishedAt))
    push(into.result, ms(r.finishedAt), ms(r.receivedAt))
  }
}

function phaseMedians(p: Phases): Record<string, number | null> {
  const m = (list: number[]) => (list.length ? Number(median(list).toFixed(3)) : null)
  return { phase_delivery_s_median: m(p.delivery), phase_start_s_median: m(p.start), phase_step_s_median: m(p.step), phase_result_s_median: m(p.result) }
}

/** How long `bench fanout` watches the idle fleet before the rounds, in ms. */
export const IDLE_SAMPLE_MS = 3_000

export async function benchFanout(o: { agents: number; rounds: number; settle?: number }) {
  const fleet = new LocalFleet({ agents: o.agents, attributes: () => ({ bench: 'yes' }) })
  const t0 = performance.now()
  try {
    await fleet.start()
    const joinS = (performance.now() - t0) / 1000
    // What starting cost each agent (module loading, key, store, libp2p, enrolment), read as soon as all are registered.
    const startCpu = (await Promise.all(fleet.agents.map((a) => cpuMs(a.proc.pid)))).filter((c) => c !== null).map((c) => c.self)
    const sample = () => Promise.all([fleet.coordinator.proc.pid, ...fleet.agents.map((a) => a.proc.pid)].map(cpuMs))
    // Let gossipsub exchange subscriptions and settle before timing, then measure what an idle
    // fleet costs (heartbeats, pings, ticks): that CPU is in every job's figure too.
    await new Promise((r) => setTimeout(r, (o.settle ?? 2) * 1000))
    const idle0 = await sample()
    const idleStart = performance.now()
    await new Promise((r) => setTimeout(r, IDLE_SAMPLE_MS))
    const idle1 = await sample()
    const idleS = (performance.now() - idleStart) / 1000
    const agentIdle = cpuPerJob(idle0.slice(1), idle1.slice(1), o.agents)
    const coordinatorIdle = cpuPerJob(idle0.slice(0, 1), idle1.slice(0, 1), 1)
    const times: number[] = []
    const phases: Phases = { delivery: [], start: [], step: [], result: [] }
    const rounds: { instanceId: string; submittedAt: number }[] = []
    const roundsStart = performance.now()
    const cpu0 = await sample()
    for (let round = 1; round <= o.rounds; round++) {
      const start = performance.now()
      const submittedAt = Date.now()
      const jobId = await fleet.submit(fanoutJob(round))
      const { instanceIds } = await apiGet<{ instanceIds: string[] }>(fleet.conn, `/v1/jobs/${jobId}`)
      const allResults = async () => {
        const inst = await apiGet<{ counts: Record<string, number> }>(fleet.conn, `/v1/instances/${instanceIds[0]}`)
        return (inst.counts.success ?? 0) + (inst.counts.failure ?? 0) >= o.agents ? true : undefined
      }
      // Follow the instance's event stream until it is decided (no polling: polling every few ms
      // was most of the coordinator's CPU per job), then check the count once; poll only if short.
      await untilDecided(fleet, instanceIds[0]!, ROUND_TIMEOUT_MS)
      if (!(await allResults())) await waitFor('all results', allResults, ROUND_TIMEOUT_MS, 5)
      times.push((performance.now() - start) / 1000)
      rounds.push({ instanceId: instanceIds[0]!, submittedAt })
    }
    const cpu1 = await sample()
    const roundsS = (performance.now() - roundsStart) / 1000
    // Read after the CPU sample, so the benchmark's reading of the runs is not in the coordinator's CPU per job.
    // A round's runs in one page (MAX_PAGE_SIZE ≥ any fleet this bench starts).
    for (const r of rounds) phasesOf(await apiGet<{ items: RunTimes[] }>(fleet.conn, `/v1/instances/${r.instanceId}/runs?size=${MAX_PAGE_SIZE}`), r.submittedAt, phases)
    const coordinatorCpu = cpuPerJob(cpu0.slice(0, 1), cpu1.slice(0, 1), o.rounds)
    const agentCpu = cpuPerJob(cpu0.slice(1), cpu1.slice(1), o.rounds * o.agents)
    const rss = (await Promise.all(fleet.agents.map((a) => rssMb(a.proc.pid)))).filter((x): x is number => x !== null)
    const priv = (await Promise.all(fleet.agents.map((a) => statusMb(a.proc.pid, 'RssAnon')))).filter((x): x is number => x !== null)
    return {
      agents: o.agents,
      rounds: o.rounds,
      settle_s: o.settle ?? 2,
      all_results_s_median: Number(median(times).toFixed(3)),
      all_results_s_max: Number(Math.max(...times).toFixed(3)),
      all_results_s: times.map((t) => Number(t.toFixed(3))),
      join_s: Number(joinS.toFixed(2)),
      agent_start_cpu_ms_median: startCpu.length ? median(startCpu) : null,
      agent_start_cpu_ms_max: startCpu.length ? Math.max(...startCpu) : null,
      ...phaseMedians(phases),
      agent_rss_mb_median: rss.length ? median(rss) : null,
      agent_rss_mb_max: rss.length ? Math.max(...rss) : null,
      agent_private_mb_median: priv.length ? median(priv) : null,
      coordinator_rss_mb: await rssMb(fleet.coordinator.proc.pid),
      // CPU over the rounds (the benchmark's own API polling included), from /proc/PID/stat.
      agent_cpu_ms_per_job: agentCpu.self,
      agent_step_cpu_ms_per_job: agentCpu.children,
      coordinator_cpu_ms_per_job: coordinatorCpu.self,
      coordinator_cpu_ms_per_job_per_agent: Number((coordinatorCpu.self / o.agents).toFixed(3)),
      // An idle fleet's CPU per second, and the share of agent_cpu_ms_per_job it accounts for (the rounds took rounds_s).
      agent_idle_cpu_ms_per_s: Number((agentIdle.self / idleS).toFixed(2)),
      coordinator_idle_cpu_ms_per_s: Number((coordinatorIdle.self / idleS).toFixed(2)),
      rounds_s: Number(roundsS.toFixed(2)),
      agent_idle_cpu_ms_per_job: Number(((agentIdle.self / idleS) * roundsS / o.rounds).toFixed(2)),
    }
  } finally {
    await fleet.stop()
  }
}
