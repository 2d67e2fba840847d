// Refused means no state, over a real coordinator process: a registered node that is not a target
// (a real identity on a real libp2p connection, registered by a signed hello) floods signed
// results for future occurrences of a daily job and for a job that does not target it. Every one
// is refused; the coordinator's instances, runs and level store are what they were, every
// instance a job lists exists (also after a restart), and a legitimate result afterwards is stored.
import { describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { readFile } from 'node:fs/promises'
import { Level } from 'level'
import { multiaddr } from '@multiformats/multiaddr'
import { LocalFleet, waitFor } from '../cli/fleet.js'
import { apiGet } from '../cli/client.js'
import { withLocalFleet } from './helpers/fleet.js'
import { shellJob } from './helpers/templates.js'
import { createNet, peerIdForPublicKey, type Net } from '../net/libp2p.js'
import { generateIdentity } from '../protocol/keys.js'
import { PROTOCOL_VERSION, decodeEnvelope, encodeEnvelope, open, seal, type ReplyBody, type WireBodyInput } from '../protocol/wire.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'

let fleet: LocalFleet

withLocalFleet('chorus-refused-', { agents: 1 }, (f) => { fleet = f })

const DAY = 86_400_000
const stamp = (ms: number) => new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')

function job(name: string, nodes: string[], scheduleRule = 'immediate') {
  return JSON.stringify({ ...shellJob(name, nodes, ['hostname'], { timeoutSeconds: 300 }, { name: 'who' }), scheduleRule })
}

/** A node of its own: a generated key, a libp2p connection to the coordinator, signed requests. */
async function intruder(nodeId: string) {
  const identity = generateIdentity()
  const net: Net = await createNet({ seed: identity.seed, listen: ['/ip4/127.0.0.1/tcp/0'] })
  const coordinatorPeer = peerIdForPublicKey(fleet.publicKey)
  const connect = () => net.node.dial(multiaddr(`${fleet.multiaddr}/p2p/${coordinatorPeer}`))
  await connect()
  const rpc = async (body: WireBodyInput): Promise<ReplyBody> => {
    const opened = open(decodeEnvelope(await net.request(coordinatorPeer, encodeEnvelope(seal(identity, body)), 10_000)), [fleet.publicKey])
    if (!opened.ok || opened.body.type !== 'reply') throw new Error('no signed reply')
    return opened.body
  }
  const result = (jobId: string, occurrenceAt: number) => {
    const instanceId = instanceIdFor(jobId, occurrenceAt)
    return rpc({
      type: 'result', v: PROTOCOL_VERSION, runId: runIdFor(instanceId, nodeId), jobId, instanceId, nodeId, occurrenceAt, group: 0, batch: 0, status: 'success',
      startedAt: occurrenceAt, finishedAt: occurrenceAt + 1, steps: [{ number: 1, name: 'who', status: 'success', attempts: 1, exitCode: 0, outputs: {}, stdout: 'x\n', stderr: '' }],
    })
  }
  // Enrolled as an admin would let it (a token of its own): a member, but not a target of most jobs.
  const enrollToken = (await readFile(await fleet.createEnrollToken(`enrol-${nodeId}`, 1), 'utf8')).trim()
  const hello = () => rpc({ type: 'hello', v: PROTOCOL_VERSION, nodeId, peerId: net.peerId, addrs: [], facts: { kernel_name: 'Linux' }, agentVersion: 'test', sentAt: Date.now(), enrollToken })
  return { net, connect, hello, result }
}

interface JobView { instanceIds: string[] }

/** The coordinator's state as its API shows it: every job's instances and every instance's runs; the store keys that state needs. */
async function stateView(jobIds: string[]) {
  const jobs: Record<string, string[]> = {}
  const keys = new Set<string>(['node/node-1', 'node/intruder'])
  for (const id of jobIds) {
    const j = await apiGet<JobView>(fleet.conn, `/v1/jobs/${id}`)
    jobs[id] = j.instanceIds
    keys.add(`job/${id}`)
    for (const iid of j.instanceIds) {
      keys.add(`instance/${iid}`)
      for (const r of (await apiGet<{ items: { runId: string }[] }>(fleet.conn, `/v1/instances/${iid}/runs`)).items) keys.add(`run/${r.runId}`)
    }
  }
  return { jobs, keys: [...keys].sort() }
}

async function occurrenceOf(instanceId: string): Promise<number> {
  return Date.parse((await apiGet<{ occurrenceAt: string }>(fleet.conn, `/v1/instances/${instanceId}`)).occurrenceAt)
}

async function storeKeys(dir: string): Promise<string[]> {
  const level = new Level<string, string>(join(dir, 'db'), { valueEncoding: 'utf8' })
  const keys: string[] = []
  // The records of jobs, instances, runs and nodes (tokens, enrolments and the audit trail are not what is compared).
  for await (const k of level.keys()) if (/^(job|instance|run|node)\//.test(k)) keys.push(k)
  await level.close()
  return keys.sort()
}

describe('refused results over a real coordinator', () => {
  it('a non-target\'s flood of signed results changes nothing the coordinator holds or stores; its own run\'s result is stored', async () => {
    const me = await intruder('intruder')
    try {
      expect((await me.hello()).ok).toBe(true)
      const tomorrow = Math.ceil(Date.now() / DAY) * DAY + 2 * 3_600_000
      const daily = await fleet.submit(job('daily', ['node-1'], `RRULE:DTSTART=${stamp(tomorrow)};FREQ=DAILY`))
      const other = await fleet.submit(job('not for the intruder', ['node-1']))
      await fleet.waitForJob(other, 60_000)
      const mine = await fleet.submit(job('for the intruder', ['intruder']))
      const ids = [daily, other, mine]
      const before = await stateView(ids)
      expect(before.jobs[daily]).toEqual([])

      const replies: ReplyBody[] = []
      for (let k = 0; k < 200; k++) replies.push(await me.result(daily, tomorrow + k * DAY))
      const otherInstance = before.jobs[other]![0]!
      replies.push(await me.result(other, await occurrenceOf(otherInstance)))
      expect(replies.filter((r) => r.ok)).toEqual([])
      expect(await stateView(ids)).toEqual(before)
      expect(replies.every((r) => r.ackRunIds.length === 1)).toBe(true) // never acceptable: acknowledged, not retried
      expect(replies[0]!.error).toBe(`node intruder is not a target of job ${daily}`)

      // Later positive: the intruder's result for the run it is the target of is stored.
      const mineInstance = before.jobs[mine]![0]!
      expect(await me.result(mine, await occurrenceOf(mineInstance))).toMatchObject({ ok: true, ackRunIds: [runIdFor(mineInstance, 'intruder')] })
      const report = await fleet.waitForJob(mine, 10_000)
      expect(report.instances[0]!.runs.map((r) => [r.nodeId, r.status])).toEqual([['intruder', 'success']])

      // A restart finds every instance a job lists, and the store holds exactly the records of that state.
      await fleet.killCoordinator('SIGTERM')
      const keys = await storeKeys(fleet.coordinator.dir)
      await fleet.startCoordinator()
      await waitFor('the restarted coordinator to answer', async () => apiGet(fleet.conn, "/v1/jobs").then(() => true, () => undefined), 30_000)
      const after = await stateView(ids)
      expect(after.jobs).toEqual(before.jobs)
      expect(keys).toEqual(after.keys)
    } finally {
      await me.net.stop()
    }
  }, 120_000)
})
