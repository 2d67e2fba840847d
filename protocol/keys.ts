// ed25519 identities. One 32-byte seed per coordinator and per agent gives both the key
// that signs Chorus messages and the libp2p peer identity, so a gossip message's author
// (msg.from) and its Chorus signer can be checked against the same pinned key.
import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
export const PUBLIC_KEY_BYTES = 32
export const SIGNATURE_BYTES = 64

export interface Identity {
  /** 32-byte private seed; never leaves the data directory. */
  seed: Uint8Array
  /** Public key, base64url of the raw 32 bytes: the form operators pass on the command line. */
  publicKey: string
  privateKeyObject: KeyObject
}

export function identityFromSeed(seed: Uint8Array): Identity {
  if (seed.length !== 32) throw new Error(`an ed25519 seed is 32 bytes, got ${seed.length}`)
  const privateKeyObject = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' })
  const spki = createPublicKey(privateKeyObject).export({ format: 'der', type: 'spki' })
  const publicKey = Buffer.from(spki.subarray(spki.length - PUBLIC_KEY_BYTES)).toString('base64url')
  return { seed, publicKey, privateKeyObject }
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
    key = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, decodePublicKey(publicKey)]), format: 'der', type: 'spki' })
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
  return sign(null, bytes, identity.privateKeyObject).toString('base64url')
}

export function verifyBytes(publicKey: string, bytes: Uint8Array, signature: string): boolean {
  try {
    const sig = Buffer.from(signature, 'base64url')
    if (sig.length !== SIGNATURE_BYTES) return false
    return verify(null, bytes, publicKeyObject(publicKey), sig)
  } catch {
    return false
  }
}

/** Loads DIR/identity.json, creating it (mode 0600) on first use. */
export async function loadOrCreateIdentity(dir: string): Promise<{ identity: Identity; created: boolean }> {
  const file = join(dir, 'identity.json')
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as { seed?: string }
    if (typeof parsed.seed !== 'string') throw new Error(`${file}: field "seed" is missing`)
    return { identity: identityFromSeed(Buffer.from(parsed.seed, 'base64url')), created: false }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  await mkdir(dir, { recursive: true })
  const identity = generateIdentity()
  const tmp = `${file}.tmp`
  await writeFile(tmp, JSON.stringify({ seed: Buffer.from(identity.seed).toString('base64url'), publicKey: identity.publicKey }) + '\n', { mode: 0o600 })
  await rename(tmp, file)
  return { identity, created: true }
}
