// net/noise-crypto.ts keeps X25519 key objects instead of importing keys for every
// Diffie-Hellman: its shared secrets must be the library's, byte for byte, for generated and
// seeded keys, for peers' keys given as one array or as a list of chunks, and its cache of
// peers' keys stays within MAX_CACHED_PUBLIC_KEYS (checked by agreeing past it).
import { describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { Uint8ArrayList } from 'uint8arraylist'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { MAX_CACHED_PUBLIC_KEYS, noiseCrypto } from '../net/noise-crypto.js'

const hex = (b: Uint8Array | Uint8ArrayList) => Buffer.from(b instanceof Uint8Array ? b : b.subarray()).toString('hex')

describe('noise X25519 with kept key objects', () => {
  it('agrees with the library on every pair, however the peer key is passed', () => {
    const seeded = noiseCrypto.generateX25519KeyPairFromSeed(randomBytes(32))
    for (let i = 0; i < 20; i++) {
      const a = noiseCrypto.generateX25519KeyPair()
      const b = defaultCrypto.generateX25519KeyPair()
      const ours = hex(noiseCrypto.generateX25519SharedKey(a.privateKey, b.publicKey))
      expect(ours).toBe(hex(defaultCrypto.generateX25519SharedKey(a.privateKey, b.publicKey)))
      expect(ours).toBe(hex(defaultCrypto.generateX25519SharedKey(b.privateKey, a.publicKey)))
      const chunks = new Uint8ArrayList(b.publicKey.subarray(0, 7), b.publicKey.subarray(7))
      expect(hex(noiseCrypto.generateX25519SharedKey(a.privateKey, chunks as never))).toBe(ours)
      // The static key (the same array every handshake) with a new peer each time.
      expect(hex(noiseCrypto.generateX25519SharedKey(seeded.privateKey, b.publicKey))).toBe(hex(defaultCrypto.generateX25519SharedKey(b.privateKey, seeded.publicKey)))
    }
  })

  it("answers a hostile peer's key as the library does: a low-order point or a short key is an error for the handshake", () => {
    const mine = noiseCrypto.generateX25519KeyPair()
    const outcome = (c: typeof defaultCrypto, key: Uint8Array) => { try { return hex(c.generateX25519SharedKey(mine.privateKey, key)) } catch { return 'refused' } }
    expect(outcome(noiseCrypto, new Uint8Array(32))).toBe('refused')
    expect(outcome(noiseCrypto, new Uint8Array(31).fill(9))).toBe('refused')
    // Any other length takes the library's own path: whatever it does, ours does.
    for (const bad of [new Uint8Array(32), new Uint8Array(31).fill(9), new Uint8Array(33).fill(9), new Uint8Array(0)]) {
      expect(outcome(noiseCrypto, bad), `${bad.length} bytes`).toBe(outcome(defaultCrypto, bad))
    }
    // A good peer right after still agrees.
    const p = defaultCrypto.generateX25519KeyPair()
    expect(hex(noiseCrypto.generateX25519SharedKey(mine.privateKey, p.publicKey))).toBe(hex(defaultCrypto.generateX25519SharedKey(p.privateKey, mine.publicKey)))
  })

  it('still agrees after more peers than it keeps', () => {
    const mine = noiseCrypto.generateX25519KeyPair()
    const peers = Array.from({ length: MAX_CACHED_PUBLIC_KEYS + 10 }, () => defaultCrypto.generateX25519KeyPair())
    for (const p of peers) noiseCrypto.generateX25519SharedKey(mine.privateKey, p.publicKey)
    for (const p of [peers[0]!, peers.at(-1)!]) {
      expect(hex(noiseCrypto.generateX25519SharedKey(mine.privateKey, p.publicKey))).toBe(hex(defaultCrypto.generateX25519SharedKey(p.privateKey, mine.publicKey)))
    }
  })
})
