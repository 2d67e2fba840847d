// The shell interpreter gives a line to the shell on stdin, never in argv (a substituted line may
// hold a secret, and every local user can read /proc/PID/cmdline), and the line still runs as
// `sh -c LINE` would: stdin /dev/null, exit status, $0, syntax errors, limits, CHORUS_* env.
import { describe, expect, it } from 'vitest'
import { readdirSync, readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { createShellInterpreter } from '../interpreters/shell.js'
import type { StepRequest } from '../interpreters/types.js'

const shell = createShellInterpreter()

function request(lines: string[], extra: Partial<StepRequest> = {}): StepRequest {
  return { runId: 'r', stepNumber: 1, attempt: 1, interpreter: shell.name, command: { linux: lines }, inputs: {}, os: 'linux', timeoutMs: 10_000, maxOutputBytes: 16_384, ...extra }
}

/** Every process's command line readable now (as any local user reads them). */
function allCmdlines(): string[] {
  const out: string[] = []
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try { out.push(readFileSync(`/proc/${pid}/cmdline`, 'utf8')) } catch { /* gone */ }
  }
  return out
}

describe('shell interpreter: the line on stdin', () => {
  it.each([['without limits', undefined], ['under taskset, a cgroup or nice', { cores: 1, cpu: 0.5 }]])('a running line is in no process\'s command line (the shell stays alive while sleep runs: two commands), %s', async (_, limits) => {
    const secret = randomBytes(12).toString('hex')
    const running = shell.run(request([`sleep 1.5; : ${secret}`], limits ? { limits } : {}), new AbortController().signal)
    const seen: string[] = []
    const until = Date.now() + 1_000
    while (Date.now() < until) {
      seen.push(...allCmdlines().filter((c) => c.includes('sleep') || c.includes(secret)))
      await new Promise((r) => setTimeout(r, 50))
    }
    const r = await running
    expect(r.status).toBe('success')
    expect(seen.some((c) => c.startsWith('sleep\0' + '1.5'))).toBe(true) // we did look while it ran
    expect(seen.filter((c) => c.includes(secret))).toEqual([])
  })

  it('runs as sh -c LINE would: stdin is /dev/null, $0, exit codes, syntax errors, several lines, env', async () => {
    const r = await shell.run(request(['cat; readlink /proc/self/fd/0; echo "$0"', 'printf "%s\\n" "$CHORUS_RUN_ID" "$__chorus_line"', 'echo one\necho two'], { env: { CHORUS_RUN_ID: 'run-9' } }), new AbortController().signal)
    expect(r.status).toBe('success')
    expect(r.stdout).toBe('/dev/null\n/bin/sh\nrun-9\n\none\ntwo\n')
    const exit = await shell.run(request(['exit 7']), new AbortController().signal)
    expect([exit.exitCode, exit.reason]).toEqual([7, 'exit code 7 from command 1 of 1'])
    const syntax = await shell.run(request(['if then']), new AbortController().signal)
    expect(syntax.exitCode).toBe(2)
    expect(syntax.stderr).toMatch(/[Ss]yntax error/)
  })

  it('keeps the timeout (whole process group killed) and the limits wrapper', async () => {
    const t = await shell.run(request(['sleep 30 & sleep 30'], { timeoutMs: 300 }), new AbortController().signal)
    expect(t.reason).toMatch(/timed out after 300 ms; process group killed/)
    for (const limits of [{ cores: 1, cpu: 0 }, { cores: 0, cpu: 0.5 }]) {
      const limited = await shell.run(request(['cat; echo limited'], { limits }), new AbortController().signal)
      expect(limited.status, JSON.stringify(limited)).toBe('success')
      expect(limited.stdout).toBe('limited\n')
    }
  })
})
