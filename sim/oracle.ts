// The checkers' own rollout arithmetic, written again from the README's rules ("Percent batch
// sizes round up, at least 1, at most the group"; "a success criterion needs at least numRuns
// successful runs (percent rounds up); a failure criterion is a failure budget, met while fewer
// than numRuns runs failed; a group without criteria needs every run to succeed") and not
// imported from protocol/: an oracle that shares code with what it checks is no oracle.
// Integer arithmetic and searches, on purpose unlike protocol/rollout.ts.

export interface OracleAmount { type: 'number' | 'percent'; value: number }
export interface OracleCriterion { numRuns: OracleAmount; status: 'success' | 'failure' }

/** The smallest k with k ≥ value % of n (percent), or the number itself; then clamped. */
function amountOf(a: OracleAmount, n: number): number {
  if (a.type === 'number') return a.value
  let k = 0
  while (k * 100 < a.value * n) k++
  return k
}

/** Nodes per batch: at least 1, at most the group. */
export function oracleBatchSize(a: OracleAmount, n: number): number {
  if (n <= 0) return 1
  return Math.min(n, Math.max(1, amountOf(a, n)))
}

/** Runs a criterion counts: never below 0 nor above the group. */
export function oracleThreshold(a: OracleAmount, n: number): number {
  return Math.min(n, Math.max(0, amountOf(a, n)))
}

/** Whether a finished group of n runs with `failed` failures (the rest succeeded) meets every criterion. */
export function oracleMeets(criteria: readonly OracleCriterion[], n: number, failed: number): boolean {
  const succeeded = n - failed
  if (criteria.length === 0) return failed === 0
  return criteria.every((c) => {
    const t = oracleThreshold(c.numRuns, n)
    return c.status === 'success' ? succeeded >= t : failed < Math.max(1, t)
  })
}

/** The most failures a group of n can take and still meet its criteria (found by counting). */
export function oracleFailureBudget(criteria: readonly OracleCriterion[], n: number): number {
  let f = 0
  while (f < n && oracleMeets(criteria, n, f + 1)) f++
  return f
}

/** The fewest successes the group's success criteria need (n without criteria). */
export function oracleSuccessNeeded(criteria: readonly OracleCriterion[], n: number): number {
  if (criteria.length === 0) return n
  let need = 0
  for (const c of criteria) if (c.status === 'success') need = Math.max(need, oracleThreshold(c.numRuns, n))
  return need
}
