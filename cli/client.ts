// A small HTTP client for the coordinator API, used by the CLI, the demo and the tests.
export const DEFAULT_API_ADDRESS = process.env.CHORUS_API ?? '127.0.0.1:7070'

export class ApiError extends Error {
  override name = 'ApiError'
  constructor(readonly status: number, readonly body: unknown, message: string) {
    super(message)
  }
}

export function apiBase(api: string = DEFAULT_API_ADDRESS): string {
  return api.startsWith('http') ? api.replace(/\/$/, '') : `http://${api}`
}

export async function apiGet<T>(api: string, path: string, timeoutMs = 10_000): Promise<T> {
  const res = await fetch(`${apiBase(api)}${path}`, { signal: AbortSignal.timeout(timeoutMs) })
  const body = (await res.json()) as T & { error?: string }
  if (!res.ok) throw new ApiError(res.status, body, body.error ?? `HTTP ${res.status}`)
  return body
}

export async function apiPostText<T>(api: string, path: string, text: string, contentType: string, timeoutMs = 30_000): Promise<{ status: number; body: T }> {
  const res = await fetch(`${apiBase(api)}${path}`, { method: 'POST', body: text, headers: { 'content-type': contentType }, signal: AbortSignal.timeout(timeoutMs) })
  return { status: res.status, body: (await res.json()) as T }
}

/** A request with a JSON body (or none); the answer's status and JSON body. */
export async function apiSend<T>(api: string, method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<{ status: number; body: T }> {
  const res = await fetch(`${apiBase(api)}${path}`, { method, ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}), signal: AbortSignal.timeout(timeoutMs) })
  return { status: res.status, body: (await res.json()) as T }
}

export function contentTypeFor(file: string): string {
  if (/\.ya?ml$/i.test(file)) return 'application/yaml'
  if (/\.toml$/i.test(file)) return 'application/toml'
  return 'application/json'
}
