// Peer ids and transport-authenticated requests: the coordinator core derives a node's libp2p
// peer id from its key (as the noise handshake proves it) and, for syncs arriving on that
// peer's connection, does not verify the signature a second time. Everything else still is.
import { describe, expect, it } from 'vitest'
import { peerIdForPublicKey } from '../net/libp2p.js'
import { generateIdentity, peerIdOf } from '../protocol/keys.js'
import { coordinatorStep, emptyCoordinatorState, DEFAULT_COORDINATOR_TIMING, type CoordinatorEffect, type CoordinatorState } from '../coordinator/core.js'
import { PROTOCOL_VERSION, open, seal, type SignedEnvelope } from '../protocol/wire.js'
import { instanceIdFor, runIdFor } from '../protocol/ids.js'
import { enrolHello } from './helpers/members.js'

const T0 = 1_700_000_000_000
const coordinator = generateIdentity()
const cfg = { identity: coordinator, ...DEFAULT_COORDINATOR_TIMING }

describe('peerIdOf', () => {
  it('is the peer id libp2p derives from the same ed25519 key', () => {
    for (let i = 0; i < 25; i++) {
      const id = generateIdentity()
      expect(peerIdOf(id.publicKey)).toBe(peerIdForPublicKey(id.publicKey))
    }
  })
})

describe('requests on a transport-authenticated connection', () => {
  const agent = generateIdentity()
  const realPeer = peerIdOf(agent.publicKey)

  function registered(): CoordinatorState {
    const state = emptyCoordinatorState()
    enrolHello(state, cfg, agent, 'n1', T0)
    return state
  }
  const reply = (effects: CoordinatorEffect[]) => {
    const r = effects.find((e): e is Extract<CoordinatorEffect, { type: 'reply_rpc' }> => e.type === 'reply_rpc')!
    const o = open(r.envelope, [coordinator.publicKey])
    if (!o.ok || o.body.type !== 'reply') throw new Error('no reply')
    return o.body
  }
  /** The same envelope with its signature replaced by another valid-looking one. */
  const badSig = (env: SignedEnvelope): SignedEnvelope => ({ ...env, sig: (env.sig[0] === 'A' ? 'B' : 'A') + env.sig.slice(1) })
  const sync = () => seal(agent, { type: 'sync', v: PROTOCOL_VERSION, nodeId: 'n1', sentAt: T0, known: [] })

  it('accepts a sync on the node\'s own authenticated peer without verifying its signature again', () => {
    const state = registered()
    const r = reply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 's', envelope: badSig(sync()), peerId: realPeer }, T0 + 1))
    expect(r.ok).toBe(true)
  })

  it('verifies the signature of a sync that arrives on any other connection', () => {
    const state = registered()
    const r = reply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 's', envelope: badSig(sync()), peerId: peerIdOf(generateIdentity().publicKey) }, T0 + 1))
    expect(r).toMatchObject({ ok: false, error: expect.stringMatching(/bad signature/) })
    expect(reply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 's2', envelope: sync(), peerId: 'some-peer' }, T0 + 1)).ok).toBe(true)
  })

  it('refuses a sync on the authenticated peer that is signed by, or speaks for, another node', () => {
    const state = registered()
    const other = generateIdentity()
    const foreign = seal(other, { type: 'sync', v: PROTOCOL_VERSION, nodeId: 'n1', sentAt: T0, known: [] })
    expect(reply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 's', envelope: foreign, peerId: realPeer }, T0 + 1)).ok).toBe(false)
  })

  it('always verifies results, which are stored as evidence', () => {
    const state = registered()
    const instanceId = instanceIdFor('job-x', T0)
    const forged = badSig(seal(agent, {
      type: 'result', v: PROTOCOL_VERSION, runId: runIdFor(instanceId, 'n1'), jobId: 'job-x', instanceId, nodeId: 'n1', occurrenceAt: T0, group: 0, batch: 0,
      status: 'success', startedAt: T0, finishedAt: T0, steps: [],
    }))
    expect(reply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 'r', envelope: forged, peerId: realPeer }, T0 + 1))).toMatchObject({ ok: false, error: expect.stringMatching(/bad signature/) })
  })

  it('does not take a hello\'s claimed peer id on trust: a node registered with a peer id its key does not give is always verified', () => {
    const state = emptyCoordinatorState()
    const hello = seal(agent, { type: 'hello', v: PROTOCOL_VERSION, nodeId: 'n1', peerId: 'not-derived-from-the-key', facts: {}, agentVersion: 't', sentAt: T0 })
    coordinatorStep(state, cfg, { type: 'rpc', requestId: 'h', envelope: hello, peerId: 'not-derived-from-the-key' }, T0)
    const r = reply(coordinatorStep(state, cfg, { type: 'rpc', requestId: 's', envelope: badSig(sync()), peerId: 'not-derived-from-the-key' }, T0 + 1))
    expect(r.ok).toBe(false)
  })
})
