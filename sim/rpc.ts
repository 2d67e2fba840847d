// rpc over the simulated network: reliable or reject. One request/response exchange from an
// agent to the coordinator (which queues it for its core, up to MAX_PENDING_REQUESTS) or to a
// connected peer (answered at once by its shell); the reply callback runs at most once, and a
// loss, partition, reset or timeout fails the request.
import { MAX_PENDING_REQUESTS, RETRY_AFTER_MIN_MS, RETRY_AFTER_SPREAD_MS } from '../protocol/timing.js'
import { PROTOCOL_VERSION, seal, type SignedEnvelope } from '../protocol/wire.js'
import { kindOf } from './load.js'
import { linkError } from './transport.js'
import { RPC_FRAME_BYTES, type AgentNode } from './types.js'
import type { World } from './world.js'

export class Rpc {
  constructor(private readonly w: World) {}

  private readonly sizes = new WeakMap<object, number>()
  envelopeBytes(envelope: unknown): number {
    const env = envelope as SignedEnvelope
    if (typeof env?.body !== 'string') return 200
    let n = this.sizes.get(env)
    if (n === undefined) {
      // JSON escaping of the body string: quotes and backslashes double; bytes beyond ASCII count as UTF-8.
      // One pass over the characters: an indexOf call per quote cost twice as much on JSON bodies.
      const body = env.body
      n = Buffer.byteLength(body) + 2 + 160
      for (let i = 0; i < body.length; i++) {
        const c = body.charCodeAt(i)
        if (c === 34 || c === 92) n++
      }
      this.sizes.set(env, n)
    }
    return n
  }

  /**
   * One request/response exchange from agent `a` to the coordinator. The reply callback runs at
   * most once; on loss, partition or reset the request fails (silently, as the runtime only logs it).
   */
  rpc(a: AgentNode, envelope: SignedEnvelope, timeoutMs: number, onReply: (reply: SignedEnvelope) => void, onFail: (err: Error) => void): void {
    const c = this.w.coordinator
    const kind = kindOf(envelope)
    this.w.load.sent(kind)
    const { id, size, fail, deliver, ended } = this.exchange(a, envelope, timeoutMs, (n) => `rpc#${n}`, onReply, onFail, kind)
    if (this.w.net.blocked(a.index, 0)) return
    const reset = this.w.net.faults.rpc_reset > 0 && this.w.prng.chance(this.w.net.faults.rpc_reset * this.w.net.linkProfile(a.index, 0).rpc_reset_factor)
    const resetBeforeProcessing = reset && this.w.prng.chance(0.5)
    const up = this.w.net.latency(a.index, 0)
    if (resetBeforeProcessing) {
      this.w.after(up + this.w.net.latency(0, a.index), () => fail('stream reset'))
      return
    }
    this.w.after(up, () => {
      if (!c.up) {
        this.w.after(this.w.net.latency(0, a.index), () => fail('connection refused'))
        return
      }
      c.bytesRecv += size
      const bound = this.w.options.maxPendingRequests ?? MAX_PENDING_REQUESTS
      if (c.queue.length >= bound) {
        // As the runtime sheds load (coordinator/runtime.ts overloaded()): a signed answer with a
        // drawn retry-after, which the shell (hello) and the core (sync, result) wait out.
        const retryAfterMs = RETRY_AFTER_MIN_MS + Math.floor(this.w.prng.float() * RETRY_AFTER_SPREAD_MS)
        const answer = seal(c.identity, { type: 'reply', v: PROTOCOL_VERSION, ok: false, error: `coordinator overloaded (${bound} requests waiting); retry in ${retryAfterMs} ms`, retryAfterMs })
        const answerSize = this.envelopeBytes(answer) + RPC_FRAME_BYTES
        c.bytesSent += answerSize
        this.w.load.retryAfterSent++
        this.w.bucket('rpc')
        if (this.w.net.blocked(0, a.index)) return
        deliver(0, answer, answerSize)
        return
      }
      const requestId = `rpc-${id}`
      this.w.load.arrived(kind, c.queue.length + 1, this.w.now)
      c.pendingRpc.set(requestId, (reply) => {
        if (ended()) this.w.load.steppedAfterTimeout++
        const replySize = this.envelopeBytes(reply) + RPC_FRAME_BYTES
        c.bytesSent += replySize
        this.w.bucket('rpc')
        if (reset) { this.w.after(this.w.net.latency(0, a.index), () => fail('stream reset after processing')); return }
        if (this.w.net.blocked(0, a.index)) return
        deliver(0, reply, replySize)
      })
      this.w.dispatch(c, { type: 'rpc', requestId, envelope, peerId: a.peerId })
    })
  }

  /**
   * A sync request from agent `a` to a connected peer, answered at once from the peer's state
   * (agent/shell.ts answerPeer: the runtime answers outside its core loop too). Reliable or reject.
   */
  peerRpc(a: AgentNode, peer: AgentNode, envelope: SignedEnvelope, timeoutMs: number, onReply: (reply: SignedEnvelope) => void, onFail: (err: Error) => void): void {
    this.w.load.peerRpcSent++
    const { id, size, fail, deliver } = this.exchange(a, envelope, timeoutMs, (n) => `peer-rpc#${n} to ${peer.index}`, onReply, onFail)
    if (this.w.net.blocked(a.index, peer.index)) return
    this.w.after(this.w.net.latency(a.index, peer.index), () => {
      if (!peer.up || !peer.shell) { this.w.after(this.w.net.latency(peer.index, a.index), () => fail('connection reset')); return }
      peer.bytesRecv += size
      const reply = peer.shell.answerPeer(envelope, a.peerId)
      const replySize = this.envelopeBytes(reply) + RPC_FRAME_BYTES
      peer.bytesSent += replySize
      this.w.bucket('rpc')
      this.w.record(`${peer.index} answers peer-rpc#${id} from ${a.index}`)
      if (this.w.net.blocked(peer.index, a.index)) return
      deliver(peer.index, reply, replySize)
    })
  }

  /**
   * What both exchanges share: the request's bytes and number, its timeout, a `fail` that runs
   * once (and only if the agent did not restart meanwhile), and `deliver`, which brings a reply
   * from host `from` after the link's latency unless the exchange already ended.
   */
  private exchange(a: AgentNode, envelope: SignedEnvelope, timeoutMs: number, label: (id: number) => string, onReply: (reply: SignedEnvelope) => void, onFail: (err: Error) => void, kind?: string) {
    let done = false
    const epoch = a.epoch
    const size = this.envelopeBytes(envelope) + RPC_FRAME_BYTES
    const id = ++this.w.rpcSeq
    a.bytesSent += size
    this.w.bucket('rpc')
    const fail = (why: string) => {
      if (done) return
      done = true
      if (kind !== undefined) this.w.load.ended(kind, why, this.w.now)
      if (a.epoch === epoch) { this.w.record(`${a.index} ${label(id)} failed: ${why}`); onFail(linkError(why)) }
    }
    this.w.after(timeoutMs / a.clockRate, () => fail('timeout'))
    const deliver = (from: number, reply: SignedEnvelope, replySize: number) => {
      this.w.after(this.w.net.latency(from, a.index), () => {
        if (done || a.epoch !== epoch || !a.up) return
        done = true
        if (kind !== undefined) this.w.load.ended(kind, 'reply', this.w.now)
        a.bytesRecv += replySize
        onReply(reply)
      })
    }
    return { id, size, fail, deliver, ended: () => done }
  }

}
