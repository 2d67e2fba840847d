// Node selection: attribute operators, skill version constraints, the search query grammar.
import { describe, expect, it } from 'vitest'
import { compileAttribute, compileSkill, matchQuery, parseQuery, type NodeView } from '../coordinator/targeting.js'

const web: NodeView = { nodeId: 'web-01', facts: { role: 'webapp', env: 'prod', os: 'linux', cpus: '8', kernel_release: '6.1.0' }, skills: { 'chef-platform/shell-interpreter': ['1.0.0'], 'chef-gohai': ['0.1.0'] } }
const db: NodeView = { nodeId: 'db-01', facts: { role: 'db', env: 'prod', os: 'linux', cpus: '32', kernel_release: '5.10.2' }, skills: { 'chef-platform/shell-interpreter': ['1.0.0'] } }
const dev: NodeView = { nodeId: 'web-dev', facts: { role: 'webapp', env: 'dev', os: 'darwin', cpus: '4' }, skills: {} }
const fleet = [web, db, dev]

function pick(query: string): string[] {
  const q = parseQuery(query)
  if (!q.ok) throw new Error(q.message)
  return fleet.filter((n) => matchQuery(q.query, n)).map((n) => n.nodeId)
}

describe('search queries', () => {
  it.each([
    ['role:webapp AND env:prod', ['web-01']],
    ['role:webapp env:prod', ['web-01']],
    ['role:webapp OR role:db', ['web-01', 'db-01', 'web-dev']],
    ['os:linux NOT role:db', ['web-01']],
    ['os:linux -role:db', ['web-01']],
    ['(role:db OR env:dev) AND os:linux', ['db-01']],
    ['node:web-*', ['web-01', 'web-dev']],
    ['node:web-0?', ['web-01']],
    ['skill:chef-gohai', ['web-01']],
    ['role:"webapp"', ['web-01', 'web-dev']],
    ['missing:thing', []],
  ])('%s', (query, expected) => {
    expect(pick(query)).toEqual(expected)
  })

  it.each([
    ['', /empty/],
    ['role:web AND', /ends too early/],
    ['(role:web', /not closed/],
    ['justaword', /expected NAME:VALUE/],
    ['role:web )', /unexpected/],
  ])('rejects %j clearly', (query, message) => {
    const q = parseQuery(query)
    expect(q.ok).toBe(false)
    if (!q.ok) expect(q.message).toMatch(message)
  })
})

describe('attribute operators', () => {
  const select = (operator: string, value: string[], name = 'role') => {
    const m = compileAttribute({ name, operator, value })
    if (typeof m !== 'function') throw new Error(m.error)
    return fleet.filter((n) => m(n.facts)).map((n) => n.nodeId)
  }
  it.each([
    ['=', ['webapp'], 'role', ['web-01', 'web-dev']],
    ['IN', ['db', 'nothing'], 'role', ['db-01']],
    ['!=', ['webapp'], 'role', ['db-01']],
    ['NOT IN', ['webapp', 'db'], 'role', []],
    ['MATCHES', ['^web'], 'role', ['web-01', 'web-dev']],
    ['NOT MATCHES', ['^web'], 'role', ['db-01']],
    ['STARTS_WITH', ['da'], 'os', ['web-dev']],
    ['CONTAINS', ['nu'], 'os', ['web-01', 'db-01']],
    ['>', ['8'], 'cpus', ['db-01']],
    ['>=', ['8'], 'cpus', ['web-01', 'db-01']],
    ['<', ['6'], 'kernel_release', ['db-01']],
    ['!=', ['x'], 'kernel_release', ['web-01', 'db-01', 'web-dev']],
  ])('%s %j on %s', (op, value, name, expected) => {
    expect(select(op, value, name)).toEqual(expected)
  })

  it('says which operators exist and what is wrong with a regular expression', () => {
    const bad = compileAttribute({ name: 'x', operator: 'LIKE', value: [] })
    expect(typeof bad).toBe('object')
    if (typeof bad === 'object') expect(bad.error).toMatch(/unsupported operator "LIKE"; expected one of "=",/)
    const re = compileAttribute({ name: 'x', operator: 'MATCHES', value: ['('] })
    if (typeof re === 'object') expect(re).toMatchObject({ field: 'value' })
    else throw new Error('expected an error')
  })
})

describe('skill constraints', () => {
  it.each([
    [['<= 1.9.996'], ['web-01', 'db-01']],
    [['= 0.1.0'], []],
    [['>= 1.0', '< 2'], ['web-01', 'db-01']],
    [['1.x'], ['web-01', 'db-01']],
    [['>= 2'], []],
  ])('shell interpreter %j', (version, expected) => {
    const m = compileSkill({ name: 'chef-platform/shell-interpreter', version })
    if (typeof m !== 'function') throw new Error(m.error)
    expect(fleet.filter((n) => m(n.skills)).map((n) => n.nodeId)).toEqual(expected)
  })
  it('rejects a malformed constraint', () => {
    expect(typeof compileSkill({ name: 'x', version: ['~~ 1'] })).toBe('object')
  })
})
