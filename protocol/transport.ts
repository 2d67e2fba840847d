// The transport contract both runtimes are written against. net/libp2p.ts implements it over
// libp2p; sim/ implements it over a simulated network with a virtual clock.
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
import { decodeEnvelope } from './wire.js'

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
