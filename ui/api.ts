// The console's calls to the coordinator API: same origin, the session cookie, JSON bodies.
export interface Problem { path: string; message: string }
export interface Answer<T> { status: number; body: T & { error?: string; problems?: Problem[] } }

export async function call<T>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<Answer<T>> {
  const init: RequestInit = { method, credentials: 'same-origin', headers: {} }
  if (method !== 'GET') {
    init.headers = { 'content-type': contentType }
    init.body = typeof body === 'string' ? body : JSON.stringify(body ?? {})
  }
  const res = await fetch(path, init)
  const text = await res.text()
  let parsed: unknown = {}
  try { parsed = text ? JSON.parse(text) : {} } catch { parsed = { error: text } }
  return { status: res.status, body: parsed as Answer<T>['body'] }
}

/** GET that throws the API's error (shown by the page). */
export async function get<T>(path: string): Promise<T> {
  const r = await call<T>('GET', path)
  if (r.status >= 300) throw new Error(`HTTP ${r.status}: ${r.body.error ?? ''}`)
  return r.body
}

export const enc = encodeURIComponent

/** The content type of a template text: JSON when it starts with { , TOML when it has a [section] or key = value line, else YAML. */
export function templateType(text: string): string {
  const t = text.trimStart()
  if (t.startsWith('{')) return 'application/json'
  if (/^\s*\[[\w.]+\]\s*$/m.test(t) || /^\s*[\w-]+\s*=\s*/m.test(t)) return 'application/toml'
  return 'application/yaml'
}

export interface Page<T> { items: T[]; pagination: { page: number; size: number; total: number } }
export interface Job { id: string; name: string; status: string; createdAt: string | null; scheduleRule: string; runOf?: string; nextAt?: string | null; lastInstance?: { id: string; status: string } | null }
export interface Instance { id: string; jobId: string; status: string; occurrenceAt: string | null; reason?: string; createdAt: string | null; updatedAt: string | null; counts: Record<string, number> }
export interface Step { number: number; name: string; status: string; attempts: number; exitCode: number | null; outputs: Record<string, string>; reason?: string; stdout: string; stderr: string; attemptLog: { attempt: number; status: string; exitCode: number | null; startedAt: string | null; finishedAt: string | null }[]; artifacts: { name: string; encoding: string; bytes: number; truncated: boolean }[] }
export interface Run { runId: string; nodeId: string; group: number; batch: number; status: string; reason?: string; startedAt: string | null; finishedAt: string | null; steps: Step[] }
export interface GroupCounts { group: number; pending: number; running: number; success: number; failure: number; skipped: number }
export interface StreamEvent { id: string; type: string; at: string; instanceId: string; nodeId?: string; runId?: string; status?: string; group?: number; batch?: number; counts: GroupCounts[] }
