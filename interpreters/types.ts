/**
 * The in-process interpreter contract.
 *
 * An agent hands every job step to the interpreter named by the step. The
 * interpreter runs it (usually through child processes) and reports a
 * StepResult. Interpreters are stateless between runs and never throw for
 * operating errors: a bad command, a missing directory, a timeout or an abort
 * are all reported as `status: 'failure'` with a human `reason`.
 */

export type StepOs = 'linux' | 'darwin' | 'windows'

export interface StepRequest {
  runId: string
  stepNumber: number
  /** Counts from 1. */
  attempt: number
  /** e.g. 'chef-platform/shell-interpreter' */
  interpreter: string
  /** The step's `command` object from the job template (validated by the interpreter). */
  command: unknown
  /** The step's inputs after {{.NAME}} substitution (done by the caller). */
  inputs: Record<string, string>
  os: StepOs
  /** Budget for the whole step in milliseconds; 0 = no limit. */
  timeoutMs: number
  /** Per-stream cap on captured stdout and stderr, in bytes. */
  maxOutputBytes: number
}

export interface StepResult {
  status: 'success' | 'failure'
  /** The last command's exit code; null if killed by a signal or never started. */
  exitCode: number | null
  /**
   * Captured output, each stream at most maxOutputBytes UTF-8 bytes. When a
   * stream overflows, its HEAD and TAIL are kept (about half the budget each)
   * joined by a marker line saying how many bytes were omitted; see
   * OutputCapture in process.ts.
   */
  stdout: string
  stderr: string
  /** True when either stream dropped bytes. */
  truncated: boolean
  /**
   * Human reason when status is 'failure', e.g. 'exit code 3 from command 2 of 3',
   * 'timed out after 1000 ms; process group killed', 'aborted',
   * 'no command for os linux', 'working directory /x does not exist'.
   */
  reason?: string
  durationMs: number
}

export interface Interpreter {
  readonly name: string
  /**
   * Runs one step. Must honour `signal` and `req.timeoutMs`, must keep no
   * state between runs, and must never throw for operating errors (it returns
   * a failure result instead).
   */
  run(req: StepRequest, signal: AbortSignal): Promise<StepResult>
}
