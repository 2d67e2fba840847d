// Bounded logging of refusals. A peer that floods refused messages must not flood the log (and
// the disk) with them: warn lines of one message text are written at most WARN_LINES_PER_WINDOW
// times per WARN_WINDOW_MS; the rest are counted and summarised once per window. Pure: the
// caller supplies the time.

export const WARN_LINES_PER_WINDOW = 20
export const WARN_WINDOW_MS = 60_000
/** Distinct message texts tracked at once (oldest window dropped first). */
export const MAX_TRACKED_MESSAGES = 256

export class WarnLimiter {
  private readonly windows = new Map<string, { since: number; lines: number; dropped: number }>()

  /** Whether a warn line with this message text may be written now. */
  allow(msg: string, now: number): boolean {
    let w = this.windows.get(msg)
    if (!w || now - w.since >= WARN_WINDOW_MS) {
      if (!w && this.windows.size >= MAX_TRACKED_MESSAGES) this.windows.delete(this.windows.keys().next().value as string)
      w = { since: now, lines: 0, dropped: w?.dropped ?? 0 }
      this.windows.set(msg, w)
    }
    if (w.lines < WARN_LINES_PER_WINDOW) { w.lines++; return true }
    w.dropped++
    return false
  }

  /** Messages with lines dropped in a window that has ended, and how many; their counts restart. */
  takeDropped(now: number): { msg: string; dropped: number }[] {
    const out: { msg: string; dropped: number }[] = []
    for (const [msg, w] of this.windows) {
      if (w.dropped > 0 && now - w.since >= WARN_WINDOW_MS) { out.push({ msg, dropped: w.dropped }); w.dropped = 0 }
    }
    return out
  }
}

/** Writes one summary line per message whose lines were dropped in an ended window. */
export function reportDropped(limiter: WarnLimiter, warn: (fields: Record<string, unknown>, msg: string) => void, now: number): void {
  for (const d of limiter.takeDropped(now)) warn({ dropped: d.dropped, windowMs: WARN_WINDOW_MS }, `${d.dropped} more lines like this were not logged: ${d.msg}`)
}
