/**
 * chorus/exec-interpreter
 *
 * `command` is `{ argv: string[] }`: argv[0] is the program (a path, or a name looked up on
 * PATH by the OS), the rest are its arguments, passed as they are, with NO shell: no word
 * splitting, globbing, variables or redirections, so substituted values cannot inject shell
 * code. Working directory as for the shell interpreter (`inputs.dir`). Exit 0 = success.
 */
import { performance } from 'node:perf_hooks'
import { errorMessage, failure, isRecord, requestProblem, runStepProcess, workingDirectory } from './common.js'
import type { Interpreter, StepRequest, StepResult } from './types.js'

export const EXEC_INTERPRETER_NAME = 'chorus/exec-interpreter'
export const MAX_ARGV = 4096

/** Validates an exec command; returns argv or a reason. */
export function execArgv(command: unknown): string[] | string {
  if (!isRecord(command) || !Array.isArray(command.argv)) return 'invalid command: expected {argv: [program, ...args]}'
  const argv = command.argv as unknown[]
  if (argv.length === 0) return 'invalid command: argv is empty'
  if (argv.length > MAX_ARGV) return `invalid command: argv has ${argv.length} items; at most ${MAX_ARGV}`
  const bad = argv.findIndex((a) => typeof a !== 'string' || a.includes('\0'))
  if (bad >= 0) return `invalid command: argv[${bad}] is not a string without NUL bytes`
  if (argv[0] === '') return 'invalid command: argv[0] (the program) is empty'
  const extra = Object.keys(command).filter((k) => k !== 'argv')
  if (extra.length > 0) return `invalid command: unknown key ${extra.join(', ')}; expected only argv`
  return argv as string[]
}

export function createExecInterpreter(): Interpreter {
  return {
    name: EXEC_INTERPRETER_NAME,
    async run(req: StepRequest, signal: AbortSignal): Promise<StepResult> {
      const start = performance.now()
      try {
        const problem = requestProblem(req)
        if (problem) return failure(problem, start)
        const argv = execArgv(req.command)
        if (typeof argv === 'string') return failure(argv, start)
        if (req.os === 'windows' || process.platform === 'win32') return failure('windows is not supported by this agent', start)
        const wd = await workingDirectory(req)
        if ('error' in wd) return failure(wd.error, start)
        const [file, ...args] = argv
        return (await runStepProcess(req, signal, start, { file: file!, args, cwd: wd.cwd }, [0], file)).result
      } catch (e) {
        return failure(`internal error: ${errorMessage(e)}`, start)
      }
    },
  }
}
