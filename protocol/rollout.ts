// Pure rollout arithmetic shared by agents, the coordinator and the simulator.

export interface Amount {
  type: 'number' | 'percent'
  value: number
}

/**
 * Nodes per batch for a group of `groupSize` nodes. Percentages round up, a batch holds at
 * least one node and never more than the group: 33 % of 3 is 1, 1 % of 10 is 1, 50 % of 5 is 3.
 * A value of 0 is rejected by the template schema, so "all at once by accident" cannot happen.
 */
export function batchSizeFor(amount: Amount, groupSize: number): number {
  if (groupSize <= 0) return 1
  const raw = amount.type === 'percent' ? Math.ceil((amount.value * groupSize) / 100) : amount.value
  return Math.max(1, Math.min(groupSize, raw))
}

/** Runs needed to meet a success criterion of `amount` over `groupSize` runs (percent rounds up). */
export function thresholdFor(amount: Amount, groupSize: number): number {
  const raw = amount.type === 'percent' ? Math.ceil((amount.value * groupSize) / 100) : amount.value
  return Math.max(0, Math.min(groupSize, raw))
}

/**
 * Failures a group can take and still meet every criterion: a `success` criterion needing S of
 * N leaves N − S; a `failure` criterion with numRuns T allows T − 1; no criterion allows none.
 */
export function failureBudget(criteria: readonly { numRuns: Amount; status: 'success' | 'failure' }[], n: number): number {
  if (criteria.length === 0) return 0
  let budget = n
  for (const c of criteria) {
    const t = thresholdFor(c.numRuns, n)
    budget = Math.min(budget, c.status === 'success' ? n - t : Math.max(0, Math.max(1, t) - 1))
  }
  return budget
}

export function successNeeded(criteria: readonly { numRuns: Amount; status: 'success' | 'failure' }[], n: number): number {
  if (criteria.length === 0) return n
  return Math.max(0, ...criteria.filter((c) => c.status === 'success').map((c) => thresholdFor(c.numRuns, n)))
}

/**
 * Delay before attempt `attempt` (2 = first retry) of a step, in ms.
 * none: d (a constant delay); linear: d·r; exponential: d·2^(r-1); polynomial: d·r^p with p = arguments[0] or 2,
 * where d = delaySeconds and r = attempt - 1 is the retry number. Capped at MAX_BACKOFF_MS.
 */
export const MAX_BACKOFF_MS = 3_600_000
export function backoffDelayMs(strategy: { type: string; delaySeconds: number; arguments?: unknown[] }, attempt: number): number {
  const r = Math.max(0, attempt - 1)
  if (r === 0) return 0
  const d = strategy.delaySeconds * 1000
  let ms: number
  switch (strategy.type) {
    case 'linear': ms = d * r; break
    case 'exponential': ms = d * 2 ** (r - 1); break
    case 'polynomial': {
      const p = typeof strategy.arguments?.[0] === 'number' ? (strategy.arguments[0] as number) : 2
      ms = d * r ** p
      break
    }
    default: ms = d
  }
  return Math.min(MAX_BACKOFF_MS, Math.max(0, Math.round(ms)))
}
