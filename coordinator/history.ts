// Reads of jobs' history for the API: live instances and runs from memory, finished ones from
// the store by key, through the indexes the core writes (IDX in coordinator/core.ts). Pages are
// scans of an index in key order; a page's `next` cursor is the last key it showed, so the next
// page starts right after it whatever arrived or left meanwhile (keys end in immutable times).
import { AUDIT_PREFIX, IDX, idOfIndexKey, recordKey, type CoordinatorState, type InstanceRecord, type InstanceStatus, type RunRecord } from './core.js'
import { prefixEnd, type Store } from './store.js'

export interface PageQuery {
  page: number
  size: number
  /** `pagination.next` of the previous page: the page after it (then `page` only labels the answer). */
  cursor?: string
}

export interface KeyPage<T> {
  items: T[]
  pagination: { page: number; size: number; total: number | null; next: string | null }
}

/** Index keys skipped at most to reach a page without a cursor (page × size); beyond, use the cursor. */
export const MAX_PAGE_SKIP = 100_000

export class CursorError extends Error {}

export class History {
  constructor(private readonly store: Store, private readonly stateOf: () => CoordinatorState) {}

  private get state(): CoordinatorState {
    return this.stateOf()
  }

  async instance(id: string): Promise<InstanceRecord | undefined> {
    return this.state.instances.get(id) ?? (await this.store.get(recordKey.instance(id)) as InstanceRecord | undefined)
  }

  async run(id: string): Promise<RunRecord | undefined> {
    return this.state.runs.get(id) ?? (await this.store.get(recordKey.run(id)) as RunRecord | undefined)
  }

  /** Records by id, in order: those in memory from memory, the others from the store by key; missing ones left out. */
  private async byIds<T>(ids: readonly string[], memory: ReadonlyMap<string, T>, key: (id: string) => string, found = new Map<string, T>()): Promise<T[]> {
    const missing = ids.filter((id) => !memory.has(id) && !found.has(id))
    if (missing.length > 0) (await this.store.getMany(missing.map(key))).forEach((v, i) => { if (v) found.set(missing[i]!, v as T) })
    return ids.map((id) => memory.get(id) ?? found.get(id)).filter((r): r is T => r !== undefined)
  }

  /** Runs by id, in order (those in memory from memory); missing ones left out. */
  runs(ids: readonly string[]): Promise<RunRecord[]> {
    return this.byIds(ids, this.state.runs, recordKey.run)
  }

  /**
   * An instance's runs in its own order: from memory while it is there, else as one range scan
   * of the copies under it (IDX.instanceRun, a covering index); any not found there (a store
   * written before the copies) by key.
   */
  async instanceRuns(instance: InstanceRecord): Promise<RunRecord[]> {
    if (this.state.instances.has(instance.id)) return this.runs(instance.runIds)
    const found = new Map<string, RunRecord>()
    for (const [, v] of await this.store.range({ prefix: IDX.instanceRunPrefix(instance.id), limit: instance.runIds.length })) found.set((v as RunRecord).runId, v as RunRecord)
    return this.byIds<RunRecord>(instance.runIds, NONE, recordKey.run, found)
  }

  instances(ids: readonly string[]): Promise<InstanceRecord[]> {
    return this.byIds(ids, this.state.instances, recordKey.instance)
  }

  /** Runs by status of an instance: its stored counts once finished, else counted from memory. */
  counts(instance: InstanceRecord): Record<string, number> {
    const live = this.state.instances.get(instance.id)
    if (live && live.status === 'running') {
      const counts: Record<string, number> = {}
      for (const id of live.runIds) {
        const status = this.state.runs.get(id)?.status
        if (status) counts[status] = (counts[status] ?? 0) + 1
      }
      return counts
    }
    return { ...((live ?? instance).counts ?? {}) }
  }

  /** Instances, newest first (or, `oldestFirst`, a job's in occurrence order), of a job and/or a status. */
  async instancePage(q: PageQuery & { job?: string; status?: InstanceStatus; oldestFirst?: boolean }): Promise<KeyPage<InstanceRecord>> {
    const prefix = q.job && q.status ? IDX.jobStatusPrefix(q.job, q.status) : q.job ? IDX.jobPrefix(q.job) : q.status ? IDX.statusPrefix(q.status) : IDX.allPrefix
    const page = await this.keyPage(prefix, q, !q.oldestFirst)
    return { items: await this.instances(page.keys.map(idOfIndexKey)), pagination: { page: q.page, size: q.size, total: this.instanceTotal(q.job, q.status), next: page.next } }
  }

  /** A node's runs, newest first (total: null when the page did not see the whole list). */
  async nodeRunPage(nodeId: string, q: PageQuery): Promise<KeyPage<RunRecord>> {
    const page = await this.keyPage(IDX.nodePrefix(nodeId), q, true)
    return { items: await this.runs(page.keys.map(idOfIndexKey)), pagination: { page: q.page, size: q.size, total: page.total ?? null, next: page.next } }
  }

  /** The ids of a job's latest `limit` instances, oldest of them first. */
  async latestInstanceIds(jobId: string, limit: number): Promise<string[]> {
    const out: string[] = []
    for await (const k of this.store.keys({ prefix: IDX.jobPrefix(jobId), reverse: true, limit })) out.push(idOfIndexKey(k))
    return out.reverse()
  }

  /** Instances counted by the jobs in memory (a deleted job's history is pruned after it, and no longer counted). */
  instanceTotal(jobId?: string, status?: InstanceStatus): number {
    const jobs = jobId ? [this.state.jobs.get(jobId)].filter((j) => j !== undefined) : [...this.state.jobs.values()]
    let n = 0
    for (const j of jobs) n += status ? (j.history.byStatus[status] ?? 0) : j.history.count
    return n
  }

  /**
   * One page of an index: `size` keys after the cursor, or after skipping (page-1) × size keys.
   * `total` only when the scan saw the whole index (small ones: the node index has no count).
   */
  private async keyPage(prefix: string, q: PageQuery, newestFirst: boolean): Promise<{ keys: string[]; next: string | null; total?: number }> {
    if (q.cursor !== undefined && !q.cursor.startsWith(prefix)) throw new CursorError(`cursor is not a position in this list (give the pagination.next of its previous page)`)
    const skip = q.cursor !== undefined ? 0 : (q.page - 1) * q.size
    if (skip > MAX_PAGE_SKIP) throw new CursorError(`page ${q.page} of size ${q.size} skips more than ${MAX_PAGE_SKIP} items: follow pagination.next instead`)
    const bound = q.cursor === undefined ? {} : newestFirst ? { lt: q.cursor } : { gt: q.cursor }
    const keys: string[] = []
    let seen = 0
    let more = false
    for await (const k of this.store.keys({ prefix, ...bound, reverse: newestFirst, limit: skip + q.size + 1 })) {
      seen++
      if (seen <= skip) continue
      if (keys.length === q.size) { more = true; break }
      keys.push(k)
    }
    const total = q.cursor === undefined && !more ? seen : undefined
    return { keys, next: more ? keys.at(-1)! : null, ...(total !== undefined ? { total } : {}) }
  }
}

/** No records in memory: instanceRuns reads a finished instance's runs from the store only. */
const NONE: ReadonlyMap<string, never> = new Map<string, never>()

/** Key prefixes never loaded at restore: history (read by key through the indexes), the audit log, store metadata. */
const HISTORY_PREFIXES = ['instance/', 'run/', 'idx/', AUDIT_PREFIX, 'meta/'] as const

/**
 * What a restart loads: every record but history and the audit log, then the live instances
 * (the idx/status/running/ index) with their runs. Finished ones stay in the store.
 */
export async function loadLive(store: Store): Promise<[string, unknown][]> {
  const records: [string, unknown][] = []
  let from = ''
  for (const p of [...HISTORY_PREFIXES].sort()) {
    for await (const entry of store.scan({ gte: from, lt: p })) records.push(entry)
    from = prefixEnd(p)
  }
  for await (const entry of store.scan({ gte: from })) records.push(entry)
  const ids: string[] = []
  for await (const k of store.keys({ prefix: IDX.statusPrefix('running') })) ids.push(idOfIndexKey(k))
  const instances = (await store.getMany(ids.map(recordKey.instance))) as (InstanceRecord | undefined)[]
  for (const inst of instances) {
    if (!inst || inst.status !== 'running') continue
    records.push([recordKey.instance(inst.id), inst])
    const runs = await store.getMany(inst.runIds.map(recordKey.run))
    runs.forEach((r, i) => { if (r) records.push([recordKey.run(inst.runIds[i]!), r]) })
  }
  return records
}


