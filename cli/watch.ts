// `chorus job watch ID` (and `job submit --wait`): follows a job's server-sent events
// (GET /v1/jobs/:id/events), reconnecting with Last-Event-ID, and shows a live view: one
// progress bar per group and batch, running and failed nodes by name, elapsed time and an
// estimate of the time left. log-update on a terminal, a plain line per event otherwise, JSON
// lines with --json. Resolves to the exit code: 1 when an instance failed, else 0.
import { ApiError, DEFAULT_TIMEOUT_MS, apiFetch, apiGet, type ApiConn } from './client.js'
import { exitForReport } from './exit.js'
import type { StreamEvent } from '../coordinator/events.js'
import type { JobReport } from '../coordinator/report.js'

/** Reconnects after a dropped stream, this long apart, for at most WATCH_GIVE_UP_MS without an answer. */
export const WATCH_RECONNECT_MS = 1_000
export const WATCH_GIVE_UP_MS = 30_000
const BAR_WIDTH = 24

export interface WatchOptions {
  json?: boolean
  /** Plain lines even on a terminal. */
  plain?: boolean
  out?: NodeJS.WriteStream
}

/** One SSE frame. */
export interface Frame { id?: string; event: string; data: string }

/** Splits an SSE text buffer into complete frames and the rest. */
export function parseFrames(buffer: string): { frames: Frame[]; rest: string } {
  const parts = buffer.split('\n\n')
  const rest = parts.pop() ?? ''
  const frames: Frame[] = []
  for (const part of parts) {
    const f: Frame = { event: 'message', data: '' }
    for (const line of part.split('\n')) {
      if (line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon < 0 ? line : line.slice(0, colon)
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
      if (field === 'id') f.id = value
      else if (field === 'event') f.event = value
      else if (field === 'data') f.data += value
    }
    if (f.data !== '' || f.event !== 'message') frames.push(f)
  }
  return { frames, rest }
}

/**
 * Reads the event stream at `path` until its `end` event, reconnecting with the last event id.
 * Calls `onEvent` once per event (never twice for one id).
 */
export async function followEvents(conn: ApiConn, path: string, onEvent: (e: StreamEvent) => void): Promise<void> {
  let lastId: string | undefined
  let failingSince: number | undefined
  for (;;) {
    try {
      const ended = await readOnce(conn, path, lastId, (e) => { lastId = e.id; onEvent(e) })
      if (ended) return
      failingSince = undefined
    } catch (err) {
      if (err instanceof ApiError && err.status !== 0) throw err
      failingSince ??= Date.now()
      if (Date.now() - failingSince > WATCH_GIVE_UP_MS) throw err
    }
    await new Promise((r) => setTimeout(r, WATCH_RECONNECT_MS))
  }
}

/** One connection: true when the stream said `end`. */
async function readOnce(conn: ApiConn, path: string, lastId: string | undefined, onEvent: (e: StreamEvent) => void): Promise<boolean> {
  const controller = new AbortController()
  // The answer's headers must come within the usual timeout; the stream itself may stay quiet (heartbeats).
  const connecting = setTimeout(() => controller.abort(new DOMException(`no answer within ${DEFAULT_TIMEOUT_MS / 1000} s`, 'TimeoutError')), DEFAULT_TIMEOUT_MS)
  const res = await apiFetch(conn, path, { headers: { accept: 'text/event-stream', ...(lastId ? { 'last-event-id': lastId } : {}) }, signal: controller.signal, timeoutMs: DEFAULT_TIMEOUT_MS })
    .finally(() => clearTimeout(connecting))
  if (!res.ok) {
    const body = (await res.json().catch(() => ({}))) as { error?: string }
    throw new ApiError(res.status, body, body.error ?? `HTTP ${res.status}`)
  }
  const decoder = new TextDecoder()
  let buffer = ''
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      const parsed = parseFrames(buffer + decoder.decode(chunk, { stream: true }))
      buffer = parsed.rest
      for (const f of parsed.frames) {
        if (f.event === 'end') return true
        onEvent(JSON.parse(f.data) as StreamEvent)
      }
    }
  } finally {
    controller.abort()
  }
  return false
}

interface RunView { nodeId: string; group: number; batch: number; status: string; startedAt?: number }

/** What the live view shows, kept from the report at start and the events after it. */
export class WatchView {
  readonly runs = new Map<string, RunView>()
  private firstStart?: number
  private doneRuns = 0
  constructor(readonly jobId: string, private readonly started = Date.now()) {}

  load(report: JobReport): void {
    for (const i of report.instances) for (const r of i.runs) {
      this.runs.set(r.runId, { nodeId: r.nodeId, group: r.group, batch: r.batch, status: r.status, ...(r.startedAt ? { startedAt: Date.parse(r.startedAt) } : {}) })
    }
  }

  apply(e: StreamEvent): void {
    if (e.type === 'snapshot') return this.applySnapshot(e)
    const run = e.runId ? this.runs.get(e.runId) : undefined
    if (!run) return
    if (e.type === 'run_started') { run.status = 'running'; run.startedAt = Date.parse(e.at); this.firstStart ??= run.startedAt }
    if (e.type === 'run_finished') { run.status = e.status ?? 'failure'; this.doneRuns++; this.firstStart ??= Date.parse(e.at) }
  }

  /** After a gap (a restart, or a trimmed log): the nodes running and failed now. */
  private applySnapshot(e: StreamEvent): void {
    const running = new Set(e.running ?? [])
    const failed = new Set(e.failed ?? [])
    for (const r of this.runs.values()) {
      if (running.has(r.nodeId)) r.status = 'running'
      else if (failed.has(r.nodeId)) r.status = 'failure'
    }
  }

  /** Seconds left, from the pace of the runs finished so far (undefined before the first). */
  etaSeconds(now: number): number | undefined {
    const open = [...this.runs.values()].filter((r) => r.status === 'pending' || r.status === 'running').length
    if (this.doneRuns === 0 || this.firstStart === undefined) return undefined
    const perRun = (now - this.firstStart) / this.doneRuns
    return Math.round((open * perRun) / 1000)
  }

  render(now: number): string {
    const byBatch = new Map<string, RunView[]>()
    for (const r of this.runs.values()) {
      const k = `${r.group}/${r.batch}`
      byBatch.set(k, [...(byBatch.get(k) ?? []), r])
    }
    const eta = this.etaSeconds(now)
    const lines = [`job ${this.jobId}  elapsed ${Math.round((now - this.started) / 1000)} s${eta === undefined ? '' : `  about ${eta} s left`}`]
    for (const [k, runs] of [...byBatch].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))) {
      const [group, batch] = k.split('/')
      lines.push(`group ${group} batch ${batch}  ${bar(runs)}`)
    }
    const named = (s: (x: string) => boolean) => [...this.runs.values()].filter((r) => s(r.status)).map((r) => r.nodeId).sort()
    const running = named((s) => s === 'running')
    const failed = named((s) => s === 'failure' || s === 'timeout')
    if (running.length) lines.push(`running: ${running.join(', ')}`)
    if (failed.length) lines.push(`failed:  ${failed.join(', ')}`)
    return lines.join('\n')
  }
}

function bar(runs: RunView[]): string {
  const n = (f: (s: string) => boolean) => runs.filter((r) => f(r.status)).length
  const ok = n((s) => s === 'success')
  const bad = n((s) => s === 'failure' || s === 'timeout')
  const running = n((s) => s === 'running')
  const skipped = n((s) => s === 'skipped')
  const fill = (count: number) => Math.round((count / runs.length) * BAR_WIDTH)
  const shown = `${'#'.repeat(fill(ok))}${'x'.repeat(fill(bad))}${'>'.repeat(fill(running))}`.slice(0, BAR_WIDTH)
  return `[${shown.padEnd(BAR_WIDTH, '.')}] ${ok + bad + skipped}/${runs.length}  success ${ok}  failure ${bad}  running ${running}${skipped ? `  skipped ${skipped}` : ''}`
}

/** One plain line for an event (not a terminal, or --plain). */
export function eventLine(e: StreamEvent): string {
  const where = e.nodeId ? ` ${e.nodeId}` : ''
  const place = e.batch !== undefined ? ` group ${e.group} batch ${e.batch}` : e.group !== undefined ? ` group ${e.group}` : ''
  const counts = e.counts.map((c) => `g${c.group}: ${c.success} ok, ${c.failure} failed, ${c.running} running, ${c.pending} pending`).join('; ')
  return `${e.at.slice(11, 23)} ${e.type}${where}${place}${e.status ? ` ${e.status}` : ''}${e.step ? ` step ${e.step.number} ${e.step.status}` : ''}  (${counts})`
}

/** Watches a job to its end; the exit code is 0 when every instance succeeded, 1 otherwise. */
export async function watchJob(conn: ApiConn, jobId: string, o: WatchOptions = {}): Promise<number> {
  const out = o.out ?? process.stdout
  const id = encodeURIComponent(jobId)
  const view = new WatchView(jobId)
  view.load(await apiGet<JobReport>(conn, `/v1/reports/${id}`))
  // A terminal of no size (some ptys) would show log-update's frames empty: plain lines then.
  const live = !o.json && !o.plain && out.isTTY === true && (out.columns ?? 0) > 0
  const { default: logUpdate } = live ? await import('log-update') : { default: undefined }
  const draw = logUpdate ? () => logUpdate(view.render(Date.now())) : () => undefined
  const timer = logUpdate ? setInterval(draw, 1000) : undefined
  try {
    await followEvents(conn, `/v1/jobs/${id}/events`, (e) => {
      view.apply(e)
      if (o.json) out.write(JSON.stringify(e) + '\n')
      else if (!live) out.write(eventLine(e) + '\n')
      draw()
    })
  } finally {
    if (timer) clearInterval(timer)
    logUpdate?.done()
  }
  const report = await apiGet<JobReport>(conn, `/v1/reports/${id}`)
  return exitForReport(report, jobId)
}
