// The console's pages. Each loads what it shows from the API; actions are shown to operators
// and admins only (the server refuses them to readers anyway).
import { html } from 'htm/preact'
import { useEffect, useMemo, useRef, useState } from 'preact/hooks'
import { call, enc, get, templateType, type GroupCounts, type Instance, type Job, type Page, type Problem, type Run, type StreamEvent } from './api.js'
import { locate } from './locate.js'
import { Pager, Progress, Status, Time, Timeline, tallyOf, type Tally } from './parts.js'

export interface Me { name: string; role: 'reader' | 'operator' | 'admin' }
export const canAct = (me: Me) => me.role !== 'reader'
const JOBS_PAGE = 20
const NODE_ROWS = 50
const RUNS_FETCH = 1000

/** Loads `load()` when `deps` change; `reload` loads again. */
function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { data?: T; error?: string; reload: () => void } {
  const [state, setState] = useState<{ data?: T; error?: string }>({})
  const [n, setN] = useState(0)
  useEffect(() => {
    let live = true
    load().then((data) => live && setState({ data }), (err: Error) => live && setState({ error: err.message }))
    return () => { live = false }
  }, [...deps, n])
  return { ...state, reload: () => setN((x) => x + 1) }
}

function Loading({ error }: { error?: string }) {
  return error ? html`<p class="error" role="alert">${error}</p>` : html`<p class="muted">loading…</p>`
}

export function JobsPage() {
  const [page, setPage] = useState(1)
  const [status, setStatus] = useState('')
  const [name, setName] = useState('')
  const q = `page=${page}&size=${JOBS_PAGE}${status ? `&status=${status}` : ''}${name ? `&name=${enc(name)}` : ''}`
  const jobs = useLoad(() => get<Page<Job>>(`/v1/jobs?${q}`), [q])
  const p = jobs.data?.pagination
  return html`<section>
    <h1>Jobs</h1>
    <div class="filters">
      <label>Name <input value=${name} onInput=${(e: Event) => { setName((e.target as HTMLInputElement).value); setPage(1) }} /></label>
      <label>Status <select value=${status} onChange=${(e: Event) => { setStatus((e.target as HTMLSelectElement).value); setPage(1) }}>
        ${['', 'active', 'completed', 'canceled'].map((s) => html`<option value=${s}>${s || 'any'}</option>`)}
      </select></label>
    </div>
    ${jobs.data ? html`<table data-testid="jobs">
      <thead><tr><th>Name</th><th>Status</th><th>Schedule</th><th>Next (UTC)</th><th>Last instance</th><th>Created (UTC)</th></tr></thead>
      <tbody>${jobs.data.items.map((j) => html`<tr><td><a href=${`#/job/${j.id}`}>${j.name}</a></td><td><${Status} status=${j.status} /></td><td><code>${j.scheduleRule}</code></td><td><${Time} at=${j.nextAt} /></td>
        <td>${j.lastInstance ? html`<a href=${`#/instance/${j.lastInstance.id}`}><${Status} status=${j.lastInstance.status} /></a>` : '-'}</td><td><${Time} at=${j.createdAt} /></td></tr>`)}</tbody>
    </table>
    ${p && html`<${Pager} page=${p.page} pages=${Math.ceil(p.total / p.size)} go=${setPage} />`}` : html`<${Loading} error=${jobs.error} />`}
  </section>`
}

export function JobPage({ id, me }: { id: string; me: Me }) {
  const job = useLoad(() => get<Job & { template: unknown; instanceIds: string[] }>(`/v1/jobs/${enc(id)}`), [id])
  const next = useLoad(() => get<{ items: { at: string; excluded?: string; canceled?: boolean }[] }>(`/v1/jobs/${enc(id)}/next?count=5`), [id])
  const instances = useLoad(() => get<Page<Instance>>(`/v1/instances?job=${enc(id)}&size=${JOBS_PAGE}`), [id])
  const [message, setMessage] = useState('')
  const act = async (path: string, body: unknown = {}) => {
    const r = await call<{ id?: string }>('POST', path, body)
    setMessage(r.status < 300 ? `done${r.body.id ? `: job ${r.body.id}` : ''}` : `refused (HTTP ${r.status}): ${r.body.error ?? ''}`)
    job.reload()
    next.reload()
  }
  if (!job.data) return html`<${Loading} error=${job.error} />`
  const j = job.data
  return html`<section>
    <h1>Job ${j.name} <${Status} status=${j.status} /></h1>
    <p>id <code>${j.id}</code>, schedule <code>${j.scheduleRule}</code>, created <${Time} at=${j.createdAt} /></p>
    ${canAct(me) && html`<div class="actions">
      <button data-testid="run-now" onClick=${() => act(`/v1/jobs/${enc(id)}/run`)}>Run now</button>
      <button data-testid="cancel-job" onClick=${() => act(`/v1/jobs/${enc(id)}/cancel`)}>Cancel job</button>
    </div>`}
    ${message && html`<p role="status">${message}</p>`}
    <h2>Instances</h2>
    ${instances.data ? html`<table data-testid="instances"><thead><tr><th>Instance</th><th>Status</th><th>Occurrence</th><th>Runs</th></tr></thead>
      <tbody>${instances.data.items.map((i) => html`<tr><td><a href=${`#/instance/${i.id}`}>${i.id}</a></td><td><${Status} status=${i.status} /></td><td><${Time} at=${i.occurrenceAt} /></td><td>${Object.entries(i.counts).map(([k, v]) => `${k} ${v}`).join(', ')}</td></tr>`)}</tbody></table>` : html`<${Loading} error=${instances.error} />`}
    <h2>Next occurrences</h2>
    ${next.data ? html`<ul data-testid="next">${next.data.items.map((o) => html`<li><${Time} at=${o.at} /> ${o.excluded ? `⊘ excluded by ${o.excluded}` : ''}${o.canceled ? '⊘ canceled' : ''}
      ${canAct(me) && !o.canceled && html` <button onClick=${() => act(`/v1/jobs/${enc(id)}/cancel`, { occurrences: [o.at] })}>Cancel this occurrence</button>`}</li>`)}</ul>` : html`<${Loading} error=${next.error} />`}
    <h2>Template as submitted</h2>
    <pre class="code">${JSON.stringify(j.template, null, 2)}</pre>
  </section>`
}

async function allRuns(id: string): Promise<Run[]> {
  const out: Run[] = []
  for (let page = 1; ; page++) {
    const p = await get<Page<Run>>(`/v1/instances/${enc(id)}/runs?page=${page}&size=${RUNS_FETCH}`)
    out.push(...p.items)
    if (out.length >= p.pagination.total || p.items.length === 0) return out
  }
}

/** A run as an event says it is now: started (running since the event) or finished. */
function applyEvent(runs: Run[], e: StreamEvent): Run[] {
  if (!e.runId || (e.type !== 'run_started' && e.type !== 'run_finished')) return runs
  return runs.map((r) => r.runId !== e.runId ? r
    : e.type === 'run_started' ? { ...r, status: 'running', startedAt: r.startedAt ?? e.at }
    : { ...r, status: e.status ?? r.status, finishedAt: r.finishedAt ?? e.at })
}

/**
 * The instance and its runs, live: each event updates the counts and its run at once; the whole
 * instance is fetched again at most every REFRESH_MS (longer for many runs: 1,000 runs are
 * fetched every few seconds, not on every event).
 */
function useLiveInstance(id: string) {
  const [data, setData] = useState<{ instance?: Instance; runs: Run[]; groups: GroupCounts[]; live: boolean; error?: string }>({ runs: [], groups: [], live: false })
  const timer = useRef<number | undefined>(undefined)
  const size = useRef(0)
  useEffect(() => {
    const refresh = () => Promise.all([get<Instance>(`/v1/instances/${enc(id)}`), allRuns(id)])
      .then(([instance, runs]) => { size.current = runs.length; setData((d) => ({ ...d, instance, runs, error: undefined })) }, (err: Error) => setData((d) => ({ ...d, error: err.message })))
    const soon = () => { if (timer.current === undefined) timer.current = window.setTimeout(() => { timer.current = undefined; void refresh() }, REFRESH_MS + size.current * REFRESH_MS_PER_RUN) }
    void refresh()
    const es = new EventSource(`/v1/instances/${enc(id)}/events`)
    es.onopen = () => setData((d) => ({ ...d, live: true }))
    const onEvent = (m: MessageEvent) => {
      const e = JSON.parse(m.data as string) as StreamEvent
      setData((d) => ({ ...d, groups: e.counts, runs: applyEvent(d.runs, e) }))
      soon()
    }
    for (const t of EVENT_TYPES) es.addEventListener(t, onEvent)
    es.addEventListener('end', () => { es.close(); setData((d) => ({ ...d, live: false })); void refresh() })
    return () => { es.close(); window.clearTimeout(timer.current) }
  }, [id])
  return data
}
const REFRESH_MS = 300
const REFRESH_MS_PER_RUN = 3
const EVENT_TYPES = ['snapshot', 'run_acked', 'run_started', 'step_done', 'run_finished', 'batch_opened', 'batch_closed', 'group_opened', 'group_closed', 'instance_done']

/** Batches of a group in order, with their runs. */
function batchesOf(runs: readonly Run[], group: number): [number, Run[]][] {
  const m = new Map<number, Run[]>()
  for (const r of runs) if (r.group === group) m.set(r.batch, [...(m.get(r.batch) ?? []), r])
  return [...m.entries()].sort((a, b) => a[0] - b[0])
}

/** The counts of every group together (the stream's counts are per group). */
function sumOf(groups: readonly GroupCounts[]): Tally {
  const t: Required<Tally> = { pending: 0, running: 0, success: 0, failure: 0, skipped: 0 }
  for (const g of groups) for (const k of Object.keys(t) as (keyof Tally)[]) t[k] += g[k]
  return t
}

export function InstancePage({ id }: { id: string }) {
  const live = useLiveInstance(id)
  const [page, setPage] = useState(1)
  const groups = useMemo(() => [...new Set(live.runs.map((r) => r.group))].sort((a, b) => a - b), [live.runs])
  if (!live.instance) return html`<${Loading} error=${live.error} />`
  const i = live.instance
  const failed = live.runs.filter((r) => r.status === 'failure' || r.status === 'timeout')
  const pages = Math.max(1, Math.ceil(live.runs.length / NODE_ROWS))
  return html`<section>
    <h1>Instance <code>${i.id}</code> <span data-testid="instance-status"><${Status} status=${i.status} /></span></h1>
    <p>job <a href=${`#/job/${i.jobId}`}>${i.jobId}</a>, occurrence <${Time} at=${i.occurrenceAt} />, ${live.live ? html`<span data-testid="live">● live</span>` : html`<span>○ not live</span>`}${i.reason ? `, ${i.reason}` : ''}</p>
    <${Progress} label="all" tally=${live.groups.length ? sumOf(live.groups) : tallyOf(live.runs)} testid="progress-all" />
    ${groups.map((g) => html`<div class="group">
      <${Progress} label=${`group ${g}`} tally=${live.groups.find((c) => c.group === g) ?? tallyOf(live.runs.filter((r) => r.group === g))} testid=${`progress-group-${g}`} />
      ${batchesOf(live.runs, g).map(([b, runs]) => html`<${Progress} label=${`batch ${b}`} tally=${tallyOf(runs)} testid=${`progress-g${g}-b${b}`} />`)}
    </div>`)}
    <h2>Timeline</h2>
    <${Timeline} runs=${live.runs.slice((page - 1) * NODE_ROWS, page * NODE_ROWS)} now=${Date.now()} />
    <${Pager} page=${page} pages=${pages} go=${setPage} />
    <h2>Failures (${failed.length})</h2>
    <ul data-testid="failures">${failed.map((r) => html`<li><a href=${`#/run/${r.runId}`}>${r.nodeId}</a> <${Status} status=${r.status} /> ${r.reason ?? ''}</li>`)}</ul>
    <h2>Runs</h2>
    <table><thead><tr><th>Node</th><th>Group</th><th>Batch</th><th>Status</th><th>Started</th><th>Finished</th></tr></thead>
      <tbody>${live.runs.slice((page - 1) * NODE_ROWS, page * NODE_ROWS).map((r) => html`<tr><td><a href=${`#/run/${r.runId}`}>${r.nodeId}</a></td><td>${r.group}</td><td>${r.batch}</td><td><${Status} status=${r.status} /></td><td><${Time} at=${r.startedAt} /></td><td><${Time} at=${r.finishedAt} /></td></tr>`)}</tbody>
    </table>
  </section>`
}

const OUTPUT_SHOWN = 20_000

function Output({ label, text, name }: { label: string; text: string; name: string }) {
  const href = useMemo(() => URL.createObjectURL(new Blob([text], { type: 'text/plain' })), [text])
  return html`<div class="output"><h4>${label} <a href=${href} download=${name}>download</a></h4>
    <pre class="code" data-testid=${label}>${text.length > OUTPUT_SHOWN ? `… (${text.length - OUTPUT_SHOWN} characters more in the download)\n${text.slice(-OUTPUT_SHOWN)}` : text || '(empty)'}</pre></div>`
}

export function RunPage({ id }: { id: string }) {
  const run = useLoad(() => get<Run>(`/v1/runs/${enc(id)}`), [id])
  if (!run.data) return html`<${Loading} error=${run.error} />`
  const r = run.data
  return html`<section>
    <h1>Run on ${r.nodeId} <${Status} status=${r.status} /></h1>
    <p>group ${r.group}, batch ${r.batch}, started <${Time} at=${r.startedAt} />, finished <${Time} at=${r.finishedAt} />${r.reason ? html`, <span class="reason">${r.reason}</span>` : ''}</p>
    ${r.steps.map((s) => html`<article class="step" data-testid=${`step-${s.number}`}>
      <h3>Step ${s.number}: ${s.name} <${Status} status=${s.status} /> attempts ${s.attempts}${s.exitCode !== null ? `, exit ${s.exitCode}` : ''}</h3>
      ${s.reason && html`<p class="reason">${s.reason}</p>`}
      ${s.attemptLog.length > 1 && html`<ol class="attempts" data-testid="attempts">${s.attemptLog.map((a) => html`<li>attempt ${a.attempt}: <${Status} status=${a.status} />${a.exitCode !== null ? ` exit ${a.exitCode}` : ''}, <${Time} at=${a.startedAt} /> to <${Time} at=${a.finishedAt} /></li>`)}</ol>`}
      <${Output} label="stdout" text=${s.stdout} name=${`${r.runId}-${s.number}.stdout.txt`} />
      <${Output} label="stderr" text=${s.stderr} name=${`${r.runId}-${s.number}.stderr.txt`} />
      ${Object.keys(s.outputs).length > 0 && html`<table class="outputs"><thead><tr><th>Output</th><th>Value</th></tr></thead><tbody>${Object.entries(s.outputs).map(([k, v]) => html`<tr><td>${k}</td><td><code>${v}</code></td></tr>`)}</tbody></table>`}
      ${s.artifacts.length > 0 && html`<ul>${s.artifacts.map((a) => html`<li><a href=${`/v1/runs/${enc(r.runId)}/steps/${s.number}/artifacts/${enc(a.name)}`}>${a.name}</a> (${a.bytes} bytes${a.truncated ? ', truncated' : ''})</li>`)}</ul>`}
    </article>`)}
  </section>`
}

const VALIDATE_DELAY_MS = 250

/** Paste or upload a template; problems are shown at their path as you type; then plan and submit. */
export function NewJobPage() {
  const [text, setText] = useState('')
  const [problems, setProblems] = useState<Problem[] | undefined>(undefined)
  const [plan, setPlan] = useState<unknown>(undefined)
  const [message, setMessage] = useState('')
  const editor = useRef<HTMLTextAreaElement>(null)
  useEffect(() => {
    if (!text.trim()) { setProblems(undefined); return }
    const t = window.setTimeout(() => void call<{ problems: Problem[] }>('POST', '/v1/validate', text, templateType(text)).then((r) => setProblems(r.body.problems ?? [])), VALIDATE_DELAY_MS)
    return () => window.clearTimeout(t)
  }, [text])
  const post = async (path: string) => call<{ id?: string }>('POST', path, text, templateType(text))
  const showPlan = async () => { const r = await post('/v1/plan'); setPlan(r.body); if (r.body.problems) setProblems(r.body.problems) }
  const submit = async () => {
    const r = await post('/v1/jobs')
    if (r.status === 201 && r.body.id) { location.hash = `#/job/${r.body.id}`; return }
    setMessage(`refused (HTTP ${r.status}): ${r.body.error ?? ''}`)
    if (r.body.problems) setProblems(r.body.problems)
  }
  const upload = async (e: Event) => { const f = (e.target as HTMLInputElement).files?.[0]; if (f) setText(await f.text()) }
  return html`<section>
    <h1>New job</h1>
    <p>Paste a template (JSON, YAML or TOML) or <label class="file">upload one <input type="file" accept=".json,.yaml,.yml,.toml" onChange=${upload} /></label>.</p>
    <textarea ref=${editor} data-testid="template" aria-label="template" rows="18" spellcheck="false" value=${text} onInput=${(e: Event) => setText((e.target as HTMLTextAreaElement).value)}></textarea>
    <div class="problems" data-testid="problems" aria-live="polite">${problems === undefined ? '' : problems.length === 0 ? html`<p class="ok">✓ valid</p>` : html`<ul>${problems.map((p) => html`<${ProblemLine} problem=${p} text=${text} editor=${editor} />`)}</ul>`}</div>
    <div class="actions">
      <button data-testid="plan" disabled=${!problems || problems.length > 0} onClick=${showPlan}>Show plan</button>
      <button data-testid="submit" disabled=${!problems || problems.length > 0} onClick=${submit}>Submit</button>
    </div>
    ${message && html`<p role="alert" class="error">${message}</p>`}
    ${plan !== undefined && html`<${PlanView} plan=${plan} />`}
  </section>`
}

/** A problem at its path; in a JSON text, its line too, and a button that selects it in the editor. */
function ProblemLine({ problem, text, editor }: { problem: Problem; text: string; editor: { current: HTMLTextAreaElement | null } }) {
  const at = locate(text, problem.path)
  const select = () => { const e = editor.current; if (e && at) { e.focus(); e.setSelectionRange(at.offset, at.offset + at.length) } }
  return html`<li><code class="path">${problem.path}</code>${at && html` <button class="line" data-testid="problem-line" onClick=${select}>line ${at.line}</button>`}: ${problem.message}</li>`
}

interface PlanGroup { group: number; distributionMethod: string; batchSize: number; batches: number; failureBudget: number; nodes: { nodeId: string; position: number; batch: number; alive: boolean }[] }

/** The plan: execution type, next occurrences, and per group its batches in order with their nodes. */
function PlanView({ plan }: { plan: unknown }) {
  const p = plan as { executionType?: string; groups?: PlanGroup[]; schedule?: { next: { at: string; excluded?: string }[] }; warnings?: { path: string; message: string }[] }
  if (!p.groups) return html`<pre class="code">${JSON.stringify(plan, null, 2)}</pre>`
  return html`<div data-testid="plan-view"><h2>Plan (${p.executionType})</h2>
    ${(p.warnings ?? []).map((w) => html`<p class="reason">⚠ <code>${w.path}</code>: ${w.message}</p>`)}
    <p>next: ${(p.schedule?.next ?? []).slice(0, 3).map((o) => html`<${Time} at=${o.at} />${o.excluded ? ' (excluded)' : ''} `)}</p>
    <ol>${p.groups.map((g) => html`<li>group ${g.group}: ${g.distributionMethod}, ${g.batches} batch(es) of ${g.batchSize}, failure budget ${g.failureBudget}
      <ol>${[...Array(g.batches).keys()].map((b) => html`<li>batch ${b}: ${g.nodes.filter((n) => n.batch === b).sort((x, y) => x.position - y.position).map((n) => `${n.nodeId}${n.alive ? '' : ' (○ not alive)'}`).join(', ')}</li>`)}</ol></li>`)}</ol>
  </div>`
}

export function NodesPage({ me }: { me: Me }) {
  const [search, setSearch] = useState('')
  const [page, setPage] = useState(1)
  const q = `page=${page}&size=${NODE_ROWS}${search ? `&search=${enc(search)}` : ''}`
  const nodes = useLoad(() => get<Page<{ nodeId: string; alive: boolean; facts: Record<string, string>; skills: Record<string, string[]>; lastSeenAt: string }>>(`/v1/nodes?${q}`), [q])
  const p = nodes.data?.pagination
  return html`<section>
    <h1>Nodes</h1>
    <label>Search (query grammar, e.g. <code>facts.os == "linux"</code>) <input value=${search} onChange=${(e: Event) => { setSearch((e.target as HTMLInputElement).value); setPage(1) }} /></label>
    ${nodes.data ? html`<table><thead><tr><th>Node</th><th>Enrolment</th><th>Alive</th><th>Last seen</th><th>Facts</th><th>Skills</th></tr></thead>
      <tbody>${nodes.data.items.map((n) => html`<tr><td>${n.nodeId}</td><td>✓ enrolled</td><td>${n.alive ? '● yes' : '○ no'}</td><td><${Time} at=${n.lastSeenAt} /></td><td class="small">${Object.entries(n.facts).slice(0, 6).map(([k, v]) => `${k}=${v}`).join(' ')}</td><td class="small">${Object.keys(n.skills).join(' ')}</td></tr>`)}</tbody></table>
      ${p && html`<${Pager} page=${p.page} pages=${Math.ceil(p.total / p.size)} go=${setPage} />`}` : html`<${Loading} error=${nodes.error} />`}
    ${me.role === 'admin' && html`<${SavedTable} title="Awaiting approval" path="/v1/nodes/pending" /><${SavedTable} title="Revoked" path="/v1/nodes/revoked" />`}
  </section>`
}

const AUDIT_PAGE = 200

/** The audit log, oldest first, AUDIT_PAGE records at a time from a time on. */
export function AuditPage() {
  const [since, setSince] = useState('')
  const audit = useLoad(() => get<{ items: { at: string; token: string; role: string; action: string; object: string; outcome: string }[]; more: boolean }>(`/v1/audit?limit=${AUDIT_PAGE}${since ? `&since=${enc(since)}` : ''}`), [since])
  if (!audit.data) return html`<${Loading} error=${audit.error} />`
  const last = audit.data.items.at(-1)?.at
  return html`<section><h1>Audit</h1><p class="muted">oldest first${since ? html`, from <${Time} at=${since} />` : ''}</p>
    <table data-testid="audit"><thead><tr><th>At</th><th>Token</th><th>Action</th><th>Object</th><th>Outcome</th></tr></thead>
    <tbody>${audit.data.items.map((a) => html`<tr><td><${Time} at=${a.at} /></td><td>${a.token} (${a.role})</td><td>${a.action}</td><td>${a.object}</td><td>${a.outcome}</td></tr>`)}</tbody></table>
    ${audit.data.more && last && html`<button onClick=${() => setSince(last)}>next ${AUDIT_PAGE} ›</button>`}</section>`
}

/** One list of records (exceptions, lists, filters, enrolments) as a table of their fields. */
function SavedTable({ title, path }: { title: string; path: string }) {
  const list = useLoad(() => get<Page<Record<string, unknown>>>(`${path}?size=${RUNS_FETCH}`), [path])
  if (!list.data) return html`<${Loading} error=${list.error} />`
  const keys = [...new Set(list.data.items.flatMap((i) => Object.keys(i)))]
  return html`<h2>${title} (${list.data.pagination.total})</h2>
    ${list.data.items.length === 0 ? html`<p class="muted">none</p>` : html`<table data-testid=${title.toLowerCase()}><thead><tr>${keys.map((k) => html`<th>${k}</th>`)}</tr></thead>
      <tbody>${list.data.items.map((i) => html`<tr>${keys.map((k) => html`<td><code>${typeof i[k] === 'string' ? i[k] : JSON.stringify(i[k] ?? '')}</code></td>`)}</tr>`)}</tbody></table>`}`
}

/** Global exception windows and saved node lists and filters (change them with the CLI). */
export function SavedPage() {
  return html`<section><h1>Exceptions and saved lists</h1>
    <${SavedTable} title="Exceptions" path="/v1/exceptions" />
    <${SavedTable} title="Lists" path="/v1/lists" />
    <${SavedTable} title="Filters" path="/v1/filters" /></section>`
}
