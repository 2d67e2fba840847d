// The coordinator's store keys: records (job/, instance/, run/, ...), the indexes of finished
// history (idx/), and the audit log (audit/).
import type { InstanceRecord } from './state.js'

export const key = {
  job: (id: string) => `job/${id}`,
  instance: (id: string) => `instance/${id}`,
  run: (id: string) => `run/${id}`,
  node: (id: string) => `node/${id}`,
  global: (id: string) => `gexc/${id}`,
  list: (id: string) => `list/${id}`,
  filter: (id: string) => `filter/${id}`,
  token: (name: string) => `token/${name}`,
  audit: (at: number, requestId: string) => `${AUDIT_PREFIX}${String(at).padStart(TIME_KEY_DIGITS, '0')}/${requestId}`,
}

/** Store keys of records (instance/ID, run/ID), for the runtime's reads. */
export const recordKey = { instance: key.instance, run: key.run, job: key.job }

/** Digits of a time (ms) in a key: zero-padded, keys sort by time (16 digits reach past the year 300,000). */
export const TIME_KEY_DIGITS = 16

/** A time in ms as TIME_KEY_DIGITS digits: keys sort by it. */
export const timeKey = (ms: number): string => String(Math.max(0, Math.floor(ms))).padStart(TIME_KEY_DIGITS, '0')

/**
 * The indexes of finished history, kept in the store (value 1; the key is the entry). Each key
 * ends in an immutable sort key (a time, then the id), so a page scanned after a key is stable
 * while new instances arrive. Instance → runs is the instance record's own `runIds` (and, once
 * it finished, the covering `idx/run/INSTANCE/`).
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
  /**
   * A finished instance's runs, a covering index: the value is the run record (a copy of
   * run/RUN, which stays the record every other read uses). A run key is a hash, so an
   * instance's 1,000 runs lie scattered over the whole store and reading them by key is a random
   * read each; here they are one range. Written when the instance settles and with every later
   * write of one of its runs (a late result), deleted with the rest of its history. Under idx/,
   * which a restart never loads (an older coordinator on this store skips them too).
   */
  instanceRun: (instanceId: string, runId: string) => `idx/run/${instanceId}/${runId}`,
  instanceRunPrefix: (instanceId: string) => `idx/run/${instanceId}/`,
} as const

/** The id at the end of an index key. */
export const idOfIndexKey = (k: string): string => k.slice(k.lastIndexOf('/') + 1)

/** Every key an instance's history holds: its record, its runs and its index entries. */
export function historyKeysOf(instance: InstanceRecord, runs: readonly { runId: string; nodeId: string }[]): string[] {
  const keys = [key.instance(instance.id), IDX.job(instance.jobId, instance.occurrenceAt, instance.id), IDX.all(instance.createdAt, instance.id)]
  for (const s of new Set([instance.status, 'running'])) keys.push(IDX.status(s, instance.createdAt, instance.id), IDX.jobStatus(instance.jobId, s, instance.occurrenceAt, instance.id))
  for (const id of instance.runIds) keys.push(key.run(id), IDX.instanceRun(instance.id, id))
  for (const r of runs) keys.push(IDX.node(r.nodeId, instance.createdAt, r.runId))
  return keys
}

/** Audit records live under this prefix, ordered by time; `auditKeyFrom` gives the first key at or after a time. */
export const AUDIT_PREFIX = 'audit/'

export const auditKeyFrom = (at: number): string => `${AUDIT_PREFIX}${String(Math.max(0, Math.floor(at))).padStart(TIME_KEY_DIGITS, '0')}`
