// The hosts around the cores: what the runtimes do around the agent and coordinator cores,
// in the simulated world. Agents run the real agent shell (agent/shell.ts) over sim/transport.ts
// and tick every AGENT_TICK_MS of their local clock (skipping ticks the core says are idle); a
// connection monitor pings the coordinator every CONN_MONITOR_MS and drops the connection when
// pings fail. Step attempts take a drawn time and succeed or fail as the step model says (the
// ground truth the checkers read). The coordinator ticks every COORDINATOR_TICK_MS, publishes,
// and answers rpcs and submits from its core's effects.
import { AgentShell } from '../agent/shell.js'
import type { AgentEffect, AgentRun, StepRunRequest } from '../agent/core.js'
import type { CoordinatorEffect } from '../coordinator/core.js'
import { checkMember } from '../protocol/membership.js'
import { open } from '../protocol/wire.js'
import { canonicalJson } from '../protocol/canonical.js'
import { AGENT_TICK_MS, COORDINATOR_TICK_MS } from '../protocol/timing.js'
import { livenessBound } from './bound.js'
import { SimTransport } from './transport.js'
import { AgentNode, CONN_MONITOR_MS, PING_BYTES, PING_TIMEOUT_MS, RUN_TERMINAL, SIM_EPOCH_MS, type CoordinatorNode, type ExecRecord } from './types.js'
import type { World } from './world.js'

export class Hosts {
  constructor(private readonly w: World) {}

  startAgent(a: AgentNode): void {
    const restored = this.w.cores.restoreAgent(this.w.records(a), a.config, this.w.localNow(a))
    a.state = restored.state
    this.startShell(a)
    this.w.coreSteps++
    // As the runtime: restored effects are carried out first, then the ticker starts with an immediate tick.
    a.tickAt = Infinity
    a.tickGen++
    a.ticking = false
    a.queue.push({ effects: restored.effects, then: () => this.w.afterFor(a, 0, () => this.agentTick(a)) })
    this.w.drain(a)
  }

  /**
   * The agent shell, as the runtime builds it (agent/runtime.ts): over the simulated transport,
   * on the node's clock, with the unjittered redial grid (README), dispatching into this node's
   * queue for this incarnation only.
   */
  startShell(a: AgentNode): void {
    const epoch = a.epoch
    const transport = new SimTransport(this.w, a)
    a.transport = transport
    const token = a.enrollToken === null ? undefined : a.enrollToken ?? this.w.enrollToken
    a.shell = new AgentShell({
      transport, clock: { now: () => this.w.localNow(a) }, identity: a.identity, nodeId: a.config.nodeId,
      coordinatorKey: this.w.coordinator.identity.publicKey, coordinatorPeer: this.w.coordinator.peerId, coordinatorAddr: '/ip4/10.0.0.0/tcp/7700',
      state: () => a.state!, dispatch: (event, then) => { if (a.epoch === epoch) this.w.dispatch(a, event, then) },
      facts: () => a.facts, skills: a.config.skills, ...(token !== undefined ? { enrollToken: token } : {}),
      jitter: (ms) => ms,
      memberOf: (peerId) => this.memberOf(a, peerId),
      hooks: {
        refused: (why) => {
          this.w.load.helloRefused++
          if (why.retryAfterMs) this.w.load.helloRetryAfter++
          this.w.record(`${a.index} hello refused`)
        },
        dialFailed: (err) => { if (!/dial timeout|connection refused/.test(err.message)) this.w.record(`${a.index} hello failed: ${err.message}`) },
        joined: () => {
          a.nextMonitorAt = this.w.localNow(a) + CONN_MONITOR_MS
          this.w.record(`${a.index} connected`)
        },
      },
    })
  }

  /** Who `peerId` is to agent `viewer`: a member whose certificate it admits on their connection, or nobody. */
  memberOf(viewer: AgentNode, peerId: string): { nodeId: string; key: string } | undefined {
    const peer = this.w.nodeByPeer(peerId)
    if (!(peer instanceof AgentNode) || !viewer.transport?.peers.has(peer.index) || !this.w.admits(viewer, peer)) return undefined
    const cert = peer.presentCert ?? peer.state?.member.certificate?.envelope
    const check = checkMember(cert, this.w.coordinator.identity.publicKey, peer.peerId, viewer.state!.member.revoked, this.w.localNow(viewer))
    return check.ok ? { nodeId: check.body.nodeId, key: check.body.key } : undefined
  }

  agentTick(a: AgentNode): void {
    const now = this.w.localNow(a)
    // The core answers a tick before state.idleUntil with nothing, changing nothing (agent/core.ts
    // nextTickWork): an idle node's tick is skipped here, which is exactly what stepping it gives.
    if (a.busy || a.queue.length > 0 || !a.state || now >= a.state.idleUntil) this.w.dispatch(a, { type: 'tick' })
    if (a.connected && now >= a.nextMonitorAt) {
      a.nextMonitorAt = now + CONN_MONITOR_MS
      a.bytesSent += PING_BYTES / 2
      this.w.coordinator.bytesRecv += PING_BYTES / 2
      if (this.w.net.blocked(a.index, 0) || this.w.net.blocked(0, a.index) || !this.w.coordinator.up) {
        this.w.afterFor(a, PING_TIMEOUT_MS / a.clockRate, () => {
          if (this.w.net.blocked(a.index, 0) || this.w.net.blocked(0, a.index) || !this.w.coordinator.up) this.disconnect(a, 'ping timeout')
        })
      } else {
        this.w.coordinator.bytesSent += PING_BYTES / 2
        a.bytesRecv += PING_BYTES / 2
      }
    }
    a.shell!.tick()
    a.tickLast = this.w.now
    a.tickAt = Infinity
    a.ticking = true
    this.planTick(a)
  }

  /**
   * Schedules the next tick of `a` on its grid (tickLast + k × AGENT_TICK_MS, local clock),
   * skipping grid points where it would do nothing. Called after every tick and after anything
   * that can bring work forward (an event stepped, a connection made or lost).
   */
  planTick(a: AgentNode): void {
    if (!a.up || !a.ticking) return
    const step = AGENT_TICK_MS / a.clockRate
    // A grid point at this very instant still counts: the runtime's tick for it was queued
    // before whatever is happening now (e.g. a ping timeout, whose delay is a whole number of ticks).
    const now = this.w.now
    let t = a.tickLast
    do t += step; while (t < now)
    if (!this.w.options.tickAll && !(a.busy || a.queue.length > 0 || !a.state)) {
      const horizon = Math.min(a.tickAt, t + 3_600_000)
      // A tick does work when the node is busy or has events queued (handled above), or once its
      // local clock (computed as World.localAt does) reads the core's idleUntil or the next ping
      // (connected) or redial and first peer round (not): an idle agent skips thousands of grid
      // points here, so the rule is inlined.
      const due = Math.min(a.state.idleUntil, a.connected ? a.nextMonitorAt : Math.min(a.shell!.redialAt, a.shell!.peerRoundWakeAt()))
      const base = SIM_EPOCH_MS + a.clockOffsetMs
      const rate = a.clockRate
      while (t < horizon && Math.floor(base + t * rate) < due) t += step
    }
    if (t >= a.tickAt) return
    a.tickAt = t
    const gen = ++a.tickGen
    const epoch = a.epoch
    this.w.at(t, () => { if (a.epoch === epoch && a.up && a.tickGen === gen) this.agentTick(a) })
  }

  disconnect(a: AgentNode, why: string): void {
    if (!a.connected) return
    this.w.record(`${a.index} disconnected (${why})`)
    a.transport!.closed(this.w.coordinator.peerId)
    this.planTick(a)
  }

  agentEffect(a: AgentNode, e: AgentEffect): void {
    switch (e.type) {
      case 'run_step':
        this.w.record(`${a.index} run_step ${e.request.runId} ${e.request.stepNumber}/${e.request.attempt} nb=${e.notBefore}`)
        this.w.afterFor(a, this.w.untilLocal(a, e.notBefore), () => this.execStep(a, e.request))
        break
      case 'send':
        this.w.record(`${a.index} send ${e.kind}${e.kind === 'result' ? ' ' + e.runId : ''} ${a.connected ? '' : '(not connected: dropped)'}`)
        a.shell!.send(e.envelope, e.kind, e.kind === 'sync' ? e.waitMs ?? 0 : 0)
        break
      case 'publish_progress':
        this.w.progressMessages++
        this.w.gossip.publish(a, e.envelope, `progress ${a.index}`, 'progress')
        break
      case 'revoked': {
        this.w.record(`${a.index} drops revoked peers ${e.keys.length}`)
        // As the runtime: connections to peers whose key was revoked are hung up.
        const keys = new Set(e.keys)
        for (const i of [...a.transport?.peers ?? []]) {
          const peer = this.w.nodes[i] as AgentNode
          if (keys.has(peer.identity.publicKey)) a.transport!.hangUp(peer)
        }
        break
      }
      case 'log':
        this.w.logCounts[e.level]++
        if (e.level === 'warn') this.w.record(`${a.index} warn ${e.msg}`)
        break
      case 'persist':
        break
    }
  }

  /** The durable decision of a run: its terminal record committed to the agent's store. */
  observeAgentPersist(a: AgentNode, puts: { key: string; value: unknown }[]): void {
    for (const p of puts) {
      if (!p.key.startsWith('run/')) continue
      const run = p.value as AgentRun
      // Ground truth of acknowledgement: the node holds the job and its run record is durable
      // (the core publishes its `ack` only after this write).
      let acc = this.w.accepted.get(run.instanceId)
      if (!acc) { acc = new Map(); this.w.accepted.set(run.instanceId, acc) }
      if (!acc.has(a.id)) acc.set(a.id, this.w.now)
      if (!RUN_TERMINAL.has(run.status)) continue
      const steps = run.steps.map((s): [number, string, number] => [s.number, s.status, s.attempts])
      const prev = this.w.outcomes.get(run.runId)
      if (prev) {
        if (prev.status !== run.status || JSON.stringify(prev.steps) !== JSON.stringify(steps)) {
          this.w.violation('nothing-lost', `node ${a.id} decided run ${run.runId} twice: ${prev.status} ${JSON.stringify(prev.steps)} then ${run.status} ${JSON.stringify(steps)}`)
        }
        continue
      }
      this.w.outcomes.set(run.runId, {
        node: a.id, runId: run.runId, instanceId: run.instanceId, jobId: run.jobId, occurrenceAt: run.occurrenceAt, group: run.group, batch: run.batch,
        position: run.position, status: run.status, steps, at: this.w.now, ...(run.reason !== undefined ? { reason: run.reason } : {}), ...(run.reasonCode !== undefined ? { reasonCode: run.reasonCode } : {}),
      })
      this.w.record(`${a.index} decided ${run.runId} ${run.status}`)
    }
  }

  execStep(a: AgentNode, r: StepRunRequest): void {
    const run = a.state?.runs.get(r.runId)
    const exec: ExecRecord = {
      node: a.id, runId: r.runId, jobId: r.jobId, instanceId: run?.instanceId ?? '?', group: run?.group ?? 0, batch: run?.batch ?? 0,
      position: run?.position ?? 0, occurrenceAt: run?.occurrenceAt ?? 0, step: r.stepNumber, attempt: r.attempt, start: this.w.now,
    }
    for (const c of this.w.checkers) {
      const problem = c.onExec?.(this.w, exec, r, a)
      if (problem) this.w.violation(c.name, problem)
    }
    this.w.executed.set(`${a.id}|${exec.instanceId}|${r.stepNumber}|${r.attempt}`, exec)
    this.w.execList.push(exec)
    a.running.add(exec)
    this.w.record(`${a.index} exec ${r.runId} ${r.stepNumber}/${r.attempt}`)
    let duration = this.w.prng.logNormal(this.w.stepModel.duration_ms_median, this.w.stepModel.duration_sigma)
    let status: 'success' | 'failure' = this.w.prng.chance(this.w.stepModel.failure_rate) ? 'failure' : 'success'
    let reason: string | undefined = status === 'failure' ? 'simulated failure: exit code 1' : undefined
    let exitCode: number | null = status === 'success' ? 0 : 1
    if (r.timeoutMs > 0 && duration > r.timeoutMs) {
      duration = r.timeoutMs
      status = 'failure'; exitCode = null
      reason = `timed out after ${r.timeoutMs} ms`
    }
    this.w.afterFor(a, duration / a.clockRate, () => {
      a.running.delete(exec)
      exec.end = this.w.now
      exec.status = status
      this.w.dispatch(a, {
        type: 'step_done', runId: r.runId, stepNumber: r.stepNumber, attempt: r.attempt,
        result: {
          status, exitCode, stdout: status === 'success' ? `step ${r.stepNumber} ok\n` : '', stderr: reason ? `${reason}\n` : '', ...(reason ? { reason } : {}),
          // Files named by `file` output rules exist but are empty on a simulated node.
          ...((r.filesToRead ?? []).length > 0 ? { files: Object.fromEntries((r.filesToRead ?? []).map((f) => [f, ''])) } : {}),
        },
      })
    })
  }

  startCoordinator(c: CoordinatorNode): void {
    c.state = this.w.cores.restoreCoordinator(this.w.records(c))
    this.w.coreSteps++
    const tick = () => {
      this.w.dispatch(c, { type: 'tick' })
      this.w.afterFor(c, COORDINATOR_TICK_MS / c.clockRate, tick)
    }
    this.w.afterFor(c, COORDINATOR_TICK_MS / c.clockRate, tick)
  }

  coordinatorEffect(c: CoordinatorNode, e: CoordinatorEffect): void {
    switch (e.type) {
      case 'publish': {
        const opened = open(e.envelope, [c.identity.publicKey])
        if (opened.ok && opened.body.type === 'job_state') {
          this.w.gossip.publish(c, e.envelope, `job_state ${opened.body.jobId} v${opened.body.version}`)
          break
        }
        if (opened.ok && opened.body.type === 'revocations') {
          this.w.gossip.publish(c, e.envelope, `revocations v${opened.body.version}`)
          break
        }
        if (!opened.ok || opened.body.type !== 'job') {
          // A core bug, not a simulator invariant: the job was accepted, yet no node can open
          // what was signed (e.g. past MAX_ENVELOPE_BYTES at ~46,000 targets), so it never runs.
          this.w.violation('liveness', `the coordinator accepted a job and published an envelope no node can open (${opened.ok ? `type ${opened.body.type}` : opened.reason}; body ${e.envelope.body.length} characters): the job can never run`)
          this.w.gossip.publish(c, e.envelope, 'job (unopenable)')
          break
        }
        const body = opened.body
        this.w.legitJobs.set(body.jobId, { body: e.envelope.body, commands: body.template.actions.steps.map((s) => canonicalJson(s.command)) })
        this.w.jobBodies.set(body.jobId, body)
        const targets = c.state?.jobs.get(body.jobId)?.resolved
        if (targets) this.w.jobTargets.set(body.jobId, targets)
        if (this.w.options.livenessBoundMs === undefined && !this.w.boundResolved.has(body.jobId)) {
          this.w.boundResolved.add(body.jobId)
          const b = livenessBound(body.template, this.w.stepModel, body.resolved.groups.map((g) => g.size))
          if (this.w.boundResolved.size === 1 || b.ms > this.w.livenessBoundMs) { this.w.livenessBoundMs = b.ms; this.w.livenessFormula = b.formula }
        }
        this.w.record(`0 publish ${body.jobId}`)
        this.w.gossip.publish(c, e.envelope, `job ${body.jobId}`)
        break
      }
      case 'reply_rpc': {
        const done = c.pendingRpc.get(e.requestId)
        c.pendingRpc.delete(e.requestId)
        done?.(e.envelope)
        break
      }
      case 'reply_submit': {
        const done = c.pendingSubmit.get(e.requestId)
        c.pendingSubmit.delete(e.requestId)
        done?.(e.outcome)
        break
      }
      case 'log':
        this.w.logCounts[e.level]++
        if (e.level !== 'debug') this.w.record(`0 ${e.level} ${e.msg}`)
        break
      case 'persist':
        break
    }
  }

}
