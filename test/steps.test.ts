import { describe, expect, it } from 'vitest'
import {
  completeStep, compareVersions, evaluateConditions, evaluateJsonPath, extractOutputs, matchSkillVersion,
  planStep, resolveInputs, substitute, substituteCommand,
} from '../agent/steps.js'
import { REDACTED, redact, redactDeep, redactOutputs } from '../agent/secrets.js'
import { ALLOW_EVERYTHING, DEFAULT_ALLOWLIST, checkAllowed, parseAllowlist } from '../agent/allowlist.js'
import { MAX_BACKOFF_MS, backoffDelayMs } from '../protocol/rollout.js'

describe('substitute', () => {
  it.each([
    ['echo {{.A}}', { A: 'x' }, 'echo x', []],
    ['echo {{ .A }} {{.A}}', { A: 'x' }, 'echo x x', []],
    ['{{  .A_1  }}', { A_1: 'v' }, 'v', []],
    ['echo {{.B}} {{.B}}', {}, 'echo {{.B}} {{.B}}', ['B']],
    ['{{.A}}', { A: '{{.B}}' }, '{{.B}}', []], // one pass: no re-expansion
    ['{{A}} {{ A }} {{.}}', { A: 'x' }, '{{A}} {{ A }} {{.}}', []], // not Go field syntax: untouched
    ['{{.toString}}', {}, '{{.toString}}', ['toString']], // no prototype lookups
    ['$1 $& {{.A}}', { A: '$&$1' }, '$1 $& $&$1', []], // replacement patterns are literal
  ] as const)('%s', (text, values, expected, missing) => {
    const r = substitute(text, values as Record<string, string>)
    expect(r.text).toBe(expected)
    expect(r.missing).toEqual(missing)
  })

  it('walks a command object deeply and leaves the input alone', () => {
    const cmd = { linux: ['echo {{.A}}', 'x'], args: { path: '{{.P}}', n: 3, nested: [{ q: '{{.Q}}' }] } }
    const r = substituteCommand(cmd, { A: '1', P: '/p' })
    expect(r.command).toEqual({ linux: ['echo 1', 'x'], args: { path: '/p', n: 3, nested: [{ q: '{{.Q}}' }] } })
    expect(r.missing).toEqual(['Q'])
    expect(cmd.linux[0]).toBe('echo {{.A}}')
  })
})

describe('resolveInputs', () => {
  it('uses available values, then defaults', () => {
    const r = resolveInputs({ expectedInputs: { A: { required: true, default: 'd' }, B: { default: true }, C: {} }, inputs: { dir: '/x/{{.A}}', n: 5 } }, { A: 'a' })
    expect(r).toEqual({ ok: true, values: { A: 'a', B: 'true' }, inputs: { dir: '/x/a', n: '5' }, sensitive: [], defaulted: ['B'] })
  })
  it('fails (not skips) when a required input has no value and no default', () => {
    const r = resolveInputs({ expectedInputs: { X: { type: 'string', required: true }, Y: { required: true } } }, {})
    expect(r.ok).toBe(false)
    if (!r.ok) {
      expect(r.missing).toEqual(['X', 'Y'])
      expect(r.reason).toBe('required inputs X, Y are missing (not produced by an earlier step and no default)')
    }
  })
  it('an empty string is a value', () => {
    const r = resolveInputs({ expectedInputs: { X: { required: true } } }, { X: '' })
    expect(r.ok && r.values.X).toBe('')
  })
  it.each([
    ['number', '12.5', true], ['number', ' 7\n', true], ['int', 'abc', false], ['boolean', 'true', true],
    ['bool', 'yes', false], ['string', 'anything', true], ['date', 'x', false],
  ])('type %s with %j ok=%s', (type, value, ok) => {
    expect(resolveInputs({ expectedInputs: { V: { type } } }, { V: value }).ok).toBe(ok)
  })
  it('lists sensitive names', () => {
    const r = resolveInputs({ expectedInputs: { T: { sensitive: true } } }, { T: 's3cr3t' })
    expect(r.ok && r.sensitive).toEqual(['T'])
  })
  it('static inputs may only reference expected inputs', () => {
    const r = resolveInputs({ inputs: { dir: '{{.NOPE}}' } }, { NOPE: 'x' })
    expect(r.ok).toBe(false)
  })
})

describe('evaluateConditions', () => {
  const v = { S: 'false\n', N: '10', M: '9', W: 'value2\r\n', V: '1.25.0' }
  it.each([
    ['eq', 'S', 'false\n', false, true],
    ['eq', 'S', 'false', false, false], // no trimming
    ['eq', 'S', 'false', true, true],
    ['gt', 'N', '9', false, true], // numeric: 10 > 9
    ['lt', 'N', '9', false, false],
    ['gte', 'N', '10.0', false, true],
    ['lte', 'M', '10', false, true],
    ['gt', 'V', '1.3.0', false, false], // not numbers: lexicographic "1.25.0" < "1.3.0"
    ['lt', 'S', 'true', false, true], // lexicographic
    ['matches', 'V', '^1\\.2[0-9]\\.', false, true],
    ['matches', 'V', '^2', true, true],
    ['startsWith', 'W', 'value', false, true],
    ['endsWith', 'W', '\r\n', false, true],
    ['contains', 'W', 'lue2', false, true],
    ['contains', 'W', 'zzz', true, true],
  ])('%s %s %j negate=%s -> %s', (operator, inputName, value, negate, run) => {
    expect(evaluateConditions([{ inputName, operator, value, negate }], v).run).toBe(run)
  })
  it('ANDs conditions and explains', () => {
    const r = evaluateConditions([{ inputName: 'N', operator: 'gt', value: '5' }, { inputName: 'S', operator: 'eq', value: 'true\n' }], v)
    expect(r.run).toBe(false)
    expect(r.explanation).toBe('N ("10") gt "5": true; S ("false\\n") eq "true\\n": false => skip')
  })
  it('an absent input is false, even negated', () => {
    expect(evaluateConditions([{ inputName: 'Z', operator: 'eq', value: 'x', negate: true }], v).run).toBe(false)
  })
  it('no conditions run', () => {
    expect(evaluateConditions([], {})).toEqual({ run: true, explanation: 'no conditions' })
  })
  it('invalid regex and unknown operators are errors', () => {
    expect(evaluateConditions([{ inputName: 'S', operator: 'matches', value: '(' }], v).error).toMatch(/invalid regular expression/)
    expect(evaluateConditions([{ inputName: 'S', operator: 'like', value: 'x' }], v).error).toMatch(/unknown operator/)
  })
  it('masks sensitive values in the explanation', () => {
    const r = evaluateConditions([{ inputName: 'N', operator: 'eq', value: '10' }], v, ['N'])
    expect(r.explanation).not.toContain('10')
  })
})

describe('extractOutputs', () => {
  const src = { stdout: 'Profile Summary: 3 successful controls, 0 control failures\nnginx/1.25.0\n', stderr: 'nginx version: nginx/1.23.4\n', exitCode: 2 }
  it('regEx without a group gives the whole match (inspec_exec sample)', () => {
    const r = extractOutputs({ INSPEC_VALUE: { sourceType: 'output', source: 'stdout', extractMethod: 'regEx', expression: '0 control failures', required: true } }, src)
    expect(r).toEqual({ values: { INSPEC_VALUE: '0 control failures' }, sensitive: [], problems: [] })
  })
  it('regEx with a group gives the first group; regex spelling is case-insensitive', () => {
    const r = extractOutputs({ V: { sourceType: 'output', source: 'stderr', extractMethod: 'regex', expression: 'nginx/([0-9.]+)' }, O: { sourceType: 'output', extractMethod: 'REGEX', expression: '(x)?nginx' } }, src)
    expect(r.values).toEqual({ V: '1.23.4', O: '' })
  })
  it('content keeps the trailing newline (nginx samples compare against "false\\n")', () => {
    const r = extractOutputs({ F: { sourceType: 'output', source: 'stdout', extractMethod: 'content', expression: '' } }, { stdout: 'false\n', stderr: '', exitCode: 0 })
    expect(r.values.F).toBe('false\n')
    expect(evaluateConditions([{ inputName: 'F', operator: 'eq', value: 'false\n' }], r.values).run).toBe(true)
  })
  it('exitCode, file and artifact sources', () => {
    const r = extractOutputs({
      E: { sourceType: 'exitCode', extractMethod: 'content' },
      F: { sourceType: 'file', source: '/etc/app.json', extractMethod: 'jsonPath', expression: '$.config.version' },
      A: { sourceType: 'artifact', source: 'config', extractMethod: 'jsonPath', expression: "$['items'][1].name" },
      W: { sourceType: 'artifact', source: 'config', extractMethod: 'jsonPath', expression: '$.items[*].name' },
      MISSING: { sourceType: 'file', source: '/nope', extractMethod: 'content', required: true },
      OPT: { sourceType: 'output', extractMethod: 'regEx', expression: 'zzz' },
    }, { ...src, files: { '/etc/app.json': '{"config":{"version":"1.2.3"}}' }, artifacts: { config: '{"items":[{"name":"a"},{"name":"b"}]}' } })
    expect(r.values).toEqual({ E: '2', F: '1.2.3', A: 'b', W: '["a","b"]' })
    expect(r.problems).toEqual([
      { name: 'MISSING', required: true, message: 'output MISSING: file /nope could not be read' },
      { name: 'OPT', required: false, message: 'output OPT: no match for /zzz/' },
    ])
  })
  it('required rule with no match is a problem; sensitive names are listed', () => {
    const r = extractOutputs({ T: { sourceType: 'output', extractMethod: 'regEx', expression: 'token=(\\w+)', sensitive: true }, X: { sourceType: 'output', extractMethod: 'regEx', expression: 'nope', required: true } }, { stdout: 'token=abc123\n', stderr: '', exitCode: 0 })
    expect(r.values).toEqual({ T: 'abc123' })
    expect(r.sensitive).toEqual(['T'])
    expect(r.problems.map((p) => p.name)).toEqual(['X'])
  })
  it('bad JSON, bad paths and exit codes of killed processes are problems', () => {
    const r = extractOutputs({
      J: { sourceType: 'output', extractMethod: 'jsonPath', expression: '$.a' },
      P: { sourceType: 'output', extractMethod: 'jsonPath', expression: '$..a' },
      E: { sourceType: 'exitCode', extractMethod: 'content' },
    }, { stdout: 'not json', stderr: '', exitCode: null })
    expect(r.values).toEqual({})
    expect(r.problems.map((p) => p.message)).toEqual([
      'output J: source is not valid JSON', 'output P: source is not valid JSON', 'output E: the step has no exit code (killed or never started)',
    ])
  })
})

describe('jsonPath subset', () => {
  const doc = { a: { b: [10, 20, { c: 'x' }] }, 'odd key': true, n: null }
  it.each([
    ['$', [doc]], ['$.a.b[0]', [10]], ['$.a.b[-1].c', ['x']], ["$['odd key']", [true]], ['$["a"]["b"][1]', [20]],
    ['$.a.b[*]', [10, 20, { c: 'x' }]], ['$.n', [null]], ['$.zz', []], ['$.a.b[9]', []],
  ])('%s', (path, matches) => {
    const r = evaluateJsonPath(doc, path)
    expect('matches' in r && r.matches).toEqual(matches)
  })
  it.each(['a.b', '$..a', '$[?(@.a)]', '$.a[', '$.a.(x)'])('rejects %s', (path) => {
    expect('error' in evaluateJsonPath(doc, path)).toBe(true)
  })
})

describe('matchSkillVersion', () => {
  const installed = ['0.1.0', '1.0.0', '1.2.3', '1.9.99', '1.10.0', '2', '20.9.99', '4.2.1', '4.10.0', 'garbage']
  it.each([
    [{ minVersion: '1.0.0', maxVersion: '1.9.99' }, undefined, '1.9.99'],
    [{ minVersion: '1', maxVersion: '2' }, undefined, '2'],
    [{ minVersion: '1.0.0', maxVersion: '20.9.99' }, undefined, '20.9.99'],
    [{ minVersion: '21' }, undefined, undefined],
    [{}, '= 0.1.0', '0.1.0'],
    [{}, '<= 1.9.996', '1.9.99'],
    [{}, '>= 1.0, < 2', '1.10.0'],
    [{}, '4.x', '4.10.0'],
    [{}, '4.*', '4.10.0'],
    [{}, '= 4.2.*', '4.2.1'],
    [{}, '~> 1.2', '1.10.0'],
    [{}, '~> 1.2.0', '1.2.3'],
    [{}, '!= 20.9.99', '4.10.0'],
    [{ maxVersion: '1.9.99' }, '> 1.2.3', '1.9.99'],
    [{}, '> 1.0, bogus stuff', undefined],
    [{}, '>= 4.x', undefined],
  ])('%j %s -> %s', (skill, constraint, expected) => {
    expect(matchSkillVersion(installed, skill, constraint)).toBe(expected)
  })
  it('compares versions numerically with missing parts as zero', () => {
    expect(compareVersions('1', '1.0.0')).toBe(0)
    expect(compareVersions('1.10', '1.9.99')).toBe(1)
    expect(compareVersions('1.2.3-rc1', '1.2.3')).toBe(-1)
    expect(compareVersions('x', '1')).toBeUndefined()
  })
})

describe('planStep and completeStep', () => {
  const nginxStep2 = {
    command: { linux: ['yum install nginx -y'] },
    expectedInputs: { NGINX_FOUND: { type: 'string', sensitive: false, required: true, default: '' } },
    conditions: [{ inputName: 'NGINX_FOUND', operator: 'eq', value: 'false\n' }],
  }
  it('nginx_install sample: runs when not found, skips when found', () => {
    expect(planStep(nginxStep2, { NGINX_FOUND: 'false\n' }).action).toBe('run')
    const skip = planStep(nginxStep2, { NGINX_FOUND: 'true\n' })
    expect(skip).toEqual({ action: 'skip', explanation: 'conditions not met: NGINX_FOUND ("true\\n") eq "false\\n": false => skip' })
    // default "" fills in when the producing step was skipped: the condition is then false
    expect(planStep(nginxStep2, {}).action).toBe('skip')
  })
  it('windows_conditional_actions sample: substitutes the input into the command', () => {
    const step = {
      command: { windows: ['echo {{.CAN_PERFORM_TASK}} > C:\\Users\\Administrator\\task.txt'] },
      expectedInputs: { CAN_PERFORM_TASK: { type: 'string', required: true, default: 'true' } },
      conditions: [{ inputName: 'CAN_PERFORM_TASK', operator: 'eq', value: 'value2' }],
    }
    const p = planStep(step, { CAN_PERFORM_TASK: 'value2' })
    expect(p).toMatchObject({ action: 'run', command: { windows: ['echo value2 > C:\\Users\\Administrator\\task.txt'] } })
  })
  it('fails on a required input or an undeclared reference', () => {
    expect(planStep({ command: {}, expectedInputs: { A: { required: true } } }, {})).toMatchObject({ action: 'fail' })
    const p = planStep({ command: { linux: ['echo {{.SECRET}}'] } }, { SECRET: 'leak' })
    expect(p).toMatchObject({ action: 'fail', reason: expect.stringContaining('{{.SECRET}}') })
  })
  it('collects sensitive input values as secrets and completeStep redacts', () => {
    const p = planStep({ command: { linux: ['login {{.TOKEN}}'] }, expectedInputs: { TOKEN: { sensitive: true, required: true } } }, { TOKEN: 'hunter2' }, ['older-secret'])
    expect(p.action).toBe('run')
    if (p.action !== 'run') return
    expect(p.secrets.sort()).toEqual(['hunter2', 'older-secret'])
    const done = completeStep(
      { KEY: { sourceType: 'output', extractMethod: 'regEx', expression: 'key=(\\S+)', sensitive: true }, NEED: { sourceType: 'output', extractMethod: 'regEx', expression: 'absent', required: true } },
      { status: 'success', exitCode: 0, stdout: 'using hunter2\nkey=K-123\n', stderr: 'older-secret\n' },
      p.secrets,
    )
    expect(done.status).toBe('failure')
    expect(done.reason).toBe('output NEED: no match for /absent/')
    expect(done.stdout).toBe(`using ${REDACTED}\nkey=${REDACTED}\n`)
    expect(done.stderr).toBe(`${REDACTED}\n`)
    expect(done.outputs).toEqual({ KEY: 'K-123' })
    expect(done.reportedOutputs).toEqual({ KEY: REDACTED })
    expect(done.secrets).toContain('K-123')
  })
  it('completeStep keeps the interpreter failure reason', () => {
    const done = completeStep({ X: { sourceType: 'output', extractMethod: 'regEx', expression: 'x', required: true } }, { status: 'failure', exitCode: 1, stdout: '', stderr: '', reason: 'exit code 1 from command 1 of 1' })
    expect(done.reason).toBe('exit code 1 from command 1 of 1')
  })
})

describe('secrets', () => {
  it('redacts every occurrence, longest first, trimmed and JSON-escaped forms', () => {
    expect(redact('a s3cr3t b s3cr3t', ['s3cr3t'])).toBe(`a ${REDACTED} b ${REDACTED}`)
    expect(redact('pass=abc and abcdef', ['abc', 'abcdef'])).toBe(`pass=${REDACTED} and ${REDACTED}`)
    expect(redact('token is val!', ['val!\n'])).toBe(`token is ${REDACTED}`)
    expect(redact('{"v":"a\\"b"}', ['a"b'])).toBe(`{"v":"${REDACTED}"}`)
    expect(redact('a.b*c (x)', ['.b*c (x'])).toBe(`a${REDACTED})`)
    expect(redact('nothing', ['', '  '])).toBe('nothing')
  })
  it('redacts deep values and outputs', () => {
    expect(redactDeep({ a: ['pw'], b: { pw: 1 } }, ['pw'])).toEqual({ a: [REDACTED], b: { [REDACTED]: 1 } })
    expect(redactOutputs({ A: 'has pw', B: 'x' }, ['B'], ['pw'])).toEqual({ A: `has ${REDACTED}`, B: REDACTED })
  })
})

describe('allowlist', () => {
  const shell = (...lines: string[]) => ({ interpreter: 'chef-platform/shell-interpreter', command: { linux: lines }, os: 'linux' })
  it('default allows the demo job and nothing dangerous', () => {
    expect(checkAllowed(DEFAULT_ALLOWLIST, shell('hostname', 'uname -sr'))).toEqual({ ok: true })
    expect(checkAllowed(DEFAULT_ALLOWLIST, shell('df -h /tmp | tail -1'))).toEqual({ ok: true })
    expect(checkAllowed(DEFAULT_ALLOWLIST, shell('echo hello-world'))).toEqual({ ok: true })
    expect(checkAllowed(DEFAULT_ALLOWLIST, shell('hostname', 'rm -rf /')).ok).toBe(false)
    const inj = checkAllowed(DEFAULT_ALLOWLIST, shell('echo $(rm -rf ~)'))
    expect(inj).toMatchObject({ ok: false, reason: expect.stringContaining('metacharacters') })
    expect(checkAllowed(DEFAULT_ALLOWLIST, shell('hostname; reboot')).ok).toBe(false)
    expect(checkAllowed(DEFAULT_ALLOWLIST, { interpreter: 'chef-platform/restart-interpreter', command: { exec: 'machine_reboot' }, os: 'linux' })).toMatchObject({ ok: false, reason: expect.stringContaining('not allowed on this node') })
    expect(checkAllowed(DEFAULT_ALLOWLIST, { interpreter: 'chorus/http-check', command: { url: 'http://127.0.0.1:8080/health' }, os: 'linux' }).ok).toBe(true)
    expect(checkAllowed(DEFAULT_ALLOWLIST, { interpreter: 'chorus/http-check', command: { method: 'DELETE', url: 'http://x/' }, os: 'linux' }).ok).toBe(false)
  })
  it('explicit rules per interpreter kind', () => {
    const cfg = parseAllowlist({ interpreters: [
      { name: 'chef-platform/inspec-interpreter', commands: ['scan'] },
      { name: 'chorus/exec-interpreter', commands: ['/systemctl (status|is-active) [a-z-]+/'] },
      { name: 'acme/x', commands: ['{"a":1,"b":[2]}'] },
    ] })
    if ('errors' in cfg) throw new Error(cfg.errors.join())
    expect(checkAllowed(cfg, { interpreter: 'chef-platform/inspec-interpreter', command: { exec: 'scan', args: { path: 'p' } }, os: 'linux' }).ok).toBe(true)
    expect(checkAllowed(cfg, { interpreter: 'chorus/exec-interpreter', command: { argv: ['systemctl', 'status', 'nginx'] }, os: 'linux' }).ok).toBe(true)
    expect(checkAllowed(cfg, { interpreter: 'chorus/exec-interpreter', command: { argv: ['systemctl', 'stop', 'nginx'] }, os: 'linux' }).ok).toBe(false)
    expect(checkAllowed(cfg, { interpreter: 'acme/x', command: { b: [2], a: 1 }, os: 'linux' }).ok).toBe(true)
    expect(checkAllowed(cfg, shell('hostname')).ok).toBe(false)
    expect(checkAllowed(ALLOW_EVERYTHING, shell('rm -rf /tmp/x; reboot')).ok).toBe(true)
  })
  it('rejects malformed configs', () => {
    expect(parseAllowlist({ interpreters: [{ name: 'x', commands: ['/(/'] }] })).toMatchObject({ errors: [expect.stringContaining('invalid regex')] })
    expect(parseAllowlist({})).toMatchObject({ errors: [expect.any(String)] })
  })
})

describe('backoffDelayMs (protocol/rollout.ts)', () => {
  // r = attempt - 1 is the retry number; d = delaySeconds.
  it.each([
    ['none', 5, [], 1, 0], ['none', 5, [], 2, 5000], ['none', 5, [1, 3, 5], 4, 5000],
    ['linear', 1, [], 2, 1000], ['linear', 1, [], 4, 3000],
    ['exponential', 2, [], 2, 2000], ['exponential', 2, [], 3, 4000], ['exponential', 2, [], 5, 16000],
    ['polynomial', 1, [], 3, 4000], ['polynomial', 1, [3], 3, 8000], ['polynomial', 1, ['x'], 4, 9000],
    ['exponential', 3600, [], 10, MAX_BACKOFF_MS], ['linear', 0, [], 5, 0],
  ])('%s d=%s args=%j attempt %s -> %s ms', (type, delaySeconds, args, attempt, ms) => {
    expect(backoffDelayMs({ type, delaySeconds, arguments: args }, attempt)).toBe(ms)
  })
  it('reported disagreement: a NaN polynomial exponent yields NaN (not clamped)', () => {
    // Documented as a finding for the lead; rollout.ts is not ours to edit.
    expect(backoffDelayMs({ type: 'polynomial', delaySeconds: 1, arguments: [Number.NaN] }, 3)).toBeNaN()
  })
})
