// The lifecycle commands: `job list|run|delete`, `instance list|show`, `run show|logs`, and
// `nodes` (a table with a header) and `nodes show`. Every one takes --json; every list pages.
import { InvalidArgumentError, type Command } from 'commander'
import type { Page } from '../coordinator/lifecycle.js'
import type { InstanceReport, JobReport, RunReport } from '../coordinator/report.js'

export type ApiOpts = { api?: string; token?: string; json?: boolean }

export interface LifecycleHelpers {
  apiOption: readonly [string, string]
  /** One API request; the JSON answer, or exit with the scheme's code and the coordinator's error. */
  request: (o: ApiOpts, method: string, path: string, body?: unknown) => Promise<unknown>
  /** Watches a job to its end; resolves to the exit code. */
  watch: (o: ApiOpts, jobId: string) => Promise<number>
}

function whole(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a whole number of at least 1, got "${value}"`)
  return n
}

/** Columns padded to their widest cell. */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows]
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)))
  return all.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()).join('\n')
}

const out = (text: string): void => { process.stdout.write(text + '\n') }
const json = (value: unknown) => out(JSON.stringify(value, null, 2))
const q = (params: Record<string, string | number | undefined>) => {
  const s = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)])).toString()
  return s ? `?${s}` : ''
}
const enc = encodeURIComponent

/** A page of history: `next` is the cursor of the page after it (stable while items arrive); total null when not counted. */
type CursorPage<T> = { items: T[]; pagination: { page: number; size: number; total: number | null; next: string | null } }

/** Prints a page as a table (or JSON), and where the next page is. */
function printPage<T>(o: ApiOpts, page: Page<T> | CursorPage<T>, header: string[], row: (item: T) => string[]): void {
  if (o.json) return json(page)
  out(table(header, page.items.map(row)))
  const { page: n, size, total } = page.pagination
  const next = 'next' in page.pagination ? page.pagination.next : undefined
  if (next) process.stderr.write(`page ${n}${total === null ? '' : ` of ${Math.ceil(total / size)} (${total} in all)`}: --page ${n + 1} --cursor ${next}\n`)
  else if (next === undefined && total !== null && n * size < total) process.stderr.write(`page ${n} of ${Math.ceil(total / size)} (${total} in all): --page ${n + 1}\n`)
}

/** History lists also take the cursor a page printed: the page after it, whatever arrived meanwhile. */
function cursorPaging(cmd: Command): Command {
  return paging(cmd).option('--cursor <key>', 'the cursor the previous page printed (stable while instances arrive)')
}

function paging(cmd: Command): Command {
  return cmd.option('--page <n>', 'page number, from 1', whole, 1).option('--size <n>', 'items per page (at most 1000)', whole, 50)
}

type Paged = ApiOpts & { page: number; size: number; cursor?: string }

export function registerLifecycleCommands(program: Command, job: Command, nodes: Command, h: LifecycleHelpers): void {
  paging(job.command('list'))
    .description('List jobs, newest first')
    .option('--status <status>', 'active, canceled or completed')
    .option('--name <text>', 'only jobs whose name contains this')
    .option('--json', 'print JSON')
    .option(...h.apiOption)
    .addHelpText('after', '\nExample: chorus job list --status active --size 20')
    .action(async (o: Paged & { status?: string; name?: string }) => {
      const page = await h.request(o, 'GET', `/v1/jobs${q({ status: o.status, name: o.name, page: o.page, size: o.size })}`) as Page<JobReport['job']>
      printPage(o, page, ['ID', 'NAME', 'STATUS', 'SCHEDULE', 'CREATED'], (j) => [j.id, j.name, j.status, j.scheduleRule, j.createdAt ?? ''])
    })
  job.command('run')
    .description('Run a stored job now, as Courier\'s manual run: a new immediate job with its template (audited); prints the new job id')
    .argument('<id>', 'job id')
    .option('--wait', 'watch the new job to its end (exit 0 succeeded, 1 failed)')
    .option('--json', 'print JSON (with --wait, the events as JSON lines after it)')
    .option(...h.apiOption)
    .addHelpText('after', '\nExample: chorus job run 3f1c9a2e-... --wait')
    .action(async (id: string, o: ApiOpts & { wait?: boolean }) => {
      const r = await h.request(o, 'POST', `/v1/jobs/${enc(id)}/run`, {}) as { id: string }
      // One line: with --wait the events follow as JSON lines.
      if (o.json) out(JSON.stringify(r))
      else out(r.id)
      if (o.wait) process.exitCode = await h.watch(o, r.id)
    })
  job.command('delete')
    .description('Delete a job with its instances and runs (audited); refused while an instance is live')
    .argument('<id>', 'job id')
    .option('--json', 'print JSON')
    .option(...h.apiOption)
    .addHelpText('after', '\nExample: chorus job delete 3f1c9a2e-...')
    .action(async (id: string, o: ApiOpts) => {
      const r = await h.request(o, 'DELETE', `/v1/jobs/${enc(id)}`, {})
      if (o.json) json(r)
      else out(`deleted ${id}`)
    })

  const instance = program.command('instance').description('Instances: one per occurrence of a job')
  cursorPaging(instance.command('list'))
    .description('List instances, newest first (finished ones are read from the store; retention: the coordinator\'s --retain-days)')
    .option('--job <id>', 'only the instances of this job')
    .option('--status <status>', 'running, success, failure, excluded, canceled or quorum_failed')
    .option('--json', 'print JSON')
    .option(...h.apiOption)
    .addHelpText('after', '\nExample: chorus instance list --job 3f1c9a2e-... --status failure')
    .action(async (o: Paged & { job?: string; status?: string }) => {
      const page = await h.request(o, 'GET', `/v1/instances${q({ job: o.job, status: o.status, page: o.page, size: o.size, cursor: o.cursor })}`) as CursorPage<Omit<InstanceReport, 'runs'>>
      printPage(o, page, ['ID', 'JOB', 'STATUS', 'OCCURRENCE', 'COUNTS'], (i) => [i.id, i.jobId, i.status, i.occurrenceAt ?? '', counts(i.counts)])
    })
  instance.command('show')
    .description('Show an instance: status, counts and reason')
    .argument('<id>', 'instance id')
    .option('--json', 'print JSON')
    .option(...h.apiOption)
    .addHelpText('after', '\nExample: chorus instance show 7a0e...-1733040000000')
    .action(async (id: string, o: ApiOpts) => {
      const i = await h.request(o, 'GET', `/v1/instances/${enc(id)}`) as Omit<InstanceReport, 'runs'>
      if (o.json) return json(i)
      out(`instance ${i.id}  job ${i.jobId}  ${i.status.toUpperCase()}  occurrence ${i.occurrenceAt}  (${counts(i.counts) || 'no runs'})${i.reason ? `\n  ${i.reason}` : ''}`)
    })

  const run = program.command('run').description('Runs: one node\'s part in an instance')
  run.command('show')
    .description('Show a run: node, group, batch, status and its steps')
    .argument('<id>', 'run id (chorus report --json shows them)')
    .option('--json', 'print JSON')
    .option(...h.apiOption)
    .addHelpText('after', '\nExample: chorus run show 5b2c...')
    .action(async (id: string, o: ApiOpts) => {
      const r = await h.request(o, 'GET', `/v1/runs/${enc(id)}`) as RunReport
      if (o.json) return json(r)
      out(`run ${r.runId}  node ${r.nodeId}  group ${r.group} batch ${r.batch}  ${r.status}${r.reason ? `  ${r.reason}` : ''}`)
      out(table(['STEP', 'NAME', 'STATUS', 'ATTEMPTS', 'EXIT'], r.steps.map((s) => [String(s.number), s.name, s.status, String(s.attempts), s.exitCode === null ? '-' : String(s.exitCode)])))
    })
  run.command('logs')
    .description('Print the stdout and stderr of a run\'s steps (the last attempt\'s; the attempt log lists every attempt)')
    .argument('<id>', 'run id')
    .option('--step <n>', 'only this step', whole)
    .option('--json', 'print JSON')
    .option(...h.apiOption)
    .addHelpText('after', '\nExample: chorus run logs 5b2c... --step 2')
    .action(async (id: string, o: ApiOpts & { step?: number }) => {
      const logs = await h.request(o, 'GET', `/v1/runs/${enc(id)}/logs${q({ step: o.step })}`) as { items: { step: number; name: string; status: string; attempts: number; stdout: string; stderr: string }[] }
      if (o.json) return json(logs)
      for (const s of logs.items) {
        out(`== step ${s.step} ${s.name}: ${s.status} after ${s.attempts} attempt(s)`)
        if (s.stdout) out(`-- stdout\n${s.stdout.trimEnd()}`)
        if (s.stderr) out(`-- stderr\n${s.stderr.trimEnd()}`)
      }
    })

  paging(nodes)
  cursorPaging(nodes.command('runs'))
    .description('List a node\'s runs, newest first (from the store)')
    .argument('<id>', 'node id')
    .option('--json', 'print JSON')
    .option(...h.apiOption)
    .addHelpText('after', '\nExample: chorus nodes runs web-01 --size 20')
    .action(async (id: string, _o: Paged, cmd: Command) => {
      const o = cmd.optsWithGlobals<Paged>()
      const page = await h.request(o, 'GET', `/v1/nodes/${enc(id)}/runs${q({ page: o.page, size: o.size, cursor: o.cursor })}`) as CursorPage<RunReport & { instanceId: string }>
      printPage(o, page, ['RUN', 'INSTANCE', 'STATUS', 'FINISHED'], (r) => [r.runId, r.instanceId, r.status, r.finishedAt ?? '-'])
    })
  nodes.command('show')
    .description('Show one node: facts, skills, addresses, liveness')
    .argument('<id>', 'node id')
    .option('--json', 'print JSON')
    .option(...h.apiOption)
    .addHelpText('after', '\nExample: chorus nodes show web-01')
    .action(async (id: string, _o: ApiOpts, cmd: Command) => {
      // --json and --api also belong to `nodes`: take them wherever they were written.
      const o = cmd.optsWithGlobals<ApiOpts>()
      const n = await h.request(o, 'GET', `/v1/nodes/${enc(id)}`) as NodeItem & { skills: Record<string, string[]>; agentVersion: string; addrs: string[] }
      if (o.json) return json(n)
      out(`node ${n.nodeId}  ${n.alive ? 'alive' : 'DOWN'}  agent ${n.agentVersion}  last seen ${n.lastSeenAt}`)
      out(table(['FACT', 'VALUE'], Object.entries(n.facts).map(([k, v]) => [k, v])))
      out(`skills: ${Object.entries(n.skills).map(([k, v]) => `${k} ${v.join(',')}`).join('; ')}`)
    })
  nodes.action(async (o: Paged & { search?: string }) => {
    const page = await h.request(o, 'GET', `/v1/nodes${q({ search: o.search, page: o.page, size: o.size })}`) as Page<NodeItem>
    printPage(o, page, ['NODE', 'STATE', 'HOSTNAME', 'LAST SEEN'], (n) => [n.nodeId, n.alive ? 'alive' : 'DOWN', n.facts.hostname ?? '', n.lastSeenAt])
  })
}

type NodeItem = { nodeId: string; alive: boolean; lastSeenAt: string; facts: Record<string, string> }

function counts(c: Record<string, number>): string {
  return Object.entries(c).map(([k, v]) => `${k} ${v}`).join(', ')
}
