// History in the store, over a real coordinator (libp2p, level, HTTP API on 127.0.0.1) whose
// store was filled through the core (cli/bench-history.ts): cursor pages stay stable while new
// instances arrive, and retention prunes finished instances, runs and audit records in small
// batches, never a live instance, from the store and from the API alike.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Level } from 'level'
import { CoordinatorRuntime } from '../coordinator/runtime.js'
import { fillHistory } from '../cli/bench-history.js'
import { ApiError, apiFetch, apiGet, apiPostText, type ApiConn } from '../cli/client.js'
import { instanceReport, jobSummary } from '../coordinator/report.js'
import type { InstanceRecord } from '../coordinator/core.js'
import { runIdFor } from '../protocol/ids.js'

const NODES = 5
const INSTANCES = 60
const DAY = 86_400_000
const nodeIds = Array.from({ length: NODES }, (_, i) => `bench-${String(i).padStart(5, '0')}`)

interface Summary { id: string; status: string; createdAt: string; jobId: string }
interface CursorPage<T> { items: T[]; pagination: { page: number; size: number; total: number | null; next: string | null } }

let dir = ''
let rt: CoordinatorRuntime
let conn: ApiConn
let filled: Awaited<ReturnType<typeof fillHistory>>

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'chorus-history-'))
  // 60 instances a minute apart, each with a result from every node, but the last: it stays live (1 h timeout).
  filled = await fillHistory(dir, { runs: INSTANCES * NODES, nodes: NODES, now: Date.now(), jobId: 'old-job', timeoutSeconds: 3600, resultEvery: 1, openLast: true, finite: true })
  rt = new CoordinatorRuntime({ dataDir: dir, listen: ['/ip4/127.0.0.1/tcp/0'], api: '127.0.0.1:0', logger: pino({ level: 'silent' }), retainDays: 30, pruneBatch: 7, pruneIntervalMs: 0 })
  const ep = await rt.start()
  conn = { api: ep.api, token: (await readFile(join(dir, 'admin.token'), 'utf8')).trim() }
}, 60_000)

afterAll(async () => {
  await rt?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** Every page of a list, following `pagination.next`; between pages `between` runs (new instances arrive). */
async function allPages(path: string, size: number, between: () => Promise<void> = async () => {}): Promise<Summary[]> {
  const out: Summary[] = []
  let cursor: string | null = null
  for (let page = 1; page < 1000; page++) {
    const sep = path.includes('?') ? '&' : '?'
    const p: CursorPage<Summary> = await apiGet(conn, `${path}${sep}size=${size}&page=${page}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
    out.push(...p.items)
    cursor = p.pagination.next
    if (!cursor) return out
    await between()
  }
  throw new Error('more than 1000 pages')
}

function immediateJob(name: string): string {
  const t = JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8'))
  t.name = name
  t.scheduleRule = 'immediate'
  t.target.groups[0].nodeListType = 'nodes'
  t.target.groups[0].nodeIdentifiers = nodeIds
  delete t.target.groups[0].filter
  return JSON.stringify(t)
}

const status = (p: Promise<unknown>) => p.then(() => 200, (err: ApiError) => err.status)

describe('history in the store (real coordinator)', () => {
  it('a restart on the filled store holds only the live instance in memory; finished ones answer from the store', async () => {
    expect([...rt.state.instances.keys()]).toEqual([filled.instanceIds.at(-1)])
    expect(rt.state.runs.size).toBe(NODES)
    const finished = filled.instanceIds[3]!
    const run = await apiGet<{ status: string; steps: { stdout: string }[] }>(conn, `/v1/runs/${runIdFor(finished, nodeIds[1]!)}`)
    expect(run.status).toBe('success')
    expect(run.steps[0]!.stdout).toContain(nodeIds[1])
    expect(await apiGet<Summary & { counts: Record<string, number> }>(conn, `/v1/instances/${finished}`)).toMatchObject({ status: 'success', counts: { success: NODES } })
    const report = await apiGet<{ job: { instances: { total: number; byStatus: Record<string, number> } }; instances: { id: string }[]; pagination: { total: number } }>(conn, '/v1/reports/old-job?size=10')
    expect(report.instances.map((i) => i.id)).toEqual(filled.instanceIds.slice(0, 10))
    expect(report.pagination.total).toBe(INSTANCES)
    // The job's counts cover every instance, not only this page (exit codes come from them).
    expect(report.job.instances).toEqual({ total: INSTANCES, byStatus: expect.objectContaining({ success: INSTANCES - 1, running: 1 }) })
  })

  it("a report's text is the JSON of the report built from its runs read by key (an instance, a job page with the live instance); finished runs come from the copies under their instance", async () => {
    const history = rt.history
    const viaKeys = async (id: string, size: number, page: number): Promise<string> => {
      const job = rt.state.jobs.get(id)
      const withRuns = async (i: InstanceRecord) => instanceReport(i, await history.runs(i.runIds))
      if (!job) {
        const instance = (await history.instance(id))!
        return JSON.stringify({ job: jobSummary(rt.state.jobs.get(instance.jobId)!), instances: [await withRuns(instance)] })
      }
      const p = await history.instancePage({ job: id, oldestFirst: true, page, size })
      return JSON.stringify({ job: jobSummary(job), instances: await Promise.all(p.items.map(withRuns)), pagination: p.pagination })
    }
    const text = async (path: string) => (await apiFetch(conn, path)).text()
    for (const [path, id, size, page] of [[`/v1/reports/${filled.instanceIds[7]}`, filled.instanceIds[7]!, 0, 0], ['/v1/reports/old-job?size=7&page=9', 'old-job', 7, 9], ['/v1/reports/old-job?pagination.size=3', 'old-job', 3, 1]] as const) {
      // The coordinator's clock may add an instance between two reads: compare when nothing changed around the request.
      for (let attempt = 0; ; attempt++) {
        const before = await viaKeys(id, size, page)
        const served = await text(path)
        if (before !== await viaKeys(id, size, page) && attempt < 3) continue
        expect(served, path).toBe(before)
        break
      }
    }
    const page9 = JSON.parse(await text('/v1/reports/old-job?size=7&page=9')) as { instances: { id: string; runs: unknown[] }[] }
    expect(page9.instances.map((i) => i.id)).toEqual(filled.instanceIds.slice(56, 60))
    expect(page9.instances.at(-1)!.runs).toHaveLength(NODES)
  })

  it('pages by cursor in a stable order: no instance twice or missed while new instances keep arriving', async () => {
    const before = await allPages('/v1/instances', 100)
    expect(before).toHaveLength(INSTANCES)
    let submitted = 0
    const paged = await allPages('/v1/instances', 7, async () => {
      await apiPostText(conn, '/v1/jobs', immediateJob(`arrives while paging ${++submitted}`), 'application/json')
    })
    expect(submitted).toBeGreaterThanOrEqual(Math.floor(INSTANCES / 7))
    // Exactly the instances there were when paging began, each once, newest first.
    expect(paged.map((i) => i.id)).toEqual(before.map((i) => i.id))
    const times = paged.map((i) => Date.parse(i.createdAt))
    expect(times).toEqual([...times].sort((a, b) => b - a))
    // Later positive: a first page now starts with the arrivals.
    const first: CursorPage<Summary> = await apiGet(conn, `/v1/instances?size=${submitted}`)
    expect(first.items.every((i) => i.jobId !== 'old-job')).toBe(true)
    expect(first.pagination.total).toBe(INSTANCES + submitted)
    // A cursor from another list is refused, naming the field.
    await expect(apiGet(conn, `/v1/instances?job=old-job&cursor=${encodeURIComponent('idx/inst/0')}`)).rejects.toMatchObject({ status: 400, body: { problems: [{ path: 'query.cursor' }] } })
  })

  it('retention prunes finished instances, runs and audit records older than the policy in small batches, never a live instance', async () => {
    const oldest = await allPages('/v1/instances?job=old-job', 100)
    const ordered = [...oldest].reverse() // oldest first
    const cut = Date.parse(ordered[30]!.createdAt)
    // As if 30 days had passed since the 31st instance was created: the 30 before it are past the retention.
    const stats = await rt.pruneNow(cut + 30 * DAY)
    expect(stats.instances).toBe(30)
    // Batches of 7 instances: 30 instances take 5, and the audit records one more.
    expect(stats.batches).toBeGreaterThanOrEqual(Math.ceil(30 / 7) + 1)
    expect(stats.auditRecords).toBeGreaterThanOrEqual(1)
    const pruned = ordered.slice(0, 30).map((i) => i.id)
    const kept = ordered.slice(30).map((i) => i.id)
    for (const id of [pruned[0]!, pruned[29]!]) {
      expect(await status(apiGet(conn, `/v1/instances/${id}`))).toBe(404)
      expect(await status(apiGet(conn, `/v1/runs/${runIdFor(id, nodeIds[0]!)}`))).toBe(404)
    }
    expect(await status(apiGet(conn, `/v1/instances/${kept[0]}`))).toBe(200)
    const remaining = await allPages('/v1/instances?job=old-job', 9)
    expect(remaining.map((i) => i.id).sort()).toEqual([...kept].sort())
    expect((await apiGet<CursorPage<Summary>>(conn, '/v1/instances?job=old-job')).pagination.total).toBe(INSTANCES - 30)
    const audit = await apiGet<{ items: { action: string; object: string }[] }>(conn, '/v1/audit?limit=1000')
    expect(audit.items.some((a) => a.action === 'job.submit' && a.object === 'old-job')).toBe(false)
    expect(audit.items.some((a) => a.action === 'token.create')).toBe(true)

    // A year on: every finished instance goes, the live one stays (it is older than the policy too).
    const live = filled.instanceIds.at(-1)!
    const all = await rt.pruneNow(Date.now() + 365 * DAY)
    expect(all.instances).toBeGreaterThanOrEqual(INSTANCES - 30 - 1)
    expect(await apiGet<Summary>(conn, `/v1/instances/${live}`)).toMatchObject({ status: 'running' })
    expect(rt.state.live.has(live)).toBe(true)
    const left = await allPages('/v1/instances?job=old-job', 9)
    expect(left.map((i) => i.id)).toEqual([live])

    // In the store: nothing of a pruned instance (record, runs, index entries); the live one whole.
    await rt.stop()
    const db = new Level<string, unknown>(join(dir, 'db'), { valueEncoding: 'json' })
    const stored: string[] = []
    for await (const k of db.keys()) stored.push(k)
    await db.close()
    const gone = [...pruned, ...kept.filter((id) => id !== live)]
    const mentions = (id: string) => stored.filter((k) => k.includes(id) || nodeIds.some((n) => k.includes(runIdFor(id, n))))
    expect(gone.flatMap(mentions)).toEqual([])
    expect(mentions(live).filter((k) => k.startsWith('run/'))).toHaveLength(NODES)
    expect(mentions(live).filter((k) => k.startsWith('idx/status/running/'))).toHaveLength(1)
  })
})
