// What every `chorus` program shares: the root command (name, version, help, exit codes) and
// the helpers of the long-running commands. Used by cli/main.ts (every command) and by
// cli/agent-script.ts (the agent alone, run from V8's code cache by cli/code-cache.ts).
import { Command, InvalidArgumentError } from 'commander'
import { EXIT, EXIT_HELP } from './exit.js'

/** The root `chorus` command, before any subcommand is added (subcommands inherit its settings). */
export function createProgram(): Command {
  return new Command()
    .name('chorus')
    .description('Choreographed fleet jobs: a coordinator signs Courier job templates and publishes them over a libp2p gossip mesh; agents run them.')
    .version('0.1.0')
    .showHelpAfterError()
    .addHelpText('after', `\nExample: chorus job submit job.yaml --wait\n\n${EXIT_HELP}`)
    // Usage errors exit 2 (commander's default is 1: the code for a failed job).
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT.usage))
}

export function collectAttr(value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf('=')
  if (eq <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got "${value}"`)
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) }
}

export async function makeLogger(name: string) {
  const mod = await import('pino')
  // The named export is missing when bundled (CommonJS interop): fall back to the default.
  const pino = (mod.pino ?? mod.default) as typeof mod.pino
  // Synchronous writes: a process killed with SIGKILL (or crashing) loses no line it already logged
  // (pino's default destination buffers while a write is in flight, and those lines died with it).
  return pino({ name, level: process.env.CHORUS_LOG_LEVEL ?? 'info', base: { pid: process.pid } }, pino.destination({ dest: 2, sync: true }))
}

/**
 * A long-running process (coordinator, agent) survives a promise rejected inside a library's
 * event handler, which Node 20 would turn into an exit: it is logged at error with its stack, as
 * the bug it is. (Found: a mux stream paused after its peer went away threw from a handler's
 * completion; net/rpc-mux.ts guards it now.) The cores' own failures do not come this way: a
 * failed persist exits on purpose (onError), and the state is restored from the store.
 */
export function keepRunningOnRejection(logger: { error(fields: object, msg: string): void }): void {
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection (a bug; the process goes on)'))
}

export function onShutdown(stop: () => Promise<void>): void {
  let stopping = false
  const handler = (signal: string) => {
    if (stopping) return
    stopping = true
    stop().then(() => process.exit(0), (err) => {
      process.stderr.write(`error while stopping after ${signal}: ${(err as Error).message}\n`)
      process.exit(1)
    })
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
}

export function fail(message: string, code = 1): never {
  process.stderr.write(`chorus: ${message}\n`)
  process.exit(code)
}
