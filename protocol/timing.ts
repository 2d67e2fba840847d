// Timing of the runtimes, in one pure module so the simulator drives the cores with the very
// same numbers the real runtimes use (it cannot import the runtimes: they load libp2p).

/**
 * Reported in every hello. 0.2.0: reads a definition's roster (protocol/wire.ts ROSTER_AGENT_VERSION);
 * 0.3.0: reads its schema fingerprint (SCHEMA_AGENT_VERSION).
 */
export const AGENT_VERSION = '0.3.0'
/** How often the agent runtime ticks its core (resends, schedules, gates) and checks its link. */
export const AGENT_TICK_MS = 500
/** One request/response exchange with a peer gives up after this long. */
export const RPC_TIMEOUT_MS = 10_000
/**
 * Longest the coordinator holds a waiting target's watch (a long-poll sync, coordinator/watch.ts);
 * the agent waits for that reply WATCH_HOLD_MS + RPC_TIMEOUT_MS.
 */
export const WATCH_HOLD_MS = 60_000
/** Redial backoff towards the coordinator, doubling from the first value to the second. */
export const REDIAL_MIN_MS = 500
export const REDIAL_MAX_MS = 5_000
/**
 * An agent that lost the coordinator turns to its peers (dials the agents it was introduced to
 * and asks them for a sync) once the coordinator has been away PEER_ROUND_DELAY_MS (jittered)
 * if it takes part in a rollout that may need them (agent core waitsOnPeers: gated runs of an
 * open instance), PEER_ROUND_IDLE_DELAY_MS (jittered) if not.
 * Once the coordinator showed it runs but is busy (a handshake reset, or timed out after the TCP
 * connect went through; a hello unanswered or answered with a retry-after), it waits PEER_ROUND_BUSY_DELAY_MS after the last
 * such sign instead (longer than an attempt and the longest redial after it, so signs that keep
 * coming keep it waiting), and PEER_ROUND_MAX_DELAY_MS after the loss at the latest. A restart
 * then costs the fleet no mesh, and a coordinator that is gone one a few seconds late.
 */
export const PEER_ROUND_DELAY_MS = 5_000
export const PEER_ROUND_IDLE_DELAY_MS = 15_000
export const PEER_ROUND_BUSY_DELAY_MS = 40_000
export const PEER_ROUND_MAX_DELAY_MS = 120_000

/**
 * A delay spread over [ms / 2, 3 ms / 2) by a uniform draw `random01` in [0, 1): agents that lost
 * the coordinator at the same moment do not all redial at the same moment. The real runtime
 * draws with Math.random; the simulator redials on the unjittered grid.
 */
export function jitteredMs(ms: number, random01: number): number {
  return Math.floor(ms * (0.5 + Math.min(Math.max(random01, 0), 0.999999)))
}
/** How often the coordinator runtime ticks its core (deadlines, occurrences, quorum windows). */
export const COORDINATOR_TICK_MS = 1_000
/** Requests waiting for the coordinator core at once; more are refused rather than queued without bound. */
export const MAX_PENDING_REQUESTS = 60_000
/** An overloaded coordinator asks agents to pause this long at least, plus up to the spread (ms, drawn per answer). */
export const RETRY_AFTER_MIN_MS = 1_000
export const RETRY_AFTER_SPREAD_MS = 4_000
