// The simulator's vocabulary: nodes (coordinator, agents, the attacker), the ground-truth
// records the checkers read, gossip messages, options, and the network constants the world
// uses. sim/world.ts holds the event loop, the hosts around the cores, rpc and gossip.
import {
  agentStep, restoreAgent,
  type AgentConfig, type AgentEffect, type AgentEvent, type AgentState, type StepRunRequest,
} from '../agent/core.js'
import {
  coordinatorStep, restoreCoordinator,
  type CoordinatorConfig, type CoordinatorEffect, type CoordinatorEvent, type CoordinatorState, type SubmitOutcome,
} from '../coordinator/core.js'
import { peerIdOf, type Identity } from '../protocol/keys.js'
import type { SignedEnvelope } from '../protocol/wire.js'
import type { JobTemplate } from '../protocol/template.js'
import type { AgentShell } from '../agent/shell.js'
import type { SimTransport } from './transport.js'
import type { World } from './world.js'
/** libp2p's connection monitor: ping interval and the time after which a silent peer is dropped. */
export const CONN_MONITOR_MS = 10_000
export const PING_TIMEOUT_MS = 5_000
/** gossipsub defaults: mesh degree D, IHAVE fan-out D_lazy, heartbeat, history in heartbeats. */
export const GOSSIP_DEGREE = 6
export const GOSSIP_LAZY = 6
export const GOSSIP_HEARTBEAT_MS = 1_000
export const GOSSIP_HISTORY = 3
/** gossipsub seenTTL: how long a node remembers a message id (dedupe). */
export const GOSSIP_SEEN_TTL_MS = 120_000
/** Framing bytes added to every gossip frame (topic, seqno, from, libp2p signature, noise tag). */
export const GOSSIP_FRAME_BYTES = 160
export const IHAVE_BYTES = 80
/** Framing bytes of one rpc request or reply (stream open, protocol select, length prefix, noise). */
export const RPC_FRAME_BYTES = 120
export const PING_BYTES = 2 * 48
/** Epoch of simulated time 0 on a perfect clock (2023-11-14T22:13:20Z). */
export const SIM_EPOCH_MS = 1_700_000_000_000
/** Hard bound on events in one run: a runaway loop is a bug, not a long simulation. */
export const MAX_EVENTS = 200_000_000

export interface Cores {
  agentStep: typeof agentStep
  restoreAgent: typeof restoreAgent
  coordinatorStep: typeof coordinatorStep
  restoreCoordinator: typeof restoreCoordinator
}

/** Agent run statuses that are final; any other (running, waiting for a batch slot, ...) is in progress. */
export const RUN_TERMINAL: ReadonlySet<string> = new Set(['success', 'failure', 'skipped'])

export const REAL_CORES: Cores = { agentStep, restoreAgent, coordinatorStep, restoreCoordinator }

export interface StepModel {
  /** Probability that one attempt fails (exit code 1). */
  failure_rate: number
  /** Median and log-normal shape of an attempt's duration, in ms. */
  duration_ms_median: number
  duration_sigma: number
}

export const DEFAULT_STEP_MODEL: StepModel = { failure_rate: 0.05, duration_ms_median: 4_000, duration_sigma: 0.7 }

type NodeKind = 'coordinator' | 'agent' | 'attacker'

interface QueueItem {
  event?: AgentEvent | CoordinatorEvent
  effects?: (AgentEffect | CoordinatorEffect)[]
  then?: () => void
}

class Deque<T> {
  private items: (T | undefined)[] = []
  private head = 0
  get length(): number { return this.items.length - this.head }
  push(x: T): void { this.items.push(x) }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined
    const x = this.items[this.head]
    this.items[this.head++] = undefined
    if (this.head > 1024 && this.head * 2 > this.items.length) { this.items = this.items.slice(this.head); this.head = 0 }
    return x
  }
  clear(): void { this.items = []; this.head = 0 }
}

export class SimNode {
  up = false
  /** Incremented at every crash and restart; events of an older incarnation are ignored. */
  epoch = 0
  queue = new Deque<QueueItem>()
  busy = false
  /** Durable key/value records (level). In snapshot mode values are JSON text, as level stores them. */
  store = new Map<string, unknown>()
  /** Nodes that may crash keep JSON snapshots; the others keep references (never restored). */
  snapshot = false
  /** Messages seen in the last GOSSIP_HISTORY heartbeats (the IHAVE window), and whether the heartbeat runs. */
  history: { msg: GossipMessage; at: number }[] = []
  beating = false
  bytesSent = 0
  bytesRecv = 0
  downSince = 0
  downIntervals: [number, number][] = []
  /** Step attempts executing now (ground truth), ended as interrupted by a crash. */
  running = new Set<ExecRecord>()
  constructor(
    readonly index: number,
    readonly id: string,
    readonly kind: NodeKind,
    readonly identity: Identity,
    readonly clockOffsetMs: number,
    readonly clockRate: number,
  ) {}
  /** As libp2p derives it from the node's key (the simulated transport is authenticated like noise). */
  get peerId(): string { return (this.peerIdCache ??= peerIdOf(this.identity.publicKey)) }
  private peerIdCache: string | undefined
}

export class AgentNode extends SimNode {
  state: AgentState | null = null
  /** The agent shell of this incarnation (agent/shell.ts, as the runtime runs it) and its transport; null while down. */
  shell: AgentShell | null = null
  transport: SimTransport | null = null
  /** Connected to the coordinator: the shell's view (a dial, then an accepted hello). */
  get connected(): boolean { return this.shell?.connected ?? false }
  nextMonitorAt = 0
  /** The runtime's tick grid: when the last tick fell, when the next one is planned, and a token that voids older plans. */
  tickLast = 0
  tickAt = Infinity
  tickGen = 0
  /** This incarnation's first tick has run (its grid starts there). */
  ticking = false
  /** The enrolment token its hellos present until it holds a certificate: undefined, the fleet's; null, none (a rogue host). */
  enrollToken: string | null | undefined
  /** A rogue's stand-in for its own certificate: one it captured from another node (a replay). */
  presentCert: SignedEnvelope | undefined
  /** A rogue host (never enrolled by the operator), whatever it claims. */
  rogue = false
  /** Peers' certificates this agent checked, by node index (see World.admits). */
  readonly admitted = new Map<number, { sig: string; revokedVersion: number; ok: boolean; until: number }>()
  constructor(index: number, id: string, identity: Identity, offset: number, rate: number, readonly config: AgentConfig, readonly facts: Record<string, string>) {
    super(index, id, 'agent', identity, offset, rate)
  }
}

export class CoordinatorNode extends SimNode {
  state: CoordinatorState | null = null
  /** rpc requests waiting for the core, by request id. */
  pendingRpc = new Map<string, (envelope: SignedEnvelope) => void>()
  pendingSubmit = new Map<string, (outcome: SubmitOutcome) => void>()
  constructor(index: number, id: string, identity: Identity, offset: number, rate: number, readonly config: CoordinatorConfig) {
    super(index, id, 'coordinator', identity, offset, rate)
  }
}

/** One step attempt actually started by a node: the ground truth the checkers compare against. */
export interface ExecRecord {
  node: string
  runId: string
  jobId: string
  instanceId: string
  group: number
  batch: number
  position: number
  occurrenceAt: number
  step: number
  attempt: number
  start: number
  end?: number
  status?: 'success' | 'failure' | 'interrupted'
}

/** A run's outcome as the agent decided it (when the terminal run record became durable). */
export interface OutcomeRecord {
  node: string
  runId: string
  instanceId: string
  jobId: string
  occurrenceAt: number
  group: number
  batch: number
  position: number
  /** As the core's AgentRun status says: success, failure, or what a newer core adds (skipped). */
  status: string
  reason?: string
  reasonCode?: string
  steps: [number, string, number][]
  /** Simulated time the terminal record became durable. */
  at: number
}

export type GossipTopic = 'jobs' | 'progress'

export interface GossipMessage {
  id: number
  envelope: unknown
  bytes: number
  origin: number
  label: string
  topic: GossipTopic
  /** Per node: the (16-bit) incarnation that saw it; null once older than the seen-cache TTL. */
  seenBy: Uint16Array | null
  /** Simulated time of publication. */
  at: number
}

export interface ViolationDetail {
  property: string
  detail: string
}

export interface Checker {
  /** Property name as reported, e.g. `at-most-once`. */
  name: string
  /** Called when a node starts a step attempt (before it is recorded). */
  onExec?(world: World, exec: ExecRecord, request: StepRunRequest, agent: AgentNode): string | undefined
  /** Called at the end of the run, after the liveness phase. */
  final?(world: World): string[]
}

export interface WorldOptions {
  seed: number
  agents: number
  template: JobTemplate
  /** Node ids to give the first agents (a --job template that names its targets). */
  nodeIds?: string[]
  /** Replacement cores (test doubles); a function is called with the world once its identities exist. */
  cores?: Partial<Cores> | ((world: World) => Partial<Cores>)
  checkers: Checker[]
  stepModel?: Partial<StepModel>
  /** Liveness bound: after faults stop, convergence must happen within this much simulated time. */
  livenessBoundMs?: number
  /** Keep per-node intervals and message buckets for the HTML report. */
  timeline?: boolean
  /**
   * Tick every agent every AGENT_TICK_MS as the runtime does, even when nothing is due. Off by
   * default: ticks with nothing to do (the core's idleUntil, no ping, no redial) are skipped
   * without scheduling them; a test checks both give the same trace.
   */
  tickAll?: boolean
  /** Receives every trace line as it is recorded (debugging aid). */
  traceSink?: (line: string) => void
  /** Gossip IHAVE/IWANT repair; off would model plain flooding. */
  gossipRepair?: boolean
  /** Rogue hosts: agent processes with keys of their own that were never enrolled (the scenario decides what each tries). */
  rogues?: number
  /** The coordinator's admission bound (default MAX_PENDING_REQUESTS, the runtime's; tests make it small). */
  maxPendingRequests?: number
  /** Check the cores' invariants after every step (default: fleets of at most INVARIANT_CHECK_MAX_AGENTS agents; the check is O(state)). */
  checkInvariants?: boolean
}

/** Fleets up to this size have their cores' invariants checked after every step by default. */
export const INVARIANT_CHECK_MAX_AGENTS = 500

export interface MessageBucket { gossip: number; rpc: number; forged: number }
