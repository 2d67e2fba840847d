// The web console: its static files (built into dist/ui by `npm run build`), served with a
// strict Content-Security-Policy, and the login routes: `chorus ui` asks for a one-time code
// (POST /v1/ui/codes, any token), the page exchanges it for a session cookie
// (POST /v1/ui/session) and ends it (POST /v1/ui/logout). POST /v1/validate parses a template
// as POST /v1/jobs would and answers its problems with their paths.
import { readFileSync } from 'node:fs'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { z } from 'zod'
import { parseTemplateText } from '../protocol/parse.js'
import { hashToken, bearerOf } from './access.js'
import { jsonBody, templateTextOf } from './http.js'
import { SESSION_COOKIE, SESSION_TTL_MS, cookieOf, sessionCookie, type SessionStore } from './sessions.js'

export const UI_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

const UI_FILES: Record<string, { file: string; type: string }> = {
  '/ui/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/ui/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/ui/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
}

/** dist/ui, beside dist/coordinator and dist/bundle alike. */
const UI_DIR = new URL('../ui/', import.meta.url)

function readUiFile(name: string): Buffer | undefined {
  try {
    return readFileSync(new URL(name, UI_DIR))
  } catch {
    return undefined
  }
}

const CodeBodySchema = z.strictObject({ code: z.string().min(1).max(200) })

export interface UiHost {
  readonly sessions: SessionStore
  readonly scheme: 'http' | 'https'
}

export function uiRoutes(app: FastifyInstance, host: UiHost): void {
  for (const [url, f] of Object.entries(UI_FILES)) {
    const body = readUiFile(f.file)
    app.get(url, async (_req, reply) => {
      if (!body) return reply.code(503).send({ error: `the web console is not built (dist/ui/${f.file}); run npm run build` })
      return securityHeaders(reply).type(f.type).send(body)
    })
  }
  app.get('/ui', async (_req, reply) => reply.redirect('/ui/'))
  app.post('/v1/ui/codes', async (req, reply) => {
    const token = bearerOf(req.headers.authorization)
    if (!token) return reply.code(400).send({ error: 'a login code is made with a bearer token (chorus ui --token)' })
    const { code, expiresAt } = host.sessions.newCode({ tokenHash: hashToken(token) })
    return reply.code(201).header('cache-control', 'no-store').send({ code, expiresAt: new Date(expiresAt).toISOString(), path: `/ui/#code=${code}` })
  })
  app.post('/v1/ui/session', async (req, reply) => {
    const { code } = jsonBody(req, CodeBodySchema)
    const s = host.sessions.redeem(code)
    if (!s) return reply.code(401).send({ error: 'this login link is unknown, used or expired; run chorus ui for a new one' })
    return reply.header('set-cookie', sessionCookie(s.session, SESSION_TTL_MS / 1000, host.scheme === 'https')).header('cache-control', 'no-store').send({ ok: true, expiresAt: new Date(s.expiresAt).toISOString() })
  })
  app.post('/v1/ui/logout', async (req, reply) => {
    const session = sessionOf(req)
    if (session) host.sessions.end(session)
    return reply.header('set-cookie', sessionCookie('', 0, host.scheme === 'https')).send({ ok: true })
  })
  app.get('/v1/ui/whoami', async (req) => ({ name: req.actor?.name ?? null, role: req.actor?.role ?? null }))
  app.post('/v1/validate', async (req) => validate(req))
}

export function sessionOf(req: FastifyRequest): string | undefined {
  return cookieOf(req.headers.cookie, SESSION_COOKIE)
}

function securityHeaders(reply: FastifyReply): FastifyReply {
  return reply.header('content-security-policy', UI_CSP).header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer').header('x-frame-options', 'DENY').header('cache-control', 'no-cache')
}

/** The template's problems (with their paths), as POST /v1/jobs would find them. */
function validate(req: FastifyRequest): { ok: boolean; problems: { path: string; message: string }[] } {
  const { text, format } = templateTextOf(req)
  const parsed = parseTemplateText(text, format)
  return parsed.ok ? { ok: true, problems: [] } : { ok: false, problems: parsed.problems }
}
