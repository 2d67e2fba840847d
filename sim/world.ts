// The simulated world: one coordinator, N agents and an attacker, driven by the SAME cores
// the real runtimes drive, over a simulated network, simulated disks and per-node clocks.
//
// What is simulated, and how it mirrors the runtimes (agent/runtime.ts, coordinator/runtime.ts):
// - Each node handles one core event at a time, in arrival order (the runtimes' promise queue).
//   A `persist` effect takes a disk-latency draw; the effects after it wait for it, exactly as
//   the runtimes `await db.batch(...)` before carrying out the next effect.
// - A crash drops the node's memory: its queue, its pending effects, the persist in progress,
//   its connections and its gossip seen-cache. A restart rebuilds state with restoreAgent /
//   restoreCoordinator from the records that were durably committed, in key order (level).
// - Agents tick every AGENT_TICK_MS of their local clock, redial the coordinator with doubling
//   backoff, connect = dial + hello rpc, then dispatch the reply and a `connected` event.
//   `send` effects go out only while connected (as in the runtime). A connection monitor
//   pings the coordinator every CONN_MONITOR_MS and drops the connection when pings fail.
// - The coordinator ticks every COORDINATOR_TICK_MS; rpc requests wait in its queue; beyond
//   MAX_PENDING_REQUESTS they are refused.
// - publish() is gossip over a mesh of degree GOSSIP_DEGREE with relaying, dedupe by message
//   id (a seen-cache with gossipsub's TTL), and IHAVE/IWANT repair: a node holding messages of
//   the last GOSSIP_HISTORY heartbeats advertises them all in one IHAVE per lazy peer per
//   heartbeat (as gossipsub does), so repair costs O(nodes) events per heartbeat, not
//   O(nodes x messages). Two topics: jobs (coordinator -> agents) and progress (agents'
//   ack/start/renew/done, gossiped only while the coordinator is away and only for jobs of at
//   most 64 targets; otherwise progress goes by rpc and comes back as checkpoints in watches).
//   rpc is reliable-or-reject.
// - Every node's `now` is its own clock: an offset and a drift rate over simulated time.
import { createHash } from 'node:crypto'
import { ALLOW_EVERYTHING } from '../agent/allowlist.js'
import {
  BUILTIN_SKILL_VERSION, DEFAULT_AGENT_TIMING,
  type AgentConfig, type AgentEffect, type AgentEvent, type AgentRun, type StepRunRequest,
} from '../agent/core.js'
import {
  DEFAULT_COORDINATOR_TIMING,
  type CoordinatorEffect, type CoordinatorEvent, type SubmitOutcome, type Targets,
} from '../coordinator/core.js'
import { identityFromSeed } from '../protocol/keys.js'
import { AgentShell } from '../agent/shell.js'
import { SimTransport } from './transport.js'
import {
  AgentNode, CONN_MONITOR_MS, CoordinatorNode, DEFAULT_STEP_MODEL, GOSSIP_DEGREE, GOSSIP_FRAME_BYTES, GOSSIP_HEARTBEAT_MS, GOSSIP_HISTORY, GOSSIP_LAZY,
  GOSSIP_SEEN_TTL_MS, IHAVE_BYTES, INVARIANT_CHECK_MAX_AGENTS, MAX_EVENTS, PING_BYTES, PING_TIMEOUT_MS, REAL_CORES, RPC_FRAME_BYTES, RUN_TERMINAL, SIM_EPOCH_MS, SimNode,
  type Checker, type Cores, type ExecRecord, type GossipMessage, type GossipTopic, type MessageBucket, type OutcomeRecord, type StepModel, type ViolationDetail, type WorldOptions,
} from './types.js'
export * from './types.js'
import { newEnrollment } from '../coordinator/members.js'
import { coordinatorInvariants } from '../coordinator/invariants.js'
import { agentInvariants } from '../agent/invariants.js'
import { ENROLL_TOKEN_PREFIX, checkMember } from '../protocol/membership.js'
import { open, type JobBody, type SignedEnvelope } from '../protocol/wire.js'
import { livenessBound } from './bound.js'
import { canonicalJson } from '../protocol/canonical.js'
import { SHELL_INTERPRETER, type JobTemplate } from '../protocol/template.js'
import { EventHeap } from './heap.js'
import { Prng } from './prng.js'
import { LINK_PROFILES, NO_FAULTS, NetworkModel, type FaultSettings, type LinkProfileName } from './network.js'

// The runtimes' own timing (protocol/timing.ts, shared with agent/ and coordinator/runtime.ts).
import { AGENT_TICK_MS, AGENT_VERSION, COORDINATOR_TICK_MS, MAX_PENDING_REQUESTS, REDIAL_MAX_MS, REDIAL_MIN_MS, RPC_TIMEOUT_MS } from '../protocol/timing.js'
export { AGENT_TICK_MS, AGENT_VERSION, COORDINATOR_TICK_MS, MAX_PENDING_REQUESTS, REDIAL_MAX_MS, REDIAL_MIN_MS, RPC_TIMEOUT_MS }

const NO_CONNECTIONS: readonly number[] = Object.freeze([])
const COORDINATOR_ONLY: readonly number[] = Object.freeze([0])

export class World {
  readonly prng: Prng
  readonly heap = new EventHeap()
  readonly net: NetworkModel
  readonly nodes: SimNode[] = []
  readonly agents: AgentNode[] = []
  /** Rogue hosts (WorldOptions.rogues): in the network, never enrolled. */
  readonly rogues: AgentNode[] = []
  /** Honest agents an admin revoked, with the (global) time of the revocation. */
  readonly revokedAt = new Map<string, number>()
  /** What the membership checker looks at: definitions that reached a rogue, by gossip or in a reply. */
  readonly rogueReceipts: string[] = []
  readonly checkInvariants: boolean
  readonly coordinator: CoordinatorNode
  readonly attacker: SimNode
  /** The fleet's enrolment token (derived from the coordinator's key: no PRNG draw). */
  readonly enrollToken: string
  cores: Cores
  readonly template: JobTemplate
  readonly stepModel: StepModel
  /** See sim/bound.ts: derived from the job (re-derived from the resolved group sizes at publish) unless fixed by the options. */
  livenessBoundMs: number
  livenessFormula: string
  now = 0
  events = 0
  coreSteps = 0
  messages = 0
  /** Ground truth. */
  readonly executed = new Map<string, ExecRecord>()
  readonly execList: ExecRecord[] = []
  readonly outcomes = new Map<string, OutcomeRecord>()
  /** Per instance: when each node's run record first became durable (it accepted the job). */
  readonly accepted = new Map<string, Map<string, number>>()
  /** Per run: released slot holders this node's knowledge counted when it took its turn (vanishedHolder "release"). */
  readonly releasedAtStart = new Map<string, string[]>()
  progressMessages = 0
  /** Parsed bodies of the jobs the coordinator published, by job id. */
  readonly jobBodies = new Map<string, JobBody>()
  /** Who each published job targets, as the coordinator resolved it (ground truth for the checkers; agents never see these lists). */
  readonly jobTargets = new Map<string, Targets>()
  private readonly boundResolved = new Set<string>()
  /** Job bodies the coordinator signed and published, by job id. */
  readonly legitJobs = new Map<string, { body: string; commands: string[] }>()
  readonly submitted: { jobId: string; at: number; outcome?: SubmitOutcome }[] = []
  readonly violations: ViolationDetail[] = []
  readonly notes: string[] = []
  readonly tradeoffs: ViolationDetail[] = []
  readonly logCounts = { debug: 0, info: 0, warn: 0 }
  readonly buckets = new Map<number, MessageBucket>()
  readonly phaseMarks: { at: number; label: string }[] = []
  safetyEndsAt = Infinity
  /** Set by a scenario (quorum-upgrade): at most this many targets down or upgrading at once. */
  maxUnavailable: number | undefined
  /** Set by a scenario (coordinator-loss): the longest gap allowed between consecutive run ends while the coordinator is down. */
  maxRunEndGapMs: number | undefined
  /** When the coordinator was down, as the scenario crashed and restarted it (sim time). */
  readonly coordinatorDown: [number, number][] = []
  /** For the report: partitions and dark links as they happened. */
  readonly partitionLog: { id: number; mode: string; members: number[]; from: number; to: number }[] = []
  readonly offlineLog: { node: number; from: number; to: number }[] = []
  healedAt = Infinity
  convergedAt: number | undefined
  peakRss = 0
  /** Set when the coordinator refused the scenario's job: the run proves nothing. */
  refusal: string | undefined
  stopped = false
  private readonly checkers: Checker[]
  private readonly timelineOn: boolean
  private readonly gossipRepair: boolean
  private trace = createHash('sha256')
  private traceBuf = ''
  private rpcSeq = 0
  private readonly byPeer = new Map<string, SimNode>()
  private msgSeq = 0
  /** Messages whose seen marks are still kept (newest last), from liveHead on. */
  private readonly liveMessages: GossipMessage[] = []
  private liveHead = 0
  private readonly violationCounts = new Map<string, number>()
  /** Called by scenarios once the rollout job is known to every live agent, etc. */
  private readonly onGossip: ((node: SimNode, msg: GossipMessage) => void)[] = []

  constructor(readonly options: WorldOptions) {
    this.prng = new Prng(options.seed)
    this.cores = REAL_CORES
    this.template = options.template
    this.stepModel = { ...DEFAULT_STEP_MODEL, ...options.stepModel }
    const initial = livenessBound(options.template, this.stepModel, options.template.target.groups.map(() => options.agents))
    this.livenessBoundMs = options.livenessBoundMs ?? initial.ms
    this.livenessFormula = options.livenessBoundMs !== undefined ? `fixed by the caller: ${options.livenessBoundMs / 1000} s` : `${initial.formula} (before the coordinator resolved the targets)`
    this.checkers = options.checkers
    this.timelineOn = options.timeline ?? false
    this.gossipRepair = options.gossipRepair ?? true
    const n = options.agents
    const total = n + 2 + (options.rogues ?? 0)
    this.net = new NetworkModel(total, this.prng)

    const coordIdentity = identityFromSeed(this.prng.bytes(32))
    this.coordinator = new CoordinatorNode(0, 'coordinator', coordIdentity, this.drawOffset(500), this.drawRate(), { identity: coordIdentity, ...DEFAULT_COORDINATOR_TIMING })
    this.coordinator.snapshot = false
    this.enrollToken = `${ENROLL_TOKEN_PREFIX}sim-${coordIdentity.publicKey.slice(0, 22)}`
    this.checkInvariants = options.checkInvariants ?? options.agents <= INVARIANT_CHECK_MAX_AGENTS
    this.nodes.push(this.coordinator)
    const width = String(n).length
    for (let i = 1; i <= n; i++) {
      const identity = identityFromSeed(this.prng.bytes(32))
      const id = options.nodeIds?.[i - 1] ?? `agent-${String(i).padStart(width, '0')}`
      // The allowlist is local policy, not authenticity: sim agents permit any command, so only
      // signatures stand between the attacker and execution.
      const config: AgentConfig = {
        nodeId: id, coordinatorKey: coordIdentity.publicKey, identity, os: 'linux', ...DEFAULT_AGENT_TIMING,
        allow: ALLOW_EVERYTHING, skills: { [SHELL_INTERPRETER]: [BUILTIN_SKILL_VERSION] },
      }
      // Rings: canary 5 %, early the next 25 %, main the rest (the jobs target rings by fact).
      const ring = i <= Math.max(1, Math.ceil(n / 20)) ? 'canary' : i <= Math.max(2, Math.ceil(n * 0.3)) ? 'early' : 'main'
      const facts: Record<string, string> = {
        hostname: id, kernel_name: 'Linux', kernel_release: '6.1.0-sim', os: 'linux', platform: 'ubuntu', arch: 'x86_64',
        fleet: 'chorus-sim', ring, shard: String(i % 4), primary_ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, cpus: '4', memory: '8589934592',
      }
      const agent = new AgentNode(i, id, identity, this.drawOffset(2_000), this.drawRate(), config, facts)
      this.nodes.push(agent)
      this.agents.push(agent)
    }
    const attackerIdentity = identityFromSeed(this.prng.bytes(32))
    this.attacker = new SimNode(n + 1, 'attacker', 'attacker', attackerIdentity, 0, 1)
    this.nodes.push(this.attacker)
    for (let k = 1; k <= (options.rogues ?? 0); k++) {
      const identity = identityFromSeed(this.prng.bytes(32))
      const config: AgentConfig = { nodeId: `rogue-${k}`, coordinatorKey: coordIdentity.publicKey, identity, os: 'linux', ...DEFAULT_AGENT_TIMING, allow: ALLOW_EVERYTHING, skills: { [SHELL_INTERPRETER]: [BUILTIN_SKILL_VERSION] } }
      const rogue = new AgentNode(n + 1 + k, `rogue-${k}`, identity, 0, 1, config, { hostname: `rogue-${k}`, kernel_name: 'Linux', os: 'linux', fleet: 'chorus-sim', ring: 'canary' })
      rogue.rogue = true
      rogue.enrollToken = null
      this.nodes.push(rogue)
      this.rogues.push(rogue)
    }
    const replaced = typeof options.cores === 'function' ? options.cores(this) : options.cores
    this.cores = { ...REAL_CORES, ...replaced }
  }

  private drawOffset(maxMs: number): number {
    return Math.round(this.prng.range(-maxMs, maxMs))
  }

  private drawRate(): number {
    // Quartz oscillators drift tens of ppm; allow up to 200 ppm either way.
    return 1 + this.prng.range(-200e-6, 200e-6)
  }

  // ---------------------------------------------------------------- clocks, scheduling, trace

  localNow(node: SimNode): number {
    return this.localAt(node, this.now)
  }

  /** What `node`'s clock reads at simulated time t. */
  localAt(node: SimNode, t: number): number {
    return Math.floor(SIM_EPOCH_MS + node.clockOffsetMs + t * node.clockRate)
  }

  /** Simulated time at which `node`'s local clock reads `local` (ground truth for deadlines the node computes). */
  simTimeOfLocal(node: SimNode, local: number): number {
    return (local - SIM_EPOCH_MS - node.clockOffsetMs) / node.clockRate
  }

  /** Simulated ms until `node`'s local clock reads `local`. */
  untilLocal(node: SimNode, local: number): number {
    return Math.max(0, (local - this.localNow(node)) / node.clockRate)
  }

  at(t: number, run: () => void): void {
    this.heap.push(Math.max(t, this.now), run)
  }

  after(ms: number, run: () => void): void {
    this.at(this.now + ms, run)
  }

  /** Runs `run` only if `node` is still in the same incarnation when the time comes. */
  afterFor(node: SimNode, ms: number, run: () => void): void {
    const epoch = node.epoch
    this.at(this.now + ms, () => { if (node.epoch === epoch && node.up) run() })
  }

  record(line: string): void {
    this.traceBuf += `${this.now.toFixed(3)} ${line}\n`
    this.options.traceSink?.(`${this.now.toFixed(3)} ${line}`)
    if (this.traceBuf.length > 1 << 20) { this.trace.update(this.traceBuf); this.traceBuf = '' }
  }

  traceHash(): string {
    this.trace.update(this.traceBuf)
    this.traceBuf = ''
    const h = this.trace.copy().digest('hex')
    return h
  }

  /** A documented trade-off (README), observed: reported in the summary, not a violation. */
  tradeoff(property: string, detail: string): void {
    this.record(`TRADEOFF ${property} ${detail}`)
    if (this.tradeoffs.length < 20) this.tradeoffs.push({ property, detail })
  }

  violation(property: string, detail: string): void {
    const n = (this.violationCounts.get(property) ?? 0) + 1
    this.violationCounts.set(property, n)
    this.record(`VIOLATION ${property} ${detail}`)
    // Put a limit on everything: the first 20 per property say enough.
    if (n <= 20) this.violations.push({ property, detail })
    else if (n === 21) this.violations.push({ property, detail: 'more violations of this property were not listed' })
  }

  bucket(kind: keyof MessageBucket): void {
    this.messages++
    if (!this.timelineOn) return
    const k = Math.floor(this.now / 1000)
    let b = this.buckets.get(k)
    if (!b) { b = { gossip: 0, rpc: 0, forged: 0 }; this.buckets.set(k, b) }
    b[kind]++
  }

  // ---------------------------------------------------------------- node lifecycle

  /** Declares that `node` may crash: its store then keeps JSON snapshots so a restart restores exactly what was committed. */
  mayCrash(node: SimNode): void {
    if (node.store.size > 0 && !node.snapshot) throw new Error(`mayCrash(${node.id}) must be called before the node writes anything`)
    node.snapshot = true
  }

  startNode(node: SimNode): void {
    if (node.up) return
    node.up = true
    node.epoch++
    node.queue.clear()
    node.busy = false
    if (node.downSince > 0 || node.downIntervals.length > 0) node.downIntervals.push([node.downSince, this.now])
    this.record(`start ${node.id} epoch=${node.epoch}`)
    if (node instanceof AgentNode) this.startAgent(node)
    else if (node instanceof CoordinatorNode) this.startCoordinator(node)
  }

  crash(node: SimNode): void {
    if (!node.up) return
    if (!node.snapshot) throw new Error(`crash(${node.id}): call mayCrash() for this node at setup, so its store keeps snapshots`)
    node.up = false
    node.epoch++
    node.queue.clear()
    node.busy = false
    node.history = []
    node.beating = false
    node.downSince = this.now
    this.record(`crash ${node.id}`)
    for (const e of node.running) { e.end = this.now; e.status = 'interrupted' }
    node.running.clear()
    if (node instanceof AgentNode) node.admitted.clear()
    if (node instanceof AgentNode) {
      node.state = null
      node.shell?.stop()
      node.shell = null
      // Its sockets close with the process: peers see the reset one latency later.
      const t = node.transport
      node.transport = null
      for (const i of t?.peers ?? []) {
        const peer = this.nodes[i] as AgentNode
        peer.transport?.peers.delete(node.index)
        if (this.net.blocked(node.index, i)) continue
        this.afterFor(peer, this.net.latency(node.index, i), () => { this.record(`${i} peer ${node.index} closed`); peer.transport?.closed(node.peerId) })
      }
    } else if (node instanceof CoordinatorNode) {
      node.state = null
      node.pendingRpc.clear()
      node.pendingSubmit.clear()
      // Sockets close with the process: connected agents see the reset one latency later.
      for (const a of this.agents) {
        if (!a.up || !a.connected) continue
        if (this.net.blocked(0, a.index)) continue
        this.afterFor(a, this.net.latency(0, a.index), () => this.disconnect(a, 'coordinator closed the connection'))
      }
    }
  }

  private records(node: SimNode): [string, unknown][] {
    const keys = [...node.store.keys()].sort()
    return keys.map((k) => {
      const v = node.store.get(k)
      if (!node.snapshot) return [k, v]
      return [k, typeof v === 'string' ? JSON.parse(v) : { ...(v as object) }]
    })
  }

  // ---------------------------------------------------------------- event processing (the runtimes' queue)

  dispatch(node: SimNode, event: AgentEvent | CoordinatorEvent, then?: () => void): void {
    if (!node.up) return
    node.queue.push(then ? { event, then } : { event })
    if (!node.busy) this.drain(node)
  }

  private drain(node: SimNode): void {
    while (node.up && !node.busy && node.queue.length > 0) {
      const item = node.queue.shift()!
      node.busy = true
      let effects: (AgentEffect | CoordinatorEffect)[]
      if (item.effects) effects = item.effects
      else effects = this.step(node, item.event!)
      // The step may have brought work forward (and the node is busy now): a tick on the next
      // grid point, as the runtime's ticker would queue one behind the work in progress.
      if (node instanceof AgentNode) this.planTick(node)
      if (!this.runEffects(node, effects, 0, item.then)) return
      node.busy = false
    }
    if (node instanceof AgentNode) this.planTick(node)
  }

  private step(node: SimNode, event: AgentEvent | CoordinatorEvent): (AgentEffect | CoordinatorEffect)[] {
    const now = this.localNow(node)
    this.coreSteps++
    if (node instanceof AgentNode) {
      const ev = event as AgentEvent
      if (ev.type !== 'tick') this.record(`${node.index} ev ${ev.type}${ev.type === 'step_done' ? ` ${ev.runId} ${ev.stepNumber}/${ev.attempt} ${ev.result.status}` : ''}`)
      const effects = this.cores.agentStep(node.state!, node.config, ev, now)
      if (this.checkInvariants) for (const p of agentInvariants(node.state!, now)) this.violation('invariants', `${node.id} after ${ev.type}: ${p}`)
      return effects
    }
    if (node instanceof CoordinatorNode) {
      const ev = event as CoordinatorEvent
      if (ev.type !== 'tick') this.record(`0 ev ${ev.type}`)
      const effects = this.cores.coordinatorStep(node.state!, node.config, ev, now)
      if (this.checkInvariants) for (const p of coordinatorInvariants(node.state!)) this.violation('invariants', `coordinator after ${ev.type}: ${p}`)
      return effects
    }
    return []
  }

  /**
   * Carries out effects from index i. Returns false when it stopped at a persist in progress
   * (the node stays busy and the continuation resumes after the disk write).
   */
  private runEffects(node: SimNode, effects: (AgentEffect | CoordinatorEffect)[], i: number, then?: () => void): boolean {
    for (; i < effects.length; i++) {
      const e = effects[i]!
      if (e.type === 'persist') {
        if (e.puts.length + e.dels.length === 0) continue
        // level encodes values when batch() is called; the batch lands atomically later.
        // A job record (job/...) holds the signed definition, immutable and shared by every node
        // (open() memoizes it): a snapshot copies the record shallowly and keeps that reference,
        // so a later change to the record (its ticket) is not in the snapshot until written.
        const puts = node.snapshot ? e.puts.map((p) => ({ key: p.key, value: p.key.startsWith('job/') ? { ...(p.value as object) } : JSON.stringify(p.value) })) : e.puts
        const dels = e.dels
        const epoch = node.epoch
        const rest = i + 1
        this.record(`${node.index} persist ${e.puts.map((p) => p.key).join(',')} -${dels.join(',')}`)
        this.after(this.diskLatency(node), () => {
          if (node.epoch !== epoch || !node.up) return // crashed before the batch landed
          for (const p of puts) node.store.set(p.key, p.value)
          for (const k of dels) node.store.delete(k)
          if (node instanceof AgentNode) this.observeAgentPersist(node, e.puts)
          if (this.runEffects(node, effects, rest, then)) {
            node.busy = false
            this.drain(node)
          }
        })
        return false
      }
      if (node instanceof AgentNode) this.agentEffect(node, e as AgentEffect)
      else if (node instanceof CoordinatorNode) this.coordinatorEffect(node, e as CoordinatorEffect)
    }
    then?.()
    return true
  }

  private diskLatency(node: SimNode): number {
    if (this.net.faults.disk_slow > 0 && this.prng.chance(this.net.faults.disk_slow)) return this.prng.range(20, 100)
    return node.kind === 'coordinator' ? this.prng.range(0.1, 0.6) : this.prng.range(0.3, 3)
  }

  // ---------------------------------------------------------------- agents

  private startAgent(a: AgentNode): void {
    const restored = this.cores.restoreAgent(this.records(a), a.config, this.localNow(a))
    a.state = restored.state
    this.startShell(a)
    this.coreSteps++
    // As the runtime: restored effects are carried out first, then the ticker starts with an immediate tick.
    a.tickAt = Infinity
    a.tickGen++
    a.ticking = false
    a.queue.push({ effects: restored.effects, then: () => this.afterFor(a, 0, () => this.agentTick(a)) })
    this.drain(a)
  }

  /**
   * The agent shell, as the runtime builds it (agent/runtime.ts): over the simulated transport,
   * on the node's clock, with the unjittered redial grid (README), dispatching into this node's
   * queue for this incarnation only.
   */
  private startShell(a: AgentNode): void {
    const epoch = a.epoch
    const transport = new SimTransport(this, a)
    a.transport = transport
    const token = a.enrollToken === null ? undefined : a.enrollToken ?? this.enrollToken
    a.shell = new AgentShell({
      transport, clock: { now: () => this.localNow(a) }, identity: a.identity, nodeId: a.config.nodeId,
      coordinatorKey: this.coordinator.identity.publicKey, coordinatorPeer: this.coordinator.peerId, coordinatorAddr: '/ip4/10.0.0.0/tcp/7700',
      state: () => a.state!, dispatch: (event, then) => { if (a.epoch === epoch) this.dispatch(a, event, then) },
      facts: () => a.facts, skills: a.config.skills, ...(token !== undefined ? { enrollToken: token } : {}),
      jitter: (ms) => ms,
      memberOf: (peerId) => this.memberOf(a, peerId),
      hooks: {
        refused: () => this.record(`${a.index} hello refused`),
        dialFailed: (err) => { if (!/dial timeout|connection refused/.test(err.message)) this.record(`${a.index} hello failed: ${err.message}`) },
        joined: () => {
          a.nextMonitorAt = this.localNow(a) + CONN_MONITOR_MS
          this.record(`${a.index} connected`)
        },
      },
    })
  }

  /** Who `peerId` is to agent `viewer`: a member whose certificate it admits on their connection, or nobody. */
  private memberOf(viewer: AgentNode, peerId: string): { nodeId: string; key: string } | undefined {
    const peer = this.nodeByPeer(peerId)
    if (!(peer instanceof AgentNode) || !viewer.transport?.peers.has(peer.index) || !this.admits(viewer, peer)) return undefined
    const cert = peer.presentCert ?? peer.state?.member.certificate?.envelope
    const check = checkMember(cert, this.coordinator.identity.publicKey, peer.peerId, viewer.state!.member.revoked, this.localNow(viewer))
    return check.ok ? { nodeId: check.body.nodeId, key: check.body.key } : undefined
  }

  private agentTick(a: AgentNode): void {
    const now = this.localNow(a)
    // The core answers a tick before state.idleUntil with nothing, changing nothing (agent/core.ts
    // nextTickWork): an idle node's tick is skipped here, which is exactly what stepping it gives.
    if (a.busy || a.queue.length > 0 || !a.state || now >= a.state.idleUntil) this.dispatch(a, { type: 'tick' })
    if (a.connected && now >= a.nextMonitorAt) {
      a.nextMonitorAt = now + CONN_MONITOR_MS
      a.bytesSent += PING_BYTES / 2
      this.coordinator.bytesRecv += PING_BYTES / 2
      if (this.net.blocked(a.index, 0) || this.net.blocked(0, a.index) || !this.coordinator.up) {
        this.afterFor(a, PING_TIMEOUT_MS / a.clockRate, () => {
          if (this.net.blocked(a.index, 0) || this.net.blocked(0, a.index) || !this.coordinator.up) this.disconnect(a, 'ping timeout')
        })
      } else {
        this.coordinator.bytesSent += PING_BYTES / 2
        a.bytesRecv += PING_BYTES / 2
      }
    }
    a.shell!.tick()
    a.tickLast = this.now
    a.tickAt = Infinity
    a.ticking = true
    this.planTick(a)
  }

  /** Whether a tick of `a` at (global) time t would do anything, as far as its state says now. */
  private tickWorkAt(a: AgentNode, t: number): boolean {
    if (a.busy || a.queue.length > 0 || !a.state) return true
    const local = this.localAt(a, t)
    return local >= a.state.idleUntil || (a.connected ? local >= a.nextMonitorAt : local >= a.shell!.redialAt)
  }

  /**
   * Schedules the next tick of `a` on its grid (tickLast + k × AGENT_TICK_MS, local clock),
   * skipping grid points where it would do nothing. Called after every tick and after anything
   * that can bring work forward (an event stepped, a connection made or lost).
   */
  private planTick(a: AgentNode): void {
    if (!a.up || !a.ticking) return
    const step = AGENT_TICK_MS / a.clockRate
    // A grid point at this very instant still counts: the runtime's tick for it was queued
    // before whatever is happening now (e.g. a ping timeout, whose delay is a whole number of ticks).
    let t = a.tickLast
    do t += step; while (t < this.now)
    if (!this.options.tickAll) {
      const horizon = Math.min(a.tickAt, t + 3_600_000)
      while (t < horizon && !this.tickWorkAt(a, t)) t += step
    }
    if (t >= a.tickAt) return
    a.tickAt = t
    const gen = ++a.tickGen
    const epoch = a.epoch
    this.at(t, () => { if (a.epoch === epoch && a.up && a.tickGen === gen) this.agentTick(a) })
  }

  private disconnect(a: AgentNode, why: string): void {
    if (!a.connected) return
    this.record(`${a.index} disconnected (${why})`)
    a.transport!.closed(this.coordinator.peerId)
    this.planTick(a)
  }

  private agentEffect(a: AgentNode, e: AgentEffect): void {
    switch (e.type) {
      case 'run_step':
        this.record(`${a.index} run_step ${e.request.runId} ${e.request.stepNumber}/${e.request.attempt} nb=${e.notBefore}`)
        this.afterFor(a, this.untilLocal(a, e.notBefore), () => this.execStep(a, e.request))
        break
      case 'send':
        this.record(`${a.index} send ${e.kind}${e.kind === 'result' ? ' ' + e.runId : ''} ${a.connected ? '' : '(not connected: dropped)'}`)
        a.shell!.send(e.envelope, e.kind, e.kind === 'sync' ? e.waitMs ?? 0 : 0)
        break
      case 'publish_progress':
        this.progressMessages++
        this.publish(a, e.envelope, `progress ${a.index}`, 'progress')
        break
      case 'revoked': {
        this.record(`${a.index} drops revoked peers ${e.keys.length}`)
        // As the runtime: connections to peers whose key was revoked are hung up.
        const keys = new Set(e.keys)
        for (const i of [...a.transport?.peers ?? []]) {
          const peer = this.nodes[i] as AgentNode
          if (keys.has(peer.identity.publicKey)) a.transport!.hangUp(peer)
        }
        break
      }
      case 'log':
        this.logCounts[e.level]++
        if (e.level === 'warn') this.record(`${a.index} warn ${e.msg}`)
        break
      case 'persist':
        break
    }
  }

  /** The durable decision of a run: its terminal record committed to the agent's store. */
  private observeAgentPersist(a: AgentNode, puts: { key: string; value: unknown }[]): void {
    for (const p of puts) {
      if (!p.key.startsWith('run/')) continue
      const run = p.value as AgentRun
      // Ground truth of acknowledgement: the node holds the job and its run record is durable
      // (the core publishes its `ack` only after this write).
      let acc = this.accepted.get(run.instanceId)
      if (!acc) { acc = new Map(); this.accepted.set(run.instanceId, acc) }
      if (!acc.has(a.id)) acc.set(a.id, this.now)
      if (!RUN_TERMINAL.has(run.status)) continue
      const steps = run.steps.map((s): [number, string, number] => [s.number, s.status, s.attempts])
      const prev = this.outcomes.get(run.runId)
      if (prev) {
        if (prev.status !== run.status || JSON.stringify(prev.steps) !== JSON.stringify(steps)) {
          this.violation('nothing-lost', `node ${a.id} decided run ${run.runId} twice: ${prev.status} ${JSON.stringify(prev.steps)} then ${run.status} ${JSON.stringify(steps)}`)
        }
        continue
      }
      this.outcomes.set(run.runId, {
        node: a.id, runId: run.runId, instanceId: run.instanceId, jobId: run.jobId, occurrenceAt: run.occurrenceAt, group: run.group, batch: run.batch,
        position: run.position, status: run.status, steps, at: this.now, ...(run.reason !== undefined ? { reason: run.reason } : {}), ...(run.reasonCode !== undefined ? { reasonCode: run.reasonCode } : {}),
      })
      this.record(`${a.index} decided ${run.runId} ${run.status}`)
    }
  }

  private execStep(a: AgentNode, r: StepRunRequest): void {
    const run = a.state?.runs.get(r.runId)
    const exec: ExecRecord = {
      node: a.id, runId: r.runId, jobId: r.jobId, instanceId: run?.instanceId ?? '?', group: run?.group ?? 0, batch: run?.batch ?? 0,
      position: run?.position ?? 0, occurrenceAt: run?.occurrenceAt ?? 0, step: r.stepNumber, attempt: r.attempt, start: this.now,
    }
    for (const c of this.checkers) {
      const problem = c.onExec?.(this, exec, r, a)
      if (problem) this.violation(c.name, problem)
    }
    this.executed.set(`${a.id}|${exec.instanceId}|${r.stepNumber}|${r.attempt}`, exec)
    this.execList.push(exec)
    a.running.add(exec)
    this.record(`${a.index} exec ${r.runId} ${r.stepNumber}/${r.attempt}`)
    let duration = this.prng.logNormal(this.stepModel.duration_ms_median, this.stepModel.duration_sigma)
    let status: 'success' | 'failure' = this.prng.chance(this.stepModel.failure_rate) ? 'failure' : 'success'
    let reason: string | undefined = status === 'failure' ? 'simulated failure: exit code 1' : undefined
    let exitCode: number | null = status === 'success' ? 0 : 1
    if (r.timeoutMs > 0 && duration > r.timeoutMs) {
      duration = r.timeoutMs
      status = 'failure'; exitCode = null
      reason = `timed out after ${r.timeoutMs} ms`
    }
    this.afterFor(a, duration / a.clockRate, () => {
      a.running.delete(exec)
      exec.end = this.now
      exec.status = status
      this.dispatch(a, {
        type: 'step_done', runId: r.runId, stepNumber: r.stepNumber, attempt: r.attempt,
        result: {
          status, exitCode, stdout: status === 'success' ? `step ${r.stepNumber} ok\n` : '', stderr: reason ? `${reason}\n` : '', ...(reason ? { reason } : {}),
          // Files named by `file` output rules exist but are empty on a simulated node.
          ...((r.filesToRead ?? []).length > 0 ? { files: Object.fromEntries((r.filesToRead ?? []).map((f) => [f, ''])) } : {}),
        },
      })
    })
  }

  // ---------------------------------------------------------------- coordinator

  private startCoordinator(c: CoordinatorNode): void {
    c.state = this.cores.restoreCoordinator(this.records(c))
    this.coreSteps++
    const tick = () => {
      this.dispatch(c, { type: 'tick' })
      this.afterFor(c, COORDINATOR_TICK_MS / c.clockRate, tick)
    }
    this.afterFor(c, COORDINATOR_TICK_MS / c.clockRate, tick)
  }

  private coordinatorEffect(c: CoordinatorNode, e: CoordinatorEffect): void {
    switch (e.type) {
      case 'publish': {
        const opened = open(e.envelope, [c.identity.publicKey])
        if (opened.ok && opened.body.type === 'job_state') {
          this.publish(c, e.envelope, `job_state ${opened.body.jobId} v${opened.body.version}`)
          break
        }
        if (opened.ok && opened.body.type === 'revocations') {
          this.publish(c, e.envelope, `revocations v${opened.body.version}`)
          break
        }
        if (!opened.ok || opened.body.type !== 'job') {
          // A core bug, not a simulator invariant: the job was accepted, yet no node can open
          // what was signed (e.g. past MAX_ENVELOPE_BYTES at ~46,000 targets), so it never runs.
          this.violation('liveness', `the coordinator accepted a job and published an envelope no node can open (${opened.ok ? `type ${opened.body.type}` : opened.reason}; body ${e.envelope.body.length} characters): the job can never run`)
          this.publish(c, e.envelope, 'job (unopenable)')
          break
        }
        const body = opened.body
        this.legitJobs.set(body.jobId, { body: e.envelope.body, commands: body.template.actions.steps.map((s) => canonicalJson(s.command)) })
        this.jobBodies.set(body.jobId, body)
        const targets = c.state?.jobs.get(body.jobId)?.resolved
        if (targets) this.jobTargets.set(body.jobId, targets)
        if (this.options.livenessBoundMs === undefined && !this.boundResolved.has(body.jobId)) {
          this.boundResolved.add(body.jobId)
          const b = livenessBound(body.template, this.stepModel, body.resolved.groups.map((g) => g.size))
          if (this.boundResolved.size === 1 || b.ms > this.livenessBoundMs) { this.livenessBoundMs = b.ms; this.livenessFormula = b.formula }
        }
        this.record(`0 publish ${body.jobId}`)
        this.publish(c, e.envelope, `job ${body.jobId}`)
        break
      }
      case 'reply_rpc': {
        const done = c.pendingRpc.get(e.requestId)
        c.pendingRpc.delete(e.requestId)
        done?.(e.envelope)
        break
      }
      case 'reply_submit': {
        const done = c.pendingSubmit.get(e.requestId)
        c.pendingSubmit.delete(e.requestId)
        done?.(e.outcome)
        break
      }
      case 'log':
        this.logCounts[e.level]++
        if (e.level !== 'debug') this.record(`0 ${e.level} ${e.msg}`)
        break
      case 'persist':
        break
    }
  }

  /** Submits a template to the coordinator with a job id drawn from the PRNG. */
  submit(template: JobTemplate, onOutcome?: (o: SubmitOutcome) => void): string {
    const c = this.coordinator
    const jobId = this.prng.uuid()
    const entry: { jobId: string; at: number; outcome?: SubmitOutcome } = { jobId, at: this.now }
    this.submitted.push(entry)
    if (!c.up) {
      this.notes.push(`submit of ${jobId} at ${(this.now / 1000).toFixed(1)} s: coordinator down`)
      return jobId
    }
    const requestId = `submit-${++this.rpcSeq}`
    c.pendingSubmit.set(requestId, (o) => {
      entry.outcome = o
      this.record(`0 submitted ${jobId} ok=${o.ok}`)
      onOutcome?.(o)
    })
    this.dispatch(c, { type: 'submit', requestId, jobId, template })
    return jobId
  }

  // ---------------------------------------------------------------- rpc: reliable-or-reject

  private readonly sizes = new WeakMap<object, number>()
  private envelopeBytes(envelope: unknown): number {
    const env = envelope as SignedEnvelope
    if (typeof env?.body !== 'string') return 200
    let n = this.sizes.get(env)
    if (n === undefined) {
      // JSON escaping of the body string: quotes and backslashes double; bytes beyond ASCII count as UTF-8.
      n = Buffer.byteLength(env.body) + 2 + 160
      for (let i = env.body.indexOf('"'); i >= 0; i = env.body.indexOf('"', i + 1)) n++
      for (let i = env.body.indexOf('\\'); i >= 0; i = env.body.indexOf('\\', i + 1)) n++
      this.sizes.set(env, n)
    }
    return n
  }

  /**
   * One request/response exchange from agent `a` to the coordinator. The reply callback runs at
   * most once; on loss, partition or reset the request fails (silently, as the runtime only logs it).
   */
  rpc(a: AgentNode, envelope: SignedEnvelope, timeoutMs: number, onReply: (reply: SignedEnvelope) => void, onFail: (err: Error) => void): void {
    const c = this.coordinator
    let done = false
    const epoch = a.epoch
    const size = this.envelopeBytes(envelope) + RPC_FRAME_BYTES
    const id = ++this.rpcSeq
    a.bytesSent += size
    this.bucket('rpc')
    const fail = (why: string) => {
      if (done) return
      done = true
      if (a.epoch === epoch) { this.record(`${a.index} rpc#${id} failed: ${why}`); onFail(new Error(why)) }
    }
    this.after(timeoutMs / a.clockRate, () => fail('timeout'))
    if (this.net.blocked(a.index, 0)) return
    const reset = this.net.faults.rpc_reset > 0 && this.prng.chance(this.net.faults.rpc_reset * this.net.linkProfile(a.index, 0).rpc_reset_factor)
    const resetBeforeProcessing = reset && this.prng.chance(0.5)
    const up = this.net.latency(a.index, 0)
    if (resetBeforeProcessing) {
      this.after(up + this.net.latency(0, a.index), () => fail('stream reset'))
      return
    }
    this.after(up, () => {
      if (!c.up) {
        this.after(this.net.latency(0, a.index), () => fail('connection refused'))
        return
      }
      c.bytesRecv += size
      if (c.queue.length >= MAX_PENDING_REQUESTS) {
        this.after(this.net.latency(0, a.index), () => fail('coordinator overloaded'))
        return
      }
      const requestId = `rpc-${id}`
      c.pendingRpc.set(requestId, (reply) => {
        const replySize = this.envelopeBytes(reply) + RPC_FRAME_BYTES
        c.bytesSent += replySize
        this.bucket('rpc')
        if (reset) { this.after(this.net.latency(0, a.index), () => fail('stream reset after processing')); return }
        if (this.net.blocked(0, a.index)) return
        this.after(this.net.latency(0, a.index), () => {
          if (done || a.epoch !== epoch || !a.up) return
          done = true
          a.bytesRecv += replySize
          onReply(reply)
        })
      })
      this.dispatch(c, { type: 'rpc', requestId, envelope, peerId: a.peerId })
    })
  }

  /** The node a transport-level peer id belongs to (the simulated transport authenticates like noise). */
  nodeByPeer(peerId: string): SimNode | undefined {
    if (this.byPeer.size !== this.nodes.length) for (const n of this.nodes) this.byPeer.set(n.peerId, n)
    return this.byPeer.get(peerId)
  }

  /**
   * A sync request from agent `a` to a connected peer, answered at once from the peer's state
   * (agent/shell.ts answerPeer: the runtime answers outside its core loop too). Reliable or reject.
   */
  peerRpc(a: AgentNode, peer: AgentNode, envelope: SignedEnvelope, timeoutMs: number, onReply: (reply: SignedEnvelope) => void, onFail: (err: Error) => void): void {
    let done = false
    const epoch = a.epoch
    const size = this.envelopeBytes(envelope) + RPC_FRAME_BYTES
    const id = ++this.rpcSeq
    a.bytesSent += size
    this.bucket('rpc')
    const fail = (why: string) => {
      if (done) return
      done = true
      if (a.epoch === epoch) { this.record(`${a.index} peer-rpc#${id} to ${peer.index} failed: ${why}`); onFail(new Error(why)) }
    }
    this.after(timeoutMs / a.clockRate, () => fail('timeout'))
    if (this.net.blocked(a.index, peer.index)) return
    this.after(this.net.latency(a.index, peer.index), () => {
      if (!peer.up || !peer.shell) { this.after(this.net.latency(peer.index, a.index), () => fail('connection reset')); return }
      peer.bytesRecv += size
      const reply = peer.shell.answerPeer(envelope, a.peerId)
      const replySize = this.envelopeBytes(reply) + RPC_FRAME_BYTES
      peer.bytesSent += replySize
      this.bucket('rpc')
      this.record(`${peer.index} answers peer-rpc#${id} from ${a.index}`)
      if (this.net.blocked(peer.index, a.index)) return
      this.after(this.net.latency(peer.index, a.index), () => {
        if (done || a.epoch !== epoch || !a.up) return
        done = true
        a.bytesRecv += replySize
        onReply(reply)
      })
    })
  }

  // ---------------------------------------------------------------- gossip: best effort

  newMessage(envelope: unknown, origin: SimNode, label: string, topic: GossipTopic = 'jobs'): GossipMessage {
    return { id: ++this.msgSeq, envelope, bytes: this.envelopeBytes(envelope) + GOSSIP_FRAME_BYTES, origin: origin.index, label, topic, seenBy: new Uint16Array(this.nodes.length), at: this.now }
  }

  publish(from: SimNode, envelope: unknown, label: string, topic: GossipTopic = 'jobs'): GossipMessage {
    const msg = this.newMessage(envelope, from, label, topic)
    this.publishMessage(from, msg)
    return msg
  }

  /** Whether `node` (in its current incarnation) has seen `msg`; a crash forgets, and so does the seen-cache's TTL. */
  private hasSeen(node: SimNode, msg: GossipMessage): boolean {
    // Past the seen-cache TTL the per-node marks are freed; a frame that late is treated as a
    // duplicate the mesh already carried (gossipsub would pass it on as new: app_duplicate models that).
    return msg.seenBy === null || msg.seenBy[node.index] === (node.epoch & 0xffff)
  }

  private markSeen(node: SimNode, msg: GossipMessage): void {
    if (msg.seenBy) msg.seenBy[node.index] = node.epoch & 0xffff
    node.history.push({ msg, at: this.now })
    if (!node.beating) {
      node.beating = true
      this.afterFor(node, this.prng.range(0, GOSSIP_HEARTBEAT_MS), () => this.heartbeat(node))
    }
  }

  publishMessage(from: SimNode, msg: GossipMessage): void {
    if (!from.up) return
    this.liveMessages.push(msg)
    this.markSeen(from, msg)
    this.record(`${from.index} gossip-publish #${msg.id} ${msg.label}`)
    // net/libp2p.ts publishes with floodPublish: the author sends its own message to every
    // connected subscriber, not only to its mesh. The connections are the real topology: every
    // connected agent dialled the coordinator (a star), and agents dial the peers it introduced
    // only while it is away (agent/shell.ts).
    if (from === this.coordinator) {
      for (const a of this.agents) if (a.up && a.connected) this.transmit(from, a.index, msg)
      // The attacker stands for a compromised member: it holds a connection to the coordinator and hears what it publishes.
      if (this.attacker.up) this.transmit(from, this.attacker.index, msg)
    }
    else for (const t of this.connectionsOf(from)) this.transmit(from, t, msg)
  }

  /**
   * The attacker's frames. Honest relays check the libp2p author of every jobs-topic message
   * (net/libp2p.ts topic validator) and drop anything not authored by the coordinator, so
   * forgeries never travel past the first hop. The simulator assumes that check is bypassed at
   * the nodes the attacker reaches directly (a compromised transport): their cores see the
   * forgery and must refuse it themselves.
   */
  inject(envelope: unknown, label: string, targets: number[]): GossipMessage {
    const msg = this.newMessage(envelope, this.attacker, label)
    this.record(`${this.attacker.index} inject #${msg.id} ${label} to ${targets.length} nodes`)
    for (const t of targets) {
      this.attacker.bytesSent += msg.bytes
      this.bucket('forged')
      if (this.net.blocked(this.attacker.index, t) || this.net.lost(this.attacker.index, t)) continue
      this.after(this.net.latency(this.attacker.index, t), () => {
        const node = this.nodes[t]!
        if (!node.up) return
        node.bytesRecv += msg.bytes
        this.deliver(node, msg)
      })
    }
    return msg
  }

  /** The nodes `node` holds a connection to now (an agent: its peers, and the coordinator while connected). */
  private connectionsOf(node: SimNode): readonly number[] {
    if (!(node instanceof AgentNode) || !node.transport) return NO_CONNECTIONS
    // The common case (a star): no array per call.
    if (node.transport.peers.size === 0) return node.connected ? COORDINATOR_ONLY : NO_CONNECTIONS
    const out = [...node.transport.peers]
    if (node.connected) out.push(0)
    return out
  }

  /**
   * Where `node` relays a message it received: its gossipsub mesh. An agent holds at most
   * MAX_KNOWN_PEERS + 1 connections and meshes with all of them; the coordinator's mesh is
   * GOSSIP_DEGREE of its connected agents (the first ones, in index order: no PRNG draw).
   */
  private meshOf(node: SimNode): readonly number[] {
    if (node !== this.coordinator) return this.connectionsOf(node)
    const out: number[] = []
    for (const a of this.agents) {
      if (out.length >= GOSSIP_DEGREE) break
      if (a.up && a.connected) out.push(a.index)
    }
    return out
  }

  addGossipObserver(fn: (node: SimNode, msg: GossipMessage) => void): void {
    this.onGossip.push(fn)
  }

  private transmit(from: SimNode, to: number, msg: GossipMessage, extraDelay = 0): void {
    if (!this.linkAdmitted(from, this.nodes[to]!)) return
    from.bytesSent += msg.bytes
    this.bucket(msg.origin === this.attacker.index ? 'forged' : 'gossip')
    if (this.net.blocked(from.index, to) || this.net.lost(from.index, to)) return
    const copies = this.net.faults.duplicate > 0 && this.prng.chance(this.net.faults.duplicate) ? 2 : 1
    for (let k = 0; k < copies; k++) {
      this.after(extraDelay + this.net.latency(from.index, to), () => this.arrive(this.nodes[to]!, msg, from.index))
    }
  }

  private arrive(node: SimNode, msg: GossipMessage, from: number): void {
    if (!node.up) return
    node.bytesRecv += msg.bytes
    if (this.hasSeen(node, msg)) {
      // The seen-cache is bounded in time; a late duplicate may get past it.
      if (this.net.faults.app_duplicate > 0 && this.prng.chance(this.net.faults.app_duplicate)) this.deliver(node, msg)
      return
    }
    this.markSeen(node, msg)
    this.deliver(node, msg)
    for (const nb of this.meshOf(node)) if (nb !== from) this.transmit(node, nb, msg)
  }

  /**
   * The runtimes' membership gate on a link (net/libp2p.ts scores, agent/runtime.ts exchange): the
   * coordinator talks to enrolled nodes only, agents to the coordinator and to peers whose
   * certificate they admit (checkMember, against the revocations they hold). The attacker stands
   * for a compromised member and passes (its frames are the cores' to refuse).
   */
  linkAdmitted(from: SimNode, to: SimNode): boolean {
    const rogue = (from instanceof AgentNode && from.rogue) || (to instanceof AgentNode && to.rogue)
    if ((from === this.attacker || to === this.attacker) && !rogue) return true
    if (from === this.coordinator || to === this.coordinator) {
      const other = from === this.coordinator ? to : from
      const state = this.coordinator.state
      const nodeId = state?.byPeer.get(other.peerId)
      return nodeId !== undefined && state!.nodes.get(nodeId)?.peerId === other.peerId
    }
    return from instanceof AgentNode && to instanceof AgentNode && this.admits(from, to) && this.admits(to, from)
  }

  /** Whether agent `viewer` admits `peer` on the certificate `peer` presents (remembered per link, as a connection keeps its check). */
  private admits(viewer: AgentNode, peer: AgentNode): boolean {
    const cert = peer.presentCert ?? peer.state?.member.certificate?.envelope
    if (!cert || !viewer.state) return false
    const now = this.localNow(viewer)
    const revoked = viewer.state.member.revoked
    const seen = viewer.admitted.get(peer.index)
    if (seen && seen.sig === cert.sig && seen.revokedVersion === revoked.version && now < seen.until) return seen.ok
    const check = checkMember(cert, this.coordinator.identity.publicKey, peer.peerId, revoked, now)
    viewer.admitted.set(peer.index, { sig: cert.sig, revokedVersion: revoked.version, ok: check.ok, until: check.ok ? check.body.expiresAt : Infinity })
    return check.ok
  }

  /** A reply to a rogue host that carries definitions or tickets (the membership checker reads these). */
  noteRogueReply(a: AgentNode, reply: SignedEnvelope): void {
    if (!a.rogue) return
    const o = open(reply, [this.coordinator.identity.publicKey])
    if (o.ok && o.body.type === 'reply' && (o.body.jobs.length > 0 || o.body.tickets.length > 0 || o.body.certificate)) this.rogueReceipts.push(`rogue ${a.id} got ${o.body.jobs.length} definitions, ${o.body.tickets.length} tickets${o.body.certificate ? ' and a certificate' : ''} in a reply at ${(this.now / 1000).toFixed(1)} s`)
  }

  /** An admin revokes an honest agent (coordinator core event); its connection closes at once, as the runtime hangs it up. */
  revoke(a: AgentNode): void {
    this.revokedAt.set(a.id, this.now)
    this.dispatch(this.coordinator, { type: 'revoke_node', requestId: `revoke-${a.id}`, nodeId: a.id }, () => this.disconnect(a, 'revoked'))
  }

  private deliver(node: SimNode, msg: GossipMessage): void {
    this.record(`${node.index} gossip-deliver #${msg.id}`)
    if (node instanceof AgentNode && node.rogue && msg.label.startsWith('job ')) this.rogueReceipts.push(`rogue ${node.id} received definition #${msg.id} (${msg.label}) by gossip at ${(this.now / 1000).toFixed(1)} s`)
    for (const fn of this.onGossip) fn(node, msg)
    if (msg.topic === 'progress') {
      // Agents and the coordinator subscribe to the progress topic (agent/runtime.ts, coordinator/runtime.ts).
      if (node instanceof AgentNode || node instanceof CoordinatorNode) this.dispatch(node, { type: 'progress', envelope: msg.envelope })
    } else if (node instanceof AgentNode) this.dispatch(node, { type: 'job', envelope: msg.envelope, via: 'gossip' })
  }

  /**
   * One gossipsub heartbeat of `node`: IHAVE to GOSSIP_LAZY random peers, listing every message
   * id it saw in the last GOSSIP_HISTORY heartbeats (one frame per peer, as gossipsub sends);
   * a peer that misses some answers IWANT and they come over. The heartbeat only runs while
   * the node holds recent messages, so an idle mesh costs nothing.
   */
  private heartbeat(node: SimNode): void {
    const cutoff = this.now - GOSSIP_HISTORY * GOSSIP_HEARTBEAT_MS
    let keep = 0
    for (const h of node.history) if (h.at > cutoff) node.history[keep++] = h
    node.history.length = keep
    this.expireSeen()
    if (keep === 0 || !this.gossipRepair) { node.beating = false; node.history.length = 0; return }
    const ihave = IHAVE_BYTES + 16 * (keep - 1)
    // IHAVE goes to peers it is connected to: the coordinator draws among the agents (a draw
    // that lands on one not connected sends nothing), an agent among its connections.
    const conns = node === this.coordinator ? null : this.connectionsOf(node)
    for (let k = 0; k < GOSSIP_LAZY; k++) {
      if (conns !== null && conns.length === 0) break
      const t = conns === null ? this.agents[this.prng.int(this.agents.length)]!.index : conns[this.prng.int(conns.length)]!
      if (conns === null && !(this.nodes[t] as AgentNode).connected) continue
      node.bytesSent += ihave
      if (this.net.blocked(node.index, t) || this.net.lost(node.index, t)) continue
      const target = this.nodes[t]!
      if (!target.up) continue
      target.bytesRecv += ihave
      let wanted = 0
      for (const { msg: m } of node.history) {
        if (this.hasSeen(target, m)) continue
        if (wanted++ === 0) {
          // IWANT goes back, then the messages come over.
          target.bytesSent += IHAVE_BYTES
          if (this.net.blocked(t, node.index)) break
        }
        this.transmit(node, t, m, this.net.latency(node.index, t) + this.net.latency(t, node.index))
      }
    }
    this.afterFor(node, GOSSIP_HEARTBEAT_MS, () => this.heartbeat(node))
  }

  /** Frees the per-node seen marks of messages older than the seen-cache TTL. */
  private expireSeen(): void {
    const cutoff = this.now - GOSSIP_SEEN_TTL_MS
    const live = this.liveMessages
    while (this.liveHead < live.length && live[this.liveHead]!.at < cutoff) live[this.liveHead++]!.seenBy = null
    if (this.liveHead > 1024 && this.liveHead * 2 > live.length) { live.splice(0, this.liveHead); this.liveHead = 0 }
  }

  // ---------------------------------------------------------------- faults and phases

  setProfile(node: SimNode, name: LinkProfileName): void {
    this.net.profiles[node.index] = LINK_PROFILES[name]
  }

  /** Ends the safety phase: heal partitions, bring every link up, stop faults, restart crashed nodes. */
  heal(): void {
    if (this.healedAt !== Infinity) return
    this.healedAt = this.now
    this.phaseMarks.push({ at: this.now, label: 'faults off (liveness phase)' })
    this.record('heal')
    this.net.healAll()
    this.net.faults = { ...NO_FAULTS }
    for (const p of this.partitionLog) p.to = Math.min(p.to, this.now)
    for (const o of this.offlineLog) o.to = Math.min(o.to, this.now)
    // The attacker is a fault too: it leaves with the others.
    this.attacker.up = false
    for (const node of this.nodes) {
      if (!node.up && node.kind !== 'attacker') this.startNode(node)
    }
  }

  /** Everything the liveness property asks for; returns what is still missing (empty when converged). */
  pending(limit = 5): string[] {
    const missing: string[] = []
    const c = this.coordinator
    if (!c.up || !c.state) return ['coordinator is down']
    for (const s of this.submitted) if (!s.outcome) missing.push(`submit of job ${s.jobId} got no answer`)
    for (const inst of c.state.instances.values()) {
      if (inst.status === 'running') {
        // The once-a-second convergence check needs only "something is missing": no scan of the instance's runs.
        if (limit === 1) return [`instance ${inst.id} still running at the coordinator`]
        const open = inst.runIds.filter((id) => { const r = c.state!.runs.get(id); return r && (r.status === 'pending' || r.status === 'running') })
        missing.push(`instance ${inst.id} still running at the coordinator (${open.length} runs without result, e.g. ${open.slice(0, 3).map((id) => c.state!.runs.get(id)?.nodeId).join(', ')})`)
      }
      if (missing.length >= limit) return missing
    }
    for (const a of this.agents) {
      // A revoked node is out of the fleet: what it still holds is refused by design.
      if (this.revokedAt.has(a.id)) continue
      if (!a.up || !a.state) { missing.push(`agent ${a.id} is down`); if (missing.length >= limit) return missing; continue }
      for (const run of a.state.runs.values()) {
        if (!RUN_TERMINAL.has(run.status)) missing.push(`agent ${a.id}: run ${run.runId} still ${run.status} (step ${run.stepIndex + 1}, attempt ${run.attempt})`)
      }
      if (a.state.outbox.size > 0) missing.push(`agent ${a.id}: ${a.state.outbox.size} result(s) not acknowledged`)
      if (missing.length >= limit) return missing
    }
    for (const o of this.outcomes.values()) {
      if (c.state.runs.get(o.runId)?.receivedAt === undefined && !this.revokedAt.has(o.node)) missing.push(`result of run ${o.runId} (${o.node}) not at the coordinator`)
      if (missing.length >= limit) return missing
    }
    return missing
  }

  // ---------------------------------------------------------------- the run

  /** Builds the overlay and starts the coordinator; scenarios then schedule agents and faults. */
  boot(): void {
    this.startNode(this.coordinator)
    // As an admin does before agents join: one enrolment token for the fleet (unlimited uses).
    this.dispatch(this.coordinator, { type: 'create_enrollment', requestId: 'sim-enrollment', enrollment: newEnrollment({ id: 'sim-fleet', token: this.enrollToken }, this.localNow(this.coordinator)) })
  }

  /** Runs until converged after the heal, or until the liveness bound passes. */
  run(): void {
    const check = () => {
      if (this.pending(1).length === 0) {
        this.convergedAt = this.now
        this.stopped = true
        this.record('converged')
        return
      }
      if (this.now >= this.healedAt + this.livenessBoundMs) {
        this.stopped = true
        this.record('liveness bound passed')
        return
      }
      this.after(1_000, check)
    }
    // The scenario may move the end of the safety phase while it runs (e.g. relative to the submit).
    const phase = () => {
      if (this.now >= this.safetyEndsAt) { this.heal(); check(); return }
      this.after(Math.min(1_000, this.safetyEndsAt - this.now), phase)
    }
    this.after(0, phase)
    let rssAt = 0
    while (!this.stopped) {
      const e = this.heap.pop()
      if (!e) break
      this.now = e.t
      e.run()
      if (++rssAt >= 1 << 16) { rssAt = 0; this.peakRss = Math.max(this.peakRss, process.memoryUsage.rss()) }
      if (++this.events > MAX_EVENTS) throw new Error(`simulation exceeded ${MAX_EVENTS} events; a loop without a bound?`)
    }
    // Not the event count: how many timer events the simulator needed is not part of what happened.
    this.record(`end messages=${this.messages} draws=${this.prng.draws}`)
    for (const c of this.checkers) {
      for (const d of c.final?.(this) ?? []) this.violation(c.name, d)
    }
  }
}
