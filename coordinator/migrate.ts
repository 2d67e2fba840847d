// A store written before history moved out of memory (jobs listing their instanceIds, no
// indexes): its indexes, its finished instances' run counts and its jobs' counts are built once,
// in bounded batches, before the first restore that needs them; `meta/history` marks it done.
import type { Logger } from 'pino'
import { IDX, recordKey, type InstanceRecord, type InstanceStatus, type JobHistory, type JobRecord, type RunRecord } from './core.js'
import type { Store, StoreOp } from './store.js'

export const HISTORY_MARK = 'meta/history'
/** Instances indexed per batch during the migration. */
export const MIGRATE_BATCH_INSTANCES = 500

export async function migrateHistory(store: Store, logger: Logger): Promise<void> {
  if (await store.get(HISTORY_MARK) !== undefined) return
  // Only a job record without counts (it lists instanceIds) says the store predates the indexes.
  let legacy = false
  for await (const [, v] of store.scan({ prefix: 'job/' })) if (!(v as Partial<JobRecord>).history) { legacy = true; break }
  if (!legacy) return void await store.batch([{ type: 'put', key: HISTORY_MARK, value: { v: 1, migratedInstances: 0 } }])
  const histories = new Map<string, JobHistory & { latestAt?: number }>()
  let migrated = 0
  let after: string | undefined
  for (;;) {
    const batch: InstanceRecord[] = []
    for await (const [k, v] of store.scan({ prefix: 'instance/', ...(after ? { gt: after } : {}), limit: MIGRATE_BATCH_INSTANCES })) { after = k; batch.push(v as InstanceRecord) }
    if (batch.length === 0) break
    const ops: StoreOp[] = []
    for (const inst of batch) {
      const runs = (await store.getMany(inst.runIds.map(recordKey.run))).filter((r): r is RunRecord => r !== undefined)
      ops.push(
        { type: 'put', key: IDX.job(inst.jobId, inst.occurrenceAt, inst.id), value: 1 }, { type: 'put', key: IDX.all(inst.createdAt, inst.id), value: 1 },
        { type: 'put', key: IDX.status(inst.status, inst.createdAt, inst.id), value: 1 }, { type: 'put', key: IDX.jobStatus(inst.jobId, inst.status, inst.occurrenceAt, inst.id), value: 1 },
      )
      for (const r of runs) ops.push({ type: 'put', key: IDX.node(r.nodeId, inst.createdAt, r.runId), value: 1 })
      if (inst.status !== 'running' && !inst.counts) {
        const counts: Record<string, number> = {}
        for (const r of runs) counts[r.status] = (counts[r.status] ?? 0) + 1
        ops.push({ type: 'put', key: recordKey.instance(inst.id), value: { ...inst, counts } })
      }
      const h = histories.get(inst.jobId) ?? { count: 0, byStatus: {} }
      h.count++
      h.byStatus[inst.status as InstanceStatus] = (h.byStatus[inst.status as InstanceStatus] ?? 0) + 1
      if (h.latestAt === undefined || inst.createdAt >= h.latestAt) { h.latestAt = inst.createdAt; h.latest = { id: inst.id, status: inst.status } }
      histories.set(inst.jobId, h)
    }
    await store.batch(ops)
    migrated += batch.length
  }
  const jobs: StoreOp[] = []
  for await (const [k, v] of store.scan({ prefix: 'job/' })) {
    const job = v as JobRecord & { instanceIds?: string[] }
    if (job.history && job.instanceIds === undefined) continue
    const { latestAt: _, ...h } = histories.get(job.jobId) ?? { count: 0, byStatus: {} }
    delete job.instanceIds
    jobs.push({ type: 'put', key: k, value: { ...job, history: h } })
  }
  await store.batch([...jobs, { type: 'put', key: HISTORY_MARK, value: { v: 1, migratedInstances: migrated } }])
  if (migrated > 0) logger.info({ instances: migrated, jobs: jobs.length }, 'indexed the history of a store written before history left memory')
}
