import { createShellInterpreter, SHELL_INTERPRETER_NAME } from './shell.js'
import type { Interpreter } from './types.js'

export type InterpreterRegistry = ReadonlyMap<string, Interpreter>

/** A fresh map of the interpreters built into the agent, keyed by name. */
export function builtinInterpreters(): Map<string, Interpreter> {
  return new Map<string, Interpreter>([[SHELL_INTERPRETER_NAME, createShellInterpreter()]])
}

/** Exact-name lookup; undefined when the agent has no such interpreter. */
export function findInterpreter(name: string, registry: InterpreterRegistry): Interpreter | undefined {
  return registry.get(name)
}
