// The `chorus` command. Each subcommand imports what it needs when it runs, so an agent
// process never loads the HTTP server, the YAML parser or the simulator.
import { Command, InvalidArgumentError } from 'commander'
import { readFile } from 'node:fs/promises'
import { registerMemberCommands } from './members.js'
import { registerLifecycleCommands } from './lifecycle.js'
import { registerBenchHistory } from './bench-history.js'
import { addExamples } from './examples.js'
import { collectAttr, createProgram, fail, keepRunningOnRejection, makeLogger, onShutdown } from './program.js'
import { registerAgentCommand } from './agent-command.js'
import { EXIT, exitForError, exitForInstances, exitForReport, exitForStatus } from './exit.js'

const program = createProgram()

function positiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a whole number of at least 1, got "${value}"`)
  return n
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value]
}

program.command('keys')
  .description('Create (on first use) and print the ed25519 public key of a coordinator or agent data directory')
  .requiredOption('--data <dir>', 'data directory holding identity.json')
  .action(async (o: { data: string }) => {
    const { loadOrCreateIdentity } = await import('../runtime/identity.js')
    const { identity, created } = await loadOrCreateIdentity(o.data)
    process.stdout.write(`${identity.publicKey}\n`)
    if (created) process.stderr.write(`created a new key in ${o.data}/identity.json\n`)
  })

program.command('validate')
  .description('Check Courier job templates (JSON, YAML or TOML); exit 0 when every file is valid, 2 otherwise')
  .argument('<files...>', 'template files')
  .action(async (files: string[]) => {
    const { formatProblems } = await import('../protocol/parse.js')
    const { validateFiles } = await import('../runtime/files.js')
    const results = await validateFiles(files)
    let bad = 0
    for (const r of results) {
      if (r.problems.length === 0) process.stdout.write(`${r.file}: ok\n`)
      else {
        bad++
        for (const line of formatProblems(r.file, r.problems)) process.stdout.write(`${line}\n`)
      }
    }
    process.exitCode = bad > 0 ? EXIT.usage : EXIT.ok
  })

program.command('coordinator')
  .description('Run a coordinator: signs and publishes jobs, stores results in level, serves the HTTP API (loopback, or https beyond it); the first start writes an admin token to DATA/admin.token')
  .requiredOption('--data <dir>', 'data directory (key, level store, endpoints.json)')
  .option('--listen <multiaddr...>', 'libp2p listen addresses', ['/ip4/127.0.0.1/tcp/7700'])
  .option('--api <host:port>', 'HTTP API address; beyond loopback only with --api-tls-cert and --api-tls-key', '127.0.0.1:7070')
  .option('--api-host <name[:port]>', 'another name clients may use in the Host header (repeatable; default: the bound address, and localhost on loopback)', collect, [])
  .option('--api-tls-cert <file>', 'PEM certificate: serve the API over https')
  .option('--api-tls-key <file>', 'PEM private key of --api-tls-cert')
  .option('--require-approval', 'enrolments wait in `chorus nodes pending` until `chorus nodes approve ID`')
  .option('--retain-days <d>', 'finished instances, their runs and artifacts, and audit records older than D days are pruned in the background', positiveInt, 30)
  .action(async (o: { data: string; listen: string[]; api: string; apiHost: string[]; apiTlsCert?: string; apiTlsKey?: string; requireApproval?: boolean; retainDays: number }) => {
    const { CoordinatorRuntime } = await import('../coordinator/runtime.js')
    const logger = await makeLogger('coordinator')
    keepRunningOnRejection(logger)
    const rt = new CoordinatorRuntime({ dataDir: o.data, listen: o.listen, api: o.api, apiHosts: o.apiHost, ...(o.apiTlsCert ? { tlsCert: o.apiTlsCert } : {}), ...(o.apiTlsKey ? { tlsKey: o.apiTlsKey } : {}), ...(o.requireApproval ? { requireApproval: true } : {}), retainDays: o.retainDays, logger })
    onShutdown(() => rt.stop())
    const ep = await rt.start().catch((err: Error) => fail(err.message, 2))
    process.stdout.write(`coordinator ready\n  public key: ${ep.publicKey}\n  libp2p:     ${ep.multiaddrs.join(' ')}\n  api:        ${ep.apiUrl}\n  admin token: ${o.data}/admin.token (created on first start)\n`)
  })

registerAgentCommand(program)

const apiOption = ['--api <host:port|url>', 'coordinator HTTP API, e.g. 127.0.0.1:7070 or https://host:7070 (default $CHORUS_API, the profile, 127.0.0.1:7070)'] as const
const tokenOption = ['--token <token>', 'API token (default $CHORUS_TOKEN, else the profile $CHORUS_PROFILE or ~/.config/chorus/profile.json)'] as const
type ApiOpts = { api?: string; token?: string }

/** The API and token of a command (--api/--token, the environment, the profile). */
async function conn(o: ApiOpts): Promise<import('./client.js').ApiConn> {
  const { resolveConn } = await import('./client.js')
  return resolveConn(o).catch((err: Error) => fail(err.message, 2))
}

/** Posts a template file; exits with its problems (FILE: path: message) and the scheme's code unless the answer is a success. */
async function postTemplate<T>(file: string, path: string, o: ApiOpts, refusal: string): Promise<{ text: string; api: import('./client.js').ApiConn; body: T }> {
  const { apiPostText, contentTypeFor } = await import('./client.js')
  const text = await readFile(file, 'utf8').catch((err: Error) => fail(err.message, EXIT.usage))
  const api = await conn(o)
  const res = await apiPostText<T & { error?: string; problems?: { path: string; message: string }[] }>(api, path, text, contentTypeFor(file))
  if (res.status >= 300) {
    for (const p of res.body.problems ?? []) process.stderr.write(`${file}: ${p.path}: ${p.message}\n`)
    fail(`${refusal} (HTTP ${res.status})${res.body.error ? `: ${res.body.error}` : ''}`, exitForStatus(res.status))
  }
  return { text, api, body: res.body }
}

const job = program.command('job').description('Submit and inspect jobs')
job.command('submit')
  .description('Submit a job template (JSON, YAML or TOML); prints the job id. With --wait, watches it to the end (exit 0 succeeded, 1 failed)')
  .argument('<file>', 'template file')
  .option('--wait', 'watch the job to its end (as chorus job watch)')
  .option('--json', 'with --wait: the events as JSON lines')
  .option(...apiOption)
  .addHelpText('after', '\nExample: chorus job submit patch.yaml --wait')
  .action(async (file: string, o: ApiOpts & { wait?: boolean; json?: boolean }) => {
    const { api, body } = await postTemplate<{ id: string; instanceIds: string[]; warnings?: { path: string; message: string }[] }>(file, '/v1/jobs', o, 'the coordinator refused the job')
    for (const w of body.warnings ?? []) process.stderr.write(`${file}: warning: ${w.path}: ${w.message}\n`)
    process.stdout.write(o.json ? JSON.stringify({ type: 'submitted', id: body.id }) + '\n' : `${body.id}\n`)
    if (!o.wait) return
    const { watchJob } = await import('./watch.js')
    process.exitCode = await watchJob(api, body.id, { json: o.json })
  })
job.command('watch')
  .description('Watch a job live: a progress bar per group and batch, running and failed nodes, elapsed time and time left; exit 0 when it succeeded, 1 when it failed')
  .argument('<id>', 'job id')
  .option('--json', 'print the events as JSON lines')
  .option('--plain', 'one line per event even on a terminal')
  .option(...apiOption)
  .addHelpText('after', '\nExample: chorus job watch 3f1c9a2e-... --json | jq .type')
  .action(async (id: string, o: ApiOpts & { json?: boolean; plain?: boolean }) => {
    const { watchJob } = await import('./watch.js')
    process.exitCode = await watchJob(await conn(o), id, o)
  })
job.command('plan')
  .description('Show what a template would do on this fleet now, without running it: nodes per group, batches and order, quorum, timeouts; with --simulate, run it in the simulator over those groups')
  .argument('<file>', 'template file (JSON, YAML or TOML)')
  .option('--json', 'print JSON')
  .option('--simulate', 'simulate the rollout over the groups the coordinator resolves now: predicted completion p50/p99, most nodes running at once per group, failures vs budget, safety verdicts')
  .option('--seeds <k>', 'with --simulate: seeds to run (at most 20)', positiveInt, 5)
  .option('--profile <profile>', 'with --simulate: the links of every node, datacenter, wan or edge', 'datacenter')
  .option(...apiOption)
  .addHelpText('after', '\nExample: chorus job plan patch.yaml --simulate --seeds 10 --profile wan')
  .action(async (file: string, o: ApiOpts & { json?: boolean; simulate?: boolean; seeds: number; profile: string }) => {
    const { text, body } = await postTemplate<import('../coordinator/plan.js').Plan>(file, '/v1/plan', o, 'no plan')
    if (o.simulate) return simulatePlanCommand(file, text, body, o)
    const { formatPlan } = await import('../coordinator/plan.js')
    process.stdout.write((o.json ? JSON.stringify(body, null, 2) : formatPlan(body)) + '\n')
  })

/** `job plan --simulate`: the simulator, in this process, over the plan's groups. */
async function simulatePlanCommand(file: string, text: string, plan: import('../coordinator/plan.js').Plan, o: { json?: boolean; seeds: number; profile: string }): Promise<void> {
  if (!['datacenter', 'wan', 'edge'].includes(o.profile)) fail(`--profile: expected datacenter, wan or edge, got "${o.profile}"`, EXIT.usage)
  const { formatFromFileName, parseTemplateText } = await import('../protocol/parse.js')
  const parsed = parseTemplateText(text, formatFromFileName(file))
  if (!parsed.ok) fail(`${file}: not a valid template`, EXIT.usage)
  const { simulatePlan } = await import('../sim/plan.js')
  let sim: import('../sim/plan.js').PlanSimulation
  try {
    sim = simulatePlan({ template: parsed.template, groups: plan.groups.map((g) => g.nodes.map((n) => n.nodeId)), seeds: o.seeds, profile: o.profile as 'datacenter' | 'wan' | 'edge' })
  } catch (err) { fail((err as Error).message, EXIT.usage) }
  if (o.json) return void process.stdout.write(JSON.stringify(sim) + '\n')
  const c = sim.completion_s
  const lines = [`simulated ${sim.seeds} seed(s), ${sim.nodes} nodes on ${sim.profile} links: completion p50 ${c.p50 ?? '-'} s, p99 ${c.p99 ?? '-'} s${c.undecided_seeds ? `, ${c.undecided_seeds} seed(s) undecided` : ''}; outcomes ${Object.entries(sim.outcomes).map(([k, v]) => `${k} ${v}`).join(', ')}`]
  for (const g of sim.groups) lines.push(`group ${g.group}: ${g.nodes} nodes, at most ${g.most_running_at_once} running at once, failures up to ${g.failures_max} (budget ${g.failure_budget}${g.within_budget ? '' : ', EXCEEDED'})`)
  lines.push(`safety: ${Object.entries(sim.safety).map(([k, v]) => `${k} ${v === 'ok' ? 'ok' : `VIOLATED (seeds ${v.violated_seeds.join(', ')})`}`).join(', ')}`)
  process.stdout.write(lines.join('\n') + '\n')
}
job.command('show')
  .description('Show a job: its template, status and instances')
  .argument('<id>', 'job id')
  .option(...apiOption)
  .action(async (id: string, o: { api?: string }) => {
    const { apiGet } = await import('./client.js')
    process.stdout.write(JSON.stringify(await apiGet(await conn(o), `/v1/jobs/${encodeURIComponent(id)}`), null, 2) + '\n')
  })

job.command('cancel')
  .description('Cancel a job (no new instances; running ones finish), or only chosen occurrences with --occurrence')
  .argument('<id>', 'job id')
  .option('--occurrence <time...>', 'occurrence times to cancel (ISO 8601, as `chorus job next` prints them)')
  .option(...apiOption)
  .action((id: string, o: ApiOpts & { occurrence?: string[] }) => adminRequest(o, 'POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`, o.occurrence ? { occurrences: o.occurrence } : {}))
job.command('next')
  .description('List the next occurrences of a job, and which an exception window or a cancellation removes')
  .argument('<id>', 'job id')
  .option('--count <n>', 'how many', positiveInt, 10)
  .option('--json', 'print JSON')
  .option(...apiOption)
  .action(async (id: string, o: { api?: string; count: number; json?: boolean }) => {
    const { apiGet } = await import('./client.js')
    const next = await apiGet<{ items: { at: string; excluded?: string; canceled?: boolean }[] }>(await conn(o), `/v1/jobs/${encodeURIComponent(id)}/next?count=${o.count}`)
    if (o.json) process.stdout.write(JSON.stringify(next, null, 2) + '\n')
    else for (const n of next.items) process.stdout.write(`${n.at}${n.excluded ? `  excluded by ${n.excluded}` : ''}${n.canceled ? '  canceled' : ''}\n`)
  })

const exceptions = program.command('exceptions').description('Global exception windows (blackouts) that jobs opt into with chorus.globalExceptions')
exceptions.command('add')
  .description('Add or replace a global exception window; every opted-in job gets its future occurrences recomputed')
  .requiredOption('--id <id>', 'name of the window')
  .requiredOption('--rrule <rule>', 'when each window starts, e.g. "RRULE:FREQ=WEEKLY;BYDAY=SA;BYHOUR=0"')
  .requiredOption('--duration <minutes>', 'length of each window in minutes', positiveInt)
  .option(...apiOption)
  .action((o: ApiOpts & { id: string; rrule: string; duration: number }) => adminRequest(o, 'POST', '/v1/exceptions', { id: o.id, rrule: o.rrule, duration: o.duration }))
exceptions.command('list')
  .description('List the global exception windows')
  .option(...apiOption)
  .action(async (o: { api?: string }) => {
    const { apiGet } = await import('./client.js')
    process.stdout.write(JSON.stringify(await apiGet(await conn(o), '/v1/exceptions'), null, 2) + '\n')
  })
exceptions.command('remove')
  .description('Remove a global exception window')
  .argument('<id>', 'window id')
  .option(...apiOption)
  .action((id: string, o: ApiOpts) => adminRequest(o, 'DELETE', `/v1/exceptions/${encodeURIComponent(id)}`))

program.command('report')
  .description('Report on a job or an instance: every run with its group, batch, status and steps; exit 1 when an instance failed, 4 when the id is unknown')
  .argument('<id>', 'job id or instance id')
  .option('--json', 'print JSON instead of a table')
  .option('--page <n>', 'a job\'s instances page by page, in occurrence order', positiveInt, 1)
  .option('--size <n>', 'instances per page (each with all its runs)', positiveInt, 20)
  .option('--cursor <key>', 'the cursor the previous page printed')
  .option(...apiOption)
  .action(async (id: string, o: { api?: string; json?: boolean; page: number; size: number; cursor?: string }) => {
    const { apiGet } = await import('./client.js')
    const { formatReport } = await import('../coordinator/report.js')
    const query = new URLSearchParams({ page: String(o.page), size: String(o.size), ...(o.cursor ? { cursor: o.cursor } : {}) })
    const report = await apiGet<import('../coordinator/report.js').JobReport>(await conn(o), `/v1/reports/${encodeURIComponent(id)}?${query}`)
    process.stdout.write((o.json ? JSON.stringify(report, null, 2) : formatReport(report)) + '\n')
    if (!o.json && report.pagination?.next) process.stderr.write(`page ${o.page} of ${Math.ceil((report.pagination.total ?? 0) / o.size)}: --page ${o.page + 1} --cursor ${report.pagination.next}\n`)
    process.exitCode = exitForReport(report, id)
  })

program.command('artifacts')
  .description('List the evidence a run\'s steps attached, or print one artifact')
  .argument('<run-id>', 'run id (chorus report --json shows them)')
  .option('--step <n>', 'step number', positiveInt)
  .option('--name <name>', 'artifact name (with --step): print its content')
  .option(...apiOption)
  .action(async (runId: string, o: { api?: string; step?: number; name?: string }) => {
    const { apiFetch, apiGet } = await import('./client.js')
    const api = await conn(o)
    if (o.name && o.step) {
      const res = await apiFetch(api, `/v1/runs/${encodeURIComponent(runId)}/steps/${o.step}/artifacts/${encodeURIComponent(o.name)}`)
      if (!res.ok) fail(((await res.json()) as { error?: string }).error ?? `HTTP ${res.status}`)
      process.stdout.write(Buffer.from(await res.arrayBuffer()))
      if (res.headers.get('x-chorus-truncated') === 'true') process.stderr.write('(truncated: the agent carries at most 64 KiB of an artifact)\n')
      return
    }
    const list = await apiGet<{ items: { step: number; name: string; bytes: number; truncated: boolean }[] }>(api, `/v1/runs/${encodeURIComponent(runId)}/artifacts`)
    for (const a of list.items.filter((x) => !o.step || x.step === o.step)) process.stdout.write(`step ${a.step}\t${a.name}\t${a.bytes} bytes${a.truncated ? ' (truncated)' : ''}\n`)
  })

const nodesCommand = program.command('nodes')
  .description('List the nodes enrolled with the coordinator, with liveness (alive = connected now)')
  .option('--search <query>', 'only nodes matching a search query, e.g. "role:webapp AND env:prod" (grammar in the README)')
  .option('--json', 'print JSON')
  .option(...apiOption)
  .addHelpText('after', '\nExample: chorus nodes --search "role:web AND env:prod" --size 100')

/** Exits with the API's error and its problems, one per line. */
function refused(res: { status: number; body: { error?: string; problems?: { path: string; message: string }[] } }): never {
  fail([res.body.error ?? `HTTP ${res.status}`, ...(res.body.problems ?? []).map((p) => `  ${p.path}: ${p.message}`)].join('\n'), exitForStatus(res.status))
}

/** One API request with a JSON body; the JSON answer, or exit 1 with the coordinator's error. */
async function apiJson(o: ApiOpts, method: string, path: string, body?: unknown): Promise<unknown> {
  const { apiRequest } = await import('./client.js')
  const res = await apiRequest<{ error?: string; problems?: { path: string; message: string }[] }>(await conn(o), method, path, method === 'GET' ? undefined : body)
  if (res.status >= 400) refused(res)
  return res.body
}

async function adminRequest(o: ApiOpts, method: string, path: string, body?: unknown): Promise<void> {
  process.stdout.write(JSON.stringify(await apiJson(o, method, path, body), null, 2) + '\n')
}

registerLifecycleCommands(program, job, nodesCommand, {
  apiOption,
  request: (o, method, path, body) => apiJson(o, method, path, body),
  watch: async (o, jobId) => (await import('./watch.js')).watchJob(await conn(o), jobId, { json: o.json }),
})
registerMemberCommands(program, nodesCommand, { apiOption, collectAttr, request: (o, method, path, body) => apiJson(o, method, path, body) })

const lists = program.command('lists').description('Saved node lists (nodeListType "savedList", listId)')
lists.command('list').description('Show the saved lists').option(...apiOption).action((o: { api?: string }) => adminRequest(o, 'GET', '/v1/lists'))
lists.command('set').description('Create or replace a saved list')
  .argument('<id>', 'list id (the template\'s listId)')
  .requiredOption('--nodes <ids>', 'comma-separated node ids')
  .option('--name <name>', 'a readable name')
  .option(...apiOption)
  .action((id: string, o: { nodes: string; name?: string; api?: string }) => adminRequest(o, 'PUT', `/v1/lists/${encodeURIComponent(id)}`, { name: o.name ?? id, nodes: o.nodes.split(',').map((x) => x.trim()).filter(Boolean) }))
lists.command('remove').description('Delete a saved list').argument('<id>').option(...apiOption).action((id: string, o: { api?: string }) => adminRequest(o, 'DELETE', `/v1/lists/${encodeURIComponent(id)}`))

const filters = program.command('filters').description('Saved node filters (nodeListType "savedFilter", filterId)')
filters.command('list').description('Show the saved filters').option(...apiOption).action((o: { api?: string }) => adminRequest(o, 'GET', '/v1/filters'))
filters.command('set').description('Create or replace a saved filter; prints the nodes it matches now')
  .argument('<id>', 'filter id (the template\'s filterId)')
  .option('--query <query>', 'search query, e.g. "role:webapp AND env:prod"')
  .option('--constraints <json>', 'Node Management constraints, e.g. \'{"attributes":[{"name":"kernel_name","operator":"=","value":["Linux"]}]}\'')
  .option('--name <name>', 'a readable name')
  .option(...apiOption)
  .action((id: string, o: { query?: string; constraints?: string; name?: string; api?: string }) => {
    if (!o.query && !o.constraints) fail('give --query or --constraints (or both)', 2)
    let constraints: unknown
    if (o.constraints) {
      try { constraints = JSON.parse(o.constraints) } catch (err) { fail(`--constraints: not JSON: ${(err as Error).message}`, 2) }
    }
    return adminRequest(o, 'PUT', `/v1/filters/${encodeURIComponent(id)}`, { name: o.name ?? id, ...(o.query ? { query: o.query } : {}), ...(constraints ? { constraints } : {}) })
  })
filters.command('remove').description('Delete a saved filter').argument('<id>').option(...apiOption).action((id: string, o: { api?: string }) => adminRequest(o, 'DELETE', `/v1/filters/${encodeURIComponent(id)}`))

const tokens = program.command('tokens').description('API tokens (admin): each has a name and a role, reader, operator or admin; shown once, stored as a hash')
tokens.command('create').description('Create a token and print it (once: only its hash is kept)')
  .requiredOption('--name <name>', 'a unique name (audit records name the token)')
  .requiredOption('--role <role>', 'reader (every GET), operator (reader + submit, plan, cancel, exceptions, lists, filters) or admin (operator + tokens, audit, enrolment)')
  .option('--ttl <duration>', 'expires after, e.g. 30d, 12h, 15m, 90s (default: never)')
  .option('--json', 'print JSON {name, role, token, expiresAt}')
  .option(...apiOption)
  .action(async (o: ApiOpts & { name: string; role: string; ttl?: string; json?: boolean }) => {
    const { apiRequest } = await import('./client.js')
    const res = await apiRequest<{ token?: string; error?: string; problems?: { path: string; message: string }[] }>(await conn(o), 'POST', '/v1/tokens', { name: o.name, role: o.role, ...(o.ttl ? { ttl: o.ttl } : {}) })
    if (res.status !== 201 || !res.body.token) refused(res)
    process.stdout.write(o.json ? JSON.stringify(res.body, null, 2) + '\n' : `${res.body.token}\n`)
  })
tokens.command('list').description('List the tokens: name, role, created, expires (never the token or its hash)')
  .option('--json', 'print JSON')
  .option(...apiOption)
  .action(async (o: ApiOpts & { json?: boolean }) => {
    const { apiGet } = await import('./client.js')
    const list = await apiGet<{ items: { name: string; role: string; createdAt: string; expiresAt: string | null }[] }>(await conn(o), '/v1/tokens')
    if (o.json) process.stdout.write(JSON.stringify(list, null, 2) + '\n')
    else for (const t of list.items) process.stdout.write(`${t.name}\t${t.role}\tcreated ${t.createdAt}\t${t.expiresAt ? `expires ${t.expiresAt}` : 'no expiry'}\n`)
  })
tokens.command('revoke').description('Revoke a token: it is refused (401) from now on').argument('<name>', 'token name').option(...apiOption)
  .action((name: string, o: ApiOpts) => adminRequest(o, 'DELETE', `/v1/tokens/${encodeURIComponent(name)}`))

program.command('audit')
  .description('The audit log (admin): every state change with its time, token name, role, action, object and outcome, oldest first')
  .option('--since <time>', 'from this ISO 8601 time on, e.g. 2026-12-01T00:00:00Z')
  .option('--limit <n>', 'at most this many records (at most 1000)', positiveInt, 100)
  .option('--json', 'print JSON')
  .option(...apiOption)
  .action(async (o: ApiOpts & { since?: string; limit: number; json?: boolean }) => {
    const { apiGet } = await import('./client.js')
    const page = await apiGet<{ items: import('../coordinator/core.js').AuditRecord[]; more: boolean }>(await conn(o), `/v1/audit?limit=${o.limit}${o.since ? `&since=${encodeURIComponent(o.since)}` : ''}`)
    if (o.json) process.stdout.write(JSON.stringify(page, null, 2) + '\n')
    else for (const a of page.items) process.stdout.write(`${a.at}\t${a.token} (${a.role})\t${a.action}\t${a.object}\t${a.outcome}\n`)
    if (!o.json && page.more) process.stderr.write(`more records: chorus audit --since ${page.items.at(-1)?.at ?? ''}\n`)
  })

program.command('ui')
  .description('Print a one-time login URL for the web console (valid 5 minutes, once); the browser session gets this token\'s role')
  .option(...apiOption)
  .addHelpText('after', `
The URL carries the code in its fragment (#code=...), which browsers never send to a server,
so it does not reach a log. Opening it exchanges the code for a session cookie (HttpOnly,
SameSite=Strict, 8 hours); "Log out" ends the session. Sessions live in the coordinator's
memory: a coordinator restart logs everyone out.`)
  .action(async (o: ApiOpts) => {
    const { apiBase, apiRequest } = await import('./client.js')
    const api = await conn(o)
    const res = await apiRequest<{ path?: string; expiresAt?: string; error?: string; problems?: { path: string; message: string }[] }>(api, 'POST', '/v1/ui/codes', {})
    if (res.status !== 201 || !res.body.path) refused(res)
    process.stdout.write(`${apiBase(api.api)}${res.body.path}\n`)
    process.stderr.write(`valid once, until ${res.body.expiresAt}\n`)
  })

program.command('demo')
  .description('Start a coordinator and N agents on 127.0.0.1, run a job, print the report, stop everything; exit 0 when the job succeeded')
  .option('--agents <n>', 'number of agent processes', positiveInt, 5)
  .option('--job <file>', 'job template to run (default: examples/hello-fleet.json)')
  .option('--json', 'print the report as JSON')
  .option('--keep', 'keep the temporary data directories and logs')
  .option('--agent-config <file>', 'agent configuration file given to every agent (e.g. a wider allowlist for --job)')
  .action(async (o: { agents: number; job?: string; json?: boolean; keep?: boolean; agentConfig?: string }) => {
    const { runDemo } = await import('./demo.js')
    process.exitCode = await runDemo(o)
  })

const bench = program.command('bench').description('Benchmarks that print JSON')
bench.command('fanout')
  .description('Submit an immediate one-step job to N agent processes R times; time from submit to all N results stored')
  .option('--agents <n>', 'number of agent processes', positiveInt, 20)
  .option('--rounds <r>', 'jobs to submit, one after another', positiveInt, 5)
  .option('--settle <s>', 'seconds to wait after the join before the idle sample and the rounds (agents finish starting: GC of start-up garbage)', positiveInt, 2)
  .option('--json', 'print JSON (the only format)')
  .action(async (o: { agents: number; rounds: number; settle: number }) => {
    const { benchFanout } = await import('./bench.js')
    process.stdout.write(JSON.stringify(await benchFanout(o)) + '\n')
  })
bench.command('fleet')
  .description('N real agents (own key, libp2p node, core and runtime; in-memory store, no-op interpreter) packed K to a process against one coordinator: join, fan-out, results per second, coordinator RSS and CPU per agent, reconnect after SIGKILL')
  .option('--agents <n>', 'number of agents', positiveInt, 100)
  .option('--per-process <k>', 'agents per process', positiveInt, 50)
  .option('--rounds <r>', 'fan-out rounds and burst rounds', positiveInt, 3)
  .option('--history-runs <r>', 'measure again with this many run records already stored (filled by running no-op jobs)', (v: string) => { const n = Number(v); if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`expected a whole number, got "${v}"`); return n }, 0)
  .option('--joining <j>', 'agents joining at once across the fleet: each process starts its share, the next when one has joined', positiveInt, 50)
  .option('--no-reconnect', 'skip the SIGKILL and restart of the coordinator (to profile a coordinator that exits normally)')
  .option('--keep', 'keep the temporary data directories and logs')
  .option('--json', 'print JSON (the only format)')
  .action(async (o: { agents: number; perProcess: number; rounds: number; historyRuns: number; joining: number; reconnect: boolean; keep?: boolean }) => {
    const { benchFleet } = await import('./bench-fleet.js')
    process.stdout.write(JSON.stringify(await benchFleet(o)) + '\n')
  })
program.command('agent-pack', { hidden: true })
  .description('Internal: K agents in one process for `chorus bench fleet`, driven over its IPC channel')
  .action(async () => {
    const { runPack } = await import('./fleet-pack.js')
    await runPack(await makeLogger('agent-pack'))
  })
registerBenchHistory(program.commands.find((c) => c.name() === 'bench')!)

program.command('simulate-plan', { hidden: true })
  .description('Internal: simulate a plan (JSON {template, groups, seeds, profile} on stdin), print the result as JSON; POST /v1/plan?simulate=K runs it')
  .action(async () => {
    const chunks: Buffer[] = []
    for await (const c of process.stdin) chunks.push(c as Buffer)
    const { simulatePlan } = await import('../sim/plan.js')
    process.stdout.write(JSON.stringify(simulatePlan(JSON.parse(Buffer.concat(chunks).toString('utf8')))) + '\n')
  })

program.command('sim')
  .description('Run the agent and coordinator cores over a deterministic simulated network (faults, partitions, crashes) and check the safety properties')
  .requiredOption('--scenario <name>', 'fleet-patch, fleet-scale, partition-heal, coordinator-crash, edge-offline, edge-dark-publish, quorum-upgrade, gated-rollout, rogue-hosts, coordinator-loss, peer-sync')
  .option('--agents <n>', 'simulated agents', positiveInt)
  .option('--seed <s>', 'one seed (replays a run bit for bit)', (v: string) => Number(v))
  .option('--seeds <k>', 'run K seeds (1..K)', positiveInt)
  .option('--job <file>', 'simulate your own Courier template instead of the built-in job')
  .option('--json', 'print the JSON summary')
  .option('--report <file.html>', 'write a self-contained HTML page with a timeline of the run')
  .option('--real-crypto', 'sign and verify with real ed25519 (default: a fast provider with the same semantics: a signature verifies only under its signer\'s key and for its exact bytes)')
  .action(async (o: { scenario: string; agents?: number; seed?: number; seeds?: number; job?: string; json?: boolean; report?: string; realCrypto?: boolean }) => {
    const { rerunWithLargerHeap } = await import('./sim-heap.js')
    const rerun = rerunWithLargerHeap(o.agents)
    if (rerun) { process.exitCode = await rerun; return }
    const { runSimCommand } = await import('../sim/cli.js')
    process.exitCode = await runSimCommand(o)
  })

/** Every command that talks to the API (it has --api; the coordinator's --api is where it listens) takes --token. */
function addTokenOption(cmd: Command): void {
  for (const c of cmd.commands) {
    if (c.name() !== 'coordinator' && c.options.some((opt) => opt.long === '--api')) c.option(...tokenOption)
    addTokenOption(c)
  }
}
addTokenOption(program)
addExamples(program)

program.parseAsync(process.argv).catch((err: Error) => fail(err.message, exitForError(err)))
