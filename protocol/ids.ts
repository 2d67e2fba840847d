// Deterministic ids: every party derives the same instance and run ids from signed inputs,
// so agents and the coordinator agree without talking.
import { createHash } from 'node:crypto'

function uuidFromHash(text: string): string {
  const h = createHash('sha256').update(text).digest()
  h[6] = (h[6]! & 0x0f) | 0x80 // version 8: custom
  h[8] = (h[8]! & 0x3f) | 0x80 // RFC 4122 variant
  const x = h.subarray(0, 16).toString('hex')
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`
}

/** One instance per (job, occurrence time). Immediate jobs have one occurrence: issuedAt. */
export function instanceIdFor(jobId: string, occurrenceMs: number): string {
  return uuidFromHash(`chorus/instance/${jobId}/${occurrenceMs}`)
}

/** One run per (instance, node). */
export function runIdFor(instanceId: string, nodeId: string): string {
  return uuidFromHash(`chorus/run/${instanceId}/${nodeId}`)
}
