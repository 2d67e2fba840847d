// One schema per input: every HTTP request body and query string of the coordinator API, the
// agent configuration file and the coordinator's options are zod schemas here, with their
// defaults. Bad input is answered with the shape the template parser uses everywhere:
// `{error, problems: [{path, message}]}` (protocol/parse.ts Problem). No I/O.
import { z } from 'zod'
import { FilterConstraintsSchema, MAX_RRULE_CHARS, templateErrorMap } from './template.js'
import { issuesToProblems, type Problem } from './parse.js'
import { MAX_FACT_CHARS, MAX_FIXED_ATTRIBUTES } from './wire.js'

export type { Problem }

export const ROLES = ['reader', 'operator', 'admin'] as const
export type Role = (typeof ROLES)[number]

/** Ids of saved lists, filters and global exceptions; token names. */
export const IdSchema = z.string().regex(/^[A-Za-z0-9._:@-]{1,128}$/, 'expected 1 to 128 letters, digits or . _ : @ -')
const OBJECT_ID = z.string().min(1).max(256)
const MAX_QUERY_TEXT = 2048

/** An ISO 8601 time (2026-11-24T05:00:00Z) or ms since the epoch, as ms. */
export const TimeSchema = z.union([
  z.number().int().nonnegative(),
  z.string().max(64).refine((s) => Number.isFinite(Date.parse(s)), 'expected an ISO 8601 time, e.g. 2026-11-24T05:00:00Z').transform((s) => Date.parse(s)),
], { error: 'expected an ISO 8601 time (e.g. 2026-11-24T05:00:00Z) or ms since the epoch' })

/** `30d`, `12h`, `15m`, `90s`, or a number of seconds; as ms. At most ten years. */
export const TtlSchema = z.union([z.number().int().positive(), z.string().regex(/^\d{1,9}[smhd]?$/, 'expected a duration such as 30d, 12h, 15m, 90s or seconds')])
  .transform((v) => {
    const text = String(v)
    const unit = /[smhd]$/.test(text) ? text.slice(-1) : 's'
    return Number.parseInt(text, 10) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit as 's' | 'm' | 'h' | 'd']
  })
  .refine((ms) => ms >= 1_000 && ms <= 10 * 365 * 86_400_000, 'expected a duration between 1 s and 10 years')

export const CancelBodySchema = z.strictObject({
  occurrences: z.array(TimeSchema).min(1, 'expected a non-empty array of ISO 8601 times or ms').max(1000).optional(),
})

export const ExceptionBodySchema = z.strictObject({
  id: IdSchema,
  rrule: z.string().min(1).max(MAX_RRULE_CHARS, `at most ${MAX_RRULE_CHARS} characters`),
  duration: z.number().int().min(1, 'expected a whole number of minutes, at least 1').max(1_000_000),
})

export const ListBodySchema = z.strictObject({
  name: z.string().min(1).max(256).optional(),
  nodes: z.array(z.string().min(1).max(256)).max(100_000),
})

export const FilterBodySchema = z.strictObject({
  name: z.string().min(1).max(256).optional(),
  query: z.string().max(MAX_QUERY_TEXT).optional(),
  constraints: FilterConstraintsSchema.optional(),
}).refine((b) => b.query !== undefined || b.constraints !== undefined, 'expected "query" and/or "constraints"')

export const TokenBodySchema = z.strictObject({
  name: IdSchema,
  role: z.enum(ROLES),
  ttl: TtlSchema.optional(),
})

/** `POST /v1/enrollments`: an enrolment token for `uses` nodes (default 1), valid for `ttl` (default 1h), fixing `attributes` on the nodes it enrols. */
export const EnrollmentBodySchema = z.strictObject({
  name: IdSchema.optional(),
  uses: z.number().int().min(1).max(100_000).default(1),
  ttl: TtlSchema.default(3_600_000),
  attributes: z.record(z.string().min(1).max(128), z.string().max(MAX_FACT_CHARS)).refine((r) => Object.keys(r).length <= MAX_FIXED_ATTRIBUTES, `at most ${MAX_FIXED_ATTRIBUTES} attributes`).default({}),
})

/** An empty object: state-changing routes that need no body (DELETE) accept `{}` or nothing. */
export const EmptyBodySchema = z.strictObject({})

export const IdParamsSchema = z.object({ id: IdSchema })
export const NameParamsSchema = z.object({ name: IdSchema })
export const ObjectParamsSchema = z.object({ id: OBJECT_ID })

export const NextQuerySchema = z.object({ count: z.coerce.number().int().min(1).max(1000).default(10) })
/** Every list pages: `page` (from 1) and `size` (at most MAX_PAGE_SIZE), or Courier's `pagination.page` / `pagination.size`. */
export const MAX_PAGE_SIZE = 1000
const pageNumber = z.coerce.number().int().min(1)
const pageSize = z.coerce.number().int().min(1).max(MAX_PAGE_SIZE)
const PAGE_FIELDS = { page: pageNumber.optional(), size: pageSize.optional(), 'pagination.page': pageNumber.optional(), 'pagination.size': pageSize.optional() }
type PageFields = { page?: number; size?: number; 'pagination.page'?: number; 'pagination.size'?: number }
const paged = <T extends PageFields>(q: T) => {
  const { page, size, 'pagination.page': pp, 'pagination.size': ps, ...rest } = q
  return { ...rest, page: pp ?? page ?? 1, size: ps ?? size ?? 100 }
}
export const PageQuerySchema = z.object(PAGE_FIELDS).transform(paged)
export const NodesQuerySchema = z.object({ search: z.string().max(MAX_QUERY_TEXT).optional(), ...PAGE_FIELDS }).transform(paged)
export const JOB_STATUSES = ['active', 'canceled', 'completed'] as const
export const INSTANCE_STATUSES = ['running', 'success', 'failure', 'excluded', 'canceled', 'quorum_failed'] as const
export const JobsQuerySchema = z.object({ status: z.enum(JOB_STATUSES).optional(), name: z.string().max(256).optional(), ...PAGE_FIELDS }).transform(paged)
/** `pagination.next` of the previous page: lists of history (instances, a node's runs, a job's report) page after it, stable while items arrive. */
const CURSOR = { cursor: z.string().min(1).max(600).optional() }
export const InstancesQuerySchema = z.object({ job: OBJECT_ID.optional(), status: z.enum(INSTANCE_STATUSES).optional(), ...CURSOR, ...PAGE_FIELDS }).transform(paged)
export const CursorPageQuerySchema = z.object({ ...CURSOR, ...PAGE_FIELDS }).transform(paged)
/** A job's report shows this many instances per page unless `size` says otherwise (each with all its runs). */
export const REPORT_PAGE_SIZE = 20
export const ReportQuerySchema = z.object({ ...CURSOR, ...PAGE_FIELDS }).transform((q) => ({ ...paged(q), size: q['pagination.size'] ?? q.size ?? REPORT_PAGE_SIZE }))
/** `POST /v1/plan?simulate=K&profile=P`: simulate the plan over K seeds (at most 20). */
export const PlanQuerySchema = z.object({ simulate: z.coerce.number().int().min(1).max(20).optional(), profile: z.enum(['datacenter', 'wan', 'edge']).default('datacenter') })

/** The link profiles a plan can be simulated over (sim/network.ts LINK_PROFILES has one of each). */
export type PlanProfile = z.infer<typeof PlanQuerySchema>['profile']

/** What `POST /v1/plan?simulate=K` answers (the simulator computes it: sim/plan.ts; the coordinator only relays it). */
export interface PlanSimulation {
  seeds: number
  profile: PlanProfile
  nodes: number
  /** Seconds from submit to the instance decided (seeds where it was decided). */
  completion_s: { p50: number | null; p99: number | null; undecided_seeds: number }
  groups: { group: number; nodes: number; most_running_at_once: number; failures_max: number; failure_budget: number; within_budget: boolean }[]
  /** Per safety property: ok, or the seeds that violated it. */
  safety: Record<string, 'ok' | { violated_seeds: number[] }>
  outcomes: Record<string, number>
}
export const LogsQuerySchema = z.object({ step: z.coerce.number().int().min(1).max(1000).optional() })
export const AuditQuerySchema = z.object({
  since: TimeSchema.optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
})

/** The agent configuration file (`chorus agent --config FILE`); every field optional. `allow` is checked by agent/allowlist.ts. */
export const AgentConfigSchema = z.strictObject({
  allow: z.unknown().optional(),
  interpreters: z.array(z.strictObject({ name: z.string().min(1).max(256), path: z.string().min(1).max(4096), version: z.string().min(1).max(64) })).max(64).optional(),
  attributes: z.record(z.string().max(128), z.string().max(4096)).optional(),
  restartMode: z.enum(['real', 'simulate']).optional(),
})

const HostPortSchema = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'expected HOST:PORT, e.g. 127.0.0.1:7070')
/** `--api-host NAME[:PORT]`: a host name clients may use in the Host header. */
export const ApiHostSchema = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/, 'expected NAME or NAME:PORT')

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)
}

/** The coordinator's options (`chorus coordinator`), with their defaults. */
export const CoordinatorOptionsSchema = z.object({
  dataDir: z.string().min(1),
  listen: z.array(z.string().min(1)).default(['/ip4/127.0.0.1/tcp/7700']),
  api: HostPortSchema.default('127.0.0.1:7070'),
  apiHosts: z.array(ApiHostSchema).default([]),
  tlsCert: z.string().min(1).optional(),
  tlsKey: z.string().min(1).optional(),
  /** `--retain-days D`: finished instances, their runs and artifacts, and audit records older than D days are pruned. */
  retainDays: z.number().positive().max(36_500).default(30),
}).superRefine((o, ctx) => {
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) ctx.addIssue({ code: 'custom', path: ['tlsKey'], message: 'give both --api-tls-cert and --api-tls-key' })
  const host = o.api.replace(/:\d+$/, '')
  if (!isLoopbackHost(host) && o.tlsCert === undefined) {
    ctx.addIssue({ code: 'custom', path: ['api'], message: `refusing to serve the API on ${o.api} without TLS: bearer tokens would cross the network in clear; give --api-tls-cert FILE --api-tls-key FILE, or listen on 127.0.0.1` })
  }
})
export type CoordinatorOptionsInput = z.input<typeof CoordinatorOptionsSchema>

export type Checked<T> = { ok: true; value: T } | { ok: false; problems: Problem[] }

function below(at: string, path: string): string {
  if (at === '' || path === '$') return at === '' ? path : at
  return path.startsWith('[') ? `${at}${path}` : `${at}.${path}`
}

/** Validates one input; problems name their path below `at` ("body", "query", "params"; "" for a file's own paths). */
export function check<S extends z.ZodType>(schema: S, input: unknown, at: string): Checked<z.output<S>> {
  const r = schema.safeParse(input, { error: templateErrorMap, reportInput: true })
  if (r.success) return { ok: true, value: r.data }
  return { ok: false, problems: issuesToProblems(r.error.issues).map((p) => ({ path: below(at, p.path), message: p.message })) }
}

/** Problems as one line (for errors thrown at start-up and CLI messages). */
export function problemsText(problems: Problem[]): string {
  return problems.map((p) => `${p.path}: ${p.message}`).join('; ')
}

/** JSON text to a value, or a problem at `at`. An empty text is `{}`. */
export function parseJsonText(text: string, at = 'body'): Checked<unknown> {
  if (text.trim() === '') return { ok: true, value: {} }
  try {
    return { ok: true, value: JSON.parse(text) as unknown }
  } catch (err) {
    return { ok: false, problems: [{ path: at, message: `not JSON: ${(err as Error).message}` }] }
  }
}
