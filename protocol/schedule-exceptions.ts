// Exception windows (FORMAT.md §2, `exceptionRules[]` and the coordinator's global exceptions):
// each occurrence s of a window's rrule opens a window [s, s + duration), `duration` in MINUTES
// (see protocol/schedule.ts for why). An occurrence at t is excluded iff some window start s
// has s ≤ t < s + duration. Also what follows from them: the planned occurrences with their
// exclusions, and when an agent should next wake up.
import {
  MAX_EXCEPTION_DURATION_MINUTES, MAX_INDEXED_STARTS, MAX_OCCURRENCES_PER_QUERY, MAX_OFFSET_SWING_MS, MINUTE_MS, newBudget,
  type RecurringSchedule, type Schedule, type ScheduleOptions,
} from './schedule-bounds.js'
import { collect, lowerBound, nextOccurrences } from './schedule-expand.js'
import { parseExceptionRule } from './schedule-parse.js'
import { typicalSpacingMs } from './schedule-rrule.js'

/** One Courier `exceptionRules[]` entry. `duration` is in MINUTES (see protocol/schedule.ts). */
export interface ExceptionWindow {
  rrule: string
  duration: number
}

/** An exception rule with its origin: the job's own `exceptionRules` or a coordinator-managed
 *  global exception the job opted into. Per-entry start/zone override the compile options
 *  (a global exception's default start is its own creation time, not the job's). */
export interface ExceptionRuleInput extends ExceptionWindow {
  source?: 'job' | 'global'
  id?: string
  defaultStartMs?: number
  timeZone?: string
}

export interface CompiledException {
  source: 'job' | 'global'
  /** Position among the entries of the same source (for 'job': the index in exceptionRules). */
  ruleIndex: number
  id?: string
  durationMs: number
  schedule: RecurringSchedule
}
export type CompiledExceptions = readonly CompiledException[]

export interface Exclusion {
  source: 'job' | 'global'
  ruleIndex: number
  id?: string
  windowStartMs: number
  windowEndMs: number
}

export type CompileExceptionsResult = { ok: true; windows: CompiledExceptions } | { ok: false; message: string; index: number; field: 'rrule' | 'duration' }

/** Compile exception rules from one or more sources (`source` defaults to 'job'). On error,
 *  `index` is the position in `rules`. */
export function compileExceptions(rules: readonly ExceptionRuleInput[], opts: ScheduleOptions): CompileExceptionsResult {
  const windows: CompiledException[] = []
  const perSource = { job: 0, global: 0 }
  for (const [index, entry] of rules.entries()) {
    const source = entry.source ?? 'job'
    const ruleIndex = perSource[source]++
    const label = source === 'job' ? `exceptionRules[${ruleIndex}]` : `globalExceptions[${JSON.stringify(entry.id ?? String(ruleIndex))}]`
    const d = entry.duration
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 1 || d > MAX_EXCEPTION_DURATION_MINUTES) {
      return { ok: false, index, field: 'duration', message: `${label}.duration: got ${JSON.stringify(d)}; expected a whole number of minutes from 1 to ${MAX_EXCEPTION_DURATION_MINUTES}` }
    }
    const parsed = parseExceptionRule(entry.rrule, { defaultStartMs: entry.defaultStartMs ?? opts.defaultStartMs, timeZone: entry.timeZone ?? opts.timeZone, templateBudget: opts.templateBudget }, `${label}.rrule`)
    if (!parsed.ok) return { ok: false, index, field: 'rrule', message: parsed.message }
    if (parsed.schedule.kind !== 'recurring') return { ok: false, index, field: 'rrule', message: `${label}.rrule: expected a recurrence rule` }
    const compiled: CompiledException = { source, ruleIndex, durationMs: d * MINUTE_MS, schedule: parsed.schedule }
    if (entry.id !== undefined) compiled.id = entry.id
    windows.push(compiled)
  }
  return { ok: true, windows }
}

/** The exception window containing `atMs` (s ≤ atMs < s + duration), if any. When several
 *  contain it, the first rule in list order wins, and within a rule the earliest start. */
export function exclusionFor(compiled: CompiledExceptions, atMs: number): Exclusion | undefined {
  for (const w of compiled) {
    const start = collect(w.schedule, atMs - w.durationMs + 1, atMs + 1, 1)[0]
    if (start !== undefined) return exclusionOf(w, start)
  }
  return undefined
}

function exclusionOf(w: CompiledException, start: number): Exclusion {
  const hit: Exclusion = { source: w.source, ruleIndex: w.ruleIndex, windowStartMs: start, windowEndMs: start + w.durationMs }
  if (w.id !== undefined) hit.id = w.id
  return hit
}

/**
 * exclusionFor for many instants in [fromMs, toMs]: each window's starts that can cover the
 * range are expanded once (one budgeted query per window), then each check is a binary
 * search. A window expected to start more than MAX_INDEXED_STARTS times in the range, or whose
 * expansion ran out of budget or hit MAX_OCCURRENCES_PER_QUERY, is checked per instant, as
 * exclusionFor does. Same answers as exclusionFor.
 */
export function exclusionChecker(compiled: CompiledExceptions, fromMs: number, toMs: number): (atMs: number) => Exclusion | undefined {
  const entries = distinctWindows(compiled).map((w) => indexWindow(w, fromMs, toMs))
  return (atMs) => {
    for (const e of entries) {
      const start = atMs >= fromMs && atMs <= toMs && e.starts !== undefined ? indexedStart(e, atMs) : queriedStart(e, atMs)
      if (start !== undefined) return exclusionOf(e.w, start)
    }
    return undefined
  }
}

interface IndexedWindow {
  w: CompiledException
  /** Every start that can cover [fromMs, toMs], or undefined when not listed (see above). */
  starts?: number[]
  /** Per-instant queries: no start in [gapFrom, gapTo) (learned from the last query). */
  gapFrom: number
  gapTo: number
}

/** A window with the same schedule and duration as an earlier one can never be the first hit. */
function distinctWindows(compiled: CompiledExceptions): CompiledException[] {
  const seen = new Map<RecurringSchedule, Set<number>>()
  return compiled.filter((w) => {
    const durations = seen.get(w.schedule) ?? new Set<number>()
    seen.set(w.schedule, durations)
    if (durations.has(w.durationMs)) return false
    durations.add(w.durationMs)
    return true
  })
}

function indexWindow(w: CompiledException, fromMs: number, toMs: number): IndexedWindow {
  const e: IndexedWindow = { w, gapFrom: 0, gapTo: 0 }
  if ((toMs - fromMs + w.durationMs) / typicalSpacingMs(w.schedule.rule) > MAX_INDEXED_STARTS) return e // dense
  const budget = newBudget()
  const starts = collect(w.schedule, fromMs - w.durationMs + 1, toMs + 1, MAX_OCCURRENCES_PER_QUERY, budget)
  if (!budget.exhausted && starts.length < MAX_OCCURRENCES_PER_QUERY) e.starts = starts
  return e
}

function indexedStart(e: IndexedWindow, atMs: number): number | undefined {
  const start = e.starts![lowerBound(e.starts!, atMs - e.w.durationMs + 1)]
  return start !== undefined && start <= atMs ? start : undefined
}

/** The earliest start in (atMs − duration, atMs], by query; a query that finds none says how
 *  far the next start is, so the following instants of a sparse rule need no query. */
function queriedStart(e: IndexedWindow, atMs: number): number | undefined {
  const from = atMs - e.w.durationMs + 1
  if (from >= e.gapFrom && atMs < e.gapTo) return undefined
  const next: { wallMs?: number } = {}
  const start = collect(e.w.schedule, from, atMs + 1, 1, newBudget(), next)[0]
  if (start === undefined) {
    e.gapFrom = from
    e.gapTo = next.wallMs === undefined ? atMs + 1 : Math.max(atMs + 1, next.wallMs - MAX_OFFSET_SWING_MS)
  }
  return start
}

export interface PlannedOccurrence {
  at: number
  excluded?: Exclusion
}

/** The next `count` occurrences after `afterMs`, each marked with the window excluding it
 *  (for `chorus job next ID --count N`). Excluded occurrences are listed, not skipped. */
export function planOccurrences(schedule: Schedule, exceptions: CompiledExceptions, afterMs: number, count: number): PlannedOccurrence[] {
  const list = nextOccurrences(schedule, afterMs, count)
  const excludedAt = exclusionChecker(exceptions, list[0] ?? afterMs, list.at(-1) ?? afterMs)
  return list.map((at) => {
    const excluded = excludedAt(at)
    return excluded === undefined ? { at } : { at, excluded }
  })
}

/**
 * When an agent should next wake up: the first occurrence after `afterMs` that no exception
 * window excludes, or undefined if there is none. Excluded occurrences are skipped by jumping
 * to the end of their window; after MAX_OCCURRENCES_PER_QUERY such jumps the current
 * candidate is returned anyway (waking early is harmless: dueOccurrences decides).
 */
export function nextWakeAfter(schedule: Schedule, exceptions: CompiledExceptions, afterMs: number): number | undefined {
  let cursor = afterMs
  for (let i = 0; i < MAX_OCCURRENCES_PER_QUERY; i++) {
    const next = nextOccurrences(schedule, cursor, 1)[0]
    if (next === undefined) return undefined
    const ex = exclusionFor(exceptions, next)
    if (ex === undefined || i === MAX_OCCURRENCES_PER_QUERY - 1) return next
    cursor = Math.max(next, ex.windowEndMs - 1)
  }
  return undefined
}

