// Why a run ended as it did, as a code beside the human reason. Control flow and checks use the
// code, never the prose. The list is append-only: the values are part of the protocol (they
// travel in results), so a new reason is added at the end and none is ever renamed or reused.
export const REASON_CODES = [
  /** A step failed (its reason says which and why). */
  'step_failed',
  /** The agent was not running at the occurrence (missed-occurrence policy). */
  'missed',
  /** The occurrence was canceled before this node's turn. */
  'canceled',
  /** Sequential groups: an earlier group did not meet its success criteria. */
  'distribution_stopped',
  /** This node's own group can no longer meet its success criteria. */
  'criteria_unreachable',
  /** This node's group already met its criteria (earlyTermination). */
  'criteria_met',
  /** The group's time budget ran out before this node's turn. */
  'group_time_budget',
  /** Too few targets acknowledged within the quorum window: nothing ran. */
  'quorum_failed',
  /** The agent lost the job's definition (its store). */
  'job_lost',
  /** The node was revoked: its results are refused. */
  'revoked',
  /** No result came before the group's timeout (the coordinator's decision). */
  'no_result',
] as const
export type ReasonCode = (typeof REASON_CODES)[number]

/** A reason as a code and the words an operator reads. */
export interface Reason {
  code: ReasonCode
  text: string
}
