// `chorus sim` on a large fleet needs more heap than Node's default (about 4 GiB here: 20,000
// agents peak at 2.2 GB, 50,000 at several), and a heap near its limit spends its time in
// full collections. V8 fixes the heap size when the process starts (v8.setFlagsFromString
// cannot raise it later), so the command runs itself again in a child with the flags below.

import { spawn } from 'node:child_process'
import { constants } from 'node:os'
import { getHeapStatistics } from 'node:v8'

/** From this many agents on, `chorus sim` runs in a child with SIM_MAX_OLD_SPACE_MB of old space. */
export const SIM_BIG_FLEET_AGENTS = 10_000
/** Old-space limit of that child, in MiB (a cap, not a reservation: V8 grows the heap as the live data needs). */
export const SIM_MAX_OLD_SPACE_MB = 16_384
/** Set in the child's environment so that it does not spawn again. */
const CHILD_ENV = 'CHORUS_SIM_HEAP_CHILD'

/**
 * Runs this very command again in a child with a larger heap when `agents` calls for it and the
 * heap is smaller; resolves to the child's exit code, or undefined when the caller should run
 * the simulation itself.
 */
export function rerunWithLargerHeap(agents: number | undefined): Promise<number> | undefined {
  if ((agents ?? 0) < SIM_BIG_FLEET_AGENTS || process.env[CHILD_ENV] === '1') return undefined
  if (getHeapStatistics().heap_size_limit >= SIM_MAX_OLD_SPACE_MB * 1024 * 1024) return undefined
  const args = [...process.execArgv, `--max-old-space-size=${SIM_MAX_OLD_SPACE_MB}`, ...process.argv.slice(1)]
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: 'inherit', env: { ...process.env, [CHILD_ENV]: '1' } })
    child.on('error', (err) => { process.stderr.write(`chorus sim: cannot start the simulator with a larger heap: ${err.message}\n`); resolve(2) })
    child.on('exit', (code, signal) => resolve(code ?? 128 + (signal ? constants.signals[signal] ?? 0 : 0)))
  })
}
