import { chmodSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createExecInterpreter, EXEC_INTERPRETER_NAME } from '../interpreters/exec.js'
import { createHttpCheckInterpreter, HTTP_CHECK_INTERPRETER_NAME } from '../interpreters/http-check.js'
import { BUILTIN_INTERPRETER_NAMES, builtinInterpreters } from '../interpreters/registry.js'
import { createRestartInterpreter, rebootDelayMinutes } from '../interpreters/restart.js'
import {
  createAnsibleInterpreter, createChefClientInterpreter, createInspecInterpreter, inspecPassPercent, planInspec,
} from '../interpreters/tools.js'
import type { StepRequest } from '../interpreters/types.js'
import { alive, waitUntil } from './helpers/process.js'

let work: string
beforeEach(() => {
  work = realpathSync(mkdtempSync(join(tmpdir(), 'chorus-builtin-')))
})
afterEach(() => {
  rmSync(work, { recursive: true, force: true })
})

function req(interpreter: string, command: unknown, extra: Partial<StepRequest> = {}): StepRequest {
  return {
    runId: 'run-1', stepNumber: 1, attempt: 1, interpreter, command, inputs: { dir: work }, os: 'linux',
    timeoutMs: 20_000, maxOutputBytes: 64 * 1024, ...extra,
  }
}
const never = new AbortController().signal

/** A fake tool: prints its argv one per line (and selected env vars), exits with $FAKE_EXIT or 0. */
function fakeTool(dir: string, name: string, body = ''): void {
  const file = join(dir, name)
  writeFileSync(file, `#!/bin/sh\necho "${name}"\nfor a in "$@"; do echo "arg:$a"; done\necho "license:$CHEF_LICENSE_KEY"\n${body}\nexit 0\n`)
  chmodSync(file, 0o755)
}

describe('registry', () => {
  it('has every built-in', () => {
    expect([...builtinInterpreters().keys()].sort()).toEqual([...BUILTIN_INTERPRETER_NAMES].sort())
  })
})

describe('chorus/exec-interpreter', () => {
  const exec = createExecInterpreter()
  it('passes argv without a shell', async () => {
    const r = await exec.run(req(EXEC_INTERPRETER_NAME, { argv: ['/bin/echo', '$(id)', 'a b', '*'] }), never)
    expect(r).toMatchObject({ status: 'success', exitCode: 0, stdout: '$(id) a b *\n' })
  })
  it('reports exit codes, missing programs and bad commands', async () => {
    expect(await exec.run(req(EXEC_INTERPRETER_NAME, { argv: ['/bin/sh', '-c', 'exit 4'] }), never)).toMatchObject({ status: 'failure', exitCode: 4, reason: 'exit code 4 from /bin/sh' })
    expect((await exec.run(req(EXEC_INTERPRETER_NAME, { argv: ['/no/such/prog'] }), never)).reason).toMatch(/failed to start \/no\/such\/prog/)
    expect((await exec.run(req(EXEC_INTERPRETER_NAME, { argv: [] }), never)).reason).toBe('invalid command: argv is empty')
    expect((await exec.run(req(EXEC_INTERPRETER_NAME, { linux: ['x'] }), never)).reason).toMatch(/expected \{argv/)
  })
  it('times out and kills', async () => {
    const pidfile = join(work, 'pid')
    const r = await exec.run(req(EXEC_INTERPRETER_NAME, { argv: ['/bin/sh', '-c', 'echo $$ > "$0"; exec /bin/sleep 30', pidfile] }, { timeoutMs: 1_000 }), never)
    expect(r).toMatchObject({ status: 'failure', reason: 'timed out after 1000 ms; process group killed' })
    expect(await waitUntil(() => !alive(Number(readFileSync(pidfile, 'utf8'))))).toBe(true)
  })
})

describe('chorus/http-check', () => {
  let server: Server
  let base: string
  beforeAll(async () => {
    server = createServer((rq, rs) => {
      if (rq.url === '/ok') { rs.writeHead(200, { 'content-type': 'text/plain' }); rs.end('status: healthy\nversion=1.4.2\n'); return }
      if (rq.url === '/moved') { rs.writeHead(301, { location: '/ok' }); rs.end(); return }
      if (rq.url === '/big') { rs.writeHead(200); const chunk = Buffer.alloc(64 * 1024, 97); let n = 0; const w = () => { while (n < 40) { n++; if (!rs.write(chunk)) { rs.once('drain', w); return } } rs.end() }; w(); return }
      if (rq.url === '/slow') { rs.writeHead(200); rs.write('partial'); return } // never ends
      rs.writeHead(500); rs.end('broken')
    })
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  afterAll(async () => {
    server.closeAllConnections()
    await new Promise((res) => server.close(res))
  })
  const http = createHttpCheckInterpreter()
  it('succeeds on the expected status and body pattern; body is stdout', async () => {
    const r = await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { method: 'GET', url: `${base}/ok`, expectStatus: 200, bodyPattern: 'healthy' }), never)
    expect(r).toMatchObject({ status: 'success', exitCode: 0, stdout: 'status: healthy\nversion=1.4.2\n', outputs: { status: '200' } })
    expect(r.stderr).toMatch(/-> 200 OK/)
  })
  it('fails on status or body mismatch; redirects are not followed', async () => {
    expect(await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: `${base}/err` }), never)).toMatchObject({ status: 'failure', exitCode: 1, reason: 'http check failed: status 500, expected 200' })
    expect(await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: `${base}/ok`, bodyPattern: 'sick' }), never)).toMatchObject({ status: 'failure', reason: expect.stringContaining('does not match') })
    expect(await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: `${base}/moved`, expectStatus: [301, 302] }), never)).toMatchObject({ status: 'success' })
  })
  it('matches a catastrophic bodyPattern over the whole 1 MiB body it reads, in linear time, and refuses a backreference', async () => {
    // /big is 2.5 MiB of "a" (1 MiB is read): a backtracking engine on (a+)+$ against "aaa…a" with no end anchor match would never return.
    const r = await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: `${base}/big`, bodyPattern: '(a+)+b' }), never)
    expect(r).toMatchObject({ status: 'failure', reason: expect.stringContaining('does not match') })
    expect(await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: `${base}/ok`, bodyPattern: '(h)\\1' }), never)).toMatchObject({ status: 'failure', reason: expect.stringMatching(/bodyPattern: invalid regular expression/) })
  })
  it('bounds the body it reads and the stdout it keeps', async () => {
    const r = await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: `${base}/big` }, { maxOutputBytes: 1000 }), never)
    expect(r.status).toBe('success')
    expect(r.truncated).toBe(true)
    expect(Buffer.byteLength(r.stdout)).toBeLessThanOrEqual(1000)
    expect(r.stderr).toMatch(/1048576\+ body bytes/)
  })
  it('times out and aborts', async () => {
    expect(await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: `${base}/slow` }, { timeoutMs: 300 }), never)).toMatchObject({ status: 'failure', reason: 'timed out after 300 ms' })
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 200)
    expect(await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: `${base}/slow` }), ac.signal)).toMatchObject({ status: 'failure', reason: 'aborted' })
  })
  it('refuses bad commands and connection failures are failures', async () => {
    expect((await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: 'file:///etc/passwd' }), never)).reason).toMatch(/not http/)
    expect((await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: `${base}/ok`, method: 'BREW' }), never)).reason).toMatch(/method/)
    const tmp = createServer()
    await new Promise<void>((res) => tmp.listen(0, '127.0.0.1', res))
    const port = (tmp.address() as AddressInfo).port
    await new Promise((res) => tmp.close(res))
    const closed = await http.run(req(HTTP_CHECK_INTERPRETER_NAME, { url: `http://127.0.0.1:${port}/` }), never)
    expect(closed).toMatchObject({ status: 'failure', exitCode: null, reason: expect.stringMatching(/failed: .*ECONNREFUSED/) })
  })
})

describe('chef-platform/restart-interpreter', () => {
  it.each([
    [{ exec: 'machine_reboot', args: { time: 'now' } }, 0], [{ exec: 'machine_reboot', args: { time: '1' } }, 1],
    [{ exec: 'machine_reboot', args: { time: 90 } }, 90], [{ exec: 'machine_reboot' }, 1],
    [{ exec: 'machine_reboot', args: { time: -1 } }, 'invalid'], [{ exec: 'machine_reboot', args: { time: '5m' } }, 'invalid'],
    [{ exec: 'machine_restart' }, 'unsupported'],
  ])('%j', (command, expected) => {
    const r = rebootDelayMinutes(command)
    if (typeof expected === 'number') expect(r).toBe(expected)
    else expect(r).toMatch(new RegExp(expected))
  })
  it('simulate mode reports reboot_pending without rebooting', async () => {
    const r = await createRestartInterpreter({ mode: 'simulate' }).run(req('chef-platform/restart-interpreter', { exec: 'machine_reboot', args: { time: 'now' } }), never)
    expect(r).toMatchObject({ status: 'success', interim: 'reboot_pending', outputs: { rebootInMinutes: '0' } })
    expect(r.stdout).toMatch(/simulated: would run shutdown -r now/)
  })
  it('real mode runs shutdown -r +N (a fake shutdown on PATH)', async () => {
    fakeTool(work, 'shutdown')
    const r = await createRestartInterpreter({ mode: 'real', pathEnv: work }).run(req('chef-platform/restart-interpreter', { exec: 'machine_reboot', args: { time: 2 } }), never)
    expect(r).toMatchObject({ status: 'success', interim: 'reboot_pending' })
    expect(r.stdout.split('\n').filter((l) => l.startsWith('arg:'))).toEqual(['arg:-r', 'arg:+2', 'arg:Chorus job step reboot'])
    const missing = await createRestartInterpreter({ mode: 'real', pathEnv: join(work, 'empty') }).run(req('chef-platform/restart-interpreter', { exec: 'machine_reboot' }), never)
    expect(missing.reason).toBe('skill not installed: shutdown not found on PATH')
  })
})

describe('tool interpreters (fake tools first on PATH)', () => {
  const argsOf = (stdout: string) => stdout.split('\n').filter((l) => l.startsWith('arg:')).map((l) => l.slice(4))

  it('chef-client run (infra_client_local sample shape)', async () => {
    fakeTool(work, 'chef-client')
    const r = await createChefClientInterpreter({ pathEnv: work }).run(req('chef-platform/chef-client-interpreter', { exec: 'run', args: { mode: 'local', path: '/home/ec2-user/chef-repo/cookbooks', runlist: 'nginx::default' } }), never)
    expect(r.status).toBe('success')
    expect(argsOf(r.stdout)).toEqual(['--local-mode', '--config-option', 'cookbook_path=/home/ec2-user/chef-repo/cookbooks', '--override-runlist', 'nginx::default'])
    const unsupported = await createChefClientInterpreter({ pathEnv: work }).run(req('chef-platform/chef-client-interpreter', { exec: 'download', args: {} }), never)
    expect(unsupported.reason).toMatch(/not supported by this agent/)
  })

  it('inspec scan with automate source and license in the environment', async () => {
    fakeTool(work, 'inspec')
    const r = await createInspecInterpreter({ pathEnv: work }).run(req('chef-platform/inspec-interpreter', {
      exec: 'scan', args: { path: 'admin/ssh-baseline', source: 'automate', sourceURL: 'https://a2.example', username: 'u', token: 't0k', licenseKey: 'LIC', waiver: 'w.yml' },
    }), never)
    expect(r.status).toBe('success')
    const [login, exec] = r.stdout.split('inspec\n').filter((s) => s !== '')
    expect(argsOf(login!)).toEqual(['automate', 'login', 'https://a2.example', '--user', 'u', '--token', 't0k'])
    expect(argsOf(exec!).slice(0, 5)).toEqual(['exec', 'compliance://admin/ssh-baseline', '--waiver-file', 'w.yml', '--reporter'])
    expect(argsOf(exec!)[5]).toBe('cli')
    expect(argsOf(exec!)[6]).toMatch(/^json:.*inspec-report\.json$/)
    expect(exec).toContain('license:LIC')
  })

  it('inspec exit 100 fails; minSuccess decides from the JSON report, attached as an artifact', async () => {
    const report = { profiles: [{ controls: [
      { results: [{ status: 'passed' }] }, { results: [{ status: 'passed' }, { status: 'failed' }] },
      { results: [{ status: 'passed' }] }, { results: [{ status: 'skipped' }] },
    ] }] }
    expect(inspecPassPercent(report)).toEqual({ percent: (2 / 3) * 100, passed: 2, total: 3 })
    writeFileSync(join(work, 'report.json'), JSON.stringify(report))
    // The fake writes the report to the json: reporter target and exits 100.
    fakeTool(work, 'inspec', `for a in "$@"; do case "$a" in json:*) cp "${join(work, 'report.json')}" "\${a#json:}";; esac; done\nexit 100`)
    const inspec = createInspecInterpreter({ pathEnv: work })
    const plain = await inspec.run(req('chef-platform/inspec-interpreter', { exec: 'scan', args: { path: 'p' } }), never)
    expect(plain).toMatchObject({ status: 'failure', exitCode: 100 })
    const lenient = await inspec.run(req('chef-platform/inspec-interpreter', { exec: 'scan', args: { path: 'p', minSuccess: 60 } }), never)
    expect(lenient.status).toBe('success')
    expect(lenient.artifacts?.[0]).toMatchObject({ name: 'inspec-report.json', encoding: 'utf8' })
    const strict = await inspec.run(req('chef-platform/inspec-interpreter', { exec: 'scan', args: { path: 'p', minSuccess: '90' } }), never)
    expect(strict).toMatchObject({ status: 'failure', reason: '2 of 3 controls passed (66.7%), below minSuccess 90%' })
  })

  it('ansible playbook mapping', async () => {
    fakeTool(work, 'ansible-playbook')
    const r = await createAnsibleInterpreter({ pathEnv: work }).run(req('chef-platform/ansible-interpreter', { exec: 'run', args: { playbook: 'site.yml', tags: 'web', check: true, extraVars: { port: 8080 } } }), never)
    expect(argsOf(r.stdout)).toEqual(['-i', 'localhost,', '-c', 'local', '--tags', 'web', '--check', '--extra-vars', '{"port":8080}', 'site.yml'])
    const url = await createAnsibleInterpreter({ pathEnv: work }).run(req('chef-platform/ansible-interpreter', { exec: 'run', args: { playbook: 'https://x/p.yml' } }), never)
    expect(url.reason).toMatch(/local playbooks only/)
  })

  it('fails with "skill not installed" when the tool is missing', async () => {
    const empty = join(work, 'none')
    expect((await createChefClientInterpreter({ pathEnv: empty }).run(req('x', { exec: 'run' }), never)).reason).toBe('skill not installed: chef-client not found on PATH')
    expect((await createInspecInterpreter({ pathEnv: empty }).run(req('x', { exec: 'scan', args: { path: 'p' } }), never)).reason).toBe('skill not installed: inspec not found on PATH')
    expect((await createAnsibleInterpreter({ pathEnv: empty }).run(req('x', { exec: 'run', args: { playbook: 'a.yml' } }), never)).reason).toBe('skill not installed: ansible-playbook not found on PATH')
  })

  it('planInspec validates', () => {
    expect(planInspec({ exec: 'scan', args: {} })).toMatch(/args.path/)
    expect(planInspec({ exec: 'scan', args: { path: 'p', minSuccess: 150 } })).toMatch(/minSuccess/)
  })
})
