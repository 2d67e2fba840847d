// Secrets in the agent core: whatever a step leaves behind (a refusal's reason included) is
// redacted before it is logged, persisted or sent, and a secret never goes into a program's argv.
// Fed events: no network, no clock, no disk.
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { agentStep, emptyAgentState, DEFAULT_AGENT_TIMING, type AgentConfig, type AgentEffect, type AgentState } from '../agent/core.js'
import { ALLOW_EVERYTHING, type AllowlistConfig } from '../agent/allowlist.js'
import { argvExposure, redactCuts, sensitiveInputValues } from '../agent/secrets.js'
import { OutputCapture } from '../interpreters/process.js'
import { generateIdentity } from '../protocol/keys.js'
import { JobTemplateSchema } from '../protocol/template.js'
import { MAX_OUTPUT_VALUE_CHARS, PROTOCOL_VERSION, open, seal } from '../protocol/wire.js'
import { ticketReply } from './helpers/tickets.js'
import { exec, ignoreFailure, shell } from './helpers/templates.js'

const coordinator = generateIdentity()
const T0 = 1_700_000_000_000
const base = JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8'))
const TOKEN_IN = { TOKEN: { type: 'string', required: true, sensitive: true } }

function agent(allow: AllowlistConfig) {
  const cfg: AgentConfig = {
    nodeId: 'node-1', coordinatorKey: coordinator.publicKey, identity: generateIdentity(), os: 'linux', allow,
    skills: { [shell.name]: ['1.0.0'], [exec.name]: ['1.0.0'] }, ...DEFAULT_AGENT_TIMING,
  }
  return { state: emptyAgentState() as AgentState, cfg }
}

/** Runs a job whose first step prints `secret` (a sensitive output TOKEN); returns every effect. */
function runWithSecret(allow: AllowlistConfig, secret: string, later: Record<string, unknown>[]): { effects: AgentEffect[]; ran: string[] } {
  const { state, cfg } = agent(allow)
  const t = structuredClone(base)
  t.actions.steps = [
    { name: 'mint', interpreter: shell, command: { linux: ['mint'] }, retryCount: 0, failureBehavior: ignoreFailure, outputFieldRules: { TOKEN: { sourceType: 'output', source: 'stdout', extractMethod: 'content', sensitive: true } } },
    ...later.map((s) => ({ retryCount: 0, failureBehavior: ignoreFailure, expectedInputs: TOKEN_IN, ...s })),
  ]
  const envelope = seal(coordinator, { type: 'job', v: PROTOCOL_VERSION, jobId: 'job-1', issuedAt: T0, expiresAt: T0 + 3_600_000, template: JobTemplateSchema.parse(t), resolved: { groups: [{ size: 1 }] } })
  const effects: AgentEffect[] = [...agentStep(state, cfg, { type: 'job', envelope, via: 'gossip' }, T0)]
  effects.push(...agentStep(state, cfg, { type: 'reply', envelope: ticketReply(coordinator, 'job-1', 'node-1', cfg.identity.publicKey, { group: 0, position: 0 }), to: 'sync' }, T0))
  const ran: string[] = []
  for (let i = 0; i < effects.length; i++) {
    const e = effects[i]!
    if (e.type !== 'run_step') continue
    ran.push(JSON.stringify(e.request.command))
    const stdout = e.request.stepNumber === 1 ? `${secret}\n` : 'ok\n'
    // An interpreter's own failure text may quote its command (e.g. a spawn error), and a value it
    // reports may hold the secret where the value is cut to MAX_OUTPUT_VALUE_CHARS.
    const command = JSON.stringify(e.request.command)
    const outputs = { ECHO: `${'v'.repeat(MAX_OUTPUT_VALUE_CHARS - 27)}${command}` }
    const result = e.request.stepNumber === 1 ? { status: 'success' as const, exitCode: 0, stdout, stderr: '' } : { status: 'failure' as const, exitCode: null, stdout: cutAcross(command), stderr: '', reason: `failed to start ${command}`, interpreterLog: `cannot run ${command}`, outputs }
    effects.push(...agentStep(state, cfg, { type: 'step_done', runId: e.request.runId, stepNumber: e.request.stepNumber, attempt: e.request.attempt, result }, T0 + i))
  }
  return { effects, ran }
}

/** Output bounded as an interpreter captures it (head and tail kept), with `text` cut where the head ends. */
function cutAcross(text: string): string {
  const capture = new OutputCapture(1_024)
  capture.write(`${'h'.repeat(512 - Math.floor(text.length / 2))}${text}${'t'.repeat(2_000)}`)
  expect(capture.truncated).toBe(true)
  return capture.text()
}

function resultSteps(effects: AgentEffect[]) {
  const send = effects.find((e) => e.type === 'send' && e.kind === 'result') as Extract<AgentEffect, { type: 'send' }>
  const o = open(send.envelope)
  if (!o.ok || o.body.type !== 'result') throw new Error('no result')
  return o.body
}

/** Everything that leaves the core (logs, records, messages) but the run_step requests, which carry the command to the interpreter in memory. */
function leaked(effects: AgentEffect[], secret: string): string[] {
  const text = effects.filter((e) => e.type !== 'run_step').map((e) => JSON.stringify(e)).join('\n')
  // The secret, or any 8-character piece of it (a reason cut in the middle of a secret).
  return [...new Set(Array.from({ length: secret.length - 7 }, (_, i) => secret.slice(i, i + 8)).filter((piece) => text.includes(piece)))]
}

describe('secrets in the agent core', () => {
  it('a sensitive input in a command the allowlist refuses is redacted from the refusal (log, stored run, result), even where the reason is cut short', () => {
    const secret = randomBytes(16).toString('hex')
    const allow: AllowlistConfig = { interpreters: [{ name: shell.name, commands: ['mint', '/echo [a-z]+/'] }] }
    // The allowlist shows at most 117 characters of a refused command: the secret straddles the cut.
    const pad = 'x'.repeat(68)
    const { effects, ran } = runWithSecret(allow, secret, [{ name: 'refused', interpreter: shell, command: { linux: [`curl -H 'X-Pad: ${pad}' -H 'Authorization: {{.TOKEN}}' http://127.0.0.1:1/`] } }])
    expect(ran).toHaveLength(1) // only mint
    const body = resultSteps(effects)
    expect(body.steps[1]!.reason).toMatch(/^refused by the agent allowlist, not run: command "curl -H 'X-Pad: x+' -H 'Authorization: \[REDACTED\]/)
    expect(effects.some((e) => e.type === 'log' && e.msg === 'step refused before running')).toBe(true)
    expect(leaked(effects, secret)).toEqual([])
  })

  it('interpreter failures and logs quoting the substituted command are redacted', () => {
    const secret = randomBytes(16).toString('hex')
    const { effects, ran } = runWithSecret(ALLOW_EVERYTHING, secret, [{ name: 'fails', interpreter: shell, command: { linux: ['use {{.TOKEN}}'] } }])
    expect(ran[1]).toContain(secret) // the interpreter gets the value (in memory)...
    const body = resultSteps(effects)
    expect(body.steps[1]!.reason).toContain('[REDACTED]')
    expect(body.steps[1]!.outputs.ECHO).toHaveLength(MAX_OUTPUT_VALUE_CHARS)
    expect(body.steps[1]!.stdout).toMatch(/\[REDACTED\]\n\[\.\.\. \d+ bytes omitted \.\.\.\]\n/)
    expect(leaked(effects, secret)).toEqual([]) // ...nothing else does
  })

  it('a sensitive value in the argv of chorus/exec-interpreter is refused before it runs, with the reason', () => {
    const secret = randomBytes(16).toString('hex')
    const { effects, ran } = runWithSecret(ALLOW_EVERYTHING, secret, [
      { name: 'argv', interpreter: exec, command: { argv: ['curl', '-H', 'Authorization: {{.TOKEN}}', 'http://127.0.0.1:1/'] } },
      { name: 'plain argv', interpreter: exec, command: { argv: ['echo', 'no secret here'] } },
    ])
    expect(ran).toHaveLength(2) // mint and the plain argv
    const body = resultSteps(effects)
    expect(body.steps[1]).toMatchObject({ status: 'failure', attempts: 0 })
    expect(body.steps[1]!.reason).toMatch(/a sensitive value would be in the command line of chorus\/exec-interpreter.*\/proc\/PID\/cmdline/)
    expect(leaked(effects, secret)).toEqual([])
  })

  it('argvExposure: argv-based interpreters only; inspec license fields go to the environment', () => {
    expect(argvExposure('chorus/exec-interpreter', { argv: ['x', 'a-s3cret-b'] }, ['s3cret'])).toMatch(/command line/)
    expect(argvExposure('chef-platform/inspec-interpreter', { exec: 'scan', args: { path: 'p', token: 's3cret' } }, ['s3cret'])).toMatch(/command line/)
    expect(argvExposure('chef-platform/inspec-interpreter', { exec: 'scan', args: { path: 'p', licenseKey: 's3cret' } }, ['s3cret'])).toBeUndefined()
    expect(argvExposure('chef-platform/shell-interpreter', { linux: ['echo s3cret'] }, ['s3cret'])).toBeUndefined()
    expect(argvExposure('acme/external', { script: 's3cret' }, ['s3cret'])).toBeUndefined()
    expect(argvExposure('chorus/exec-interpreter', { argv: ['x'] }, [])).toBeUndefined()
    // A secret cut by a capture's omitted marker: the pieces on either side go, short or unrelated text stays.
    const cut = 'abc s3cr\n[... 10 bytes omitted ...]\net42 xyz'
    expect(redactCuts(cut, ['s3cret42'])).toBe('abc [REDACTED]\n[... 10 bytes omitted ...]\n[REDACTED] xyz')
    expect(redactCuts('ab s3c\n[... 10 bytes omitted ...]\n2 xyz', ['s3cret42'])).toBe('ab s3c\n[... 10 bytes omitted ...]\n2 xyz')
    expect(redactCuts('s3cret42 whole', ['s3cret42'])).toBe('s3cret42 whole') // no marker: plain redaction's job
    expect(sensitiveInputValues({ A: { sensitive: true }, B: {}, C: { sensitive: true, default: 'dflt' } }, { A: 'va', B: 'vb' })).toEqual(['va', 'dflt'])
  })
})
