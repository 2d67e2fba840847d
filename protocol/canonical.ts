// Canonical JSON: object keys sorted by code unit, no insignificant white space, no
// undefined values, only finite numbers. Two parties that hold the same value produce the
// same bytes, so a signature over those bytes is a signature over the value.

export class CanonicalEncodingError extends Error {
  override name = 'CanonicalEncodingError'
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`)
  }
}

export function canonicalJson(value: unknown): string {
  return encode(value, '$')
}

function encode(value: unknown, path: string): string {
  if (value === null) return 'null'
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value)
    case 'boolean':
      return value ? 'true' : 'false'
    case 'number':
      if (!Number.isFinite(value)) throw new CanonicalEncodingError(path, `number ${value} is not finite`)
      return JSON.stringify(value)
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((v, i) => encode(v === undefined ? null : v, `${path}[${i}]`)).join(',')}]`
      const keys = Object.keys(value as object).sort()
      const parts: string[] = []
      for (const k of keys) {
        const v = (value as Record<string, unknown>)[k]
        if (v === undefined) continue
        parts.push(`${JSON.stringify(k)}:${encode(v, `${path}.${k}`)}`)
      }
      return `{${parts.join(',')}}`
    }
    default:
      throw new CanonicalEncodingError(path, `a ${typeof value} cannot be encoded`)
  }
}
