// The real network: libp2p over TCP with noise encryption, yamux multiplexing, identify and
// gossipsub. Both runtimes use it. Facts from ../shared/notes/libp2p-on-node20.md shape the
// configuration: gossipsub needs identify (or, between an agent and its coordinator, being told
// the peer speaks gossip: gossipPeer below); its per-IP colocation penalty must be off for
// fleets on one address; the connection manager's inbound limits are raised for loopback.
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { gossipsub, TopicValidatorResult, type GossipSub } from '@libp2p/gossipsub'
import { privateKeyFromRaw, publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { connect } from 'node:net'
import type { Connection, PeerId, PrivateKey, Stream, Topology } from '@libp2p/interface'
import { MAX_ENVELOPE_BYTES, PROTOCOL_RPC, PROTOCOL_RPC_MUX, TOPIC_JOBS, TOPIC_PROGRESS, decodeEnvelope, encodeEnvelope } from '../protocol/wire.js'
import { ED25519, peerIdOf } from '../protocol/keys.js'
import type { ShellTransport, Transport } from '../protocol/transport.js'
import { MuxClient, serveMux } from './rpc-mux.js'
import { startLiveness } from './liveness.js'
import { joinTcpWrites } from './tcp-writes.js'
import { noiseCrypto } from './noise-crypto.js'
import { libp2pLogger } from './quiet-logger.js'
import { openGossipStreamsConcurrently } from './gossip-streams.js'
import { listConnectionsInOnePass } from './connection-list.js'
import './yamux-window.js'
import './lp-decoder.js'

/** Upper bound on one rpc frame (a request or a reply). */
export const MAX_RPC_FRAME_BYTES = MAX_ENVELOPE_BYTES + 64 * 1024
/**
 * Connection liveness (net/liveness.ts: yamux ping frames, each connection in its own slice of the
 * interval, none in its first LIVENESS_GRACE_MS). The coordinator pings every connection it has
 * not heard from within the last LIVENESS_PING_MS (one that sent it any frame, its own ping or the
 * last pong included, needs no ping this interval) and drops one whose pong is later than
 * LIVENESS_TIMEOUT_MS (a frozen agent is seen within about 8 s, two intervals and the timeout
 * after its last frame; at 3 s, 250 agents reconnecting at once to a restarted coordinator on
 * a loaded host lost 47 healthy links in the first 45 s, each redialling and saying hello again). Agents ping theirs
 * every AGENT_LIVENESS_PING_MS with a longer timeout: a cut link to the coordinator is noticed
 * within about 15 s, and a loaded host (100 agents on 2 cores) does not drop healthy links.
 */
export const LIVENESS_PING_MS = 1_500
export const LIVENESS_TIMEOUT_MS = 5_000
export const AGENT_LIVENESS_PING_MS = 5_000
export const AGENT_LIVENESS_TIMEOUT_MS = 10_000
/** How often a wait for gossip to reach a peer checks again, in ms. */
export const GOSSIP_READY_POLL_MS = 20
/** A connection is first pinged this long after it opened (its handshakes, identify and gossip set-up load both ends), in ms. */
export const LIVENESS_GRACE_MS = 5_000
/** Slices of the ping interval: about 1/LIVENESS_SLICES of the connections is pinged at once. */
export const LIVENESS_SLICES = 10

/**
 * Per-connection budgets. Concurrent inbound rpc streams (an agent has a watch and a few results
 * in flight; more wait for its resend); the time a stream may take to deliver its request; the
 * largest request a peer that is not a member may send (a hello with its facts, then nothing
 * else); streams of any protocol, and the yamux receive window of each. A connection's buffers
 * thus stay below MAX_INBOUND_RPC_STREAMS × MAX_RPC_FRAME_BYTES + MAX_STREAMS_PER_CONNECTION ×
 * MAX_STREAM_WINDOW_BYTES (about 33 + 64 MiB, and the sender must send every byte of it).
 */
export const MAX_INBOUND_RPC_STREAMS = 16
export const RPC_REQUEST_DEADLINE_MS = 10_000
export const MAX_NON_MEMBER_FRAME_BYTES = 64 * 1024
export const MAX_STREAMS_PER_CONNECTION = 64
export const MAX_STREAM_WINDOW_BYTES = 1024 * 1024
/** Inbound mux rpc streams per connection (a peer needs one; a second covers a reconnect race). */
export const MAX_MUX_STREAMS_PER_CONNECTION = 2
/** Peers remembered as speaking only the one-stream-per-request rpc (an older version), forgotten when they disconnect. */
export const MAX_LEGACY_RPC_PEERS = 10_000
/** Addresses an agent remembers as refusing its last dial (probed by a bare TCP connect before the next: linkTransport). */
export const MAX_REFUSED_ADDRS = 1_024
/** Connections one peer id may hold to this node at once. */
export const MAX_CONNECTIONS_PER_PEER = 2
/**
 * Inbound connections in their handshake (noise, then yamux) at once; more are refused at once
 * (the dialler backs off and redials). Without a bound, a restarted coordinator that 1,000 agents
 * redial works on every handshake together: each slows the others, and those past libp2p's 10 s
 * upgrade timeout are lost work and retried. At about 4 ms of CPU per handshake, 128 take ~0.5 s.
 * The bound applies to loopback too.
 */
export const MAX_PENDING_HANDSHAKES = 128
/** Connections from one remote IP address at once; loopback is exempt (a local fleet shares 127.0.0.1). */
export const MAX_CONNECTIONS_PER_ADDRESS = 64
/** Largest progress message relayed (an envelope with its ticket is about 1 KiB). */
export const MAX_PROGRESS_BYTES = 16 * 1024
/** The membership exchange: each side sends its certificate (a signed envelope, a few hundred bytes). */
export const PROTOCOL_MEMBER = '/chorus/member/1.0.0'
export const MAX_MEMBER_FRAME_BYTES = 8 * 1024
export const MEMBER_EXCHANGE_TIMEOUT_MS = 5_000
/**
 * Gossipsub score of a peer that is not a member: below the publish and gossip thresholds, so
 * nothing (no flood-publish, no relay, no IHAVE, no IWANT answer) is sent to it, but above the
 * graylist, so the subscriptions it sent before it enrolled still count once it is a member.
 */
export const NON_MEMBER_SCORE = -1_000_000

export interface NetOptions {
  seed: Uint8Array
  listen: string[]
  /** Only gossip authored by this peer is accepted on the job topic (agents pin the coordinator). */
  trustedPublisher?: string
  /** Ping connections every LIVENESS_PING_MS and drop them after LIVENESS_TIMEOUT_MS silent (the coordinator); otherwise the agents' AGENT_ figures. */
  fastLiveness?: boolean
  /**
   * Whether a peer is a member now: only members are sent gossip, and only gossip relayed by a
   * member (and, on the progress topic, authored by the key that signed it) is accepted.
   */
  isMember?: (peerId: string) => boolean
  /** Peers refused outright by the connection gater (revoked nodes). */
  isDenied?: (peerId: string) => boolean
  /** A connection was closed by the liveness pings (its peer, why). */
  onLivenessDrop?: (peerId: string, why: string) => void
  /** Inbound handshakes at once (default MAX_PENDING_HANDSHAKES). */
  maxPendingHandshakes?: number
  /**
   * Run identify on every new connection (default true). The coordinator does not: it never dials
   * an agent (hellos carry the addresses), and gossipsub learns an agent from the agent's own
   * gossip stream, which the agent opens at once (gossipPeer: it knows its coordinator speaks
   * gossip; an older agent opens it once it has identified the coordinator). Per returning
   * agent that saves the coordinator an identify stream, the peer record's check and a peer-store
   * merge: 10.1–10.7 → 8.7–8.8 ms of its CPU in a 500-agent reconnect (README, Sizing).
   */
  identifyOnConnect?: boolean
  /**
   * Peers known to speak our gossip, that this node does not identify on connect (agents pass the
   * pinned coordinator): gossip is told at once, on the connection's open, that the peer speaks
   * it, as identify would have told it one round trip and a signed peer record later; gossip then
   * opens its stream, and the peer's gossip learns this node from it. Identify answers this node
   * gave and asks of every other peer are unchanged. Per connection to the coordinator it saves
   * both ends an identify stream (its negotiation, the signed record's check, peer-store writes).
   */
  gossipPeer?: (peerId: string) => boolean
}

export interface Net extends Transport {
  node: Libp2p<{ pubsub: GossipSub; identify: unknown }>
  addresses(): string[]
  /** Whether a TCP connection to this address (its /ip4|ip6/…/tcp/… part) was accepted at or after `since` (ms since the epoch): the peer's process listens. */
  tcpAcceptedSince(addr: string, since: number): boolean
  /** A peer's membership changed: its gossip score is computed again now, not at the next heartbeat. */
  refreshPeer(peerId: string): void
  /**
   * Resolves true once a publish on topic would reach the peer (gossip heard it subscribe and
   * holds its outbound stream to it; at once if so), false after timeoutMs.
   */
  whenGossipReaches(peerId: string, topic: string, timeoutMs: number): Promise<boolean>
  /** Closes every connection to a peer. */
  hangUp(peerId: string): Promise<void>
  /** Answers a peer's membership exchange: gets its certificate bytes, returns ours (or nothing, refusing it). */
  handleMember(handler: (theirs: Uint8Array, from: string) => Uint8Array | undefined): Promise<void>
  /** Sends our certificate to a connected peer and returns its certificate bytes. */
  exchangeMember(peerId: string, mine: Uint8Array): Promise<Uint8Array>
}

/**
 * The promise, or a rejection once ms have passed, whichever comes first. libp2p is given an
 * abort signal too, but the agent shell makes one attempt at a time, so a dial or a request that
 * never settled would hold it until MAX_ATTEMPT_MS instead of letting it redial. (Two reconnects
 * of 250 agents that took 48 and 56 s, against 14 s in another run, fit such waits; not confirmed.)
 */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
    p.then((v) => { clearTimeout(timer); resolve(v) }, (err: unknown) => { clearTimeout(timer); reject(err) })
  })
}

/** The IP address of a multiaddr such as /ip4/10.0.0.5/tcp/7700. */
export function ipOf(multiaddrText: string): string | undefined {
  return /^\/ip[46]\/([^/]+)/.exec(multiaddrText)?.[1]
}

export function isLoopbackIp(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.')
}

/** Whether a gossiped envelope is signed by the key of the peer that authored it (cheap: the signature itself is the core's to verify). */
function signedByAuthor(data: Uint8Array, author: string): boolean {
  try {
    const env = decodeEnvelope(data) as { signer?: unknown }
    return typeof env.signer === 'string' && env.signer.length === 43 && peerIdOf(env.signer) === author
  } catch {
    return false
  }
}

export function peerIdForPublicKey(publicKey: string): string {
  return peerIdFromPublicKey(publicKeyFromRaw(Buffer.from(publicKey, 'base64url'))).toString()
}

/**
 * The libp2p ed25519 key of a 32-byte seed, the same key generateKeyPairFromSeed makes (tested),
 * with its public key derived by node:crypto: generateKeyPairFromSeed derives it in JavaScript
 * (@noble/curves), about 45 ms of an agent's start-up spent building its tables.
 */
export function libp2pKeyFromSeed(seed: Uint8Array): PrivateKey {
  return privateKeyFromRaw(Buffer.concat([seed, Buffer.from(ED25519.identityFromSeed(seed).publicKey, 'base64url')]))
}

/**
 * Tells every topology of the node's gossip protocols that the connection's peer speaks them, as
 * the registrar does on identify (gossipsub's own connect to a peer it learnt by exchange does the
 * same): gossipsub adds the peer and queues its outbound stream. Each topology once.
 */
function announceGossipPeer(node: Libp2p<{ pubsub: GossipSub; identify: unknown }>, conn: Connection): void {
  const protocols = (node.services.pubsub as unknown as { protocols: string[] }).protocols
  const registrar = (node as unknown as { components: { registrar: { getTopologies(protocol: string): Topology[] } } }).components.registrar
  const topologies = new Set<Topology>()
  for (const p of protocols) for (const t of registrar.getTopologies(p)) topologies.add(t)
  for (const t of topologies) {
    try { void Promise.resolve(t.onConnect?.(conn.remotePeer, conn)).catch(() => {}) } catch { /* a topology's own failure: as the registrar, go on */ }
  }
}

/** Without isMember/isDenied (tests, tools) every peer counts as a member and none is denied: the runtimes always pass both. */
export async function createNet(options: NetOptions): Promise<Net> {
  const opts = { isMember: (_peer: string) => true, isDenied: (_peer: string) => false, ...options }
  const privateKey = libp2pKeyFromSeed(opts.seed)
  let self: Libp2p | undefined
  const overAddressBudget = (remote: string): boolean => {
    const ip = ipOf(remote)
    if (!ip || isLoopbackIp(ip)) return false
    return (self?.getConnections() ?? []).filter((c) => ipOf(c.remoteAddr.toString()) === ip).length >= MAX_CONNECTIONS_PER_ADDRESS
  }
  const logger = libp2pLogger()
  const tcpConnects = new Map<string, number>()
  const node = await createLibp2p({
    privateKey,
    ...(logger ? { logger } : {}),
    addresses: { listen: opts.listen },
    transports: [(components: Parameters<ReturnType<typeof tcp>>[0]) => watchTcpConnects(tcp()(components), tcpConnects)],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    // enableKeepAlive: off, since liveness is net/liveness.ts (below). yamux's own keepalive pinged
    // every connection from both ends at its open and every 30 s: 4 more frames per connection.
    streamMuxers: [yamux({ maxInboundStreams: MAX_STREAMS_PER_CONNECTION, enableKeepAlive: false, streamOptions: { maxStreamWindowSize: MAX_STREAM_WINDOW_BYTES } })],
    // Liveness is net/liveness.ts (below), not libp2p's connection monitor.
    connectionMonitor: { enabled: false },
    connectionGater: {
      denyInboundConnection: (maConn) => overAddressBudget(maConn.remoteAddr.toString()),
      denyInboundEncryptedConnection: (peer: PeerId) => opts.isDenied(peer.toString()) || (self?.getConnections(peer).length ?? 0) >= MAX_CONNECTIONS_PER_PEER,
      denyOutboundEncryptedConnection: (peer: PeerId) => opts.isDenied(peer.toString()),
      denyDialPeer: (peer: PeerId) => opts.isDenied(peer.toString()),
    },
    connectionManager: {
      maxConnections: 10_000,
      maxIncomingPendingConnections: opts.maxPendingHandshakes ?? MAX_PENDING_HANDSHAKES,
      // Per remote host and second. No allow list: libp2p's skips the pending bound above too.
      inboundConnectionThreshold: 10_000,
    },
    services: {
      // Run on connection open below (identifyOnConnect, gossipPeer).
      identify: identify({ runOnConnectionOpen: false }),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        floodPublish: true,
        emitSelf: false,
        scoreParams: { IPColocationFactorWeight: 0, appSpecificWeight: 1, appSpecificScore: (peer: string) => (opts.isMember(peer) ? 0 : NON_MEMBER_SCORE) },
        scoreThresholds: { gossipThreshold: -10, publishThreshold: -50, graylistThreshold: 10 * NON_MEMBER_SCORE, acceptPXThreshold: 10, opportunisticGraftThreshold: 20 },
      }),
    },
  })
  self = node
  listConnectionsInOnePass((node as unknown as { components: { connectionManager: unknown } }).components.connectionManager)
  const identifyService = node.services.identify as { identify(conn: Connection): Promise<unknown> }
  node.addEventListener('connection:open', (evt) => {
    const conn = evt.detail
    joinTcpWrites(conn)
    if (opts.gossipPeer?.(conn.remotePeer.toString())) announceGossipPeer(node, conn)
    else if (opts.identifyOnConnect ?? true) identifyService.identify(conn).catch(() => {})
  })
  const stopLiveness = startLiveness(node, opts.fastLiveness
    ? { intervalMs: LIVENESS_PING_MS, timeoutMs: LIVENESS_TIMEOUT_MS, slices: LIVENESS_SLICES, graceMs: LIVENESS_GRACE_MS, skipHeard: true }
    : { intervalMs: AGENT_LIVENESS_PING_MS, timeoutMs: AGENT_LIVENESS_TIMEOUT_MS, slices: LIVENESS_SLICES, graceMs: LIVENESS_GRACE_MS },
    { dead: (conn, why) => opts.onLivenessDrop?.(conn.remotePeer.toString(), why) })
  const pubsub = node.services.pubsub
  openGossipStreamsConcurrently(pubsub)
  const trusted = opts.trustedPublisher
  pubsub.topicValidators.set(TOPIC_JOBS, (peer: PeerId, msg) => {
    // Signed gossip keeps the author in msg.from across relays: drop anything not authored
    // by the pinned coordinator, or relayed by a non-member, before it is relayed further.
    if (msg.type !== 'signed' || !opts.isMember(peer.toString())) return TopicValidatorResult.Reject
    if (trusted && msg.from.toString() !== trusted) return TopicValidatorResult.Reject
    return TopicValidatorResult.Accept
  })
  pubsub.topicValidators.set(TOPIC_PROGRESS, (peer: PeerId, msg) => (msg.type === 'signed' && msg.data.byteLength <= MAX_PROGRESS_BYTES && opts.isMember(peer.toString()) && signedByAuthor(msg.data, msg.from.toString()) ? TopicValidatorResult.Accept : TopicValidatorResult.Reject))
  // A publish reaches a peer once gossip has heard it subscribe and has its own outbound stream
  // to it (both are set up asynchronously after a connection opens; without the stream a publish
  // skips the peer). Checked every GOSSIP_READY_POLL_MS until then.
  const gossip = pubsub as unknown as { topics: Map<string, Set<string>>; streamsOutbound: Map<string, unknown> }
  const gossipReaches = (peerId: string, topic: string) => gossip.topics.get(topic)?.has(peerId) === true && gossip.streamsOutbound.has(peerId)
  // One poll for every waiting hello, not a timer each: 1,000 agents reconnecting at once were
  // 1,000 intervals firing every GOSSIP_READY_POLL_MS (50,000 timer callbacks a second).
  const gossipWaits = new Set<{ peerId: string; topic: string; deadline: number; resolve: (ok: boolean) => void }>()
  let gossipPoll: ReturnType<typeof setInterval> | undefined
  const pollGossipWaits = () => {
    const now = Date.now()
    for (const w of gossipWaits) {
      const ok = gossipReaches(w.peerId, w.topic)
      if (!ok && now < w.deadline) continue
      gossipWaits.delete(w)
      w.resolve(ok)
    }
    if (gossipWaits.size === 0 && gossipPoll) { clearInterval(gossipPoll); gossipPoll = undefined }
  }
  const whenGossipReaches = (peerId: string, topic: string, timeoutMs: number): Promise<boolean> => {
    if (gossipReaches(peerId, topic)) return Promise.resolve(true)
    return new Promise((resolve) => {
      gossipWaits.add({ peerId, topic, deadline: Date.now() + timeoutMs, resolve })
      gossipPoll ??= setInterval(pollGossipWaits, GOSSIP_READY_POLL_MS)
    })
  }
  const gossipHandlers = new Map<string, ((data: Uint8Array, from: string) => void)[]>()
  pubsub.addEventListener('message', (evt) => {
    const msg = evt.detail
    const from = msg.type === 'signed' ? msg.from.toString() : ''
    for (const h of gossipHandlers.get(msg.topic) ?? []) h(msg.data, from)
  })

  /** One request and one reply per stream: the request must arrive within deadlineMs and fit maxBytes(peer). */
  const serve = (protocol: string, maxBytes: (peer: string) => number, deadlineMs: number, maxStreams: number, handler: (data: Uint8Array, from: string) => Promise<Uint8Array>) =>
    node.handle(protocol, async (stream: Stream, connection) => {
      const from = connection.remotePeer.toString()
      const lp = lpStream(stream, { maxDataLength: maxBytes(from) })
      try {
        const req = await lp.read({ signal: AbortSignal.timeout(deadlineMs) })
        await lp.write(await handler(req.subarray(), from))
        await stream.close()
      } catch (err) {
        stream.abort(err as Error)
      }
    }, { maxInboundStreams: maxStreams })
  // One mux stream per peer we send requests to, opened by the first request (PROTOCOL_RPC_MUX);
  // a peer that does not speak it gets one stream per request, as before.
  // A client whose stream closed is never reused: its entry goes on the stream's close, on the
  // peer's disconnect, and when a request finds its stream no longer open. (Seen once in 250
  // agents across a coordinator restart, before the last two: one agent's hellos went to a dead
  // stream and timed out for minutes. Which event was missed is not known.)
  const muxClients = new Map<string, { opening: Promise<MuxClient>; client?: MuxClient }>()
  const legacyPeers = new Set<string>()
  node.addEventListener('peer:disconnect', (evt) => {
    const peer = evt.detail.toString()
    legacyPeers.delete(peer)
    muxClients.get(peer)?.client?.close()
    muxClients.delete(peer)
  })
  // The abort signal is made only when a stream is opened: AbortSignal.timeout arms a timer, and
  // one that expires builds a DOMException with its stack. Made for every request, the signals of
  // requests long answered were about half of the 7 % an idle pack of 50 agents spent building
  // DOMExceptions (profile, 3.9 % after).
  const muxFor = (peer: string, timeoutMs: number): Promise<MuxClient> => {
    const have = muxClients.get(peer)
    if (have && (!have.client || have.client.usable)) return have.opening
    const entry: { opening: Promise<MuxClient>; client?: MuxClient } = {
      opening: node.dialProtocol(peerIdFromString(peer), PROTOCOL_RPC_MUX, { signal: AbortSignal.timeout(timeoutMs) }).then((stream) => {
        const client = new MuxClient(stream, MAX_RPC_FRAME_BYTES)
        entry.client = client
        stream.addEventListener('close', () => { if (muxClients.get(peer) === entry) muxClients.delete(peer) })
        if (!client.usable && muxClients.get(peer) === entry) muxClients.delete(peer)
        return client
      }),
    }
    muxClients.set(peer, entry)
    entry.opening.catch(() => { if (muxClients.get(peer) === entry) muxClients.delete(peer) })
    return entry.opening
  }
  const request = (target: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> =>
    withDeadline(requestOnce(target, data, timeoutMs), timeoutMs, 'rpc')
  const requestOnce = async (target: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> => {
    if (target.startsWith('/') || legacyPeers.has(target)) return exchange(PROTOCOL_RPC, target, data, MAX_RPC_FRAME_BYTES, timeoutMs)
    const started = Date.now()
    let client: MuxClient
    try {
      client = await muxFor(target, timeoutMs)
    } catch (err) {
      if ((err as Error).name !== 'UnsupportedProtocolError') throw err
      if (legacyPeers.size >= MAX_LEGACY_RPC_PEERS) legacyPeers.clear()
      legacyPeers.add(target)
      return exchange(PROTOCOL_RPC, target, data, MAX_RPC_FRAME_BYTES, timeoutMs - (Date.now() - started))
    }
    return client.request(data, Math.max(1, timeoutMs - (Date.now() - started)))
  }
  const exchange = async (protocol: string, target: string, data: Uint8Array, maxBytes: number, timeoutMs: number): Promise<Uint8Array> => {
    const signal = AbortSignal.timeout(timeoutMs)
    const dialTarget = target.startsWith('/') ? multiaddr(target) : peerIdFromString(target)
    const stream = await node.dialProtocol(dialTarget, protocol, { signal })
    try {
      const lp = lpStream(stream, { maxDataLength: maxBytes })
      await lp.write(data, { signal })
      const res = await lp.read({ signal })
      await stream.close()
      return res.subarray()
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

  return {
    node: node as Net['node'],
    peerId: node.peerId.toString(),
    // The score cache lives for a heartbeat (1 s): a peer that just enrolled would miss a publish in that second.
    refreshPeer: (peerId) => { (pubsub as unknown as { score: { scoreCache: Map<string, unknown> } }).score.scoreCache.delete(peerId) },
    whenGossipReaches,
    hangUp: async (peerId) => { await node.hangUp(peerIdFromString(peerId)).catch(() => {}) },
    handleMember: (handler) => serve(PROTOCOL_MEMBER, () => MAX_MEMBER_FRAME_BYTES, MEMBER_EXCHANGE_TIMEOUT_MS, 2, async (theirs, from) => handler(theirs, from) ?? new Uint8Array(0)),
    exchangeMember: (peerId, mine) => exchange(PROTOCOL_MEMBER, peerId, mine, MAX_MEMBER_FRAME_BYTES, MEMBER_EXCHANGE_TIMEOUT_MS),
    addresses: () => node.getMultiaddrs().map((m) => m.toString()),
    tcpAcceptedSince: (addr, since) => (tcpConnects.get(tcpPart(addr)) ?? -Infinity) >= since,
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
      const maxBytes = (peer: string) => (opts.isMember(peer) ? MAX_RPC_FRAME_BYTES : MAX_NON_MEMBER_FRAME_BYTES)
      await serve(PROTOCOL_RPC, maxBytes, RPC_REQUEST_DEADLINE_MS, MAX_INBOUND_RPC_STREAMS, handler)
      await node.handle(PROTOCOL_RPC_MUX, (stream: Stream, connection) => {
        const from = connection.remotePeer.toString()
        serveMux(stream, from, handler, { maxPayload: () => maxBytes(from), maxConcurrent: MAX_INBOUND_RPC_STREAMS, partialDeadlineMs: RPC_REQUEST_DEADLINE_MS })
      }, { maxInboundStreams: MAX_MUX_STREAMS_PER_CONNECTION })
    },
    request,
    async stop() {
      stopLiveness()
      if (gossipPoll) { clearInterval(gossipPoll); gossipPoll = undefined }
      for (const w of gossipWaits) w.resolve(false)
      gossipWaits.clear()
      await node.stop()
    },
  }
}

/** Addresses remembered with the time of their last outbound TCP connect (a node dials its coordinator and at most MAX_KNOWN_PEERS agents; the map is cleared when full). */
export const MAX_TCP_CONNECTS_REMEMBERED = 1_024

/** A multiaddr's leading /PROTO/HOST/tcp/PORT (/ip4|ip6|dns…/…/tcp/…): what a TCP connect reaches. */
const TCP_PART = /^\/[^/]+\/([^/]+)\/tcp\/(\d+)/

/** The /ip4|ip6|dns…/…/tcp/PORT part of a multiaddr (what a TCP connect reached). */
function tcpPart(addr: string): string {
  return TCP_PART.exec(addr)?.[0] ?? addr
}

/**
 * The TCP transport, noting in `seen` when each connect to an address succeeded (before the
 * handshakes): a dial that then fails reached a process that listens (linkTransport: peerBusy).
 */
function watchTcpConnects<T>(transport: T, seen: Map<string, number>): T {
  const t = transport as unknown as { _connect(ma: { toString(): string }, options: unknown): Promise<unknown> }
  const connect = t._connect.bind(t)
  t._connect = async (ma, options) => {
    const socket = await connect(ma, options)
    if (seen.size >= MAX_TCP_CONNECTS_REMEMBERED) seen.clear()
    seen.set(tcpPart(ma.toString()), Date.now())
    return socket
  }
  return transport
}

function isTimeout(err: Error): boolean {
  return /timed out|TimeoutError|AbortError|aborted/.test(`${err.name} ${err.message}`)
}

/**
 * Whether a failed dial reached a process that listens but did not take the connection: its
 * TCP accept was followed by a reset or an end in the handshake, which is what a coordinator past
 * MAX_PENDING_HANDSHAKES does. Refused, unreachable and timed-out dials are not by this test (a
 * timeout after a TCP connect is, in linkTransport). The agent shell waits longer before it turns
 * to its peers while its coordinator is busy (protocol/timing.ts PEER_ROUND_BUSY_DELAY_MS).
 */
export function dialReachedBusyPeer(err: Error): boolean {
  const text = dialErrorText(err)
  return /ECONNRESET|EPIPE|Unexpected EOF|stream ended|EncryptionFailed/.test(text) && !/ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|timed out|TimeoutError|AbortError/.test(text)
}

/** Whether a failed dial was refused at the TCP connect: nothing listens on the port (a coordinator restarting). */
export function dialRefused(err: Error): boolean {
  return /ECONNREFUSED/.test(dialErrorText(err))
}

/** A failed dial's name, message and cause's message: libp2p wraps the socket's error in its own. */
function dialErrorText(err: Error): string {
  return `${err.name} ${err.message} ${(err.cause as Error | undefined)?.message ?? ''}`
}

/** The host and port of an address's /ip4|ip6|dns…/…/tcp/PORT part (TCP_PART). */
export function tcpEndpointOf(addr: string): { host: string; port: number } | undefined {
  const m = TCP_PART.exec(addr)
  return m ? { host: m[1]!, port: Number(m[2]) } : undefined
}

/**
 * Resolves false if a bare TCP connect to the address is refused, true if it goes through (the
 * socket is closed at once) or does not answer within timeoutMs (the dial then decides). A
 * refusal costs ~0.08 ms of CPU, where a libp2p dial that is refused costs ~1.15 ms (its dial
 * queue, abort signals, peer-store reads and a failure record).
 */
export function tcpAnswers(addr: string, timeoutMs: number): Promise<boolean> {
  const at = tcpEndpointOf(addr)
  if (!at) return Promise.resolve(true)
  return new Promise((resolve) => {
    const socket = connect({ host: at.host, port: at.port })
    const end = (ok: boolean) => { clearTimeout(timer); socket.destroy(); resolve(ok) }
    const timer = setTimeout(() => end(true), timeoutMs)
    socket.once('connect', () => end(true))
    socket.once('error', (err: NodeJS.ErrnoException) => end(err.code !== 'ECONNREFUSED'))
  })
}

/**
 * The agent shell's transport over libp2p: adapts the async dial and request to the callbacks
 * of ShellTransport (the same contract sim/transport.ts implements over the simulated network).
 *
 * An address whose last dial was refused (nothing listened: a coordinator restarting, with the
 * fleet redialling it) is probed with a bare TCP connect before the next dial, and dialled only
 * once the port answers (README, Sizing: what it saves while a coordinator restarts).
 */
export function linkTransport(net: Net): ShellTransport {
  const refused = new Set<string>()
  return {
    peerId: net.peerId,
    addresses: () => net.addresses(),
    connectedPeers: () => net.node.getPeers().map((p) => p.toString()),
    dial(peerId, addrs, timeoutMs, done) {
      void (async () => {
        const started = Date.now()
        let last: Error | undefined = new Error(`no address to dial ${peerId}`)
        for (const a of addrs) {
          if (refused.has(a) && !(await tcpAnswers(a, timeoutMs))) { last = new Error(`dial ${a}: connect ECONNREFUSED (probed)`); continue }
          try {
            await withDeadline(net.node.dial(multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${peerId}`), { signal: AbortSignal.timeout(timeoutMs) }), timeoutMs, 'dial')
            last = undefined
            refused.delete(a)
            break
          } catch (err) {
            last = err as Error // try the next address
            if (dialRefused(last)) { if (refused.size < MAX_REFUSED_ADDRS) refused.add(a) } else refused.delete(a)
          }
        }
        // Busy, not away: the handshake was reset, or the TCP connect went through and the
        // handshakes then timed out (a peer too loaded to finish them in time). A peer that
        // completes the handshake and then refuses the connection (its gater: revoked, cut) is not.
        if (last && (dialReachedBusyPeer(last) || (isTimeout(last) && addrs.some((a) => net.tcpAcceptedSince(a, started))))) (last as Error & { peerBusy?: boolean }).peerBusy = true
        done(last)
      })()
    },
    call(target, envelope, timeoutMs, onReply, onFail) {
      net.request(target, encodeEnvelope(envelope), timeoutMs).then((bytes) => {
        let reply: unknown
        try { reply = decodeEnvelope(bytes) } catch (err) { onFail(err as Error); return }
        onReply(reply)
      }, (err: unknown) => onFail(err instanceof Error ? err : new Error(String(err))))
    },
    onClosed(handler) {
      net.node.addEventListener('peer:disconnect', (evt) => handler(evt.detail.toString()))
    },
  }
}
