// Helpers shared by the built-in interpreters.
import { stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { resolve as resolvePath } from 'node:path'
import { performance } from 'node:perf_hooks'
import { applyLimits, limitSupport, type AppliedLimits } from './limits.js'
import { runProcess, type RunProcessResult } from './process.js'
import type { StepRequest, StepResult } from './types.js'

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** A failure result with nothing captured. */
export function failure(reason: string, start: number, extra: Partial<StepResult> = {}): StepResult {
  return { status: 'failure', exitCode: null, stdout: '', stderr: '', truncated: false, reason, durationMs: performance.now() - start, ...extra }
}

/** Checks the request fields every interpreter relies on; returns a reason or undefined. */
export function requestProblem(req: StepRequest): string | undefined {
  if (!Number.isFinite(req.timeoutMs) || req.timeoutMs < 0) return `invalid timeoutMs ${req.timeoutMs}`
  if (!Number.isFinite(req.maxOutputBytes) || req.maxOutputBytes < 0) return `invalid maxOutputBytes ${req.maxOutputBytes}`
  return undefined
}

/**
 * Working directory as the shell interpreter chooses it: `inputs.dir` (relative to the home
 * directory), else req.workDir, else the home directory. Returns a reason string on error.
 */
export async function workingDirectory(req: StepRequest): Promise<{ cwd: string } | { error: string }> {
  let home: string
  try {
    home = homedir()
  } catch (e) {
    return { error: `cannot determine home directory: ${errorMessage(e)}` }
  }
  const dir = req.inputs['dir']
  if (dir === undefined) return { cwd: req.workDir ?? home }
  if (dir === '') return { error: 'working directory input dir is empty' }
  const cwd = resolvePath(home, dir)
  try {
    const st = await stat(cwd)
    if (!st.isDirectory()) return { error: `working directory ${cwd} is not a directory` }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    return { error: code === 'ENOENT' ? `working directory ${cwd} does not exist` : `working directory ${cwd} is not accessible: ${code ?? errorMessage(e)}` }
  }
  return { cwd }
}

export interface RunOneOptions {
  file: string
  args: string[]
  cwd: string
  env?: NodeJS.ProcessEnv
  stdin?: string
}

/**
 * Runs one program for a step with the step's limits, timeout and abort signal, and turns
 * the outcome into a StepResult (exit 0 = success unless `okCodes` says otherwise).
 */
export async function runStepProcess(
  req: StepRequest, signal: AbortSignal, start: number, opts: RunOneOptions,
  okCodes: readonly number[] = [0], label = 'command',
): Promise<{ result: StepResult; raw: RunProcessResult }> {
  let limits: AppliedLimits | undefined
  if (req.limits !== undefined) limits = await applyLimits(req.limits, await limitSupport(), `${req.runId}-${req.stepNumber}-${req.attempt}`)
  const cmd = limits ? limits.wrap(opts.file, opts.args) : { file: opts.file, args: opts.args }
  let r: RunProcessResult
  try {
    r = await runProcess({
      file: cmd.file, args: cmd.args, cwd: opts.cwd, env: opts.env ?? process.env,
      ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}),
      timeoutMs: req.timeoutMs, maxOutputBytes: req.maxOutputBytes, signal,
    })
  } finally {
    await limits?.cleanup()
  }
  let reason: string | undefined
  if (r.spawnError !== undefined) reason = `failed to start ${label}: ${r.spawnError}`
  else if (r.aborted) reason = 'aborted'
  else if (r.timedOut) reason = `timed out after ${req.timeoutMs} ms; process group killed`
  else if (r.exitCode === null) reason = `killed by signal ${r.signal ?? 'unknown'}`
  else if (!okCodes.includes(r.exitCode)) reason = `exit code ${r.exitCode} from ${label}`
  const report = limits?.report ?? []
  return {
    raw: r,
    result: {
      status: reason === undefined ? 'success' : 'failure',
      exitCode: r.exitCode,
      stdout: r.stdout,
      stderr: r.stderr,
      truncated: r.truncated,
      ...(reason !== undefined ? { reason } : {}),
      durationMs: performance.now() - start,
      ...(report.length > 0 ? { limitsReport: report } : {}),
    },
  }
}
