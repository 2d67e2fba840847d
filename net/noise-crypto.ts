// X25519 for noise without re-importing keys. @chainsafe/libp2p-noise 17 hands every
// Diffie-Hellman raw key bytes, and its Node crypto imports both keys again (createPrivateKey,
// createPublicKey from DER) for each of a handshake's three DH operations; OpenSSL 3's key
// decoders make that the largest cost of a handshake: 19 % of a coordinator's CPU while 500
// agents reconnected at once (README, Sizing). Here the key objects are kept:
// - private keys by the identity of their byte array (the static key's array is the same in every
//   handshake; an ephemeral key's array is the one generateX25519KeyPair returned, with its
//   KeyObject), in a WeakMap: nothing outlives the array noise holds;
// - peers' public keys by value, at most MAX_CACHED_PUBLIC_KEYS (a handshake uses each twice).
// Keys cross the boundary as JWK, not DER: OpenSSL 3 imports a raw X25519 key from JWK in ~8 µs
// and from SPKI DER in ~120 µs, and exports a new pair as JWK in a third of the time (per
// handshake and side: an ephemeral pair, the peer's ephemeral and static keys).
// Everything else (ChaCha20-Poly1305, SHA-256, HKDF) is the library's default.
import crypto, { type KeyObject } from 'node:crypto'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'

const PKCS8_PREFIX = Buffer.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20])
/** Peers' X25519 public keys kept as key objects (oldest dropped first). */
export const MAX_CACHED_PUBLIC_KEYS = 1_024

const privateKeys = new WeakMap<Uint8Array, KeyObject>()
const publicKeys = new Map<string, KeyObject>()

function privateKeyObject(bytes: Uint8Array): KeyObject {
  let key = privateKeys.get(bytes)
  if (!key) {
    key = crypto.createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, bytes]), format: 'der', type: 'pkcs8' })
    privateKeys.set(bytes, key)
  }
  return key
}

function publicKeyObject(bytes: Uint8Array): KeyObject {
  const id = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')
  let key = publicKeys.get(id)
  if (!key) {
    key = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url') }, format: 'jwk' })
    if (publicKeys.size >= MAX_CACHED_PUBLIC_KEYS) publicKeys.delete(publicKeys.keys().next().value!)
    publicKeys.set(id, key)
  }
  return key
}

export const noiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  generateX25519KeyPair() {
    const { privateKey } = crypto.generateKeyPairSync('x25519')
    const jwk = privateKey.export({ format: 'jwk' })
    const pub = Buffer.from(jwk.x!, 'base64url')
    const priv = Buffer.from(jwk.d!, 'base64url')
    privateKeys.set(priv, privateKey)
    return { publicKey: pub, privateKey: priv }
  },
  generateX25519SharedKey(privateKey, publicKey) {
    // A peer's key arrives as a list of chunks (Uint8ArrayList) when parsed from a handshake message.
    const pub = publicKey instanceof Uint8Array ? publicKey : publicKey.subarray()
    if (!(privateKey instanceof Uint8Array) || privateKey.byteLength !== 32 || pub.byteLength !== 32) {
      return defaultCrypto.generateX25519SharedKey(privateKey, publicKey)
    }
    return crypto.diffieHellman({ privateKey: privateKeyObject(privateKey), publicKey: publicKeyObject(pub) })
  },
}
