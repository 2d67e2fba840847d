// Who may call which API route: the one route table (method and path -> the role it needs),
// bearer tokens (random, shown once, stored as a SHA-256 hash), and the checks that keep the
// API from being a browser target (Host, Origin, content type). Pure but for randomBytes.
import { randomBytes } from 'node:crypto'
import { tokenHash } from '../protocol/membership.js'
import { ROLES, isLoopbackHost, type Role } from '../protocol/api.js'

export { ROLES, type Role }

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE'

/**
 * Every API route and the role it needs. Adding a route is one line here; the runtime refuses
 * to register a handler that is not listed, and serves 501 for a listed route with no handler.
 * PUBLIC_ROUTES need no token.
 */
export const ROUTES: readonly { method: Method; url: string; role: Role }[] = [
  { method: 'GET', url: '/metrics', role: 'reader' },
  { method: 'GET', url: '/v1/openapi.json', role: 'reader' },
  { method: 'GET', url: '/v1/jobs', role: 'reader' },
  { method: 'GET', url: '/v1/jobs/:id', role: 'reader' },
  { method: 'GET', url: '/v1/jobs/:id/next', role: 'reader' },
  { method: 'GET', url: '/v1/jobs/:id/events', role: 'reader' },
  { method: 'GET', url: '/v1/instances/:id/events', role: 'reader' },
  { method: 'GET', url: '/v1/instances', role: 'reader' },
  { method: 'GET', url: '/v1/instances/:id', role: 'reader' },
  { method: 'GET', url: '/v1/instances/:id/runs', role: 'reader' },
  { method: 'GET', url: '/v1/runs/:id', role: 'reader' },
  { method: 'GET', url: '/v1/runs/:id/artifacts', role: 'reader' },
  { method: 'GET', url: '/v1/runs/:id/logs', role: 'reader' },
  { method: 'GET', url: '/v1/runs/:id/steps/:step/artifacts/:name', role: 'reader' },
  { method: 'GET', url: '/v1/reports/:id', role: 'reader' },
  { method: 'GET', url: '/v1/nodes', role: 'reader' },
  { method: 'GET', url: '/v1/nodes/:id', role: 'reader' },
  { method: 'GET', url: '/v1/nodes/:id/runs', role: 'reader' },
  { method: 'GET', url: '/v1/exceptions', role: 'reader' },
  { method: 'GET', url: '/v1/lists', role: 'reader' },
  { method: 'GET', url: '/v1/filters', role: 'reader' },
  { method: 'POST', url: '/v1/validate', role: 'reader' },
  { method: 'POST', url: '/v1/ui/codes', role: 'reader' },
  { method: 'GET', url: '/v1/ui/whoami', role: 'reader' },
  { method: 'POST', url: '/v1/jobs', role: 'operator' },
  { method: 'POST', url: '/v1/plan', role: 'operator' },
  { method: 'POST', url: '/v1/jobs/:id/cancel', role: 'operator' },
  { method: 'POST', url: '/v1/jobs/:id/run', role: 'operator' },
  { method: 'DELETE', url: '/v1/jobs/:id', role: 'operator' },
  { method: 'POST', url: '/v1/exceptions', role: 'operator' },
  { method: 'DELETE', url: '/v1/exceptions/:id', role: 'operator' },
  { method: 'PUT', url: '/v1/lists/:id', role: 'operator' },
  { method: 'DELETE', url: '/v1/lists/:id', role: 'operator' },
  { method: 'PUT', url: '/v1/filters/:id', role: 'operator' },
  { method: 'DELETE', url: '/v1/filters/:id', role: 'operator' },
  { method: 'GET', url: '/v1/tokens', role: 'admin' },
  { method: 'POST', url: '/v1/tokens', role: 'admin' },
  { method: 'DELETE', url: '/v1/tokens/:name', role: 'admin' },
  { method: 'GET', url: '/v1/audit', role: 'admin' },
  { method: 'GET', url: '/v1/enrollments', role: 'admin' },
  { method: 'POST', url: '/v1/enrollments', role: 'admin' },
  { method: 'DELETE', url: '/v1/enrollments/:id', role: 'admin' },
  { method: 'GET', url: '/v1/nodes/pending', role: 'admin' },
  { method: 'GET', url: '/v1/nodes/revoked', role: 'admin' },
  { method: 'POST', url: '/v1/nodes/:id/approve', role: 'admin' },
  { method: 'POST', url: '/v1/nodes/:id/reject', role: 'admin' },
  { method: 'POST', url: '/v1/nodes/:id/revoke', role: 'admin' },
]

/**
 * Routes without a token: liveness, the web console's static files (its login page loads
 * before there is a session), and the console's login (a one-time code for a session
 * cookie) and logout. They still pass the Host, Origin and content-type checks.
 */
export const PUBLIC_ROUTES: readonly { method: Method; url: string }[] = [
  { method: 'GET', url: '/healthz' },
  { method: 'GET', url: '/ui' },
  { method: 'GET', url: '/ui/' },
  { method: 'GET', url: '/ui/app.js' },
  { method: 'GET', url: '/ui/app.css' },
  { method: 'POST', url: '/v1/ui/session' },
  { method: 'POST', url: '/v1/ui/logout' },
]

export function routeKey(method: string, url: string): string {
  return `${method.toUpperCase()} ${url}`
}

const ROLE_BY_ROUTE = new Map(ROUTES.map((r) => [routeKey(r.method, r.url), r.role]))

/**
 * The role a route needs. A URL no route matches needs a valid token (reader), then is a 404;
 * a route missing from the table (the runtime refuses to register one) would need admin.
 */
export function requiredRole(method: string, url: string | undefined): Role {
  if (url === undefined) return 'reader'
  return ROLE_BY_ROUTE.get(routeKey(method, url)) ?? 'admin'
}

export function isPublic(method: string, url: string | undefined): boolean {
  return PUBLIC_ROUTES.some((r) => r.method === method.toUpperCase() && r.url === url)
}

export function roleAllows(has: Role, needs: Role): boolean {
  return ROLES.indexOf(has) >= ROLES.indexOf(needs)
}

export const TOKEN_PREFIX = 'chorus_'

/** A new bearer token: 256 random bits, base64url, with a recognisable prefix. */
export function newToken(prefix = TOKEN_PREFIX): string {
  return `${prefix}${randomBytes(32).toString('base64url')}`
}

/** SHA-256 of a token, hex: API and enrolment tokens alike (protocol/membership.ts). */
export const hashToken = tokenHash

/** The bearer token of an Authorization header, if there is one. */
export function bearerOf(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')
  return m?.[1]
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'DELETE', 'PATCH'])
export function isStateChanging(method: string): boolean {
  return STATE_CHANGING.has(method.toUpperCase())
}

/** JSON, YAML or TOML (what a browser form or a no-preflight fetch cannot send). */
export function isApiContentType(header: string | undefined): boolean {
  const type = (header ?? '').split(';')[0]!.trim().toLowerCase()
  return /^application\/(json|yaml|x-yaml|toml)$/.test(type) || /^text\/(yaml|x-yaml)$/.test(type)
}

/**
 * The Host header values the API answers: the address it is bound to, `localhost` and
 * `[::1]` with its port when bound to loopback, and the names the operator listed
 * (`--api-host NAME[:PORT]`, the bound port when none is given). Lower case.
 */
export function allowedHosts(boundHost: string, port: number, extra: readonly string[]): Set<string> {
  const host = boundHost.includes(':') && !boundHost.startsWith('[') ? `[${boundHost}]` : boundHost
  const out = new Set([`${host}:${port}`.toLowerCase()])
  if (isLoopbackHost(boundHost)) for (const h of ['localhost', '127.0.0.1', '[::1]']) out.add(`${h}:${port}`)
  for (const e of extra) out.add((/:\d+$/.test(e) ? e : `${e}:${port}`).toLowerCase())
  return out
}

/** Why a request is refused before its token is looked at, or undefined. */
export function browserRefusal(req: { method: string; host: string | undefined; origin: string | undefined; contentType: string | undefined }, hosts: Set<string>, scheme: 'http' | 'https'): { status: number; error: string } | undefined {
  if (!req.host || !hosts.has(req.host.toLowerCase())) {
    return { status: 421, error: `Host ${JSON.stringify(req.host ?? '')} is not an address of this API (${[...hosts].join(', ')}); add one with --api-host` }
  }
  if (!isStateChanging(req.method)) return undefined
  if (!isApiContentType(req.contentType)) {
    return { status: 415, error: `a ${req.method} request needs content-type application/json, application/yaml or application/toml; got ${JSON.stringify(req.contentType ?? '')}` }
  }
  if (req.origin !== undefined && !hosts.has(originHost(req.origin, scheme) ?? '')) {
    return { status: 403, error: `Origin ${JSON.stringify(req.origin)} is not this API; cross-origin requests are refused` }
  }
  return undefined
}

function originHost(origin: string, scheme: 'http' | 'https'): string | undefined {
  try {
    const u = new URL(origin)
    if (u.protocol !== `${scheme}:`) return undefined
    return `${u.hostname}:${u.port || (scheme === 'https' ? '443' : '80')}`.toLowerCase()
  } catch {
    return undefined
  }
}
