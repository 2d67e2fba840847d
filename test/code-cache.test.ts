// V8's code cache for the agent's classic script (cli/code-cache.ts): a script runs the same with
// or without a cache; a cache is used only for the exact script it was made from, intact; a
// missing, corrupt, truncated, stale or V8-rejected cache compiles from source, and save() writes
// a fresh one. Then the real thing: `chorus agent` processes of a real fleet, the first writing
// the cache, the next using it, one after a corruption falling back and still joining.
import { describe, expect, it, afterAll } from 'vitest'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { Script } from 'node:vm'
import { CHORUS_BIN, PACKAGE_ROOT } from '../cli/paths.js'
import { apiGet } from '../cli/client.js'
import { AGENT_NODE_FLAGS, waitFor, type LocalFleet } from '../cli/fleet.js'
import { cacheFileFor } from '../cli/code-cache.js'
import { withLocalFleet } from './helpers/fleet.js'

const agentScript = join(PACKAGE_ROOT, 'dist', 'bundle', 'agent.cjs')
const dir = mkdtempSync(join(tmpdir(), 'chorus-code-cache-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** A CommonJS script with enough functions for a cache worth the name; `tag` changes what it returns, not its length. */
function writeScript(name: string, tag: string): string {
  const file = join(dir, name)
  const fns = Array.from({ length: 50 }, (_, i) => `function f${i}(x) { return x * ${i} + ${i % 7} }`).join('\n')
  writeFileSync(file, `${fns}\nconst path = require('node:path')\nexports.answer = () => '${tag}:' + f49(2) + ':' + path.basename(__filename)\n`)
  return file
}

/**
 * runScript in a fresh process (dist/cli/code-cache.js), as an agent runs it: within one process
 * V8 would find a script it compiled before in its own in-memory cache and never read the file.
 * The child is a file of its own, so that its flags (process.execArgv) are `flags` alone.
 */
function run(file: string, save: false | 'run' | 'build' = false, flags: readonly string[] = []): { cache: string; answer: unknown; saved: string | null; cacheFile: string } {
  const child = join(dir, 'child.mjs')
  writeFileSync(child, `import { runScript } from ${JSON.stringify(join(PACKAGE_ROOT, 'dist', 'cli', 'code-cache.js'))}
const r = runScript(process.argv[2])
process.stdout.write(JSON.stringify({ cache: r.cache, answer: typeof r.exports.answer === 'function' ? r.exports.answer() : Object.keys(r.exports), saved: process.argv[3] ? r.save(process.argv[3]) : null, cacheFile: r.cacheFile }))`)
  const out = execFileSync(process.execPath, [...flags, child, file, save || ''], { encoding: 'utf8', env: { ...process.env, CHORUS_LOG_LEVEL: 'warn' } })
  return JSON.parse(out) as { cache: string; answer: unknown; saved: string | null; cacheFile: string }
}

describe('runScript (V8 code cache)', () => {
  it('after a build, the agent script runs from the cache the build primed for AGENT_NODE_FLAGS (or one an agent wrote since)', () => {
    const r = run(agentScript, false, AGENT_NODE_FLAGS)
    expect(r.cacheFile).toBe(cacheFileFor(agentScript, AGENT_NODE_FLAGS))
    expect(['primed', 'accepted']).toContain(r.cache)
    expect(r.answer).toEqual(expect.arrayContaining(['main', 'loadAgentModules']))
  })

  it('runs without a cache, writes one, then runs from it with the same result', () => {
    const file = writeScript('a.cjs', 'one')
    const first = run(file, 'run')
    expect(first).toMatchObject({ cache: 'missing', answer: 'one:98:a.cjs', saved: 'written' })
    expect(first.cacheFile.startsWith(`${file}.`)).toBe(true)
    expect(run(file, 'run')).toMatchObject({ cache: 'accepted', answer: 'one:98:a.cjs', saved: 'skipped' })
  })

  it('a cache the build primed is used, and replaced once by what a started agent compiled', () => {
    const file = writeScript('e.cjs', 'five')
    expect(run(file, 'build')).toMatchObject({ cache: 'missing', saved: 'written' })
    expect(run(file, 'run')).toMatchObject({ cache: 'primed', answer: 'five:98:e.cjs', saved: 'written' })
    expect(run(file, 'run')).toMatchObject({ cache: 'accepted', answer: 'five:98:e.cjs', saved: 'skipped' })
  })

  it('a corrupt or truncated cache is not used: the script compiles from source, and save() repairs it', () => {
    const file = writeScript('b.cjs', 'two')
    const { cacheFile } = run(file, 'run')
    const good = readFileSync(cacheFile)
    const flipped = Buffer.from(good)
    flipped[flipped.length - 10]! ^= 0xff
    writeFileSync(cacheFile, flipped)
    expect(run(file, 'run')).toMatchObject({ cache: 'invalid', answer: 'two:98:b.cjs', saved: 'written' })
    expect(run(file)).toMatchObject({ cache: 'accepted', answer: 'two:98:b.cjs' })
    writeFileSync(cacheFile, good.subarray(0, 30))
    expect(run(file)).toMatchObject({ cache: 'invalid', answer: 'two:98:b.cjs' })
    writeFileSync(cacheFile, 'not a cache')
    expect(run(file)).toMatchObject({ cache: 'invalid', answer: 'two:98:b.cjs' })
  })

  it('a cache made from another script of the same length is not used: the new code runs', () => {
    // V8 alone takes it: it checks a source's length, not its text, and runs the old code.
    const oldCode = new Script('(function () { return "old" })')
    oldCode.runInThisContext()
    const raw = new Script('(function () { return "new" })', { cachedData: oldCode.createCachedData() })
    expect(raw.cachedDataRejected).toBe(false)
    expect((raw.runInThisContext() as () => string)()).toBe('old')
    const file = writeScript('c.cjs', 'old')
    run(file, 'run')
    writeScript('c.cjs', 'new')
    expect(run(file)).toMatchObject({ cache: 'invalid', answer: 'new:98:c.cjs' })
  })

  it('a cache V8 refuses (a well-formed file whose payload was made for other code) is reported rejected, and the script still runs', () => {
    const file = writeScript('d.cjs', 'four')
    const { cacheFile } = run(file, 'run')
    const header = readFileSync(cacheFile).subarray(0, 24 + 32)
    const other = new Script('(function () { return 1 })').createCachedData()
    writeFileSync(cacheFile, Buffer.concat([header, createHash('sha256').update(other).digest(), other]))
    expect(run(file, 'run')).toMatchObject({ cache: 'rejected', answer: 'four:98:d.cjs', saved: 'written' })
    expect(run(file)).toMatchObject({ cache: 'accepted', answer: 'four:98:d.cjs' })
  })
})

/** Output of the `chorus agent` processes this file starts, by node id. */
const output = new Map<string, string>()
const procs: ChildProcess[] = []
let fleet: LocalFleet
withLocalFleet('chorus-code-cache-fleet-', { agents: 0, enrollment: { extraUses: 6 } }, (f) => { fleet = f })

// A node option of this run's own (not a V8 flag) names the cache file, so this file's agents
// start without one and no other test's agents share it.
const TITLE = `chorus-code-cache-test-${randomBytes(4).toString('hex')}`

async function startAgent(nodeId: string, env: Record<string, string> = {}): Promise<ChildProcess> {
  const data = join(dir, nodeId)
  await mkdir(data, { recursive: true })
  const proc = spawn(process.execPath, [`--title=${TITLE}`, CHORUS_BIN, 'agent', '--data', data, '--join', fleet.multiaddr, `--coordinator-key=${fleet.publicKey}`, '--node-id', nodeId, '--enroll-token-file', fleet.enrollTokenFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, CHORUS_LOG_LEVEL: 'warn', CHORUS_CODE_CACHE_LOG: '1', ...env },
  })
  procs.push(proc)
  output.set(nodeId, '')
  const add = (b: Buffer) => output.set(nodeId, output.get(nodeId)! + b.toString())
  proc.stdout!.on('data', add)
  proc.stderr!.on('data', add)
  return proc
}

const joined = (nodeId: string) => waitFor(`${nodeId} to join`, async () => ((await apiGet<{ items: { nodeId: string }[] }>(fleet.conn, '/v1/nodes')).items.some((n) => n.nodeId === nodeId) ? true : undefined), 60_000, 200)
const said = (nodeId: string, line: string) => waitFor(`${nodeId} to say "${line}"`, async () => (output.get(nodeId)!.includes(line) ? true : undefined), 60_000, 50)

afterAll(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM')
  await Promise.all(procs.map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : undefined)))
})

describe('chorus agent from the code cache', () => {
  let cacheFile = ''
  afterAll(() => { if (cacheFile) rmSync(cacheFile, { force: true }) })

  it('the first agent compiles from source and writes the cache; the next runs from it; a corrupt cache falls back and is rewritten', async () => {
    await startAgent('cache-1')
    await said('cache-1', `code cache missing ${agentScript}.`)
    cacheFile = /code cache missing (\S+)/.exec(output.get('cache-1')!)![1]!
    await joined('cache-1')
    await said('cache-1', `code cache written ${cacheFile}`)

    await startAgent('cache-2')
    await joined('cache-2')
    expect(output.get('cache-2')).toContain(`code cache accepted ${cacheFile}`)

    const bytes = readFileSync(cacheFile)
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff
    writeFileSync(cacheFile, bytes)
    await startAgent('cache-3')
    await joined('cache-3')
    expect(output.get('cache-3')).toContain(`code cache invalid ${cacheFile}`)
    await said('cache-3', `code cache written ${cacheFile}`)

    await startAgent('cache-4')
    await joined('cache-4')
    expect(output.get('cache-4')).toContain(`code cache accepted ${cacheFile}`)
  }, 240_000)

  it('CHORUS_CODE_CACHE=off runs the agent from the ES module bundle, without the cache', async () => {
    const proc = await startAgent('cache-off', { CHORUS_CODE_CACHE: 'off' })
    await joined('cache-off')
    expect(proc.exitCode).toBeNull()
    expect(output.get('cache-off')).not.toContain('code cache')
  }, 120_000)
})
