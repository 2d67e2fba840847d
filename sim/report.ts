// `chorus sim --report FILE.html`: one self-contained page (inline SVG and CSS, no scripts
// fetched from anywhere) showing one seed's run: a timeline with one row per node (sampled for
// big fleets), the fleet's concurrency and message rate, and the properties' verdicts.
import type { SeedResult, SimSummary } from './cli.js'
import { ALL_CHECKERS } from './checkers.js'
import type { ExecRecord, World } from './world.js'

/** Most node rows drawn; bigger fleets show the nodes that saw faults first, then an even sample. */
export const MAX_ROWS = 64
const WIDTH = 1180
const LABEL_W = 120
const ROW_H = 11
const PLOT_W = WIDTH - LABEL_W - 20

const BATCH_COLOURS = ['#3b82c4', '#6a5acd', '#2a9d8f', '#c77dff', '#4361ee', '#00a6a6', '#7b6cf6', '#1d7874']
const FAIL = '#e4572e'
const INTERRUPTED = '#9aa0a6'

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

function fmtS(ms: number): string {
  const s = ms / 1000
  return s >= 600 ? `${(s / 60).toFixed(0)} min` : `${s.toFixed(s >= 10 || s === 0 ? 0 : 1)} s`
}

function niceStep(span: number, target: number): number {
  const raw = span / target
  const mag = 10 ** Math.floor(Math.log10(raw))
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag
  return 10 * mag
}

function pickRows(world: World): { rows: number[]; note: string } {
  const n = world.agents.length
  if (n <= MAX_ROWS - 1) return { rows: world.agents.map((a) => a.index), note: `all ${n} agents` }
  const eventful = new Set<number>()
  for (const a of world.agents) if (a.downIntervals.length > 0 || !a.up) eventful.add(a.index)
  for (const o of world.offlineLog) eventful.add(o.node)
  for (const p of world.partitionLog) for (const m of p.members.slice(0, 8)) eventful.add(m)
  const budget = MAX_ROWS - 1
  const chosen = [...eventful].sort((a, b) => a - b).slice(0, Math.floor(budget / 2))
  const taken = new Set(chosen)
  const rest = budget - chosen.length
  for (let k = 0; k < rest; k++) {
    const idx = 1 + Math.floor((k * n) / rest)
    if (!taken.has(idx)) { taken.add(idx); chosen.push(idx) }
  }
  chosen.sort((a, b) => a - b)
  return { rows: chosen, note: `${chosen.length} of ${n} agents: every one that crashed or was cut off (up to ${Math.floor(budget / 2)}), then an even sample` }
}

export function renderReport(r: SeedResult, summary: SimSummary): string {
  const world = r.world
  // The axis spans the interesting part of the run: nothing happens after the last attempt,
  // outage or cut, so a long quiet safety phase does not squeeze the picture into a corner.
  let last = 1
  for (const e of world.execList) last = Math.max(last, e.end ?? world.now)
  for (const n of world.nodes) for (const [, b] of n.downIntervals) last = Math.max(last, b)
  for (const o of world.offlineLog) last = Math.max(last, o.to)
  for (const p of world.partitionLog) last = Math.max(last, p.to)
  for (const m of world.phaseMarks) last = Math.max(last, m.at)
  if (world.convergedAt !== undefined) last = Math.max(last, Math.min(world.convergedAt, world.healedAt + 1))
  const end = Math.min(Math.max(world.now, 1), last * 1.04 + 1_000)
  const x = (t: number) => LABEL_W + (Math.max(0, Math.min(t, end)) / end) * PLOT_W
  const { rows, note } = pickRows(world)
  const rowIndex = new Map<number, number>()
  rows.forEach((idx, i) => rowIndex.set(idx, i + 1))
  const top = 28
  const timelineH = top + (rows.length + 1) * ROW_H + 8
  const parts: string[] = []

  // Phase bands and markers.
  const healX = world.healedAt === Infinity ? x(end) : x(world.healedAt)
  parts.push(`<rect x="${LABEL_W}" y="${top - 4}" width="${healX - LABEL_W}" height="${timelineH - top}" fill="#fff6e0"/>`)
  parts.push(`<rect x="${healX}" y="${top - 4}" width="${LABEL_W + PLOT_W - healX}" height="${timelineH - top}" fill="#eaf7ee"/>`)
  parts.push(`<text x="${LABEL_W + 4}" y="${top - 8}" class="phase">safety phase: faults on</text>`)
  const liveText = world.healedAt === Infinity ? '' : `liveness phase from ${fmtS(world.healedAt)}: faults off${world.convergedAt !== undefined ? `, converged after ${fmtS(world.convergedAt - world.healedAt)}` : ', NOT converged within the bound'}`
  if (liveText && world.healedAt < end) parts.push(`<text x="${LABEL_W + PLOT_W}" y="${top - 8}" class="phase" text-anchor="end">${liveText}</text>`)
  else if (liveText) parts.push(`<text x="${LABEL_W + PLOT_W}" y="${top - 8}" class="phase" text-anchor="end">quiet until the end of the safety phase; ${liveText}</text>`)

  // Axis.
  const step = niceStep(end, 10)
  for (let t = 0; t <= end; t += step) {
    parts.push(`<line x1="${x(t)}" x2="${x(t)}" y1="${top - 4}" y2="${timelineH - 4}" class="grid"/>`)
    parts.push(`<text x="${x(t)}" y="${timelineH + 8}" class="tick" text-anchor="middle">${fmtS(t)}</text>`)
  }

  // Rows: coordinator first.
  const rowY = (i: number) => top + i * ROW_H
  const drawLane = (i: number, label: string, idx: number) => {
    const y = rowY(i)
    if (i % 2 === 0) parts.push(`<rect x="${LABEL_W}" y="${y}" width="${PLOT_W}" height="${ROW_H}" fill="#000" opacity="0.025"/>`)
    parts.push(`<text x="${LABEL_W - 6}" y="${y + ROW_H - 2}" class="lbl" text-anchor="end">${esc(label)}</text>`)
    const node = world.nodes[idx]!
    const downs = [...node.downIntervals]
    if (!node.up && node.kind !== 'attacker') downs.push([node.downSince, end])
    for (const [a, b] of downs) parts.push(`<rect x="${x(a)}" y="${y + 1}" width="${Math.max(1, x(b) - x(a))}" height="${ROW_H - 2}" fill="url(#down)"><title>${esc(label)} down ${fmtS(a)} to ${fmtS(b)}</title></rect>`)
  }
  drawLane(0, 'coordinator', 0)
  rows.forEach((idx, i) => drawLane(i + 1, world.nodes[idx]!.id, idx))

  for (const o of world.offlineLog) {
    const i = rowIndex.get(o.node)
    if (i === undefined) continue
    parts.push(`<rect x="${x(o.from)}" y="${rowY(i) + 1}" width="${Math.max(1, x(o.to) - x(o.from))}" height="${ROW_H - 2}" fill="url(#cut)"><title>link dark ${fmtS(o.from)} to ${fmtS(o.to)}</title></rect>`)
  }
  for (const p of world.partitionLog) {
    for (const m of p.members) {
      const i = rowIndex.get(m)
      if (i === undefined) continue
      parts.push(`<rect x="${x(p.from)}" y="${rowY(i) + 1}" width="${Math.max(1, x(p.to) - x(p.from))}" height="${ROW_H - 2}" fill="url(#cut)"><title>partition #${p.id} (${p.mode}) ${fmtS(p.from)} to ${fmtS(p.to)}</title></rect>`)
    }
  }

  const byNode = new Map<string, number>()
  world.nodes.forEach((n) => byNode.set(n.id, n.index))
  for (const e of world.execList) {
    const i = rowIndex.get(byNode.get(e.node) ?? -1)
    if (i === undefined) continue
    const y = rowY(i)
    const fill = e.status === 'failure' ? FAIL : e.status === 'interrupted' ? INTERRUPTED : BATCH_COLOURS[e.batch % BATCH_COLOURS.length]!
    const endT = e.end ?? end
    parts.push(`<rect x="${x(e.start)}" y="${y + 2}" width="${Math.max(1.5, x(endT) - x(e.start))}" height="${ROW_H - 4}" rx="1.5" fill="${fill}"><title>${esc(e.node)} group ${e.group} batch ${e.batch}: step ${e.step} attempt ${e.attempt}, ${e.status ?? 'running'} (${fmtS(e.start)} to ${fmtS(endT)})</title></rect>`)
  }
  world.phaseMarks.forEach((m, k) => {
    if (m.at > end) return
    parts.push(`<line x1="${x(m.at)}" x2="${x(m.at)}" y1="${top - 4}" y2="${timelineH - 4}" class="mark"/>`)
    const right = x(m.at) > LABEL_W + PLOT_W - 160
    parts.push(`<text x="${x(m.at) + (right ? -3 : 3)}" y="${top + 8 + k * 10}" class="marklbl" text-anchor="${right ? 'end' : 'start'}" paint-order="stroke" stroke="#fff" stroke-width="3">${esc(m.label)}</text>`)
  })

  // Fleet-wide charts: steps executing, and messages per second.
  const chartH = 70
  const buckets = Math.max(1, Math.min(400, Math.ceil(end / 1000)))
  const width = end / buckets
  const conc = new Array<number>(buckets + 1).fill(0)
  const events: [number, number][] = []
  for (const e of world.execList) events.push([e.start, 1], [e.end ?? end, -1])
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let cur = 0
  let ei = 0
  for (let b = 0; b <= buckets; b++) {
    const t = b * width
    let peak = cur
    while (ei < events.length && events[ei]![0] <= t) { cur += events[ei]![1]; peak = Math.max(peak, cur); ei++ }
    conc[b] = peak
  }
  const concMax = Math.max(1, ...conc)
  const c0 = timelineH + 26
  const concPts = conc.map((v, b) => `${x(b * width).toFixed(1)},${(c0 + chartH - (v / concMax) * chartH).toFixed(1)}`)
  parts.push(`<text x="${LABEL_W - 6}" y="${c0 + 10}" class="lbl" text-anchor="end">steps running</text>`)
  parts.push(`<text x="${LABEL_W - 6}" y="${c0 + 22}" class="tick" text-anchor="end">peak ${concMax}</text>`)
  parts.push(`<polygon points="${x(0)},${c0 + chartH} ${concPts.join(' ')} ${x(end)},${c0 + chartH}" fill="${BATCH_COLOURS[0]}" opacity="0.55"/>`)

  const m0 = c0 + chartH + 16
  const secs = [...world.buckets.entries()]
  const perBucket = new Array<{ gossip: number; rpc: number; forged: number }>(buckets + 1).fill({ gossip: 0, rpc: 0, forged: 0 }).map(() => ({ gossip: 0, rpc: 0, forged: 0 }))
  for (const [sec, v] of secs) {
    const b = Math.min(buckets, Math.floor((sec * 1000) / width))
    perBucket[b]!.gossip += v.gossip; perBucket[b]!.rpc += v.rpc; perBucket[b]!.forged += v.forged
  }
  const mMax = Math.max(1, ...perBucket.map((v) => v.gossip + v.rpc + v.forged))
  const bw = Math.max(1, PLOT_W / (buckets + 1) - 0.5)
  parts.push(`<text x="${LABEL_W - 6}" y="${m0 + 10}" class="lbl" text-anchor="end">messages</text>`)
  parts.push(`<text x="${LABEL_W - 6}" y="${m0 + 22}" class="tick" text-anchor="end">peak ${mMax}/bucket</text>`)
  perBucket.forEach((v, b) => {
    let y = m0 + chartH
    for (const [k, colour] of [['rpc', '#2a9d8f'], ['gossip', '#3b82c4'], ['forged', FAIL]] as const) {
      const h = (v[k] / mMax) * chartH
      if (h <= 0) continue
      y -= h
      parts.push(`<rect x="${x(b * width).toFixed(1)}" y="${y.toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" fill="${colour}"/>`)
    }
  })
  const svgH = m0 + chartH + 14

  const violated = new Set(r.violations.map((v) => v.property))
  const props = ALL_CHECKERS.map((c) => `<li class="${violated.has(c.name) ? 'bad' : 'ok'}">${violated.has(c.name) ? '✗' : '✓'} ${esc(c.name)}</li>`).join('')
  const totals = { gossip: 0, rpc: 0, forged: 0 }
  for (const [, v] of secs) { totals.gossip += v.gossip; totals.rpc += v.rpc; totals.forged += v.forged }
  const outcomes = { success: 0, failure: 0 }
  for (const o of world.outcomes.values()) if (o.status === 'success' || o.status === 'failure') outcomes[o.status]++
  const attempts = { success: 0, failure: 0, interrupted: 0 }
  for (const e of world.execList as ExecRecord[]) if (e.status) attempts[e.status]++
  const batches = [...new Set(world.execList.map((e) => e.batch))].sort((a, b) => a - b).slice(0, BATCH_COLOURS.length)
  const legend = [
    ...batches.map((b) => `<span><i style="background:${BATCH_COLOURS[b % BATCH_COLOURS.length]}"></i>batch ${b}</span>`),
    `<span><i style="background:${FAIL}"></i>failed attempt</span>`,
    `<span><i style="background:${INTERRUPTED}"></i>interrupted by crash</span>`,
    `<span><i class="hatch-down"></i>node down</span>`,
    `<span><i class="hatch-cut"></i>cut off (partition / dark link)</span>`,
  ].join('')
  const verdict = r.violations.length === 0
    ? `<span class="badge ok">all ${ALL_CHECKERS.length} properties held</span>`
    : `<span class="badge bad">${r.violations.length} violation${r.violations.length === 1 ? '' : 's'}</span>`

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>chorus sim: ${esc(r.scenario)} seed ${r.seed}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px 32px;color:#1f2933;background:#fbfbfa}
h1{font-size:20px;margin:0 0 4px}h1 small{font-weight:400;color:#616e7c}
.sub{color:#616e7c;margin-bottom:14px}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;font-size:13px;margin-left:8px}
.badge.ok{background:#d9f2e1;color:#1b6b3a}.badge.bad{background:#fde0d9;color:#9b2c13}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:10px 0 16px}
.card{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:18px}.card span{color:#616e7c;font-size:12px}
svg{background:#fff;border:1px solid #e4e7eb;border-radius:8px}
.lbl{font-size:9px;fill:#3e4c59}.tick{font-size:9px;fill:#7b8794}.phase{font-size:10px;fill:#7b8794;font-style:italic}
.grid{stroke:#e4e7eb;stroke-width:0.5}.mark{stroke:#52606d;stroke-dasharray:3 2;stroke-width:0.8}.marklbl{font-size:9px;fill:#52606d}
.legend{display:flex;gap:14px;flex-wrap:wrap;margin:8px 0;font-size:12px;color:#3e4c59}
.legend i{display:inline-block;width:14px;height:9px;border-radius:2px;margin-right:5px;vertical-align:middle}
.hatch-down{background:repeating-linear-gradient(45deg,#b42318 0 2px,#fbd5cf 2px 4px)}
.hatch-cut{background:repeating-linear-gradient(-45deg,#7b8794 0 1px,#e4e7eb 1px 4px)}
.cols{display:flex;gap:28px;flex-wrap:wrap;margin-top:16px}
ul.props{list-style:none;padding:0;margin:0}ul.props li{padding:2px 0}.ok{color:#1b6b3a}.bad{color:#9b2c13}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 10px 2px 0;text-align:left}th{color:#616e7c;font-weight:500}
.viol{background:#fff;border:1px solid #f4b8a9;border-radius:8px;padding:8px 14px;margin-top:14px;font-size:13px}
code{font-size:12px;background:#f0f2f4;padding:1px 4px;border-radius:3px}
</style></head><body>
<h1>${esc(r.scenario)} <small>seed ${r.seed}, ${r.agents} agents</small>${verdict}</h1>
<div class="sub">Replay: <code>npx chorus sim --scenario ${esc(r.scenario)} --agents ${r.agents} --seed ${r.seed}</code> &middot; trace ${r.trace_hash.slice(0, 16)}&hellip;</div>
<div class="cards">
<div class="card"><b>${fmtS(world.now)}</b><span>simulated</span></div>
<div class="card"><b>${r.wall_s.toFixed(2)} s</b><span>wall clock</span></div>
<div class="card"><b>${outcomes.success} / ${outcomes.failure}</b><span>runs succeeded / failed</span></div>
<div class="card"><b>${r.messages.toLocaleString('en-US')}</b><span>messages</span></div>
<div class="card"><b>${Math.round(r.bytes_per_node_per_s).toLocaleString('en-US')} B/s</b><span>per node (mean)</span></div>
<div class="card"><b>${r.converged_after_heal_s === null ? 'no' : fmtS(r.converged_after_heal_s * 1000)}</b><span>to converge after faults stopped</span></div>
</div>
<div class="legend">${legend}</div>
<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${svgH}" viewBox="0 0 ${WIDTH} ${svgH}">
<defs>
<pattern id="down" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="4" height="4" fill="#fbd5cf"/><rect width="2" height="4" fill="#b42318"/></pattern>
<pattern id="cut" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><rect width="4" height="4" fill="#e4e7eb" opacity="0.7"/><rect width="1" height="4" fill="#7b8794"/></pattern>
</defs>
${parts.join('\n')}
</svg>
<div class="sub">Rows: ${esc(note)}. Bars are step attempts; hover for details.</div>
<div class="cols">
<div><h3>Properties</h3><ul class="props">${props}</ul></div>
<div><h3>Messages</h3><table>
<tr><th>gossip frames</th><td>${totals.gossip.toLocaleString('en-US')}</td></tr>
<tr><th>rpc requests + replies</th><td>${totals.rpc.toLocaleString('en-US')}</td></tr>
<tr><th>forged (attacker)</th><td>${totals.forged.toLocaleString('en-US')}</td></tr>
<tr><th>coordinator bytes/s</th><td>${Math.round(r.bytes_coordinator_per_s).toLocaleString('en-US')}</td></tr>
</table></div>
<div><h3>Step attempts</h3><table>
<tr><th>succeeded</th><td>${attempts.success}</td></tr>
<tr><th>failed</th><td>${attempts.failure}</td></tr>
<tr><th>interrupted by a crash</th><td>${attempts.interrupted}</td></tr>
<tr><th>max concurrent by group</th><td>${esc(JSON.stringify(r.max_concurrent_by_group))}</td></tr>
</table></div>
<div><h3>Run</h3><table>
<tr><th>events</th><td>${r.events.toLocaleString('en-US')}</td></tr>
<tr><th>core steps</th><td>${r.core_steps.toLocaleString('en-US')}</td></tr>
<tr><th>peak RSS</th><td>${r.peak_rss_mb} MB</td></tr>
<tr><th>seeds in this invocation</th><td>${summary.seeds.length}</td></tr>
</table></div>
</div>
${r.violations.length > 0 ? `<div class="viol"><b>Violations</b><ul>${r.violations.slice(0, 40).map((v) => `<li><b>${esc(v.property)}</b>: ${esc(v.detail)}</li>`).join('')}</ul></div>` : ''}
</body></html>
`
}
