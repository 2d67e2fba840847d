// The agent's built-ins load with V8's flags at their defaults (cli/builtins-first.ts), and the
// agent then runs with AGENT_NODE_FLAGS in effect. V8's flag hash is what a code cache is checked
// against, so a vm.Script cache made by a plain process tells which flags are in effect: one made
// without flags is accepted while the built-ins load (Node's own cache for them applies), one
// made under AGENT_NODE_FLAGS afterwards (every flag back at the command line's value). The heap
// keeps the sizes the command line set up. Then the real thing: an agent started as local fleets
// start it runs from a cache a plain process made under AGENT_NODE_FLAGS.
import { describe, expect, it, afterAll } from 'vitest'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { PACKAGE_ROOT } from '../cli/paths.js'
import { apiGet } from '../cli/client.js'
import { AGENT_BIN, AGENT_NODE_FLAGS, waitFor, type LocalFleet } from '../cli/fleet.js'
import { cacheFileFor } from '../cli/code-cache.js'
import { liftableFlags } from '../cli/builtins-first.js'
import { withLocalFleet } from './helpers/fleet.js'

const dir = mkdtempSync(join(tmpdir(), 'chorus-builtins-first-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const SOURCE = 'function f(a) { return a + 1 }; f(1)'
const makeCache = join(dir, 'make-cache.cjs')
// One source per moment asked about: within a process V8 would find a source it compiled before in its own cache and read no cachedData.
writeFileSync(makeCache, `const vm = require('node:vm'); for (const when of ['during', 'after']) { const s = new vm.Script(${JSON.stringify(SOURCE)} + '//' + when + ' ' + process.argv[3]); s.runInThisContext(); require('node:fs').writeFileSync(process.argv[2] + '.' + when, s.createCachedData()) }`)
const plainCache = join(dir, 'plain.cache')
const flaggedCache = join(dir, 'flagged.cache')
execFileSync(process.execPath, [makeCache, plainCache, 'plain'])
execFileSync(process.execPath, [...AGENT_NODE_FLAGS, makeCache, flaggedCache, 'flagged'])

/** V8's state in a process started with `flags`: which cache its flag hash accepts (during: while built-ins load) and its heap's sizes. */
const probe = join(dir, 'probe.cjs')
writeFileSync(probe, `'use strict'
const accepts = (when) => { const vm = require('node:vm'), fs = require('node:fs'); const out = {}
  for (const [k, f] of [['plain', ${JSON.stringify(plainCache)}], ['flagged', ${JSON.stringify(flaggedCache)}]]) out[k] = !new vm.Script(${JSON.stringify(SOURCE)} + '//' + when + ' ' + k, { cachedData: fs.readFileSync(f + '.' + when) }).cachedDataRejected
  return out }
let during
const lifted = process.argv[2] === 'lift' ? require(${JSON.stringify(join(PACKAGE_ROOT, 'dist', 'bundle', 'builtins-first.cjs'))}).requireBuiltinsUnderDefaultFlags(require, undefined, undefined, () => { during = accepts('during') }) : false
const after = accepts('after')
let keep = []
for (let i = 0; i < 300000; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 50000) keep = [] }
const v8 = require('node:v8')
const newSpace = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size
process.stdout.write(JSON.stringify({ lifted, during, after, newSpace, heapLimit: v8.getHeapStatistics().heap_size_limit }))`)
const runProbe = (flags: readonly string[], lift: boolean) => JSON.parse(execFileSync(process.execPath, [...flags, probe, lift ? 'lift' : ''], { encoding: 'utf8' })) as { lifted: boolean; during?: { plain: boolean; flagged: boolean }; after: { plain: boolean; flagged: boolean }; newSpace: number; heapLimit: number }

describe('built-ins loaded under V8\'s default flags', () => {
  it('AGENT_NODE_FLAGS are all known: every one is set back to its default while the built-ins load', () => {
    const flags = liftableFlags(AGENT_NODE_FLAGS)
    expect(flags?.restore.split(' ').sort()).toEqual(AGENT_NODE_FLAGS.filter((f) => f !== '--v8-pool-size=1').sort())
    expect(liftableFlags(['--v8-pool-size=1', '--cpu-prof'])).toBeUndefined()
  })

  it('while the built-ins load, V8\'s flag hash is the default one; after, AGENT_NODE_FLAGS are in effect, heap sizes included', () => {
    const lifted = runProbe(AGENT_NODE_FLAGS, true)
    const plain = runProbe(AGENT_NODE_FLAGS, false)
    const none = runProbe([], false)
    expect(lifted.lifted).toBe(true)
    expect(lifted.during).toEqual({ plain: true, flagged: false })
    expect(lifted.after).toEqual({ plain: false, flagged: true })
    expect(plain.after).toEqual({ plain: false, flagged: true })
    expect(none.after).toEqual({ plain: true, flagged: false })
    // --max-semi-space-size=1 and --max-old-space-size=96 hold: setting them back and forth at run time does not change the heap V8 set up.
    expect(lifted.newSpace).toBe(plain.newSpace)
    expect(lifted.newSpace).toBeLessThan(none.newSpace)
    expect(lifted.heapLimit).toBe(plain.heapLimit)
  })
})

let fleet: LocalFleet
withLocalFleet('chorus-builtins-first-fleet-', { agents: 0, enrollment: { extraUses: 2 } }, (f) => { fleet = f })
const procs: ChildProcess[] = []
afterAll(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM')
  await Promise.all(procs.map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : undefined)))
})

describe('an agent as local fleets start it', () => {
  // A node option of this file's own (not a V8 flag) names a cache file no other test shares.
  const flags = [...AGENT_NODE_FLAGS, `--title=chorus-builtins-first-${randomBytes(4).toString('hex')}`]
  const agentScript = join(PACKAGE_ROOT, 'dist', 'bundle', 'agent.cjs')
  const cacheFile = cacheFileFor(agentScript, flags)
  afterAll(() => rmSync(cacheFile, { force: true }))

  it('runs from the code cache a plain process made under the same flags: its V8 flags are the command line\'s', async () => {
    const primer = join(dir, 'prime.mjs')
    writeFileSync(primer, `import { primeAgentScript } from ${JSON.stringify(join(PACKAGE_ROOT, 'dist', 'cli', 'code-cache.js'))}\nprocess.stdout.write(await primeAgentScript(${JSON.stringify(agentScript)}))`)
    expect(execFileSync(process.execPath, [...flags, primer], { encoding: 'utf8', env: { ...process.env, CHORUS_LOG_LEVEL: 'warn' } })).toBe('written')
    const data = join(dir, 'agent')
    await mkdir(data, { recursive: true })
    let output = ''
    const proc = spawn(process.execPath, [...flags, AGENT_BIN, 'agent', '--data', data, '--join', fleet.multiaddr, `--coordinator-key=${fleet.publicKey}`, '--node-id', 'lifted-1', '--enroll-token-file', fleet.enrollTokenFile], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CHORUS_LOG_LEVEL: 'warn', CHORUS_CODE_CACHE_LOG: '1' },
    })
    procs.push(proc)
    proc.stdout!.on('data', (b: Buffer) => { output += b.toString() })
    proc.stderr!.on('data', (b: Buffer) => { output += b.toString() })
    await waitFor('lifted-1 to join', async () => ((await apiGet<{ items: { nodeId: string }[] }>(fleet.conn, '/v1/nodes')).items.some((n) => n.nodeId === 'lifted-1') ? true : undefined), 60_000, 200)
    expect(output).toContain(`code cache primed ${cacheFile}`)
  }, 120_000)
})
