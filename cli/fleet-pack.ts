// `chorus agent-pack` (hidden): K real agents in one process, for `chorus bench fleet`. Each has
// its own key, peer id and libp2p node (TCP, noise, yamux), its own agent core and runtime; they
// share only the event loop. The store is memory-level and every interpreter is a no-op that
// succeeds at once, so what a benchmark of many packs measures is the coordinator and the network.
// The parent (cli/bench-fleet.ts) drives it over the IPC channel; the process ends when the
// parent says stop or goes away.
import { MemoryLevel } from 'memory-level'
import type { Logger } from 'pino'
import { AgentRuntime } from '../agent/runtime.js'
import { BUILTIN_INTERPRETER_NAMES } from '../interpreters/registry.js'
import type { Interpreter, StepResult } from '../interpreters/types.js'

/** Agents of one pack at most (the bench's --per-process is checked against it). */
export const MAX_AGENTS_PER_PACK = 500
/** How long stopping the pack's agents may take before the process exits anyway (ms). */
export const PACK_STOP_TIMEOUT_MS = 10_000
/** How long a pack waits for one agent to join before it starts the next one anyway (ms). */
export const JOIN_WAIT_MS = 30_000
const JOIN_POLL_MS = 50
/** How often the pack samples its agents' links to count drops (ms). */
const LINK_SAMPLE_MS = 250

export interface PackAgent { nodeId: string; dataDir: string }
export interface PackStart {
  type: 'start'
  join: string
  coordinatorKey: string
  enrollToken: string
  attributes: Record<string, string>
  agents: PackAgent[]
  /** Agents of this pack joining at once: the next starts when one has joined (or JOIN_WAIT_MS passed). */
  parallel: number
}
/** Parent → pack. */
export type PackRequest =
  | PackStart
  | { type: 'status'; id: number; since: number }
  | { type: 'hold'; on: boolean }
  | { type: 'release' }
  | { type: 'stop' }
/** Pack → parent. */
export type PackReply =
  | { type: 'started'; ok: number; failed: { nodeId: string; error: string }[] }
  | { type: 'status'; id: number; status: PackStatus }
  | { type: 'error'; error: string }

export interface PackStatus {
  /** Agents whose runtime started. */
  running: number
  /** Agents the coordinator admitted on their current connection. */
  connected: number
  /** Agents whose last successful sync (so they were admitted) was at or after `since`, connected now or not. */
  synced: number
  /** Times an agent was seen admitted and then not, sampled every LINK_SAMPLE_MS since the pack started. */
  drops: number
  /** Steps started while held, waiting for a release. */
  held: number
  /** Steps the no-op interpreter finished since the pack started. */
  stepsDone: number
  /** Since the pack started, over its agents: rounds of dials to peers (the coordinator away), failed attempts to reach the coordinator, and those that found it busy. */
  peerRounds: number
  failures: number
  busyFailures: number
}

const ok = (): StepResult => ({ status: 'success', exitCode: 0, stdout: '', stderr: '', truncated: false, durationMs: 0 })

/**
 * The no-op interpreter: succeeds at once, or, while the pack is held, when the pack is
 * released (so a benchmark can make every agent send its result in the same instant).
 */
class NoopSteps {
  held = 0
  done = 0
  private hold = false
  private waiters: (() => void)[] = []

  setHold(on: boolean): void {
    this.hold = on
    if (!on) this.release()
  }

  release(): void {
    const w = this.waiters
    this.waiters = []
    this.held = 0
    for (const wake of w) wake()
  }

  interpreter(name: string): Interpreter {
    return {
      name,
      // It writes nothing: no scratch directory per step (an mkdir and an rm per run were ~10 % of a pack's CPU).
      usesWorkDir: false,
      run: async (_req, signal) => {
        if (this.hold && !signal.aborted) {
          this.held++
          await new Promise<void>((resolve) => {
            this.waiters.push(resolve)
            signal.addEventListener('abort', () => resolve(), { once: true })
          })
        }
        this.done++
        return signal.aborted ? { ...ok(), status: 'failure', exitCode: null, reason: 'aborted' } : ok()
      },
    }
  }
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x)
}

/** The start message, checked field by field (it comes from the parent, but a bad one must say what is wrong). */
export function parseStart(msg: unknown): PackStart | string {
  if (!isRecord(msg)) return 'start: expected an object'
  for (const f of ['join', 'coordinatorKey', 'enrollToken'] as const) if (typeof msg[f] !== 'string' || !msg[f]) return `start.${f}: expected a non-empty string`
  if (!isRecord(msg.attributes) || !Object.values(msg.attributes).every((v) => typeof v === 'string')) return 'start.attributes: expected an object of strings'
  if (!Array.isArray(msg.agents) || msg.agents.length === 0 || msg.agents.length > MAX_AGENTS_PER_PACK) return `start.agents: expected 1 to ${MAX_AGENTS_PER_PACK} agents`
  if (typeof msg.parallel !== 'number' || !Number.isInteger(msg.parallel) || msg.parallel < 1) return 'start.parallel: expected a whole number of at least 1'
  for (const [i, a] of msg.agents.entries()) {
    if (!isRecord(a) || typeof a.nodeId !== 'string' || typeof a.dataDir !== 'string') return `start.agents[${i}]: expected { nodeId, dataDir } strings`
  }
  return msg as unknown as PackStart
}

export async function runPack(logger: Logger): Promise<void> {
  const send = (reply: PackReply) => { if (process.connected) process.send?.(reply) }
  if (!process.send) throw new Error('agent-pack runs only as a child of `chorus bench fleet` (it needs an IPC channel)')
  const steps = new NoopSteps()
  const interpreters = new Map<string, Interpreter>(BUILTIN_INTERPRETER_NAMES.map((n) => [n, steps.interpreter(n)]))
  const agents: AgentRuntime[] = []
  let stopping = false

  const stop = async (code: number) => {
    if (stopping) return
    stopping = true
    const timer = setTimeout(() => process.exit(code), PACK_STOP_TIMEOUT_MS)
    await Promise.allSettled(agents.map((a) => a.stop()))
    clearTimeout(timer)
    process.exit(code)
  }

  const start = async (s: PackStart) => {
    const failed: { nodeId: string; error: string }[] = []
    // s.parallel at a time, each until it has joined (admitted and synced): the bench says how it paced the packs.
    const queue = [...s.agents]
    const startOne = async (a: PackAgent) => {
      const rt: AgentRuntime = new AgentRuntime({
        dataDir: a.dataDir, join: s.join, coordinatorKey: s.coordinatorKey, nodeId: a.nodeId, attributes: s.attributes,
        enrollToken: s.enrollToken, logger, store: new MemoryLevel<string, unknown>({ valueEncoding: 'json' }), interpreters,
        // One agent that cannot continue stops alone; the pack and its other agents go on.
        onFatal: (err) => { logger.error({ nodeId: a.nodeId, err: (err as Error).message }, 'agent stopped'); void rt.stop() },
      })
      try {
        await rt.start()
        agents.push(rt)
      } catch (err) {
        failed.push({ nodeId: a.nodeId, error: (err as Error).message })
        await rt.stop().catch(() => {})
        return
      }
      const deadline = Date.now() + JOIN_WAIT_MS
      while (!stopping && Date.now() < deadline && !(rt.link.connected && rt.link.lastSyncOkAt > 0)) await new Promise((r) => setTimeout(r, JOIN_POLL_MS))
    }
    await Promise.all(Array.from({ length: Math.min(s.parallel, queue.length) }, async () => {
      for (let a = queue.shift(); a; a = queue.shift()) await startOne(a)
    }))
    send({ type: 'started', ok: agents.length, failed })
  }

  let drops = 0
  const wasConnected = new WeakSet<AgentRuntime>()
  setInterval(() => {
    for (const a of agents) {
      if (a.link.connected) wasConnected.add(a)
      else if (wasConnected.delete(a)) drops++
    }
  }, LINK_SAMPLE_MS).unref()
  process.on('disconnect', () => void stop(0))
  process.on('SIGTERM', () => void stop(0))
  process.on('message', (msg: unknown) => {
    try {
      if (!isRecord(msg)) return send({ type: 'error', error: 'message: expected an object' })
      switch (msg.type) {
        case 'start': {
          const s = parseStart(msg)
          if (typeof s === 'string') return send({ type: 'error', error: s })
          void start(s).catch((err) => send({ type: 'error', error: (err as Error).message }))
          return
        }
        case 'status': {
          const since = typeof msg.since === 'number' ? msg.since : 0
          let connected = 0
          let synced = 0
          let peerRounds = 0
          let failures = 0
          let busyFailures = 0
          for (const a of agents) {
            const l = a.link
            if (l.connected) connected++
            if (l.lastSyncOkAt >= since) synced++
            peerRounds += l.peerRounds
            failures += l.failures
            busyFailures += l.busyFailures
          }
          return send({ type: 'status', id: typeof msg.id === 'number' ? msg.id : 0, status: { running: agents.length, connected, synced, drops, held: steps.held, stepsDone: steps.done, peerRounds, failures, busyFailures } })
        }
        case 'hold':
          return steps.setHold(msg.on === true)
        case 'release':
          return steps.release()
        case 'stop':
          return void stop(0)
        default:
          return send({ type: 'error', error: `message.type: unknown "${String(msg.type)}"` })
      }
    } catch (err) {
      send({ type: 'error', error: (err as Error).message })
    }
  })
}
