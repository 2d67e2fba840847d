// The transport contracts. `Transport` is what the runtimes' gossip and rpc serving are written
// against (net/libp2p.ts). `ShellTransport` is what the agent shell (agent/shell.ts) is written
// against: callbacks, never promises, so the simulator runs the shell inside its discrete-event
// loop. net/libp2p.ts implements it over libp2p (linkTransport), sim/transport.ts over the
// simulated network; both are checked against it at compile time.
//
// Contract:
// - publish() is best effort: a message may be lost, delayed, duplicated or reordered, and
//   reaches only peers subscribed to the topic that are reachable now. Receivers must
//   tolerate all of that (agents deduplicate by job id and check expiry).
// - request() is one reliable request/response exchange with one peer: it resolves with the
//   peer's reply or rejects (unreachable, timeout, reset); it never resolves twice. A rejected
//   request may or may not have been processed by the peer: callers retry idempotent messages.
// - Handlers receive the sender's transport-level peer id; authenticity of the content is
//   checked separately, from the ed25519 signature inside the message.
import { decodeEnvelope, type SignedEnvelope } from './wire.js'

/** Local time for a shell: the runtime's Date.now, the simulator's per-node clock. */
export interface Clock {
  now(): number
}

/**
 * The link layer as the agent shell sees it. Contract (beyond the one below):
 * - dial() opens (or reuses) a connection to a peer, trying the addresses in order; `done` is
 *   called exactly once, with an error when no address worked within timeoutMs. An error with
 *   `peerBusy: true` reached a peer that runs but did not take the connection (its handshake
 *   was reset, too many at once, or timed out after the TCP connect), not one that is away.
 * - call() is request() with a decoded reply: exactly one of onReply / onFail is called, at most
 *   once. The reply is decoded within MAX_ENVELOPE_BYTES but not verified: that is the core's job.
 * - onClosed() handlers hear of every peer whose last connection closed.
 * - connectedPeers() lists peers with an open connection now.
 */
export interface ShellTransport {
  readonly peerId: string
  addresses(): string[]
  connectedPeers(): string[]
  dial(peerId: string, addrs: string[], timeoutMs: number, done: (err: Error | undefined) => void): void
  call(target: string, envelope: SignedEnvelope, timeoutMs: number, onReply: (reply: unknown) => void, onFail: (err: Error) => void): void
  onClosed(handler: (peerId: string) => void): void
}

export interface Transport {
  readonly peerId: string
  publish(topic: string, data: Uint8Array): Promise<number>
  subscribe(topic: string, handler: (data: Uint8Array, from: string) => void): void
  handleRpc(handler: (data: Uint8Array, from: string) => Promise<Uint8Array>): Promise<void>
  request(target: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>
  stop(): Promise<void>
}

/**
 * Subscribes to a topic of signed envelopes: each message is decoded (bounded by
 * MAX_ENVELOPE_BYTES) and handed over; undecodable ones go to `onBad` and no further.
 * Verification is the receiving core's job.
 */
export function subscribeEnvelopes(transport: Transport, topic: string, onEnvelope: (envelope: unknown, from: string) => void, onBad: (reason: string) => void = () => {}): void {
  transport.subscribe(topic, (data, from) => {
    let envelope: unknown
    try {
      envelope = decodeEnvelope(data)
    } catch (err) {
      onBad((err as Error).message)
      return
    }
    onEnvelope(envelope, from)
  })
}
