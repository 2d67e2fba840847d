/**
 * A bounded child-process runner.
 *
 * - The child is spawned with `detached: true`, so on POSIX it leads its own
 *   session and process group; timeouts and aborts signal the WHOLE group
 *   (SIGTERM, then SIGKILL after KILL_GRACE_MS), so grandchildren die too.
 * - Leftover group members (background jobs) still alive when the leader exits
 *   are killed the same way: a step must not leave processes behind, and they
 *   would otherwise hold the output pipes open and stall the 'close' event.
 * - Captured output is bounded: at most maxOutputBytes per stream are retained
 *   (head + tail, see OutputCapture); dropped bytes are counted.
 * - It never throws for operating errors; a spawn failure is reported in
 *   `spawnError`.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { performance } from 'node:perf_hooks'

/** Time between SIGTERM and SIGKILL when a process group is killed. */
export const KILL_GRACE_MS = 2_000
/**
 * After the leader has exited and the group has been signalled, how much longer
 * (beyond KILL_GRACE_MS) to wait for the stdio 'close' event before giving up
 * on the pipes (e.g. a grandchild escaped the group with setsid but kept them).
 */
export const CLOSE_DRAIN_MS = 1_000

export interface RunProcessOptions {
  file: string
  args: string[]
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Written to the child's stdin, which is then closed; without it stdin is /dev/null. */
  stdin?: string
  /** 0 = no limit. */
  timeoutMs: number
  /** Per-stream cap on retained output bytes (ignored for a stream whose capture is supplied). */
  maxOutputBytes: number
  signal?: AbortSignal
  /**
   * Optional captures to append to instead of fresh ones, so a caller running
   * several processes can accumulate bounded output across them. The returned
   * stdout/stderr/truncated then describe the capture's whole content.
   */
  stdoutCapture?: OutputCapture
  stderrCapture?: OutputCapture
}

export interface RunProcessResult {
  exitCode: number | null
  signal: string | null
  stdout: string
  stderr: string
  truncated: boolean
  timedOut: boolean
  aborted: boolean
  spawnError?: string
  durationMs: number
}

/**
 * Bounded byte capture keeping the HEAD and the TAIL of a stream.
 *
 * Retains at most `maxBytes` bytes: the first floor(maxBytes/2) bytes and the
 * last ceil(maxBytes/2) bytes seen. When bytes were dropped, text() joins head
 * and tail with a marker line `[... N bytes omitted ...]`, cutting the tail so
 * the whole text still fits in maxBytes UTF-8 bytes (for caps under
 * MIN_MARKER_CAP the marker is left out). Cuts are moved to UTF-8 character
 * boundaries, so valid UTF-8 input never yields broken characters.
 */
export class OutputCapture {
  static readonly MIN_MARKER_CAP = 128
  readonly maxBytes: number
  private readonly headCap: number
  private readonly tailCap: number
  private readonly head: Buffer[] = []
  private headLen = 0
  private tail: Buffer[] = []
  private tailLen = 0
  private total = 0

  constructor(maxBytes: number) {
    this.maxBytes = Number.isFinite(maxBytes) && maxBytes > 0 ? Math.floor(maxBytes) : 0
    this.headCap = Math.floor(this.maxBytes / 2)
    this.tailCap = this.maxBytes - this.headCap
  }

  /** Bytes seen so far. */
  get totalBytes(): number {
    return this.total
  }

  /** Bytes seen but not retained. */
  get droppedBytes(): number {
    return this.total - this.headLen - this.tailLen
  }

  get truncated(): boolean {
    return this.droppedBytes > 0
  }

  write(chunk: Buffer | string): void {
    let buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk
    if (buf.length === 0) return
    this.total += buf.length
    if (this.headLen < this.headCap) {
      const take = Math.min(buf.length, this.headCap - this.headLen)
      // Copy, so a small slice never pins a large chunk in memory.
      this.head.push(Buffer.from(buf.subarray(0, take)))
      this.headLen += take
      buf = buf.subarray(take)
      if (buf.length === 0) return
    }
    if (this.tailCap === 0) return
    if (buf.length >= this.tailCap) {
      this.tail = [Buffer.from(buf.subarray(buf.length - this.tailCap))]
      this.tailLen = this.tailCap
      return
    }
    this.tail.push(Buffer.from(buf))
    this.tailLen += buf.length
    while (this.tailLen > this.tailCap) {
      const first = this.tail[0]!
      const excess = this.tailLen - this.tailCap
      if (first.length <= excess) {
        this.tail.shift()
        this.tailLen -= first.length
      } else {
        this.tail[0] = Buffer.from(first.subarray(excess))
        this.tailLen -= excess
      }
    }
  }

  text(): string {
    const head = Buffer.concat(this.head, this.headLen)
    const tail = Buffer.concat(this.tail, this.tailLen)
    if (!this.truncated) return Buffer.concat([head, tail]).toString('utf8')
    const headKept = head.subarray(0, utf8SafeEnd(head))
    if (this.maxBytes < OutputCapture.MIN_MARKER_CAP) {
      const tailKept = tail.subarray(utf8SafeStart(tail))
      return Buffer.concat([headKept, tailKept]).toString('utf8')
    }
    // The marker's length depends on the omitted count, which depends on how
    // much of the tail the marker displaces: iterate until it fits.
    let cut = 0
    for (;;) {
      const rest = tail.subarray(Math.min(cut, tail.length))
      const tailKept = rest.subarray(utf8SafeStart(rest))
      const omitted = this.total - headKept.length - tailKept.length
      const marker = Buffer.from(`\n[... ${omitted} bytes omitted ...]\n`, 'utf8')
      const size = headKept.length + marker.length + tailKept.length
      if (size <= this.maxBytes || tailKept.length === 0) {
        return Buffer.concat([headKept, marker, tailKept]).toString('utf8')
      }
      cut = tail.length - tailKept.length + (size - this.maxBytes)
    }
  }
}

/** Length of the longest prefix of buf that does not end inside a UTF-8 sequence. */
function utf8SafeEnd(buf: Buffer): number {
  const n = buf.length
  for (let i = n - 1; i >= 0 && i >= n - 4; i--) {
    const b = buf[i]!
    if ((b & 0xc0) === 0x80) continue // continuation byte: keep looking for the lead
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1
    return i + need <= n ? n : i
  }
  return n
}

/** Index of the first byte of buf that is not a UTF-8 continuation byte (at most 3 skipped). */
function utf8SafeStart(buf: Buffer): number {
  let i = 0
  while (i < buf.length && i < 3 && (buf[i]! & 0xc0) === 0x80) i++
  return i
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0)
    return true
  } catch (err) {
    // EPERM means it exists but belongs to someone else; treat as alive.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function signalGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig)
  } catch {
    // ESRCH: the group is already gone.
  }
}

export function runProcess(opts: RunProcessOptions): Promise<RunProcessResult> {
  const start = performance.now()
  const out = opts.stdoutCapture ?? new OutputCapture(opts.maxOutputBytes)
  const err = opts.stderrCapture ?? new OutputCapture(opts.maxOutputBytes)
  const base = (): Omit<RunProcessResult, 'exitCode' | 'signal' | 'timedOut' | 'aborted'> => ({
    stdout: out.text(),
    stderr: err.text(),
    truncated: out.truncated || err.truncated,
    durationMs: performance.now() - start,
  })

  if (opts.signal?.aborted) {
    return Promise.resolve({ ...base(), exitCode: null, signal: null, timedOut: false, aborted: true })
  }

  let child: ChildProcess
  try {
    child = spawn(opts.file, opts.args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      detached: true,
      stdio: [opts.stdin !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      windowsHide: true,
    })
  } catch (e) {
    return Promise.resolve({
      ...base(),
      exitCode: null,
      signal: null,
      timedOut: false,
      aborted: false,
      spawnError: errorMessage(e),
    })
  }

  return new Promise<RunProcessResult>((resolve) => {
    let settled = false
    let exited = false
    let timedOut = false
    let aborted = false
    let spawnError: string | undefined
    let exitCode: number | null = null
    let exitSignal: string | null = null
    let termSent = false
    let timeoutTimer: NodeJS.Timeout | undefined
    let killTimer: NodeJS.Timeout | undefined
    let drainTimer: NodeJS.Timeout | undefined
    const pid = child.pid

    const killGroup = (): void => {
      if (pid === undefined || termSent) return
      termSent = true
      signalGroup(pid, 'SIGTERM')
      killTimer = setTimeout(() => {
        killTimer = undefined
        signalGroup(pid, 'SIGKILL')
      }, KILL_GRACE_MS)
    }

    const onAbort = (): void => {
      if (exited || settled) return
      aborted = true
      killGroup()
    }

    const finish = (): void => {
      if (settled) return
      settled = true
      if (timeoutTimer) clearTimeout(timeoutTimer)
      if (drainTimer) clearTimeout(drainTimer)
      opts.signal?.removeEventListener('abort', onAbort)
      if (killTimer) {
        // Leave the SIGKILL armed only if something in the group survived SIGTERM
        // (it may have closed its stdio); it must not keep the event loop alive.
        if (pid !== undefined && groupAlive(pid)) killTimer.unref()
        else clearTimeout(killTimer)
      }
      resolve({ ...base(), exitCode, signal: exitSignal, timedOut, aborted, spawnError })
    }

    child.stdout?.on('data', (chunk: Buffer) => out.write(chunk))
    child.stderr?.on('data', (chunk: Buffer) => err.write(chunk))
    child.stdout?.on('error', () => {})
    child.stderr?.on('error', () => {})
    if (child.stdin) {
      child.stdin.on('error', () => {}) // EPIPE when the child ignores its input
      child.stdin.end(opts.stdin)
    }

    child.on('error', (e) => {
      if (pid === undefined) {
        // Failed to spawn (ENOENT, EACCES, bad cwd, ...): nothing to wait for.
        spawnError = errorMessage(e)
        finish()
      }
    })

    child.on('exit', (code, sig) => {
      exited = true
      exitCode = code
      exitSignal = sig
      if (pid === undefined) return
      // Background members left behind by the leader: kill them too.
      if (groupAlive(pid)) killGroup()
      drainTimer = setTimeout(() => {
        child.stdout?.destroy()
        child.stderr?.destroy()
        finish()
      }, KILL_GRACE_MS + CLOSE_DRAIN_MS)
    })

    child.on('close', (code, sig) => {
      if (!exited) {
        exitCode = code
        exitSignal = sig
      }
      finish()
    })

    if (opts.timeoutMs > 0) {
      timeoutTimer = setTimeout(() => {
        if (exited || settled) return
        timedOut = true
        killGroup()
      }, opts.timeoutMs)
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true })
  })
}
