// The libp2p key an agent or coordinator derives from its seed at start-up (node:crypto) is the
// key @libp2p/crypto derives (JavaScript): same private and public bytes, same peer id.
import { describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { libp2pKeyFromSeed } from '../net/libp2p.js'
import { identityFromSeed, peerIdOf } from '../protocol/keys.js'

describe('libp2pKeyFromSeed', () => {
  it('makes the key generateKeyPairFromSeed makes, for every seed tried', async () => {
    for (let i = 0; i < 32; i++) {
      const seed = i === 0 ? new Uint8Array(32) : Uint8Array.from(randomBytes(32))
      const ours = libp2pKeyFromSeed(seed)
      const theirs = await generateKeyPairFromSeed('Ed25519', seed)
      expect(Buffer.from(ours.raw).equals(Buffer.from(theirs.raw))).toBe(true)
      expect(Buffer.from(ours.publicKey.raw).equals(Buffer.from(theirs.publicKey.raw))).toBe(true)
      expect(peerIdFromPrivateKey(ours).toString()).toBe(peerIdFromPrivateKey(theirs).toString())
      expect(peerIdFromPrivateKey(ours).toString()).toBe(peerIdOf(identityFromSeed(seed).publicKey))
      // It signs as the other one does (ed25519 is deterministic) and its signatures verify.
      const msg = Uint8Array.from(randomBytes(64))
      const sig = await ours.sign(msg)
      expect(Buffer.from(sig).equals(Buffer.from(await theirs.sign(msg)))).toBe(true)
      expect(await theirs.publicKey.verify(msg, sig)).toBe(true)
    }
  })
})
