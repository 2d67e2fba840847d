// The coordinator dies in the middle of a rolling rollout and stays away, over real processes:
// waiting targets notice the closed connection (not the end of their held watch) and go on by
// peer gossip. At most 2 runs at once, every node exactly once, all done with the coordinator down.
import { describe, expect, it } from 'vitest'
import { readFile } from 'node:fs/promises'
import { LocalFleet, waitFor } from '../cli/fleet.js'
import { withLocalFleet } from './helpers/fleet.js'
import { shellJob } from './helpers/templates.js'
import { WATCH_HOLD_MS } from '../protocol/timing.js'

let fleet: LocalFleet
withLocalFleet('chorus-loss-', { agents: 8, agentConfig: { allow: 'any' } }, (f) => { fleet = f })

/** Two at a time (rolling), every run must succeed; each run sleeps 2 s. */
const job = (nodes: string[]) => JSON.stringify(shellJob('rolling restart', nodes, ['sleep 2'], {
  timeoutSeconds: 300, batchSize: { type: 'number', value: 2 }, distributionMethod: 'rolling',
}, { name: 'restart' }))

/** Each agent's log lines about the job since `from` (line counts per agent log): when its run
 *  started and finished (pino `time`, ms), and whether it logged the loss of the coordinator's
 *  connection after `from` and before its run started. */
async function runTimes(jobId: string, from: number[]): Promise<{ node: string; starts: number[]; ends: number[]; lostBeforeStart: boolean }[]> {
  return Promise.all(fleet.agents.map(async (a, i) => {
    const all = (await readFile(a.logFile, 'utf8')).split('\n').slice(from[i])
    const lines = all.filter((l) => l.includes(jobId))
    const at = (needle: string) => lines.filter((l) => l.includes(needle)).map((l) => (JSON.parse(l) as { time: number }).time)
    const lost = all.findIndex((l) => l.includes('lost the connection to the coordinator'))
    const started = all.findIndex((l) => l.includes(jobId) && l.includes('run started"'))
    return { node: a.nodeId, starts: at('run started"'), ends: at('"msg":"run finished'), lostBeforeStart: lost >= 0 && lost < started }
  }))
}

/** Log lines per agent so far: an attempt reads only what comes after. */
const logLengths = () => Promise.all(fleet.agents.map(async (a) => (await readFile(a.logFile, 'utf8')).split('\n').length - 1))

/**
 * Longest gap between consecutive run ends while the coordinator is away (the issue's target,
 * a protocol bound, not a speed figure). The slowest turn is the first one after the kill: the
 * agents turn to the peer path COORDINATOR_AWAY_MS (12 s, agent/link.ts) after the connection
 * closed, on their next tick (AGENT_TICK_MS, 0.5 s), and each later turn follows a gossiped
 * `done` at once; the run time cancels out (both ends of the gap are a run's end). What is left,
 * 2.5 s, is for gossip delivery on a loaded host. A lost progress message is gossiped again
 * within PEER_PROGRESS_REPEAT_MS (5 s, agent/turns.ts).
 */
const MAX_RUN_END_GAP_MS = 15_000

describe('losing the coordinator mid-rollout', () => {
  // Until the fix this failed in about 1 of 3 runs on a loaded 2-core machine: one target (the
  // last to receive the definition) had asked for its ticket when the coordinator died, never got
  // it, and sat out the rollout while the others went on. Gated jobs of up to 64 targets now carry
  // every ticket in the definition (coordinator/jobs.ts), and progress is gossiped again while
  // the coordinator stays away (agent/turns.ts PEER_PROGRESS_REPEAT_MS).
  it('goes on without it: at most 2 at once, each node once, no gap over 15 s between run ends, the targets still waiting go on once the connection closes', async () => {
    const from = await logLengths()
    const id = await fleet.submit(job(fleet.nodeIds))
    await waitFor('two runs to start', async () => ((await runTimes(id, from)).filter((r) => r.starts.length > 0).length >= 2 ? true : undefined), 30_000, 20)
    const killedAt = Date.now()
    await fleet.killCoordinator('SIGKILL')
    // Targets stalled until their held watch ended are caught by each late target logging the
    // closed connection before its run, and by the gap bound (below). The deadline only bounds
    // the wait (twice WATCH_HOLD_MS); on a timeout every agent's run times and its link, peer and
    // ticket lines are printed.
    try {
      await waitFor('every run to finish with the coordinator down', async () => ((await runTimes(id, from)).every((r) => r.ends.length > 0) ? true : undefined), 2 * WATCH_HOLD_MS, 200)
    } catch (err) {
      const times = await runTimes(id, from)
      const links = await Promise.all(fleet.agents.map(async (a) => (await readFile(a.logFile, 'utf8')).split('\n').slice(from[fleet.agents.indexOf(a)]).filter((l) => /lost the connection|peer|joined|ticket|run (started|finished)/.test(l)).slice(-12).join('\n')))
      console.error(`killed at ${killedAt}\n${JSON.stringify(times, null, 1)}\n${links.map((l, i) => `--- ${fleet.agents[i]!.nodeId}\n${l}`).join('\n')}`)
      throw err
    }
    const runs = await runTimes(id, from)
    for (const r of runs) expect(r.starts, r.node).toHaveLength(1)
    const intervals = runs.map((r) => [r.starts[0]!, r.ends[0]!] as const)
    for (const [s] of intervals) expect(intervals.filter(([s2, e2]) => s2 <= s && s < e2).length).toBeLessThanOrEqual(2)
    // Two or more had started by the kill (two at a time, 2 s each; a slow poll may see a third);
    // each of the others noticed the closed connection before its turn came.
    const late = runs.filter((r) => r.starts[0]! > killedAt)
    expect(late.length).toBeGreaterThanOrEqual(4)
    expect(late.length).toBeLessThanOrEqual(6)
    for (const r of late) expect(r.lostBeforeStart, `${r.node} logged the lost connection before its run`).toBe(true)
    // Every run ended with the coordinator away (it is started again only below): no turn waited
    // on a missed message or a missing ticket longer than the bound.
    const ends = runs.map((r) => r.ends[0]!).filter((t) => t > killedAt).sort((a, b) => a - b)
    const gaps = ends.slice(1).map((t, i) => t - ends[i]!)
    expect(Math.max(...gaps), `gaps between run ends after the kill: ${gaps.join(', ')} ms`).toBeLessThanOrEqual(MAX_RUN_END_GAP_MS)
    // Back up, the coordinator gets every result once.
    await fleet.startCoordinator()
    const report = await fleet.waitForJob(id, 60_000)
    expect(report.instances[0]!.runs.map((r) => r.status)).toEqual(Array(8).fill('success'))
  }, 240_000)
})
