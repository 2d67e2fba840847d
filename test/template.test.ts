import { describe, it, expect } from 'vitest'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parse as parseYamlText } from 'yaml'
import { stringify as stringifyToml } from 'smol-toml'
import {
  formatFromFileName,
  formatProblems,
  parseTemplateObject,
  parseTemplateText,
  type Problem,
} from '../protocol/parse.js'
import { validateFiles } from '../runtime/files.js'
import { MAX_STEPS, MAX_TEMPLATE_BYTES, type JobTemplate } from '../protocol/template.js'

// /work/main/test/ -> /work/shared/courier/samples/
const SAMPLES = fileURLToPath(new URL('../../shared/courier/samples/', import.meta.url))

function list(dir: string, pattern: RegExp): string[] {
  return readdirSync(SAMPLES + dir)
    .filter((f) => pattern.test(f))
    .sort()
    .map((f) => (dir === '' ? f : `${dir}/${f}`))
}

function read(rel: string): string {
  return readFileSync(SAMPLES + rel, 'utf8')
}

function parseSample(rel: string) {
  return parseTemplateText(read(rel), formatFromFileName(rel))
}

function problemsOf(result: ReturnType<typeof parseTemplateText>): Problem[] {
  return result.ok ? [] : result.problems
}

function templateOf(result: ReturnType<typeof parseTemplateText>): JobTemplate {
  if (!result.ok) throw new Error(`expected a valid template, got:\n${formatProblems('-', result.problems).join('\n')}`)
  return result.template
}

const PLACEHOLDER = /^samples_0[01]_/
const TOP_LEVEL = list('', /^samples_.*\.json$/)
const YAML_TWINS = list('yaml', /\.yaml$/).filter((f) => !PLACEHOLDER.test(f.slice('yaml/'.length)))
const YAML_PLACEHOLDERS = list('yaml', /\.yaml$/).filter((f) => PLACEHOLDER.test(f.slice('yaml/'.length)))
const OPENAPI = list('cli_openapi_examples', /^add-job_.*\.json$/)
const COMMUNITY = list('community', /\.json$/)
const PLACEHOLDER_JSON = list('placeholder_templates', /\.json$/)
const ALL_REAL = [...TOP_LEVEL, ...YAML_TWINS, ...OPENAPI, ...COMMUNITY]

/**
 * Samples with known defects (checked by reading them) and what must be reported. Every other
 * sample in the listing must be accepted.
 */
const DEFECTS: Record<string, (problems: Problem[]) => void> = {
  // Third step: `"outputFieldRules": {"required": false}`, a scalar where a rule belongs.
  'samples_job_reboot.json': (problems) => {
    const p = problems.find((x) => x.path === 'actions.steps[2].outputFieldRules.required')
    expect(p?.message).toBe('expected an output rule object {sourceType, source, extractMethod, expression} keyed by output name, got false')
  },
  // The YAML twin does NOT carry the outputFieldRules defect; instead its steps 0 and 2 lack
  // interpreter.skill.maxVersion, which is mandatory since Courier 1.2 (FORMAT.md §10.12).
  'yaml/samples_job_reboot.yaml': (problems) => {
    expect(problems.map((p) => p.path)).toEqual([
      'actions.steps[0].interpreter.skill.maxVersion',
      'actions.steps[2].interpreter.skill.maxVersion',
    ])
    expect(problems[0]?.message).toMatch(/^missing required field; expected a version string/)
  },
  // Second step repeats inputs, expectedInputs, outputFieldRules and conditions. (The YAML
  // twin has no duplicates: it was written from the last-wins value, see below.)
  'samples_ssl_cert_rotation.json': (problems) => {
    expect(problems.map((p) => p.path)).toEqual([
      'actions.steps[1].inputs',
      'actions.steps[1].expectedInputs',
      'actions.steps[1].outputFieldRules',
      'actions.steps[1].conditions',
    ])
    expect(problems[3]?.message).toBe('duplicate key "conditions" at line 117:9 (first at line 90:9); expected each key once in an object')
  },
}

describe('Courier samples', () => {
  it('finds the sample files (an empty or moved directory must fail)', () => {
    expect(ALL_REAL.length).toBeGreaterThan(20)
    expect(TOP_LEVEL.length).toBeGreaterThan(20)
    expect(YAML_TWINS.length).toBeGreaterThan(20)
    expect(OPENAPI.length).toBeGreaterThanOrEqual(2)
    expect(COMMUNITY.length).toBeGreaterThanOrEqual(2)
    expect(PLACEHOLDER_JSON.length).toBeGreaterThanOrEqual(2)
    expect(YAML_PLACEHOLDERS.length).toBeGreaterThanOrEqual(2)
    for (const known of Object.keys(DEFECTS)) expect(ALL_REAL).toContain(known)
  })

  it.each(ALL_REAL)('%s', (rel) => {
    const result = parseSample(rel)
    const defect = DEFECTS[rel]
    if (defect === undefined) {
      templateOf(result)
    } else {
      expect(result.ok).toBe(false)
      defect(problemsOf(result))
    }
  })

  it('the YAML ssl_cert_rotation twin is accepted but has lost the condition of step 2', () => {
    const t = templateOf(parseSample('yaml/samples_ssl_cert_rotation.yaml'))
    expect(t.actions.steps[1]?.conditions).toEqual([])
    expect(t.actions.steps[1]?.expectedInputs).toEqual({})
  })

  it('the YAML job_reboot twin is accepted once maxVersion is added', () => {
    const value = parseYamlText(read('yaml/samples_job_reboot.yaml')) as { actions: { steps: { interpreter: { skill: Record<string, string> } }[] } }
    for (const step of value.actions.steps) step.interpreter.skill.maxVersion ??= '1.9.99'
    templateOf(parseTemplateObject(value))
  })

  it('YAML twins that match their JSON sample normalise to the same template', () => {
    const json = templateOf(parseSample('samples_job_windows_conditional_actions.json'))
    const yaml = templateOf(parseSample('yaml/samples_job_windows_conditional_actions.yaml'))
    expect(yaml).toEqual(json)
  })
})

describe('placeholder templates', () => {
  it.each(PLACEHOLDER_JSON)('%s is rejected with JSON syntax errors', (rel) => {
    const problems = problemsOf(parseSample(rel))
    expect(problems.length).toBeGreaterThan(0)
    for (const p of problems) {
      expect(p.path).toBe('$')
      expect(p.message).toMatch(/^line \d+:\d+: JSON syntax error: /)
    }
  })

  it('points at the first placeholder of 00_empty-job-template.json', () => {
    const problems = problemsOf(parseSample('placeholder_templates/samples_00_empty-job-template.json'))
    // line 7: `"executionType": "sequential"|"parallel",`
    expect(problems[0]).toEqual({ path: '$', message: 'line 7:34: JSON syntax error: unexpected character "|"' })
  })

  it.each(YAML_PLACEHOLDERS)('%s is rejected', (rel) => {
    expect(problemsOf(parseSample(rel)).length).toBeGreaterThan(5)
  })

  it('explains the placeholders of yaml/samples_00_empty-job-template.yaml', () => {
    const problems = problemsOf(parseSample('yaml/samples_00_empty-job-template.yaml'))
    const byPath = new Map(problems.map((p) => [p.path, p.message]))
    expect(byPath.get('target.executionType')).toBe('got "sequential|parallel"; expected one of "sequential", "parallel"')
    expect(byPath.get('scheduleRule')).toMatch(/^got "immediate\|RRule"; expected "immediate" or a recurrence rule starting with "RRULE:"/)
    expect(byPath.get('target.groups[0].timeoutSeconds')).toBe('got "<INTEGER>"; expected an integer >= 1')
    expect(byPath.get('actions.steps[0].interpreter.name')).toBe('got ""; expected a non-empty string')
    // The placeholder writes one flat rule instead of a map keyed by output name.
    expect(byPath.get('actions.steps[0].outputFieldRules')).toMatch(/^got rule fields "sourceType", "source", .* directly in the map; expected a map from output names to rules/)
    expect(byPath.get('actions.steps[0].outputFieldRules.sourceType')).toBe('expected an output rule object {sourceType, source, extractMethod, expression} keyed by output name, got "artifact|exitCode|file|output"')
    expect(byPath.get('actions.steps[0].expectedInputs["<INPUT_NAME>"]')).toMatch(/^got "<INPUT_NAME>"; expected a key name/)
    // The legacy key `name` is accepted, so its placeholder value is what gets reported.
    expect(byPath.get('actions.steps[0].failureBehavior.retryBackoffStrategy.name')).toBe('got "none|linear|exponential|polynomial"; expected one of "none", "linear", "exponential", "polynomial"')
    expect(byPath.get('actions.steps[0].limits.cpu')).toBe('got "<FLOAT>"; expected a number')
  })

  it('explains the placeholders of yaml/samples_01_job-with-minimum-details.yaml', () => {
    const problems = problemsOf(parseSample('yaml/samples_01_job-with-minimum-details.yaml'))
    const byPath = new Map(problems.map((p) => [p.path, p.message]))
    expect(byPath.get('target.groups[0].nodeListType')).toBe('got "<ENUM>"; expected one of "nodes", "savedList", "savedFilter", "filter"')
    expect(byPath.get('actions.steps[0].interpreter.skill.maxVersion')).toMatch(/^got "<STRING>"; expected a version string/)
    expect(byPath.get('actions.steps[0].retryCount')).toBe('got "<INTEGER>"; expected an integer >= 0')
  })
})

/** A fresh copy of a valid template to break in targeted tests. */
function base(): any {
  return JSON.parse(read('samples_create-job-simple.json'))
}

function problemsFor(value: unknown): Problem[] {
  const result = parseTemplateObject(value)
  expect(result.ok).toBe(false)
  return problemsOf(result)
}

function messageAt(problems: Problem[], path: string): string | undefined {
  return problems.find((p) => p.path === path)?.message
}

describe('targeted negatives', () => {
  it('wrong enum value', () => {
    const t = base()
    t.target.groups[0].batchSize.type = 'percentage'
    expect(problemsFor(t)).toEqual([
      { path: 'target.groups[0].batchSize.type', message: 'got "percentage"; expected one of "number", "percent"' },
    ])
  })

  it('missing name', () => {
    const t = base()
    delete t.name
    expect(problemsFor(t)).toEqual([{ path: 'name', message: 'missing required field; expected a string' }])
  })

  it('percent batch size over 100', () => {
    const t = base()
    t.target.groups[1].batchSize = { type: 'percent', value: 150 }
    expect(problemsFor(t)).toEqual([
      { path: 'target.groups[1].batchSize.value', message: 'got 150; expected at most 100 when type is "percent"' },
    ])
  })

  it('nodeListType "nodes" with no node identifiers', () => {
    const t = base()
    t.target.groups[0].nodeIdentifiers = []
    expect(messageAt(problemsFor(t), 'target.groups[0].nodeIdentifiers')).toBe('got []; expected a non-empty list of node IDs because nodeListType is "nodes"')
    delete t.target.groups[0].nodeIdentifiers // defaults to [], then fails the same way
    expect(messageAt(problemsFor(t), 'target.groups[0].nodeIdentifiers')).toMatch(/^got \[\]; expected a non-empty list/)
  })

  it('unknown step key (typo)', () => {
    const t = base()
    t.actions.steps[0].retryCont = t.actions.steps[0].retryCount
    delete t.actions.steps[0].retryCount
    const problems = problemsFor(t)
    expect(messageAt(problems, 'actions.steps[0].retryCont')).toMatch(/^unknown key "retryCont" \(did you mean "retryCount"\?\); expected only name, description, /)
    expect(messageAt(problems, 'actions.steps[0].retryCount')).toBe('missing required field; expected an integer >= 0')
  })

  it('unknown top-level and nested keys', () => {
    const t = base()
    t.schedule = 'immediate'
    t.target.groups[0].batchSize.size = 2
    const problems = problemsFor(t)
    expect(problems.map((p) => p.path).sort()).toEqual(['schedule', 'target.groups[0].batchSize.size'])
    expect(messageAt(problems, 'schedule')).toMatch(/^unknown key "schedule" \(did you mean "scheduleRule"\?\)/)
  })

  it('selectors must match nodeListType', () => {
    const t = base()
    t.target.groups[0].nodeListType = 'savedList'
    t.target.groups[0].listId = '00000000-0000-0000-0000-000000000000'
    t.target.groups[1].nodeListType = 'savedFilter'
    const problems = problemsFor(t)
    expect(messageAt(problems, 'target.groups[0].listId')).toMatch(/expected the ID of a saved node list because nodeListType is "savedList"/)
    expect(messageAt(problems, 'target.groups[1].filterId')).toMatch(/^missing required field; expected the ID of a saved filter/)

    const f = base()
    f.target.groups[0].nodeListType = 'filter'
    f.target.groups[0].filter = null
    expect(messageAt(problemsFor(f), 'target.groups[0].filter')).toMatch(/^got null; expected a filter object/)
    f.target.groups[0].filter = { constraints: { attributes: [{ name: 'kernel_name', operator: '=', value: ['Linux'], op: 1 }] } }
    expect(messageAt(problemsFor(f), 'target.groups[0].filter.constraints.attributes[0].op')).toMatch(/^unknown key "op"/)
  })

  it('duplicate node identifiers', () => {
    const t = base()
    t.target.groups[1].nodeIdentifiers = ['a', 'b', 'a']
    expect(problemsFor(t)).toEqual([
      { path: 'target.groups[1].nodeIdentifiers[2]', message: 'got duplicate node ID "a" (also at [0]); expected each node once' },
    ])
  })

  it('shell commands need at least one known OS key', () => {
    const t = base()
    t.actions.steps[0].command = {}
    expect(messageAt(problemsFor(t), 'actions.steps[0].command')).toBe('got {}; expected at least one of "linux", "windows", "darwin" with a list of command lines')
    t.actions.steps[0].command = { linux: ['true'], macos: ['true'] }
    expect(messageAt(problemsFor(t), 'actions.steps[0].command.macos')).toMatch(/^unknown key "macos"; expected only linux, windows, darwin$/)
    t.actions.steps[0].command = { linux: 'sleep 10' }
    expect(messageAt(problemsFor(t), 'actions.steps[0].command.linux')).toBe('got "sleep 10"; expected an array of command lines')
  })

  it('exec interpreters need {exec, args}', () => {
    const t = base()
    t.actions.steps[0].interpreter.name = 'chef-platform/restart-interpreter'
    expect(messageAt(problemsFor(t), 'actions.steps[0].command.exec')).toMatch(/^missing required field; expected the name of the interpreter command/)
    t.actions.steps[0].command = { exec: 'machine_reboot', args: { time: 90 } }
    templateOf(parseTemplateObject(t))
  })

  it('scheduleRule must be "immediate" or an RRULE', () => {
    const t = base()
    t.scheduleRule = 'FREQ=DAILY'
    expect(messageAt(problemsFor(t), 'scheduleRule')).toMatch(/^got "FREQ=DAILY"; expected "immediate" or a recurrence rule starting with "RRULE:"/)
    t.scheduleRule = 'RRULE:FREQ=DAILY;INTERVAL=2'
    t.exceptionRules = [{ rrule: 'RRULE:DTSTART=20230620;FREQ=DAILY', duration: 2 }]
    templateOf(parseTemplateObject(t))
  })

  it('maxVersion may not be lower than minVersion', () => {
    const t = base()
    t.actions.steps[0].interpreter.skill = { minVersion: '2.0.0', maxVersion: '1.9' }
    expect(messageAt(problemsFor(t), 'actions.steps[0].interpreter.skill.maxVersion')).toMatch(/lower than minVersion "2.0.0"/)
  })

  it('conflicting backoff type and legacy name', () => {
    const t = base()
    t.actions.steps[0].failureBehavior.retryBackoffStrategy.name = 'none'
    expect(messageAt(problemsFor(t), 'actions.steps[0].failureBehavior.retryBackoffStrategy.name')).toMatch(/conflicts with type "linear"/)
  })

  it('bounds: too many steps, oversized values and text', () => {
    const t = base()
    t.actions.steps = Array.from({ length: MAX_STEPS + 1 }, () => structuredClone(base().actions.steps[0]))
    expect(messageAt(problemsFor(t), 'actions.steps')).toBe(`got ${MAX_STEPS + 1} items; expected at most ${MAX_STEPS} items`)

    const long = base()
    long.name = 'x'.repeat(257)
    expect(messageAt(problemsFor(long), 'name')).toBe('got a string of 257 characters; expected at most 256 characters')
    long.name = 'ok'
    long.actions.steps[0].command.linux = ['y'.repeat(70 * 1024)]
    expect(messageAt(problemsFor(long), 'actions.steps[0].command.linux[0]')).toMatch(/expected at most 65536 bytes$/)

    const big = parseTemplateText(' '.repeat(MAX_TEMPLATE_BYTES + 1), 'json')
    expect(problemsOf(big)).toEqual([{ path: '$', message: `template is ${MAX_TEMPLATE_BYTES + 1} bytes; expected at most ${MAX_TEMPLATE_BYTES} bytes (1 MiB)` }])
  })

  it('a non-object document', () => {
    expect(problemsFor(null)).toEqual([{ path: '$', message: 'got null; expected a job template object {name, description, scheduleRule, exceptionRules, target, actions, chorus}' }])
    expect(problemsOf(parseTemplateText('[]', 'json'))[0]?.path).toBe('$')
    expect(problemsOf(parseTemplateText('', 'yaml'))[0]?.path).toBe('$')
  })
})

describe('normalisation', () => {
  it('retryBackoffStrategy.name becomes type', () => {
    const t = base()
    delete t.actions.steps[0].failureBehavior.retryBackoffStrategy.type
    t.actions.steps[0].failureBehavior.retryBackoffStrategy.name = 'exponential'
    delete t.actions.steps[0].failureBehavior.retryBackoffStrategy.arguments
    const out = templateOf(parseTemplateObject(t))
    expect(out.actions.steps[0]?.failureBehavior.retryBackoffStrategy).toEqual({ type: 'exponential', delaySeconds: 1, arguments: [] })
  })

  it('extractMethod is case-insensitive and spelt regEx', () => {
    const t = base()
    t.actions.steps[0].outputFieldRules = {
      A: { sourceType: 'output', source: 'stdout', extractMethod: 'regex', expression: 'x' },
      B: { sourceType: 'output', source: 'stdout', extractMethod: 'REGEX', expression: 'y' },
      C: { sourceType: 'artifact', source: 'config', extractMethod: 'JSONPATH', expression: '$.a' },
    }
    const rules = templateOf(parseTemplateObject(t)).actions.steps[0]?.outputFieldRules
    expect(rules?.A?.extractMethod).toBe('regEx')
    expect(rules?.B?.extractMethod).toBe('regEx')
    expect(rules?.C?.extractMethod).toBe('jsonPath')

    t.actions.steps[0].outputFieldRules.A.extractMethod = 'xpath'
    expect(messageAt(problemsFor(t), 'actions.steps[0].outputFieldRules.A.extractMethod')).toBe('got "xpath"; expected one of "regEx", "jsonPath", "content" (case-insensitive)')
    t.actions.steps[0].outputFieldRules.A = { sourceType: 'output', extractMethod: 'regEx' }
    expect(messageAt(problemsFor(t), 'actions.steps[0].outputFieldRules.A.expression')).toMatch(/expected a non-empty expression because extractMethod is "regEx"/)
  })

  it('fills defaults and tolerates server fill-ins', () => {
    const t = base()
    delete t.description
    delete t.exceptionRules
    const step = t.actions.steps[0]
    for (const k of ['inputs', 'expectedInputs', 'outputFieldRules', 'conditions', 'limits']) delete step[k]
    const out = templateOf(parseTemplateObject(t))
    expect(out.description).toBe('')
    expect(out.exceptionRules).toEqual([])
    expect(out.target.groups[0]).toMatchObject({ earlyTermination: false, filter: null })
    expect(out.actions.steps[0]).toMatchObject({
      description: '',
      inputs: {},
      expectedInputs: {},
      outputFieldRules: {},
      conditions: [],
      limits: { cores: 0, cpu: 0, timeoutSeconds: 0 },
    })

    const c = base()
    c.actions.steps[0].conditions = [{ inputName: 'X', operator: 'eq', value: 'y' }]
    c.actions.steps[0].limits = { timeoutSeconds: 30 }
    expect(templateOf(parseTemplateObject(c)).actions.steps[0]).toMatchObject({
      conditions: [{ inputName: 'X', operator: 'eq', value: 'y', negate: false }],
      limits: { cores: 0, cpu: 0, timeoutSeconds: 30 },
    })
  })

  it('"node" (seen in a server export) becomes "nodes"; inputs keep their scalar types', () => {
    const community = templateOf(parseSample('community/snohio-playbooks_install-ansible.json'))
    expect(community.target.groups[0]?.nodeListType).toBe('nodes')
    const t = base()
    t.actions.steps[0].inputs = { dir: '/tmp', port: 8080, verbose: true }
    expect(templateOf(parseTemplateObject(t)).actions.steps[0]?.inputs).toEqual({ dir: '/tmp', port: 8080, verbose: true })
    t.actions.steps[0].inputs = { dir: ['/tmp'] }
    expect(messageAt(problemsFor(t), 'actions.steps[0].inputs.dir')).toBe('got an array of 1 item; expected a string, number or boolean')
  })
})

describe('TOML', () => {
  const convertible = TOP_LEVEL.filter((f) => DEFECTS[f] === undefined).concat(OPENAPI, COMMUNITY)

  it.each(convertible)('%s converted to TOML gives the same template', (rel) => {
    const fromJson = templateOf(parseSample(rel))
    const toml = stringifyToml(JSON.parse(read(rel)))
    expect(templateOf(parseTemplateText(toml, 'toml'))).toEqual(fromJson)
  })

  it('rejects a duplicate key with its path', () => {
    const toml = stringifyToml(base())
    expect(toml).toContain('timeoutSeconds = 120\n')
    const dupGroupKey = toml.replace('timeoutSeconds = 120\n', 'timeoutSeconds = 120\ntimeoutSeconds = 60\n')
    const problems = problemsOf(parseTemplateText(dupGroupKey, 'toml'))
    expect(problems).toHaveLength(1)
    expect(problems[0]?.path).toBe('target.groups[1].timeoutSeconds')
    expect(problems[0]?.message).toMatch(/^duplicate key "timeoutSeconds" at line \d+:1 /)

    const dupTop = toml.replace('scheduleRule = "immediate"\n', 'scheduleRule = "immediate"\nname = "again"\n')
    expect(problemsOf(parseTemplateText(dupTop, 'toml'))[0]?.path).toBe('name')

    const dupTable = `${toml}\n[actions.steps.command]\nlinux = ["true"]\n`
    expect(problemsOf(parseTemplateText(dupTable, 'toml'))[0]?.path).toBe('actions.steps[0].command')

    const dupInline = toml.replace('[actions.steps.command]\n', '[actions.steps.command]\nx = { a = 1, a = 2 }\n')
    expect(problemsOf(parseTemplateText(dupInline, 'toml'))[0]?.path).toBe('actions.steps[0].command.x.a')
  })

  it('reports syntax errors with line and column', () => {
    expect(problemsOf(parseTemplateText('name = "x"\nscheduleRule = \n', 'toml'))).toEqual([
      { path: '$', message: expect.stringMatching(/^line 2:\d+: TOML syntax error: /) as unknown as string },
    ])
  })
})

describe('duplicate keys and syntax errors in JSON and YAML', () => {
  it('JSON: duplicate key path, including the root', () => {
    const problems = problemsOf(parseTemplateText('{"name": "a",\n "name": "b"}', 'json'))
    expect(problems).toEqual([{ path: 'name', message: 'duplicate key "name" at line 2:2 (first at line 1:2); expected each key once in an object' }])
  })

  it('a "__proto__" key is refused, not silently dropped', () => {
    const text = JSON.stringify(base()).replace('"inputs":{}', '"inputs":{"__proto__":{"x":"1"}}')
    expect(problemsOf(parseTemplateText(text, 'json'))).toEqual([
      { path: 'actions.steps[0].inputs.__proto__', message: 'got the reserved key "__proto__"; expected ordinary keys' },
    ])
    expect(problemsOf(parseTemplateObject(JSON.parse(text)))[0]?.path).toBe('actions.steps[0].inputs.__proto__')
  })

  it('JSON: comments and trailing commas are syntax errors', () => {
    expect(problemsOf(parseTemplateText('{"name": "a", // c\n}', 'json'))[0]?.message).toBe('line 1:15: JSON syntax error: comments are not allowed in JSON')
    expect(problemsOf(parseTemplateText('{"name": "a",\n}', 'json'))[0]?.message).toMatch(/^line 2:1: JSON syntax error: /)
  })

  it('YAML: duplicate key path', () => {
    const text = read('yaml/samples_create-job-simple.yaml')
    expect(text).toContain('      retryCount: 2\n')
    const dup = text.replace('      retryCount: 2\n', '      retryCount: 2\n      retryCount: 3\n')
    const problems = problemsOf(parseTemplateText(dup, 'yaml'))
    expect(problems).toHaveLength(1)
    expect(problems[0]?.path).toBe('actions.steps[0].retryCount')
    expect(problems[0]?.message).toMatch(/^duplicate key "retryCount" at line 56:7 \(first at line 55:7\)/)
  })

  it('deeply nested documents are refused before parsing', () => {
    expect(problemsOf(parseTemplateText('['.repeat(5000) + ']'.repeat(5000), 'json'))).toEqual([
      { path: '$', message: 'line 1:65: nesting is deeper than 64 levels; expected a shallower document' },
    ])
    expect(problemsOf(parseTemplateText('{a: '.repeat(5000), 'yaml'))[0]?.message).toMatch(/^line 1:\d+: nesting is deeper than 64 levels/)
    expect(problemsOf(parseTemplateText('- '.repeat(5000) + 'x', 'yaml'))[0]?.message).toMatch(/^line 1:257: indentation or nesting is deeper than 256 levels/)
    expect(problemsOf(parseTemplateText('a = ' + '['.repeat(5000), 'toml'))[0]?.message).toMatch(/^line 1:\d+: TOML syntax error: /)
  })

  it('YAML: syntax errors carry line:column', () => {
    const problems = problemsOf(parseTemplateText('name: [unclosed\nscheduleRule: immediate\n', 'yaml'))
    expect(problems[0]?.path).toBe('$')
    expect(problems[0]?.message).toMatch(/^line \d+:\d+: YAML syntax error: /)
  })
})

describe('files and formatting', () => {
  it('formatFromFileName', () => {
    expect(formatFromFileName('a.json')).toBe('json')
    expect(formatFromFileName('a.YAML')).toBe('yaml')
    expect(formatFromFileName('a.yml')).toBe('yaml')
    expect(formatFromFileName('a.toml')).toBe('toml')
    expect(formatFromFileName('a.txt')).toBe('json')
  })

  it('validateFiles and formatProblems', async () => {
    const files = ['samples_create-job-simple.json', 'samples_job_reboot.json', 'yaml/samples_create-job-simple.yaml', 'does-not-exist.json'].map((f) => SAMPLES + f)
    const results = await validateFiles(files)
    // job_reboot: the scalar rule, plus a hint on the map that it holds rule fields directly.
    expect(results.map((r) => r.problems.length)).toEqual([0, 2, 0, 1])
    expect(results[1]?.problems[1]).toEqual({ path: 'actions.steps[2].outputFieldRules', message: expect.stringMatching(/^got rule field "required" directly in the map; expected a map from output names to rules/) as unknown as string })
    expect(results[3]?.problems[0]?.message).toMatch(/^cannot read file: /)
    const lines = results.flatMap((r) => formatProblems(r.file, r.problems))
    expect(lines[0]).toBe(`${files[1]}: actions.steps[2].outputFieldRules.required: expected an output rule object {sourceType, source, extractMethod, expression} keyed by output name, got false`)
  })
})
