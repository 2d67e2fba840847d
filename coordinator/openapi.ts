// The OpenAPI 3.1 document of the API, generated from the zod schemas that validate the
// requests (protocol/api.ts, the template schema) and the response schemas below; one entry
// per route of the route table (ROUTES), so a route without documentation fails at start-up
// and in the tests, not in production. Served at GET /v1/openapi.json.
import { REASON_CODES } from '../protocol/reasons.js'
import { z } from 'zod'
import {
  AuditQuerySchema, CancelBodySchema, EmptyBodySchema, EnrollmentBodySchema, ExceptionBodySchema, FilterBodySchema, InstancesQuerySchema, JobsQuerySchema,
  ListBodySchema, LogsQuerySchema, NextQuerySchema, NodesQuerySchema, PageQuerySchema, PlanQuerySchema, TokenBodySchema, CursorPageQuerySchema, ReportQuerySchema,
} from '../protocol/api.js'
import { JobTemplateSchema } from '../protocol/template.js'
import { PUBLIC_ROUTES, ROUTES, routeKey, type Method } from './access.js'

const str = z.string()
const time = z.string().nullable()
const loose = z.looseObject({})
const problems = z.array(z.object({ path: str, message: str }))
export const ErrorSchema = z.looseObject({ error: str, problems: problems.optional(), requiredRole: str.optional() })
const items = <T extends z.ZodType>(item: T) => z.looseObject({ items: z.array(item) })
const page = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), pagination: z.object({ page: z.number(), size: z.number(), total: z.number() }) })
/** A page of history: `next` is the cursor of the page after it (null: the last page); total null: not counted. */
const cursorPagination = z.object({ page: z.number(), size: z.number(), total: z.number().nullable(), next: str.nullable() })
const cursorPage = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), pagination: cursorPagination })
const counts = z.record(str, z.number())
const groupCounts = z.array(z.object({ group: z.number(), pending: z.number(), running: z.number(), success: z.number(), failure: z.number(), skipped: z.number() }))

const JobSummary = z.object({ id: str, name: str, status: str, createdAt: time, scheduleRule: str, runOf: str.optional(), instances: z.object({ total: z.number().int(), byStatus: z.record(z.string(), z.number().int()) }).describe('all the job\'s instances, not only a page: how many, by status') })
const InstanceSummary = z.object({
  id: str, jobId: str, status: str, occurrenceAt: time, reason: str.optional(), quorumMissing: z.array(str).optional(), createdAt: time, updatedAt: time, counts,
})
const Step = z.looseObject({ number: z.number(), name: str, status: str, attempts: z.number(), exitCode: z.number().nullable(), stdout: str, stderr: str })
const Run = z.object({ runId: str, nodeId: str, group: z.number(), batch: z.number(), status: str, reason: str.optional(), reasonCode: z.enum(REASON_CODES).optional(), startedAt: time, finishedAt: time, receivedAt: time, steps: z.array(Step) })
const Node = z.object({ nodeId: str, alive: z.boolean(), peerId: str, publicKey: str, facts: z.record(str, str), skills: z.record(str, z.array(str)), agentVersion: str, addrs: z.array(str), firstSeenAt: str, lastSeenAt: str })
/** One server-sent event's data (coordinator/events.ts StreamEvent). */
export const StreamEventSchema = z.looseObject({ id: str, type: str, at: str, jobId: str, instanceId: str, counts: groupCounts })

interface Doc {
  summary: string
  params?: string[]
  query?: z.ZodType
  body?: z.ZodType
  /** The body is a Courier job template: JSON, YAML or TOML. */
  template?: boolean
  ok?: number
  response: z.ZodType
  /** Not JSON: text/plain, text/event-stream, application/octet-stream. */
  produces?: string
}

const admin = (summary: string, body: z.ZodType = EmptyBodySchema, ok = 200): Doc => ({ summary, body, ok, response: loose })

/** Every route of ROUTES (and the public ones), documented. */
export const API_DOCS: Record<string, Doc> = {
  'GET /healthz': { summary: 'liveness', response: z.object({ ok: z.boolean() }) },
  'GET /metrics': { summary: 'Prometheus metrics (text format)', response: str, produces: 'text/plain' },
  'GET /v1/openapi.json': { summary: 'this document', response: loose },
  'GET /v1/jobs': { summary: 'jobs, newest first, with the next occurrence and the last instance', query: JobsQuerySchema, response: page(JobSummary.extend({ nextAt: time, lastInstance: z.object({ id: str, status: str }).nullable() })) },
  'GET /v1/jobs/:id': { summary: 'one job with its template, its latest 100 instance ids (oldest of them first; all: GET /v1/instances?job=ID) and its instance count', response: JobSummary.extend({ template: loose, instanceIds: z.array(str), instanceCount: z.number() }) },
  'GET /v1/jobs/:id/next': { summary: 'next occurrences', query: NextQuerySchema, response: items(z.looseObject({ at: str })) },
  'GET /v1/jobs/:id/events': { summary: 'live progress of every instance of the job (server-sent events; Last-Event-ID resumes)', response: str, produces: 'text/event-stream' },
  'GET /v1/instances': { summary: 'instances, newest first (finished ones read from the store); follow pagination.next with cursor', query: InstancesQuerySchema, response: cursorPage(InstanceSummary) },
  'GET /v1/instances/:id': { summary: 'one instance with its run counts', response: InstanceSummary },
  'GET /v1/instances/:id/events': { summary: 'live progress of one instance (server-sent events; Last-Event-ID resumes)', response: str, produces: 'text/event-stream' },
  'GET /v1/instances/:id/runs': { summary: 'the runs of an instance', query: PageQuerySchema, response: page(Run) },
  'GET /v1/runs/:id': { summary: 'one run with its steps and attempts', response: Run },
  'GET /v1/runs/:id/logs': { summary: 'stdout and stderr of each step (last attempt) with the attempt log', query: LogsQuerySchema, response: z.looseObject({ runId: str, nodeId: str, status: str, items: z.array(Step.extend({ step: z.number() }).omit({ number: true })) }) },
  'GET /v1/runs/:id/artifacts': { summary: 'the artifacts of a run', response: items(z.object({ step: z.number(), name: str, encoding: str, bytes: z.number(), truncated: z.boolean() })) },
  'GET /v1/runs/:id/steps/:step/artifacts/:name': { summary: 'one artifact', response: str, produces: 'application/octet-stream' },
  'GET /v1/reports/:id': { summary: 'the report of an instance, or of a job: a page of its instances in occurrence order (20 unless size says otherwise), each with its runs', query: ReportQuerySchema, response: z.object({ job: JobSummary, instances: z.array(InstanceSummary.extend({ runs: z.array(Run) })), pagination: cursorPagination.optional() }) },
  'GET /v1/nodes': { summary: 'enrolled nodes', query: NodesQuerySchema, response: page(Node) },
  'GET /v1/nodes/:id': { summary: 'one node', response: Node },
  'GET /v1/nodes/:id/runs': { summary: 'the runs of a node, newest first (from the store); follow pagination.next with cursor', query: CursorPageQuerySchema, response: cursorPage(Run.extend({ instanceId: str, jobId: str })) },
  'GET /v1/exceptions': { summary: 'global exception windows', query: PageQuerySchema, response: page(loose) },
  'GET /v1/lists': { summary: 'saved node lists', query: PageQuerySchema, response: page(loose) },
  'GET /v1/filters': { summary: 'saved node filters', query: PageQuerySchema, response: page(loose) },
  'POST /v1/validate': { summary: 'parse and check a template as POST /v1/jobs would; nothing is stored', template: true, response: z.object({ ok: z.boolean(), problems }) },
  'POST /v1/ui/codes': { summary: 'a one-time web console login code (5 minutes) for the bearer token\'s role', ok: 201, response: z.object({ code: str, expiresAt: str, path: str }) },
  'GET /v1/ui/whoami': { summary: 'the token name and role of this request', response: z.object({ name: str.nullable(), role: str.nullable() }) },
  'GET /ui': { summary: 'redirect to /ui/', response: str, produces: 'text/html' },
  'GET /ui/': { summary: 'the web console', response: str, produces: 'text/html' },
  'GET /ui/app.js': { summary: 'the web console script', response: str, produces: 'text/javascript' },
  'GET /ui/app.css': { summary: 'the web console style sheet', response: str, produces: 'text/css' },
  'POST /v1/ui/session': { summary: 'exchange a one-time login code for a session cookie', body: z.object({ code: str }), response: z.object({ ok: z.boolean(), expiresAt: str }) },
  'POST /v1/ui/logout': { summary: 'end this console session', body: EmptyBodySchema, response: z.object({ ok: z.boolean() }) },
  'POST /v1/jobs': { summary: 'submit a template', template: true, ok: 201, response: z.object({ id: str, instanceIds: z.array(str), targets: z.number() }) },
  'POST /v1/plan': { summary: 'the plan of a template; nothing runs (simulate=K: also its simulation over K seeds, in a child process)', template: true, query: PlanQuerySchema, response: z.looseObject({ groups: z.array(loose), simulation: loose.optional() }) },
  'POST /v1/jobs/:id/cancel': admin('cancel a job or some occurrences', CancelBodySchema),
  'POST /v1/jobs/:id/run': admin('a manual run: a new immediate job with the stored job\'s template', EmptyBodySchema, 201),
  'DELETE /v1/jobs/:id': admin('delete a job, its instances and runs (409 while an instance is live)'),
  'POST /v1/exceptions': admin('add a global exception window', ExceptionBodySchema),
  'DELETE /v1/exceptions/:id': admin('remove a global exception window'),
  'PUT /v1/lists/:id': admin('create or replace a saved list', ListBodySchema),
  'DELETE /v1/lists/:id': admin('delete a saved list'),
  'PUT /v1/filters/:id': admin('create or replace a saved filter', FilterBodySchema),
  'DELETE /v1/filters/:id': admin('delete a saved filter'),
  'GET /v1/tokens': { summary: 'API tokens (never the token or its hash)', query: PageQuerySchema, response: page(z.looseObject({ name: str, role: str })) },
  'POST /v1/tokens': admin('create a token (shown once)', TokenBodySchema, 201),
  'DELETE /v1/tokens/:name': admin('revoke a token'),
  'GET /v1/audit': { summary: 'audit records, oldest first', query: AuditQuerySchema, response: z.object({ items: z.array(loose), more: z.boolean() }) },
  'GET /v1/enrollments': { summary: 'enrolment tokens', query: PageQuerySchema, response: page(loose) },
  'POST /v1/enrollments': admin('create an enrolment token (shown once)', EnrollmentBodySchema, 201),
  'DELETE /v1/enrollments/:id': admin('delete an enrolment token'),
  'GET /v1/nodes/pending': { summary: 'enrolments awaiting approval', query: PageQuerySchema, response: page(loose) },
  'GET /v1/nodes/revoked': { summary: 'revoked nodes', query: PageQuerySchema, response: page(loose) },
  'POST /v1/nodes/:id/approve': admin('approve an enrolment'),
  'POST /v1/nodes/:id/reject': admin('reject an enrolment'),
  'POST /v1/nodes/:id/revoke': admin('revoke a node'),
}

const json = (schema: z.ZodType) => z.toJSONSchema(schema, { io: 'input', target: 'draft-2020-12', unrepresentable: 'any' }) as Record<string, unknown>
const jsonOut = (schema: z.ZodType) => z.toJSONSchema(schema, { io: 'output', target: 'draft-2020-12', unrepresentable: 'any' }) as Record<string, unknown>

/** Query parameters of an object schema, one per property. */
function queryParams(schema: z.ZodType): unknown[] {
  const s = json(schema) as { properties?: Record<string, unknown>; required?: string[] }
  return Object.entries(s.properties ?? {}).map(([name, sch]) => ({ name, in: 'query', required: (s.required ?? []).includes(name), schema: sch }))
}

function operation(method: Method, url: string, role: string | undefined, d: Doc): Record<string, unknown> {
  const params = [...url.matchAll(/:(\w+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }))
  const content = (schema: Record<string, unknown>) => ({ [d.produces ?? 'application/json']: { schema } })
  const body = d.template
    ? { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/JobTemplate' } }, 'application/yaml': { schema: { type: 'string' } }, 'application/toml': { schema: { type: 'string' } } } }
    : d.body ? { required: false, content: { 'application/json': { schema: json(d.body) } } } : undefined
  return {
    summary: d.summary,
    ...(role ? { security: [{ bearer: [] }], 'x-chorus-role': role } : { security: [] }),
    parameters: [...params, ...(d.query ? queryParams(d.query) : [])],
    ...(body ? { requestBody: body } : {}),
    responses: {
      [String(d.ok ?? 200)]: { description: 'ok', content: content(d.produces ? { type: 'string' } : jsonOut(d.response)) },
      default: { description: 'an error: 400 bad input, 401/403 token, 404 not found, 409 conflict, 422 cannot be targeted', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
    },
  }
}

let cached: Record<string, unknown> | undefined

/** The document; throws when a route of the table is not documented. */
export function openApiDocument(version = '0.1.0'): Record<string, unknown> {
  if (cached) return cached
  const paths: Record<string, Record<string, unknown>> = {}
  const routes = [...ROUTES.map((r) => ({ ...r, role: r.role as string | undefined })), ...PUBLIC_ROUTES.map((r) => ({ ...r, role: undefined }))]
  for (const r of routes) {
    const d = API_DOCS[routeKey(r.method, r.url)]
    if (!d) throw new Error(`route ${r.method} ${r.url} is not documented (coordinator/openapi.ts API_DOCS)`)
    const path = r.url.replace(/:(\w+)/g, '{$1}')
    ;(paths[path] ??= {})[r.method.toLowerCase()] = operation(r.method, r.url, r.role, d)
  }
  cached = {
    openapi: '3.1.0',
    info: { title: 'Chorus coordinator API', version },
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: { Error: jsonOut(ErrorSchema), JobTemplate: json(JobTemplateSchema) },
    },
  }
  return cached
}
