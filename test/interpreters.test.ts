import { existsSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { KILL_GRACE_MS, OutputCapture, runProcess } from '../interpreters/process.js'
import { builtinInterpreters, findInterpreter } from '../interpreters/registry.js'
import { SHELL_INTERPRETER_NAME, ShellInterpreter } from '../interpreters/shell.js'
import type { StepRequest } from '../interpreters/types.js'
import { alive, waitForPid, waitUntil } from './helpers/process.js'

const isWindows = process.platform === 'win32'

let work: string
beforeEach(() => {
  work = realpathSync(mkdtempSync(join(tmpdir(), 'chorus-interp-')))
})
afterEach(() => {
  rmSync(work, { recursive: true, force: true })
})

function req(overrides: Partial<StepRequest> & { linux?: string[] }): StepRequest {
  const { linux, ...rest } = overrides
  return {
    runId: 'run-1',
    stepNumber: 1,
    attempt: 1,
    interpreter: SHELL_INTERPRETER_NAME,
    command: { linux: linux ?? ['true'] },
    inputs: { dir: work },
    os: 'linux',
    timeoutMs: 20_000,
    maxOutputBytes: 64 * 1024,
    ...rest,
  }
}

/** A killed process is reaped within this long, in ms. */
const DEAD_WITHIN_MS = 3_000
const waitDead = (pid: number) => waitUntil(() => !alive(pid), DEAD_WITHIN_MS)

const shell = new ShellInterpreter()
const never = new AbortController().signal

describe.skipIf(isWindows)('shell interpreter (real processes)', () => {
  it('succeeds and captures stdout and stderr', async () => {
    const r = await shell.run(req({ linux: ['echo hello', 'echo oops >&2', 'printf world'] }), never)
    expect(r.status).toBe('success')
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toBe('hello\nworld')
    expect(r.stderr).toBe('oops\n')
    expect(r.truncated).toBe(false)
    expect(r.reason).toBeUndefined()
    expect(r.durationMs).toBeGreaterThan(0)
  })

  it('runs in inputs.dir', async () => {
    const r = await shell.run(req({ linux: ['pwd'] }), never)
    expect(r.status).toBe('success')
    expect(r.stdout.trim()).toBe(work)
  })

  it('defaults to the home directory when no dir is given', async () => {
    const r = await shell.run(req({ linux: ['pwd'], inputs: {} }), never)
    expect(r.status).toBe('success')
    expect(r.stdout.trim()).toBe(realpathSync(homedir()))
  })

  it('stops at the first failing line', async () => {
    const marker = join(work, 'marker')
    const r = await shell.run(req({ linux: ['echo one', 'echo two; exit 3', `touch ${marker}`] }), never)
    expect(r.status).toBe('failure')
    expect(r.exitCode).toBe(3)
    expect(r.reason).toBe('exit code 3 from command 2 of 3')
    expect(r.stdout).toBe('one\ntwo\n')
    expect(existsSync(marker)).toBe(false)
  })

  it('bounds captured output', async () => {
    const r = await shell.run(req({ linux: ['yes | head -c 1000000'], maxOutputBytes: 1024 }), never)
    expect(r.status).toBe('success')
    expect(r.truncated).toBe(true)
    expect(r.stdout.length).toBeLessThanOrEqual(1024)
    expect(Buffer.byteLength(r.stdout)).toBeLessThanOrEqual(1024)
    expect(r.stdout.startsWith('y\ny\n')).toBe(true)
    expect(r.stdout.endsWith('y\ny\n')).toBe(true)
    expect(r.stdout).toMatch(/\[\.\.\. \d+ bytes omitted \.\.\.\]/)
  })

  it('bounds output accumulated across lines', async () => {
    const r = await shell.run(
      req({ linux: ['head -c 3000 /dev/zero | tr "\\0" a', 'head -c 3000 /dev/zero | tr "\\0" b'], maxOutputBytes: 1000 }),
      never,
    )
    expect(r.status).toBe('success')
    expect(r.truncated).toBe(true)
    expect(Buffer.byteLength(r.stdout)).toBeLessThanOrEqual(1000)
    expect(r.stdout.startsWith('aaaa')).toBe(true)
    expect(r.stdout.endsWith('bbbb')).toBe(true)
  })

  it('times out, kills the whole process group, and reports it', async () => {
    const pidfile = join(work, 'pid')
    // Not killed, the line would end with exit 0 (a success) after its sleeps.
    const r = await shell.run(
      req({ linux: [`sh -c 'sleep 30 & echo $! > "$0"; wait' ${pidfile}; sleep 30`], timeoutMs: 1_000 }),
      never,
    )
    expect(r.status).toBe('failure')
    expect(r.reason).toBe('timed out after 1000 ms; process group killed')
    expect(r.exitCode).toBeNull()
    const pid = await waitForPid(pidfile)
    expect(await waitDead(pid)).toBe(true)
  })

  it('escalates to SIGKILL when the group ignores SIGTERM', async () => {
    const pidfile = join(work, 'pid')
    const r = await shell.run(
      req({ linux: [`trap '' TERM; sh -c 'sleep 30 & echo $! > "$0"; wait' ${pidfile}`], timeoutMs: 500 }),
      never,
    )
    expect(r.status).toBe('failure')
    expect(r.reason).toBe('timed out after 500 ms; process group killed')
    // A lower bound, which a slow machine cannot break: SIGKILL waits KILL_GRACE_MS after SIGTERM.
    expect(r.durationMs).toBeGreaterThanOrEqual(500 + KILL_GRACE_MS - 50)
    const pid = await waitForPid(pidfile)
    expect(await waitDead(pid)).toBe(true)
  })

  it('names SIGKILL as what ended a leader that ignores SIGTERM', async () => {
    const r = await runProcess({ file: '/bin/sh', args: ['-c', "trap '' TERM; sleep 30"], cwd: work, timeoutMs: 500, maxOutputBytes: 1024 })
    expect(r).toMatchObject({ timedOut: true, exitCode: null, signal: 'SIGKILL' })
  })

  it('shares one timeout budget across lines', async () => {
    const marker = join(work, 'marker')
    // With a budget per line, each sleep would fit in it and the third line would run.
    const r = await shell.run(req({ linux: ['sleep 0.6', 'sleep 0.6', `touch ${marker}`], timeoutMs: 1_000 }), never)
    expect(r.status).toBe('failure')
    expect(r.reason).toMatch(/^timed out after 1000 ms/)
    expect(existsSync(marker)).toBe(false)
  })

  it('aborts via AbortController and kills grandchildren', async () => {
    const pidfile = join(work, 'pid')
    const ac = new AbortController()
    const running = shell.run(req({ linux: [`sh -c 'sleep 30 & echo $! > "$0"; wait' ${pidfile}`], timeoutMs: 0 }), ac.signal)
    const pid = await waitForPid(pidfile)
    expect(alive(pid)).toBe(true)
    ac.abort()
    const r = await running
    expect(r.status).toBe('failure')
    expect(r.reason).toBe('aborted')
    expect(await waitDead(pid)).toBe(true)
  })

  it('does not start anything when already aborted', async () => {
    const marker = join(work, 'marker')
    const ac = new AbortController()
    ac.abort()
    const r = await shell.run(req({ linux: [`touch ${marker}`] }), ac.signal)
    expect(r.status).toBe('failure')
    expect(r.reason).toBe('aborted')
    expect(r.exitCode).toBeNull()
    expect(existsSync(marker)).toBe(false)
  })

  it('kills background processes left behind by a successful line', async () => {
    const pidfile = join(work, 'pid')
    // The background sleep keeps stdout open: the step ends when it closes, i.e. once the sleep
    // is killed (not left to run its 30 s). The kernel closes a dying process's files a moment
    // before it becomes a zombie, so the pid may still show for that moment: waited for, bounded
    // far below the sleep's 30 s (this asserted "already dead" and failed 1 run in 3 on a loaded host).
    const r = await shell.run(req({ linux: [`sleep 30 & echo $! > ${pidfile}`], timeoutMs: 0 }), never)
    expect(r.status).toBe('success')
    const pid = await waitForPid(pidfile)
    expect(await waitDead(pid)).toBe(true)
  })

  it('fails clearly for a missing working directory', async () => {
    const missing = join(work, 'nope')
    const r = await shell.run(req({ linux: ['true'], inputs: { dir: missing } }), never)
    expect(r.status).toBe('failure')
    expect(r.reason).toBe(`working directory ${missing} does not exist`)
    expect(r.exitCode).toBeNull()
  })

  it('fails when dir is a file', async () => {
    const file = join(work, 'f')
    writeFileSync(file, 'x')
    const r = await shell.run(req({ linux: ['true'], inputs: { dir: file } }), never)
    expect(r.status).toBe('failure')
    expect(r.reason).toBe(`working directory ${file} is not a directory`)
  })

  it('fails when there is no command for the os', async () => {
    const r = await shell.run(req({ command: { windows: ['dir'] } }), never)
    expect(r.status).toBe('failure')
    expect(r.reason).toBe('no command for os linux')
    const d = await shell.run(req({ os: 'darwin' }), never)
    expect(d.reason).toBe('no command for os darwin')
  })

  it('rejects malformed commands without throwing', async () => {
    for (const command of [null, 'echo', ['echo'], { linux: 'echo' }, { linux: ['echo', 3] }]) {
      const r = await shell.run(req({ command }), never)
      expect(r.status).toBe('failure')
      expect(r.reason).toMatch(/^invalid command/)
    }
  })

  it('reports death by signal', async () => {
    const r = await shell.run(req({ linux: ['kill -9 $$'] }), never)
    expect(r.status).toBe('failure')
    expect(r.exitCode).toBeNull()
    expect(r.reason).toBe('killed by signal SIGKILL in command 1 of 1')
  })
})

describe.skipIf(isWindows)('runProcess', () => {
  it('reports spawn errors instead of throwing', async () => {
    const r = await runProcess({ file: join(work, 'no-such-binary'), args: [], timeoutMs: 1_000, maxOutputBytes: 100 })
    expect(r.spawnError).toMatch(/ENOENT/)
    expect(r.exitCode).toBeNull()
  })

  it('feeds stdin and returns the exit code', async () => {
    const r = await runProcess({
      file: '/bin/sh',
      args: ['-c', 'cat; exit 7'],
      stdin: 'piped',
      timeoutMs: 5_000,
      maxOutputBytes: 100,
    })
    expect(r).toMatchObject({ exitCode: 7, signal: null, stdout: 'piped', timedOut: false, aborted: false })
  })
})

describe('OutputCapture', () => {
  it('keeps everything under the cap', () => {
    const c = new OutputCapture(10)
    c.write('abc')
    c.write(Buffer.from('defghij'))
    expect(c.truncated).toBe(false)
    expect(c.text()).toBe('abcdefghij')
  })

  it('keeps head and tail without a marker for tiny caps', () => {
    const c = new OutputCapture(10)
    for (const ch of 'abcdefghijklmnopqrstuvwxyz') c.write(ch)
    expect(c.truncated).toBe(true)
    expect(c.droppedBytes).toBe(16)
    expect(c.text()).toBe('abcdevwxyz')
  })

  it('keeps head, marker and tail within the cap', () => {
    const c = new OutputCapture(200)
    c.write('H'.repeat(150))
    c.write('x'.repeat(10_000))
    c.write('T'.repeat(150))
    const text = c.text()
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(200)
    expect(text.startsWith('H'.repeat(100))).toBe(true)
    expect(text.endsWith('T'.repeat(50))).toBe(true)
    const m = /\[\.\.\. (\d+) bytes omitted \.\.\.\]/.exec(text)
    expect(m).not.toBeNull()
    const kept = Buffer.byteLength(text) - Buffer.byteLength(`\n${m![0]}\n`)
    expect(Number(m![1]) + kept).toBe(10_300)
  })

  it('never splits UTF-8 characters', () => {
    const c = new OutputCapture(11)
    c.write('€'.repeat(20)) // 3 bytes each
    const text = c.text()
    expect(text).not.toContain('\uFFFD')
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(11)
    expect(text).toBe('€'.repeat(3))
  })

  it('handles a zero cap', () => {
    const c = new OutputCapture(0)
    c.write('abc')
    expect(c.text()).toBe('')
    expect(c.truncated).toBe(true)
  })
})

describe('registry', () => {
  it('contains the shell interpreter', () => {
    const reg = builtinInterpreters()
    const found = findInterpreter(SHELL_INTERPRETER_NAME, reg)
    expect(found?.name).toBe('chef-platform/shell-interpreter')
    expect(findInterpreter('chef-platform/nope', reg)).toBeUndefined()
  })
})

describe('scratch directories', () => {
  it('the shell interpreter needs none: without workDir or artifactDir its line runs in the home directory', async () => {
    const shell = new ShellInterpreter()
    expect(shell.usesWorkDir).toBe(false)
    const { inputs: _ignored, ...noDir } = req({ linux: ['pwd'] })
    const r = await shell.run({ ...noDir, inputs: {} }, new AbortController().signal)
    expect(r.status).toBe('success')
    expect(realpathSync(r.stdout.trim())).toBe(realpathSync(homedir()))
  })

  it('every other builtin interpreter gets both (exec runs in workDir when no dir is given)', () => {
    for (const [name, interpreter] of builtinInterpreters()) {
      if (name === SHELL_INTERPRETER_NAME) continue
      expect(interpreter.usesWorkDir, name).not.toBe(false)
    }
  })
})
