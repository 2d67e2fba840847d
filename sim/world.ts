// The simulated world: one coordinator, N agents and an attacker, driven by the SAME cores
// (and, for agents, the same agent shell: agent/shell.ts) the real runtimes drive, over a
// simulated network, simulated disks and per-node clocks. This file holds the event loop, the
// clocks and the trace, node lifecycle, the per-node event queue and the run; the rest is in
// sim/hosts.ts (what the runtimes do around the cores), sim/gossip.ts (gossip over the
// connections nodes hold), sim/rpc.ts (reliable-or-reject requests), sim/transport.ts (the agent
// shell's transport), sim/types.ts (nodes, records, constants) and sim/network.ts (links).
//
// What is simulated, and how it mirrors the runtimes (agent/runtime.ts, coordinator/runtime.ts):
// - Each node steps its core events in arrival order, with the runtimes' group commit
//   (runtime/loop.ts CoreLoop): the events waiting when it is free (up to MAX_EVENTS_PER_COMMIT)
//   are stepped together, their persists land as one batch after one disk-latency draw, and
//   only then are their other effects carried out, exactly as the runtimes `await db.batch(...)`.
// - A crash drops the node's memory: its queue, its pending effects, the persist in progress,
//   its connections and its gossip seen-cache. A restart rebuilds state with restoreAgent /
//   restoreCoordinator from the records that were durably committed, in key order (level).
// - Agents tick every AGENT_TICK_MS of their local clock and run the agent shell: redial with
//   doubling backoff (unjittered), dial + hello rpc, `send` only while connected, peer dial and
//   sync while the coordinator is away. A connection monitor pings the coordinator every
//   CONN_MONITOR_MS and drops the connection when pings fail.
// - The coordinator ticks every COORDINATOR_TICK_MS; rpc requests wait in its queue; beyond
//   MAX_PENDING_REQUESTS they are refused.
// - The topology is the runtimes': a star around the coordinator while it is up, plus the peer
//   links agents dial while it is away for them.
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
import { Gossip } from './gossip.js'
import { Hosts } from './hosts.js'
import { Rpc } from './rpc.js'
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
import { MAX_EVENTS_PER_COMMIT } from '../runtime/loop.js'
import { LoadCounters } from './load.js'
import { Prng } from './prng.js'
import { LINK_PROFILES, NO_FAULTS, NetworkModel, type FaultSettings, type LinkProfileName } from './network.js'

// The runtimes' own timing (protocol/timing.ts, shared with agent/ and coordinator/runtime.ts).
import { AGENT_TICK_MS, AGENT_VERSION, COORDINATOR_TICK_MS, MAX_PENDING_REQUESTS, REDIAL_MAX_MS, REDIAL_MIN_MS, RPC_TIMEOUT_MS } from '../protocol/timing.js'
export { AGENT_TICK_MS, AGENT_VERSION, COORDINATOR_TICK_MS, MAX_PENDING_REQUESTS, REDIAL_MAX_MS, REDIAL_MIN_MS, RPC_TIMEOUT_MS }

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
  readonly boundResolved = new Set<string>()
  /** Job bodies the coordinator signed and published, by job id. */
  readonly legitJobs = new Map<string, { body: string; commands: string[] }>()
  readonly submitted: { jobId: string; at: number; outcome?: SubmitOutcome }[] = []
  readonly violations: ViolationDetail[] = []
  readonly notes: string[] = []
  readonly tradeoffs: ViolationDetail[] = []
  readonly logCounts = { debug: 0, info: 0, warn: 0 }
  readonly buckets = new Map<number, MessageBucket>()
  /** Per-kind requests, their outcomes and the coordinator's queue over time (sim/load.ts). */
  readonly load = new LoadCounters()
  readonly phaseMarks: { at: number; label: string }[] = []
  safetyEndsAt = Infinity
  /** Set by a scenario (quorum-upgrade): at most this many targets down or upgrading at once. */
  maxUnavailable: number | undefined
  /** Set by a scenario (coordinator-loss): the longest gap allowed between consecutive run ends while the coordinator is down. */
  maxRunEndGapMs: number | undefined
  /**
   * Set by a scenario (coordinator-loss): agents that held no membership certificate when the
   * coordinator went down (a hello whose reply was lost just before). Peers admit members only, so
   * such an agent cannot go on by gossip until the coordinator returns: by design, not a gap.
   */
  readonly notMembersAtLoss = new Set<string>()
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
  readonly checkers: Checker[]
  private readonly timelineOn: boolean
  private trace = createHash('sha256')
  private traceBuf = ''
  rpcSeq = 0
  private readonly byPeer = new Map<string, SimNode>()
  private readonly violationCounts = new Map<string, number>()
  /** Gossip (sim/gossip.ts), rpc (sim/rpc.ts) and the hosts around the cores (sim/hosts.ts). */
  readonly gossip = new Gossip(this)
  readonly rpcs = new Rpc(this)
  readonly hosts = new Hosts(this)

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
    this.gossip.gossipRepair = options.gossipRepair ?? true
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
    if (node instanceof AgentNode) this.hosts.startAgent(node)
    else if (node instanceof CoordinatorNode) this.hosts.startCoordinator(node)
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
        this.afterFor(a, this.net.latency(0, a.index), () => this.hosts.disconnect(a, 'coordinator closed the connection'))
      }
    }
  }

  records(node: SimNode): [string, unknown][] {
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

  /**
   * The runtimes' CoreLoop (runtime/loop.ts), group commit included: the events waiting when the
   * node is free (up to MAX_EVENTS_PER_COMMIT) are stepped through the core together, their
   * persists land as ONE batch after one disk-latency draw, then their other effects are carried
   * out in order, then each event's `then`. (Until this model, the simulator wrote each event's
   * persist on its own: a burst of 50,000 hellos queued behind ~100,000 sequential writes at the
   * coordinator, past the agents' RPC_TIMEOUT_MS, a congestion collapse the runtime does not have.)
   */
  drain(node: SimNode): void {
    while (node.up && !node.busy && node.queue.length > 0) {
      node.busy = true
      const effects: (AgentEffect | CoordinatorEffect)[] = []
      const thens: (() => void)[] = []
      for (let k = 0; k < MAX_EVENTS_PER_COMMIT && node.queue.length > 0; k++) {
        const item = node.queue.shift()!
        const stepped = item.effects ?? this.step(node, item.event!)
        for (const e of stepped) effects.push(e)
        if (item.then) thens.push(item.then)
      }
      // The steps may have brought work forward (and the node is busy now): a tick on the next
      // grid point, as the runtime's ticker would queue one behind the work in progress.
      if (node instanceof AgentNode) this.hosts.planTick(node)
      if (!this.commitGroup(node, effects, thens)) return
      node.busy = false
    }
    if (node instanceof AgentNode) this.hosts.planTick(node)
  }

  /**
   * Carries out one group's effects as CoreLoop.carryOut does: every persist in one batch, then
   * the other effects, then the `then`s. Returns false when a write is in progress (the node
   * stays busy; the rest runs after the disk latency, then the node drains again).
   */
  private commitGroup(node: SimNode, effects: (AgentEffect | CoordinatorEffect)[], thens: (() => void)[]): boolean {
    let puts: { key: string; value: unknown }[] | undefined
    let dels: string[] | undefined
    /** The puts as the core made them (puts holds a crash-prone node's JSON snapshots). */
    const made: { key: string; value: unknown }[] = []
    for (const e of effects) {
      if (e.type !== 'persist' || e.puts.length + e.dels.length === 0) continue
      // level encodes values when batch() is called; the batch lands atomically later.
      // A job record (job/...) holds the signed definition, immutable and shared by every node
      // (open() memoizes it): a snapshot copies the record shallowly and keeps that reference,
      // so a later change to the record (its ticket) is not in the snapshot until written.
      puts ??= []
      dels ??= []
      for (const p of e.puts) made.push(p)
      for (const p of e.puts) puts.push(node.snapshot ? { key: p.key, value: p.key.startsWith('job/') ? { ...(p.value as object) } : JSON.stringify(p.value) } : p)
      for (const k of e.dels) dels.push(k)
    }
    if (!puts) {
      this.carryOut(node, effects, thens)
      return true
    }
    const batchPuts = puts
    const batchDels = dels!
    const epoch = node.epoch
    this.record(`${node.index} persist ${batchPuts.map((p) => p.key).join(',')} -${batchDels.join(',')}`)
    this.after(this.diskLatency(node), () => {
      if (node.epoch !== epoch || !node.up) return // crashed before the batch landed
      for (const p of batchPuts) node.store.set(p.key, p.value)
      for (const k of batchDels) node.store.delete(k)
      if (node instanceof AgentNode) this.hosts.observeAgentPersist(node, made)
      this.carryOut(node, effects, thens)
      node.busy = false
      this.drain(node)
    })
    return false
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

  private carryOut(node: SimNode, effects: (AgentEffect | CoordinatorEffect)[], thens: (() => void)[]): void {
    for (const e of effects) {
      if (e.type === 'persist') continue
      if (node instanceof AgentNode) this.hosts.agentEffect(node, e as AgentEffect)
      else if (node instanceof CoordinatorNode) this.hosts.coordinatorEffect(node, e as CoordinatorEffect)
    }
    for (const then of thens) then()
  }

  private diskLatency(node: SimNode): number {
    if (this.net.faults.disk_slow > 0 && this.prng.chance(this.net.faults.disk_slow)) return this.prng.range(20, 100)
    return node.kind === 'coordinator' ? this.prng.range(0.1, 0.6) : this.prng.range(0.3, 3)
  }

  // ---------------------------------------------------------------- agents

  // ---------------------------------------------------------------- coordinator

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

  /** The node a transport-level peer id belongs to (the simulated transport authenticates like noise). */
  nodeByPeer(peerId: string): SimNode | undefined {
    if (this.byPeer.size !== this.nodes.length) for (const n of this.nodes) this.byPeer.set(n.peerId, n)
    return this.byPeer.get(peerId)
  }

  // ---------------------------------------------------------------- gossip: best effort

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
  admits(viewer: AgentNode, peer: AgentNode): boolean {
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
    this.dispatch(this.coordinator, { type: 'revoke_node', requestId: `revoke-${a.id}`, nodeId: a.id }, () => this.hosts.disconnect(a, 'revoked'))
  }

  // ---------------------------------------------------------------- gossip (sim/gossip.ts)

  newMessage(envelope: unknown, origin: SimNode, label: string, topic: GossipTopic = 'jobs'): GossipMessage {
    return this.gossip.newMessage(envelope, origin, label, topic)
  }

  publish(from: SimNode, envelope: unknown, label: string, topic: GossipTopic = 'jobs'): GossipMessage {
    return this.gossip.publish(from, envelope, label, topic)
  }

  publishMessage(from: SimNode, msg: GossipMessage): void {
    this.gossip.publishMessage(from, msg)
  }

  inject(envelope: unknown, label: string, targets: number[]): GossipMessage {
    return this.gossip.inject(envelope, label, targets)
  }

  addGossipObserver(fn: (node: SimNode, msg: GossipMessage) => void): void {
    this.gossip.addGossipObserver(fn)
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
    const heap = this.heap
    while (!this.stopped) {
      const run = heap.popRun()
      if (!run) break
      this.now = heap.lastTime
      run()
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
