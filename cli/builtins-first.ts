// Node's built-in modules (net, crypto, streams, ...) compile from a code cache embedded in the
// node binary, but V8 accepts a code cache only under the flags it was made with: any V8 flag on
// the command line (every one of AGENT_NODE_FLAGS but --v8-pool-size) changes V8's flag hash, and
// each built-in an agent loads is then compiled from source (~10 ms of an agent's start).
//
// The flags cannot move off the command line: the heap sizes (--max-semi-space-size,
// --max-old-space-size, --initial-old-space-size) are read once, when V8 sets up the heap, and
// setting them later changes nothing. So the agent starts with them, and bin/chorus-agent.cjs
// first sets the flags it knows back to V8's defaults (the flag hash is then the default one, the
// heap keeps the sizes it was set up with), requires the built-ins the agent uses, and sets the
// flags to the command line's values again before anything else is compiled or run: the flag
// hash is then the command line's again, so the agent's own code cache (cli/code-cache.ts, primed
// by a process started with the same flags) is unaffected, and --no-opt and the rest are in effect
// for everything the agent runs. A V8 flag not known here only leaves the built-ins compiled from
// source, as without this.
//
// Only `node:v8` may be loaded before: everything else this file loads would miss the cache.
import { setFlagsFromString } from 'node:v8'

/**
 * V8 flags of AGENT_NODE_FLAGS (cli/fleet.ts) and the default each is set back to while the
 * built-ins load. --optimize-for-size implies --max-semi-space-size=1, so its default includes
 * that one's. Values as V8 prints them (`node --print-flag-values`).
 */
const DEFAULT_OF: Record<string, string> = {
  '--max-semi-space-size': '--max-semi-space-size=0',
  '--max-old-space-size': '--max-old-space-size=0',
  '--initial-old-space-size': '--initial-old-space-size=0',
  '--optimize-for-size': '--no-optimize-for-size --max-semi-space-size=0',
  '--no-opt': '--opt',
  '--memory-reducer-single-gc': '--no-memory-reducer-single-gc',
}

/**
 * The public built-in modules an agent loads by the time it has joined (process.moduleLoadList
 * of a started agent; each also loads the internal modules it needs). One the agent does not
 * use would cost its evaluation for nothing: keep this list to what the agent loads anyway.
 */
export const AGENT_BUILTINS = [
  'crypto', 'vm', 'module', 'stream', 'stream/promises', 'string_decoder', 'net', 'dgram', 'child_process',
  'fs/promises', 'os', 'tty', 'cluster', 'worker_threads', 'dns', 'dns/promises', 'perf_hooks', 'assert', 'diagnostics_channel',
] as const

/** The flags of `execArgv` known here: `reset` sets them to V8's defaults, `restore` back to their values; undefined if none. */
export function liftableFlags(execArgv: readonly string[]): { reset: string; restore: string } | undefined {
  const known = execArgv.filter((arg) => DEFAULT_OF[arg.replace(/=.*/, '')] !== undefined)
  if (known.length === 0) return undefined
  return { reset: known.map((arg) => DEFAULT_OF[arg.replace(/=.*/, '')]).join(' '), restore: known.join(' ') }
}

/**
 * Requires `modules` with V8's flags at their defaults (so that Node's code cache for them
 * applies), then sets the flags back to the command line's. `during` runs inside (tests look at
 * V8's state there). Returns whether flags were lifted.
 */
export function requireBuiltinsUnderDefaultFlags(load: (id: string) => unknown, modules: readonly string[] = AGENT_BUILTINS, execArgv: readonly string[] = process.execArgv, during?: () => void): boolean {
  const flags = liftableFlags(execArgv)
  if (!flags) return false
  setFlagsFromString(flags.reset)
  try {
    for (const id of modules) load(`node:${id}`)
    during?.()
  } finally {
    setFlagsFromString(flags.restore)
  }
  return true
}
