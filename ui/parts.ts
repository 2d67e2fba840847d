// Small view pieces shared by the pages: status badges (a shape and the word, never colour
// alone), UTC times with local time on hover, progress bars, the pager and the SVG timeline.
import { html } from 'htm/preact'
import type { Run } from './api.js'

const MARKS: Record<string, string> = { success: '✓', failure: '✗', timeout: '⏱', running: '▶', pending: '○', skipped: '–', canceled: '⊘', excluded: '⊘', active: '●', completed: '✓', quorum_failed: '✗' }
export const mark = (status: string) => MARKS[status] ?? '?'

export function Status({ status }: { status: string }) {
  return html`<span class=${`status s-${status}`}><span aria-hidden="true">${mark(status)}</span> ${status}</span>`
}

export function Time({ at }: { at: string | null | undefined }) {
  if (!at) return html`<span>-</span>`
  const d = new Date(at)
  return html`<time datetime=${at} title=${`local: ${d.toLocaleString()}`}>${at.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}</time>`
}

const BUCKETS = ['success', 'failure', 'running', 'pending', 'skipped'] as const
export type Tally = Partial<Record<(typeof BUCKETS)[number], number>>

/** A bar of fixed height with a segment per bucket, and the counts as text beside it. */
export function Progress({ label, tally, testid }: { label: string; tally: Tally; testid: string }) {
  const total = BUCKETS.reduce((n, b) => n + (tally[b] ?? 0), 0) || 1
  return html`<div class="progress" data-testid=${testid}>
    <span class="plabel">${label}</span>
    <span class="bar" role="img" aria-label=${`${label}: ${BUCKETS.map((b) => `${tally[b] ?? 0} ${b}`).join(', ')}`}>
      ${BUCKETS.map((b) => html`<span class=${`seg s-${b}`} style=${{ width: `${(100 * (tally[b] ?? 0)) / total}%` }}></span>`)}
    </span>
    <span class="counts">${BUCKETS.map((b) => html`<span class=${`count s-${b}`} data-bucket=${b}>${mark(b)} ${b} <b>${tally[b] ?? 0}</b></span>`)}</span>
  </div>`
}

export function Pager({ page, pages, go }: { page: number; pages: number; go: (p: number) => void }) {
  if (pages <= 1) return null
  return html`<nav class="pager" aria-label="pages">
    <button disabled=${page <= 1} onClick=${() => go(page - 1)}>‹ previous</button>
    <span>page ${page} of ${pages}</span>
    <button disabled=${page >= pages} onClick=${() => go(page + 1)}>next ›</button>
  </nav>`
}

export const bucketOf = (status: string) => (status === 'timeout' ? 'failure' : status)

/** Counts of runs by bucket. */
export function tallyOf(runs: readonly Run[]): Tally {
  const t: Record<string, number> = {}
  for (const r of runs) t[bucketOf(r.status)] = (t[bucketOf(r.status)] ?? 0) + 1
  return t
}

const ROW = 22
const LABEL = 130
const WIDTH = 1000
/** Room right of the last bar for its marker. */
const MARK_ROOM = 60

/** One row per node; a bar from start to finish (now while running), coloured and marked by status; the reason on hover. */
export function Timeline({ runs, now }: { runs: readonly Run[]; now: number }) {
  const times = runs.flatMap((r) => [r.startedAt, r.finishedAt]).filter((t): t is string => !!t).map((t) => Date.parse(t))
  const t0 = times.length ? Math.min(...times) : now
  const t1 = Math.max(now, t0 + 1000, ...times)
  const x = (t: number) => LABEL + ((WIDTH - LABEL - MARK_ROOM) * (t - t0)) / (t1 - t0)
  return html`<svg class="timeline" data-testid="timeline" viewBox=${`0 0 ${WIDTH} ${runs.length * ROW + 4}`} width="100%" role="img" aria-label="timeline of the runs per node">
    ${runs.map((r, i) => {
      const start = r.startedAt ? Date.parse(r.startedAt) : undefined
      const end = r.finishedAt ? Date.parse(r.finishedAt) : now
      const y = i * ROW + 2
      const w = start === undefined ? 0 : Math.max(4, x(end) - x(start))
      return html`<g class=${`row s-${bucketOf(r.status)}`} data-node=${r.nodeId} data-status=${r.status}>
        <text x="4" y=${y + 15} class="tl-label">${r.nodeId}</text>
        ${start !== undefined && html`<rect x=${x(start)} y=${y + 3} width=${w} height=${ROW - 6} rx="3" class=${`tl-bar s-${bucketOf(r.status)}`}><title>${`${r.nodeId}: ${r.status}, group ${r.group} batch ${r.batch}${r.reason ? `: ${r.reason}` : ''}`}</title></rect>`}
        <text x=${start === undefined ? LABEL : x(start) + w + 4} y=${y + 15} class="tl-mark">${mark(r.status)} b${r.batch}</text>
      </g>`
    })}
  </svg>`
}
