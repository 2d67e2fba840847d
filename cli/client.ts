// A small HTTP client for the coordinator API, used by the CLI, the demo and the tests. Every
// request carries the bearer token; state-changing ones a JSON (or YAML/TOML) content type.
// https works like http; a self-signed CA is trusted with NODE_EXTRA_CA_CERTS=ca.pem.
import { readFile, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { CHORUS_HEADER } from '../protocol/headers.js'

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

export { CHORUS_HEADER }
export const DEFAULT_TIMEOUT_MS = 30_000

/** fetch() against the API with the token (and a content type when there is a body); a network error or timeout names the address and the cause. */
export async function apiFetch(target: ApiTarget, path: string, init: { method?: string; body?: string; contentType?: string; timeoutMs?: number; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
  const c = connOf(target)
  const headers: Record<string, string> = { ...init.headers }
  if (c.token) headers.authorization = `Bearer ${c.token}`
  if (init.body !== undefined) headers['content-type'] = init.contentType ?? 'application/json'
  const base = apiBase(c.api)
  const timeoutMs = init.timeoutMs ?? DEFAULT_TIMEOUT_MS
  let res: Response
  try {
    res = await fetch(`${base}${path}`, { method: init.method ?? 'GET', headers, ...(init.body !== undefined ? { body: init.body } : {}), signal: init.signal ?? AbortSignal.timeout(timeoutMs) })
  } catch (err) {
    throw unreachable(base, err, timeoutMs)
  }
  if (!res.headers.has(CHORUS_HEADER)) {
    throw new ApiError(0, undefined, `${base} is not a Chorus coordinator API (HTTP ${res.status}${res.headers.get('server') ? `, server ${res.headers.get('server')}` : ''}): check --api or $CHORUS_API`)
  }
  return res
}

/** "cannot reach URL (CAUSE): is the coordinator running? (--api, $CHORUS_API)" */
export function unreachable(base: string, err: unknown, timeoutMs: number): ApiError {
  const e = err as Error & { cause?: { code?: string; message?: string } }
  const cause = e.name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : e.cause?.code ?? e.cause?.message ?? e.message
  return new ApiError(0, undefined, `cannot reach ${base} (${cause}): is the coordinator running? (--api, $CHORUS_API)`)
}

async function jsonOf<T>(res: Response): Promise<T> {
  try {
    return (await res.json()) as T
  } catch {
    throw new ApiError(0, undefined, `${res.url} answered HTTP ${res.status} without JSON: is it a Chorus coordinator? (--api, $CHORUS_API)`)
  }
}

export async function apiRequest<T>(target: ApiTarget, method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<{ status: number; body: T }> {
  const res = await apiFetch(target, path, { method, timeoutMs, ...(method === 'GET' ? {} : { body: JSON.stringify(body ?? {}) }) })
  return { status: res.status, body: await jsonOf<T>(res) }
}

export async function apiGet<T>(target: ApiTarget, path: string, timeoutMs = 10_000): Promise<T> {
  const res = await apiRequest<T & { error?: string }>(target, 'GET', path, undefined, timeoutMs)
  if (res.status >= 400) throw new ApiError(res.status, res.body, res.body.error ?? `HTTP ${res.status}`)
  return res.body
}

export async function apiPostText<T>(target: ApiTarget, path: string, text: string, contentType: string, timeoutMs = 30_000): Promise<{ status: number; body: T }> {
  const res = await apiFetch(target, path, { method: 'POST', body: text, contentType, timeoutMs })
  return { status: res.status, body: await jsonOf<T>(res) }
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
