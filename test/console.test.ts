// The operator's console over 6 real agents: a rollout watched live (job watch --json and
// submit --wait), server-sent events resumed with Last-Event-ID, and the exit-code scheme of
// real `chorus` commands.
import { describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CHORUS_BIN } from '../cli/paths.js'
import type { LocalFleet } from '../cli/fleet.js'
import { apiFetch } from '../cli/client.js'
import { parseFrames } from '../cli/watch.js'
import type { StreamEvent } from '../coordinator/events.js'
import { withLocalFleet } from './helpers/fleet.js'

let fleet: LocalFleet
let dir: string
const NODES = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5', 'node-6']
const shell = { name: 'chef-platform/shell-interpreter', skill: { minVersion: '1.0.0', maxVersion: '1.9.99' } }
const failFast = { action: 'retryThenFail', retryBackoffStrategy: { type: 'none', delaySeconds: 0, arguments: [] } }

/** A template: one group over `nodes`, one shell step. */
function job(name: string, nodes: string[], lines: string[], group: Record<string, unknown> = {}): string {
  return JSON.stringify({
    name, scheduleRule: 'immediate', exceptionRules: [],
    target: { executionType: 'parallel', groups: [{
      timeoutSeconds: 60, batchSize: { type: 'percent', value: 100 }, distributionMethod: 'batching',
      successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }], nodeListType: 'nodes', nodeIdentifiers: nodes, ...group,
    }] },
    actions: { accessMode: 'agent', steps: [{ name: 'work', interpreter: shell, command: { linux: lines }, retryCount: 0, failureBehavior: failFast }] },
  })
}

/** Runs `chorus ARGS` against the fleet's API (admin token unless args give one). */
export function chorus(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CHORUS_BIN, ...args], { env: { ...process.env, CHORUS_API: fleet.api, CHORUS_TOKEN: fleet.token, CHORUS_PROFILE: join(dir, 'none.json'), ...env } })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    p.on('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

async function templateFile(name: string, text: string): Promise<string> {
  const file = join(dir, `${name}.json`)
  await writeFile(file, text)
  return file
}

const jsonLines = (text: string) => text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as StreamEvent & { type: string })

/** Reads a job's event stream; stops after `max` events (the connection closed), or at its end. */
async function readEvents(jobId: string, lastEventId?: string, max = Infinity): Promise<{ events: StreamEvent[]; ended: boolean }> {
  const controller = new AbortController()
  const res = await apiFetch(fleet.conn, `/v1/jobs/${jobId}/events`, { headers: lastEventId ? { 'last-event-id': lastEventId } : {}, signal: controller.signal })
  expect(res.headers.get('content-type')).toMatch(/text\/event-stream/)
  const events: StreamEvent[] = []
  let buffer = ''
  const decoder = new TextDecoder()
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      const parsed = parseFrames(buffer + decoder.decode(chunk, { stream: true }))
      buffer = parsed.rest
      for (const f of parsed.frames) {
        if (f.event === 'end') return { events, ended: true }
        events.push(JSON.parse(f.data) as StreamEvent)
        if (events.length >= max) return { events, ended: false }
      }
    }
  } finally {
    controller.abort()
  }
  return { events, ended: false }
}

withLocalFleet('chorus-console-', { agents: 6, agentConfig: { allow: 'any' } }, (f, d) => { fleet = f; dir = d }, 120_000)

describe('watching a rollout', () => {
  it('submit --wait --json: batches open only after the previous one closed, every node runs before it succeeds, final counts equal the report', async () => {
    const file = await templateFile('batches', job('batches of 2', NODES, ['sleep 2'], { batchSize: { type: 'number', value: 2 } }))
    const r = await chorus(['job', 'submit', file, '--wait', '--json'])
    expect(r.code, r.stderr).toBe(0)
    const lines = jsonLines(r.stdout)
    const jobId = (lines[0] as unknown as { id: string }).id
    const events = lines.slice(1)
    const at = (type: string, pred: (e: StreamEvent) => boolean = () => true) => events.findIndex((e) => e.type === type && pred(e))
    for (const b of [1, 2]) {
      expect(at('batch_opened', (e) => e.batch === b)).toBeGreaterThan(at('batch_closed', (e) => e.batch === b - 1))
      expect(at('batch_closed', (e) => e.batch === b - 1)).toBeGreaterThanOrEqual(0)
    }
    for (const node of NODES) {
      const started = at('run_started', (e) => e.nodeId === node)
      expect(started, node).toBeGreaterThanOrEqual(0)
      expect(at('run_finished', (e) => e.nodeId === node && e.status === 'success'), node).toBeGreaterThan(started)
    }
    const ids = events.map((e) => Number(e.id.split('.')[1]))
    expect(ids).toEqual([...ids].sort((a, b) => a - b))
    const done = events.at(-1)!
    expect(done.type).toBe('instance_done')
    const report = await fleet.report(jobId)
    expect(done.counts[0]).toMatchObject({ success: report.instances[0]!.counts.success, failure: 0, running: 0, pending: 0 })
    expect(report.instances[0]!.counts.success).toBe(6)
  }, 90_000)

  it('an ungated run that lasts 2 s shows running within 2 s of its start', async () => {
    const id = await fleet.submit(job('ungated', ['node-1', 'node-2'], ['sleep 2.5'], { distributionMethod: 'batching' }))
    const { events } = await readEvents(id)
    for (const node of ['node-1', 'node-2']) {
      const started = events.find((e) => e.type === 'run_started' && e.nodeId === node)
      const finished = events.find((e) => e.type === 'run_finished' && e.nodeId === node)
      expect(started, node).toBeDefined()
      expect(Date.parse(finished!.at) - Date.parse(started!.at)).toBeGreaterThan(200)
    }
    const report = await fleet.report(id)
    for (const run of report.instances[0]!.runs) {
      const started = events.find((e) => e.type === 'run_started' && e.nodeId === run.nodeId)!
      expect(Date.parse(started.at) - Date.parse(run.startedAt!)).toBeLessThan(2000)
    }
  }, 60_000)

  it('submit --wait exits 1 when the success criteria fail', async () => {
    const file = await templateFile('fails', job('fails', ['node-1', 'node-2'], ['false']))
    const r = await chorus(['job', 'submit', file, '--wait'])
    expect(r.code, r.stderr).toBe(1)
  }, 60_000)

  it('a watcher that reconnects with Last-Event-ID loses no event and sees none twice', async () => {
    const id = await fleet.submit(job('resume', NODES.slice(0, 4), ['sleep 0.5'], { batchSize: { type: 'number', value: 1 } }))
    const full = readEvents(id)
    const parts: StreamEvent[] = []
    let last: string | undefined
    for (;;) {
      const { events, ended } = await readEvents(id, last, 3)
      parts.push(...events)
      last = events.at(-1)?.id ?? last
      if (ended || events.at(-1)?.type === 'instance_done') break
    }
    const all = (await full).events
    expect(all.at(-1)!.type).toBe('instance_done')
    expect(parts.map((e) => e.id)).toEqual(all.map((e) => e.id))
    expect(new Set(parts.map((e) => e.id)).size).toBe(parts.length)
  }, 60_000)
})
