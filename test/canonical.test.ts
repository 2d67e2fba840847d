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
