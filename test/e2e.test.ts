// End to end over real processes on 127.0.0.1: a coordinator and three agents, each its own
// Node.js process with libp2p over TCP (noise, yamux, gossipsub), a level store and real
// child processes for the steps.
import { describe, expect, it } from 'vitest'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalFleet, waitFor } from '../cli/fleet.js'
import { withLocalFleet } from './helpers/fleet.js'
import { createNet } from '../net/libp2p.js'
import { generateIdentity, identityFromSeed } from '../protocol/keys.js'
import { PROTOCOL_VERSION, TOPIC_JOBS, encodeEnvelope, seal } from '../protocol/wire.js'
import { parseTemplateObject } from '../protocol/parse.js'
import { shellJob } from './helpers/templates.js'

let fleet: LocalFleet
let markers: string

function job(name: string, nodes: string[], lines: string[], timeoutSeconds = 60) {
  return shellJob(name, nodes, lines, { timeoutSeconds }, { name: 'mark' })
}

async function markerCount(prefix: string): Promise<number> {
  return (await readdir(markers)).filter((f) => f.startsWith(prefix)).length
}

async function logOf(path: string): Promise<string> {
  return readFile(path, 'utf8')
}

withLocalFleet('chorus-markers-', { agents: 3, agentConfig: { allow: 'any' } }, (f, d) => { fleet = f; markers = d })

describe('a local fleet over real libp2p', () => {
  it('runs a job targeting 2 of 3 nodes by id on exactly those 2, and both results arrive', async () => {
    const id = await fleet.submit(JSON.stringify(job('two of three', ['node-1', 'node-3'], [`mktemp ${markers}/two.XXXXXX`, 'echo hello from $(hostname)'])))
    const report = await fleet.waitForJob(id, 60_000)
    const inst = report.instances[0]!
    expect(inst.status).toBe('success')
    expect(inst.runs.map((r) => r.nodeId).sort()).toEqual(['node-1', 'node-3'])
    for (const r of inst.runs) {
      expect(r.status).toBe('success')
      expect(r.steps[0]).toMatchObject({ number: 1, status: 'success', attempts: 1, exitCode: 0 })
      expect(r.steps[0]!.stdout).toContain('hello from')
      expect(Date.parse(r.finishedAt!)).toBeGreaterThanOrEqual(Date.parse(r.startedAt!))
    }
    expect(await markerCount('two.')).toBe(2)
    expect(await logOf(fleet.agents[1]!.logFile)).toContain('this node is not targeted')
  })

  it('every agent refuses a job signed by another key and a tampered job, even from the coordinator\'s own peer', async () => {
    // Stand in for the coordinator: same libp2p identity, same port. Agents redial it; its
    // gossip passes their topic validator, so only the Chorus signature check stands between
    // these messages and a shell.
    const { seed } = JSON.parse(await readFile(join(fleet.coordinator.dir, 'identity.json'), 'utf8')) as { seed: string }
    const real = identityFromSeed(Buffer.from(seed, 'base64url'))
    const port = /\/tcp\/(\d+)/.exec(fleet.multiaddr)![1]
    await fleet.killCoordinator('SIGTERM')
    const impostor = await createNet({ seed: real.seed, listen: [`/ip4/127.0.0.1/tcp/${port}`] })
    try {
      await waitFor('agents to reconnect and subscribe', async () => (impostor.node.services.pubsub.getSubscribers(TOPIC_JOBS).length >= 3 ? true : undefined), 30_000, 100)
      const template = parseTemplateObject(job('evil', ['node-1', 'node-2', 'node-3'], [`mktemp ${markers}/evil.XXXXXX`]))
      if (!template.ok) throw new Error('test template invalid')
      const body = (jobId: string) => ({ type: 'job' as const, v: PROTOCOL_VERSION, jobId, issuedAt: Date.now(), expiresAt: Date.now() + 600_000, template: template.template, resolved: { groups: [{ nodes: ['node-1', 'node-2', 'node-3'] }] } })
      const foreign = seal(generateIdentity(), body('foreign-1'))
      const genuine = seal(real, body('tampered-1'))
      const tampered = { ...genuine, body: genuine.body.replace('evil', 'EVIL') }
      expect(tampered.body).not.toBe(genuine.body)
      await impostor.publish(TOPIC_JOBS, encodeEnvelope(foreign))
      await impostor.publish(TOPIC_JOBS, encodeEnvelope(tampered))
      await impostor.publish(TOPIC_JOBS, Buffer.from('{"not":"an envelope"}'))
      await waitFor('every agent to log both refusals', async () => {
        const logs = await Promise.all(fleet.agents.map((a) => logOf(a.logFile)))
        return logs.every((l) => l.includes('signed by untrusted key') && l.includes('bad signature')) ? true : undefined
      }, 15_000, 200)
      // Each agent logged both refusals: it refused them, so they never ran.
      expect(await markerCount('evil.')).toBe(0)
    } finally {
      await impostor.stop()
      await fleet.startCoordinator()
    }
  })

  it('loses no result when the coordinator is SIGKILLed while results are in flight: each arrives exactly once', async () => {
    await fleet.waitForNodes(3, 30_000)
    const id = await fleet.submit(JSON.stringify(job('through a crash', ['node-1', 'node-2', 'node-3'], ['sleep 2', `mktemp ${markers}/crash.XXXXXX`])))
    // Kill it once every agent has started the run (gossip delivery time varies on a loaded machine).
    await waitFor('all three agents to start the run', async () => {
      const logs = await Promise.all(fleet.agents.map((a) => logOf(a.logFile)))
      return logs.every((l) => l.split('\n').some((line) => line.includes(id) && line.includes('run started'))) ? true : undefined
    }, 20_000, 50)
    await fleet.killCoordinator('SIGKILL')
    // The steps finish while the coordinator is down: three results wait in the agents' outboxes.
    await waitFor('all three steps to run', async () => ((await markerCount('crash.')) === 3 ? true : undefined), 20_000, 100)
    await fleet.startCoordinator()
    const report = await fleet.waitForJob(id, 60_000)
    expect(report.instances[0]!.status).toBe('success')
    expect(report.instances[0]!.runs.map((r) => r.status)).toEqual(['success', 'success', 'success'])
    expect(await markerCount('crash.')).toBe(3)
    const stored = (await logOf(fleet.coordinator.logFile)).split('\n').filter((l) => l.includes('"result stored"'))
    for (const run of report.instances[0]!.runs) {
      expect(stored.filter((l) => l.includes(run.runId))).toHaveLength(1)
    }
  })

  it('an agent that was down when a job was published fetches it when it comes back', async () => {
    await fleet.stopAgent(2)
    const id = await fleet.submit(JSON.stringify(job('late joiner', ['node-1', 'node-2', 'node-3'], [`mktemp ${markers}/late.XXXXXX`])))
    await waitFor('the two live agents to finish', async () => {
      const r = await fleet.report(id)
      return (r.instances[0]!.counts.success ?? 0) === 2 ? true : undefined
    }, 30_000)
    expect(await markerCount('late.')).toBe(2)
    await fleet.startAgent(2)
    const report = await fleet.waitForJob(id, 60_000)
    expect(report.instances[0]!.status).toBe('success')
    expect(await markerCount('late.')).toBe(3)
    expect(await logOf(fleet.agents[2]!.logFile)).toMatch(/"via":"sync"/)
  })
})
