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
const rssMb = (pid: number | undefined) => statusMb(pid, 'VmRSS')

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
    }
  } finally {
    await fleet.stop()
  }
}
