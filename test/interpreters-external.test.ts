import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { collectArtifacts, MAX_ARTIFACTS_PER_STEP } from '../interpreters/artifacts.js'
import { createExternalInterpreter, discoverExternalInterpreters, parseExternalResult } from '../interpreters/external.js'
import type { StepRequest } from '../interpreters/types.js'
import { alive, waitUntil } from './helpers/process.js'

const BIN = resolve(import.meta.dirname, '../interpreters/bin/test-interpreter.js')
const NAME = 'acme/test-interpreter'

let work: string
beforeEach(() => {
  work = realpathSync(mkdtempSync(join(tmpdir(), 'chorus-ext-test-')))
})
afterEach(() => {
  rmSync(work, { recursive: true, force: true })
})

function req(command: unknown, extra: Partial<StepRequest> = {}): StepRequest {
  return {
    runId: 'run-9', stepNumber: 2, attempt: 3, interpreter: NAME, command, inputs: { who: 'world' }, os: 'linux',
    timeoutMs: 20_000, maxOutputBytes: 64 * 1024, ...extra,
  }
}
const never = new AbortController().signal


describe('external interpreter contract', () => {
  const ext = createExternalInterpreter(NAME, BIN)

  it('sends one JSON request on stdin and reads one JSON result', async () => {
    const r = await ext.run(req({ mode: 'echo' }), never)
    expect(r).toMatchObject({ status: 'success', exitCode: 0, outputs: { GREETING: 'hello world' } })
    const sent = JSON.parse(r.stdout) as Record<string, unknown>
    expect(sent).toMatchObject({ version: 1, runId: 'run-9', stepNumber: 2, attempt: 3, interpreter: NAME, command: { mode: 'echo' }, inputs: { who: 'world' }, os: 'linux', timeoutMs: 20_000 })
    expect(sent.artifactDir).toBe(join(sent.workDir as string, 'artifacts'))
    expect(existsSync(sent.workDir as string)).toBe(false) // scratch removed
    expect(r.interpreterLog).toBe('test-interpreter: mode echo step 2\n')
  })

  it('uses the agent-supplied workDir and artifactDir', async () => {
    const r = await ext.run(req({ mode: 'echo' }, { workDir: work, artifactDir: join(work, 'ev') }), never)
    expect(JSON.parse(r.stdout)).toMatchObject({ workDir: work, artifactDir: join(work, 'ev') })
    expect(existsSync(join(work, 'ev'))).toBe(true)
  })

  it('passes failures through', async () => {
    expect(await ext.run(req({ mode: 'fail' }), never)).toMatchObject({ status: 'failure', exitCode: 3, stdout: 'partial\n', stderr: 'boom\n', reason: 'the thing failed' })
  })

  it('a malformed or missing result is a failure', async () => {
    expect(await ext.run(req({ mode: 'garbage' }), never)).toMatchObject({ status: 'failure', reason: 'interpreter acme/test-interpreter exited 0 without a valid result: stdout is not one JSON document' })
    expect(await ext.run(req({ mode: 'crash' }), never)).toMatchObject({ status: 'failure', exitCode: 7, reason: 'interpreter acme/test-interpreter exited 7 without a valid result: empty stdout' })
    const missing = await createExternalInterpreter(NAME, join(work, 'nope')).run(req({}), never)
    expect(missing.reason).toMatch(/failed to start interpreter/)
  })

  it('collects artifacts within bounds', async () => {
    const r = await ext.run(req({ mode: 'artifacts' }), never)
    expect(r.status).toBe('success')
    expect(r.artifacts).toEqual([{ name: 'report', content: 'evidence\n', encoding: 'utf8', bytes: 9 }])
    expect(r.interpreterLog).toMatch(/artifact big: 1048577 bytes exceeds 1048576/)
    expect(r.interpreterLog).toMatch(/artifact escape: \/etc\/passwd is outside the artifact directory/)
  })

  it('timeout kills the interpreter process group (SIGTERM, then SIGKILL)', async () => {
    const pidFile = join(work, 'pid')
    const r = await ext.run(req({ mode: 'sleep', pidFile, ignoreTerm: true }, { timeoutMs: 500 }), never)
    expect(r).toMatchObject({ status: 'failure', reason: 'timed out after 500 ms; interpreter process group killed' })
    // It ignores SIGTERM and idles for ever: only the SIGKILL that follows can have ended it.
    const pid = Number(readFileSync(pidFile, 'utf8'))
    expect(await waitUntil(() => !alive(pid))).toBe(true)
  })

  it('abort kills it too', async () => {
    const pidFile = join(work, 'pid')
    const ac = new AbortController()
    const running = ext.run(req({ mode: 'sleep', pidFile }), ac.signal)
    expect(await waitUntil(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8') !== '')).toBe(true)
    ac.abort()
    const r = await running
    expect(r).toMatchObject({ status: 'failure', reason: 'aborted' })
    expect(await waitUntil(() => !alive(Number(readFileSync(pidFile, 'utf8'))))).toBe(true)
  })

  it('parseExternalResult validates the document', () => {
    expect(parseExternalResult('{"status":"ok"}')).toMatch(/status/)
    expect(parseExternalResult('{"status":"success","outputs":{"a":1}}')).toMatch(/outputs.a/)
    expect(parseExternalResult('{"status":"success","artifacts":[{"name":"x"}]}')).toMatch(/artifacts/)
    expect(parseExternalResult(' {"status":"success"}\n')).toMatchObject({ status: 'success', exitCode: null, stdout: '', outputs: {}, artifacts: [] })
  })
})

describe('discoverExternalInterpreters', () => {
  it('keeps valid executable entries and reports the rest', async () => {
    const notExec = join(work, 'plain')
    writeFileSync(notExec, '#!/bin/sh\n')
    chmodSync(notExec, 0o644)
    mkdirSync(join(work, 'dir'))
    const d = await discoverExternalInterpreters([
      { name: NAME, path: BIN, version: '1.2.0' },
      { name: NAME, path: BIN, version: '1.3.0' },
      { name: 'chef-platform/shell-interpreter', path: BIN, version: '1.0.0' },
      { name: 'acme/plain', path: notExec, version: '1' },
      { name: 'acme/dir', path: join(work, 'dir'), version: '1' },
      { name: 'acme/rel', path: 'bin/x', version: '1' },
      { name: 'noslash', path: BIN, version: '1' },
      { name: 'acme/v', path: BIN, version: 'latest' },
      'junk',
    ], ['chef-platform/shell-interpreter'])
    expect([...d.interpreters.keys()]).toEqual([NAME])
    expect(d.versions.get(NAME)).toEqual(['1.2.0'])
    expect(d.problems).toHaveLength(8)
    expect(d.problems.join('\n')).toMatch(/not an executable file/)
    const r = await d.interpreters.get(NAME)!.run(req({ mode: 'echo' }), never)
    expect(r.status).toBe('success')
  })
})

describe('collectArtifacts bounds', () => {
  it('keeps at most MAX_ARTIFACTS_PER_STEP and refuses bad names', async () => {
    const refs = Array.from({ length: 10 }, (_, i) => {
      writeFileSync(join(work, `f${i}`), `content ${i}`)
      return { name: `a${i}`, path: `f${i}` }
    })
    refs[1] = { name: 'x'.repeat(129), path: 'f1' }
    refs[2] = { name: 'a0', path: 'f2' }
    writeFileSync(join(work, 'bin'), Buffer.from([0xff, 0xfe, 0x00]))
    refs[3] = { name: 'binary', path: 'bin' }
    const r = await collectArtifacts(refs, work)
    expect(r.artifacts.map((a) => a.name)).toEqual(['a0', 'binary', 'a4', 'a5', 'a6', 'a7'])
    expect(r.artifacts[1]).toEqual({ name: 'binary', content: '//4A', encoding: 'base64', bytes: 3 })
    expect(r.problems).toEqual([
      `10 artifacts named; only the first ${MAX_ARTIFACTS_PER_STEP} are kept`,
      'artifact name has 129 characters; at most 128 allowed',
      'duplicate artifact name "a0"',
    ])
  })
})
