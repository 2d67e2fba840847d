// The operator's console over 6 real agents: a rollout watched live (job watch --json and
// submit --wait), server-sent events resumed with Last-Event-ID, and the exit-code scheme of
// real `chorus` commands.
import { describe, expect, it } from 'vitest'
import { spawn, spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CHORUS_BIN } from '../cli/paths.js'
import type { LocalFleet } from '../cli/fleet.js'
import { apiFetch } from '../cli/client.js'
import { parseFrames } from '../cli/watch.js'
import type { StreamEvent } from '../coordinator/events.js'
import { withLocalFleet } from './helpers/fleet.js'
import { shellJob } from './helpers/templates.js'

let fleet: LocalFleet
let dir: string
const NODES = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5', 'node-6']

/** A template: one group over `nodes`, one shell step. */
function job(name: string, nodes: string[], lines: string[], group: Record<string, unknown> = {}): string {
  return JSON.stringify(shellJob(name, nodes, lines, group))
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
      // The event is the coordinator hearing of the start: never before the agent started (one host, one clock).
      expect(Date.parse(started.at)).toBeGreaterThanOrEqual(Date.parse(run.startedAt!))
    }
  }, 60_000)

  it.runIf(spawnSync('script', ['--version']).status === 0)('on a terminal job watch draws a bar per batch, the running nodes and the time left (log-update)', async () => {
    const id = await fleet.submit(job('on a terminal', ['node-1', 'node-2'], ['sleep 1.5'], { batchSize: { type: 'number', value: 1 } }))
    const cmd = `stty cols 120 rows 40; CHORUS_PROFILE=/nonexistent ${process.execPath} ${CHORUS_BIN} job watch ${id} --api ${fleet.api} --token ${fleet.token}`
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', timeout: 60_000 })
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/\u001b\[2K/)
    expect(r.stdout).toMatch(/group 0 batch 1 {2}\[>+\] 0\/1 {2}success 0 {2}failure 0 {2}running 1/)
    expect(r.stdout).toMatch(/running: node-2/)
    expect(r.stdout).toMatch(/about \d+ s left/)
    expect(r.stdout).toMatch(/group 0 batch 1 {2}\[#+\] 1\/1 {2}success 1/)
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

describe('the lifecycle in CLI and API', () => {
  it('job list pages and filters; job run makes an audited immediate run of a stored job; job delete is refused while live', async () => {
    // The job stays live until the test releases it (a file), so the delete meets a live instance however slow the machine.
    const release = join(dir, 'lifecycle.release')
    const file = await templateFile('lifecycle', job('lifecycle', ['node-1', 'node-2'], ['echo hello-out', 'echo oops-err >&2', `while [ ! -e ${release} ]; do sleep 0.05; done`]))
    const submitted = await chorus(['job', 'submit', file])
    expect(submitted.code, submitted.stderr).toBe(0)
    const id = submitted.stdout.trim()
    const refused = await chorus(['job', 'delete', id])
    expect(refused.code).toBe(3)
    expect(refused.stderr).toMatch(/live instance/)
    await writeFile(release, '')
    await fleet.waitForJob(id, 30_000)
    const byName = JSON.parse((await chorus(['job', 'list', '--json', '--name', 'lifecycle', '--status', 'completed'])).stdout) as { items: { id: string }[] }
    expect(byName.items.map((j) => j.id)).toEqual([id])
    const table = await chorus(['job', 'list', '--name', 'lifecycle'])
    expect(table.stdout).toMatch(/^ID\s+NAME\s+STATUS/)

    const rerun = await chorus(['job', 'run', id, '--json', '--wait'])
    expect(rerun.code, rerun.stderr).toBe(0)
    const again = JSON.parse(rerun.stdout.split('\n')[0]!) as { id: string; runOf: string }
    expect(again.runOf).toBe(id)
    const list = JSON.parse((await chorus(['job', 'list', '--json', '--size', '1'])).stdout) as { items: { id: string }[]; pagination: { page: number; size: number; total: number } }
    expect(list.items).toHaveLength(1)
    expect(list.pagination).toMatchObject({ page: 1, size: 1 })
    expect(list.pagination.total).toBeGreaterThanOrEqual(2)
    const instances = JSON.parse((await chorus(['instance', 'list', '--job', again.id, '--json'])).stdout) as { items: { id: string; status: string }[] }
    expect(instances.items).toHaveLength(1)
    expect(instances.items[0]!.status).toBe('success')
    const shown = await chorus(['instance', 'show', instances.items[0]!.id])
    expect(shown.stdout).toMatch(/SUCCESS/)
    const runs = (await fleet.report(again.id)).instances[0]!.runs
    const runShow = await chorus(['run', 'show', runs[0]!.runId])
    expect(runShow.stdout).toMatch(/STEP\s+NAME\s+STATUS/)
    const logs = await chorus(['run', 'logs', runs[0]!.runId, '--step', '1'])
    expect(logs.stdout).toMatch(/hello-out/)
    expect(logs.stdout).toMatch(/-- stderr\noops-err/)
    expect((await chorus(['run', 'logs', runs[0]!.runId, '--step', '9'])).code).toBe(4)
    const audit = await chorus(['audit', '--json'])
    expect(audit.stdout).toMatch(/"action": "job.run"/)

    const deleted = await chorus(['job', 'delete', id, '--json'])
    expect(deleted.code, deleted.stderr).toBe(0)
    expect((await chorus(['report', id])).code).toBe(4)
    expect((await chorus(['audit', '--json'])).stdout).toMatch(/"action": "job.delete"/)
  }, 90_000)

  it('nodes prints a header and pages; nodes show prints one node', async () => {
    const nodes = await chorus(['nodes'])
    expect(nodes.stdout).toMatch(/^NODE\s+STATE\s+HOSTNAME\s+LAST SEEN/)
    expect(nodes.stdout.trim().split('\n')).toHaveLength(7)
    const page = JSON.parse((await chorus(['nodes', '--json', '--size', '4', '--page', '2'])).stdout) as { items: unknown[]; pagination: { total: number } }
    expect(page.items).toHaveLength(2)
    expect(page.pagination.total).toBe(6)
    const one = JSON.parse((await chorus(['nodes', 'show', 'node-3', '--json'])).stdout) as { nodeId: string; alive: boolean }
    expect(one).toMatchObject({ nodeId: 'node-3', alive: true })
    expect((await chorus(['nodes', 'show', 'nobody'])).code).toBe(4)
  }, 30_000)
})

describe('exit codes of real commands', () => {
  it('0 done, 1 failed, 2 usage or validation, 3 unreachable or refused, 4 not found', async () => {
    const good = await fleet.submit(job('good', ['node-1'], ['true']))
    const bad = await fleet.submit(job('bad', ['node-2'], ['false']))
    await fleet.waitForJob(good, 30_000)
    await fleet.waitForJob(bad, 30_000)
    expect((await chorus(['report', good])).code).toBe(0)
    expect((await chorus(['report', bad])).code).toBe(1)
    // A job's code comes from all its instances, not the page shown: page 2 holds none of them here.
    const past = await chorus(['report', bad, '--json', '--page', '2', '--size', '1'])
    expect(JSON.parse(past.stdout).instances).toEqual([])
    expect(past.code).toBe(1)
    expect((await chorus(['job', 'watch', bad])).code).toBe(1)
    expect((await chorus(['job', 'list', '--page', '0'])).code).toBe(2)
    expect((await chorus(['no-such-command'])).code).toBe(2)
    const invalid = await templateFile('invalid', '{"name": "x"}')
    expect((await chorus(['validate', invalid])).code).toBe(2)
    expect((await chorus(['job', 'submit', invalid])).code).toBe(2)
    const auth = await chorus(['report', good], { CHORUS_TOKEN: 'chorus_wrong' })
    expect(auth.code).toBe(3)
    expect(auth.stderr).toMatch(/unknown, expired or revoked token/)
    const { createServer } = await import('node:http')
    const closed = createServer().listen(0, '127.0.0.1')
    await new Promise((r) => closed.once('listening', r))
    const free = (closed.address() as { port: number }).port
    await new Promise((r) => closed.close(r))
    const down = await chorus(['report', good, '--api', `127.0.0.1:${free}`])
    expect(down.code).toBe(3)
    expect(down.stderr).toContain(`cannot reach http://127.0.0.1:${free} (ECONNREFUSED): is the coordinator running? (--api, $CHORUS_API)`)
    expect((await chorus(['report', 'no-such-job'])).code).toBe(4)
    const other = createServer((_req, res) => res.end('hello')).listen(0, '127.0.0.1')
    await new Promise((r) => other.once('listening', r))
    try {
      const port = (other.address() as { port: number }).port
      const foreign = await chorus(['report', good, '--api', `127.0.0.1:${port}`])
      expect(foreign.code).toBe(3)
      expect(foreign.stderr).toMatch(/is not a Chorus coordinator API/)
    } finally {
      other.close()
    }
  }, 60_000)
})

/** Starts an agent and resolves to its first log line whose message starts with `prefix` (within 10 s); ends the agent. */
async function agentWarning(args: string[], prefix: string): Promise<Record<string, unknown>> {
  const p = spawn(process.execPath, [CHORUS_BIN, 'agent', ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  p.stderr!.on('data', (d: Buffer) => { log += d.toString() })
  const started = Date.now()
  try {
    return await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setInterval(() => {
        const hit = log.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => String(l.msg).startsWith(prefix))
        if (hit) { clearInterval(timer); resolve(hit) }
        if (Date.now() - started > 10_000) { clearInterval(timer); reject(new Error(`no "${prefix}" within 10 s:\n${log}`)) }
      }, 100)
    })
  } finally {
    p.kill('SIGTERM')
  }
}

describe('errors that say what to do', () => {
  it('an agent pinned to a wrong coordinator key warns within 10 s: it presents X, you pinned Y', async () => {
    const keyDir = join(dir, 'other-key')
    const wrong = (await chorus(['keys', '--data', keyDir])).stdout.trim()
    const line = await agentWarning(['--data', join(dir, 'wrong-agent'), '--join', fleet.multiaddr, `--coordinator-key=${wrong}`, '--node-id', 'stray'], 'coordinator key mismatch')
    expect(line.level).toBe(40)
    expect(line.nodeId).toBe('stray')
    expect(line.msg).toContain(`it presents ${fleet.publicKey}, you pinned ${wrong}`)
  }, 30_000)

  it('an agent that cannot reach the coordinator warns within 10 s, naming the address', async () => {
    const line = await agentWarning(['--data', join(dir, 'lonely-agent'), '--join', '/ip4/127.0.0.1/tcp/9', `--coordinator-key=${fleet.publicKey}`, '--node-id', 'lonely'], 'cannot reach the coordinator at /ip4/127.0.0.1/tcp/9')
    expect(line).toMatchObject({ level: 40, nodeId: 'lonely' })
  }, 30_000)

  it('--join that is not a multiaddr, and a data directory another coordinator holds, are refused with what to do', async () => {
    const join1 = await chorus(['agent', '--data', join(dir, 'a2'), '--join', '10.0.0.5:7700', `--coordinator-key=${fleet.publicKey}`])
    expect(join1.code).toBe(2)
    expect(join1.stderr).toMatch(/--join is not a multiaddr: 10\.0\.0\.5:7700/)
    const locked = await chorus(['coordinator', '--data', fleet.coordinator.dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0'])
    expect(locked.code).toBe(2)
    expect(locked.stderr).toContain(`another coordinator (pid ${fleet.coordinator.proc.pid}) holds ${fleet.coordinator.dir}`)
  }, 30_000)
})

/** `name{labels} value` of every sample; throws on a line that is not Prometheus text. */
function parseProm(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(line)
    if (!m) throw new Error(`not Prometheus text: ${line}`)
    out.set(m[1]!, Number(m[2]))
  }
  return out
}

describe('metrics and OpenAPI', () => {
  it('GET /metrics is Prometheus text behind a reader token, and a run moves the counters it should', async () => {
    const anonymous = await fetch(`http://${fleet.api}/metrics`)
    expect(anonymous.status).toBe(401)
    const scrape = async () => {
      const res = await apiFetch(fleet.conn, '/metrics')
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/)
      return parseProm(await res.text())
    }
    const before = await scrape()
    const id = await fleet.submit(job('metered', ['node-1', 'node-2', 'node-3'], ['true']))
    await fleet.waitForJob(id, 30_000)
    const after = await scrape()
    const delta = (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0)
    // Counted once per run as it finishes (chorus_runs is what memory holds: finished runs leave it at the next tick).
    expect(delta('chorus_runs_finished_total{status="success"}')).toBe(3)
    expect(delta('chorus_rpc_requests_total{type="result"}')).toBeGreaterThanOrEqual(3)
    expect(delta('chorus_result_ingest_seconds_count')).toBeGreaterThanOrEqual(3)
    expect(delta('chorus_gossip_messages_total{direction="out"}')).toBeGreaterThanOrEqual(1)
    expect(after.get('chorus_nodes_enrolled')).toBe(6)
    expect(after.get('chorus_nodes_alive')).toBe(6)
    for (const name of ['chorus_instances{status="success"}', 'chorus_held_watches', 'chorus_core_queue_depth', 'chorus_commit_batch_ops_count']) expect(after.has(name), name).toBe(true)
  }, 60_000)

  it('the OpenAPI document has every route the server has, and every response of the running API matches its schema', async () => {
    const { ROUTES, PUBLIC_ROUTES } = await import('../coordinator/access.js')
    const { default: Ajv2020 } = await import('ajv/dist/2020.js')
    type Op = { responses: Record<string, { content?: Record<string, { schema: Record<string, unknown> }> }> }
    const doc = (await (await apiFetch(fleet.conn, '/v1/openapi.json')).json()) as { openapi: string; paths: Record<string, Record<string, Op>>; components: { schemas: Record<string, unknown> } }
    expect(doc.openapi).toBe('3.1.0')
    const routes = [...ROUTES, ...PUBLIC_ROUTES]
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`)).sort()
    expect(documented).toEqual(routes.map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`).sort())

    const id = await fleet.submit(job('documented', ['node-1'], ['echo hi']))
    const report = await fleet.waitForJob(id, 30_000)
    const instanceId = report.instances[0]!.id
    const runId = report.instances[0]!.runs[0]!.runId
    const template = job('documented', ['node-1'], ['echo hi'])
    const ids: Record<string, string> = { jobs: id, reports: id, instances: instanceId, runs: runId, nodes: 'node-1', lists: 'l1', filters: 'f1', exceptions: 'e1', tokens: 't1', enrollments: 'en1' }
    const bodies: Record<string, string> = {
      'POST /v1/jobs': template, 'POST /v1/plan': template, 'POST /v1/exceptions': JSON.stringify({ id: 'e1', rrule: 'RRULE:FREQ=WEEKLY;BYDAY=SA', duration: 60 }),
      'PUT /v1/lists/:id': JSON.stringify({ nodes: ['node-1'] }), 'PUT /v1/filters/:id': JSON.stringify({ query: 'hostname:x' }),
      'POST /v1/tokens': JSON.stringify({ name: 't1', role: 'reader' }), 'POST /v1/enrollments': JSON.stringify({ name: 'en1' }),
    }
    const url = (u: string) => u.replace(/^\/v1\/(\w+)\/:(id|name)/, (_m, kind: string) => `/v1/${kind}/${ids[kind] ?? 'nobody'}`)
      .replace(/\/nodes\/node-1\/(approve|reject|revoke)$/, '/nodes/nobody/$1').replace(':step', '1').replace(':name', 'none')
    const order = (m: string) => ({ GET: 0, POST: 1, PUT: 1, DELETE: 2 })[m] ?? 3
    const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false })
    const resolve = (s: Record<string, unknown>) => (typeof s.$ref === 'string' ? doc.components.schemas[s.$ref.split('/').pop()!] as Record<string, unknown> : s)
    for (const r of [...routes].sort((a, b) => order(a.method) - order(b.method))) {
      const key = `${r.method} ${r.url}`
      const body = r.method === 'GET' ? undefined : bodies[key] ?? '{}'
      const res = await apiFetch(fleet.conn, url(r.url), { method: r.method, ...(body !== undefined ? { body } : {}) })
      const op = doc.paths[r.url.replace(/:(\w+)/g, '{$1}')]![r.method.toLowerCase()]!
      const documentedStatus = op.responses[String(res.status)] ?? op.responses.default!
      if (r.method === 'GET' && !r.url.includes('artifacts/')) expect(res.status, key).toBeLessThan(300)
      const type = Object.keys(documentedStatus.content ?? {})[0]!
      expect(res.headers.get('content-type') ?? '', key).toContain(type === 'application/octet-stream' ? '' : type.split(';')[0])
      if (type !== 'application/json') { await res.arrayBuffer(); continue }
      const validate = ajv.compile(resolve(documentedStatus.content![type]!.schema))
      const value = await res.json()
      expect(validate(value) ? [] : validate.errors, `${key} ${res.status}`).toEqual([])
    }
  }, 60_000)
})

describe('logs and agent metrics (adds a 7th agent: keep last)', () => {
  it('the API logs one line per request with method, route, status, time and token name', async () => {
    const { readFile } = await import('node:fs/promises')
    await apiFetch(fleet.conn, '/v1/nodes/node-1')
    const lines = (await readFile(fleet.coordinator.logFile, 'utf8')).split('\n').filter((l) => l.includes('"api request"')).map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(lines.find((l) => l.route === '/v1/nodes/:id')).toMatchObject({ level: 30, method: 'GET', status: 200, token: 'admin', ms: expect.any(Number) })
  })

  it('an agent started with --metrics serves outbox depth, running steps, step durations and reachability', async () => {
    const { createServer } = await import('node:http')
    const probe = createServer().listen(0, '127.0.0.1')
    await new Promise((r) => probe.once('listening', r))
    const port = (probe.address() as { port: number }).port
    await new Promise((r) => probe.close(r))
    const p = spawn(process.execPath, [CHORUS_BIN, 'agent', '--data', join(dir, 'metered-agent'), '--join', fleet.multiaddr, `--coordinator-key=${fleet.publicKey}`, '--node-id', 'metered', '--enroll-token-file', fleet.enrollTokenFile, '--allow-any', '--metrics', `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    p.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr = (stderr + d).slice(-4000) })
    try {
      const { waitFor } = await import('../cli/fleet.js')
      const scrape = async () => parseProm(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text())
      // On failure, say what the agent said and whether it is still running (the probed port can be taken in between).
      await waitFor('the agent to reach the coordinator', async () => ((await scrape()).get('chorus_agent_coordinator_reachable') === 1 ? true : undefined), 20_000)
        .catch((err: Error) => { throw new Error(`${err.message}; agent exit code ${p.exitCode}, stderr tail: ${stderr.slice(-1500)}`) })
      const id = await fleet.submit(job('agent metrics', ['metered'], ['true']))
      await fleet.waitForJob(id, 30_000)
      const m = await scrape()
      expect(m.get('chorus_agent_step_seconds_count{status="success"}')).toBe(1)
      expect(m.get('chorus_agent_running_steps')).toBe(0)
      expect(m.has('chorus_agent_outbox_depth')).toBe(true)
    } finally {
      p.kill('SIGTERM')
    }
  }, 60_000)
})

describe('job plan --simulate', () => {
  it('simulates the template over the groups the coordinator resolves now', async () => {
    const file = await templateFile('simulated', job('simulated', NODES, ['true'], { batchSize: { type: 'number', value: 2 } }))
    const r = await chorus(['job', 'plan', file, '--simulate', '--seeds', '2', '--profile', 'wan', '--json'])
    expect(r.code, r.stderr).toBe(0)
    const sim = JSON.parse(r.stdout) as import('../sim/plan.js').PlanSimulation
    expect(sim).toMatchObject({ seeds: 2, profile: 'wan', nodes: 6 })
    expect(Object.values(sim.outcomes).reduce((a, b) => a + b, 0)).toBe(2)
    expect(sim.completion_s.p50).toBeGreaterThan(0)
    expect(sim.completion_s.p99).toBeLessThan(600)
    expect(sim.groups[0]).toMatchObject({ group: 0, nodes: 6, failure_budget: 0 })
    expect(sim.groups[0]!.within_budget).toBe(sim.groups[0]!.failures_max === 0)
    expect(sim.groups[0]!.most_running_at_once).toBeLessThanOrEqual(2)
    expect(Object.values(sim.safety).every((v) => v === 'ok')).toBe(true)
    const text = await chorus(['job', 'plan', file, '--simulate', '--seeds', '1'])
    expect(text.stdout).toMatch(/completion p50 [\d.]+ s, p99 [\d.]+ s/)
    expect((await chorus(['job', 'plan', file, '--simulate', '--profile', 'moon'])).code).toBe(2)
    const { apiPostText } = await import('../cli/client.js')
    const api = await apiPostText<{ groups: unknown[]; simulation: import('../sim/plan.js').PlanSimulation }>(fleet.conn, '/v1/plan?simulate=1&profile=edge', job('simulated', NODES, ['true']), 'application/json')
    expect(api.status).toBe(200)
    expect(api.body.simulation).toMatchObject({ seeds: 1, profile: 'edge', nodes: 6 })
    expect((await apiPostText(fleet.conn, '/v1/plan?simulate=50', job('simulated', NODES, ['true']), 'application/json')).status).toBe(400)
  }, 120_000)
})

describe('resume across a coordinator restart (restarts the coordinator: keep last)', () => {
  it('a watcher that comes back with an id from before the restart gets a snapshot, then the rest, and the counts end right', async () => {
    const id = await fleet.submit(job('across a restart', ['node-1', 'node-2'], ['sleep 3']))
    const { events } = await readEvents(id, undefined, 1)
    const last = events.at(-1)!.id
    await fleet.killCoordinator('SIGKILL')
    await fleet.startCoordinator()
    const rest = await readEvents(id, last)
    expect(rest.ended).toBe(true)
    expect(rest.events[0]!.type).toBe('snapshot')
    expect(rest.events[0]!.id.split('.')[0]).not.toBe(last.split('.')[0])
    const done = rest.events.at(-1)!
    expect(done.type === 'instance_done' || (done.type === 'snapshot' && done.status !== 'running')).toBe(true)
    expect(done.counts[0]).toMatchObject({ success: 2, running: 0, pending: 0 })
  }, 90_000)
})
