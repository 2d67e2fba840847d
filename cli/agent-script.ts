// Entry of the agent's classic-script bundle (dist/bundle/agent.cjs): the `chorus agent` command
// alone, in one CommonJS file, so that cli/code-cache.ts can run it from V8's code cache (Node 20
// has no compile cache for ES modules). bin/chorus.js runs it for `chorus agent`; every other
// command, and the agent when the script is missing, goes through the ES module bundle
// (cli/entry.ts), which registers the same command from cli/agent-command.ts.
import '../runtime/polyfill.js'
import { createProgram, fail } from './program.js'
import { registerAgentCommand, type AgentCommandHooks } from './agent-command.js'
export { loadAgentModules } from './agent-command.js'
import { addExamples } from './examples.js'
import { exitForError } from './exit.js'

export function main(argv: string[], hooks: AgentCommandHooks = {}): void {
  const program = createProgram()
  registerAgentCommand(program, hooks)
  addExamples(program)
  program.parseAsync(argv).catch((err: Error) => fail(err.message, exitForError(err)))
}

