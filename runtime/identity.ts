// The identity file of a data directory: the runtimes' I/O around protocol/keys.ts.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateIdentity, identityFromSeed, type Identity } from '../protocol/keys.js'

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
