// The pure occurrence engine (protocol/schedule.ts). Nothing global is set here: run the file
// with TZ=America/New_York and TZ=Asia/Kolkata too; results must not change.
import { describe, expect, it } from 'vitest'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  DEFAULT_MISSED_POLICY,
  MAX_COUNT,
  MAX_OCCURRENCES_PER_QUERY,
  MAX_RRULE_STEPS,
  ON_TIME_TOLERANCE_MS,
  compileExceptions,
  dueOccurrences,
  exclusionFor,
  nextOccurrences,
  newBudget,
  nextWakeAfter,
  occurrencesBetween,
  parseScheduleRule,
  planOccurrences,
  wallToInstant,
  type CompiledExceptions,
  type ExceptionRuleInput,
  type MissedPolicy,
  type Schedule,
} from '../protocol/schedule.js'

const SAMPLES = fileURLToPath(new URL('../../shared/courier/samples/', import.meta.url))
const MIN = 60_000
const HOUR = 60 * MIN
const DAY = 24 * HOUR
const T0 = Date.UTC(2025, 0, 1, 12, 0, 0) // a job's signed creation time

const iso = (ms: number[]) => ms.map((t) => new Date(t).toISOString().replace('.000Z', 'Z'))
const at = (s: string) => Date.parse(s)

function schedule(rule: string, opts: { defaultStartMs?: number; timeZone?: string } = {}): Schedule {
  const r = parseScheduleRule(rule, { defaultStartMs: opts.defaultStartMs ?? T0, ...(opts.timeZone ? { timeZone: opts.timeZone } : {}) })
  if (!r.ok) throw new Error(r.message)
  return r.schedule
}

function exceptions(rules: ExceptionRuleInput[], defaultStartMs = T0): CompiledExceptions {
  const r = compileExceptions(rules, { defaultStartMs })
  if (!r.ok) throw new Error(r.message)
  return r.windows
}

/** Wall-clock fields of an instant in a zone, computed independently of the module. */
function local(zone: string, ms: number): { date: string; time: string } {
  const f = new Intl.DateTimeFormat('en-CA', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' })
  const p = Object.fromEntries(f.formatToParts(ms).map((x) => [x.type, x.value]))
  return { date: `${p.year}-${p.month}-${p.day}`, time: `${p.hour}:${p.minute}:${p.second}` }
}

describe('occurrence computation', () => {
  const cases: { name: string; rule: string; after: string; count: number; want: string[] }[] = [
    { name: 'DTSTART inside the RRULE (Courier form)', rule: 'RRULE:DTSTART=20230620;FREQ=DAILY', after: '2023-06-01T00:00:00Z', count: 3, want: ['2023-06-20T00:00:00Z', '2023-06-21T00:00:00Z', '2023-06-22T00:00:00Z'] },
    { name: 'DTSTART inside the RRULE, far from the start', rule: 'RRULE:DTSTART=20230620;FREQ=DAILY', after: '2027-03-01T00:00:00Z', count: 2, want: ['2027-03-02T00:00:00Z', '2027-03-03T00:00:00Z'] },
    { name: 'DTSTART date-time UTC inside the RRULE', rule: 'RRULE:DTSTART=20230630T083000Z;FREQ=WEEKLY', after: '2023-06-01T00:00:00Z', count: 2, want: ['2023-06-30T08:30:00Z', '2023-07-07T08:30:00Z'] },
    { name: 'separate DTSTART line, UTC', rule: 'DTSTART:20240101T060000Z\nRRULE:FREQ=DAILY;INTERVAL=1', after: '2023-01-01T00:00:00Z', count: 2, want: ['2024-01-01T06:00:00Z', '2024-01-02T06:00:00Z'] },
    { name: 'COUNT', rule: 'RRULE:DTSTART=20230101T090000Z;FREQ=DAILY;COUNT=3', after: '2022-01-01T00:00:00Z', count: 10, want: ['2023-01-01T09:00:00Z', '2023-01-02T09:00:00Z', '2023-01-03T09:00:00Z'] },
    { name: 'COUNT, asked after the last', rule: 'RRULE:DTSTART=20230101T090000Z;FREQ=DAILY;COUNT=3', after: '2023-01-03T09:00:00Z', count: 10, want: [] },
    { name: 'UNTIL (UTC, inclusive)', rule: 'RRULE:DTSTART=20230101T090000Z;FREQ=DAILY;UNTIL=20230103T090000Z', after: '2022-01-01T00:00:00Z', count: 10, want: ['2023-01-01T09:00:00Z', '2023-01-02T09:00:00Z', '2023-01-03T09:00:00Z'] },
    { name: 'UNTIL as a date includes that whole day', rule: 'RRULE:DTSTART=20230101T090000Z;FREQ=DAILY;UNTIL=20230102', after: '2022-01-01T00:00:00Z', count: 10, want: ['2023-01-01T09:00:00Z', '2023-01-02T09:00:00Z'] },
    { name: 'INTERVAL', rule: 'RRULE:DTSTART=20230101T090000Z;FREQ=DAILY;INTERVAL=2', after: '2022-01-01T00:00:00Z', count: 3, want: ['2023-01-01T09:00:00Z', '2023-01-03T09:00:00Z', '2023-01-05T09:00:00Z'] },
    { name: 'SECONDLY', rule: 'RRULE:DTSTART=20230101T000000Z;FREQ=SECONDLY;INTERVAL=15', after: '2023-01-01T00:00:00Z', count: 3, want: ['2023-01-01T00:00:15Z', '2023-01-01T00:00:30Z', '2023-01-01T00:00:45Z'] },
    { name: 'SECONDLY far from DTSTART', rule: 'RRULE:DTSTART=20200101T000000Z;FREQ=SECONDLY;INTERVAL=7', after: '2026-01-01T00:00:00Z', count: 2, want: ['2026-01-01T00:00:01Z', '2026-01-01T00:00:08Z'] }, // 2192 days = 189388800 s ≡ 6 (mod 7)
    { name: 'MINUTELY', rule: 'RRULE:DTSTART=20230101T000000Z;FREQ=MINUTELY;INTERVAL=3', after: '2023-01-01T00:00:00Z', count: 2, want: ['2023-01-01T00:03:00Z', '2023-01-01T00:06:00Z'] },
    { name: 'HOURLY with BYMINUTE', rule: 'RRULE:DTSTART=20230101T000000Z;FREQ=HOURLY;BYMINUTE=0,30', after: '2023-01-01T00:00:00Z', count: 3, want: ['2023-01-01T00:30:00Z', '2023-01-01T01:00:00Z', '2023-01-01T01:30:00Z'] },
    { name: 'HOURLY with INTERVAL and BYHOUR', rule: 'RRULE:DTSTART=20230101T000000Z;FREQ=HOURLY;INTERVAL=5;BYHOUR=3', after: '2023-01-01T00:00:00Z', count: 2, want: ['2023-01-04T03:00:00Z', '2023-01-09T03:00:00Z'] }, // hours 0,5,…,75 = Jan 4 03:00, then every 120 h
    { name: 'DAILY with BYHOUR', rule: 'RRULE:DTSTART=20230101T000000Z;FREQ=DAILY;BYHOUR=6,18', after: '2023-01-01T00:00:00Z', count: 3, want: ['2023-01-01T06:00:00Z', '2023-01-01T18:00:00Z', '2023-01-02T06:00:00Z'] },
    { name: 'WEEKLY with BYDAY', rule: 'RRULE:DTSTART=20230101T100000Z;FREQ=WEEKLY;BYDAY=MO,WE,FR', after: '2022-12-31T00:00:00Z', count: 4, want: ['2023-01-02T10:00:00Z', '2023-01-04T10:00:00Z', '2023-01-06T10:00:00Z', '2023-01-09T10:00:00Z'] },
    { name: 'WEEKLY every other week, WKST', rule: 'RRULE:DTSTART=20230102T100000Z;FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;WKST=MO', after: '2026-01-01T00:00:00Z', count: 2, want: ['2026-01-13T10:00:00Z', '2026-01-27T10:00:00Z'] },
    { name: 'MONTHLY last Friday', rule: 'RRULE:DTSTART=20230101T100000Z;FREQ=MONTHLY;BYDAY=-1FR', after: '2022-12-31T00:00:00Z', count: 3, want: ['2023-01-27T10:00:00Z', '2023-02-24T10:00:00Z', '2023-03-31T10:00:00Z'] },
    { name: 'MONTHLY on the 31st skips short months', rule: 'RRULE:DTSTART=20230101T000000Z;FREQ=MONTHLY;BYMONTHDAY=31', after: '2022-12-31T00:00:00Z', count: 3, want: ['2023-01-31T00:00:00Z', '2023-03-31T00:00:00Z', '2023-05-31T00:00:00Z'] },
    { name: 'MONTHLY last weekday (BYSETPOS)', rule: 'RRULE:DTSTART=20230101T000000Z;FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1', after: '2022-12-31T00:00:00Z', count: 3, want: ['2023-01-31T00:00:00Z', '2023-02-28T00:00:00Z', '2023-03-31T00:00:00Z'] },
    { name: 'YEARLY on 29 February', rule: 'RRULE:DTSTART=20230101T000000Z;FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29', after: '2022-12-31T00:00:00Z', count: 2, want: ['2024-02-29T00:00:00Z', '2028-02-29T00:00:00Z'] },
    { name: 'lower-case input', rule: 'rrule:dtstart=20230620;freq=daily;count=1', after: '2023-01-01T00:00:00Z', count: 5, want: ['2023-06-20T00:00:00Z'] },
  ]
  it.each(cases)('$name: $rule', ({ rule, after, count, want }) => {
    expect(iso(nextOccurrences(schedule(rule), at(after), count))).toEqual(want)
  })

  it('defaults DTSTART to the creation time, rounded up to a whole second', () => {
    const s = schedule('RRULE:FREQ=MINUTELY;COUNT=2', { defaultStartMs: T0 + 123 })
    expect(nextOccurrences(s, 0, 5)).toEqual([T0 + 1000, T0 + 1000 + MIN])
    expect(nextOccurrences(schedule('RRULE:FREQ=DAILY'), T0 - 1, 2)).toEqual([T0, T0 + DAY])
  })

  it('immediate has one occurrence at the creation time', () => {
    const s = schedule('immediate')
    expect(s).toEqual({ kind: 'immediate', atMs: T0 })
    expect(nextOccurrences(s, T0 - 1, 5)).toEqual([T0])
    expect(nextOccurrences(s, T0, 5)).toEqual([])
    expect(occurrencesBetween(s, T0, T0 + 1, 5)).toEqual([T0])
    expect(occurrencesBetween(s, T0 + 1, T0 + 2, 5)).toEqual([])
  })

  it('occurrencesBetween: inclusive from, exclusive to, bounded', () => {
    const s = schedule('RRULE:DTSTART=20230101T000000Z;FREQ=HOURLY')
    const a = at('2023-01-02T00:00:00Z')
    expect(occurrencesBetween(s, a, a + 3 * HOUR, 100)).toEqual([a, a + HOUR, a + 2 * HOUR])
    expect(occurrencesBetween(s, a + 1, a + 3 * HOUR + 1, 100)).toEqual([a + HOUR, a + 2 * HOUR, a + 3 * HOUR])
    expect(occurrencesBetween(s, a, a + 3 * HOUR, 2)).toEqual([a, a + HOUR])
    expect(occurrencesBetween(s, a, a, 10)).toEqual([])
    expect(occurrencesBetween(s, a, a + 1000 * DAY, 1e9)).toHaveLength(MAX_OCCURRENCES_PER_QUERY)
    expect(nextOccurrences(s, a, 1e9)).toHaveLength(MAX_OCCURRENCES_PER_QUERY)
    expect(occurrencesBetween(s, at('2022-01-01T00:00:00Z'), a, 1)).toEqual([at('2023-01-01T00:00:00Z')])
  })

  it('starts near the query far from DTSTART (rrule itself walks from DTSTART)', () => {
    const s = schedule('RRULE:DTSTART=20200101T000000Z;FREQ=SECONDLY')
    for (let i = 0; i < 50; i++) {
      const after = at('2027-06-01T00:00:00Z') + i * DAY
      const budget = newBudget()
      expect(nextOccurrences(s, after, 10, budget)).toEqual(Array.from({ length: 10 }, (_, k) => after + (k + 1) * 1000))
      // Walking from DTSTART would spend a step on each of the ~2.3e8 seconds before the query
      // (and exhaust the budget); rebased near it, the query spends a few steps per occurrence.
      expect(budget.exhausted).toBe(false)
      expect(MAX_RRULE_STEPS - budget.left).toBeLessThan(100)
    }
  })
})

describe('every RRULE in the Courier samples', () => {
  function walk(dir: string): string[] {
    return readdirSync(dir).flatMap((name) => {
      const p = join(dir, name)
      return statSync(p).isDirectory() ? walk(p) : [p]
    })
  }
  const found: { file: string; rule: string }[] = []
  for (const file of walk(SAMPLES)) {
    for (const m of readFileSync(file, 'utf8').matchAll(/RRULE:[^"'\s]+/g)) found.push({ file: file.slice(SAMPLES.length), rule: m[0] })
  }

  it('finds the sample rules', () => {
    expect(new Set(found.map((f) => f.rule))).toEqual(
      new Set(['RRULE:FREQ=MINUTELY;COUNT=2;WKST=MO', 'RRULE:FREQ=MINUTELY;COUNT=10', 'RRULE:FREQ=MINUTELY;INTERVAL=3', 'RRULE:DTSTART=20230620;FREQ=DAILY', 'RRULE:DTSTART=20230630;FREQ=WEEKLY', 'RRULE:FREQ=WEEKLY;INTERVAL=1', 'RRULE:FREQ=DAILY;INTERVAL=2']),
    )
  })

  it.each(found)('$file: $rule parses as a schedule and as an exception', ({ rule }) => {
    const s = schedule(rule)
    const next = nextOccurrences(s, T0 - 1, 3)
    expect(next.length).toBeGreaterThan(0)
    for (let i = 1; i < next.length; i++) expect(next[i]!).toBeGreaterThan(next[i - 1]!)
    expect(compileExceptions([{ rrule: rule, duration: 1 }], { defaultStartMs: T0 }).ok).toBe(true)
  })

  it('single-node-job-reoccurring-exception: 10 minutely runs, one minute in three blacked out', () => {
    const job = JSON.parse(readFileSync(join(SAMPLES, 'samples_single-node-job-reoccurring-exception.json'), 'utf8'))
    const s = schedule(job.scheduleRule)
    const ex = exceptions(job.exceptionRules)
    const plan = planOccurrences(s, ex, T0 - 1, 20)
    expect(plan.map((p) => p.at)).toEqual(Array.from({ length: 10 }, (_, i) => T0 + i * MIN))
    expect(plan.filter((p) => p.excluded).map((p) => (p.at - T0) / MIN)).toEqual([0, 3, 6, 9])
    expect(plan[3]!.excluded).toEqual({ source: 'job', ruleIndex: 0, windowStartMs: T0 + 3 * MIN, windowEndMs: T0 + 4 * MIN })
    expect(nextWakeAfter(s, ex, T0 - 1)).toBe(T0 + MIN)
    expect(nextWakeAfter(s, ex, T0 + 2 * MIN)).toBe(T0 + 4 * MIN)
    expect(nextWakeAfter(s, ex, T0 + 8 * MIN)).toBeUndefined()
  })

  it('single-node-job-future-linux: COUNT=2', () => {
    const job = JSON.parse(readFileSync(join(SAMPLES, 'samples_single-node-job-future-linux.json'), 'utf8'))
    expect(nextOccurrences(schedule(job.scheduleRule), 0, 10)).toEqual([T0, T0 + MIN])
  })
})

describe('exception windows', () => {
  it('start is inclusive, end exclusive (duration in minutes)', () => {
    const ex = exceptions([{ rrule: 'RRULE:DTSTART=20230620;FREQ=DAILY', duration: 2 }])
    const s = at('2025-03-01T00:00:00Z')
    expect(exclusionFor(ex, s - 1)).toBeUndefined()
    expect(exclusionFor(ex, s)).toEqual({ source: 'job', ruleIndex: 0, windowStartMs: s, windowEndMs: s + 2 * MIN })
    expect(exclusionFor(ex, s + 2 * MIN - 1)?.windowStartMs).toBe(s)
    expect(exclusionFor(ex, s + 2 * MIN)).toBeUndefined()
    expect(exclusionFor(ex, at('2023-06-19T00:00:00Z'))).toBeUndefined() // before DTSTART
  })

  it('labels job and global sources; overlapping windows', () => {
    const ex = exceptions([
      { rrule: 'RRULE:DTSTART=20230630;FREQ=WEEKLY', duration: 4 },
      { rrule: 'RRULE:DTSTART=20240101T000000Z;FREQ=DAILY;BYHOUR=3', duration: 90, source: 'global', id: 'patch-night' },
      { rrule: 'RRULE:FREQ=HOURLY', duration: 120, source: 'global', id: 'overlapping', defaultStartMs: at('2030-01-01T00:00:00Z') },
    ])
    expect(exclusionFor(ex, at('2025-01-03T00:03:00Z'))).toMatchObject({ source: 'job', ruleIndex: 0 }) // 2025-01-03 is a Friday
    expect(exclusionFor(ex, at('2025-01-05T04:29:59Z'))).toEqual({ source: 'global', ruleIndex: 0, id: 'patch-night', windowStartMs: at('2025-01-05T03:00:00Z'), windowEndMs: at('2025-01-05T04:30:00Z') })
    expect(exclusionFor(ex, at('2025-01-05T04:30:00Z'))).toBeUndefined()
    // Two-hour windows every hour: the earliest window containing the instant is reported.
    expect(exclusionFor(ex, at('2030-01-01T05:30:00Z'))).toMatchObject({ id: 'overlapping', ruleIndex: 1, windowStartMs: at('2030-01-01T04:00:00Z') })
  })

  it('reports errors with the index and the path', () => {
    const cases: [ExceptionRuleInput[], number, RegExp][] = [
      [[{ rrule: 'RRULE:FREQ=DAILY', duration: 0 }], 0, /^exceptionRules\[0\]\.duration: got 0; expected a whole number of minutes/],
      [[{ rrule: 'RRULE:FREQ=DAILY', duration: 1 }, { rrule: 'RRULE:INTERVAL=3', duration: 1 }], 1, /^exceptionRules\[1\]\.rrule: FREQ is missing/],
      [[{ rrule: 'immediate', duration: 1 }], 0, /^exceptionRules\[0\]\.rrule: "immediate" is not a recurrence/],
      [[{ rrule: 'RRULE:FREQ=DAILY', duration: 1 }, { rrule: 'RRULE:FREQ=DAILY;TZID=Nowhere/Land', duration: 1, source: 'global', id: 'g7' }], 1, /^globalExceptions\["g7"\]\.rrule: unknown time zone "Nowhere\/Land"/],
      [[{ rrule: 'RRULE:FREQ=DAILY', duration: 1.5 }], 0, /duration: got 1\.5/],
    ]
    for (const [rules, index, message] of cases) {
      const r = compileExceptions(rules, { defaultStartMs: T0 })
      expect(r.ok).toBe(false)
      if (!r.ok) {
        expect(r.index).toBe(index)
        expect(r.message).toMatch(message)
      }
    }
  })
})

describe('daylight saving: no missing and no doubled day, 2024-2027', () => {
  // gap: [wall time that falls in the spring-forward gap, expected wall time on that day]
  // overlap: wall time that occurs twice on the fall-back day; shift: size of the change.
  const zones = [
    { zone: 'Europe/Paris', gap: ['02:30:00', '03:30:00'], overlap: '02:30:00', shift: HOUR },
    { zone: 'America/New_York', gap: ['02:30:00', '03:30:00'], overlap: '01:30:00', shift: HOUR },
    { zone: 'Australia/Sydney', gap: ['02:30:00', '03:30:00'], overlap: '02:30:00', shift: HOUR },
    { zone: 'Australia/Lord_Howe', gap: ['02:15:00', '02:45:00'], overlap: '01:45:00', shift: 30 * MIN },
  ] as const
  const from = at('2024-01-01T00:00:00Z')
  const to = at('2028-01-01T00:00:00Z')

  function checkDaily(zone: string, wall: string, occurrences: number[]) {
    const dates = occurrences.map((t) => local(zone, t).date)
    expect(new Set(dates).size).toBe(dates.length) // no doubled day
    for (let i = 1; i < dates.length; i++) {
      const gapDays = (Date.parse(`${dates[i]}T00:00:00Z`) - Date.parse(`${dates[i - 1]}T00:00:00Z`)) / DAY
      expect(gapDays, `after ${dates[i - 1]}`).toBe(1) // no missing day
    }
    const off = occurrences.filter((t) => local(zone, t).time !== wall)
    return off
  }

  it.each(zones)('$zone: spring forward runs once, shifted by the gap', ({ zone, gap, shift }) => {
    const [hh, mm] = gap[0].split(':')
    const s = schedule(`DTSTART;TZID=${zone}:20231201T${hh}${mm}00\nRRULE:FREQ=DAILY`)
    const occ = occurrencesBetween(s, from, to, 5000)
    expect(occ.length).toBeGreaterThan(1450)
    const off = checkDaily(zone, gap[0], occ)
    expect(off).toHaveLength(4) // one spring-forward day per year
    for (const t of off) {
      expect(local(zone, t).time).toBe(gap[1])
      // It is the first instant at that shifted wall time, and the gap is right before it.
      expect(local(zone, t - shift).time).not.toBe(gap[0])
    }
  })

  it.each(zones)('$zone: fall back runs once, at the first (daylight) instance', ({ zone, gap, overlap, shift }) => {
    const [hh, mm] = overlap.split(':')
    const s = schedule(`RRULE:TZID=${zone};DTSTART=20231201T${hh}${mm}00;FREQ=DAILY`)
    const occ = occurrencesBetween(s, from, to, 5000)
    // Where the overlap time also falls in the spring gap (02:30 in Paris and Sydney), those
    // four days run at the shifted time, as tested above.
    const off = checkDaily(zone, overlap, occ)
    expect(off.map((t) => local(zone, t).time)).toEqual(overlap === gap[0] ? Array(4).fill(gap[1]) : [])
    const ambiguous = occ.filter((t) => local(zone, t + shift).time === overlap)
    expect(ambiguous).toHaveLength(4) // one fall-back day per year, and we ran the earlier instance
    for (const t of ambiguous) expect(local(zone, t - shift).time).not.toBe(overlap)
  })

  it('Paris 2025-03-30 02:30 runs at 03:30 CEST; New York 2025-11-02 01:30 runs at 01:30 EDT', () => {
    const paris = schedule('DTSTART;TZID=Europe/Paris:20250330T023000\nRRULE:FREQ=DAILY')
    expect(iso(nextOccurrences(paris, 0, 2))).toEqual(['2025-03-30T01:30:00Z', '2025-03-31T00:30:00Z'])
    const ny = schedule('RRULE:FREQ=DAILY;DTSTART=20251101T013000', { timeZone: 'America/New_York' })
    expect(iso(nextOccurrences(ny, 0, 3))).toEqual(['2025-11-01T05:30:00Z', '2025-11-02T05:30:00Z', '2025-11-03T06:30:00Z'])
    expect(wallToInstant('Australia/Lord_Howe', at('2025-10-05T02:15:00Z'))).toBe(at('2025-10-04T15:45:00Z')) // 02:45 +11:00
  })

  it('a sub-daily rule never doubles an instant across the gap', () => {
    const s = schedule('DTSTART;TZID=America/New_York:20250309T000000\nRRULE:FREQ=MINUTELY;INTERVAL=30;COUNT=8')
    const occ = nextOccurrences(s, 0, 20)
    expect(occ.map((t) => local('America/New_York', t).time)).toEqual(['00:00:00', '00:30:00', '01:00:00', '01:30:00', '03:00:00', '03:30:00'])
    expect(new Set(occ).size).toBe(occ.length)
  })

  it('a time zone given as an option and a UTC DTSTART', () => {
    const s = schedule('DTSTART:20250101T080000Z\nRRULE:FREQ=WEEKLY;BYDAY=MO', { timeZone: 'Europe/Paris' })
    // 09:00 in Paris every Monday, both in winter and in summer.
    expect(nextOccurrences(s, 0, 30).map((t) => local('Europe/Paris', t).time)).toEqual(Array(30).fill('09:00:00'))
  })
})

describe('missed occurrences', () => {
  const day = (n: number, hhmm = '09:00') => at(`2025-01-${String(n).padStart(2, '0')}T${hhmm}:00Z`)
  const daily = schedule('RRULE:DTSTART=20250101T090000Z;FREQ=DAILY')
  const none: CompiledExceptions = []
  const once: MissedPolicy = { kind: 'runOnceWithin', windowMs: HOUR }

  const cases: { name: string; last: number; now: number; policy: MissedPolicy; ex?: CompiledExceptions; run: number[]; missed: number[]; excluded?: number[] }[] = [
    { name: 'on time', last: day(1), now: day(2) + 500, policy: DEFAULT_MISSED_POLICY, run: [day(2)], missed: [] },
    { name: 'exactly at the occurrence', last: day(1), now: day(2), policy: { kind: 'skip' }, run: [day(2)], missed: [] },
    { name: 'nothing due yet', last: day(2), now: day(3) - 1, policy: DEFAULT_MISSED_POLICY, run: [], missed: [] },
    { name: 'clock jumped backwards', last: day(3), now: day(2, '12:00'), policy: DEFAULT_MISSED_POLICY, run: [], missed: [] },
    { name: 'clock jumped backwards to the same time', last: day(3), now: day(3), policy: { kind: 'catchUp', max: 5 }, run: [], missed: [] },
    { name: 'jump forward 3 days, default: latest runs, older missed', last: day(1), now: day(4, '09:30'), policy: DEFAULT_MISSED_POLICY, run: [day(4)], missed: [day(2), day(3)] },
    { name: 'jump forward, too late for runOnceWithin', last: day(1), now: day(4, '10:30'), policy: once, run: [], missed: [day(2), day(3), day(4)] },
    { name: 'skip: within tolerance runs', last: day(1), now: day(2) + ON_TIME_TOLERANCE_MS, policy: { kind: 'skip' }, run: [day(2)], missed: [] },
    { name: 'skip: beyond tolerance is missed', last: day(1), now: day(2) + ON_TIME_TOLERANCE_MS + 1, policy: { kind: 'skip' }, run: [], missed: [day(2)] },
    { name: 'catchUp: latest max run, oldest first', last: day(1), now: day(5, '12:00'), policy: { kind: 'catchUp', max: 2 }, run: [day(4), day(5)], missed: [day(2), day(3)] },
    { name: 'catchUp: fewer than max', last: day(1), now: day(3, '12:00'), policy: { kind: 'catchUp', max: 5 }, run: [day(2), day(3)], missed: [] },
    {
      name: 'excluded occurrences are neither run nor missed',
      last: day(1), now: day(4, '09:10'), policy: { kind: 'catchUp', max: 5 },
      ex: exceptions([{ rrule: 'RRULE:DTSTART=20250103T083000Z;FREQ=DAILY;COUNT=1', duration: 60 }]),
      run: [day(2), day(4)], missed: [], excluded: [day(3)],
    },
    {
      name: 'latest excluded: the previous one runs if within the window',
      last: day(1), now: day(2, '09:20'), policy: once,
      ex: exceptions([{ rrule: 'RRULE:DTSTART=20250102T091000Z;FREQ=MINUTELY;COUNT=1', duration: 1 }]),
      run: [day(2)], missed: [],
    },
    {
      name: 'a late run does not start inside a blackout',
      last: day(1), now: day(2, '09:45'), policy: once,
      ex: exceptions([{ rrule: 'RRULE:DTSTART=20250102T093000Z;FREQ=DAILY', duration: 60 }]),
      run: [], missed: [day(2)],
    },
  ]
  it.each(cases)('$name', ({ last, now, policy, ex, run, missed, excluded = [] }) => {
    const r = dueOccurrences(daily, ex ?? none, last, now, policy, 100)
    expect(r.run).toEqual(run)
    expect(r.missed).toEqual(missed)
    expect(r.excluded.map((e) => e.at)).toEqual(excluded)
    expect(r.truncated).toBeUndefined()
    expect(r.handledThroughMs).toBe(Math.max(last, now))
    for (const t of [...r.run, ...r.missed, ...r.excluded.map((e) => e.at)]) {
      expect(t).toBeGreaterThan(last)
      expect(t).toBeLessThanOrEqual(now)
    }
  })

  it('the default policy is runOnceWithin one hour', () => {
    expect(DEFAULT_MISSED_POLICY).toEqual({ kind: 'runOnceWithin', windowMs: HOUR })
  })

  it('says so when the bound truncates, and still accounts for everything', () => {
    const s = schedule('RRULE:DTSTART=20250101T000000Z;FREQ=MINUTELY')
    const ex = exceptions([{ rrule: 'RRULE:DTSTART=20250101T000500Z;FREQ=HOURLY', duration: 2 }])
    const last = at('2025-01-01T00:00:00Z')
    const now = at('2025-01-01T03:00:30Z')
    const r = dueOccurrences(s, ex, last, now, DEFAULT_MISSED_POLICY, 10)
    expect(r.run).toEqual([at('2025-01-01T03:00:00Z')])
    expect(r.missed.length + r.excluded.length).toBe(10)
    expect(iso(r.excluded.map((e) => e.at))).toEqual(['2025-01-01T00:05:00Z', '2025-01-01T00:06:00Z'])
    expect(r.truncated).toEqual({ fromMs: at('2025-01-01T00:11:00Z'), toMs: now })
    expect(r.handledThroughMs).toBe(now)
    // Listed, run and the truncated range together cover (last, now] exactly once.
    const all = occurrencesBetween(s, last + 1, now + 1, 1000)
    const listed = [...r.run, ...r.missed, ...r.excluded.map((e) => e.at)]
    expect(new Set(listed).size).toBe(listed.length)
    for (const t of all) expect(listed.includes(t) || (t >= r.truncated!.fromMs && t <= r.truncated!.toMs)).toBe(true)
  })

  it('a clock wandering back and forth never runs an occurrence twice or loses one', () => {
    const s = schedule('RRULE:DTSTART=20250101T000000Z;FREQ=MINUTELY;INTERVAL=5')
    const ex = exceptions([{ rrule: 'RRULE:DTSTART=20250101T010000Z;FREQ=HOURLY;INTERVAL=3', duration: 20 }])
    const base = at('2025-01-01T00:00:00Z')
    // Clock readings in minutes: forwards, a backward jump, a long sleep, small steps.
    const readings = [0, 3, 5, 7, 12, 30, 29, 10, 31, 60, 61, 75, 300, 299, 301, 305, 600, 601, 602].map((m) => base + m * MIN + 250)
    let last = base - 1
    const seen: number[] = []
    const runs: number[] = []
    for (const now of readings) {
      const r = dueOccurrences(s, ex, last, now, DEFAULT_MISSED_POLICY, 1000)
      expect(r.truncated).toBeUndefined()
      runs.push(...r.run)
      seen.push(...r.run, ...r.missed, ...r.excluded.map((e) => e.at))
      last = r.handledThroughMs
    }
    expect(new Set(seen).size).toBe(seen.length)
    expect(seen.sort((a, b) => a - b)).toEqual(occurrencesBetween(s, base, last + 1, 1000))
    expect(new Set(runs).size).toBe(runs.length)
    for (const t of runs) expect(exclusionFor(ex, t)).toBeUndefined()
  })
})

describe('errors name what is wrong and what is expected', () => {
  const cases: [string, RegExp][] = [
    ['RRULE:INTERVAL=1', /^scheduleRule: FREQ is missing; expected e\.g\. "RRULE:FREQ=DAILY;INTERVAL=1"$/],
    ['RRULE:FREQ=DAYLY', /FREQ=DAYLY is not a frequency; expected one of YEARLY, .*SECONDLY/],
    ['FREQ=DAILY', /the "RRULE:" prefix is missing; expected e\.g\. "RRULE:FREQ=DAILY"/],
    ['', /the rule is empty; expected "immediate" or a rule such as/],
    ['RRULE:FREQ=DAILY;TZID=Mars/Olympus_Mons', /unknown time zone "Mars\/Olympus_Mons"; expected an IANA zone name/],
    ['DTSTART;TZID=Europe/Nowhere:20250101T000000\nRRULE:FREQ=DAILY', /unknown time zone "Europe\/Nowhere"/],
    ['RRULE:FREQ=DAILY;COUNT=2;UNTIL=20250101', /COUNT and UNTIL are both given/],
    ['RRULE:FREQ=DAILY;COUNT=0', /COUNT=0; expected an integer from 1 to/],
    [`RRULE:FREQ=DAILY;COUNT=${MAX_COUNT + 1}`, /COUNT=100001; expected an integer from 1 to 100000/],
    ['RRULE:FREQ=DAILY;INTERVAL=0', /INTERVAL=0; expected a positive integer/],
    ['RRULE:FREQ=DAILY;BYHOUR=24', /BYHOUR: 24 is out of range; expected 0\.\.23/],
    ['RRULE:FREQ=WEEKLY;BYDAY=1MO', /an ordinal weekday needs FREQ=MONTHLY or FREQ=YEARLY/],
    ['RRULE:FREQ=WEEKLY;BYDAY=MON', /BYDAY: got "MON"; expected a weekday MO, TU/],
    ['RRULE:FREQ=DAILY;DTSTART=20230231', /DTSTART: "20230231" is not a valid date-time/],
    ['RRULE:FREQ=DAILY;DTSTART=2023-06-20', /DTSTART: got "2023-06-20"; expected yyyymmdd/],
    ['RRULE:FREQ=DAILY;BYEASTER=0', /BYEASTER is not a supported RRULE part/],
    ['RRULE:FREQ=DAILY;FREQ=WEEKLY', /FREQ is given twice/],
    ['RRULE:FREQ=MONTHLY;BYMONTH=2;BYMONTHDAY=30', /BYMONTH=2 has no day BYMONTHDAY=30; the rule would never occur/],
    ['RRULE:FREQ=SECONDLY;INTERVAL=2;BYSECOND=1;DTSTART=20250101T000000Z', /never lands on the allowed BYHOUR\/BYMINUTE\/BYSECOND values/],
    ['RRULE:FREQ=DAILY;COUNT=3;DTSTART=20250101T000000Z;BYMONTH=2;BYMONTHDAY=1;BYSETPOS=5', /BYSETPOS=5 can never select anything: each FREQ=DAILY period has at most 1 candidate/],
    ['RRULE:FREQ=YEARLY;BYYEARDAY=366;BYMONTH=1', /no day BYYEARDAY=366 is in BYMONTH=1/],
    ['RRULE:FREQ=YEARLY;COUNT=1;BYWEEKNO=1;BYMONTH=6;DTSTART=20250101T000000Z', /BYWEEKNO=1 has no day in BYMONTH=6; the rule would never occur/],
    ['RRULE:FREQ=DAILY;UNTIL=20240101T000000Z;DTSTART=20250101T000000Z', /UNTIL is before DTSTART, so the rule has no occurrence at all/],
    ['RRULE:DTSTART=20250101;FREQ=DAILY\nEXDATE:20250102', /"EXDATE" is not supported/],
    ['DTSTART;TZID=Europe/Paris:20250101T000000\nRRULE:FREQ=DAILY;TZID=Europe/Berlin', /disagree; expected one time zone/],
    ['RRULE:FREQ=DAILY;X', /"X" is not KEY=VALUE/],
  ]
  it.each(cases)('%j', (rule, message) => {
    const r = parseScheduleRule(rule, { defaultStartMs: T0 })
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.message).toMatch(message)
  })

  it('rejects an unknown opts.timeZone', () => {
    const r = parseScheduleRule('RRULE:FREQ=DAILY', { defaultStartMs: T0, timeZone: 'Not/AZone' })
    expect(r).toEqual({ ok: false, message: 'scheduleRule: unknown time zone "Not/AZone"; expected an IANA zone name such as "Europe/Paris" or "UTC"' })
  })
})
