// The agent shell's transport over the simulated network (protocol/transport.ts ShellTransport;
// net/libp2p.ts linkTransport is the real one). Every callback runs from the world's event heap,
// so the shell (agent/shell.ts) runs inside the discrete-event loop exactly as it runs in the
// runtime over libp2p: same redial, hello, send gating and peer sync, one seed one trace.
//
// What a connection is here: an agent is connected to the coordinator while its shell says so
// (dial, then an accepted hello), and to another agent once a dial between them got through and
// both admitted the other's membership certificate (the runtime's certificate exchange). A
// crashed node's connections close at its peers one latency later; a revoked peer is hung up.
import type { ShellTransport } from '../protocol/transport.js'
import type { SignedEnvelope } from '../protocol/wire.js'
import type { AgentNode } from './types.js'
import type { World } from './world.js'

/**
 * An operating error of the simulated network (a dial that timed out, a reset, a refusal), without
 * a stack trace: a large fleet fails millions of requests, the shell reads only the message, and
 * capturing a stack costs several times the error itself.
 */
export function linkError(message: string): Error {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return new Error(message)
  } finally {
    Error.stackTraceLimit = limit
  }
}

/** libp2p's TCP + noise + yamux handshake: about two round trips. */
export const HANDSHAKE_ROUND_TRIPS = 2

export class SimTransport implements ShellTransport {
  /** Other agents this one holds a connection to, by node index. */
  readonly peers = new Set<number>()
  private readonly closedHandlers: ((peerId: string) => void)[] = []

  constructor(private readonly world: World, private readonly node: AgentNode) {}

  get peerId(): string { return this.node.peerId }

  addresses(): string[] {
    const i = this.node.index
    return [`/ip4/10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/tcp/7700`]
  }

  connectedPeers(): string[] {
    const out: string[] = []
    if (this.node.connected) out.push(this.world.coordinator.peerId)
    for (const i of this.peers) out.push(this.world.nodes[i]!.peerId)
    return out
  }

  dial(peerId: string, _addrs: string[], timeoutMs: number, done: (err: Error | undefined) => void): void {
    const w = this.world
    const a = this.node
    const target = w.nodeByPeer(peerId)
    if (!target || target === a) { w.afterFor(a, 0, () => done(linkError(`no route to ${peerId}`))); return }
    if (target !== w.coordinator && this.peers.has(target.index)) { w.afterFor(a, 0, () => done(undefined)); return }
    if (w.net.blocked(a.index, target.index) || w.net.blocked(target.index, a.index)) {
      // SYNs vanish: the dial gives up at its abort timeout.
      w.afterFor(a, timeoutMs / a.clockRate, () => { w.record(`${a.index} dial timeout${target === w.coordinator ? '' : ` ${target.index}`}`); done(linkError('dial timeout')) })
      return
    }
    const rtt = w.net.latency(a.index, target.index) + w.net.latency(target.index, a.index)
    if (!target.up) {
      w.afterFor(a, rtt, () => { w.record(`${a.index} dial refused${target === w.coordinator ? '' : ` ${target.index}`}`); done(linkError('connection refused')) })
      return
    }
    w.afterFor(a, HANDSHAKE_ROUND_TRIPS * rtt, () => {
      if (target === w.coordinator) { done(undefined); return }
      // Agents: the certificate exchange decides whether the connection stays.
      const peer = target as AgentNode
      if (!peer.up || !peer.transport || !w.linkAdmitted(a, peer)) { w.record(`${a.index} peer ${peer.index} refused`); done(linkError('membership refused')); return }
      this.peers.add(peer.index)
      peer.transport.peers.add(a.index)
      w.record(`${a.index} peer ${peer.index} connected`)
      done(undefined)
    })
  }

  call(target: string, envelope: SignedEnvelope, timeoutMs: number, onReply: (reply: unknown) => void, onFail: (err: Error) => void): void {
    const w = this.world
    const a = this.node
    if (target === w.coordinator.peerId) {
      w.rpcs.rpc(a, envelope, timeoutMs, (reply) => { w.noteRogueReply(a, reply); onReply(reply) }, onFail)
      return
    }
    const peer = w.nodeByPeer(target) as AgentNode | undefined
    if (!peer || !this.peers.has(peer.index)) { w.afterFor(a, 0, () => onFail(linkError('not connected'))); return }
    w.rpcs.peerRpc(a, peer, envelope, timeoutMs, onReply, onFail)
  }

  onClosed(handler: (peerId: string) => void): void {
    this.closedHandlers.push(handler)
  }

  /** The connection to `peerId` closed (the world decides when: a crash, a ping timeout, a hang-up). */
  closed(peerId: string): void {
    for (const h of this.closedHandlers) h(peerId)
  }

  /** Closes the connection to another agent on both sides. */
  hangUp(peer: AgentNode): void {
    if (!this.peers.delete(peer.index)) return
    peer.transport?.peers.delete(this.node.index)
    this.world.record(`${this.node.index} peer ${peer.index} closed`)
    this.closed(peer.peerId)
    peer.transport?.closed(this.node.peerId)
  }
}

// Compile-time check that the simulated transport is a ShellTransport (memberlist's
// `var _ Transport = (*MockTransport)(nil)`): a change to the interface breaks the build here.
export const SIM_TRANSPORT_IS_A_SHELL_TRANSPORT: (t: SimTransport) => ShellTransport = (t) => t
