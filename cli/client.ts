// A small HTTP client for the coordinator API, used by the CLI, the demo and the tests. Every
// request carries the bearer token; state-changing ones a JSON (or YAML/TOML) content type.
// https works like http; a self-signed CA is trusted with NODE_EXTRA_CA_CERTS=ca.pem.
import { readFile, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'

export const DEFAULT_API_ADDRESS = process.env.CHORUS_API ?? '127.0.0.1:7070'

/** Where the API is and the token to use. A bare string is an address without a token. */
export interface ApiConn {
  api: string
  token?: string
}
export type ApiTarget = string | ApiConn

export class ApiError extends Error {
  override name = 'ApiError'
  constructor(readonly status: number, readonly body: unknown, message: string) {
    super(message)
  }
}

export function apiBase(api: string = DEFAULT_API_ADDRESS): string {
  return api.startsWith('http') ? api.replace(/\/$/, '') : `http://${api}`
}

function connOf(target: ApiTarget): ApiConn {
  return typeof target === 'string' ? { api: target } : target
}

/** fetch() against the API with the token (and a content type when there is a body). */
export function apiFetch(target: ApiTarget, path: string, init: { method?: string; body?: string; contentType?: string; timeoutMs?: number } = {}): Promise<Response> {
  const c = connOf(target)
  const headers: Record<string, string> = {}
  if (c.token) headers.authorization = `Bearer ${c.token}`
  if (init.body !== undefined) headers['content-type'] = init.contentType ?? 'application/json'
  return fetch(`${apiBase(c.api)}${path}`, { method: init.method ?? 'GET', headers, ...(init.body !== undefined ? { body: init.body } : {}), signal: AbortSignal.timeout(init.timeoutMs ?? 30_000) })
}

export async function apiRequest<T>(target: ApiTarget, method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<{ status: number; body: T }> {
  const res = await apiFetch(target, path, { method, timeoutMs, ...(method === 'GET' ? {} : { body: JSON.stringify(body ?? {}) }) })
  return { status: res.status, body: (await res.json()) as T }
}

export async function apiGet<T>(target: ApiTarget, path: string, timeoutMs = 10_000): Promise<T> {
  const res = await apiRequest<T & { error?: string }>(target, 'GET', path, undefined, timeoutMs)
  if (res.status >= 400) throw new ApiError(res.status, res.body, res.body.error ?? `HTTP ${res.status}`)
  return res.body
}

export async function apiPostText<T>(target: ApiTarget, path: string, text: string, contentType: string, timeoutMs = 30_000): Promise<{ status: number; body: T }> {
  const res = await apiFetch(target, path, { method: 'POST', body: text, contentType, timeoutMs })
  return { status: res.status, body: (await res.json()) as T }
}

export function contentTypeFor(file: string): string {
  if (/\.ya?ml$/i.test(file)) return 'application/yaml'
  if (/\.toml$/i.test(file)) return 'application/toml'
  return 'application/json'
}

/** The profile file: `$CHORUS_PROFILE`, else ~/.config/chorus/profile.json, holding {"api", "token"}. */
export function profilePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.CHORUS_PROFILE ?? join(homedir(), '.config', 'chorus', 'profile.json')
}

/** The profile's api and token; nothing when there is no profile; refused when group or others may read it. */
export async function readProfile(file: string): Promise<{ api?: string; token?: string }> {
  let mode: number
  try {
    mode = (await stat(file)).mode
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw err
  }
  if ((mode & 0o077) !== 0) throw new Error(`the profile ${file} is readable by group or others (mode ${(mode & 0o777).toString(8)}); it holds a token: run chmod 600 ${file}`)
  let raw: unknown
  try { raw = JSON.parse(await readFile(file, 'utf8')) } catch (err) { throw new Error(`the profile ${file} is not JSON {"api", "token"}: ${(err as Error).message}`) }
  const p = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>
  return { ...(typeof p.api === 'string' ? { api: p.api } : {}), ...(typeof p.token === 'string' ? { token: p.token } : {}) }
}

/** The CLI's connection: --api, $CHORUS_API, the profile, 127.0.0.1:7070; --token, $CHORUS_TOKEN, the profile. */
export async function resolveConn(o: { api?: string; token?: string }, env: NodeJS.ProcessEnv = process.env): Promise<ApiConn> {
  let api = o.api ?? env.CHORUS_API
  let token = o.token ?? env.CHORUS_TOKEN
  if (api === undefined || token === undefined) {
    const profile = await readProfile(profilePath(env))
    api ??= profile.api
    token ??= profile.token
  }
  return { api: api ?? '127.0.0.1:7070', ...(token ? { token } : {}) }
}
