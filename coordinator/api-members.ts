// HTTP routes for fleet membership (admin): enrolment tokens, enrolments awaiting approval, and
// node revocation. The decisions are the core's (coordinator/members.ts); these routes check the
// request, draw the token's randomness, and answer.
import { randomBytes } from 'node:crypto'
import type { FastifyInstance, FastifyReply } from 'fastify'
import { z } from 'zod'
import { ENROLL_TOKEN_PREFIX } from '../protocol/membership.js'
import { MAX_FIXED_ATTRIBUTES, MAX_FACT_CHARS } from '../protocol/wire.js'
import { enrollmentSummary, newEnrollment } from './members.js'
import type { CoordinatorEvent, CoordinatorState } from './core.js'

export type AdminOutcome = { ok: true; detail?: unknown } | { ok: false; status: number; error: string }

export interface MemberRoutesHost {
  state(): CoordinatorState
  admin(make: (requestId: string) => CoordinatorEvent): Promise<AdminOutcome>
  /** Carried out after a revocation: close the revoked node's connections. */
  onRevoked(peerId: string): void
}

const idPattern = /^[A-Za-z0-9._:@-]{1,128}$/
/** `30s`, `15m`, `1h`, `7d`: a time to live. */
export const DurationSchema = z.string().regex(/^\d{1,9}[smhd]$/, 'expected a duration such as 30s, 15m, 1h or 7d')
export function durationMs(text: string): number {
  const n = Number(text.slice(0, -1))
  return n * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[text.slice(-1) as 's' | 'm' | 'h' | 'd']
}

export const EnrollmentRequestSchema = z.object({
  /** Default: a name drawn at random. */
  name: z.string().regex(idPattern, 'expected 1 to 128 letters, digits or . _ : @ -').optional(),
  /** How many nodes it may enrol (default: 1). */
  uses: z.number().int().min(1).max(100_000).default(1),
  /** Default: 1h. */
  ttl: DurationSchema.default('1h'),
  /** Attributes fixed for the nodes it enrols (they override what the agent reports). */
  attributes: z.record(z.string().min(1).max(128), z.string().max(MAX_FACT_CHARS)).refine((r) => Object.keys(r).length <= MAX_FIXED_ATTRIBUTES, `at most ${MAX_FIXED_ATTRIBUTES} attributes`).default({}),
}).strict()

export function problemsOf(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((i) => ({ path: i.path.length ? i.path.join('.') : '$', message: i.message }))
}

function jsonBody(body: unknown): unknown {
  const text = typeof body === 'string' ? body : ''
  if (text.trim() === '') return {}
  try { return JSON.parse(text) } catch { return Symbol.for('invalid') }
}

function send(reply: FastifyReply, outcome: AdminOutcome, okStatus = 200) {
  return outcome.ok ? reply.code(okStatus).send(outcome.detail ?? { ok: true }) : reply.code(outcome.status).send({ error: outcome.error })
}

export function registerMemberRoutes(app: FastifyInstance, host: MemberRoutesHost): void {
  app.post('/v1/enrollments', async (req, reply) => {
    const raw = jsonBody(req.body)
    if (typeof raw === 'symbol') return reply.code(400).send({ error: 'invalid request', problems: [{ path: '$', message: 'expected a JSON object {"name"?, "uses"?, "ttl"?, "attributes"?}' }] })
    const parsed = EnrollmentRequestSchema.safeParse(raw)
    if (!parsed.success) return reply.code(400).send({ error: 'invalid request', problems: problemsOf(parsed.error) })
    const token = ENROLL_TOKEN_PREFIX + randomBytes(32).toString('base64url')
    const id = parsed.data.name ?? `enroll-${randomBytes(4).toString('hex')}`
    const enrollment = newEnrollment({ id, token, uses: parsed.data.uses, ttlMs: durationMs(parsed.data.ttl), attributes: parsed.data.attributes }, Date.now())
    const outcome = await host.admin((requestId) => ({ type: 'create_enrollment', requestId, enrollment }))
    if (!outcome.ok) return send(reply, outcome)
    // The token is shown once, here; the coordinator keeps only its hash.
    return reply.code(201).send({ ...(outcome.detail as object), token })
  })
  app.get('/v1/enrollments', async () => ({ items: [...host.state().members.enrollments.values()].map(enrollmentSummary) }))
  app.delete<{ Params: { id: string } }>('/v1/enrollments/:id', async (req, reply) => send(reply, await host.admin((requestId) => ({ type: 'delete_enrollment', requestId, id: req.params.id }))))
  app.get('/v1/nodes/pending', async () => ({
    items: [...host.state().members.pending.values()].map((p) => ({ nodeId: p.nodeId, peerId: p.peerId, publicKey: p.key, enrollment: p.enrollment, attributes: p.attributes, facts: p.facts, requestedAt: new Date(p.requestedAt).toISOString() })),
  }))
  app.get('/v1/nodes/revoked', async () => ({ items: [...host.state().members.revoked.values()].map((r) => ({ nodeId: r.nodeId, publicKey: r.key, revokedAt: new Date(r.at).toISOString() })) }))
  for (const action of ['approve', 'reject', 'revoke'] as const) {
    app.post<{ Params: { id: string } }>(`/v1/nodes/:id/${action}`, async (req, reply) => {
      const outcome = await host.admin((requestId) => ({ type: `${action}_node`, requestId, nodeId: req.params.id }))
      if (outcome.ok && action === 'revoke') host.onRevoked((outcome.detail as { peerId: string }).peerId)
      return send(reply, outcome)
    })
  }
}
