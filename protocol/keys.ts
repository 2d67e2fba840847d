// ed25519 identities. One 32-byte seed per coordinator and per agent gives both the key
// that signs Chorus messages and the libp2p peer identity, so a gossip message's author
// (msg.from) and its Chorus signer can be checked against the same pinned key.
import * as nodeCrypto from 'node:crypto'
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign, timingSafeEqual, verify, type KeyObject } from 'node:crypto'

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
export const PUBLIC_KEY_BYTES = 32
export const SIGNATURE_BYTES = 64

export interface Identity {
  /** 32-byte private seed; never leaves the data directory. */
  seed: Uint8Array
  /** Public key, base64url of the raw 32 bytes: the form operators pass on the command line. */
  publicKey: string
  /** The ed25519 signing key (absent under the simulator's fast provider). */
  privateKeyObject?: KeyObject
}

/**
 * How identities are made and messages signed and verified. Everything real uses ED25519. The
 * simulator may switch to SIM_FAST_CRYPTO (`useCryptoProvider`) for large fleets: the same
 * semantics (a signature verifies only under its signer's key and for its exact bytes, so forged
 * and tampered messages still fail), at a fraction of the cost.
 */
export interface CryptoProvider {
  readonly name: string
  identityFromSeed(seed: Uint8Array): Identity
  sign(identity: Identity, bytes: Uint8Array): string
  verify(publicKey: string, bytes: Uint8Array, signature: string): boolean
}

export const ED25519: CryptoProvider = {
  name: 'ed25519',
  identityFromSeed(seed) {
    const privateKeyObject = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' })
    const spki = createPublicKey(privateKeyObject).export({ format: 'der', type: 'spki' })
    const publicKey = Buffer.from(spki.subarray(spki.length - PUBLIC_KEY_BYTES)).toString('base64url')
    return { seed, publicKey, privateKeyObject }
  },
  sign(identity, bytes) {
    const key = identity.privateKeyObject ?? createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, identity.seed]), format: 'der', type: 'pkcs8' })
    return sign(null, bytes, key).toString('base64url')
  },
  verify(publicKey, bytes, signature) {
    try {
      const sig = Buffer.from(signature, 'base64url')
      if (sig.length !== SIGNATURE_BYTES) return false
      return verify(null, bytes, publicKeyObject(publicKey), sig)
    } catch {
      return false
    }
  },
}

/** Seeds of the keys the fast provider made, by public key (what "only the signer can sign" rests on). Bounded. */
const fastSeeds = new Map<string, Uint8Array>()
const FAST_SEEDS_MAX = 1_000_000

/**
 * The simulator's provider: a key is a hash of its seed, a signature SHA-512(seed ‖ bytes) (64
 * bytes, the size of an ed25519 signature). Only the holder of the seed can make a signature
 * that verifies under its key, and any change to the bytes breaks it; it is not a public-key
 * scheme (the verifier looks the seed up), which is all a simulation in one process needs.
 */
export const SIM_FAST_CRYPTO: CryptoProvider = {
  name: 'sim-fast',
  identityFromSeed(seed) {
    const publicKey = createHash('sha256').update('chorus-sim-key').update(seed).digest().toString('base64url')
    if (fastSeeds.size >= FAST_SEEDS_MAX) fastSeeds.clear()
    fastSeeds.set(publicKey, Uint8Array.from(seed))
    return { seed, publicKey }
  },
  sign(identity, bytes) {
    return fastDigest(identity.seed, bytes).toString('base64url')
  },
  verify(publicKey, bytes, signature) {
    const seed = fastSeeds.get(publicKey)
    if (!seed) return false
    const expected = fastDigest(seed, bytes)
    const given = Buffer.from(signature, 'base64url')
    return given.length === expected.length && timingSafeEqual(given, expected)
  },
}

/**
 * SHA-512(seed ‖ bytes). Node's one-shot crypto.hash (Node ≥ 20.12) costs about a third of a
 * createHash object per call on the simulator's small messages; the digest is the same bytes.
 */
const oneShotHash = (nodeCrypto as { hash?: (algorithm: string, data: Uint8Array, encoding: 'buffer') => Buffer }).hash
function fastDigest(seed: Uint8Array, bytes: Uint8Array): Buffer {
  if (oneShotHash) return oneShotHash('sha512', Buffer.concat([seed, bytes]), 'buffer')
  return createHash('sha512').update(seed).update(bytes).digest()
}

let provider: CryptoProvider = ED25519

/** Switches the process's provider (the simulator only); returns the previous one. */
export function useCryptoProvider(p: CryptoProvider): CryptoProvider {
  const previous = provider
  provider = p
  return previous
}

export function identityFromSeed(seed: Uint8Array): Identity {
  if (seed.length !== 32) throw new Error(`an ed25519 seed is 32 bytes, got ${seed.length}`)
  return provider.identityFromSeed(seed)
}

export function generateIdentity(): Identity {
  return identityFromSeed(randomBytes(32))
}

export function decodePublicKey(text: string): Uint8Array {
  const raw = Buffer.from(text.trim(), 'base64url')
  if (raw.length !== PUBLIC_KEY_BYTES || raw.toString('base64url') !== text.trim()) {
    throw new Error(`a public key is ${PUBLIC_KEY_BYTES} bytes in base64url (43 characters, as printed by "chorus keys"); got "${text}"`)
  }
  return raw
}

const verifyKeys = new Map<string, KeyObject>()
const VERIFY_KEY_CACHE_MAX = 100_000

function publicKeyObject(publicKey: string): KeyObject {
  let key = verifyKeys.get(publicKey)
  if (!key) {
    // Checked as 32 bytes of canonical base64url first; JWK imports a raw key ~13× faster than DER (OpenSSL 3).
    decodePublicKey(publicKey)
    key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: publicKey.trim() }, format: 'jwk' })
    if (verifyKeys.size >= VERIFY_KEY_CACHE_MAX) verifyKeys.clear()
    verifyKeys.set(publicKey, key)
  }
  return key
}

const BASE58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'

function base58btc(bytes: Uint8Array): string {
  const digits: number[] = [0]
  for (const byte of bytes) {
    let carry = byte
    for (let i = 0; i < digits.length; i++) {
      carry += digits[i]! << 8
      digits[i] = carry % 58
      carry = (carry / 58) | 0
    }
    while (carry > 0) { digits.push(carry % 58); carry = (carry / 58) | 0 }
  }
  let out = ''
  for (let i = 0; i < bytes.length && bytes[i] === 0; i++) out += '1'
  for (let i = digits.length - 1; i >= 0; i--) out += BASE58[digits[i]!]
  return out
}

const peerIds = new Map<string, string>()
/**
 * The libp2p peer id of an ed25519 public key (the one its noise handshake proves): base58btc
 * of the identity multihash of the protobuf PublicKey { Type: Ed25519, Data: key }. Pure, so
 * the coordinator core can tell which node a transport-authenticated connection belongs to.
 */
export function peerIdOf(publicKey: string): string {
  let id = peerIds.get(publicKey)
  if (id === undefined) {
    const key = decodePublicKey(publicKey)
    id = base58btc(Uint8Array.from([0x00, 0x24, 0x08, 0x01, 0x12, 0x20, ...key]))
    if (peerIds.size >= VERIFY_KEY_CACHE_MAX) peerIds.clear()
    peerIds.set(publicKey, id)
  }
  return id
}

/** ed25519 signatures are deterministic: the same key and bytes always give the same signature. */
export function signBytes(identity: Identity, bytes: Uint8Array): string {
  return provider.sign(identity, bytes)
}

export function verifyBytes(publicKey: string, bytes: Uint8Array, signature: string): boolean {
  return provider.verify(publicKey, bytes, signature)
}
