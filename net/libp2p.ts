// The real network: libp2p over TCP with noise encryption, yamux multiplexing, identify and
// gossipsub. Both runtimes use it. Facts from ../shared/notes/libp2p-on-node20.md shape the
// configuration: gossipsub needs identify; its per-IP colocation penalty must be off for
// fleets on one address; the connection manager's inbound limits are raised for loopback.
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { gossipsub, TopicValidatorResult, type GossipSub } from '@libp2p/gossipsub'
import { generateKeyPairFromSeed, publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import type { PeerId, Stream } from '@libp2p/interface'
import { MAX_ENVELOPE_BYTES, PROTOCOL_RPC, TOPIC_JOBS } from '../protocol/wire.js'
import type { Transport } from '../protocol/transport.js'

/** Upper bound on one rpc frame (a request or a reply). */
export const MAX_RPC_FRAME_BYTES = MAX_ENVELOPE_BYTES + 64 * 1024
/**
 * Connection liveness, for the coordinator: ping every connection this often, and drop it when
 * a ping takes longer than the timeout (a frozen agent is seen within about 5 s). Agents ping
 * with libp2p's defaults and never drop a connection on a slow ping: on a loaded host (100
 * agents on 2 cores) aggressive pings on every side time out, connections drop, reconnect
 * handshakes load the host further, and the fleet spirals.
 */
export const LIVENESS_PING_MS = 1_500
export const LIVENESS_TIMEOUT_MS = 3_000
/** Concurrent inbound rpc streams one peer may hold open. */
export const MAX_INBOUND_RPC_STREAMS = 64

export interface NetOptions {
  seed: Uint8Array
  listen: string[]
  /** Only gossip authored by this peer is accepted on the job topic (agents pin the coordinator). */
  trustedPublisher?: string
  /** Ping connections every LIVENESS_PING_MS and drop the silent ones (the coordinator). */
  fastLiveness?: boolean
}

export interface Net extends Transport {
  node: Libp2p<{ pubsub: GossipSub; identify: unknown }>
  addresses(): string[]
}

export function peerIdForPublicKey(publicKey: string): string {
  return peerIdFromPublicKey(publicKeyFromRaw(Buffer.from(publicKey, 'base64url'))).toString()
}

export async function createNet(opts: NetOptions): Promise<Net> {
  const privateKey = await generateKeyPairFromSeed('Ed25519', opts.seed)
  const node = await createLibp2p({
    privateKey,
    addresses: { listen: opts.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // Every connection is pinged: a peer that stops answering (frozen host, cut cable) is
    // dropped within ~LIVENESS_PING_MS + LIVENESS_TIMEOUT_MS, without gossip heartbeats.
    connectionMonitor: opts.fastLiveness
      ? { pingInterval: LIVENESS_PING_MS, pingTimeout: { minTimeout: 1_000, maxTimeout: LIVENESS_TIMEOUT_MS }, abortConnectionOnPingFailure: true }
      : { abortConnectionOnPingFailure: false },
    connectionManager: {
      maxConnections: 10_000,
      maxIncomingPendingConnections: 1_000,
      inboundConnectionThreshold: 10_000,
      allow: ['/ip4/127.0.0.1', '/ip6/::1'],
    },
    services: {
      identify: identify(),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        floodPublish: true,
        emitSelf: false,
        scoreParams: { IPColocationFactorWeight: 0 },
      }),
    },
  })
  const pubsub = node.services.pubsub
  if (opts.trustedPublisher) {
    const trusted = opts.trustedPublisher
    pubsub.topicValidators.set(TOPIC_JOBS, (_peer: PeerId, msg) => {
      // Signed gossip keeps the author in msg.from across relays: drop anything not authored
      // by the pinned coordinator before it is relayed further.
      if (msg.type !== 'signed' || msg.from.toString() !== trusted) return TopicValidatorResult.Reject
      return TopicValidatorResult.Accept
    })
  }
  const gossipHandlers = new Map<string, ((data: Uint8Array, from: string) => void)[]>()
  pubsub.addEventListener('message', (evt) => {
    const msg = evt.detail
    const from = msg.type === 'signed' ? msg.from.toString() : ''
    for (const h of gossipHandlers.get(msg.topic) ?? []) h(msg.data, from)
  })

  return {
    node: node as Net['node'],
    peerId: node.peerId.toString(),
    addresses: () => node.getMultiaddrs().map((m) => m.toString()),
    async publish(topic, data) {
      const res = await pubsub.publish(topic, data)
      return res.recipients.length
    },
    subscribe(topic, handler) {
      const list = gossipHandlers.get(topic) ?? []
      if (list.length === 0) pubsub.subscribe(topic)
      list.push(handler)
      gossipHandlers.set(topic, list)
    },
    async handleRpc(handler) {
      await node.handle(PROTOCOL_RPC, async (stream: Stream, connection) => {
        const lp = lpStream(stream, { maxDataLength: MAX_RPC_FRAME_BYTES })
        try {
          const req = await lp.read({ signal: AbortSignal.timeout(30_000) })
          const res = await handler(req.subarray(), connection.remotePeer.toString())
          await lp.write(res)
          await stream.close()
        } catch (err) {
          stream.abort(err as Error)
        }
      }, { maxInboundStreams: MAX_INBOUND_RPC_STREAMS })
    },
    async request(target, data, timeoutMs) {
      const signal = AbortSignal.timeout(timeoutMs)
      const dialTarget = target.startsWith('/') ? multiaddr(target) : (await import('@libp2p/peer-id')).peerIdFromString(target)
      const stream = await node.dialProtocol(dialTarget, PROTOCOL_RPC, { signal })
      try {
        const lp = lpStream(stream, { maxDataLength: MAX_RPC_FRAME_BYTES })
        await lp.write(data, { signal })
        const res = await lp.read({ signal })
        await stream.close()
        return res.subarray()
      } catch (err) {
        stream.abort(err as Error)
        throw err
      }
    },
    async stop() {
      await node.stop()
    },
  }
}
