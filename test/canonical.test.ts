import { describe, expect, it } from 'vitest'
import { CanonicalEncodingError, canonicalJson } from '../protocol/canonical.js'

describe('canonicalJson', () => {
  it.each([
    [null, 'null'],
    [{ b: 1, a: [true, false, null], c: 'x"é\u2028' }, '{"a":[true,false,null],"b":1,"c":"x\\"é\u2028"}'],
    [{ u: undefined, a: [undefined, 1] }, '{"a":[null,1]}'],
    [{ z: { y: { x: [] } }, '': {} }, '{"":{},"z":{"y":{"x":[]}}}'],
    [[1.5, -0, 1e21], '[1.5,0,1e+21]'],
  ])('encodes %j as %s', (value, text) => {
    expect(canonicalJson(value)).toBe(text)
  })

  it('gives the same bytes whatever order the keys were inserted in, and round-trips through JSON.parse', () => {
    const a = { one: 1, two: { b: [1, { d: 4, c: 3 }], a: 'x' }, three: null }
    const b = { three: null, two: { a: 'x', b: [1, { c: 3, d: 4 }] }, one: 1 }
    expect(canonicalJson(a)).toBe(canonicalJson(b))
    expect(canonicalJson(JSON.parse(canonicalJson(a)))).toBe(canonicalJson(a))
  })

  it.each([
    [{ x: 1, y: [1, { z: Number.NaN }] }, '$.y[1].z', 'number NaN is not finite'],
    [{ a: [{ b: undefined, c: () => 1 }] }, '$.a[0].c', 'a function cannot be encoded'],
    [[1, 2, Number.POSITIVE_INFINITY], '$[2]', 'number Infinity is not finite'],
    [{ 'we ird': { k: 1n } }, '$.we ird.k', 'a bigint cannot be encoded'],
    [Symbol('s'), '$', 'a symbol cannot be encoded'],
  ])('refuses %s at its path', (value, path, message) => {
    let caught: unknown
    try { canonicalJson(value) } catch (err) { caught = err }
    expect(caught).toBeInstanceOf(CanonicalEncodingError)
    expect((caught as CanonicalEncodingError).path).toBe(path)
    expect((caught as CanonicalEncodingError).message).toBe(`${path}: ${message}`)
  })

  it('reports the path again on the next call (no state left from a failed one)', () => {
    expect(() => canonicalJson({ a: [Number.NaN] })).toThrow('$.a[0]: number NaN is not finite')
    expect(() => canonicalJson({ b: Number.NaN })).toThrow('$.b: number NaN is not finite')
    expect(canonicalJson({ b: 1 })).toBe('{"b":1}')
  })
})

describe('canonicalJson against the definition', () => {
  // The reference: keys sorted with the built-in sort (code units), JSON.stringify for every leaf.
  // The encoder sorts small objects itself and caches quoted keys; its bytes must not change.
  const reference = (v: unknown): string => {
    if (v === null || typeof v !== 'object') return JSON.stringify(v)
    if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : reference(x))).join(',')}]`
    const r = v as Record<string, unknown>
    return `{${Object.keys(r).sort().filter((k) => r[k] !== undefined).map((k) => `${JSON.stringify(k)}:${reference(r[k])}`).join(',')}}`
  }
  it('gives the same bytes as the reference on seeded random values (keys of every shape, 0 to 40 per object)', () => {
    let x = 12345
    const rnd = (n: number) => { x = (Math.imul(x, 1103515245) + 12345) >>> 0; return x % n }
    const alphabet = ['a', 'B', 'z', '0', '9', '10', '_', 'é', '\u2028', '"', '\\', ' ', 'aa', 'A', '\ud83d\ude00', '\ud800']
    const key = () => Array.from({ length: rnd(4) }, () => alphabet[rnd(alphabet.length)]).join('')
    const value = (depth: number): unknown => {
      const kind = depth === 0 ? 7 : rnd(depth > 2 ? 5 : 8)
      if (kind === 0) return null
      if (kind === 1) return rnd(2) === 0
      if (kind === 2) return (rnd(2000) - 1000) / (1 + rnd(7))
      if (kind === 3) return key()
      if (kind === 4) return rnd(5) === 0 ? undefined : rnd(100)
      if (kind === 5) return Array.from({ length: rnd(5) }, () => value(depth + 1))
      const o: Record<string, unknown> = {}
      for (let i = rnd(41); i > 0; i--) o[key()] = value(depth + 1)
      return o
    }
    for (let i = 0; i < 500; i++) {
      const v = value(0)
      expect(canonicalJson(v)).toBe(reference(v))
    }
  })
})
