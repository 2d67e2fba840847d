// When, over real processes: recurring occurrences computed by the agents themselves,
// exception windows, cancellation, and an agent cut off from the mesh that keeps its schedule.
import { describe, expect, it } from 'vitest'
import { readdir, readFile } from 'node:fs/promises'
import { LocalFleet, waitFor } from '../cli/fleet.js'
import { withLocalFleet } from './helpers/fleet.js'
import { apiGet, apiPostText } from '../cli/client.js'
import { shellJob } from './helpers/templates.js'

let fleet: LocalFleet
let dir: string

const stamp = (ms: number) => new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')

/** A job on both agents, one shell step of `lines`, on `rule`; `extra` adds or overrides top-level fields. */
function job(name: string, rule: string, lines: string[], extra: Record<string, unknown> = {}) {
  return JSON.stringify({ ...shellJob(name, ['node-1', 'node-2'], lines, { timeoutSeconds: 30 }, { name: 'mark' }), scheduleRule: rule, ...extra })
}

async function markers(prefix: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.startsWith(prefix))
}

/** A start a few seconds ahead on a whole second, so every agent sees every occurrence coming. */
function soon(seconds = 3): number {
  return Math.ceil((Date.now() + seconds * 1000) / 1000) * 1000
}

withLocalFleet('chorus-when-', { agents: 2, agentConfig: { allow: 'any' } }, (f, d) => { fleet = f; dir = d })

describe('recurring jobs over real processes', () => {
  it('RRULE:FREQ=SECONDLY;INTERVAL=2;COUNT=3 on two agents gives three instances with two runs each', async () => {
    const t0 = soon()
    const id = await fleet.submit(job('every 2 s', `RRULE:DTSTART=${stamp(t0)};FREQ=SECONDLY;INTERVAL=2;COUNT=3`, [`mktemp ${dir}/tick.XXXXXX`]))
    const next = await apiGet<{ items: { at: string }[] }>(fleet.conn, `/v1/jobs/${id}/next?count=5`)
    expect(next.items.map((n) => Date.parse(n.at))).toEqual([t0, t0 + 2000, t0 + 4000])
    const report = await waitFor('three settled instances and the job completed', async () => {
      const r = await fleet.report(id)
      return r.instances.length === 3 && r.instances.every((i) => i.status !== 'running') && r.job.status === 'completed' ? r : undefined
    }, 40_000, 200)
    expect(report.instances.map((i) => Date.parse(i.occurrenceAt!))).toEqual([t0, t0 + 2000, t0 + 4000])
    for (const inst of report.instances) {
      expect(inst.status).toBe('success')
      expect(inst.runs.map((r) => r.nodeId).sort()).toEqual(['node-1', 'node-2'])
      // Each run started at (or just after) its occurrence, not before.
      for (const r of inst.runs) expect(Date.parse(r.startedAt!)).toBeGreaterThanOrEqual(Date.parse(inst.occurrenceAt!) - 50)
    }
    expect(await markers('tick.')).toHaveLength(6)
  })

  it('an exception window removes one occurrence and the report says it was not performed', async () => {
    const t0 = soon()
    const id = await fleet.submit(job('with a blackout', `RRULE:DTSTART=${stamp(t0)};FREQ=SECONDLY;INTERVAL=2;COUNT=3`, [`mktemp ${dir}/blackout.XXXXXX`], {
      // A one-minute window opening at the third occurrence.
      exceptionRules: [{ rrule: `RRULE:DTSTART=${stamp(t0 + 4000)};FREQ=YEARLY;COUNT=1`, duration: 1 }],
    }))
    const report = await waitFor('three settled instances', async () => {
      const r = await fleet.report(id)
      return r.instances.length === 3 && r.instances.every((i) => i.status !== 'running') ? r : undefined
    }, 40_000, 200)
    expect(report.instances.map((i) => i.status)).toEqual(['success', 'success', 'excluded'])
    expect(report.instances[2]!.reason).toMatch(/not performed: inside the job exception window/)
    expect(report.instances[2]!.runs.map((r) => r.status)).toEqual(['skipped', 'skipped'])
    // Later positive: each agent handled the third occurrence as excluded; only then count what ran.
    await waitFor('both agents to record the occurrence not performed', async () => {
      const logs = await Promise.all(fleet.agents.map((a) => readFile(a.logFile, 'utf8')))
      return logs.every((l) => l.split('\n').some((line) => line.includes(id) && line.includes('inside an exception window; not performed'))) ? true : undefined
    }, 20_000, 100)
    expect(await markers('blackout.')).toHaveLength(4)
  })

  it('an agent cut off from the coordinator keeps running its occurrences; every result arrives once after it reconnects', async () => {
    const t0 = soon(4)
    const id = await fleet.submit(job('offline', `RRULE:DTSTART=${stamp(t0)};FREQ=SECONDLY;INTERVAL=2;COUNT=3`, [`mktemp ${dir}/offline.XXXXXX`]))
    await waitFor('both agents to hold the job', async () => {
      const logs = await Promise.all(fleet.agents.map((a) => readFile(a.logFile, 'utf8')))
      return logs.every((l) => l.includes(id) && l.includes('recurring job accepted')) ? true : undefined
    }, 10_000, 100)
    await fleet.killCoordinator('SIGKILL')
    await waitFor('all six occurrences to run with no coordinator', async () => ((await markers('offline.')).length === 6 ? true : undefined), 30_000, 200)
    await fleet.startCoordinator()
    const report = await waitFor('three settled instances', async () => {
      const r = await fleet.report(id)
      return r.instances.length === 3 && r.instances.every((i) => i.status !== 'running') ? r : undefined
    }, 40_000, 200)
    expect(report.instances.map((i) => i.status)).toEqual(['success', 'success', 'success'])
    const stored = (await readFile(fleet.coordinator.logFile, 'utf8')).split('\n').filter((l) => l.includes('"result stored"'))
    for (const inst of report.instances) {
      for (const run of inst.runs) expect(stored.filter((l) => l.includes(run.runId))).toHaveLength(1)
    }
  })

  it('a canceled job starts no new instance', async () => {
    const t0 = soon(3)
    const id = await fleet.submit(job('to cancel', `RRULE:DTSTART=${stamp(t0)};FREQ=SECONDLY;INTERVAL=2;COUNT=20`, [`mktemp ${dir}/cancel.XXXXXX`]))
    await waitFor('the first occurrence to run', async () => ((await markers('cancel.')).length >= 2 ? true : undefined), 20_000, 100)
    const res = await apiPostText<{ status?: string }>(fleet.conn, `/v1/jobs/${id}/cancel`, '{}', 'application/json')
    expect(res.status).toBe(200)
    expect(res.body.status).toBe('canceled')
    // Both agents hold the canceled state, and every run they had started has finished.
    await waitFor('both agents to hold the canceled state with no run of the job going', async () => {
      const logs = await Promise.all(fleet.agents.map((a) => readFile(a.logFile, 'utf8')))
      return logs.every((l) => {
        const mine = l.split('\n').filter((line) => line.includes(id))
        const count = (needle: string) => mine.filter((line) => line.includes(needle)).length
        return mine.some((line) => line.includes('job state updated') && line.includes('"status":"canceled"')) && count('run started') === count('"msg":"run finished')
      }) ? true : undefined
    }, 20_000, 100)
    const after = (await markers('cancel.')).length
    // Later positive: a probe whose only occurrence is at least 4 s away (two more occurrences of
    // the canceled job, every 2 s) ran on both agents, so their schedules passed those
    // occurrences: the canceled job's markers did not grow meanwhile.
    const probeAt = soon(4)
    await fleet.submit(job('probe after cancel', `RRULE:DTSTART=${stamp(probeAt)};FREQ=YEARLY;COUNT=1`, [`mktemp ${dir}/probe.XXXXXX`]))
    await waitFor('the probe to run on both agents', async () => ((await markers('probe.')).length === 2 ? true : undefined), 30_000, 100)
    expect((await markers('cancel.')).length).toBe(after)
    expect(after).toBeLessThan(40)
  })
})
