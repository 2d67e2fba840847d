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
  /**
   * Scratch directory for this attempt (external interpreters get it as `workDir`). When
   * absent, interpreters that need one create a temporary directory and remove it afterwards.
   */
  workDir?: string
  /** Where the interpreter may write artifact files (see interpreters/artifacts.ts). */
  artifactDir?: string
  /**
   * The step's `limits.cores` / `limits.cpu` (0 = unlimited). When absent, no CPU limit is
   * applied at all (the behaviour before limits existed). See interpreters/limits.ts for
   * what is enforced on this host.
   */
  limits?: StepLimits
  /**
   * Variables added to the step's environment: CHORUS_NODE_ID, CHORUS_JOB_ID, CHORUS_INSTANCE_ID,
   * CHORUS_RUN_ID, CHORUS_STEP, CHORUS_ATTEMPT (so a step can tell where and when it runs).
   */
  env?: Record<string, string>
}

export interface StepLimits {
  /** Number of CPUs the step may run on (affinity); 0 = any. */
  cores: number
  /** CPU bandwidth in CPUs (like `docker --cpus`): 0.5 = half of one CPU; 0 = unlimited. */
  cpu: number
}

/** A file the interpreter attached as evidence, read by the agent within the bounds in artifacts.ts. */
export interface StepArtifact {
  name: string
  /** UTF-8 text, or base64 when `encoding` is 'base64' (content that is not valid UTF-8). */
  content: string
  encoding: 'utf8' | 'base64'
  /** Size of the file in bytes. */
  bytes: number
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
  /** Values the interpreter reports directly (external interpreters, http-check). */
  outputs?: Record<string, string>
  /** Evidence files, at most MAX_ARTIFACTS_PER_STEP. */
  artifacts?: StepArtifact[]
  /**
   * Set by the restart interpreter on success: the node is about to reboot. The core must
   * persist the run as waiting for the reboot (not finished), report the interim `active`
   * step status, and on the next agent start record this step as a success.
   */
  interim?: 'reboot_pending'
  /** The interpreter's own diagnostic log (an external interpreter's stderr), bounded. */
  interpreterLog?: string
  /** What of req.limits was enforced and what was not (limits.ts), for the step log. */
  limitsReport?: string[]
}

export interface Interpreter {
  readonly name: string
  /**
   * False when run() never reads req.workDir or req.artifactDir: the agent then neither creates
   * nor removes them for its steps (two file system round trips before a step starts, about
   * 0.5 ms of CPU and up to tens of ms on a busy disk) and passes neither. Absent or true: both
   * exist, private to the attempt, when run() is called.
   */
  readonly usesWorkDir?: boolean
  /**
   * Runs one step. Must honour `signal` and `req.timeoutMs`, must keep no
   * state between runs, and must never throw for operating errors (it returns
   * a failure result instead).
   */
  run(req: StepRequest, signal: AbortSignal): Promise<StepResult>
}
