// Attempts: what the agent core decides about one run's steps. Starting an attempt (or refusing
// it before it runs), recording its result, retrying it, going on to the next step, finishing or
// skipping the run (its result goes to the outbox), and completing a step that asked for a reboot.
import type { Reason } from '../protocol/reasons.js'
import { checkAllowed } from './allowlist.js'
import { completeStep, matchSkillVersion, outputFilesToRead, planStep } from './steps.js'
import { argvExposure, makeRedactor, redact, redactCuts, redactDeep, sensitiveInputValues } from './secrets.js'
import { factFor } from '../protocol/gate.js'
import { backoffDelayMs } from '../protocol/rollout.js'
import {
  MAX_ARTIFACTS_PER_STEP, MAX_ARTIFACT_NAME_CHARS, MAX_STEP_NAME_CHARS, MAX_ATTEMPT_LOG, MAX_OUTPUTS_PER_STEP, MAX_REPORTED_ARTIFACT_CHARS, MAX_RESULT_ARTIFACT_CHARS,
  MAX_OUTPUT_VALUE_CHARS, MAX_REASON_CHARS, MAX_STEP_OUTPUT_CHARS, PROTOCOL_VERSION, seal, type Artifact, type ResultBody, type StepOutcome,
} from '../protocol/wire.js'
import { key, runIds, MS_PER_S, type AgentConfig, type AgentEffect, type AgentEvent, type AgentRun, type AgentState, type KnownJob, type OutboxEntry, type RunSecrets, type StepAttemptResult } from './state.js'
import { noteRequest } from './link.js'
import { persistProgress, publishProgress } from './turns.js'

/** The tail of an interpreter's own diagnostic log that one log line carries, in characters. */
export const MAX_INTERPRETER_LOG_CHARS = 4096

/** The runtime reports an attempt: recorded if it is the attempt in flight, else ignored (a late or duplicate report). */
export function onStepDone(state: AgentState, config: AgentConfig, event: Extract<AgentEvent, { type: 'step_done' }>, now: number, effects: AgentEffect[]): void {
  const run = state.runs.get(event.runId)
  const job = run && state.jobs.get(run.jobId)
  if (!run || !job || run.status !== 'running' || !run.inFlight || run.stepIndex + 1 !== event.stepNumber || run.attempt !== event.attempt) {
    effects.push({ type: 'log', level: 'warn', msg: 'ignoring a step result that matches no attempt in flight', fields: { runId: event.runId, step: event.stepNumber, attempt: event.attempt } })
    return
  }
  recordAttempt(state, config, job, run, event.result, now, effects)
}

/**
 * Starts the current attempt of `run` (step `run.stepIndex`, attempt `run.attempt`), or decides
 * without running anything: a missing skill, a failed input or condition check, or a command the
 * allowlist refuses fail the step; false conditions skip it. Persists the run (in flight) before
 * the `run_step` effect, so an agent that dies meanwhile knows the attempt may have run.
 */
export function startAttempt(state: AgentState, config: AgentConfig, job: KnownJob, run: AgentRun, notBefore: number, now: number, effects: AgentEffect[]): void {
  const template = job.body.template
  const step = template.actions.steps[run.stepIndex]!
  const secrets = state.secrets.get(run.runId) ?? { values: {}, secrets: [] }
  const installed = config.skills[step.interpreter.name] ?? []
  const version = matchSkillVersion(installed, step.interpreter.skill)
  let refusal: string | undefined
  if (version === undefined) {
    refusal = installed.length === 0
      ? `skill not installed: interpreter ${step.interpreter.name} is not installed on this node`
      : `skill not installed: ${step.interpreter.name} ${installed.join(', ')} is installed; the step needs ${step.interpreter.skill.minVersion || '*'} to ${step.interpreter.skill.maxVersion || '*'}`
  }
  const plan = refusal === undefined ? planStep(step, { ...run.values, ...secrets.values }, secrets.secrets) : undefined
  if (plan?.action === 'fail') refusal = plan.reason
  if (plan?.action === 'run') {
    const allowed = checkAllowed(config.allow, { interpreter: step.interpreter.name, command: plan.command, os: config.os }, makeRedactor(plan.secrets))
    if (!allowed.ok) refusal = `refused by the agent allowlist, not run: ${allowed.reason}`
    else refusal = argvExposure(step.interpreter.name, plan.command, plan.secrets)
  }
  if (refusal !== undefined || plan?.action === 'skip') {
    const skipped = plan?.action === 'skip'
    const outcome = safeOutcome(state, job, run, {
      number: run.stepIndex + 1, name: step.name.slice(0, MAX_STEP_NAME_CHARS), status: skipped ? 'skipped' : 'failure', attempts: 0,
      exitCode: null, outputs: {}, stdout: '', stderr: '',
      reason: skipped ? (plan as { explanation: string }).explanation : refusal!,
      finishedAt: now,
    })
    effects.push({ type: 'log', level: skipped ? 'info' : 'warn', msg: skipped ? 'step skipped' : 'step refused before running', fields: { ...runIds(run), step: outcome.number, reason: outcome.reason } })
    // A refusal is deterministic: retrying it would refuse again, so it is final for this step.
    afterStep(state, config, job, run, outcome, false, now, effects)
    return
  }
  if (plan?.action !== 'run') return
  const groupTimeoutMs = template.target.groups[run.group]!.timeoutSeconds * MS_PER_S
  const stepTimeoutMs = (step.limits?.timeoutSeconds ?? 0) * MS_PER_S
  const timeoutMs = stepTimeoutMs > 0 ? Math.min(stepTimeoutMs, groupTimeoutMs || stepTimeoutMs) : groupTimeoutMs
  run.inFlight = true
  effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }], dels: [] })
  effects.push({
    type: 'run_step',
    notBefore,
    request: {
      runId: run.runId, jobId: run.jobId, instanceId: run.instanceId, stepNumber: run.stepIndex + 1, attempt: run.attempt,
      interpreter: step.interpreter.name, command: plan.command, inputs: plan.inputs, os: config.os, timeoutMs,
      limits: { cores: step.limits?.cores ?? 0, cpu: step.limits?.cpu ?? 0 },
      filesToRead: outputFilesToRead(step.outputFieldRules ?? {}),
    },
  })
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : text.slice(text.length - max)
}

export function recordAttempt(state: AgentState, config: AgentConfig, job: KnownJob, run: AgentRun, result: StepAttemptResult, now: number, effects: AgentEffect[]): void {
  const step = job.body.template.actions.steps[run.stepIndex]!
  const secrets = state.secrets.get(run.runId) ?? { values: {}, secrets: [] }
  run.inFlight = false
  if (result.interim === 'reboot_pending') {
    // The node reboots now. The step completes when it is back (event `rebooted`, or restore).
    run.awaitingReboot = true
    effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }], dels: [] })
    effects.push({ type: 'log', level: 'info', msg: 'step asked for a reboot; the run resumes when the node is back', fields: { ...runIds(run), step: run.stepIndex + 1 } })
    return
  }
  const plan = planStep(step, { ...run.values, ...secrets.values }, secrets.secrets)
  const known = plan.action === 'run' ? plan.secrets : secrets.secrets
  const done = completeStep(step.outputFieldRules ?? {}, {
    status: result.status, exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr,
    ...(result.reason !== undefined ? { reason: result.reason } : {}),
    ...(result.files ? { files: result.files } : {}),
    ...(result.artifacts ? { artifacts: Object.fromEntries(result.artifacts.map((a) => [a.name, a.encoding === 'utf8' ? a.content : Buffer.from(a.content, 'base64').toString('utf8')])) } : {}),
  }, known)
  if (result.interpreterLog) {
    effects.push({ type: 'log', level: 'info', msg: 'interpreter log', fields: { ...runIds(run), step: run.stepIndex + 1, attempt: run.attempt, log: redactCuts(redact(result.interpreterLog, done.secrets), done.secrets).slice(-MAX_INTERPRETER_LOG_CHARS) } })
  }
  const interpreterOutputs = result.outputs ? Object.fromEntries(Object.entries(result.outputs).filter(([k]) => !(k in done.outputs))) : {}
  const previous = run.steps[run.stepIndex]?.attemptLog ?? []
  const attemptLog = [...previous, { attempt: run.attempt, status: done.status, exitCode: done.exitCode, startedAt: result.startedAt ?? now, finishedAt: now }].slice(-MAX_ATTEMPT_LOG)
  const outcome: StepOutcome = {
    number: run.stepIndex + 1,
    name: step.name.slice(0, MAX_STEP_NAME_CHARS),
    status: done.status,
    attempts: run.attempt,
    exitCode: done.exitCode,
    outputs: Object.fromEntries(Object.entries({ ...interpreterOutputs, ...done.reportedOutputs }).slice(0, MAX_OUTPUTS_PER_STEP)),
    stdout: clip(done.stdout, MAX_STEP_OUTPUT_CHARS),
    stderr: clip(done.stderr, MAX_STEP_OUTPUT_CHARS),
    ...(done.reason ? { reason: done.reason.slice(0, MAX_REASON_CHARS) } : {}),
    startedAt: attemptLog[0]!.startedAt,
    finishedAt: now,
    attemptLog,
    ...(result.artifacts?.length ? { artifacts: reportArtifacts(run, result.artifacts, done.secrets) } : {}),
  }
  if (done.status === 'success') {
    // Sensitive values stay in memory; the rest is persisted with the run for later steps.
    const sensitive = new Set(done.secrets)
    const nextSecrets: RunSecrets = { values: { ...secrets.values }, secrets: done.secrets }
    for (const [k, v] of Object.entries({ ...interpreterOutputs, ...done.outputs })) {
      if (sensitive.has(v) || done.reportedOutputs[k] !== v) nextSecrets.values[k] = v
      else run.values[k] = v
    }
    state.secrets.set(run.runId, nextSecrets)
  } else {
    // Not carried to later steps, but what this attempt revealed is still redacted (safeOutcome).
    state.secrets.set(run.runId, { values: secrets.values, secrets: done.secrets })
  }
  afterStep(state, config, job, run, outcome, true, now, effects)
}

/**
 * The evidence a result carries: each artifact cut to MAX_REPORTED_ARTIFACT_CHARS and the
 * run's total to MAX_RESULT_ARTIFACT_CHARS; text redacted like any output; binary content that
 * contains a secret is dropped.
 */
function reportArtifacts(run: AgentRun, artifacts: NonNullable<StepAttemptResult['artifacts']>, secrets: string[]): Artifact[] {
  let used = 0
  for (const s of run.steps) for (const a of s?.artifacts ?? []) used += a.content.length
  const out: Artifact[] = []
  for (const a of artifacts.slice(0, MAX_ARTIFACTS_PER_STEP)) {
    let content = a.encoding === 'utf8' ? redact(a.content, secrets) : a.content
    if (a.encoding === 'base64' && secrets.some((sec) => sec && Buffer.from(a.content, 'base64').includes(sec))) content = ''
    const room = Math.max(0, Math.min(MAX_REPORTED_ARTIFACT_CHARS, MAX_RESULT_ARTIFACT_CHARS - used))
    const truncated = content.length > room
    if (truncated) content = content.slice(0, a.encoding === 'base64' ? room - (room % 4) : room)
    used += content.length
    out.push({ name: a.name.slice(0, MAX_ARTIFACT_NAME_CHARS), encoding: a.encoding, bytes: a.bytes, content, truncated: truncated || (a.encoding === 'base64' && content === '' && a.content !== '') })
  }
  return out
}

/** Every secret an outcome of the run's current step may contain: the run's known secrets and the step's sensitive inputs. */
function stepSecrets(state: AgentState, job: KnownJob, run: AgentRun): string[] {
  const known = state.secrets.get(run.runId) ?? { values: {}, secrets: [] }
  const step = job.body.template.actions.steps[run.stepIndex]!
  return [...known.secrets, ...sensitiveInputValues(step.expectedInputs, { ...run.values, ...known.values })]
}

/**
 * The one place a step's outcome becomes what is logged, persisted and sent (and, through its
 * reason, the run's reason): every string redacted with stepSecrets (captured output also where
 * its capture cut it, redactCuts), then the reason and the output values bounded (after redaction: a secret cut in half would no longer be recognised).
 */
function safeOutcome(state: AgentState, job: KnownJob, run: AgentRun, outcome: StepOutcome): StepOutcome {
  const secrets = stepSecrets(state, job, run)
  const safe = secrets.length === 0 ? { ...outcome } : redactDeep(outcome, secrets)
  safe.stdout = redactCuts(safe.stdout, secrets)
  safe.stderr = redactCuts(safe.stderr, secrets)
  if (safe.reason !== undefined) safe.reason = safe.reason.slice(0, MAX_REASON_CHARS)
  safe.outputs = Object.fromEntries(Object.entries(safe.outputs).map(([k, v]) => [k, v.slice(0, MAX_OUTPUT_VALUE_CHARS)]))
  return safe
}

/** Retry, go on to the next step, or finish the run, after `outcome` of the current step. */
function afterStep(state: AgentState, config: AgentConfig, job: KnownJob, run: AgentRun, raw: StepOutcome, retryable: boolean, now: number, effects: AgentEffect[]): void {
  const outcome = safeOutcome(state, job, run, raw)
  const steps = job.body.template.actions.steps
  const step = steps[run.stepIndex]!
  run.steps[run.stepIndex] = outcome
  if (outcome.status === 'failure' && retryable && run.attempt <= step.retryCount) {
    // Retry: a new attempt number, so at-most-once per (instance, step, attempt) still holds.
    run.attempt += 1
    const delay = backoffDelayMs(step.failureBehavior.retryBackoffStrategy, run.attempt)
    effects.push({ type: 'log', level: 'info', msg: 'step attempt failed; retrying', fields: { ...runIds(run), step: outcome.number, nextAttempt: run.attempt, delayMs: delay, reason: outcome.reason } })
    startAttempt(state, config, job, run, now + delay, now, effects)
    return
  }
  const ignored = outcome.status === 'failure' && step.failureBehavior.action === 'retryThenIgnore'
  if (outcome.status === 'failure' && !ignored) {
    for (let i = run.stepIndex + 1; i < steps.length; i++) {
      run.steps[i] = { number: i + 1, name: steps[i]!.name.slice(0, MAX_STEP_NAME_CHARS), status: 'not_run', attempts: 0, exitCode: null, outputs: {}, stdout: '', stderr: '', reason: `step ${outcome.number} failed` }
    }
    finishRun(state, config, run, 'failure', now, effects, { code: 'step_failed', text: `step ${outcome.number} (${step.name}) failed: ${outcome.reason ?? 'exit code ' + String(outcome.exitCode)}` })
    return
  }
  if (ignored) effects.push({ type: 'log', level: 'info', msg: 'step failed; failure ignored (retryThenIgnore)', fields: { ...runIds(run), step: outcome.number } })
  if (run.stepIndex + 1 < steps.length) {
    run.stepIndex += 1
    run.attempt = 1
    startAttempt(state, config, job, run, now, now, effects)
    return
  }
  finishRun(state, config, run, 'success', now, effects)
}

/** The node is back from a reboot: the step that asked for it succeeded; go on. */
export function completeReboots(state: AgentState, config: AgentConfig, now: number, effects: AgentEffect[]): void {
  for (const run of state.runs.values()) {
    if (run.status !== 'running' || !run.awaitingReboot) continue
    const job = state.jobs.get(run.jobId)
    if (!job) continue
    run.awaitingReboot = false
    const step = job.body.template.actions.steps[run.stepIndex]!
    effects.push({ type: 'log', level: 'info', msg: 'node is back from the reboot; run resumes', fields: { ...runIds(run), step: run.stepIndex + 1 } })
    afterStep(state, config, job, run, {
      number: run.stepIndex + 1, name: step.name.slice(0, MAX_STEP_NAME_CHARS), status: 'success', attempts: run.attempt,
      exitCode: 0, outputs: {}, stdout: '', stderr: '', reason: 'node rebooted and came back', finishedAt: now,
    }, false, now, effects)
  }
}

export function finishRun(state: AgentState, config: AgentConfig, run: AgentRun, status: 'success' | 'failure' | 'skipped', now: number, effects: AgentEffect[], reason?: Reason): void {
  run.status = status
  run.finishedAt = now
  run.inFlight = false
  state.secrets.delete(run.runId)
  if (reason) { run.reason = reason.text.slice(0, MAX_REASON_CHARS); run.reasonCode = reason.code }
  const body: ResultBody = {
    type: 'result', v: PROTOCOL_VERSION, runId: run.runId, jobId: run.jobId, instanceId: run.instanceId,
    nodeId: config.nodeId, occurrenceAt: run.occurrenceAt, group: run.group, batch: run.batch, status,
    ...(run.reason ? { reason: run.reason } : {}), ...(run.reasonCode ? { reasonCode: run.reasonCode } : {}),
    startedAt: run.startedAt, finishedAt: now, steps: run.steps,
  }
  const envelope = seal(config.identity, body)
  const entry: OutboxEntry = { runId: run.runId, envelope, nextSendAt: now + config.resendInitialMs, intervalMs: config.resendInitialMs }
  state.outbox.set(run.runId, entry)
  // The result is durable before it is sent: a crash after this point re-sends it on restart.
  effects.push({ type: 'persist', puts: [{ key: key.run(run.runId), value: run }, { key: key.outbox(run.runId), value: entry }], dels: [] })
  effects.push({ type: 'log', level: 'info', msg: `run finished: ${status}`, fields: { ...runIds(run), reason: run.reason } })
  noteRequest(state, now)
  effects.push({ type: 'send', kind: 'result', runId: run.runId, envelope })
  if (run.gated) {
    const k = state.progress.get(run.instanceId)
    if (k) {
      factFor(k, run.group, run.position).done = status
      k.version++
      persistProgress(run.instanceId, k, effects)
    }
    publishProgress(state, config, run, 'done', now, effects, status)
  }
}

export function skipRun(state: AgentState, config: AgentConfig, run: AgentRun, now: number, effects: AgentEffect[], reason: Reason): void {
  const steps = state.jobs.get(run.jobId)!.body.template.actions.steps
  run.steps = steps.map((st, i) => ({ number: i + 1, name: st.name.slice(0, MAX_STEP_NAME_CHARS), status: 'not_run' as const, attempts: 0, exitCode: null, outputs: {}, stdout: '', stderr: '' }))
  finishRun(state, config, run, 'skipped', now, effects, reason)
}
