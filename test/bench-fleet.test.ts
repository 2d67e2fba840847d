// `chorus bench fleet` at a small N: packed agents join a real coordinator, every result arrives,
// the coordinator is SIGKILLed and restarted and every agent comes back; the JSON has every
// figure. No timing is asserted (speed is what the bench prints, not what a test checks).
import { describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { CHORUS_BIN } from '../cli/paths.js'
import { parseStart } from '../cli/fleet-pack.js'
import { PEER_ROUND_IDLE_DELAY_MS } from '../protocol/timing.js'

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHORUS_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    child.once('error', reject)
    child.once('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

const FIGURES = [
  'fanout_s', 'fanout_s_all', 'results_per_s', 'results_per_s_all', 'coordinator_rss_mb', 'coordinator_rss_kb_per_agent',
  'coordinator_cpu_ms_per_job', 'coordinator_cpu_ms_per_job_per_agent', 'packs_rss_mb', 'link_drops_per_agent_min', 'reconnect_s', 'reconnect_coordinator_up_s',
  'reconnect_hellos', 'reconnect_syncs', 'fanout_after_reconnect_s', 'fanout_syncs_per_agent_job', 'packs_cpu_ms_per_job_per_agent',
  'reconnect_peer_rounds', 'reconnect_failed_attempts', 'reconnect_busy_attempts', 'reconnect_packs_cpu_ms_per_agent', 'reconnect_coordinator_cpu_ms_per_agent',
] as const

function expectFigures(f: Record<string, unknown>, agents: number, rounds: number): void {
  for (const k of FIGURES) expect(f, k).toHaveProperty(k)
  expect(f.fanout_s_all).toHaveLength(rounds)
  expect(f.results_per_s_all).toHaveLength(rounds)
  for (const k of ['fanout_s', 'results_per_s', 'coordinator_rss_mb', 'coordinator_cpu_ms_per_job', 'reconnect_s', 'fanout_after_reconnect_s'] as const) {
    expect(typeof f[k], k).toBe('number')
    expect(f[k] as number, k).toBeGreaterThan(0)
  }
  // The restarted coordinator heard a hello and a sync from every agent: the reconnect happened.
  expect(f.reconnect_hellos as number).toBeGreaterThanOrEqual(agents)
  expect(f.reconnect_syncs as number).toBeGreaterThanOrEqual(agents)
  expect(f.reconnect_s as number).toBeGreaterThanOrEqual(f.reconnect_coordinator_up_s as number)
  expect(f).not.toHaveProperty('fanout_after_reconnect_error')
  // Idle agents turn to their peers only PEER_ROUND_IDLE_DELAY_MS (jittered, at least half of it)
  // after losing the coordinator: a restart over sooner builds no agent mesh (with the agents
  // turning to their peers at once, this run counted 6 rounds).
  if ((f.reconnect_s as number) * 1000 < PEER_ROUND_IDLE_DELAY_MS / 2) expect(f.reconnect_peer_rounds).toBe(0)
}

describe('chorus bench fleet', () => {
  it('runs 6 agents packed 2 to a process through fan-out, a burst, a reconnect after SIGKILL and again with history', async () => {
    const res = await runCli(['bench', 'fleet', '--agents', '6', '--per-process', '2', '--rounds', '1', '--history-runs', '6', '--json'])
    expect(res.code, res.stderr).toBe(0)
    const out = JSON.parse(res.stdout) as Record<string, unknown> & { with_history: Record<string, unknown>; machine: { cpus: number } }
    expect(out).toMatchObject({ agents: 6, per_process: 2, processes: 3, rounds: 1 })
    expect(out.join_s as number).toBeGreaterThan(0)
    expectFigures(out, 6, 1)
    // Six history runs are one no-op job to all six agents, stored before the second measurement.
    expect(out.with_history).toMatchObject({ history_runs: 6, history_jobs: 1 })
    // Warm-up, fan-out, burst and after-reconnect jobs, then the history job and the second measurement's rounds.
    expect(out.with_history.instances_stored as number).toBeGreaterThanOrEqual(5)
    expectFigures(out.with_history, 6, 1)
    expect(out.machine.cpus).toBeGreaterThan(0)
  }, 240_000)

  it('above 64 targets the definition places every agent: no ticket round trip (70 agents, 2 processes)', async () => {
    const res = await runCli(['bench', 'fleet', '--agents', '70', '--per-process', '35', '--rounds', '2', '--no-reconnect', '--json'])
    expect(res.code, res.stderr).toBe(0)
    const out = JSON.parse(res.stdout) as Record<string, number>
    expect(out.fanout_s).toBeGreaterThan(0)
    // With tickets, each of the 70 agents syncs once per job for its ticket: ≥ 1 per agent and job.
    expect(out.fanout_syncs_per_agent_job).toBeLessThan(0.5)
  }, 240_000)

  it('refuses a bad --per-process and a malformed pack start message, naming the field', async () => {
    const res = await runCli(['bench', 'fleet', '--agents', '2', '--per-process', '0', '--json'])
    expect(res.code).toBe(2)
    expect(res.stderr).toContain('--per-process')
    expect(parseStart({ type: 'start', join: '/ip4/127.0.0.1/tcp/1', coordinatorKey: 'k', enrollToken: '', attributes: {}, agents: [] })).toBe('start.enrollToken: expected a non-empty string')
    expect(parseStart({ type: 'start', join: 'j', coordinatorKey: 'k', enrollToken: 't', attributes: { a: 1 }, agents: [] })).toBe('start.attributes: expected an object of strings')
    expect(parseStart({ type: 'start', join: 'j', coordinatorKey: 'k', enrollToken: 't', attributes: {}, agents: [{ nodeId: 'a', dataDir: '/tmp/x' }], parallel: 0 })).toBe('start.parallel: expected a whole number of at least 1')
    expect(parseStart({ type: 'start', join: 'j', coordinatorKey: 'k', enrollToken: 't', attributes: {}, agents: [{ nodeId: 3 }], parallel: 1 })).toBe('start.agents[0]: expected { nodeId, dataDir } strings')
    expect(parseStart({ type: 'start', join: 'j', coordinatorKey: 'k', enrollToken: 't', attributes: {}, agents: [{ nodeId: 'a', dataDir: '/tmp/x' }], parallel: 1 })).toMatchObject({ agents: [{ nodeId: 'a' }] })
  })
})
