// Refusal warnings are bounded per message text: a flood of refused messages writes a bounded number of lines and one summary.
import { describe, expect, it } from 'vitest'
import { WARN_LINES_PER_WINDOW, WARN_WINDOW_MS, WarnLimiter, reportDropped } from '../protocol/loglimit.js'

describe('warn limiter', () => {
  it('writes WARN_LINES_PER_WINDOW lines of one text per window, then one summary with the count dropped', () => {
    const l = new WarnLimiter()
    const T = 1_000_000
    const written = Array.from({ length: 500 }, (_, i) => l.allow('refused a result', T + i)).filter(Boolean).length
    expect(written).toBe(WARN_LINES_PER_WINDOW)
    expect(l.allow('another refusal', T + 1)).toBe(true) // texts are counted apart
    const lines: string[] = []
    reportDropped(l, (_f, msg) => lines.push(msg), T + 10) // the window has not ended: nothing yet
    expect(lines).toEqual([])
    reportDropped(l, (_f, msg) => lines.push(msg), T + WARN_WINDOW_MS)
    expect(lines).toEqual([`${500 - WARN_LINES_PER_WINDOW} more lines like this were not logged: refused a result`])
    expect(l.allow('refused a result', T + WARN_WINDOW_MS)).toBe(true) // a new window
  })
})
