// The agent shell (agent/shell.ts) runs over both transports: the same script (join, the last
// agent introduced to the others; its link to the coordinator cut; a job; it learns the job
// from its peers while the coordinator is away for it, runs it, and delivers the result once
// the link is back) over real libp2p on 127.0.0.1 and over the simulator (sim/ peer-sync
// scenario), with the same outcome.
//
// Over libp2p the cores are the real ones and the shell is the class AgentRuntime runs; what
// the runtime adds around them that is not the shell (level, the process runner, the
// certificate exchange over its own protocol) is stood in for here by memory, an immediate
// successful step, and a registry of the certificates the agents hold.
import { afterAll, describe, expect, it } from 'vitest'
import { randomBytes, randomUUID } from 'node:crypto'
import { ALLOW_EVERYTHING } from '../agent/allowlist.js'
import { AgentShell, MAX_ATTEMPT_MS } from '../agent/shell.js'
import { BUILTIN_SKILL_VERSION, DEFAULT_AGENT_TIMING, agentStep, restoreAgent, type AgentConfig, type AgentEffect, type AgentEvent, type AgentState } from '../agent/core.js'
import { DEFAULT_COORDINATOR_TIMING, coordinatorStep, restoreCoordinator, type CoordinatorConfig, type CoordinatorEffect, type CoordinatorEvent, type CoordinatorState, type SubmitOutcome } from '../coordinator/core.js'
import { newEnrollment } from '../coordinator/members.js'
import { createNet, linkTransport, type Net } from '../net/libp2p.js'
import { identityFromSeed, type Identity } from '../protocol/keys.js'
import { ENROLL_TOKEN_PREFIX, checkMember } from '../protocol/membership.js'
import { SHELL_INTERPRETER, type JobTemplate } from '../protocol/template.js'
import { AGENT_TICK_MS, COORDINATOR_TICK_MS, PEER_ROUND_BUSY_DELAY_MS, PEER_ROUND_IDLE_DELAY_MS, PEER_ROUND_MAX_DELAY_MS, REDIAL_MAX_MS, REDIAL_MIN_MS } from '../protocol/timing.js'
import { subscribeEnvelopes, type ShellTransport } from '../protocol/transport.js'
import { PROTOCOL_VERSION, TOPIC_JOBS, TOPIC_PROGRESS, decodeEnvelope, encodeEnvelope, seal, type SignedEnvelope } from '../protocol/wire.js'
import { runScenario } from '../sim/cli.js'
import { peerSyncTemplate } from '../sim/scenarios.js'

const AGENTS = 3
const TOKEN = `${ENROLL_TOKEN_PREFIX}shell-test-token`

interface Outcome {
  /** Per node id: the run status the coordinator recorded. */
  runs: Record<string, string>
  /** Sync requests of the cut agent that a peer answered. */
  peerSyncsAnswered: number
  /** The cut agent decided its run before its link came back. */
  decidedWhileCut: boolean
}

async function until(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

class Coordinator {
  state: CoordinatorState = restoreCoordinator([])
  readonly config: CoordinatorConfig
  net!: Net
  readonly denied = new Set<string>()
  private readonly pending = new Map<string, (e: CoordinatorEffect & { type: 'reply_rpc' | 'reply_submit' }) => void>()
  private ticker?: NodeJS.Timeout
  constructor(readonly identity: Identity) {
    this.config = { identity, ...DEFAULT_COORDINATOR_TIMING }
  }

  async start(): Promise<void> {
    this.net = await createNet({ seed: this.identity.seed, listen: ['/ip4/127.0.0.1/tcp/0'], fastLiveness: true, isDenied: (p) => this.denied.has(p) })
    await this.net.handleRpc((data, from) => new Promise((resolve) => {
      const requestId = randomUUID()
      this.pending.set(requestId, (e) => { if (e.type === 'reply_rpc') resolve(encodeEnvelope(e.envelope)) })
      this.step({ type: 'rpc', requestId, envelope: decodeEnvelope(data), peerId: from })
    }))
    this.step({ type: 'create_enrollment', requestId: 'test-enrollment', enrollment: newEnrollment({ id: 'test', token: TOKEN }, Date.now()) })
    this.ticker = setInterval(() => this.step({ type: 'tick' }), COORDINATOR_TICK_MS)
  }

  step(event: CoordinatorEvent): void {
    for (const e of coordinatorStep(this.state, this.config, event, Date.now())) {
      if (e.type === 'publish') void this.net.publish(TOPIC_JOBS, encodeEnvelope(e.envelope)).catch(() => {})
      else if (e.type === 'reply_rpc' || e.type === 'reply_submit') {
        const done = this.pending.get(e.requestId)
        this.pending.delete(e.requestId)
        done?.(e)
      }
    }
  }

  submit(template: JobTemplate): Promise<SubmitOutcome> {
    return new Promise((resolve) => {
      const requestId = randomUUID()
      this.pending.set(requestId, (e) => { if (e.type === 'reply_submit') resolve(e.outcome) })
      this.step({ type: 'submit', requestId, jobId: randomUUID(), template })
    })
  }

  async stop(): Promise<void> {
    clearInterval(this.ticker)
    await this.net?.stop()
  }
}

class Agent {
  state!: AgentState
  readonly config: AgentConfig
  net!: Net
  shell!: AgentShell
  peerSyncsAnswered = 0
  private ticker?: NodeJS.Timeout
  private stopped = false
  constructor(readonly nodeId: string, readonly identity: Identity, private readonly coordinator: Coordinator, private readonly fleet: Agent[]) {
    this.config = { nodeId, coordinatorKey: coordinator.identity.publicKey, identity, os: 'linux', ...DEFAULT_AGENT_TIMING, allow: ALLOW_EVERYTHING, skills: { [SHELL_INTERPRETER]: [BUILTIN_SKILL_VERSION] } }
  }

  async start(): Promise<void> {
    const restored = restoreAgent([], this.config, Date.now())
    this.state = restored.state
    const coordinatorPeer = this.coordinator.net.peerId
    this.net = await createNet({ seed: this.identity.seed, listen: ['/ip4/127.0.0.1/tcp/0'], trustedPublisher: coordinatorPeer })
    const coordinatorAddr = this.coordinator.net.addresses().find((a) => a.startsWith('/ip4/127.0.0.1/'))!
    this.shell = new AgentShell({
      transport: linkTransport(this.net), clock: { now: () => Date.now() }, identity: this.identity, nodeId: this.nodeId,
      coordinatorKey: this.coordinator.identity.publicKey, coordinatorPeer, coordinatorAddr,
      state: () => this.state, dispatch: (event, then) => this.dispatch(event, then),
      facts: () => ({ hostname: this.nodeId, os: 'linux', fleet: 'chorus-sim' }), skills: this.config.skills, enrollToken: TOKEN,
      jitter: (ms) => ms,
      // The runtime's certificate exchange, stood in for: the certificate the peer holds, checked as the runtime checks it.
      memberOf: (peerId) => {
        const peer = this.fleet.find((a) => a.net?.peerId === peerId)
        const check = checkMember(peer?.state.member.certificate?.envelope, this.coordinator.identity.publicKey, peerId, this.state.member.revoked, Date.now())
        return check.ok ? { nodeId: check.body.nodeId, key: check.body.key } : undefined
      },
    })
    subscribeEnvelopes(this.net, TOPIC_JOBS, (envelope) => this.dispatch({ type: 'job', envelope, via: 'gossip' }))
    subscribeEnvelopes(this.net, TOPIC_PROGRESS, (envelope) => this.dispatch({ type: 'progress', envelope }))
    await this.net.handleRpc(async (data, from) => {
      const reply = this.shell.answerPeer(decodeEnvelope(data), from)
      const asker = this.fleet.find((a) => a.net?.peerId === from)
      if (asker) asker.peerSyncsAnswered++
      return encodeEnvelope(reply)
    })
    this.carryOut(restored.effects)
    this.ticker = setInterval(() => { this.dispatch({ type: 'tick' }); this.shell.tick() }, AGENT_TICK_MS)
    this.shell.tick()
  }

  dispatch(event: AgentEvent, then?: () => void): void {
    if (this.stopped) return
    this.carryOut(agentStep(this.state, this.config, event, Date.now()))
    then?.()
  }

  private carryOut(effects: AgentEffect[]): void {
    for (const e of effects) {
      if (e.type === 'send') this.shell.send(e.envelope, e.kind, e.kind === 'sync' ? e.waitMs ?? 0 : 0)
      else if (e.type === 'publish_progress') void this.net.publish(TOPIC_PROGRESS, encodeEnvelope(e.envelope)).catch(() => {})
      else if (e.type === 'run_step') {
        const r = e.request
        setTimeout(() => this.dispatch({ type: 'step_done', runId: r.runId, stepNumber: r.stepNumber, attempt: r.attempt, result: { status: 'success', exitCode: 0, stdout: 'ok\n', stderr: '', startedAt: Date.now() } }), Math.max(0, e.notBefore - Date.now()))
      }
    }
  }

  decided(): boolean {
    return [...this.state.runs.values()].some((r) => r.status === 'success' || r.status === 'failure')
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.shell?.stop()
    clearInterval(this.ticker)
    await this.net?.stop()
  }
}

async function overLibp2p(template: JobTemplate): Promise<Outcome> {
  const coordinator = new Coordinator(identityFromSeed(randomBytes(32)))
  const agents: Agent[] = []
  for (let i = 1; i <= AGENTS; i++) agents.push(new Agent(`agent-${i}`, identityFromSeed(randomBytes(32)), coordinator, agents))
  cleanups.push(async () => { for (const a of agents) await a.stop(); await coordinator.stop() })
  await coordinator.start()
  const last = agents.at(-1)!
  for (const a of agents.slice(0, -1)) await a.start()
  await until('the first agents to join', () => agents.slice(0, -1).every((a) => a.shell.connected))
  await last.start()
  await until('the last agent to join', () => last.shell.connected)
  expect(last.shell.knownPeers.size, 'the coordinator introduced the others to the last agent').toBe(AGENTS - 1)
  // Cut its link to the coordinator: the coordinator refuses it and hangs up.
  coordinator.denied.add(last.net.peerId)
  await coordinator.net.hangUp(last.net.peerId)
  await until('the cut agent to notice', () => !last.shell.connected)
  const outcome = await coordinator.submit(template)
  expect(outcome.ok, JSON.stringify(outcome)).toBe(true)
  await until('the cut agent to decide its run', () => last.decided(), 45_000)
  const decidedWhileCut = !last.shell.connected
  coordinator.denied.delete(last.net.peerId)
  await until('every result at the coordinator', () => [...coordinator.state.runs.values()].filter((r) => r.receivedAt !== undefined).length === AGENTS, 45_000)
  const runs: Record<string, string> = {}
  for (const r of coordinator.state.runs.values()) runs[r.nodeId] = r.status
  return { runs, peerSyncsAnswered: last.peerSyncsAnswered, decidedWhileCut }
}

function overTheSimulator(seed: number): Outcome {
  const r = runScenario({ scenario: 'peer-sync', agents: AGENTS, seed })
  expect(r.violations, `seed ${seed}`).toEqual([])
  const w = r.world
  const last = w.agents.at(-1)!
  const healedAt = w.phaseMarks.find((m) => m.label === 'link healed')!.at
  const decided = [...w.outcomes.values()].find((o) => o.node === last.id)
  const runs: Record<string, string> = {}
  for (const run of w.coordinator.state!.runs.values()) runs[run.nodeId] = run.status
  let answered = 0
  // The world counts the peer rpcs in its trace; re-run with a sink to read them.
  runScenario({ scenario: 'peer-sync', agents: AGENTS, seed, traceSink: (line) => { if (line.endsWith(` from ${last.index}`) && line.includes('answers peer-rpc')) answered++ } })
  return { runs, peerSyncsAnswered: answered, decidedWhileCut: decided !== undefined && decided.at < healedAt }
}

const cleanups: (() => Promise<void>)[] = []
afterAll(async () => { for (const c of cleanups) await c() })

describe('the agent shell over both transports', () => {
  it('join, a cut link, a job learnt from peers, its result delivered once the link is back: the same outcome over libp2p and over the simulator', async () => {
    const expected: Outcome = { runs: { 'agent-1': 'success', 'agent-2': 'success', 'agent-3': 'success' }, peerSyncsAnswered: 0, decidedWhileCut: true }
    const sims = [1, 2, 3].map(overTheSimulator)
    const real = await overLibp2p(peerSyncTemplate())
    for (const o of [real, ...sims]) {
      expect({ ...o, peerSyncsAnswered: 0 }).toEqual(expected)
      expect(o.peerSyncsAnswered, 'no peer answered a sync of the cut agent').toBeGreaterThan(0)
    }
  }, 120_000)
})

/**
 * The shell's state machine over a scripted transport (every dial and call answered by the
 * test, time read from a variable): the redial grid, the refusal's pause, send gating, and the
 * turn to the peers when the coordinator cannot be reached.
 */
describe('the agent shell as a state machine', () => {
  type Call = { target: string; envelope: SignedEnvelope; onReply: (r: unknown) => void; onFail: (e: Error) => void }
  function rig() {
    const coordinator = identityFromSeed(new Uint8Array(32).fill(7))
    const identity = identityFromSeed(new Uint8Array(32).fill(8))
    let now = 1_000_000
    const dials: { peerId: string; done: (err: Error | undefined) => void }[] = []
    const calls: Call[] = []
    const events: AgentEvent[] = []
    let closed: (peerId: string) => void = () => {}
    let connectedPeers: string[] = []
    const transport: ShellTransport = {
      peerId: 'self-peer', addresses: () => ['/ip4/127.0.0.1/tcp/7000'], connectedPeers: () => connectedPeers,
      dial: (peerId, _addrs, _timeoutMs, done) => { dials.push({ peerId, done }) },
      call: (target, envelope, _timeoutMs, onReply, onFail) => { calls.push({ target, envelope, onReply, onFail }) },
      onClosed: (h) => { closed = h },
    }
    const config: AgentConfig = { nodeId: 'n1', coordinatorKey: coordinator.publicKey, identity, os: 'linux', ...DEFAULT_AGENT_TIMING, allow: ALLOW_EVERYTHING, skills: { [SHELL_INTERPRETER]: [BUILTIN_SKILL_VERSION] } }
    const state = restoreAgent([], config, now).state
    const shell = new AgentShell({
      transport, clock: { now: () => now }, identity, nodeId: 'n1', coordinatorKey: coordinator.publicKey, coordinatorPeer: 'coord-peer', coordinatorAddr: '/ip4/127.0.0.1/tcp/1/p2p/coord-peer',
      state: () => state, dispatch: (e, then) => { events.push(e); then?.() }, facts: () => ({ os: 'linux' }), skills: config.skills, jitter: (ms) => ms,
      memberOf: () => undefined,
    })
    const reply = (fields: Record<string, unknown>) => seal(coordinator, { type: 'reply', v: PROTOCOL_VERSION, ackRunIds: [], jobs: [], peers: [], tickets: [], checkpoints: [], ok: true, ...fields } as never)
    return { shell, dials, calls, events, reply, identity, advance: (ms: number) => { now += ms }, close: (p: string) => closed(p), setPeers: (p: string[]) => { connectedPeers = p } }
  }

  it('redials on the doubling grid up to REDIAL_MAX_MS, sends nothing until a hello is accepted, and starts again from REDIAL_MIN_MS after joining', () => {
    const r = rig()
    const envelope = seal(r.identity, { type: 'sync', v: PROTOCOL_VERSION, nodeId: 'n1', sentAt: 0, known: [] })
    expect(r.shell.send(envelope, 'sync', 0)).toBe(false)
    const dialledAt: number[] = []
    for (let t = 0; t <= 40_000; t += 100) {
      r.shell.tick()
      for (const d of r.dials.splice(0)) { dialledAt.push(t); d.done(new Error('connection refused')) }
      r.advance(100)
    }
    const gaps = dialledAt.slice(1).map((t, i) => t - dialledAt[i]!)
    // 0.5 s, 1 s, 2 s, 4 s, then 5 s (REDIAL_MAX_MS) from there on.
    expect(gaps.slice(0, 7)).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => Math.min(REDIAL_MAX_MS, REDIAL_MIN_MS * 2 ** i)))
    expect(r.calls, 'no hello without a connection').toHaveLength(0)
    r.advance(REDIAL_MAX_MS)
    r.shell.tick()
    r.dials.splice(0).forEach((d) => d.done(undefined))
    const hello = r.calls.splice(0)
    expect(hello.map((c) => (JSON.parse(c.envelope.body) as { type: string; addrs: string[]; skills: object }).type)).toEqual(['hello'])
    expect(JSON.parse(hello[0]!.envelope.body)).toMatchObject({ addrs: ['/ip4/127.0.0.1/tcp/7000'], skills: { [SHELL_INTERPRETER]: [BUILTIN_SKILL_VERSION] } })
    hello[0]!.onReply(r.reply({}))
    expect(r.shell.connected).toBe(true)
    expect(r.events.map((e) => e.type)).toEqual(['reply', 'connected'])
    expect(r.shell.redialMs).toBe(REDIAL_MIN_MS)
    expect(r.shell.send(envelope, 'sync', 0)).toBe(true)
    expect(r.calls.map((c) => c.target)).toEqual(['coord-peer'])
    r.close('coord-peer')
    expect(r.shell.connected).toBe(false)
    expect(r.events.at(-1)!.type).toBe('disconnected')
  })

  it('one attempt at a time: no second dial or hello while one is in flight, the next on its grid once it ended, and none stuck past MAX_ATTEMPT_MS', () => {
    const r = rig()
    r.shell.tick()
    expect(r.dials).toHaveLength(1)
    // A slow coordinator: the dial takes 3 s, the hello 4 s more; ticks every 100 ms start nothing.
    for (let t = 0; t < 3_000; t += 100) { r.advance(100); r.shell.tick() }
    expect(r.dials).toHaveLength(1)
    r.dials.splice(0)[0]!.done(undefined)
    for (let t = 0; t < 4_000; t += 100) { r.advance(100); r.shell.tick() }
    expect(r.dials).toHaveLength(0)
    expect(r.calls.filter((c) => (JSON.parse(c.envelope.body) as { type: string }).type === 'hello')).toHaveLength(1)
    // The hello fails: the next attempt is due already (planned 0.5 s after the first began) and starts at the next tick.
    r.calls.splice(0)[0]!.onFail(new Error('rpc timed out'))
    r.shell.tick()
    expect(r.dials).toHaveLength(1)
    // A dial whose callback never comes does not stop redials: after MAX_ATTEMPT_MS the shell tries again.
    r.dials.splice(0)
    r.advance(MAX_ATTEMPT_MS - 100)
    r.shell.tick()
    expect(r.dials).toHaveLength(0)
    r.advance(200)
    r.shell.tick()
    expect(r.dials).toHaveLength(1)
  })

  it('a refused hello leaves it unconnected and pauses redials for the retryAfterMs the coordinator asked', () => {
    const r = rig()
    r.shell.tick()
    r.dials.splice(0).forEach((d) => d.done(undefined))
    r.calls.splice(0)[0]!.onReply(r.reply({ ok: false, error: 'overloaded', retryAfterMs: 4_000 }))
    expect(r.shell.connected).toBe(false)
    r.advance(3_900)
    r.shell.tick()
    expect(r.dials).toHaveLength(0)
    r.advance(100)
    r.shell.tick()
    expect(r.dials).toHaveLength(1)
  })

  /** Joins with two introduced peers, then loses the coordinator. */
  function joinedThenLost() {
    const r = rig()
    r.shell.tick()
    r.dials.splice(0).forEach((d) => d.done(undefined))
    r.calls.splice(0)[0]!.onReply(r.reply({ peers: [{ peerId: 'peer-a', addrs: ['/ip4/127.0.0.1/tcp/7001'] }, { peerId: 'peer-b', addrs: ['/ip4/127.0.0.1/tcp/7002'] }] }))
    r.close('coord-peer')
    return r
  }
  /** Ticks every 100 ms for ms, failing every coordinator dial with err; returns the peers dialled and when (ms after the start). */
  function runAway(r: ReturnType<typeof rig>, ms: number, err: () => Error) {
    const peerDials: { peerId: string; at: number; done: (e: Error | undefined) => void }[] = []
    for (let t = 0; t <= ms; t += 100) {
      r.shell.tick()
      for (const d of r.dials.splice(0)) {
        if (d.peerId === 'coord-peer') d.done(err())
        else peerDials.push({ peerId: d.peerId, at: t, done: d.done })
      }
      r.advance(100)
    }
    return peerDials
  }

  it('when the coordinator stays away it dials the peers the coordinator introduced, PEER_ROUND_IDLE_DELAY_MS after the loss (no rollout waits on them), and asks the connected ones for a sync', () => {
    const r = joinedThenLost()
    const peerDials = runAway(r, PEER_ROUND_IDLE_DELAY_MS + 1_000, () => new Error('connection refused'))
    // The redials before the delay turned to no peer; the tick at the delay did. (With a rollout
    // that waits on peers it is PEER_ROUND_DELAY_MS: with the idle delay there, the simulator's
    // coordinator-loss seeds in test/sim.test.ts fail their gap checker.)
    expect(peerDials.map((d) => [d.peerId, d.at])).toEqual([['peer-a', PEER_ROUND_IDLE_DELAY_MS], ['peer-b', PEER_ROUND_IDLE_DELAY_MS]])
    r.setPeers(['peer-a'])
    peerDials.forEach((d, i) => d.done(i === 0 ? undefined : new Error('refused')))
    expect(r.calls.map((c) => [c.target, (JSON.parse(c.envelope.body) as { type: string }).type])).toEqual([['peer-a', 'sync']])
  })

  it('a coordinator back within the delay costs no peer dial; one that shows it is busy (handshakes reset) postpones the peers up to PEER_ROUND_MAX_DELAY_MS', () => {
    const r = joinedThenLost()
    // Back after 2 s: the hello is accepted before the delay ends.
    expect(runAway(r, 2_000, () => new Error('connection refused'))).toEqual([])
    r.advance(REDIAL_MAX_MS)
    r.shell.tick()
    r.dials.splice(0).forEach((d) => d.done(undefined))
    r.calls.splice(0)[0]!.onReply(r.reply({}))
    expect(runAway(r, PEER_ROUND_IDLE_DELAY_MS * 2, () => new Error('unexpected dial')), 'connected: no peer round').toEqual([])
    // Lost again, and every redial is reset by a coordinator past its handshake bound: no peer
    // round while the resets keep coming, until PEER_ROUND_MAX_DELAY_MS after the loss.
    r.close('coord-peer')
    const busy = () => Object.assign(new Error('connection error 127.0.0.1:7700: connect ECONNRESET 127.0.0.1:7700'), { peerBusy: true })
    const peerDials = runAway(r, PEER_ROUND_MAX_DELAY_MS + 1_000, busy)
    expect(peerDials.map((d) => [d.peerId, d.at])).toEqual([['peer-a', PEER_ROUND_MAX_DELAY_MS], ['peer-b', PEER_ROUND_MAX_DELAY_MS]])
  })

  it('a hello left unanswered is a busy coordinator: the first peer round waits PEER_ROUND_BUSY_DELAY_MS after it', () => {
    const r = joinedThenLost()
    const away = PEER_ROUND_IDLE_DELAY_MS - 10_000
    expect(runAway(r, away, () => new Error('connection refused'))).toEqual([])
    let dial: ((e: Error | undefined) => void) | undefined
    while (!dial) {
      r.shell.tick()
      dial = r.dials.splice(0).find((d) => d.peerId === 'coord-peer')?.done
      r.advance(100)
    }
    dial(undefined)
    r.calls.splice(0)[0]!.onFail(new Error('rpc timed out after 10000 ms'))
    const peerDials = runAway(r, PEER_ROUND_BUSY_DELAY_MS + 1_000, () => new Error('connection refused'))
    expect(peerDials.map((d) => [d.peerId, d.at])).toEqual([['peer-a', PEER_ROUND_BUSY_DELAY_MS], ['peer-b', PEER_ROUND_BUSY_DELAY_MS]])
  })
})
