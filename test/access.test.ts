// Access to the API, against a real coordinator process on loopback: every route of the route
// table refuses a missing, weak, expired or revoked token; browser-style requests are refused
// and change nothing; every state change is in the audit log with its token; bad input is a
// 400 with problems and the coordinator stays up; TLS beyond loopback; the CLI's tokens,
// audit and token precedence (--token, $CHORUS_TOKEN, the profile).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CHORUS_BIN } from '../cli/paths.js'
import { waitFor } from '../cli/fleet.js'
import { ROUTES, isStateChanging } from '../coordinator/access.js'
import { coordinatorStep, emptyCoordinatorState, restoreCoordinator, DEFAULT_COORDINATOR_TIMING, type AuditRecord, type CoordinatorEffect, type CoordinatorEvent } from '../coordinator/core.js'
import { CoreLoop, type BatchOp } from '../runtime/loop.js'
import { generateIdentity } from '../protocol/keys.js'

interface Coordinator { proc: ChildProcess; api: string; admin: string; data: string }

async function startCoordinator(data: string, extra: string[] = []): Promise<Coordinator> {
  const proc = spawn(process.execPath, [CHORUS_BIN, 'coordinator', '--data', data, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0', ...extra], { stdio: 'ignore' })
  const { api } = await waitFor('the coordinator', async () => {
    if (proc.exitCode !== null) throw new Error(`coordinator exited ${proc.exitCode}`)
    return JSON.parse(await readFile(join(data, 'endpoints.json'), 'utf8')) as { api: string }
  }, 30_000)
  return { proc, api, admin: (await readFile(join(data, 'admin.token'), 'utf8')).trim(), data }
}

function chorus(args: string[], env: Record<string, string | undefined> = {}) {
  return spawnSync(process.execPath, [CHORUS_BIN, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, CHORUS_TOKEN: undefined, CHORUS_API: undefined, CHORUS_PROFILE: '/nonexistent/profile.json', ...env } })
}

/** A raw HTTP request (node:http, so Host and Origin are exactly what the test says). */
function call(api: string, method: string, path: string, opts: { token?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const [host, port] = [api.slice(0, api.lastIndexOf(':')), Number(api.slice(api.lastIndexOf(':') + 1))]
  const sized: Record<string, string> = opts.body !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(opts.body)) } : {}
  const headers: Record<string, string> = { ...sized, ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...opts.headers }
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host, port, method, path, headers }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: (() => { try { return JSON.parse(text) as Record<string, unknown> } catch { return { text } } })() }))
    })
    req.on('error', reject)
    if (opts.body !== undefined) req.write(opts.body)
    req.end()
  })
}

const HELLO = JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8')) as { target: { groups: Record<string, unknown>[] } }
/** The demo job aimed at one node that is not registered: accepted, and nothing runs. */
const JOB = JSON.stringify({ ...HELLO, target: { ...HELLO.target, groups: [{ ...HELLO.target.groups[0], nodeListType: 'nodes', nodeIdentifiers: ['node-x'], filter: null }] } })
const SAVED_FILTER_JOB = (filterId: string) => JSON.stringify({ ...HELLO, target: { ...HELLO.target, groups: [{ ...HELLO.target.groups[0], nodeListType: 'savedFilter', filterId, filter: null }] } })

let dir: string
let c: Coordinator
const tokens: Record<'reader' | 'operator', string> = { reader: '', operator: '' }

async function mint(name: string, role: string, ttl?: string): Promise<string> {
  const res = await call(c.api, 'POST', '/v1/tokens', { token: c.admin, body: JSON.stringify({ name, role, ...(ttl ? { ttl } : {}) }) })
  expect(res.status, JSON.stringify(res.body)).toBe(201)
  expect(res.body.token).toMatch(/^chorus_[A-Za-z0-9_-]{43}$/)
  return res.body.token as string
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'chorus-access-'))
  c = await startCoordinator(join(dir, 'coord'), ['--api-host', 'chorus.test', '--api-host', 'other.test:443'])
  tokens.reader = await mint('ci-reader', 'reader')
  tokens.operator = await mint('ci-operator', 'operator')
}, 60_000)

afterAll(async () => {
  c?.proc.kill('SIGTERM')
  await rm(dir, { recursive: true, force: true })
})

describe('tokens and roles', () => {
  it('the first start writes an admin token, mode 0600', async () => {
    const { stat } = await import('node:fs/promises')
    expect((await stat(join(c.data, 'admin.token'))).mode & 0o777).toBe(0o600)
    expect(c.admin).toMatch(/^chorus_/)
  })

  it('every route of the table: no token 401, too weak a role 403 (naming the role), enough gets through', async () => {
    expect((await call(c.api, 'GET', '/healthz')).status).toBe(200)
    const through = (s: number) => s !== 401 && s !== 403
    for (const r of ROUTES) {
      const path = r.url.replace(/:\w+/g, 'nope')
      const body = isStateChanging(r.method) ? '{}' : undefined
      const as = (token?: string) => call(c.api, r.method, path, { ...(token ? { token } : {}), ...(body !== undefined ? { body } : {}) })
      const none = await as()
      expect(none.status, `${r.method} ${r.url} without a token`).toBe(401)
      expect(none.body.requiredRole).toBe(r.role)
      const reader = await as(tokens.reader)
      if (r.role === 'reader') expect(through(reader.status), `${r.method} ${r.url} as reader: ${reader.status}`).toBe(true)
      else expect([reader.status, reader.body.requiredRole], `${r.method} ${r.url} as reader: ${JSON.stringify(reader.body)}`).toEqual([403, r.role])
      const operator = await as(tokens.operator)
      if (r.role === 'admin') expect([operator.status, operator.body.requiredRole], `${r.method} ${r.url} as operator`).toEqual([403, 'admin'])
      else expect(through(operator.status), `${r.method} ${r.url} as operator: ${operator.status}`).toBe(true)
      expect(through((await as(c.admin)).status), `${r.method} ${r.url} as admin`).toBe(true)
    }
    // A URL no route matches: a token first, then 404.
    expect((await call(c.api, 'GET', '/v1/no-such-route')).status).toBe(401)
    expect((await call(c.api, 'GET', '/v1/no-such-route', { token: tokens.reader })).status).toBe(404)
  })

  it('an expired token and a revoked token are refused with 401; tokens are listed without hash or token', async () => {
    const short = await mint('short', 'reader', '1s')
    const revoked = await mint('gone', 'reader')
    expect((await call(c.api, 'GET', '/v1/jobs', { token: short })).status).toBe(200)
    expect((await call(c.api, 'GET', '/v1/jobs', { token: revoked })).status).toBe(200)
    expect((await call(c.api, 'DELETE', '/v1/tokens/gone', { token: c.admin, body: '{}' })).status).toBe(200)
    expect((await call(c.api, 'GET', '/v1/jobs', { token: revoked })).status).toBe(401)
    // The 1 s token was accepted above; wait for its refusal (the positive event), not for a guessed time.
    const refused = await waitFor('the 1 s token to be refused', async () => ((await call(c.api, 'GET', '/v1/jobs', { token: short })).status === 401 ? true : undefined), 15_000, 100)
    expect(refused).toBe(true)
    const list = await call(c.api, 'GET', '/v1/tokens', { token: c.admin })
    const text = JSON.stringify(list.body)
    expect(text).not.toMatch(/chorus_|hash/)
    expect((list.body.items as { name: string }[]).map((t) => t.name)).toEqual(expect.arrayContaining(['admin', 'ci-reader', 'ci-operator', 'short']))
    expect((await call(c.api, 'POST', '/v1/tokens', { token: c.admin, body: JSON.stringify({ name: 'ci-reader', role: 'reader' }) })).status).toBe(409)
  })
})

describe('not a browser target', () => {
  it('refuses text/plain, a foreign Origin and a foreign Host, and no job exists until a proper request', async () => {
    const op = { token: tokens.operator }
    const plain = await call(c.api, 'POST', '/v1/jobs', { ...op, body: JOB, headers: { 'content-type': 'text/plain' } })
    const origin = await call(c.api, 'POST', '/v1/jobs', { ...op, body: JOB, headers: { origin: 'http://evil.example' } })
    const host = await call(c.api, 'POST', '/v1/jobs', { ...op, body: JOB, headers: { host: 'evil.example' } })
    expect([plain.status, origin.status, host.status]).toEqual([415, 403, 421])
    for (const r of [plain, origin, host]) expect(r.body.error).toEqual(expect.any(String))
    expect((await call(c.api, 'GET', '/v1/jobs', op)).body.items).toEqual([])
    const same = await call(c.api, 'POST', '/v1/jobs', { ...op, body: JOB, headers: { origin: `http://${c.api}` } })
    expect(same.status, JSON.stringify(same.body)).toBe(201)
    const port = c.api.split(':').pop()
    expect((await call(c.api, 'GET', '/v1/jobs', { ...op, headers: { host: `localhost:${port}` } })).body.items).toHaveLength(1)
    // Names listed with --api-host: with the bound port when none is given, else exactly.
    expect((await call(c.api, 'GET', '/v1/jobs', { ...op, headers: { host: `chorus.test:${port}` } })).status).toBe(200)
    expect((await call(c.api, 'GET', '/v1/jobs', { ...op, headers: { host: 'other.test:443' } })).status).toBe(200)
    expect((await call(c.api, 'GET', '/v1/jobs', { ...op, headers: { host: 'chorus.test:1' } })).status).toBe(421)
    expect((await call(c.api, 'GET', '/healthz', { headers: { host: 'evil.example' } })).status).toBe(421)
  })
})

describe('input is checked by its schema', () => {
  it('a filter attribute missing its fields is a 400 naming the path, and the coordinator stays up; an attribute named constructor is harmless', async () => {
    const bad = await call(c.api, 'PUT', '/v1/filters/x', { token: tokens.operator, body: '{"constraints":{"attributes":[{}]}}' })
    expect(bad.status).toBe(400)
    expect((bad.body.problems as { path: string }[]).map((p) => p.path)).toEqual(expect.arrayContaining(['body.constraints.attributes[0].name', 'body.constraints.attributes[0].operator']))
    expect((await call(c.api, 'GET', '/healthz')).status).toBe(200)
    for (const name of ['constructor', '__proto__', 'toString']) {
      const ctor = await call(c.api, 'PUT', '/v1/filters/ctor', { token: tokens.operator, body: JSON.stringify({ constraints: { attributes: [{ name, operator: 'STARTS_WITH', value: ['x'] }], skills: [{ name, version: ['>= 1'] }] } }) })
      expect(ctor.status, JSON.stringify(ctor.body)).toBe(200)
      const plan = await call(c.api, 'POST', '/v1/plan', { token: tokens.operator, body: SAVED_FILTER_JOB('ctor') })
      expect(plan.status, JSON.stringify(plan.body)).toBe(422) // matches no node: refused, not a crash
      expect((await call(c.api, 'GET', `/v1/nodes?search=${encodeURIComponent(`${name}:*`)}`, { token: tokens.reader })).status).toBe(200)
    }
    expect(c.proc.exitCode).toBe(null)
    const query = await call(c.api, 'PUT', '/v1/filters/q', { token: tokens.operator, body: '{"query": "role:web AND (env:prod"}' })
    expect(query.status).toBe(400)
    expect(query.body.problems).toEqual([{ path: 'body.query', message: expect.stringMatching(/not closed/) }])
    const regex = await call(c.api, 'PUT', '/v1/filters/r', { token: tokens.operator, body: '{"constraints": {"attributes": [{"name": "a", "operator": "MATCHES", "value": ["("]}]}}' })
    expect(regex.status).toBe(400)
    expect((regex.body.problems as { path: string }[])[0]!.path).toBe('body.constraints.attributes[0].value[0]')
    const cancel = await call(c.api, 'POST', '/v1/jobs/x/cancel', { token: tokens.operator, body: '{"occurrences": "soon"}' })
    expect(cancel.status).toBe(400)
    expect(cancel.body.problems).toEqual([{ path: 'body.occurrences', message: expect.any(String) }])
    expect((await call(c.api, 'GET', '/v1/jobs/x/next?count=0', { token: tokens.reader })).body.problems).toEqual([{ path: 'query.count', message: expect.stringMatching(/at least 1/) }])
  })

  it('the core refuses a request whose unchecked input throws, changes nothing and audits it', () => {
    const state = emptyCoordinatorState()
    const config = { identity: generateIdentity(), ...DEFAULT_COORDINATOR_TIMING }
    const effects = coordinatorStep(state, config, { type: 'save_filter', requestId: 'r1', filter: { id: 'x', name: 'x', constraints: { attributes: [{} as never] } }, actor: { name: 'ci', role: 'operator' } }, 1_000)
    expect(state.filters.size).toBe(0)
    expect(effects.find((e) => e.type === 'reply_admin')).toMatchObject({ outcome: { ok: false, status: 400 } })
    const audit = effects.find((e) => e.type === 'persist')
    expect(audit).toMatchObject({ puts: [{ key: 'audit/0000000000001000/r1', value: { token: 'ci', role: 'operator', action: 'filter.set', object: 'x', outcome: expect.stringMatching(/^400 refused/) } }] })
  })

  it('a change and its audit record are committed in one batch', async () => {
    const state = emptyCoordinatorState()
    const config = { identity: generateIdentity(), ...DEFAULT_COORDINATOR_TIMING }
    const commits: BatchOp[][] = []
    const loop = new CoreLoop<CoordinatorEvent, CoordinatorEffect>({ step: (e, now) => coordinatorStep(state, config, e, now), commit: async (ops) => { commits.push(ops) }, execute: () => {}, now: () => 5_000, onError: (err) => { throw err } })
    await loop.dispatch({ type: 'save_list', requestId: 'r2', list: { id: 'l', name: 'l', nodes: ['a'] }, actor: { name: 'ci', role: 'operator' } })
    expect(commits.map((ops) => ops.map((o) => o.key))).toEqual([['list/l', 'audit/0000000000005000/r2']])
    // Restoring ignores audit records (the runtime does not even read them).
    expect(restoreCoordinator(commits[0]!.map((o) => [o.key, (o as { value: unknown }).value])).lists.size).toBe(1)
  })
})

describe('audit log', () => {
  it('holds every state change of this file with its token name, role and outcome, from --since', async () => {
    const cancel = await call(c.api, 'POST', '/v1/jobs/no-such-job/cancel', { token: tokens.operator, body: '{}' })
    expect(cancel.status).toBe(404)
    const page = await call(c.api, 'GET', '/v1/audit?limit=1000', { token: c.admin })
    const items = page.body.items as AuditRecord[]
    const find = (action: string, object: string) => items.find((a) => a.action === action && a.object === object)
    expect(find('token.create', 'admin')).toMatchObject({ token: 'coordinator', role: 'admin', outcome: 'ok' })
    expect(find('token.create', 'ci-operator')).toMatchObject({ token: 'admin', role: 'admin', outcome: 'ok' })
    expect(find('token.revoke', 'gone')).toMatchObject({ token: 'admin', outcome: 'ok' })
    expect(find('job.cancel', 'no-such-job')).toMatchObject({ token: 'ci-operator', role: 'operator', outcome: '404 no job no-such-job' })
    expect(items.find((a) => a.action === 'job.submit')).toMatchObject({ token: 'ci-operator', role: 'operator', outcome: 'ok' })
    expect(find('filter.set', 'ctor')).toMatchObject({ token: 'ci-operator', outcome: 'ok' })
    // The refused browser-style requests never reached the core.
    expect(items.filter((a) => a.action === 'job.submit')).toHaveLength(1)
    const last = items.at(-1)!
    const since = await call(c.api, 'GET', `/v1/audit?since=${encodeURIComponent(last.at)}`, { token: c.admin })
    expect((since.body.items as AuditRecord[]).map((a) => a.requestId)).toContain(last.requestId)
    expect((since.body.items as AuditRecord[]).length).toBeLessThan(items.length)
    const cli = chorus(['audit', '--api', c.api, '--token', c.admin])
    expect(cli.status, cli.stderr).toBe(0)
    expect(cli.stdout).toMatch(/ci-operator \(operator\)\tjob\.cancel\tno-such-job\t404 no job no-such-job/)
  })
})

describe('CLI', () => {
  it('tokens create, list and revoke', () => {
    const created = chorus(['tokens', 'create', '--name', 'cli-made', '--role', 'operator', '--ttl', '30d', '--api', c.api, '--token', c.admin])
    expect(created.status, created.stderr).toBe(0)
    const token = created.stdout.trim()
    expect(token).toMatch(/^chorus_/)
    const list = chorus(['tokens', 'list', '--json', '--api', c.api], { CHORUS_TOKEN: c.admin })
    expect(list.status, list.stderr).toBe(0)
    expect((JSON.parse(list.stdout) as { items: { name: string; role: string; expiresAt: string }[] }).items.find((t) => t.name === 'cli-made')).toMatchObject({ role: 'operator', expiresAt: expect.any(String) })
    expect(chorus(['nodes', '--api', c.api, '--token', token]).status).toBe(0)
    const weak = chorus(['tokens', 'list', '--api', c.api, '--token', token])
    expect(weak.status).toBe(3)
    expect(weak.stderr).toMatch(/needs admin/)
    expect(chorus(['tokens', 'revoke', 'cli-made', '--api', c.api, '--token', c.admin]).status).toBe(0)
    const after = chorus(['nodes', '--api', c.api, '--token', token])
    expect(after.status).toBe(3)
    expect(after.stderr).toMatch(/unknown, expired or revoked token/)
    const bad = chorus(['tokens', 'create', '--name', 'x', '--role', 'root', '--api', c.api, '--token', c.admin])
    expect(bad.stderr).toMatch(/body\.role: .*"reader", "operator", "admin"/)
  })

  it('takes the token from --token, else $CHORUS_TOKEN, else the profile (refused unless chmod 600)', async () => {
    const profile = join(dir, 'profile.json')
    await writeFile(profile, JSON.stringify({ api: c.api, token: tokens.reader }), { mode: 0o600 })
    const ok = (r: ReturnType<typeof chorus>) => r.status
    expect(ok(chorus(['nodes'], { CHORUS_PROFILE: profile }))).toBe(0)
    expect(ok(chorus(['nodes'], { CHORUS_PROFILE: profile, CHORUS_TOKEN: 'chorus_wrong' }))).toBe(3)
    expect(ok(chorus(['nodes', '--token', tokens.reader], { CHORUS_PROFILE: profile, CHORUS_TOKEN: 'chorus_wrong' }))).toBe(0)
    expect(ok(chorus(['nodes', '--token', 'chorus_wrong'], { CHORUS_PROFILE: profile, CHORUS_TOKEN: tokens.reader }))).toBe(3)
    await writeFile(profile, JSON.stringify({ api: c.api, token: 'chorus_wrong' }))
    expect(ok(chorus(['nodes'], { CHORUS_PROFILE: profile, CHORUS_TOKEN: tokens.reader }))).toBe(0)
    await chmod(profile, 0o644)
    const open = chorus(['nodes'], { CHORUS_PROFILE: profile })
    expect(open.status).toBe(2)
    expect(open.stderr).toMatch(new RegExp(`readable by group or others .*chmod 600 ${profile}`))
  })
})

describe('restart', () => {
  it('tokens survive SIGKILL and a restart, the admin token is not recreated, the audit log is still there', async () => {
    const before = ((await call(c.api, 'GET', '/v1/audit?limit=1000', { token: c.admin })).body.items as AuditRecord[]).length
    const old = c.proc
    old.kill('SIGKILL')
    await new Promise((r) => (old.exitCode !== null || old.signalCode !== null ? r(undefined) : old.once('exit', r)))
    await rm(join(c.data, 'endpoints.json'))
    const again = await startCoordinator(c.data)
    expect(again.admin).toBe(c.admin)
    c = again
    expect((await call(c.api, 'GET', '/v1/jobs', { token: tokens.reader })).status).toBe(200)
    expect((await call(c.api, 'GET', '/v1/jobs', { token: tokens.operator })).body.items).toHaveLength(1)
    const after = (await call(c.api, 'GET', '/v1/audit?limit=1000', { token: c.admin })).body.items as AuditRecord[]
    expect(after.length).toBe(before)
    expect(after.filter((a) => a.action === 'token.create' && a.object === 'admin')).toHaveLength(1)
  })
})

describe('TLS', () => {
  it('refuses a non-loopback --api without TLS, saying why', () => {
    const r = spawnSync(process.execPath, [CHORUS_BIN, 'coordinator', '--data', join(dir, 'open'), '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '0.0.0.0:0'], { encoding: 'utf8', timeout: 30_000 })
    expect(r.status).toBe(2)
    expect(r.stderr).toMatch(/refusing to serve the API on 0\.0\.0\.0:0 without TLS: bearer tokens would cross the network in clear; give --api-tls-cert FILE --api-tls-key FILE/)
  })

  it('serves https on 127.0.0.1 with a generated certificate, and the CLI uses it with NODE_EXTRA_CA_CERTS', async () => {
    const cert = join(dir, 'cert.pem')
    const key = join(dir, 'key.pem')
    const gen = spawnSync('openssl', ['req', '-x509', '-newkey', 'ed25519', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { encoding: 'utf8' })
    expect(gen.status, gen.stderr).toBe(0)
    const t = await startCoordinator(join(dir, 'tls'), ['--api-tls-cert', cert, '--api-tls-key', key])
    try {
      const url = `https://${t.api}`
      const ok = chorus(['tokens', 'list', '--api', url, '--token', t.admin], { NODE_EXTRA_CA_CERTS: cert })
      expect(ok.status, ok.stderr).toBe(0)
      expect(ok.stdout).toMatch(/^admin\tadmin\t/)
      const untrusted = chorus(['tokens', 'list', '--api', url, '--token', t.admin])
      expect(untrusted.status).toBe(3)
      const plain = chorus(['tokens', 'list', '--api', t.api, '--token', t.admin], { NODE_EXTRA_CA_CERTS: cert })
      expect(plain.status).toBe(3)
    } finally {
      t.proc.kill('SIGTERM')
    }
  })
})
