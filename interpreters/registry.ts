import { createExecInterpreter, EXEC_INTERPRETER_NAME } from './exec.js'
import { createHttpCheckInterpreter, HTTP_CHECK_INTERPRETER_NAME } from './http-check.js'
import { createRestartInterpreter, RESTART_INTERPRETER_NAME, type RestartMode } from './restart.js'
import { createShellInterpreter, SHELL_INTERPRETER_NAME } from './shell.js'
import {
  ANSIBLE_INTERPRETER_NAME, CHEF_CLIENT_INTERPRETER_NAME, INSPEC_INTERPRETER_NAME,
  createAnsibleInterpreter, createChefClientInterpreter, createInspecInterpreter,
} from './tools.js'
import type { Interpreter } from './types.js'

export type InterpreterRegistry = ReadonlyMap<string, Interpreter>

export interface BuiltinOptions {
  /** Restart interpreter mode; default: env CHORUS_RESTART_MODE, else "real". */
  restartMode?: RestartMode
  /** PATH for finding chef-client, inspec, ansible-playbook and shutdown; default process.env.PATH. */
  pathEnv?: string
}

/** Names of the interpreters built into the agent. */
export const BUILTIN_INTERPRETER_NAMES = [
  SHELL_INTERPRETER_NAME, EXEC_INTERPRETER_NAME, HTTP_CHECK_INTERPRETER_NAME, RESTART_INTERPRETER_NAME,
  CHEF_CLIENT_INTERPRETER_NAME, INSPEC_INTERPRETER_NAME, ANSIBLE_INTERPRETER_NAME,
] as const

/**
 * A fresh map of the interpreters built into the agent, keyed by name. Being built in does
 * not make an interpreter runnable: agent/allowlist.ts decides that.
 */
export function builtinInterpreters(opts: BuiltinOptions = {}): Map<string, Interpreter> {
  const tool = opts.pathEnv !== undefined ? { pathEnv: opts.pathEnv } : {}
  return new Map<string, Interpreter>([
    [SHELL_INTERPRETER_NAME, createShellInterpreter()],
    [EXEC_INTERPRETER_NAME, createExecInterpreter()],
    [HTTP_CHECK_INTERPRETER_NAME, createHttpCheckInterpreter()],
    [RESTART_INTERPRETER_NAME, createRestartInterpreter({ ...(opts.restartMode ? { mode: opts.restartMode } : {}), ...tool })],
    [CHEF_CLIENT_INTERPRETER_NAME, createChefClientInterpreter(tool)],
    [INSPEC_INTERPRETER_NAME, createInspecInterpreter(tool)],
    [ANSIBLE_INTERPRETER_NAME, createAnsibleInterpreter(tool)],
  ])
}

/** Exact-name lookup; undefined when the agent has no such interpreter. */
export function findInterpreter(name: string, registry: InterpreterRegistry): Interpreter | undefined {
  return registry.get(name)
}
