// Where, over 8 real agent processes: rolling windows and fixed batches taken through gossip
// between the agents, sequential groups that stop on failed criteria, and a quorum.
import { describe, expect, it } from 'vitest'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalFleet, waitFor } from '../cli/fleet.js'
import { withLocalFleet } from './helpers/fleet.js'
import { apiFetch, apiGet, apiPostText } from '../cli/client.js'
import { nodesGroup, shellStep, template } from './helpers/templates.js'
import { processState } from './helpers/process.js'

let fleet: LocalFleet
let dir: string
const ALL = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5', 'node-6', 'node-7', 'node-8']


const group = nodesGroup

function job(name: string, executionType: string, groups: unknown[], lines: string[], extra: Record<string, unknown> = {}) {
  return JSON.stringify(template(name, groups, [shellStep(lines)], { ...extra, executionType }))
}

/** The step records when it starts and ends (ms), one file per run. */
function recorder(tag: string, seconds = 0.6): string[] {
  return [`echo "$(date +%s%3N) $CHORUS_NODE_ID start" >> ${dir}/${tag}.$CHORUS_NODE_ID`, `sleep ${seconds}`, `echo "$(date +%s%3N) $CHORUS_NODE_ID end" >> ${dir}/${tag}.$CHORUS_NODE_ID`]
}

async function intervals(tag: string): Promise<{ node: string; start: number; end: number }[]> {
  const out: { node: string; start: number; end: number }[] = []
  for (const f of (await readdir(dir)).filter((x) => x.startsWith(`${tag}.`))) {
    const lines = (await readFile(join(dir, f), 'utf8')).trim().split('\n').map((l) => l.split(' '))
    out.push({ node: lines[0]![1]!, start: Number(lines[0]![0]), end: Number(lines.find((l) => l[2] === 'end')?.[0] ?? NaN) })
  }
  return out.sort((a, b) => a.start - b.start)
}

/** How many times the coordinator logged `nodeId`'s disconnection. */
async function disconnectionsLogged(nodeId: string): Promise<number> {
  const lines = (await readFile(fleet.coordinator.logFile, 'utf8')).split('\n')
  return lines.filter((l) => l.includes('"msg":"node disconnected"') && l.includes(`"nodeId":"${nodeId}"`)).length
}

function maxConcurrent(iv: { start: number; end: number }[]): number {
  const events = iv.flatMap((i) => [[i.start, 1], [i.end, -1]] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let now = 0
  let max = 0
  for (const [, d] of events) { now += d; max = Math.max(max, now) }
  return max
}

withLocalFleet('chorus-where-', { agents: 8, agentConfig: { allow: 'any' } }, (f, d) => { fleet = f; dir = d }, 120_000)

describe('rollouts over 8 real agents', () => {
  it('a rolling group of batch size 2: never more than 2 at once, and all 8 ran', async () => {
    const id = await fleet.submit(job('rolling 2', 'parallel', [group(ALL, { distributionMethod: 'rolling', batchSize: { type: 'number', value: 2 } })], recorder('roll')))
    const report = await fleet.waitForJob(id, 90_000)
    expect(report.instances[0]!.status).toBe('success')
    const iv = await intervals('roll')
    expect(iv.map((i) => i.node).sort()).toEqual(ALL)
    expect(maxConcurrent(iv)).toBeLessThanOrEqual(2)
    // It was a rollout, not a serial queue: two ran together at some point.
    expect(maxConcurrent(iv)).toBe(2)
    expect(report.instances[0]!.runs.map((r) => r.batch).sort()).toEqual([0, 0, 1, 1, 2, 2, 3, 3])
  })

  it('fixed batches of 3: 3, 3, 2, strictly one batch after another', async () => {
    const id = await fleet.submit(job('batches of 3', 'parallel', [group(ALL, { distributionMethod: 'batching', batchSize: { type: 'number', value: 3 } })], recorder('batch')))
    const report = await fleet.waitForJob(id, 90_000)
    expect(report.instances[0]!.status).toBe('success')
    const iv = await intervals('batch')
    expect(iv).toHaveLength(8)
    const batchOf = new Map(report.instances[0]!.runs.map((r) => [r.nodeId, r.batch]))
    const batches = [0, 1, 2].map((b) => iv.filter((i) => batchOf.get(i.node) === b))
    expect(batches.map((b) => b.length)).toEqual([3, 3, 2])
    for (let b = 1; b < 3; b++) {
      const prevEnd = Math.max(...batches[b - 1]!.map((i) => i.end))
      const start = Math.min(...batches[b]!.map((i) => i.start))
      expect(start).toBeGreaterThanOrEqual(prevEnd)
    }
  })

  it('two sequential groups where the first fails its criteria: the second never starts', async () => {
    const id = await fleet.submit(job('stop on failure', 'sequential', [
      group(['node-1', 'node-2']),
      group(['node-3', 'node-4']),
    ], [`touch ${dir}/seq.$CHORUS_NODE_ID`, 'test "$CHORUS_NODE_ID" != node-2']))
    const report = await fleet.waitForJob(id, 90_000)
    const runs = new Map(report.instances[0]!.runs.map((r) => [r.nodeId, r]))
    expect(report.instances[0]!.status).toBe('failure')
    expect(runs.get('node-1')!.status).toBe('success')
    expect(runs.get('node-2')!.status).toBe('failure')
    for (const n of ['node-3', 'node-4']) {
      expect(runs.get(n)!.status).toBe('skipped')
      expect(runs.get(n)!.reasonCode).toBe('distribution_stopped')
      expect(runs.get(n)!.reason).toMatch(/distribution stopped: group 0 did not meet its success criteria/)
    }
    expect((await readdir(dir)).filter((f) => f.startsWith('seq.')).sort()).toEqual(['seq.node-1', 'seq.node-2'])
  })

  it('targets saved lists and saved filters (attributes, skills, search query); plan shows batches without running anything', async () => {
    const put = (path: string, body: unknown) => apiFetch(fleet.conn, path, { method: 'PUT', body: JSON.stringify(body) })
    expect((await put('/v1/lists/pair', { name: 'a pair', nodes: ['node-5', 'node-6'] })).status).toBe(200)
    const f = await put('/v1/filters/three-four', { query: 'node:node-3 OR node:node-4', constraints: { skills: [{ name: 'chef-platform/shell-interpreter', version: ['>= 1.0', '< 2'] }] } })
    expect(f.status).toBe(200)
    const bad = await put('/v1/filters/bad', { query: 'role:web AND (env:prod' })
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as { error: string }).error).toMatch(/not closed/)

    const listJob = job('saved list', 'parallel', [{ ...group([]), nodeListType: 'savedList', listId: 'pair', nodeIdentifiers: [] }], ['true'])
    const id = await fleet.submit(listJob)
    const report = await fleet.waitForJob(id, 60_000)
    expect(report.instances[0]!.runs.map((r) => r.nodeId).sort()).toEqual(['node-5', 'node-6'])

    const filterJob = job('saved filter', 'parallel', [{ ...group([]), nodeListType: 'savedFilter', filterId: 'three-four', nodeIdentifiers: [], distributionMethod: 'rolling', batchSize: { type: 'percent', value: 50 } }], ['true'])
    const plan = await apiPostText<{ groups: { batchSize: number; nodes: { nodeId: string; batch: number; alive: boolean }[] }[] }>(fleet.conn, '/v1/plan', filterJob, 'application/json')
    expect(plan.status).toBe(200)
    expect(plan.body.groups[0]!.batchSize).toBe(1)
    expect(plan.body.groups[0]!.nodes.map((n) => [n.nodeId, n.batch, n.alive])).toEqual([['node-3', 0, true], ['node-4', 1, true]])

    const unknown = await apiPostText<{ problems: { path: string; message: string }[] }>(fleet.conn, '/v1/jobs', job('nope', 'parallel', [{ ...group([]), nodeListType: 'savedList', listId: 'no-such-list', nodeIdentifiers: [] }], ['true']), 'application/json')
    expect(unknown.status).toBe(422)
    expect(unknown.body.problems[0]).toMatchObject({ path: 'target.groups[0].listId' })
    expect(unknown.body.problems[0]!.message).toMatch(/unknown saved list "no-such-list"; known lists: pair/)

    const search = await apiGet<{ items: { nodeId: string }[] }>(fleet.conn, `/v1/nodes?search=${encodeURIComponent('node:node-1* -node:node-1')}`)
    expect(search.items.map((n) => n.nodeId)).toEqual([])
    const all = await apiGet<{ items: { nodeId: string; skills: Record<string, string[]>; facts: Record<string, string> }[] }>(fleet.conn, `/v1/nodes?search=${encodeURIComponent('kernel_name:Linux')}`)
    expect(all.items).toHaveLength(8)
    expect(all.items[0]!.skills['chef-platform/shell-interpreter']).toEqual(['1.0.0'])
  })

  it('quorum 100 % with one agent stopped: nothing runs and quorum_failed names that agent', async () => {
    await fleet.stopAgent(7)
    const id = await fleet.submit(job('quorum', 'parallel', [group(ALL)], [`touch ${dir}/quorum.$CHORUS_NODE_ID`], {
      chorus: { quorum: { type: 'percent', value: 100 }, quorumTimeoutSeconds: 4 },
    }))
    const report = await fleet.waitForJob(id, 60_000)
    const inst = report.instances[0]!
    expect(inst.status).toBe('quorum_failed')
    expect(inst.quorumMissing).toEqual(['node-8'])
    expect(inst.reason).toMatch(/no acknowledgement from node-8/)
    expect((await readdir(dir)).filter((f) => f.startsWith('quorum.'))).toEqual([])
    for (const r of inst.runs) expect(r.status).toBe('skipped')
  })

  // How soon a node is seen down (LIVENESS_PING_MS + LIVENESS_TIMEOUT_MS, about 6.5 s, after a connection's first LIVENESS_GRACE_MS) is a speed,
  // not asserted here; the waitFor deadlines only end a test whose node is never seen down.
  it('a dead agent is seen as down: the coordinator logs its disconnection', async () => {
    await fleet.stopAgent(6, 'SIGKILL')
    await waitFor('node-7 to be reported down', async () => {
      const nodes = await apiGet<{ items: { nodeId: string; alive: boolean }[] }>(fleet.conn, '/v1/nodes')
      return nodes.items.find((n) => n.nodeId === 'node-7')?.alive === false ? true : undefined
    }, 10_000, 100)
    expect(await disconnectionsLogged('node-7')).toBeGreaterThan(0)
  })

  it('a frozen agent (SIGSTOP: process alive, connection open, no answers) is seen as down by the liveness pings', async () => {
    const proc = fleet.agents[5]!.proc
    proc.kill('SIGSTOP')
    try {
      await waitFor('node-6 to be reported down', async () => {
        const nodes = await apiGet<{ items: { nodeId: string; alive: boolean }[] }>(fleet.conn, '/v1/nodes')
        return nodes.items.find((n) => n.nodeId === 'node-6')?.alive === false ? true : undefined
      }, 15_000, 100)
      expect(await disconnectionsLogged('node-6')).toBeGreaterThan(0)
      // Still there and stopped when seen down: its pings went unanswered, nothing closed its connection.
      expect(processState(proc.pid!)).toBe('T')
    } finally {
      proc.kill('SIGCONT')
    }
  })
})
