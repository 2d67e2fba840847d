// Operators' requests that are not about jobs: API tokens, saved lists and filters; and the audit
// log every request with an actor writes (in the same persist batch as the change it records).
import type { Role } from '../protocol/api.js'
import { MAX_TARGET_NODES } from '../protocol/wire.js'
import { selectNodes } from './registry.js'
import { type Actor, type AuditRecord, type CoordinatorEffect, type CoordinatorState, MAX_SAVED, MAX_TOKENS, type RequestEvent, type TokenRecord } from './state.js'
import { key } from './storekeys.js'

/** What each request event changes, for the audit log (a new request event is one line here). */
export const AUDITED: { [T in RequestEvent['type']]: (e: Extract<RequestEvent, { type: T }>) => { action: string; object: string } } = {
  submit: (e) => ({ action: 'job.submit', object: e.jobId }),
  cancel: (e) => ({ action: e.occurrences ? 'job.cancel_occurrences' : 'job.cancel', object: e.jobId }),
  run_job: (e) => ({ action: 'job.run', object: e.jobId }),
  delete_job: (e) => ({ action: 'job.delete', object: e.jobId }),
  add_exception: (e) => ({ action: 'exception.add', object: e.exception.id }),
  remove_exception: (e) => ({ action: 'exception.remove', object: e.id }),
  save_list: (e) => ({ action: 'list.set', object: e.list.id }),
  save_filter: (e) => ({ action: 'filter.set', object: e.filter.id }),
  delete_saved: (e) => ({ action: `${e.kind}.delete`, object: e.id }),
  create_token: (e) => ({ action: 'token.create', object: e.token.name }),
  revoke_token: (e) => ({ action: 'token.revoke', object: e.name }),
  create_enrollment: (e) => ({ action: 'enrollment.create', object: e.enrollment.id }),
  delete_enrollment: (e) => ({ action: 'enrollment.delete', object: e.id }),
  revoke_node: (e) => ({ action: 'node.revoke', object: e.nodeId }),
  approve_node: (e) => ({ action: 'node.approve', object: e.nodeId }),
  reject_node: (e) => ({ action: 'node.reject', object: e.nodeId }),
}

export function refusal(event: RequestEvent, error: string): CoordinatorEffect[] {
  const log: CoordinatorEffect = { type: 'log', level: 'warn', msg: 'request refused: its input made the core throw; nothing changed', fields: { type: event.type, requestId: event.requestId, error } }
  if (event.type === 'submit') return [log, { type: 'reply_submit', requestId: event.requestId, outcome: { ok: false, problems: [{ path: '$', message: error }] } }]
  return [log, { type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 400, error } }]
}

export function auditEffect(event: RequestEvent, actor: Actor, effects: CoordinatorEffect[], now: number): CoordinatorEffect {
  const what = (AUDITED[event.type] as (e: RequestEvent) => { action: string; object: string })(event)
  return auditPut(now, event.requestId, { token: actor.name, role: actor.role, ...what, outcome: outcomeOf(event.requestId, effects) })
}

/** One audit record, written with the change it records (same persist batch). */
export function auditPut(now: number, requestId: string, what: Omit<AuditRecord, 'at' | 'requestId'>): CoordinatorEffect {
  const record: AuditRecord = { at: new Date(now).toISOString(), requestId, ...what }
  return { type: 'persist', puts: [{ key: key.audit(now, requestId), value: record }], dels: [] }
}

/** An audit record's outcome is cut to this many characters (a refusal may list many problems). */
export const MAX_AUDIT_OUTCOME_CHARS = 1_000

export function outcomeOf(requestId: string, effects: CoordinatorEffect[]): string {
  for (const e of effects) {
    if ((e.type !== 'reply_admin' && e.type !== 'reply_submit') || e.requestId !== requestId) continue
    if (e.outcome.ok) return 'ok'
    const text = 'status' in e.outcome ? `${e.outcome.status} ${e.outcome.error}` : `422 ${e.outcome.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`
    return text.slice(0, MAX_AUDIT_OUTCOME_CHARS)
  }
  return 'no reply'
}

/** The token with this hash, unless it expired. */
export function tokenByHash(state: CoordinatorState, hash: string, now: number): TokenRecord | undefined {
  const name = state.tokenByHash.get(hash)
  const t = name === undefined ? undefined : state.tokens.get(name)
  return t && t.hash === hash && (t.expiresAt === undefined || t.expiresAt > now) ? t : undefined
}

export function onToken(state: CoordinatorState, event: Extract<RequestEvent, { type: 'create_token' | 'revoke_token' }>, effects: CoordinatorEffect[]): void {
  const answer = (outcome: Extract<CoordinatorEffect, { type: 'reply_admin' }>['outcome']) => effects.push({ type: 'reply_admin', requestId: event.requestId, outcome })
  if (event.type === 'revoke_token') {
    const t = state.tokens.get(event.name)
    if (!t) return void answer({ ok: false, status: 404, error: `no token named ${event.name}` })
    state.tokens.delete(t.name)
    state.tokenByHash.delete(t.hash)
    effects.push({ type: 'persist', puts: [], dels: [key.token(t.name)] })
    return void answer({ ok: true, detail: { revoked: t.name } })
  }
  const t = event.token
  if (state.tokens.has(t.name)) return void answer({ ok: false, status: 409, error: `a token named ${t.name} exists; revoke it first or choose another name` })
  if (state.tokens.size >= MAX_TOKENS) return void answer({ ok: false, status: 409, error: `at most ${MAX_TOKENS} tokens; revoke one first` })
  state.tokens.set(t.name, t)
  state.tokenByHash.set(t.hash, t.name)
  effects.push({ type: 'persist', puts: [{ key: key.token(t.name), value: t }], dels: [] })
  answer({ ok: true, detail: tokenView(t) })
}

/** What the API shows of a token: never its hash. */
export function tokenView(t: TokenRecord): { name: string; role: Role; createdAt: string; expiresAt: string | null; createdBy?: string } {
  return { name: t.name, role: t.role, createdAt: new Date(t.createdAt).toISOString(), expiresAt: t.expiresAt === undefined ? null : new Date(t.expiresAt).toISOString(), ...(t.createdBy ? { createdBy: t.createdBy } : {}) }
}

/** A saved node list (`PUT /v1/lists/:id`): at most MAX_TARGET_NODES nodes, MAX_SAVED lists. */
export function onSaveList(state: CoordinatorState, event: Extract<RequestEvent, { type: 'save_list' }>, effects: CoordinatorEffect[]): void {
  const problems = event.list.nodes.length > MAX_TARGET_NODES ? [`at most ${MAX_TARGET_NODES} nodes`] : []
  if (!state.lists.has(event.list.id) && state.lists.size >= MAX_SAVED) problems.push(`at most ${MAX_SAVED} saved lists`)
  if (problems.length) return void effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 400, error: problems.join('; ') } })
  state.lists.set(event.list.id, event.list)
  effects.push({ type: 'persist', puts: [{ key: key.list(event.list.id), value: event.list }], dels: [] })
  effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: true, detail: event.list } })
}

/** A saved filter (`PUT /v1/filters/:id`), checked against the registry; answered with the nodes it matches now. */
export function onSaveFilter(state: CoordinatorState, event: Extract<RequestEvent, { type: 'save_filter' }>, effects: CoordinatorEffect[]): void {
  const check = selectNodes(state, event.filter, 'body')
  if ('problems' in check) return void effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 400, error: check.problems.map((p) => `${p.path}: ${p.message}`).join('; '), problems: check.problems } })
  if (!state.filters.has(event.filter.id) && state.filters.size >= MAX_SAVED) return void effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 409, error: `at most ${MAX_SAVED} saved filters` } })
  state.filters.set(event.filter.id, event.filter)
  effects.push({ type: 'persist', puts: [{ key: key.filter(event.filter.id), value: event.filter }], dels: [] })
  effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: true, detail: { ...event.filter, matches: check.nodes } } })
}

export function onDeleteSaved(state: CoordinatorState, event: Extract<RequestEvent, { type: 'delete_saved' }>, effects: CoordinatorEffect[]): void {
  const map = event.kind === 'list' ? state.lists : state.filters
  if (!map.delete(event.id)) return void effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: false, status: 404, error: `no saved ${event.kind} ${event.id}` } })
  effects.push({ type: 'persist', puts: [], dels: [event.kind === 'list' ? key.list(event.id) : key.filter(event.id)] })
  effects.push({ type: 'reply_admin', requestId: event.requestId, outcome: { ok: true, detail: { deleted: event.id } } })
}
