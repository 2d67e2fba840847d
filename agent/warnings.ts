// Warnings an operator must see without flooding the log: the first at once, then at most one
// a minute per kind (a wrong coordinator key, an unreachable coordinator).
import type { Logger } from 'pino'
import { peerIdFromString } from '@libp2p/peer-id'

export const WARN_REPEAT_MS = 60_000

export class RepeatedWarning {
  private readonly last = new Map<string, number>()
  constructor(private readonly log: Logger, private readonly now: () => number = Date.now) {}

  /** Logs at warn level unless the same kind was logged less than WARN_REPEAT_MS ago. */
  warn(kind: string, fields: Record<string, unknown>, msg: string): void {
    const t = this.now()
    const prev = this.last.get(kind)
    if (prev !== undefined && t - prev < WARN_REPEAT_MS) return
    this.last.set(kind, t)
    this.log.warn(fields, msg)
  }

  /** The condition is over: the next occurrence is logged at once. */
  clear(kind: string): void {
    this.last.delete(kind)
  }
}

/** Every message of an error and its causes (libp2p wraps dial errors). */
function messages(err: unknown, depth = 0): string[] {
  if (!err || depth > 4) return []
  const e = err as Error & { cause?: unknown; errors?: unknown[]; code?: string }
  return [e.message ?? String(err), ...(e.code ? [e.code] : []), ...messages(e.cause, depth + 1), ...(e.errors ?? []).flatMap((x) => messages(x, depth + 1))]
}

/** The base64url ed25519 key of a peer id, as `chorus keys` prints it (the id itself if it holds no key). */
function keyOfPeer(peerId: string): string {
  try {
    const raw = peerIdFromString(peerId).publicKey?.raw
    return raw ? Buffer.from(raw).toString('base64url') : peerId
  } catch {
    return peerId
  }
}

/** What a failed dial of the coordinator means, for the operator: a kind and a message. */
export function dialFailure(err: unknown, join: string, pinnedKey: string): { kind: 'key' | 'reach'; msg: string } {
  const all = messages(err)
  const mismatch = all.map((m) => /identity key (\S+) does not match/.exec(m)).find(Boolean)
  if (mismatch) return { kind: 'key', msg: `coordinator key mismatch: it presents ${keyOfPeer(mismatch[1]!)}, you pinned ${pinnedKey} (--coordinator-key; \`chorus keys --data DIR\` on the coordinator prints its key)` }
  const cause = all.find((m) => /^E[A-Z]+$/.test(m)) ?? all[0] ?? 'unknown error'
  return { kind: 'reach', msg: `cannot reach the coordinator at ${join} (${cause.slice(0, 200)}): is it running, and is --join its libp2p address?` }
}
