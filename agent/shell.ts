// The agent shell: what the agent runtime does around the agent core, as a small state machine
// driven by callbacks, so the real runtime (agent/runtime.ts, over libp2p and real timers) and
// the simulator (sim/, over the simulated network and a virtual clock) run the same code:
// - redial the coordinator with a doubling backoff (jittered by the host: the runtime spreads it
//   at random, the simulator keeps the unjittered grid), a dial then a hello rpc;
// - hello carries the node's addresses and skills; a refused hello leaves the node unconnected;
// - `send` effects go to the coordinator only while connected (a dropped one is resent by the core);
// - once the coordinator has been away for a while (protocol/timing.ts PEER_ROUND_*): dial the
//   peers it introduced and ask a few of them for a sync;
// - answer a member peer's sync from the core's state.
// Nothing here reads Date, timers, Math.random or the network: time comes from the Clock, the
// network from a ShellTransport (protocol/transport.ts), events go back through the host.
import type { Identity } from '../protocol/keys.js'
import { MAX_ADDRS_PER_PEER, MAX_SKILLS, MAX_SYNC_JOBS, PROTOCOL_VERSION, open, seal, type PeerInfo, type SignedEnvelope } from '../protocol/wire.js'
import type { Clock, ShellTransport } from '../protocol/transport.js'
import { AGENT_VERSION, PEER_ROUND_BUSY_DELAY_MS, PEER_ROUND_DELAY_MS, PEER_ROUND_IDLE_DELAY_MS, PEER_ROUND_MAX_DELAY_MS, REDIAL_MAX_MS, REDIAL_MIN_MS, RPC_TIMEOUT_MS } from '../protocol/timing.js'
import { envelopesForPeer, waitsOnPeers, type AgentEvent, type AgentState } from './core.js'

/** Other agents this one keeps connections to (the mesh), and asks for a sync when the coordinator is away. */
export const MAX_KNOWN_PEERS = 16
export const PEER_SYNC_FANOUT = 3
/** An attempt to reach the coordinator (dial, then hello) counts as over after this many ms even if no callback came. */
export const MAX_ATTEMPT_MS = 2 * RPC_TIMEOUT_MS + 5_000

/** A reply the coordinator signed to a hello, as far as the shell reads it. */
export interface HelloRefusal {
  error?: string
  pending?: boolean
  retryAfterMs?: number
}

/** What the shell reports (logging, metrics, the simulator's trace). Every hook is optional. */
export interface ShellHooks {
  /** The dial or the hello exchange failed (the coordinator unreachable, a reset, a reply that is not a valid reply). */
  dialFailed?(err: Error, retryInMs: number): void
  /** The coordinator answered the hello with a refusal (not enrolled, awaiting approval, revoked, overloaded). */
  refused?(why: HelloRefusal, retryInMs: number): void
  /** The hello was accepted: the node is connected. */
  joined?(): void
  /** The connection to the coordinator closed. */
  lost?(): void
  /** A send to the coordinator failed; the core resends. */
  sendFailed?(err: Error): void
  /** A peer's sync request was refused (why). */
  peerRefused?(peerId: string, why: string): void
}

export interface AgentShellOptions {
  transport: ShellTransport
  clock: Clock
  identity: Identity
  nodeId: string
  coordinatorKey: string
  coordinatorPeer: string
  /** Where the coordinator listens (a full multiaddr with its /p2p/ part in the runtime). */
  coordinatorAddr: string
  /** The core's state, read for the certificate and the jobs held (never written here). */
  state(): AgentState
  /** Steps an event through the core; `then` runs once its effects were carried out. */
  dispatch(event: AgentEvent, then?: () => void): void
  facts(): Record<string, string>
  skills: Record<string, string[]>
  /** Presented on hellos until the node holds a certificate. */
  enrollToken?: string
  /** Spreads a redial delay (the runtime: jitteredMs with Math.random; the simulator: unchanged). */
  jitter(ms: number): number
  /** Who a peer is, if it showed a valid membership certificate on its connection now. */
  memberOf(peerId: string): { nodeId: string; key: string } | undefined
  /**
   * The transport proves who answers a call (libp2p: the noise handshake binds the connection to
   * the peer id the coordinator's key derives, and its AEAD covers every byte of the reply): the
   * coordinator's replies to sends then need no signature check of their own (agent/link.ts
   * onReply). The simulator's transport does not say: its replies are verified.
   */
  authenticatedLink?: boolean
  hooks?: ShellHooks
}

export class AgentShell {
  connected = false
  /** Local time before which no redial is started, and the next backoff. */
  redialAt = 0
  redialMs = REDIAL_MIN_MS
  stopped = false
  /** Other agents the coordinator introduced: dialled only when the coordinator is away. */
  readonly knownPeers = new Map<string, string[]>()
  /**
   * A round of peer dials and syncs is in progress. Dials of the coordinator overlap (a dial may
   * take RPC_TIMEOUT_MS, longer than the first backoffs), and each failure would start a round
   * of its own: at most one runs at a time.
   */
  private peerRound = false
  /**
   * Since when the coordinator is away (0 while connected, and before the first attempt), when it
   * last showed it runs but is busy, and when the last peer round started. The first round of an
   * absence comes PEER_ROUND_DELAY_MS (jittered) after the loss when the node takes part in a
   * rollout that may need its peers (core waitsOnPeers), PEER_ROUND_IDLE_DELAY_MS otherwise (a
   * job it missed is all a peer could give it). Once the coordinator showed it runs but is busy
   * (the TCP connect went through and the handshake was reset or timed out, or a hello went
   * unanswered or was answered with a retry-after), it waits PEER_ROUND_BUSY_DELAY_MS after the
   * last such sign, and PEER_ROUND_MAX_DELAY_MS after the loss at the latest. Never while an
   * attempt is in flight (its outcome decides); after the first, one round per failed attempt,
   * as long as none is running. A coordinator restart is then over before the mesh is built
   * (README, How it works: at 250 agents the mesh was 47 of the 65 ms of CPU an agent spent on
   * a restart).
   */
  private awaySince = 0
  private busySeenAt = 0
  private peerRoundAt = 0
  /** This absence's jittered PEER_ROUND_DELAY_MS and PEER_ROUND_IDLE_DELAY_MS, drawn by startAbsence (read only once it ran). */
  private peerDelayMs = 0
  private idlePeerDelayMs = 0
  /** Counted since start: peer rounds, failed attempts to reach the coordinator, and those that found it busy. */
  readonly counts = { peerRounds: 0, failures: 0, busyFailures: 0 }

  constructor(private readonly o: AgentShellOptions) {
    o.transport.onClosed((peerId) => this.closed(peerId))
  }

  /**
   * A dial and its hello are in flight. One attempt at a time: a coordinator slow to answer (a
   * restart with the whole fleet redialling) took a dial or a hello longer than the first
   * backoffs, and overlapping attempts sent it 2.2 hellos per agent (bench fleet, 250 agents).
   * An attempt ends within 2 × RPC_TIMEOUT_MS (the dial's timeout, then the hello's); one
   * whose callback never came is given up after MAX_ATTEMPT_MS, so redials never stop.
   */
  private attempting = false
  private attemptStartedAt = 0

  /** One tick of the runtime's ticker (after the core's tick): redial when due. */
  tick(): void {
    if (this.stopped) return
    const now = this.o.clock.now()
    if (this.attempting && now - this.attemptStartedAt > MAX_ATTEMPT_MS) this.attempting = false
    if (!this.connected && !this.attempting && now >= this.redialAt) this.connect()
    // An attempt in flight decides by its outcome (it may find the coordinator busy); it ends within MAX_ATTEMPT_MS.
    if (!this.attempting && now >= this.peerRoundWakeAt()) this.startPeerRound()
  }

  /** Local time at which a tick starts this absence's first peer round (Infinity if none is waiting; the simulator plans its ticks by it). */
  peerRoundWakeAt(): number {
    const due = this.peerRoundDue()
    return this.peerRoundAt < due ? due : Infinity
  }

  /** When the first peer round of this absence is due (never while connected or before the first attempt). */
  private peerRoundDue(): number {
    if (this.connected || this.awaySince === 0) return Infinity
    const now = this.o.clock.now()
    const first = this.awaySince + (waitsOnPeers(this.o.state(), now) ? this.peerDelayMs : this.idlePeerDelayMs)
    if (this.busySeenAt === 0) return first
    return Math.min(this.awaySince + PEER_ROUND_MAX_DELAY_MS, Math.max(first, this.busySeenAt + PEER_ROUND_BUSY_DELAY_MS))
  }

  /** A `send` effect of the core: carried out only while connected. Returns whether it went out. */
  send(envelope: SignedEnvelope, kind: 'sync' | 'result', waitMs: number): boolean {
    if (!this.connected || this.stopped) return false
    this.o.transport.call(this.o.coordinatorPeer, envelope, RPC_TIMEOUT_MS + waitMs, (reply) => {
      if (!this.stopped) this.o.dispatch({ type: 'reply', envelope: reply, to: kind, ...(this.o.authenticatedLink ? { authenticated: true } : {}) })
    }, (err) => this.o.hooks?.sendFailed?.(err))
    return true
  }

  /** Dial, then hello. The next attempt is planned from the start of this one, and starts once this one has ended. */
  private connect(): void {
    const o = this.o
    this.attempting = true
    this.attemptStartedAt = o.clock.now()
    if (this.awaySince === 0) this.startAbsence()
    this.redialAt = o.clock.now() + o.jitter(this.redialMs)
    this.redialMs = Math.min(REDIAL_MAX_MS, this.redialMs * 2)
    o.transport.dial(o.coordinatorPeer, [o.coordinatorAddr], RPC_TIMEOUT_MS, (err) => {
      if (this.stopped) return
      if (err) { this.failed(err); return }
      const state = o.state()
      const hello = seal(o.identity, {
        type: 'hello', v: PROTOCOL_VERSION, nodeId: o.nodeId, peerId: o.transport.peerId,
        addrs: o.transport.addresses().slice(0, MAX_ADDRS_PER_PEER),
        facts: o.facts(), skills: Object.fromEntries(Object.entries(o.skills).slice(0, MAX_SKILLS)), agentVersion: AGENT_VERSION, sentAt: o.clock.now(),
        ...(!state.member.certificate && o.enrollToken ? { enrollToken: o.enrollToken } : {}),
      })
      o.transport.call(o.coordinatorPeer, hello, RPC_TIMEOUT_MS, (reply) => {
        if (this.stopped) return
        o.dispatch({ type: 'reply', envelope: reply, to: 'hello' }, () => { this.attempting = false; this.helloAnswered(reply) })
      }, (e) => this.failed(/timed out|timeout/i.test(e.message) ? Object.assign(e, { peerBusy: true }) : e)) // connected, then no answer in time: it runs, busy (a closed connection is not)
    })
  }

  private helloAnswered(reply: unknown): void {
    if (this.stopped) return
    const opened = open(reply, [this.o.coordinatorKey])
    if (!opened.ok || opened.body.type !== 'reply') {
      this.failed(new Error(`the coordinator's reply to hello was refused: ${opened.ok ? opened.body.type : opened.reason}`))
      return
    }
    const body = opened.body
    if (!body.ok) {
      if (body.retryAfterMs) { this.redialAt = this.o.clock.now() + body.retryAfterMs; this.busySeenAt = this.o.clock.now() }
      // Not enrolled (no or a bad token), awaiting approval, or revoked: keep redialling with backoff.
      this.o.hooks?.refused?.({ ...(body.error !== undefined ? { error: body.error } : {}), ...(body.pending ? { pending: true } : {}), ...(body.retryAfterMs ? { retryAfterMs: body.retryAfterMs } : {}) }, this.redialMs)
      return
    }
    this.rememberPeers(body.peers)
    this.connected = true
    this.awaySince = 0
    this.busySeenAt = 0
    this.redialMs = REDIAL_MIN_MS
    this.o.hooks?.joined?.()
    this.o.dispatch({ type: 'connected' })
  }

  /** The coordinator cannot be reached now: say so, and turn to the peers. */
  private failed(err: Error): void {
    this.attempting = false
    if (this.stopped) return
    this.counts.failures++
    if ((err as { peerBusy?: boolean }).peerBusy) { this.busySeenAt = this.o.clock.now(); this.counts.busyFailures++ }
    this.o.hooks?.dialFailed?.(err, this.redialMs)
    if (this.o.clock.now() >= this.peerRoundDue()) this.startPeerRound()
  }

  private startPeerRound(): void {
    if (this.peerRound || this.stopped) return
    this.peerRound = true
    this.peerRoundAt = this.o.clock.now()
    this.counts.peerRounds++
    this.dialKnownPeers(() => this.syncFromPeers(() => { this.peerRound = false }))
  }

  /** The coordinator is away from now: the first peer round waits (peerRoundDue). */
  private startAbsence(): void {
    this.awaySince = this.o.clock.now()
    this.busySeenAt = 0
    this.peerDelayMs = this.o.jitter(PEER_ROUND_DELAY_MS)
    this.idlePeerDelayMs = this.o.jitter(PEER_ROUND_IDLE_DELAY_MS)
  }

  private closed(peerId: string): void {
    if (peerId !== this.o.coordinatorPeer || !this.connected || this.stopped) return
    this.connected = false
    this.startAbsence()
    this.o.hooks?.lost?.()
    this.o.dispatch({ type: 'disconnected' })
  }

  private rememberPeers(peers: PeerInfo[]): void {
    for (const p of peers) {
      if (p.peerId === this.o.transport.peerId || this.knownPeers.has(p.peerId)) continue
      if (this.knownPeers.size >= MAX_KNOWN_PEERS) break
      this.knownPeers.set(p.peerId, p.addrs)
    }
  }

  /**
   * The coordinator is away: connect to the agents it introduced, so gossip (progress, job
   * states) and syncs keep flowing between agents. While the coordinator is up the fleet is a
   * star around it: an always-on agent mesh made every delivery slower (measured: median
   * fan-out at 20 agents 0.40 s with the mesh, 0.23 s without).
   */
  private dialKnownPeers(then: () => void): void {
    const connected = new Set(this.o.transport.connectedPeers())
    const todo = [...this.knownPeers].filter(([id]) => !connected.has(id))
    let left = todo.length
    if (left === 0) { then(); return }
    for (const [peerId, addrs] of todo) {
      this.o.transport.dial(peerId, addrs, RPC_TIMEOUT_MS, () => { if (--left === 0) then() })
    }
  }

  /** Asks a few connected peers for the jobs (and job states) that target this node. */
  private syncFromPeers(done: () => void): void {
    const o = this.o
    if (this.stopped) { done(); return }
    const peers = o.transport.connectedPeers().filter((p) => p !== o.coordinatorPeer).slice(0, PEER_SYNC_FANOUT)
    if (peers.length === 0) { done(); return }
    let left = peers.length
    const state = o.state()
    // The jobs it holds, so peers send newer states of them (and definitions only of jobs that target this node).
    const known = [...state.jobs.values()].slice(-MAX_SYNC_JOBS).map((j) => ({ jobId: j.body.jobId, version: state.jobStates.get(j.body.jobId)?.body.version ?? 0 }))
    const request = seal(o.identity, { type: 'sync', v: PROTOCOL_VERSION, nodeId: o.nodeId, sentAt: o.clock.now(), known })
    for (const peer of peers) {
      o.transport.call(peer, request, RPC_TIMEOUT_MS, (reply) => {
        if (--left === 0) done()
        if (this.stopped) return
        const opened = open(reply)
        if (!opened.ok || opened.body.type !== 'reply') return
        // Each envelope is verified against the coordinator key by the core: a peer can relay, not forge.
        for (const envelope of opened.body.jobs) o.dispatch({ type: 'job', envelope, via: 'peer' })
      }, () => { if (--left === 0) done() /* that peer is away too */ })
    }
  }

  /** A peer asks for a sync while its coordinator is away: answered only for a member, only about jobs that concern it. */
  answerPeer(request: unknown, from: string): SignedEnvelope {
    const o = this.o
    const refuse = (error: string) => {
      o.hooks?.peerRefused?.(from, error)
      return seal(o.identity, { type: 'reply', v: PROTOCOL_VERSION, ok: false, error, ackRunIds: [], jobs: [], peers: [] })
    }
    const member = o.memberOf(from)
    if (!member) return refuse('not a member: show a membership certificate first')
    const opened = open(request, [member.key])
    if (!opened.ok || opened.body.type !== 'sync') return refuse(opened.ok ? `agents answer sync only, not ${opened.body.type}` : opened.reason)
    if (opened.body.nodeId !== member.nodeId) return refuse(`this connection belongs to node ${member.nodeId}, not ${opened.body.nodeId}`)
    const jobs = envelopesForPeer(o.state(), member, opened.body.known, o.clock.now())
    return seal(o.identity, { type: 'reply', v: PROTOCOL_VERSION, ok: true, ackRunIds: [], jobs, peers: [] })
  }

  stop(): void {
    this.stopped = true
  }
}
