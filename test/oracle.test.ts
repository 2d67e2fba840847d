// The simulator's checkers compute rollout arithmetic on their own (sim/oracle.ts); the two
// implementations must agree everywhere the template allows, or one of them is wrong.
import { describe, expect, it } from 'vitest'
import { batchSizeFor, failureBudget, successNeeded, thresholdFor } from '../protocol/rollout.js'
import { oracleBatchSize, oracleFailureBudget, oracleSuccessNeeded, oracleThreshold } from '../sim/oracle.js'

const amounts = [
  ...[1, 2, 3, 5, 10, 64].map((value) => ({ type: 'number' as const, value })),
  ...[1, 10, 25, 33, 50, 66, 90, 99, 100].map((value) => ({ type: 'percent' as const, value })),
]

describe('the checkers\' oracle agrees with the cores\' arithmetic', () => {
  it('batch sizes and thresholds for groups of 0 to 120', () => {
    for (const a of amounts) for (let n = 0; n <= 120; n++) {
      expect(oracleBatchSize(a, n), `${JSON.stringify(a)} of ${n}`).toBe(batchSizeFor(a, n))
      expect(oracleThreshold(a, n), `${JSON.stringify(a)} of ${n}`).toBe(thresholdFor(a, n))
    }
  })

  it('failure budgets and successes needed, for criteria of one and two kinds', () => {
    const criteria = [
      [],
      ...amounts.map((numRuns) => [{ numRuns, status: 'success' as const }]),
      ...amounts.map((numRuns) => [{ numRuns, status: 'failure' as const }]),
      ...amounts.slice(0, 5).flatMap((s) => amounts.slice(5).map((f) => [{ numRuns: s, status: 'success' as const }, { numRuns: f, status: 'failure' as const }])),
    ]
    for (const c of criteria) for (let n = 0; n <= 60; n++) {
      expect(oracleFailureBudget(c, n), `${JSON.stringify(c)} of ${n}`).toBe(failureBudget(c, n))
      expect(oracleSuccessNeeded(c, n), `${JSON.stringify(c)} of ${n}`).toBe(successNeeded(c, n))
    }
  })
})
