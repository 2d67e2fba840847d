// The fleet the end-to-end test files share: a scratch directory and a LocalFleet of real
// agent and coordinator processes, started before the file's tests and stopped after them.
import { afterAll, beforeAll } from 'vitest'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalFleet, type FleetOptions } from '../../cli/fleet.js'

/** Registers the hooks; `use` receives the started fleet and the scratch directory. */
export function withLocalFleet(prefix: string, options: FleetOptions, use: (fleet: LocalFleet, dir: string) => void, startTimeoutMs = 90_000): void {
  let fleet: LocalFleet | undefined
  let dir: string | undefined
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix))
    fleet = await new LocalFleet(options).start()
    use(fleet, dir)
  }, startTimeoutMs)
  afterAll(async () => {
    // A coordinator that exited by itself (not killed by a test) crashed: its last lines say why.
    const c = fleet?.coordinator
    if (c && typeof c.proc.exitCode === 'number' && c.proc.exitCode !== 0) {
      const tail = (await readFile(c.logFile, 'utf8').catch(() => '')).split('\n').slice(-30).join('\n')
      console.error(`the coordinator of ${prefix} exited by itself with code ${c.proc.exitCode}; its last log lines:\n${tail}`)
    }
    await fleet?.stop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })
}
