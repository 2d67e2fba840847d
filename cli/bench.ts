// `chorus bench fanout`: time from submitting an immediate job to all N results stored at the
// coordinator, over R rounds, with N real agent processes on loopback.
import { readFile } from 'node:fs/promises'
import { LocalFleet, waitFor } from './fleet.js'
import { apiGet } from './client.js'

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

export async function benchFanout(o: { agents: number; rounds: number }) {
  const fleet = new LocalFleet({ agents: o.agents, attributes: () => ({ bench: 'yes' }) })
  const t0 = performance.now()
  try {
    await fleet.start()
    const joinS = (performance.now() - t0) / 1000
    // Let gossipsub exchange subscriptions and settle before timing.
    await new Promise((r) => setTimeout(r, 2_000))
    const times: number[] = []
    const sample = () => Promise.all([fleet.coordinator.proc.pid, ...fleet.agents.map((a) => a.proc.pid)].map(cpuMs))
    const cpu0 = await sample()
    for (let round = 1; round <= o.rounds; round++) {
      const start = performance.now()
      const jobId = await fleet.submit(fanoutJob(round))
      const { instanceIds } = await apiGet<{ instanceIds: string[] }>(fleet.conn, `/v1/jobs/${jobId}`)
      await waitFor('all results', async () => {
        const inst = await apiGet<{ counts: Record<string, number> }>(fleet.conn, `/v1/instances/${instanceIds[0]}`)
        return (inst.counts.success ?? 0) + (inst.counts.failure ?? 0) >= o.agents ? true : undefined
      }, 120_000, 5)
      times.push((performance.now() - start) / 1000)
    }
    const cpu1 = await sample()
    const coordinatorCpu = cpuPerJob(cpu0.slice(0, 1), cpu1.slice(0, 1), o.rounds)
    const agentCpu = cpuPerJob(cpu0.slice(1), cpu1.slice(1), o.rounds * o.agents)
    const rss = (await Promise.all(fleet.agents.map((a) => rssMb(a.proc.pid)))).filter((x): x is number => x !== null)
    const priv = (await Promise.all(fleet.agents.map((a) => statusMb(a.proc.pid, 'RssAnon')))).filter((x): x is number => x !== null)
    return {
      agents: o.agents,
      rounds: o.rounds,
      all_results_s_median: Number(median(times).toFixed(3)),
      all_results_s_max: Number(Math.max(...times).toFixed(3)),
      all_results_s: times.map((t) => Number(t.toFixed(3))),
      join_s: Number(joinS.toFixed(2)),
      agent_rss_mb_median: rss.length ? median(rss) : null,
      agent_rss_mb_max: rss.length ? Math.max(...rss) : null,
      agent_private_mb_median: priv.length ? median(priv) : null,
      coordinator_rss_mb: await rssMb(fleet.coordinator.proc.pid),
      // CPU over the rounds (the benchmark's own API polling included), from /proc/PID/stat.
      agent_cpu_ms_per_job: agentCpu.self,
      agent_step_cpu_ms_per_job: agentCpu.children,
      coordinator_cpu_ms_per_job: coordinatorCpu.self,
      coordinator_cpu_ms_per_job_per_agent: Number((coordinatorCpu.self / o.agents).toFixed(3)),
    }
  } finally {
    await fleet.stop()
  }
}
