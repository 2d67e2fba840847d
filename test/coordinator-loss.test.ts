// The coordinator dies in the middle of a rolling rollout and stays away, over real processes:
// waiting targets notice the closed connection (not the end of their held watch) and go on by
// peer gossip. At most 2 runs at once, every node exactly once, no gap over 15 s between run ends.
import { describe, expect, it } from 'vitest'
import { readFile } from 'node:fs/promises'
import { LocalFleet, waitFor } from '../cli/fleet.js'
import { withLocalFleet } from './helpers/fleet.js'

let fleet: LocalFleet
withLocalFleet('chorus-loss-', { agents: 8, agentConfig: { allow: 'any' } }, (f) => { fleet = f })

const job = (nodes: string[]) => JSON.stringify({
  name: 'rolling restart', scheduleRule: 'immediate', exceptionRules: [],
  target: { executionType: 'parallel', groups: [{ timeoutSeconds: 300, batchSize: { type: 'number', value: 2 }, distributionMethod: 'rolling', successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }], nodeListType: 'nodes', nodeIdentifiers: nodes }] },
  actions: { accessMode: 'agent', steps: [{ name: 'restart', interpreter: { name: 'chef-platform/shell-interpreter', skill: { minVersion: '1.0.0', maxVersion: '1.9.99' } }, command: { linux: ['sleep 2'] }, retryCount: 0, failureBehavior: { action: 'retryThenFail', retryBackoffStrategy: { type: 'none', delaySeconds: 0, arguments: [] } } }] },
})

/** Each agent's log lines about the job: when its run started and finished (pino `time`, ms). */
async function runTimes(jobId: string): Promise<{ node: string; starts: number[]; ends: number[] }[]> {
  return Promise.all(fleet.agents.map(async (a) => {
    const lines = (await readFile(a.logFile, 'utf8')).split('\n').filter((l) => l.includes(jobId) || l.includes('"run finished'))
    const at = (needle: string) => lines.filter((l) => l.includes(needle)).map((l) => (JSON.parse(l) as { time: number }).time)
    return { node: a.nodeId, starts: at('run started"'), ends: at('"msg":"run finished') }
  }))
}

describe('losing the coordinator mid-rollout', () => {
  it('goes on without it: at most 2 at once, each node once, no gap over 15 s between run ends', async () => {
    const id = await fleet.submit(job(fleet.nodeIds))
    await waitFor('two runs to start', async () => ((await runTimes(id)).filter((r) => r.starts.length > 0).length >= 2 ? true : undefined), 30_000, 20)
    const killedAt = Date.now()
    await fleet.killCoordinator('SIGKILL')
    await waitFor('every run to finish with the coordinator down', async () => ((await runTimes(id)).every((r) => r.ends.length > 0) ? true : undefined), 120_000, 200)
    const runs = await runTimes(id)
    for (const r of runs) expect(r.starts, r.node).toHaveLength(1)
    const intervals = runs.map((r) => [r.starts[0]!, r.ends[0]!] as const)
    for (const [s] of intervals) expect(intervals.filter(([s2, e2]) => s2 <= s && s < e2).length).toBeLessThanOrEqual(2)
    const ends = intervals.map(([, e]) => e).filter((e) => e > killedAt).sort((a, b) => a - b)
    for (let i = 1; i < ends.length; i++) expect(ends[i]! - ends[i - 1]!, `gap before the ${i + 1}th run end after the kill`).toBeLessThanOrEqual(15_000)
    // Back up, the coordinator gets every result once.
    await fleet.startCoordinator()
    const report = await fleet.waitForJob(id, 60_000)
    expect(report.instances[0]!.runs.map((r) => r.status)).toEqual(Array(8).fill('success'))
  }, 180_000)
})
