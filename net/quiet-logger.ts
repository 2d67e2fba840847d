// libp2p's logging when it is off. @libp2p/logger (through `weald`, a `debug` fork) makes a
// logger for every component it is asked for: each connection, its TCP socket, its noise and
// yamux layers and each of their streams, three `debug` instances a logger (itself, `.error`,
// `.trace`), each a closure with its own properties and an `isatty` call. A coordinator with 250
// agents held 1,287 of them, 2.6 KB each (13 KB per agent, README Sizing), all disabled: libp2p
// prints nothing unless DEBUG names it. With DEBUG unset, every component gets the one shared
// disabled logger below; with DEBUG set (to anything), libp2p makes its own loggers as before.
import type { ComponentLogger, Logger } from '@libp2p/interface'

const noop = (): void => {}
const disabled: Logger = Object.assign((_formatter: unknown, ..._args: unknown[]) => {}, {
  enabled: false,
  error: noop,
  trace: noop,
  newScope: (): Logger => disabled,
})
const quiet: ComponentLogger = { forComponent: () => disabled }

/** The logger to hand createLibp2p: the shared disabled one unless DEBUG is set (then undefined: libp2p's own). */
export function libp2pLogger(env: NodeJS.ProcessEnv = process.env): ComponentLogger | undefined {
  return env.DEBUG ? undefined : quiet
}
