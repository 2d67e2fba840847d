// Time zones of the occurrence engine: UTC offsets from Intl.DateTimeFormat with an explicit
// `timeZone` (never the process zone), and the conversions between an instant and a wall-clock
// time in the "floating" frame (a Date whose UTC fields are the zone's wall-clock fields).
// The only module state is a memo of Intl formatters, which does not change results.
import { DAY_MS, MAX_TIME_ZONE_NAME_CHARS, SECOND_MS } from './schedule-bounds.js'

const formatters = new Map<string, Intl.DateTimeFormat>()

function formatterFor(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone)
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      era: 'short',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    })
    formatters.set(zone, f)
  }
  return f
}

/** What a zone name may look like before Intl is asked about it (letters, digits, "_+-/": no dots, no spaces). */
const ZONE_NAME = new RegExp(`^[A-Za-z0-9_+\\-/]{1,${MAX_TIME_ZONE_NAME_CHARS}}$`)

/** The canonical name of an IANA zone, or undefined when the zone is unknown. */
export function canonicalTimeZone(zone: string): string | undefined {
  if (!ZONE_NAME.test(zone)) return undefined
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: zone }).resolvedOptions().timeZone
  } catch {
    return undefined
  }
}

function isUtc(zone: string): boolean {
  return zone === 'UTC' || zone === 'Etc/UTC' || zone === 'Etc/GMT' || zone === 'GMT'
}

/** UTC offset of `zone` at instant `ms`, in ms (wall = instant + offset). */
export function zoneOffsetMs(zone: string, ms: number): number {
  if (isUtc(zone)) return 0
  const whole = Math.floor(ms / SECOND_MS) * SECOND_MS
  let year = 0, month = 1, day = 1, hour = 0, minute = 0, second = 0, bc = false
  for (const p of formatterFor(zone).formatToParts(whole)) {
    switch (p.type) {
      case 'year': year = Number(p.value); break
      case 'month': month = Number(p.value); break
      case 'day': day = Number(p.value); break
      case 'hour': hour = Number(p.value); break
      case 'minute': minute = Number(p.value); break
      case 'second': second = Number(p.value); break
      case 'era': bc = p.value.startsWith('B'); break
    }
  }
  if (bc) year = 1 - year
  const d = new Date(0)
  d.setUTCFullYear(year, month - 1, day)
  d.setUTCHours(hour, minute, second, 0)
  return d.getTime() - whole
}

/** The wall-clock time at instant `ms` in `zone`, in the floating frame. */
export function instantToWall(zone: string, ms: number): number {
  return ms + zoneOffsetMs(zone, ms)
}

/** The offsets in force within a day either side of `ms` (assumes at most one transition
 *  in any 48 hours, which holds for every zone in tzdata since 1970). */
export function offsetsNear(zone: string, ms: number): [before: number, at: number, after: number] {
  return [zoneOffsetMs(zone, ms - DAY_MS), zoneOffsetMs(zone, ms), zoneOffsetMs(zone, ms + DAY_MS)]
}

/**
 * The instant of wall-clock time `wallMs` (floating frame) in `zone`. A nonexistent wall time
 * (spring-forward gap) is read with the offset before the gap, i.e. shifted forward by the
 * gap; an ambiguous one (fall-back overlap) resolves to the earlier instant. RFC 5545 §3.3.5.
 */
export function wallToInstant(zone: string, wallMs: number): number {
  if (isUtc(zone)) return wallMs
  const [before, , after] = offsetsNear(zone, wallMs)
  let best: number | undefined
  for (const off of before === after ? [before] : [before, after]) {
    const t = wallMs - off
    if (zoneOffsetMs(zone, t) === off && (best === undefined || t < best)) best = t
  }
  if (best !== undefined) return best
  // No offset reproduces the wall time: it lies in a gap. Use the offset before the gap.
  return wallMs - before
}
