// Timing of the runtimes, in one pure module so the simulator drives the cores with the very
// same numbers the real runtimes use (it cannot import the runtimes: they load libp2p).

export const AGENT_VERSION = '0.1.0'
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
export const REDIAL_MAX_MS = 10_000
/** How often the coordinator runtime ticks its core (deadlines, occurrences, quorum windows). */
export const COORDINATOR_TICK_MS = 1_000
/** Requests waiting for the coordinator core at once; more are refused rather than queued without bound. */
export const MAX_PENDING_REQUESTS = 60_000
