/**
 * chef-platform/restart-interpreter
 *
 * `command` is `{ exec: "machine_reboot", args?: { time?: integer | "<integer>" | "now" } }`:
 * `time` is minutes until the reboot (default 1; FORMAT.md §5). Linux accepts "now".
 *
 * Modes (createRestartInterpreter option, else env CHORUS_RESTART_MODE, else "real"):
 *   * real:     runs `shutdown -r +N` (or `shutdown -r now`), `shutdown` found on PATH. On
 *               success the result carries `interim: 'reboot_pending'`.
 *   * simulate: does not reboot; returns success with `interim: 'reboot_pending'` and says
 *               so on stdout. For demos and tests.
 * Either way the CORE must treat `interim: 'reboot_pending'` as "persist the run as waiting
 * for a reboot, report the step as active, and on the next start record the step as
 * succeeded and go on with the next step" (the agent restart would otherwise record the
 * in-flight attempt as interrupted). The outputs carry `rebootInMinutes`.
 */
import { performance } from 'node:perf_hooks'
import { errorMessage, failure, isRecord, requestProblem, runStepProcess } from './common.js'
import { findOnPath } from './limits.js'
import type { Interpreter, StepRequest, StepResult } from './types.js'

export const RESTART_INTERPRETER_NAME = 'chef-platform/restart-interpreter'
export type RestartMode = 'real' | 'simulate'
/** Largest delay accepted, in minutes (a week). */
export const MAX_REBOOT_DELAY_MINUTES = 7 * 24 * 60

export interface RestartOptions {
  mode?: RestartMode
  /** PATH used to find `shutdown` (tests put a fake first); default process.env.PATH. */
  pathEnv?: string
}

/** Parses `args.time`: minutes (0 for "now"), or a reason. */
export function rebootDelayMinutes(command: unknown): number | string {
  if (!isRecord(command)) return 'invalid command: expected {exec: "machine_reboot", args: {time}}'
  if (command.exec !== 'machine_reboot') return `unsupported restart command ${JSON.stringify(command.exec)}; expected "machine_reboot"`
  const args = command.args === undefined ? {} : command.args
  if (!isRecord(args)) return 'invalid command: args must be an object'
  const time = args.time === undefined ? 1 : args.time
  if (time === 'now') return 0
  const n = typeof time === 'string' && /^\s*\d+\s*$/.test(time) ? Number(time) : time
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) return `invalid args.time ${JSON.stringify(time)}; expected minutes (a non-negative integer) or "now"`
  if (n > MAX_REBOOT_DELAY_MINUTES) return `args.time ${n} is more than ${MAX_REBOOT_DELAY_MINUTES} minutes`
  return n
}

export function restartModeFrom(env: NodeJS.ProcessEnv = process.env): RestartMode {
  return env.CHORUS_RESTART_MODE === 'simulate' ? 'simulate' : 'real'
}

export function createRestartInterpreter(opts: RestartOptions = {}): Interpreter {
  return {
    name: RESTART_INTERPRETER_NAME,
    async run(req: StepRequest, signal: AbortSignal): Promise<StepResult> {
      const start = performance.now()
      try {
        const problem = requestProblem(req)
        if (problem) return failure(problem, start)
        const minutes = rebootDelayMinutes(req.command)
        if (typeof minutes === 'string') return failure(minutes, start)
        if (req.os === 'windows' || process.platform === 'win32') return failure('windows is not supported by this agent', start)
        const mode = opts.mode ?? restartModeFrom()
        const when = minutes === 0 ? 'now' : `+${minutes}`
        const outputs = { rebootInMinutes: String(minutes) }
        if (signal.aborted) return failure('aborted', start)
        if (mode === 'simulate') {
          return {
            status: 'success', exitCode: 0, truncated: false, durationMs: performance.now() - start,
            stdout: `simulated: would run shutdown -r ${when}; no reboot performed\n`, stderr: '',
            interim: 'reboot_pending', outputs,
          }
        }
        const shutdown = await findOnPath('shutdown', opts.pathEnv ?? process.env.PATH)
        if (shutdown === undefined) return failure('skill not installed: shutdown not found on PATH', start)
        const { result } = await runStepProcess(req, signal, start, { file: shutdown, args: ['-r', when, 'Chorus job step reboot'], cwd: '/' }, [0], 'shutdown')
        return result.status === 'success' ? { ...result, interim: 'reboot_pending', outputs } : result
      } catch (e) {
        return failure(`internal error: ${errorMessage(e)}`, start)
      }
    },
  }
}
