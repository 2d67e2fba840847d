// `chorus demo`: a whole fleet on loopback, one job, the report, and a clean exit.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalFleet } from './fleet.js'
import { EXAMPLES_DIR } from './paths.js'
import { formatReport } from '../coordinator/report.js'

export const DEFAULT_DEMO_JOB = join(EXAMPLES_DIR, 'hello-fleet.json')

export async function runDemo(o: { agents: number; job?: string; json?: boolean; keep?: boolean; agentConfig?: string }): Promise<number> {
  const file = o.job ?? DEFAULT_DEMO_JOB
  const text = await readFile(file, 'utf8')
  const say = (line: string) => { if (!o.json) process.stdout.write(line + '\n') }
  const fleet = new LocalFleet({ agents: o.agents, keepDirs: o.keep ?? false, ...(o.agentConfig ? { agentConfigFile: o.agentConfig } : {}) })
  let keepDirs = o.keep ?? false
  const stop = async () => { await fleet.stop({ keepDirs }) }
  const onSignal = () => { void stop().then(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    say(`starting a coordinator and ${o.agents} agents on 127.0.0.1 ...`)
    const t0 = Date.now()
    await fleet.start()
    say(`fleet up in ${((Date.now() - t0) / 1000).toFixed(1)} s: coordinator ${fleet.multiaddr}, API http://${fleet.api}, nodes ${fleet.nodeIds.join(', ')}`)
    const jobId = await fleet.submit(text, file)
    say(`submitted ${file} as job ${jobId}`)
    const report = await fleet.waitForJob(jobId, 120_000)
    if (o.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n')
    else say('\n' + formatReport(report))
    const ok = report.instances.every((i) => i.status === 'success')
    if (o.keep) say(`\ndata directories and logs kept in ${fleet.baseDir}`)
    return ok ? 0 : 1
  } catch (err) {
    keepDirs = true
    process.stderr.write(`demo failed: ${(err as Error).message}\nlogs and data directories kept in ${fleet.baseDir}\n`)
    return 1
  } finally {
    await stop()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
