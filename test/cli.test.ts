// The `chorus` command as an operator meets it: help for every command, validate's exit codes
// and messages, keys, and the API refusing bad templates with path-named problems.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CHORUS_BIN } from '../cli/paths.js'
import { waitFor } from '../cli/fleet.js'

const SAMPLES = new URL('../../shared/courier/samples/', import.meta.url).pathname

function chorus(...args: string[]) {
  return spawnSync(process.execPath, [CHORUS_BIN, ...args], { encoding: 'utf8', timeout: 30_000 })
}

let dir: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'chorus-cli-'))
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('chorus CLI', () => {
  it('has help for every command', () => {
    const top = chorus('--help')
    expect(top.status).toBe(0)
    expect(top.stdout).toMatch(/Exit codes: 0 done and succeeded, 1 the job or instance failed, 2 usage or validation error,\s+3 the coordinator cannot be reached or refused the request \(auth\), 4 not found/)
    const commands = ['keys', 'validate', 'coordinator', 'agent', 'job submit', 'job show', 'job plan', 'job next', 'job cancel', 'report', 'nodes', 'lists set', 'filters set', 'exceptions add', 'exceptions list', 'exceptions remove', 'tokens create', 'tokens list', 'tokens revoke', 'audit', 'artifacts', 'demo', 'bench fanout', 'bench fleet', 'bench history', 'sim',
      'job watch', 'job list', 'job run', 'job delete', 'instance list', 'instance show', 'run show', 'run logs', 'nodes show', 'nodes pending', 'enroll create']
    for (const c of commands) {
      const r = chorus(...c.split(' '), '--help')
      expect(r.status, c).toBe(0)
      expect(r.stdout, c).toMatch(/Usage: chorus /)
      expect(r.stdout.length, c).toBeGreaterThan(80)
      expect(r.stdout, c).toMatch(/\nExample: chorus /)
      // Every command that talks to the API takes a token.
      if (c !== 'coordinator' && /--api /.test(r.stdout)) expect(r.stdout, c).toMatch(/--token <token>/)
    }
  })

  it('validate exits 0 for valid templates and 2 with FILE: path: problem lines otherwise', async () => {
    const ok = chorus('validate', join(SAMPLES, 'samples_create-job-simple.json'), join(SAMPLES, 'yaml/samples_create-job-simple.yaml'))
    expect(ok.status).toBe(0)
    expect(ok.stdout).toMatch(/samples_create-job-simple.json: ok/)
    const toml = join(dir, 'job.toml')
    await writeFile(toml, 'name = "x"\nname = "y"\n')
    const bad = chorus('validate', join(SAMPLES, 'samples_job_reboot.json'), join(SAMPLES, 'samples_ssl_cert_rotation.json'), toml)
    expect(bad.status).toBe(2)
    expect(bad.stdout).toMatch(/samples_job_reboot\.json: actions\.steps\[2\]\.outputFieldRules\.required: expected an output rule object/)
    expect(bad.stdout).toMatch(/samples_ssl_cert_rotation\.json: actions\.steps\[1\]\.(inputs|expectedInputs|outputFieldRules|conditions): .*duplicate/i)
    expect(bad.stdout).toMatch(/job\.toml: name: .*/)
  })

  it('enroll create checks --ttl with the API\'s own duration rule: bad ones exit 2 before any request, good ones go on to the API', () => {
    const word = chorus('enroll', 'create', '--ttl', 'soon', '--api', 'http://127.0.0.1:1', '--token', 'x')
    expect(word.status).toBe(2)
    expect(word.stderr).toMatch(/--ttl <duration>.*expected a duration such as 30d, 12h, 15m, 90s or seconds, got "soon"/)
    const zero = chorus('enroll', 'create', '--ttl', '0s', '--api', 'http://127.0.0.1:1', '--token', 'x')
    expect(zero.status).toBe(2)
    expect(zero.stderr).toMatch(/between 1 s and 10 years/)
    // Plain seconds are a duration to the API, so the CLI lets them through: the next failure is the unreachable API (3).
    const seconds = chorus('enroll', 'create', '--ttl', '90', '--api', 'http://127.0.0.1:1', '--token', 'x')
    expect(seconds.stderr).toMatch(/cannot reach http:\/\/127\.0\.0\.1:1/)
    expect(seconds.status).toBe(3)
  })

  it('sim --help names every scenario the simulator has', async () => {
    const { SCENARIOS } = await import('../sim/scenarios.js')
    const help = chorus('sim', '--help').stdout.replace(/\s+/g, ' ')
    for (const s of SCENARIOS) expect(help, s.name).toContain(s.name)
  })

  it('keys creates a key once and prints the same public key afterwards', () => {
    const a = chorus('keys', '--data', join(dir, 'k'))
    const b = chorus('keys', '--data', join(dir, 'k'))
    expect(a.status).toBe(0)
    expect(a.stdout.trim()).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(b.stdout).toBe(a.stdout)
    expect(a.stderr).toMatch(/created a new key/)
    expect(b.stderr).toBe('')
  })

  it('the agent refuses a malformed coordinator key with a clear message', () => {
    const r = chorus('agent', '--data', join(dir, 'a'), '--join', '/ip4/127.0.0.1/tcp/1', '--coordinator-key=not-a-key')
    expect(r.status).toBe(2)
    expect(r.stderr).toMatch(/--coordinator-key: a public key is 32 bytes in base64url/)
  })

  it('the API answers a bad template with 400 and path-named problems, and job submit prints them', async () => {
    const data = join(dir, 'coord')
    const proc = spawn(process.execPath, [CHORUS_BIN, 'coordinator', '--data', data, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0'], { stdio: 'ignore' })
    try {
      const { api } = await waitFor('the coordinator', async () => JSON.parse(await readFile(join(data, 'endpoints.json'), 'utf8')) as { api: string }, 30_000)
      const token = (await readFile(join(data, 'admin.token'), 'utf8')).trim()
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` }
      const res = await fetch(`http://${api}/v1/jobs`, { method: 'POST', body: '{"name": "x", "scheduleRule": "sometimes"}', headers })
      expect(res.status).toBe(400)
      const body = (await res.json()) as { problems: { path: string; message: string }[] }
      expect(body.problems.map((p) => p.path)).toEqual(expect.arrayContaining(['scheduleRule', 'target', 'actions']))
      expect(body.problems.find((p) => p.path === 'scheduleRule')!.message).toMatch(/expected "immediate" or a recurrence rule/)
      const dup = await fetch(`http://${api}/v1/jobs`, { method: 'POST', body: '{"name": "x", "name": "y"}', headers })
      expect(((await dup.json()) as { problems: { message: string }[] }).problems[0]!.message).toMatch(/duplicate/i)
      const submit = chorus('job', 'submit', join(SAMPLES, 'samples_job_reboot.json'), '--api', api, '--token', token)
      expect(submit.status).toBe(2)
      expect(submit.stderr).toMatch(/samples_job_reboot\.json: actions\.steps\[2\]\.outputFieldRules\.required/)
    } finally {
      proc.kill('SIGTERM')
    }
  })
})
