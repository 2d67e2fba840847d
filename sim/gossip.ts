// Gossip over the simulated network: best effort, as gossipsub over the connections nodes hold.
// publish() is flood-published by its author to every connection (the coordinator: every
// connected agent), relayed over the mesh, deduplicated by message id (a seen-cache with
// gossipsub's TTL) and repaired by IHAVE/IWANT: a node holding messages of the last
// GOSSIP_HISTORY heartbeats advertises them all in one IHAVE per lazy peer per heartbeat (as
// gossipsub does), so repair costs O(nodes) events per heartbeat, not O(nodes x messages). Two
// topics: jobs (coordinator -> agents) and progress (agents' ack/start/renew/done, gossiped only
// while the coordinator is away and only for jobs of at most 64 targets).
import { AgentNode, CoordinatorNode, GOSSIP_DEGREE, GOSSIP_FRAME_BYTES, GOSSIP_HEARTBEAT_MS, GOSSIP_HISTORY, GOSSIP_LAZY, GOSSIP_SEEN_TTL_MS, IHAVE_BYTES, type GossipMessage, type GossipTopic, type SimNode } from './types.js'
import type { World } from './world.js'

const NO_CONNECTIONS: readonly number[] = Object.freeze([])
const COORDINATOR_ONLY: readonly number[] = Object.freeze([0])

export class Gossip {
  constructor(private readonly w: World) {}

  private msgSeq = 0
  /** Messages whose seen marks are still kept (newest last), from liveHead on. */
  readonly liveMessages: GossipMessage[] = []
  private liveHead = 0
  /** Called by scenarios once the rollout job is known to every live agent, etc. */
  readonly onGossip: ((node: SimNode, msg: GossipMessage) => void)[] = []

  /** IHAVE/IWANT repair (WorldOptions.gossipRepair); off models plain flooding. */
  gossipRepair = true

  newMessage(envelope: unknown, origin: SimNode, label: string, topic: GossipTopic = 'jobs'): GossipMessage {
    return { id: ++this.msgSeq, envelope, bytes: this.w.rpcs.envelopeBytes(envelope) + GOSSIP_FRAME_BYTES, origin: origin.index, label, topic, seenBy: new Uint16Array(this.w.nodes.length), at: this.w.now }
  }

  publish(from: SimNode, envelope: unknown, label: string, topic: GossipTopic = 'jobs'): GossipMessage {
    const msg = this.newMessage(envelope, from, label, topic)
    this.publishMessage(from, msg)
    return msg
  }

  /** Whether `node` (in its current incarnation) has seen `msg`; a crash forgets, and so does the seen-cache's TTL. */
  hasSeen(node: SimNode, msg: GossipMessage): boolean {
    // Past the seen-cache TTL the per-node marks are freed; a frame that late is treated as a
    // duplicate the mesh already carried (gossipsub would pass it on as new: app_duplicate models that).
    return msg.seenBy === null || msg.seenBy[node.index] === (node.epoch & 0xffff)
  }

  markSeen(node: SimNode, msg: GossipMessage): void {
    if (msg.seenBy) msg.seenBy[node.index] = node.epoch & 0xffff
    node.history.push({ msg, at: this.w.now })
    if (!node.beating) {
      node.beating = true
      this.w.afterFor(node, this.w.prng.range(0, GOSSIP_HEARTBEAT_MS), () => this.heartbeat(node))
    }
  }

  publishMessage(from: SimNode, msg: GossipMessage): void {
    if (!from.up) return
    this.liveMessages.push(msg)
    this.markSeen(from, msg)
    this.w.record(`${from.index} gossip-publish #${msg.id} ${msg.label}`)
    // net/libp2p.ts publishes with floodPublish: the author sends its own message to every
    // connected subscriber, not only to its mesh. The connections are the real topology: every
    // connected agent dialled the coordinator (a star), and agents dial the peers it introduced
    // only while it is away (agent/shell.ts).
    if (from === this.w.coordinator) {
      for (const a of this.w.agents) if (a.up && a.connected) this.transmit(from, a.index, msg)
      // The attacker stands for a compromised member: it holds a connection to the coordinator and hears what it publishes.
      if (this.w.attacker.up) this.transmit(from, this.w.attacker.index, msg)
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
    const msg = this.newMessage(envelope, this.w.attacker, label)
    this.w.record(`${this.w.attacker.index} inject #${msg.id} ${label} to ${targets.length} nodes`)
    for (const t of targets) {
      this.w.attacker.bytesSent += msg.bytes
      this.w.bucket('forged')
      if (this.w.net.blocked(this.w.attacker.index, t) || this.w.net.lost(this.w.attacker.index, t)) continue
      this.w.after(this.w.net.latency(this.w.attacker.index, t), () => {
        const node = this.w.nodes[t]!
        if (!node.up) return
        node.bytesRecv += msg.bytes
        this.deliver(node, msg)
      })
    }
    return msg
  }

  /** The nodes `node` holds a connection to now (an agent: its peers, and the coordinator while connected). */
  connectionsOf(node: SimNode): readonly number[] {
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
  meshOf(node: SimNode): readonly number[] {
    if (node !== this.w.coordinator) return this.connectionsOf(node)
    const out: number[] = []
    for (const a of this.w.agents) {
      if (out.length >= GOSSIP_DEGREE) break
      if (a.up && a.connected) out.push(a.index)
    }
    return out
  }

  addGossipObserver(fn: (node: SimNode, msg: GossipMessage) => void): void {
    this.onGossip.push(fn)
  }

  transmit(from: SimNode, to: number, msg: GossipMessage, extraDelay = 0): void {
    if (!this.w.linkAdmitted(from, this.w.nodes[to]!)) return
    from.bytesSent += msg.bytes
    this.w.bucket(msg.origin === this.w.attacker.index ? 'forged' : 'gossip')
    if (this.w.net.blocked(from.index, to) || this.w.net.lost(from.index, to)) return
    const copies = this.w.net.faults.duplicate > 0 && this.w.prng.chance(this.w.net.faults.duplicate) ? 2 : 1
    for (let k = 0; k < copies; k++) {
      this.w.after(extraDelay + this.w.net.latency(from.index, to), () => this.arrive(this.w.nodes[to]!, msg, from.index))
    }
  }

  arrive(node: SimNode, msg: GossipMessage, from: number): void {
    if (!node.up) return
    node.bytesRecv += msg.bytes
    if (this.hasSeen(node, msg)) {
      // The seen-cache is bounded in time; a late duplicate may get past it.
      if (this.w.net.faults.app_duplicate > 0 && this.w.prng.chance(this.w.net.faults.app_duplicate)) this.deliver(node, msg)
      return
    }
    this.markSeen(node, msg)
    this.deliver(node, msg)
    for (const nb of this.meshOf(node)) if (nb !== from) this.transmit(node, nb, msg)
  }

  deliver(node: SimNode, msg: GossipMessage): void {
    this.w.record(`${node.index} gossip-deliver #${msg.id}`)
    if (node instanceof AgentNode && node.rogue && msg.label.startsWith('job ')) this.w.rogueReceipts.push(`rogue ${node.id} received definition #${msg.id} (${msg.label}) by gossip at ${(this.w.now / 1000).toFixed(1)} s`)
    for (const fn of this.onGossip) fn(node, msg)
    if (msg.topic === 'progress') {
      // Agents and the coordinator subscribe to the progress topic (agent/runtime.ts, coordinator/runtime.ts).
      if (node instanceof AgentNode || node instanceof CoordinatorNode) this.w.dispatch(node, { type: 'progress', envelope: msg.envelope })
    } else if (node instanceof AgentNode) this.w.dispatch(node, { type: 'job', envelope: msg.envelope, via: 'gossip' })
  }

  /**
   * One gossipsub heartbeat of `node`: IHAVE to GOSSIP_LAZY random peers, listing every message
   * id it saw in the last GOSSIP_HISTORY heartbeats (one frame per peer, as gossipsub sends);
   * a peer that misses some answers IWANT and they come over. The heartbeat only runs while
   * the node holds recent messages, so an idle mesh costs nothing.
   */
  heartbeat(node: SimNode): void {
    const cutoff = this.w.now - GOSSIP_HISTORY * GOSSIP_HEARTBEAT_MS
    let keep = 0
    for (const h of node.history) if (h.at > cutoff) node.history[keep++] = h
    node.history.length = keep
    this.expireSeen()
    if (keep === 0 || !this.gossipRepair) { node.beating = false; node.history.length = 0; return }
    const ihave = IHAVE_BYTES + 16 * (keep - 1)
    // IHAVE goes to peers it is connected to: the coordinator draws among the agents (a draw
    // that lands on one not connected sends nothing), an agent among its connections.
    const conns = node === this.w.coordinator ? null : this.connectionsOf(node)
    for (let k = 0; k < GOSSIP_LAZY; k++) {
      if (conns !== null && conns.length === 0) break
      const t = conns === null ? this.w.agents[this.w.prng.int(this.w.agents.length)]!.index : conns[this.w.prng.int(conns.length)]!
      if (conns === null && !(this.w.nodes[t] as AgentNode).connected) continue
      node.bytesSent += ihave
      if (this.w.net.blocked(node.index, t) || this.w.net.lost(node.index, t)) continue
      const target = this.w.nodes[t]!
      if (!target.up) continue
      target.bytesRecv += ihave
      let wanted = 0
      for (const { msg: m } of node.history) {
        if (this.hasSeen(target, m)) continue
        if (wanted++ === 0) {
          // IWANT goes back, then the messages come over.
          target.bytesSent += IHAVE_BYTES
          if (this.w.net.blocked(t, node.index)) break
        }
        this.transmit(node, t, m, this.w.net.latency(node.index, t) + this.w.net.latency(t, node.index))
      }
    }
    this.w.afterFor(node, GOSSIP_HEARTBEAT_MS, () => this.heartbeat(node))
  }

  /** Frees the per-node seen marks of messages older than the seen-cache TTL. */
  expireSeen(): void {
    const cutoff = this.w.now - GOSSIP_SEEN_TTL_MS
    const live = this.liveMessages
    while (this.liveHead < live.length && live[this.liveHead]!.at < cutoff) live[this.liveHead++]!.seenBy = null
    if (this.liveHead > 1024 && this.liveHead * 2 > live.length) { live.splice(0, this.liveHead); this.liveHead = 0 }
  }

}
