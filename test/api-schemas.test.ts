// The input schemas of protocol/api.ts: problem paths and messages, defaults, and the agent
// configuration file read through its schema.
import { describe, expect, it } from 'vitest'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AgentConfigSchema, AuditQuerySchema, CoordinatorOptionsSchema, FilterBodySchema, NextQuerySchema, TokenBodySchema, check } from '../protocol/api.js'
import { loadAgentConfig } from '../agent/runtime.js'
import { buildApi, type ApiHost } from '../coordinator/http.js'
import { emptyCoordinatorState } from '../coordinator/core.js'
import { allowedHosts, browserRefusal, requiredRole, roleAllows } from '../coordinator/access.js'

describe('API input schemas', () => {
  it('name the path of every problem below where the input came from', () => {
    const r = check(FilterBodySchema, { constraints: { attributes: [{ name: 'x', operator: '=', value: 'a' }] }, extra: 1 }, 'body')
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.problems.map((p) => p.path)).toEqual(expect.arrayContaining(['body.constraints.attributes[0].value', 'body.extra']))
    const none = check(FilterBodySchema, {}, 'body')
    expect(none.ok ? [] : none.problems).toEqual([{ path: 'body', message: 'expected "query" and/or "constraints"' }])
  })

  it('have documented defaults', () => {
    expect(check(NextQuerySchema, {}, 'query')).toEqual({ ok: true, value: { count: 10 } })
    expect(check(AuditQuerySchema, { since: '2026-12-01T00:00:00Z' }, 'query')).toEqual({ ok: true, value: { since: Date.parse('2026-12-01T00:00:00Z'), limit: 100 } })
    expect(check(CoordinatorOptionsSchema, { dataDir: 'd' }, 'options')).toEqual({ ok: true, value: { dataDir: 'd', listen: ['/ip4/127.0.0.1/tcp/7700'], api: '127.0.0.1:7070', apiHosts: [], retainDays: 30 } })
  })

  it('read token lifetimes as durations', () => {
    const ttl = (v: unknown) => { const r = check(TokenBodySchema, { name: 'n', role: 'reader', ttl: v }, 'body'); return r.ok ? r.value.ttl : r.problems[0]!.path }
    expect([ttl('30d'), ttl('12h'), ttl('15m'), ttl('90s'), ttl(60)]).toEqual([30 * 86_400_000, 12 * 3_600_000, 15 * 60_000, 90_000, 60_000])
    expect([ttl('soon'), ttl(0), ttl('0s')]).toEqual(['body.ttl', 'body.ttl', 'body.ttl'])
  })

  it('refuse a coordinator API beyond loopback without TLS, and half a TLS pair', () => {
    const r = check(CoordinatorOptionsSchema, { dataDir: 'd', api: '10.0.0.5:7070' }, 'options')
    expect(r.ok ? '' : r.problems[0]!.message).toMatch(/refusing to serve the API on 10\.0\.0\.5:7070 without TLS/)
    expect(check(CoordinatorOptionsSchema, { dataDir: 'd', api: '10.0.0.5:7070', tlsCert: 'c', tlsKey: 'k' }, 'options').ok).toBe(true)
    expect(check(CoordinatorOptionsSchema, { dataDir: 'd', tlsCert: 'c' }, 'options').ok).toBe(false)
    expect(check(CoordinatorOptionsSchema, { dataDir: 'd', api: '[::1]:7070' }, 'options').ok).toBe(true)
  })

  it('check the agent configuration file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'chorus-agent-config-'))
    try {
      const file = join(dir, 'agent.json')
      await writeFile(file, JSON.stringify({ attributes: { role: 7 }, restartMode: 'maybe', colour: 'blue' }))
      await expect(loadAgentConfig(file)).rejects.toThrow(/agent\.json: .*attributes\.role: got 7; expected a string.*restartMode: .*"real", "simulate"/)
      await expect(loadAgentConfig(file)).rejects.toThrow(/colour: unknown key "colour"/)
      await writeFile(file, JSON.stringify({ allow: 'any', attributes: { role: 'web' }, restartMode: 'simulate' }))
      expect(await loadAgentConfig(file)).toEqual({ allow: 'any', attributes: { role: 'web' }, restartMode: 'simulate' })
      await writeFile(file, '{"allow": ')
      await expect(loadAgentConfig(file)).rejects.toThrow(/not JSON/)
      expect(check(AgentConfigSchema, { interpreters: [{ name: 'x' }] }, '$').ok).toBe(false)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('access rules', () => {
  it('roles are ordered and unknown routes need admin', () => {
    expect(roleAllows('admin', 'operator')).toBe(true)
    expect(roleAllows('operator', 'admin')).toBe(false)
    expect(requiredRole('GET', '/v1/jobs')).toBe('reader')
    expect(requiredRole('GET', '/v1/not-in-the-table')).toBe('admin')
    expect(requiredRole('GET', undefined)).toBe('reader')
  })

  it('the API refuses to register a route missing from the route table', () => {
    const app = buildApi({ state: emptyCoordinatorState(), hosts: new Set(), scheme: 'http' } as unknown as ApiHost)
    expect(() => app.get('/v1/secret', async () => ({}))).toThrow(/route GET \/v1\/secret is not in the route table/)
    void app.close()
  })

  it('a browser request is refused by Host, content type or Origin', () => {
    const hosts = allowedHosts('127.0.0.1', 7070, ['chorus.example'])
    expect([...hosts].sort()).toEqual(['127.0.0.1:7070', '[::1]:7070', 'chorus.example:7070', 'localhost:7070'])
    const base = { method: 'POST', host: '127.0.0.1:7070', origin: undefined, contentType: 'application/json' }
    expect(browserRefusal(base, hosts, 'http')).toBeUndefined()
    expect(browserRefusal({ ...base, contentType: 'application/x-www-form-urlencoded' }, hosts, 'http')?.status).toBe(415)
    expect(browserRefusal({ ...base, contentType: 'application/yaml; charset=utf-8' }, hosts, 'http')).toBeUndefined()
    expect(browserRefusal({ ...base, origin: 'http://127.0.0.1:7070' }, hosts, 'http')).toBeUndefined()
    expect(browserRefusal({ ...base, origin: 'https://127.0.0.1:7070' }, hosts, 'http')?.status).toBe(403)
    expect(browserRefusal({ ...base, origin: 'null' }, hosts, 'http')?.status).toBe(403)
    expect(browserRefusal({ ...base, host: 'CHORUS.example:7070' }, hosts, 'http')).toBeUndefined()
    expect(browserRefusal({ ...base, host: undefined }, hosts, 'http')?.status).toBe(421)
    expect(browserRefusal({ ...base, method: 'GET', contentType: 'text/plain', origin: 'http://evil' }, hosts, 'http')).toBeUndefined()
  })
})
