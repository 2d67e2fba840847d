// Enrolment for core-level tests: one unlimited enrolment token, and hellos that present it over
// the node's own (real) peer id, as a real agent's first connection does.
import { coordinatorStep, type CoordinatorConfig, type CoordinatorEffect, type CoordinatorState } from '../../coordinator/core.js'
import { newEnrollment } from '../../coordinator/members.js'
import { peerIdOf, type Identity } from '../../protocol/keys.js'
import { PROTOCOL_VERSION, seal } from '../../protocol/wire.js'

export const TEST_ENROLL_TOKEN = 'chorus_enroll_test-token-for-core-tests'

export function ensureEnrollment(state: CoordinatorState, config: CoordinatorConfig, now: number, token = TEST_ENROLL_TOKEN, opts: { id?: string; uses?: number; ttlMs?: number; attributes?: Record<string, string> } = {}): void {
  const id = opts.id ?? 'test'
  if (state.members.enrollments.has(id)) return
  coordinatorStep(state, config, { type: 'create_enrollment', requestId: `enrol-${id}`, enrollment: newEnrollment({ id, token, ...opts }, now) }, now)
}

/** A signed hello from `identity` as node `nodeId`, presenting the test token, stepped through the core. */
export function enrolHello(state: CoordinatorState, config: CoordinatorConfig, identity: Identity, nodeId: string, now: number, facts: Record<string, string> = {}, token: string | undefined = TEST_ENROLL_TOKEN, agentVersion = 'test'): CoordinatorEffect[] {
  ensureEnrollment(state, config, now)
  const peerId = peerIdOf(identity.publicKey)
  const env = seal(identity, { type: 'hello', v: PROTOCOL_VERSION, nodeId, peerId, facts, agentVersion, sentAt: now, ...(token ? { enrollToken: token } : {}) })
  return coordinatorStep(state, config, { type: 'rpc', requestId: `hello-${nodeId}-${now}`, envelope: env, peerId }, now)
}
