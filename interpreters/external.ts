/**
 * External interpreters: third-party executables that run job steps for Chorus.
 *
 * ## The contract (version 1)
 *
 * The agent starts the interpreter's executable ONCE PER STEP ATTEMPT, with no arguments, in
 * its own process group (session), with the agent's environment, the working directory
 * `workDir`, and:
 *
 * * **stdin**: exactly one JSON object, then end of file:
 *   ```json
 *   { "version": 1, "runId": "…", "stepNumber": 1, "attempt": 1,
 *     "interpreter": "acme/thing-interpreter", "command": { …the step's command… },
 *     "inputs": { "name": "value" }, "os": "linux", "timeoutMs": 60000,
 *     "workDir": "/abs/scratch/dir", "artifactDir": "/abs/scratch/dir/artifacts" }
 *   ```
 *   `command` and `inputs` have had every `{{.NAME}}` substituted already. `timeoutMs` 0
 *   means no limit. `workDir` and `artifactDir` exist, are private to this attempt and are
 *   deleted afterwards unless the agent supplied them. Unknown fields must be ignored
 *   (later minor additions keep `version` 1).
 * * **stdout**: exactly one JSON object (surrounding whitespace allowed, nothing else), at
 *   most MAX_EXTERNAL_RESULT_BYTES:
 *   ```json
 *   { "status": "success" | "failure", "exitCode": 0 | null, "stdout": "…", "stderr": "…",
 *     "reason": "why it failed (optional)", "outputs": { "NAME": "value" } (optional),
 *     "artifacts": [ { "name": "report.json", "path": "report.json" } ] (optional) }
 *   ```
 *   `stdout`/`stderr` are the output of whatever the interpreter ran on the step's behalf
 *   (they are bounded by the agent like any step output and subject to the step's
 *   outputFieldRules). `outputs` values must be strings. Artifact paths are relative to
 *   `artifactDir` (or absolute inside it); the agent reads them itself within the bounds of
 *   interpreters/artifacts.ts (≤ 8 artifacts, ≤ 1 MiB each, names ≤ 128 characters).
 * * **stderr**: the interpreter's own diagnostic log. The agent keeps it (bounded) as
 *   `interpreterLog`; it is not the step's stderr.
 * * **exit status**: informational. A missing or malformed result is a step failure
 *   ("interpreter … exited N without a valid result: …"), whatever the exit status.
 * * **timeout and abort**: when `timeoutMs` runs out, or the agent aborts the step (job
 *   cancelled, agent stopping), the agent sends SIGTERM to the interpreter's whole process
 *   group, then SIGKILL after 2 s (KILL_GRACE_MS). Interpreters should start their work in
 *   the same process group (the default) so it dies with them; anything still in the group
 *   when the interpreter exits is killed too.
 * * **limits**: the step's `limits.cores` / `limits.cpu` are applied to the interpreter
 *   process and everything it starts (interpreters/limits.ts).
 *
 * ## Installation
 *
 * The agent configuration lists external interpreters as `[{ name, path, version }]`
 * (discoverExternalInterpreters). `name` is the `interpreter.name` steps use, `path` an
 * absolute path to the executable, `version` its skill version (matched against the step's
 * `interpreter.skill` bounds with matchSkillVersion in agent/steps.ts). Listing an
 * interpreter does not permit it: the allowlist (agent/allowlist.ts) must name it too.
 */
import { constants as fsConstants } from 'node:fs'
import { access, mkdir, mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { isAbsolute, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { collectArtifacts, type ArtifactRef } from './artifacts.js'
import { errorMessage, failure, isRecord, requestProblem } from './common.js'
import { applyLimits, limitSupport, type AppliedLimits } from './limits.js'
import { OutputCapture, runProcess } from './process.js'
import type { Interpreter, StepRequest, StepResult } from './types.js'

export const EXTERNAL_PROTOCOL_VERSION = 1
/** Largest result document read from an interpreter's stdout. */
export const MAX_EXTERNAL_RESULT_BYTES = 4 * 1024 * 1024
/** Bound on the kept interpreter log (its stderr). */
export const MAX_INTERPRETER_LOG_BYTES = 64 * 1024
export const MAX_EXTERNAL_OUTPUTS = 64

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)+$/
const VERSION_PATTERN = /^[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.+-]+)?$/

export interface ExternalRequest {
  version: 1
  runId: string
  stepNumber: number
  attempt: number
  interpreter: string
  command: unknown
  inputs: Record<string, string>
  os: string
  timeoutMs: number
  workDir: string
  artifactDir: string
}

/** Builds the stdin document for one attempt. */
export function externalRequest(req: StepRequest, workDir: string, artifactDir: string): ExternalRequest {
  return {
    version: EXTERNAL_PROTOCOL_VERSION, runId: req.runId, stepNumber: req.stepNumber, attempt: req.attempt,
    interpreter: req.interpreter, command: req.command, inputs: req.inputs, os: req.os, timeoutMs: req.timeoutMs,
    workDir, artifactDir,
  }
}

export interface ParsedExternalResult {
  status: 'success' | 'failure'
  exitCode: number | null
  stdout: string
  stderr: string
  reason?: string
  outputs: Record<string, string>
  artifacts: ArtifactRef[]
}

/** Validates an interpreter's stdout; returns the result or a reason it is invalid. */
export function parseExternalResult(text: string): ParsedExternalResult | string {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch {
    return text.trim() === '' ? 'empty stdout' : 'stdout is not one JSON document'
  }
  if (!isRecord(doc)) return 'result is not a JSON object'
  if (doc.status !== 'success' && doc.status !== 'failure') return 'result.status must be "success" or "failure"'
  const exitCode = doc.exitCode === undefined ? null : doc.exitCode
  if (exitCode !== null && (typeof exitCode !== 'number' || !Number.isInteger(exitCode))) return 'result.exitCode must be an integer or null'
  for (const k of ['stdout', 'stderr', 'reason'] as const) {
    if (doc[k] !== undefined && typeof doc[k] !== 'string') return `result.${k} must be a string`
  }
  const outputs: Record<string, string> = {}
  if (doc.outputs !== undefined) {
    if (!isRecord(doc.outputs)) return 'result.outputs must be an object of strings'
    const entries = Object.entries(doc.outputs)
    if (entries.length > MAX_EXTERNAL_OUTPUTS) return `result.outputs has ${entries.length} entries; at most ${MAX_EXTERNAL_OUTPUTS}`
    for (const [k, v] of entries) {
      if (typeof v !== 'string') return `result.outputs.${k} must be a string`
      Object.defineProperty(outputs, k, { value: v, enumerable: true, writable: true, configurable: true })
    }
  }
  const artifacts: ArtifactRef[] = []
  if (doc.artifacts !== undefined) {
    if (!Array.isArray(doc.artifacts)) return 'result.artifacts must be an array of {name, path}'
    for (const a of doc.artifacts) {
      if (!isRecord(a) || typeof a.name !== 'string' || typeof a.path !== 'string') return 'result.artifacts entries must be {name: string, path: string}'
      artifacts.push({ name: a.name, path: a.path })
    }
  }
  return {
    status: doc.status, exitCode: exitCode as number | null,
    stdout: (doc.stdout as string | undefined) ?? '', stderr: (doc.stderr as string | undefined) ?? '',
    ...(typeof doc.reason === 'string' ? { reason: doc.reason } : {}),
    outputs, artifacts,
  }
}

function bound(text: string, maxBytes: number): { text: string; truncated: boolean } {
  const c = new OutputCapture(maxBytes)
  c.write(text)
  return { text: c.text(), truncated: c.truncated }
}

export interface ExternalInterpreterOptions {
  /** Extra environment for the interpreter process. */
  env?: Record<string, string>
}

/** An Interpreter that runs `executablePath` per attempt under the contract above. */
export function createExternalInterpreter(name: string, executablePath: string, opts: ExternalInterpreterOptions = {}): Interpreter {
  return {
    name,
    async run(req: StepRequest, signal: AbortSignal): Promise<StepResult> {
      const start = performance.now()
      let scratch: string | undefined
      let limits: AppliedLimits | undefined
      try {
        const problem = requestProblem(req)
        if (problem) return failure(problem, start)
        if (process.platform === 'win32') return failure('external interpreters need POSIX process groups; windows is not supported', start)
        let workDir = req.workDir
        if (workDir === undefined) workDir = scratch = await mkdtemp(join(tmpdir(), 'chorus-ext-'))
        const artifactDir = req.artifactDir ?? join(workDir, 'artifacts')
        await mkdir(artifactDir, { recursive: true })
        if (req.limits !== undefined) limits = await applyLimits(req.limits, await limitSupport(), `${req.runId}-${req.stepNumber}-${req.attempt}`)
        const cmd = limits ? limits.wrap(executablePath, []) : { file: executablePath, args: [] }
        const out = new OutputCapture(MAX_EXTERNAL_RESULT_BYTES)
        const log = new OutputCapture(MAX_INTERPRETER_LOG_BYTES)
        const r = await runProcess({
          file: cmd.file, args: cmd.args, cwd: workDir, env: { ...process.env, ...opts.env },
          stdin: JSON.stringify(externalRequest(req, workDir, artifactDir)) + '\n',
          timeoutMs: req.timeoutMs, maxOutputBytes: MAX_EXTERNAL_RESULT_BYTES, signal,
          stdoutCapture: out, stderrCapture: log,
        })
        const common = {
          durationMs: 0,
          ...(r.stderr !== '' ? { interpreterLog: r.stderr } : {}),
          ...(limits && limits.report.length > 0 ? { limitsReport: limits.report } : {}),
        }
        const fail = (reason: string): StepResult => ({ ...failure(reason, start), ...common, exitCode: r.exitCode, durationMs: performance.now() - start })
        if (r.spawnError !== undefined) return fail(`failed to start interpreter ${name} (${executablePath}): ${r.spawnError}`)
        if (r.aborted) return fail('aborted')
        if (r.timedOut) return fail(`timed out after ${req.timeoutMs} ms; interpreter process group killed`)
        if (out.truncated) return fail(`interpreter ${name} wrote more than ${MAX_EXTERNAL_RESULT_BYTES} bytes of result`)
        const parsed = parseExternalResult(r.stdout)
        if (typeof parsed === 'string') {
          const how = r.exitCode === null ? `was killed by ${r.signal ?? 'a signal'}` : `exited ${r.exitCode}`
          return fail(`interpreter ${name} ${how} without a valid result: ${parsed}`)
        }
        const so = bound(parsed.stdout, req.maxOutputBytes)
        const se = bound(parsed.stderr, req.maxOutputBytes)
        const collected = parsed.artifacts.length > 0 ? await collectArtifacts(parsed.artifacts, artifactDir) : { artifacts: [], problems: [] }
        const logExtra = collected.problems.length > 0 ? `\n[chorus] ${collected.problems.join('\n[chorus] ')}\n` : ''
        const interpreterLog = (r.stderr + logExtra) || undefined
        return {
          status: parsed.status,
          exitCode: parsed.exitCode,
          stdout: so.text,
          stderr: se.text,
          truncated: so.truncated || se.truncated,
          ...(parsed.reason !== undefined ? { reason: parsed.reason } : parsed.status === 'failure' ? { reason: `interpreter ${name} reported failure` } : {}),
          durationMs: performance.now() - start,
          ...(Object.keys(parsed.outputs).length > 0 ? { outputs: parsed.outputs } : {}),
          ...(collected.artifacts.length > 0 ? { artifacts: collected.artifacts } : {}),
          ...(interpreterLog !== undefined ? { interpreterLog } : {}),
          ...(limits && limits.report.length > 0 ? { limitsReport: limits.report } : {}),
        }
      } catch (e) {
        return failure(`internal error: ${errorMessage(e)}`, start)
      } finally {
        await limits?.cleanup()
        if (scratch !== undefined) await rm(scratch, { recursive: true, force: true }).catch(() => {})
      }
    },
  }
}

export interface ExternalInterpreterConfig {
  name: string
  path: string
  version: string
}

export interface DiscoveredInterpreters {
  interpreters: Map<string, Interpreter>
  /** Installed skill versions by interpreter name (for matchSkillVersion). */
  versions: Map<string, string[]>
  /** Entries that were refused, with the reason; the agent should log them. */
  problems: string[]
}

/**
 * Reads the agent configuration's external interpreter list. An entry is used only when
 * its name looks like `<origin>/<package>`, its version like "1.2.3", and its path is
 * absolute and names an executable regular file. A name listed twice keeps the first entry;
 * `reserved` names (the built-ins) cannot be overridden.
 */
export async function discoverExternalInterpreters(list: unknown, reserved: Iterable<string> = []): Promise<DiscoveredInterpreters> {
  const interpreters = new Map<string, Interpreter>()
  const versions = new Map<string, string[]>()
  const problems: string[] = []
  const taken = new Set(reserved)
  if (list === undefined || list === null) return { interpreters, versions, problems }
  if (!Array.isArray(list)) return { interpreters, versions, problems: ['interpreters: expected a list of {name, path, version}'] }
  for (const [i, entry] of list.entries()) {
    const where = `interpreters[${i}]`
    if (!isRecord(entry) || typeof entry.name !== 'string' || typeof entry.path !== 'string' || typeof entry.version !== 'string') {
      problems.push(`${where}: expected {name, path, version} strings`)
      continue
    }
    const { name, path, version } = entry
    if (!NAME_PATTERN.test(name)) { problems.push(`${where}: name ${JSON.stringify(name)} is not "<origin>/<package>"`); continue }
    if (!VERSION_PATTERN.test(version)) { problems.push(`${where}: version ${JSON.stringify(version)} is not a version such as "1.2.3"`); continue }
    if (!isAbsolute(path)) { problems.push(`${where}: path ${JSON.stringify(path)} must be absolute`); continue }
    if (taken.has(name)) { problems.push(`${where}: ${name} is already defined (built in or listed earlier); entry ignored`); continue }
    try {
      const st = await stat(path)
      if (!st.isFile()) { problems.push(`${where}: ${path} is not a regular file`); continue }
      await access(path, fsConstants.X_OK)
    } catch (e) {
      problems.push(`${where}: ${path} is not an executable file (${(e as NodeJS.ErrnoException).code ?? errorMessage(e)})`)
      continue
    }
    taken.add(name)
    interpreters.set(name, createExternalInterpreter(name, path))
    versions.set(name, [version])
  }
  return { interpreters, versions, problems }
}
