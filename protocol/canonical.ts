// Canonical JSON: object keys sorted by code unit, no insignificant white space, no
// undefined values, only finite numbers. Two parties that hold the same value produce the
// same bytes, so a signature over those bytes is a signature over the value.

export class CanonicalEncodingError extends Error {
  override name = 'CanonicalEncodingError'
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`)
  }
}

/**
 * A value that cannot be encoded, on its way up: each level it passes adds its key. The path is
 * built only then: every value sealed goes through encode(), and building '$.a.b[3]' for each
 * of them cost more than the encoding itself.
 */
class Unencodable {
  readonly keys: string[] = []
  constructor(readonly message: string) {}
}

export function canonicalJson(value: unknown): string {
  try {
    return encode(value)
  } catch (err) {
    if (err instanceof Unencodable) throw new CanonicalEncodingError(`$${err.keys.reverse().join('')}`, err.message)
    throw err
  }
}

function encode(value: unknown): string {
  if (value === null) return 'null'
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value)
    case 'boolean':
      return value ? 'true' : 'false'
    case 'number':
      if (!Number.isFinite(value)) throw new Unencodable(`number ${value} is not finite`)
      return JSON.stringify(value)
    case 'object': {
      if (Array.isArray(value)) {
        let out = '['
        for (let i = 0; i < value.length; i++) {
          const v: unknown = value[i]
          try {
            out += (i > 0 ? ',' : '') + encode(v === undefined ? null : v)
          } catch (err) {
            if (err instanceof Unencodable) err.keys.push(`[${i}]`)
            throw err
          }
        }
        return out + ']'
      }
      const record = value as Record<string, unknown>
      const keys = sortKeys(Object.keys(record))
      let out = '{'
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i]!
        const v = record[k]
        if (v === undefined) continue
        try {
          if (out.length > 1) out += ','
          out += quotedKey(k)
          out += encode(v)
        } catch (err) {
          if (err instanceof Unencodable) err.keys.push(`.${k}`)
          throw err
        }
      }
      return out + '}'
    }
    default:
      throw new Unencodable(`a ${typeof value} cannot be encoded`)
  }
}

/**
 * Sorts keys by code unit in place, as Array.prototype.sort does by default (keys are unique,
 * so stability does not matter). Small objects, the common case, take an insertion sort: the
 * built-in sort copies every array into a work array, and every sealed message sorts a few dozen.
 */
const INSERTION_SORT_MAX_KEYS = 24
function sortKeys(keys: string[]): string[] {
  if (keys.length > INSERTION_SORT_MAX_KEYS) return keys.sort()
  for (let i = 1; i < keys.length; i++) {
    const k = keys[i]!
    let j = i - 1
    while (j >= 0 && keys[j]! > k) { keys[j + 1] = keys[j]!; j-- }
    keys[j + 1] = k
  }
  return keys
}

/** `"key":` for keys seen before: the same few hundred field names recur in every message. Bounded (hostile keys stop filling it). */
const quotedKeys = new Map<string, string>()
const QUOTED_KEYS_MAX = 4096
const QUOTED_KEY_MAX_CHARS = 64
function quotedKey(k: string): string {
  let q = quotedKeys.get(k)
  if (q === undefined) {
    q = JSON.stringify(k) + ':'
    if (quotedKeys.size < QUOTED_KEYS_MAX && k.length <= QUOTED_KEY_MAX_CHARS) quotedKeys.set(k, q)
  }
  return q
}
