// Regression tests for the "Hostile input" findings: every one answers in bounded time with the
// right verdict, path and message.
import { describe, expect, it } from 'vitest'
import { compilePattern, matchesWildcard, patternProblem } from '../protocol/pattern.js'
import { evaluateConditions, extractOutputs } from '../agent/steps.js'
import { compileAttribute, matchQuery, parseQuery } from '../coordinator/targeting.js'

/** Runs fn and returns its result with the elapsed wall time. */
function timed<T>(fn: () => T): { value: T; ms: number } {
  const t0 = performance.now()
  const value = fn()
  return { value, ms: performance.now() - t0 }
}

const BOMB = '(a+)+$'
const VICTIM = `${'a'.repeat(5000)}b`

describe('patterns run on RE2 (linear time)', () => {
  it('a catastrophic pattern in a matches condition finishes quickly', () => {
    const r = timed(() => evaluateConditions([{ inputName: 'X', operator: 'matches', value: BOMB }], { X: VICTIM }))
    expect(r.value.run).toBe(false)
    expect(r.ms).toBeLessThan(500)
  })
  it('a catastrophic pattern in a regEx output rule finishes quickly', () => {
    const r = timed(() => extractOutputs({ OUT: { sourceType: 'output', extractMethod: 'regEx', expression: BOMB } }, { stdout: VICTIM, stderr: '', exitCode: 0 }))
    expect(r.value.values.OUT).toBeUndefined()
    expect(r.ms).toBeLessThan(500)
  })
  it('a catastrophic pattern in a filter MATCHES finishes quickly', () => {
    const f = compileAttribute({ name: 'os', operator: 'MATCHES', value: [BOMB] })
    if ('error' in f) throw new Error(f.error)
    const r = timed(() => f({ os: VICTIM }))
    expect(r.value).toBe(false)
    expect(r.ms).toBeLessThan(500)
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
  it('a wildcard-heavy query over a long node id answers quickly', () => {
    const parsed = parseQuery(`node:${'*a'.repeat(40)}*b`)
    if (!parsed.ok) throw new Error(parsed.message)
    const node = { nodeId: 'a'.repeat(2000), facts: {}, skills: {} }
    const r = timed(() => matchQuery(parsed.query, node))
    expect(r.value).toBe(false)
    expect(r.ms).toBeLessThan(500)
  })
})
