// The coordinator's store keys: records (job/, instance/, run/, ...), the indexes of finished
// history (idx/), and the audit log (audit/).
import type { InstanceRecord } from './state.js'

export const key = {
  job: (id: string) => `job/${id}`,
  instance: (id: string) => `instance/${id}`,
  run: (id: string) => `run/${id}`,
  /** A finished instance's run, again, under its instance: the report reads them as one range (FINISHED_RUN_PREFIX). */
  finishedRun: (instanceId: string, runId: string) => `${FINISHED_RUN_PREFIX}${instanceId}/${runId}`,
  node: (id: string) => `node/${id}`,
  global: (id: string) => `gexc/${id}`,
  list: (id: string) => `list/${id}`,
  filter: (id: string) => `filter/${id}`,
  token: (name: string) => `token/${name}`,
  audit: (at: number, requestId: string) => `${AUDIT_PREFIX}${String(at).padStart(TIME_KEY_DIGITS, '0')}/${requestId}`,
}

/** Store keys of records (instance/ID, run/ID), for the runtime's reads. */
export const recordKey = { instance: key.instance, run: key.run, job: key.job }

/**
 * Finished instances' runs, copied under `hrun/INSTANCE/RUN` (the record `run/RUN` stays the
 * one every other read uses): a run key is a hash, so an instance's 1,000 runs lie scattered
 * over the whole store and reading them one by one is a random read each; under their instance
 * they are one range scan. Written when the instance settles and with every later write of one
 * of its runs (a late result), deleted with the rest of its history.
 */
export const FINISHED_RUN_PREFIX = 'hrun/'
export const finishedRunPrefix = (instanceId: string): string => `${FINISHED_RUN_PREFIX}${instanceId}/`

/** Digits of a time (ms) in a key: zero-padded, keys sort by time (16 digits reach past the year 300,000). */
export const TIME_KEY_DIGITS = 16

/** A time in ms as TIME_KEY_DIGITS digits: keys sort by it. */
export const timeKey = (ms: number): string => String(Math.max(0, Math.floor(ms))).padStart(TIME_KEY_DIGITS, '0')

/**
 * The indexes of finished history, kept in the store (value 1; the key is the entry). Each key
 * ends in an immutable sort key (a time, then the id), so a page scanned after a key is stable
 * while new instances arrive. Instance → runs is the instance record's own `runIds`.
 */
export const IDX = {
  /** A job's instances by occurrence. */
  job: (jobId: string, occurrenceAt: number, id: string) => `idx/job/${jobId}/${timeKey(occurrenceAt)}/${id}`,
  jobPrefix: (jobId: string) => `idx/job/${jobId}/`,
  /** A job's instances of one status, by occurrence. */
  jobStatus: (jobId: string, status: string, occurrenceAt: number, id: string) => `idx/jobstatus/${jobId}/${status}/${timeKey(occurrenceAt)}/${id}`,
  jobStatusPrefix: (jobId: string, status: string) => `idx/jobstatus/${jobId}/${status}/`,
  /** Every instance by creation. */
  all: (createdAt: number, id: string) => `idx/inst/${timeKey(createdAt)}/${id}`,
  allPrefix: 'idx/inst/',
  /** Instances of one status by creation. */
  status: (status: string, createdAt: number, id: string) => `idx/status/${status}/${timeKey(createdAt)}/${id}`,
  statusPrefix: (status: string) => `idx/status/${status}/`,
  /** A node's runs by their instance's creation. */
  node: (nodeId: string, createdAt: number, runId: string) => `idx/node/${nodeId}/${timeKey(createdAt)}/${runId}`,
  nodePrefix: (nodeId: string) => `idx/node/${nodeId}/`,
} as const

/** The id at the end of an index key. */
export const idOfIndexKey = (k: string): string => k.slice(k.lastIndexOf('/') + 1)

/** Every key an instance's history holds: its record, its runs and its index entries. */
export function historyKeysOf(instance: InstanceRecord, runs: readonly { runId: string; nodeId: string }[]): string[] {
  const keys = [key.instance(instance.id), IDX.job(instance.jobId, instance.occurrenceAt, instance.id), IDX.all(instance.createdAt, instance.id)]
  for (const s of new Set([instance.status, 'running'])) keys.push(IDX.status(s, instance.createdAt, instance.id), IDX.jobStatus(instance.jobId, s, instance.occurrenceAt, instance.id))
  for (const id of instance.runIds) keys.push(key.run(id), key.finishedRun(instance.id, id))
  for (const r of runs) keys.push(IDX.node(r.nodeId, instance.createdAt, r.runId))
  return keys
}

/** Audit records live under this prefix, ordered by time; `auditKeyFrom` gives the first key at or after a time. */
export const AUDIT_PREFIX = 'audit/'

export const auditKeyFrom = (at: number): string => `${AUDIT_PREFIX}${String(Math.max(0, Math.floor(at))).padStart(TIME_KEY_DIGITS, '0')}`
