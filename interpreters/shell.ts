/**
 * chef-platform/shell-interpreter
 *
 * `command` is `{ linux?: string[], darwin?: string[], windows?: string[] }`.
 * The list for req.os is run line by line, each by `/bin/sh`, in the
 * working directory `inputs.dir` (resolved against the user's home directory
 * when relative) or else the home directory. The first non-zero exit stops the
 * step; it succeeds when every line exits 0. stdout/stderr accumulate across
 * lines in one bounded capture per stream, and req.timeoutMs is one budget
 * shared by all lines.
 *
 * A line is never in the shell's argv (which every local user can read in /proc/PID/cmdline,
 * and a substituted line may hold a secret): the shell gets the constant STDIN_SCRIPT and reads
 * the line from its stdin (a pipe), then runs it with stdin from /dev/null as before.
 *
 * Windows commands are refused with a failure: this runner relies on POSIX
 * process groups to kill a step's whole process tree.
 */
import { stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { resolve as resolvePath } from 'node:path'
import { performance } from 'node:perf_hooks'
import { applyLimits, limitSupport, type AppliedLimits } from './limits.js'
import { OutputCapture, runProcess } from './process.js'
import type { Interpreter, StepRequest, StepResult } from './types.js'

export const SHELL_INTERPRETER_NAME = 'chef-platform/shell-interpreter'
export const POSIX_SHELL = '/bin/sh'

const OS_KEYS = ['linux', 'darwin', 'windows'] as const

/**
 * The shell's whole argv after `-c`: keep the pipe on fd 3 and give the line /dev/null as stdin,
 * read the line with the shell's own `read` (no `cat` to fork: a step costs one process, as with
 * `sh -c`), fail if nothing arrived (an empty script must not "succeed"), close fd 3, and
 * evaluate it, so it runs as `sh -c LINE` would ($0, exit status, syntax errors alike).
 */
export const STDIN_SCRIPT = 'exec 3<&0 </dev/null; __chorus_line=; while IFS= read -r __chorus_part <&3 || [ -n "$__chorus_part" ]; do __chorus_line="$__chorus_line$__chorus_part\n"; __chorus_part=; done; exec 3<&-; unset __chorus_part; [ -n "$__chorus_line" ] || exit 127; eval "unset __chorus_line; $__chorus_line"'

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** Picks and validates the command lines for `os`; returns a reason string on error. */
export function shellCommandLines(command: unknown, os: string): string[] | string {
  if (typeof command !== 'object' || command === null || Array.isArray(command)) {
    return 'invalid command: expected an object with linux/darwin/windows lists of strings'
  }
  const record = command as Record<string, unknown>
  for (const key of OS_KEYS) {
    const list = record[key]
    if (list === undefined) continue
    if (!Array.isArray(list)) return `invalid command: ${key} must be a list of strings`
    const bad = list.findIndex((line) => typeof line !== 'string')
    if (bad >= 0) return `invalid command: ${key}[${bad}] is not a string`
  }
  const lines = record[os] as string[] | undefined
  if (lines === undefined || lines.length === 0) return `no command for os ${os}`
  return lines
}

export class ShellInterpreter implements Interpreter {
  readonly name = SHELL_INTERPRETER_NAME
  /** Lines run in `inputs.dir` or the home directory, never in the attempt's scratch directory; no artifacts. */
  readonly usesWorkDir = false

  async run(req: StepRequest, signal: AbortSignal): Promise<StepResult> {
    const start = performance.now()
    try {
      return await this.runSteps(req, signal, start)
    } catch (e) {
      // Defensive: the contract forbids throwing for operating errors.
      return {
        status: 'failure',
        exitCode: null,
        stdout: '',
        stderr: '',
        truncated: false,
        reason: `internal error: ${errorMessage(e)}`,
        durationMs: performance.now() - start,
      }
    }
  }

  private async runSteps(req: StepRequest, signal: AbortSignal, start: number): Promise<StepResult> {
    const stdout = new OutputCapture(req.maxOutputBytes)
    const stderr = new OutputCapture(req.maxOutputBytes)
    let exitCode: number | null = null
    let limitsReport: string[] = []
    const done = (reason?: string): StepResult => ({
      status: reason === undefined ? 'success' : 'failure',
      exitCode,
      stdout: stdout.text(),
      stderr: stderr.text(),
      truncated: stdout.truncated || stderr.truncated,
      ...(reason === undefined ? {} : { reason }),
      durationMs: performance.now() - start,
      ...(limitsReport.length > 0 ? { limitsReport } : {}),
    })

    if (!Number.isFinite(req.timeoutMs) || req.timeoutMs < 0) {
      return done(`invalid timeoutMs ${req.timeoutMs}`)
    }
    if (!Number.isFinite(req.maxOutputBytes) || req.maxOutputBytes < 0) {
      return done(`invalid maxOutputBytes ${req.maxOutputBytes}`)
    }
    const lines = shellCommandLines(req.command, req.os)
    if (typeof lines === 'string') return done(lines)
    if (req.os === 'windows' || process.platform === 'win32') {
      return done('windows commands are not supported by this agent (the shell interpreter needs a POSIX shell)')
    }

    let home: string
    try {
      home = homedir()
    } catch (e) {
      return done(`cannot determine home directory: ${errorMessage(e)}`)
    }
    let cwd = home
    const dir = req.inputs['dir']
    if (dir !== undefined) {
      if (dir === '') return done('working directory input dir is empty')
      cwd = resolvePath(home, dir)
      try {
        const st = await stat(cwd)
        if (!st.isDirectory()) return done(`working directory ${cwd} is not a directory`)
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code
        if (code === 'ENOENT') return done(`working directory ${cwd} does not exist`)
        return done(`working directory ${cwd} is not accessible: ${code ?? errorMessage(e)}`)
      }
    }

    // req.limits (cores/cpu): see limits.ts. Without it nothing is wrapped.
    let limits: AppliedLimits | undefined
    if (req.limits !== undefined) {
      limits = await applyLimits(req.limits, await limitSupport(), `${req.runId}-${req.stepNumber}-${req.attempt}`)
      limitsReport = limits.report
    }
    try {
      return await this.runLines(req, signal, lines, cwd, start, stdout, stderr, limits, done, (code) => { exitCode = code })
    } finally {
      await limits?.cleanup()
    }
  }

  private async runLines(
    req: StepRequest, signal: AbortSignal, lines: string[], cwd: string, start: number,
    stdout: OutputCapture, stderr: OutputCapture, limits: AppliedLimits | undefined,
    done: (reason?: string) => StepResult, setExitCode: (code: number | null) => void,
  ): Promise<StepResult> {
    const deadline = req.timeoutMs > 0 ? start + req.timeoutMs : Infinity
    const n = lines.length
    for (const [i, line] of lines.entries()) {
      const which = `command ${i + 1} of ${n}`
      if (signal.aborted) return done('aborted')
      let timeoutMs = 0
      if (deadline !== Infinity) {
        const remaining = Math.ceil(deadline - performance.now())
        if (remaining <= 0) return done(`timed out after ${req.timeoutMs} ms before ${which}`)
        timeoutMs = remaining
      }
      const cmd = limits ? limits.wrap(POSIX_SHELL, ['-c', STDIN_SCRIPT]) : { file: POSIX_SHELL, args: ['-c', STDIN_SCRIPT] }
      const r = await runProcess({
        file: cmd.file,
        args: cmd.args,
        stdin: line,
        cwd,
        env: req.env ? { ...process.env, ...req.env } : process.env,
        timeoutMs,
        maxOutputBytes: req.maxOutputBytes,
        signal,
        stdoutCapture: stdout,
        stderrCapture: stderr,
      })
      setExitCode(r.exitCode)
      if (r.spawnError !== undefined) return done(`failed to start ${which}: ${r.spawnError}`)
      if (r.aborted) return done('aborted')
      if (r.timedOut) return done(`timed out after ${req.timeoutMs} ms; process group killed`)
      if (r.exitCode === null) return done(`killed by signal ${r.signal ?? 'unknown'} in ${which}`)
      if (r.exitCode !== 0) return done(`exit code ${r.exitCode} from ${which}`)
    }
    return done()
  }
}

export function createShellInterpreter(): Interpreter {
  return new ShellInterpreter()
}
