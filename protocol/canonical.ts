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
      const keys = Object.keys(record).sort()
      let out = '{'
      for (const k of keys) {
        const v = record[k]
        if (v === undefined) continue
        try {
          out += `${out.length > 1 ? ',' : ''}${JSON.stringify(k)}:${encode(v)}`
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
