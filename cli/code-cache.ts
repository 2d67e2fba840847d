// Runs a classic-script bundle (CommonJS) from V8's code cache: the bytecode of every function a
// previous run compiled, so that an agent start skips most parsing and compiling (Node 20 has no
// compile cache for ES modules; `module.enableCompileCache` arrived in 22.1).
//
// The cache is a speed-up, never a source of truth: a cache file is used only when its header
// names the exact script it was made from (SHA-256 of the source) and its payload is intact
// (SHA-256 of the payload); V8 then checks its own version and flags and may still reject it.
// Anything else (missing, truncated, corrupt, stale, rejected) compiles the script from source as
// if there were no cache, and a later save() writes a fresh one. The file lives beside the
// script (the same trust as the script itself: never in a shared temporary directory) and is
// named by the Node version, architecture and V8 flags, which V8 checks too: agents started with
// AGENT_NODE_FLAGS and an agent started by hand keep one cache each.
import { createHash } from 'node:crypto'
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { Script } from 'node:vm'

/**
 * First bytes of a cache file, by who wrote it: the build (`npm run build` primes the cache of
 * agents started with AGENT_NODE_FLAGS: the functions that loading the agent's modules compiles)
 * or an agent after it started (those and the ones starting compiled). A new layout gets a new
 * number, and old files read as invalid. 24 bytes, so that the payload after the two digests
 * starts 8-byte aligned: V8 copies a cache that is not aligned before reading it (2-3 MB).
 */
const MAGIC = { build: Buffer.from('chorus-code-cache 1 bld\n'), run: Buffer.from('chorus-code-cache 1 run\n') } as const
export type CacheKind = keyof typeof MAGIC
const MAGIC_BYTES = 24
/** Bytes of a SHA-256 digest. */
const DIGEST_BYTES = 32
const HEADER_BYTES = MAGIC_BYTES + 2 * DIGEST_BYTES
/** Hex characters of the flags' digest in a cache file's name. */
const FLAGS_KEY_CHARS = 16

/** What became of the cache when the script was compiled (primed: accepted, written by the build). */
export type CacheStatus = 'accepted' | 'primed' | 'missing' | 'invalid' | 'rejected'
export type SaveResult = 'written' | 'skipped' | 'failed'

export interface ScriptRun {
  /** The script's module.exports. */
  exports: Record<string, unknown>
  cache: CacheStatus
  cacheFile: string
  /**
   * Writes a cache of everything compiled so far unless the one used was an agent's (or another
   * agent wrote one meanwhile): atomically (a temporary file renamed over the old one), and never
   * throws (a read-only install just runs without a cache). `kind` build always writes.
   */
  save(kind?: CacheKind): SaveResult
}

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest()

/** The cache file of a script for this Node and these node and V8 flags (process.execArgv, $NODE_OPTIONS). */
export function cacheFileFor(file: string, execArgv: readonly string[] = process.execArgv): string {
  const flags = [process.version, process.arch, ...execArgv, process.env.NODE_OPTIONS ?? ''].join('\0')
  return `${file}.${sha256(flags).toString('hex').slice(0, FLAGS_KEY_CHARS)}.cache`
}

/** The payload of a cache file made from the source whose digest is given, or why there is none. */
function readCache(cacheFile: string, sourceDigest: Buffer): { payload: Buffer; digest: Buffer; kind: CacheKind } | 'missing' | 'invalid' {
  let buf: Buffer
  try {
    buf = readFileSync(cacheFile)
  } catch {
    return 'missing'
  }
  const magic = buf.subarray(0, MAGIC_BYTES)
  const kind = magic.equals(MAGIC.run) ? 'run' : magic.equals(MAGIC.build) ? 'build' : undefined
  if (buf.length <= HEADER_BYTES || !kind) return 'invalid'
  if (!buf.subarray(MAGIC_BYTES, MAGIC_BYTES + DIGEST_BYTES).equals(sourceDigest)) return 'invalid'
  const payload = buf.subarray(HEADER_BYTES)
  const digest = sha256(payload)
  if (!digest.equals(buf.subarray(MAGIC_BYTES + DIGEST_BYTES, HEADER_BYTES))) return 'invalid'
  return { payload, digest, kind }
}

/** Compiles the CommonJS file (from its cache when valid) and runs it as Node would require() it. */
export function runScript(file: string): ScriptRun {
  const source = readFileSync(file, 'utf8')
  const sourceDigest = sha256(source)
  const cacheFile = cacheFileFor(file)
  const cached = readCache(cacheFile, sourceDigest)
  // The wrapper Node puts around a CommonJS module, on one line (stack traces keep their lines).
  let script: Script | undefined = new Script(`(function (exports, require, module, __filename, __dirname) { ${source}\n})`, {
    filename: file,
    ...(typeof cached === 'string' ? {} : { cachedData: cached.payload }),
  })
  const cache: CacheStatus = typeof cached === 'string' ? cached : script.cachedDataRejected ? 'rejected' : cached.kind === 'build' ? 'primed' : 'accepted'
  // The cache this process could not use is replaced, unless another agent replaced it meanwhile.
  const replaced = typeof cached === 'string' ? undefined : cached.digest
  const module = { exports: {} as Record<string, unknown> }
  const wrapper = script.runInThisContext() as (...args: unknown[]) => void
  wrapper.call(module.exports, module.exports, createRequire(file), module, file, dirname(file))
  if (cache === 'accepted') script = undefined // nothing to save: keep nothing for it
  return {
    exports: module.exports,
    cache,
    cacheFile,
    save(kind: CacheKind = 'run'): SaveResult {
      const s = script
      script = undefined
      if (!s) return 'skipped'
      if (kind === 'run') {
        const now = readCache(cacheFile, sourceDigest)
        if (typeof now !== 'string' && now.kind === 'run' && !(replaced && now.digest.equals(replaced))) return 'skipped'
      }
      const tmp = `${cacheFile}.${process.pid}.tmp`
      try {
        const payload = s.createCachedData()
        writeFileSync(tmp, Buffer.concat([MAGIC[kind], sourceDigest, sha256(payload), payload]), { mode: 0o644 })
        renameSync(tmp, cacheFile)
        return 'written'
      } catch {
        rmSync(tmp, { force: true })
        return 'failed'
      }
    },
  }
}

/** How long after the agent has started its cache is saved: its first contacts with the coordinator compile code worth keeping too. */
export const CODE_CACHE_SAVE_DELAY_MS = 3_000

/**
 * Runs the agent's classic script (cli/agent-script.ts): main(argv) from the cache, and once the
 * agent has started, saves a cache if it had none it could use. `report` hears what happened
 * (bin/chorus-agent.cjs prints it with CHORUS_CODE_CACHE_LOG=1).
 */
export function runAgentScript(file: string, argv: string[], report: (line: string) => void = () => {}): void {
  const run = runScript(file)
  report(`${run.cache} ${run.cacheFile}`)
  const main = run.exports.main as (argv: string[], hooks: { started?: () => void }) => void
  main(argv, {
    started: () => {
      if (run.cache === 'accepted') return
      // A primed cache (the build's) lacks what starting compiles: the first agent adds it.
      setTimeout(() => report(`${run.save()} ${run.cacheFile}`), CODE_CACHE_SAVE_DELAY_MS).unref()
    },
  })
}

/**
 * `npm run build` primes the agent's cache: loads the modules the agent runs (without running it)
 * and writes a build cache for this process's flags (prime-agent-cache.ts gives it the agents').
 */
export async function primeAgentScript(file: string): Promise<SaveResult> {
  const run = runScript(file)
  await (run.exports.loadAgentModules as () => Promise<unknown>)()
  return run.save('build')
}
