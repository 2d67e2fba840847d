// Waiting on real processes and files: whether a pid is alive (a zombie has terminated, so it
// counts as dead), and polling for a positive event with a deadline (never a fixed sleep).
import { existsSync, readFileSync } from 'node:fs'

/** Poll interval of waitUntil, in ms. */
export const POLL_MS = 25

/** Signal 0 succeeds and the process is not a zombie awaiting its reaper. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EPERM') return true // it exists, owned by another user
    return false
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
  } catch {
    return false // gone between the two reads
  }
}

/** The state letter of `pid` in /proc (R running, S sleeping, T stopped, Z zombie, ...), or undefined when it is gone. */
export function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
  } catch {
    return undefined
  }
}

/** Waits until `cond()` holds, at most `ms`; returns whether it did (assert on that). */
export async function waitUntil(cond: () => boolean, ms = 5_000): Promise<boolean> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (cond()) return true
    await new Promise((r) => setTimeout(r, POLL_MS))
  }
  return cond()
}

/** Waits until `file` holds a pid (a step wrote it), at most `ms`; throws if it never does. */
export async function waitForPid(file: string, ms = 5_000): Promise<number> {
  let pid = 0
  const read = () => {
    if (!existsSync(file)) return false
    const text = readFileSync(file, 'utf8').trim()
    pid = Number(text)
    return text !== ''
  }
  if (!(await waitUntil(read, ms))) throw new Error(`no pid in ${file} within ${ms} ms`)
  return pid
}
