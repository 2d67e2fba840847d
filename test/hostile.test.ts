// Regression tests for the "Hostile input" findings: every one answers with the right verdict,
// path and message, within a bound that is counted, not timed (RRULE expansion steps), or by
// construction (RE2 and the wildcard matcher are linear): where "it returns at all" is the only
// honest check, the test's own timeout (vitest's testTimeout) is what fails a hang.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { enrolHello } from './helpers/members.js'
import { describe, expect, it } from 'vitest'
import { MAX_MESSAGE_CHARS, parseTemplateText } from '../protocol/parse.js'
import { deriveSchedule } from '../protocol/jobschedule.js'
import { JobTemplateSchema, type JobTemplate } from '../protocol/template.js'
import { coordinatorStep, emptyCoordinatorState, DEFAULT_COORDINATOR_TIMING, type CoordinatorConfig } from '../coordinator/core.js'
import { formatPlan, planJob } from '../coordinator/plan.js'
import { syntheticRegistry } from '../sim/fuzz.js'
import { generateIdentity } from '../protocol/keys.js'
import { PROTOCOL_VERSION, seal } from '../protocol/wire.js'
import { compilePattern, matchesWildcard, patternProblem } from '../protocol/pattern.js'
import { compareVersions, evaluateConditions, extractOutputs, matchSkillVersion } from '../agent/steps.js'
import { compileAttribute, matchQuery, parseQuery } from '../coordinator/targeting.js'
import { compileExceptions, exclusionFor, MAX_RRULE_STEPS, MAX_TEMPLATE_RRULE_STEPS, newBudget, nextOccurrences, parseScheduleRule, planOccurrences, type ExpansionBudget, type Schedule } from '../protocol/schedule.js'
import { RE2JS } from 're2js'

/** Runs fn with a fresh budget of `steps` and returns its result with the steps it spent. */
function counted<T>(fn: (budget: ExpansionBudget) => T, steps = MAX_TEMPLATE_RRULE_STEPS): { value: T; spent: number } {
  const budget = newBudget(steps)
  const value = fn(budget)
  return { value, spent: steps - budget.left }
}

const SAMPLES = fileURLToPath(new URL('../../shared/courier/samples/', import.meta.url))
const BOMB = '(a+)+$'
const VICTIM = `${'a'.repeat(5000)}b`

// A backtracking engine takes exponential time on BOMB over VICTIM (far beyond the test's own
// timeout); RE2 is linear in the input. The pattern compiles to RE2, and each use answers.
describe('patterns run on RE2 (linear time)', () => {
  it('a catastrophic pattern compiles to RE2', () => {
    const c = compilePattern(BOMB)
    expect(c.ok && c.re instanceof RE2JS).toBe(true)
  })
  it('a catastrophic pattern in a matches condition answers', () => {
    expect(evaluateConditions([{ inputName: 'X', operator: 'matches', value: BOMB }], { X: VICTIM }).run).toBe(false)
  })
  it('a catastrophic pattern in a regEx output rule answers', () => {
    const r = extractOutputs({ OUT: { sourceType: 'output', extractMethod: 'regEx', expression: BOMB } }, { stdout: VICTIM, stderr: '', exitCode: 0 })
    expect(r.values.OUT).toBeUndefined()
  })
  it('a catastrophic pattern in a filter MATCHES answers', () => {
    const f = compileAttribute({ name: 'os', operator: 'MATCHES', value: [BOMB] })
    if ('error' in f) throw new Error(f.error)
    expect(f({ os: VICTIM })).toBe(false)
  })
  it('capture groups: the first group, else the whole match; a group that did not take part is ""', () => {
    const rule = (expression: string) => ({ OUT: { sourceType: 'output', extractMethod: 'regEx', expression } })
    const src = { stdout: 'nginx/1.25.3 ok', stderr: '', exitCode: 0 }
    expect(extractOutputs(rule('nginx/([0-9.]+)'), src).values.OUT).toBe('1.25.3')
    expect(extractOutputs(rule('[0-9]+\\.[0-9]+'), src).values.OUT).toBe('1.25')
    expect(extractOutputs(rule('(x)?ok'), src).values.OUT).toBe('')
  })
  it('backreferences and lookaround are refused with a reason', () => {
    expect(patternProblem('(a)\\1')).toMatch(/backreferences and lookaround are not supported/)
    expect(patternProblem('foo(?=bar)')).toMatch(/not supported/)
    expect(patternProblem('^([0-9]+')).toMatch(/missing closing \)/)
    expect(patternProblem('^[a-z]+$')).toBeUndefined()
  })
  it('the cache gives the same compiled pattern back', () => {
    const a = compilePattern('x+y')
    const b = compilePattern('x+y')
    expect(a.ok && b.ok && a.re === b.re).toBe(true)
  })
})

describe('wildcards are linear', () => {
  it.each([
    ['web-*', 'web-01', true], ['web-*', 'db-01', false], ['*', '', true], ['?', '', false],
    ['a?c', 'abc', true], ['a*b*c', 'axxbyyc', true], ['a*b*c', 'axxbyy', false], ['*.example.com', 'a.example.com', true],
    ['a.c', 'abc', false], ['(x)', '(x)', true], ['**a', 'ba', true], ['a*', 'a', true],
  ])('%s ~ %s is %s', (p, t, want) => {
    expect(matchesWildcard(p, t)).toBe(want)
  })
  // A backtracking matcher tries C(2000, 40) splits here; the two-pointer one answers at once.
  // That it answers at all is what the test's own timeout checks.
  it('a wildcard-heavy query over a long node id answers', () => {
    const parsed = parseQuery(`node:${'*a'.repeat(40)}*b`)
    if (!parsed.ok) throw new Error(parsed.message)
    const node = { nodeId: 'a'.repeat(2000), facts: {}, skills: {} }
    expect(matchQuery(parsed.query, node)).toBe(false)
  })
})

describe('RRULE expansion is budgeted (counted steps, not time)', () => {
  const T0 = Date.UTC(2026, 0, 1)
  /** Parses `rule` as one rule of a template: the steps it spent come from the template's budget. */
  const verdict = (rule: string) => counted((templateBudget) => parseScheduleRule(rule, { defaultStartMs: T0, templateBudget }))
  /** Steps a query near its answer spends: a few per occurrence returned, not one per occurrence skipped. */
  const NEAR_QUERY_STEPS = 100
  it.each<[string, RegExp, 'exhausted' | 'static' | 'expanded']>([
    ['RRULE:FREQ=MINUTELY;BYDAY=MO;BYHOUR=5;COUNT=1', /more than 100,000 expansion steps/, 'exhausted'],
    ['RRULE:FREQ=MINUTELY;BYDAY=MO;BYHOUR=5', /more than 100,000 expansion steps/, 'exhausted'],
    ['RRULE:DTSTART=20250106;FREQ=DAILY;INTERVAL=7;BYDAY=TU', /lands only on MO, never on BYDAY=TU; the rule would never occur/, 'static'],
    ['RRULE:FREQ=YEARLY;BYMONTHDAY=16;BYYEARDAY=34', /would never occur/, 'static'],
    ['RRULE:FREQ=YEARLY;BYMONTHDAY=16;BYYEARDAY=34;COUNT=2', /would never occur/, 'static'],
    ['RRULE:DTSTART=20250115;FREQ=MONTHLY;INTERVAL=12;BYMONTH=2;BYMONTHDAY=29', /the rule never occurs/, 'expanded'],
    ['RRULE:FREQ=YEARLY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12;BYMINUTE=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30', /candidate times per FREQ=YEARLY period/, 'static'],
  ])('%s is refused within its budget', (rule, message, how) => {
    const r = verdict(rule)
    expect(r.value.ok).toBe(false)
    if (!r.value.ok) expect(r.value.message).toMatch(message)
    // Stopped at exactly its budget; refused before any expansion; or walked to the end of time within it.
    if (how === 'exhausted') expect(r.spent).toBe(MAX_RRULE_STEPS)
    else if (how === 'static') expect(r.spent).toBe(0)
    else {
      expect(r.spent).toBeGreaterThan(0)
      expect(r.spent).toBeLessThan(MAX_RRULE_STEPS)
    }
  })
  it('a COUNT rule without BY* parts is not walked; its occurrences are still right', () => {
    const r = verdict('RRULE:FREQ=SECONDLY;COUNT=100000')
    expect(r.spent).toBe(0) // its last occurrence is computed, not expanded
    if (!r.value.ok) throw new Error(r.value.message)
    const schedule = r.value.schedule
    const late = counted((budget) => nextOccurrences(schedule, T0 + 99_990_000, 20, budget), MAX_RRULE_STEPS)
    expect(late.value.length).toBe(9)
    expect(late.value.at(-1)).toBe(T0 + 99_999_000)
    // Walking from DTSTART would spend a step on each of the 99,990 occurrences before the query.
    expect(late.spent).toBeLessThan(NEAR_QUERY_STEPS)
  })
  it('a COUNT rule with BY* parts ends where its COUNT says, and late queries are cheap', () => {
    const r = verdict('RRULE:DTSTART=20260101T000000Z;FREQ=DAILY;BYHOUR=1,2;COUNT=20000')
    if (!r.value.ok) throw new Error(r.value.message)
    const schedule = r.value.schedule
    expect(r.spent).toBeGreaterThan(20_000) // validation walked the COUNT once, to find the last occurrence
    const t = counted((budget) => nextOccurrences(schedule, Date.UTC(2053, 4, 18), 5, budget), MAX_RRULE_STEPS)
    // 10,000 days of two: the last day is 2026-01-01 + 9,999 days.
    expect(t.value.map((x) => new Date(x).toISOString())).toEqual(['2053-05-18T01:00:00.000Z', '2053-05-18T02:00:00.000Z'])
    // The query starts near its answer, not at DTSTART: it does not walk the COUNT again.
    expect(t.spent).toBeLessThan(NEAR_QUERY_STEPS)
  })
  it('64 exception rules of FREQ=SECONDLY;COUNT=100000 validate without expanding', () => {
    const rules = Array.from({ length: 64 }, () => ({ rrule: 'RRULE:FREQ=SECONDLY;COUNT=100000', duration: 1 }))
    const r = counted((templateBudget) => compileExceptions(rules, { defaultStartMs: T0, templateBudget }))
    expect(r.value.ok).toBe(true)
    expect(r.spent).toBe(0)
  })
  it('the rules of one template share MAX_TEMPLATE_RRULE_STEPS', () => {
    // A rule that is accepted alone, at a cost well under MAX_RRULE_STEPS each time it is validated.
    const rrule = 'RRULE:DTSTART=20260101T000000Z;FREQ=DAILY;BYHOUR=1,2;COUNT=20000'
    const one = verdict(rrule)
    expect(one.value.ok).toBe(true)
    expect(one.spent).toBeLessThan(MAX_RRULE_STEPS)
    const rules = Array.from({ length: 64 }, () => ({ rrule, duration: 1 }))
    const r = counted((templateBudget) => compileExceptions(rules, { defaultStartMs: T0, templateBudget }))
    // As many rules as the template budget pays for pass; the next one is refused for the template.
    expect(r.value).toMatchObject({ ok: false, index: Math.floor(MAX_TEMPLATE_RRULE_STEPS / one.spent), field: 'rrule' })
    if (!r.value.ok) expect(r.value.message).toMatch(/all the rules of a template may take together/)
    expect(r.spent).toBe(MAX_TEMPLATE_RRULE_STEPS)
  })
  it('the budget is deterministic: the same query spends the same steps', () => {
    const p = parseScheduleRule('RRULE:FREQ=HOURLY;BYDAY=MO;BYHOUR=5', { defaultStartMs: T0 })
    if (!p.ok) throw new Error(p.message)
    const a = counted((budget) => nextOccurrences(p.schedule, T0, 50, budget), MAX_RRULE_STEPS)
    const b = counted((budget) => nextOccurrences(p.schedule, T0, 50, budget), MAX_RRULE_STEPS)
    expect(b).toEqual(a)
    expect(a.value.length).toBe(50)
  })
})

describe('validate rejects what would fail at run time, naming the path', () => {
  const base = JSON.parse(readFileSync(`${SAMPLES}samples_infra_client_run.json`, 'utf8')) as Record<string, any>
  /** Problems of the base sample after `mutate`, as "path: message" lines. */
  function problems(mutate: (t: any) => void): string[] {
    const t = structuredClone(base)
    mutate(t)
    // "@BIG@" stands for 2^53 + 1 written as a number (JSON.stringify cannot write it).
    const r = parseTemplateText(JSON.stringify(t).replaceAll('"@BIG@"', '9007199254740993'), 'json')
    return r.ok ? [] : r.problems.map((p) => `${p.path}: ${p.message}`)
  }
  const rule = (r: object) => (t: any) => { t.actions.steps[0].outputFieldRules = { OUT: { sourceType: 'output', source: 'stdout', ...r } } }
  const group = (g: object) => (t: any) => { Object.assign(t.target.groups[0], { nodeListType: 'filter', ...g }) }
  it.each<[string, (t: any) => void, RegExp]>([
    ['an invalid regex in an output rule', rule({ extractMethod: 'regEx', expression: '^([0-9]+' }), /^actions\.steps\[0\]\.outputFieldRules\.OUT\.expression: .*missing closing \)/],
    ['a backreference in an output rule', rule({ extractMethod: 'regEx', expression: '(a)\\1' }), /OUT\.expression: .*backreferences and lookaround are not supported/],
    ['a JSONPath outside the subset', rule({ extractMethod: 'jsonPath', expression: '$..version' }), /OUT\.expression: .*recursive descent/],
    ['a lookahead in a matches condition', (t) => { t.actions.steps[0].conditions = [{ inputName: 'X', operator: 'matches', value: 'a(?=b)' }] }, /^actions\.steps\[0\]\.conditions\[0\]\.value: .*not supported/],
    ['an invalid filter MATCHES', group({ filter: { constraints: { attributes: [{ name: 'os', operator: 'MATCHES', value: ['ok', '(?<!x)y'] }] } } }), /^target\.groups\[0\]\.filter\.constraints\.attributes\[0\]\.value\[1\]: /],
    ['an unknown filter operator', group({ filter: { constraints: { attributes: [{ name: 'os', operator: 'LIKE', value: ['x'] }] } } }), /attributes\[0\]\.operator: got "LIKE"/],
    ['a filter query that does not parse', group({ filter: { query: 'role:web AND (' } }), /^target\.groups\[0\]\.filter\.query: /],
    ['an undeclared {{.NAME}} in a command', (t) => { t.actions.steps[0].command.args = { x: 'run {{.NOPE}}' } }, /^actions\.steps\[0\]\.command\.args\.x: references \{\{\.NOPE\}\}, which is not an expected input or a static input/],
    ['an input referencing another static input', (t) => { t.actions.steps[0].inputs = { A: 'a', B: '{{.A}}' } }, /^actions\.steps\[0\]\.inputs\.B: references \{\{\.A\}\}, which is not an expected input/],
    ['a rule that never occurs', (t) => { t.scheduleRule = 'RRULE:FREQ=YEARLY;BYMONTHDAY=16;BYYEARDAY=34' }, /^scheduleRule: .*never occur/],
    ['a rule that never occurs, with COUNT', (t) => { t.scheduleRule = 'RRULE:FREQ=YEARLY;BYMONTHDAY=16;BYYEARDAY=34;COUNT=5' }, /^scheduleRule: .*never occur/],
    ['a rule that exhausts the budget', (t) => { t.scheduleRule = 'RRULE:FREQ=MINUTELY;BYDAY=MO;BYHOUR=5;COUNT=1' }, /^scheduleRule: .*expansion steps/],
    ['an exception rule that never occurs', (t) => { t.exceptionRules = [{ rrule: 'RRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30', duration: 5 }] }, /^exceptionRules\[0\]\.rrule: .*never occur/],
    ['an unknown time zone in chorus.timeZone', (t) => { t.chorus = { timeZone: 'Mars/Olympus' } }, /^chorus\.timeZone: got "Mars\/Olympus", an unknown time zone/],
    ['a path as a time zone', (t) => { t.chorus = { timeZone: '../../etc/passwd' } }, /^chorus\.timeZone: .*unknown time zone/],
    ['an unknown time zone in an exception rule', (t) => { t.exceptionRules = [{ rrule: 'RRULE:FREQ=DAILY;TZID=Mars/Olympus', duration: 5 }] }, /^exceptionRules\[0\]\.rrule: .*unknown time zone "Mars\/Olympus"/],
    ['an integer beyond 2^53', (t) => { t.actions.steps[0].retryCount = '@BIG@' }, /^actions\.steps\[0\]\.retryCount: got a number that reads as 9007199254740992, beyond 9007199254740991/],
    ['a free-form number beyond 2^53', (t) => { t.actions.steps[0].command.args = { n: '@BIG@' } }, /^actions\.steps\[0\]\.command\.args\.n: .*beyond 9007199254740991/],
    ['an invalid skill version constraint', group({ filter: { constraints: { skills: [{ name: 'x', version: ['>= 1.0', '~~ 2'] }] } } }), /filter\.constraints\.skills\[0\]\.version\[1\]: got "~~ 2"/],
    ['a fractional integer', (t) => { t.actions.steps[0].retryCount = 1.5 }, /^actions\.steps\[0\]\.retryCount: got 1\.5; expected an integer/],
  ])('%s', (_, mutate, expected) => {
    expect(problems(mutate).join('\n')).toMatch(expected)
  })
  it('numbers beyond 2^53 are found in the text (JSON.parse would round them)', () => {
    const text = JSON.stringify(base).replace(/"retryCount":\s*\d+/, '"retryCount": 9007199254740993')
    const r = parseTemplateText(text, 'json')
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.problems[0]!.path).toBe('actions.steps[0].retryCount')
    const yaml = parseTemplateText(readFileSync(`${SAMPLES}yaml/samples_infra_client_run.yaml`, 'utf8').replace(/retryCount: \d+/, 'retryCount: 1e309'), 'yaml')
    expect(yaml.ok).toBe(false)
    if (!yaml.ok) expect(yaml.problems[0]).toEqual({ path: 'actions.steps[0].retryCount', message: 'got Infinity; expected a finite number' })
  })
})

describe('messages name the right path and fix', () => {
  const base = JSON.parse(readFileSync(`${SAMPLES}samples_infra_client_run.json`, 'utf8')) as Record<string, any>
  const first = (mutate: (t: any) => void) => {
    const t = structuredClone(base)
    mutate(t)
    const r = parseTemplateText(JSON.stringify(t), 'json')
    return r.ok ? undefined : r.problems[0]
  }
  it('a key that differs only in case suggests that key', () => {
    const p = first((t) => { t.actions.steps[0].outputFieldRules = { OUT: { sourceType: 'output', Source: 'stdout', extractMethod: 'content' } } })
    expect(p?.path).toBe('actions.steps[0].outputFieldRules.OUT.Source')
    expect(p?.message).toMatch(/did you mean "source"\?/)
  })
  it('a bad chorus.missed.policy lists the policies, at policy', () => {
    expect(first((t) => { t.chorus = { missed: { policy: 'sometimes' } } })).toEqual({ path: 'chorus.missed.policy', message: 'got "sometimes"; expected one of "skip", "runOnceWithin", "catchUp"' })
  })
  it('a missing field of a known policy is reported at that field', () => {
    expect(first((t) => { t.chorus = { missed: { policy: 'catchUp' } } })?.path).toBe('chorus.missed.max')
  })
  it('a YAML syntax error echoes a bounded snippet', () => {
    const r = parseTemplateText(`name: "x\nfoo: ${'a'.repeat(36_000)}: [`, 'yaml')
    expect(r.ok).toBe(false)
    if (!r.ok) for (const p of r.problems) expect(p.message.length).toBeLessThanOrEqual(MAX_MESSAGE_CHARS)
    if (!r.ok) expect(JSON.stringify(r.problems).length).toBeLessThan(2000)
  })
  it('a schedule problem is reported with the other problems of the template', () => {
    const t = structuredClone(base)
    t.scheduleRule = 'RRULE:FREQ=MINUTELY;BYDAY=MO;BYHOUR=5'
    t.actions.steps[0].retryCount = -1
    const r = parseTemplateText(JSON.stringify(t), 'json')
    expect(r.ok ? [] : r.problems.map((p) => p.path)).toEqual(['actions.steps[0].retryCount', 'scheduleRule'])
  })
  it('a filter with only a query is accepted, as documented', () => {
    expect(first((t) => { Object.assign(t.target.groups[0], { nodeListType: 'filter', filter: { query: 'role:web AND env:prod' } }) })).toBeUndefined()
  })
  it('plan and submit name the exception rule whose time zone is unknown', () => {
    const t = structuredClone(base)
    t.exceptionRules = [{ rrule: 'RRULE:FREQ=DAILY;TZID=Mars/Olympus', duration: 5 }]
    const d = deriveSchedule(t as JobTemplate, Date.UTC(2026, 0, 1), [])
    expect(d.ok).toBe(false)
    if (!d.ok) expect(d.path).toBe('exceptionRules[0].rrule')
  })
})

describe('versions: semver pre-releases, Chef forms kept', () => {
  it.each([
    ['1.0.0-rc.2', '1.0.0-rc.10', -1], ['1.0.0-rc.10', '1.0.0', -1], ['1.0.0-alpha', '1.0.0-alpha.1', -1],
    ['1.0.0-alpha.1', '1.0.0-alpha.beta', -1], ['1.0.0-alpha.beta', '1.0.0-beta', -1], ['1.0.0-beta.2', '1.0.0-beta.11', -1],
    ['1.0.0-beta.11', '1.0.0-rc.1', -1], ['1.0.0+build.5', '1.0.0', 0], ['1.9.996.1', '1.9.996', 1], ['18.2.7.1', '18.2.7.10', -1],
    ['1', '1.0.0', 0], ['1.10', '1.9', 1], ['2.0.0-rc.1', '1.99.99', 1],
  ])('%s vs %s is %i', (a, b, want) => {
    expect(Math.sign(compareVersions(a, b)!)).toBe(want)
    expect(Math.sign(compareVersions(b, a)!)).toBe(-want || 0)
  })
  it.each<[string, string[], string | undefined]>([
    ['< 2.0.0', ['2.0.0-rc.1'], undefined],
    ['< 2.0.0', ['1.5.0', '2.0.0-rc.1'], '1.5.0'],
    ['>= 2.0.0-rc.1', ['2.0.0-rc.1'], '2.0.0-rc.1'],
    ['>= 2.0.0-rc.1', ['2.0.0-rc.2', '2.0.0-rc.10'], '2.0.0-rc.10'],
    ['>= 2.0.0-rc.1', ['2.1.0-rc.1'], undefined],
    ['~> 1.9.996', ['1.9.996.1', '1.9.997', '1.10.0'], '1.9.997'],
    ['~> 1.9.996.1', ['1.9.996.5', '1.9.997'], '1.9.996.5'],
    ['~> 18.2', ['18.2.7.1', '18.9', '19.0'], '18.9'],
    ['<= 1.9.996', ['1.9.996.1', '1.9.995'], '1.9.995'],
    ['4.x', ['4.2.1', '5.0.0', '4.3.0-beta'], '4.2.1'],
    ['= 0.1.0', ['0.1.0'], '0.1.0'],
    ['*', ['3.0.0-rc.1'], undefined],
    ['', ['3.0.0-rc.1'], '3.0.0-rc.1'],
  ])('constraint %j over %j takes %j', (constraint, installed, want) => {
    expect(matchSkillVersion(installed, {}, constraint)).toBe(want)
  })
  it('skill bounds follow the same rule', () => {
    expect(matchSkillVersion(['2.0.0-rc.1'], { minVersion: '1.0.0', maxVersion: '2.0.0' })).toBeUndefined()
    expect(matchSkillVersion(['2.0.0-rc.1'], { minVersion: '2.0.0-rc.1', maxVersion: '2.0.0' })).toBe('2.0.0-rc.1')
    expect(matchSkillVersion(['1.0.0'], { minVersion: '1.0.0', maxVersion: '1.9.996.1' })).toBe('1.0.0')
  })
})

describe('planJob over hostile queries and filters', () => {
  const T = 1_700_000_000_000
  const registry = syntheticRegistry()
  for (const [id, node] of [...registry.nodes]) registry.nodes.set(id, { ...node, facts: { ...node.facts, hostname: 'a'.repeat(250) } })
  const base = JSON.parse(readFileSync(`${SAMPLES}samples_job_direct_query_linux.json`, 'utf8')) as Record<string, any>
  // Every hostname is 'a' x 250: no 'b' for the wildcard query, while '(a+)+$' matches them all.
  it.each<[string, object, boolean]>([
    ['a wildcard-heavy query', { query: `hostname:${'*a'.repeat(40)}*b` }, false],
    ['a catastrophic MATCHES', { constraints: { attributes: [{ name: 'hostname', operator: 'MATCHES', value: ['(a+)+$', '(a|aa)+b'] }] } }, true],
  ])('%s plans', (_, filter, planned) => {
    const t = structuredClone(base)
    Object.assign(t.target.groups[0], { nodeListType: 'filter', filter })
    const parsed = parseTemplateText(JSON.stringify(t), 'json')
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems))
    // Planned, or refused (no node matched) with a path. The filters run on RE2 and the linear
    // wildcard matcher over every node: that planning answers at all is the test's own timeout.
    const r = planJob(registry, parsed.template, T)
    expect(r.ok).toBe(planned)
    if (!r.ok) expect(r.problems[0]!.path).toMatch(/^target/)
  })
})

describe('plan and submit warn about target ids never seen', () => {
  const identity = generateIdentity()
  const cfg: CoordinatorConfig = { identity, ...DEFAULT_COORDINATOR_TIMING }
  const base = JobTemplateSchema.parse(JSON.parse(readFileSync(new URL('../examples/hello-fleet.json', import.meta.url), 'utf8')))
  function stateWith(nodeIds: string[]) {
    const state = emptyCoordinatorState()
    for (const nodeId of nodeIds) enrolHello(state, cfg, generateIdentity(), nodeId, T)
    return state
  }
  const T = 1_700_000_000_000
  const byIds = (ids: string[]) => {
    const t = structuredClone(base)
    Object.assign(t.target.groups[0]!, { nodeListType: 'nodes', nodeIdentifiers: ids, filter: null })
    return t
  }
  it('the plan lists each unknown id with its path', () => {
    const p = planJob(stateWith(['web-01']), byIds(['web-01', 'wbe-02']), T)
    if (!p.ok) throw new Error(JSON.stringify(p.problems))
    expect(p.plan.warnings).toEqual([{ path: 'target.groups[0].nodeIdentifiers[1]', message: expect.stringMatching(/"wbe-02" has never been seen by this coordinator/) }])
    expect(formatPlan(p.plan)).toMatch(/warning: target\.groups\[0\]\.nodeIdentifiers\[1\]/)
  })
  it('the submit outcome carries the same warnings', () => {
    const effects = coordinatorStep(stateWith(['web-01']), cfg, { type: 'submit', requestId: 'r', jobId: 'j', template: byIds(['ghost', 'web-01']) }, T)
    const reply = effects.find((e) => e.type === 'reply_submit')
    expect(reply?.type === 'reply_submit' && reply.outcome.ok && reply.outcome.warnings.map((w) => w.path)).toEqual(['target.groups[0].nodeIdentifiers[0]'])
  })
  it('no warning when every target is known', () => {
    const p = planJob(stateWith(['a', 'b']), byIds(['a', 'b']), T)
    expect(p.ok && p.plan.warnings).toEqual([])
  })
})

describe('exclusion checks over a range give exclusionFor\'s answers', () => {
  const T0 = Date.UTC(2026, 0, 1)
  it.each([
    ['RRULE:FREQ=SECONDLY;BYYEARDAY=366;UNTIL=20301231;DTSTART=20250106', 60],
    ['RRULE:FREQ=MINUTELY;INTERVAL=3', 1],
    ['RRULE:FREQ=DAILY;BYHOUR=2', 120],
    ['RRULE:FREQ=HOURLY;TZID=America/New_York', 5],
  ])('%s (%i min)', (rrule, duration) => {
    const schedule = parseScheduleRule('RRULE:FREQ=MINUTELY;INTERVAL=7', { defaultStartMs: T0 })
    const ex = compileExceptions([{ rrule, duration }, { rrule, duration }, { rrule: 'RRULE:FREQ=WEEKLY;BYDAY=SU', duration: 600 }], { defaultStartMs: T0 })
    if (!schedule.ok || !ex.ok) throw new Error('bad fixture')
    const planned = planOccurrences(schedule.schedule, ex.windows, Date.UTC(2028, 11, 30), 400)
    // The range holds both kinds, so the comparison below cannot pass vacuously (no occurrence, or none excluded).
    expect(planned).toHaveLength(400)
    expect(planned.some((p) => p.excluded !== undefined) && planned.some((p) => p.excluded === undefined)).toBe(true)
    for (const p of planned) expect(p.excluded).toEqual(exclusionFor(ex.windows, p.at))
  })
})
