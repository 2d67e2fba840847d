// Courier template pieces the test files share: the built-in interpreters as a step names them,
// the failure behaviours, and builders for the usual shape (one immediate job, groups of named
// nodes, shell steps). Every builder returns a plain object: JSON.stringify it to submit.

/** A skill range every built-in interpreter satisfies (BUILTIN_SKILL_VERSION is 1.0.0). */
export const SKILL = { minVersion: '1.0.0', maxVersion: '1.9.99' }
export const shell = { name: 'chef-platform/shell-interpreter', skill: SKILL }
export const exec = { name: 'chorus/exec-interpreter', skill: SKILL }
/** No retry: a failed step fails the run. */
export const failFast = { action: 'retryThenFail', retryBackoffStrategy: { type: 'none', delaySeconds: 0, arguments: [] } }
/** No retry: a failed step is ignored and the run goes on. */
export const ignoreFailure = { action: 'retryThenIgnore', retryBackoffStrategy: { type: 'none', delaySeconds: 0, arguments: [] } }

/** A group over `nodes`: all at once (batching, 100 %), every run must succeed, 60 s; `extra` overrides. */
export function nodesGroup(nodes: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    timeoutSeconds: 60, batchSize: { type: 'percent', value: 100 }, distributionMethod: 'batching',
    successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }], nodeListType: 'nodes', nodeIdentifiers: nodes, ...extra,
  }
}

/** A shell step running `lines` on linux, no retry; `extra` overrides (name, failureBehavior, ...). */
export function shellStep(lines: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'work', interpreter: shell, command: { linux: lines }, retryCount: 0, failureBehavior: failFast, ...extra }
}

/** An immediate job over `groups` running `steps`; `extra` adds or overrides top-level fields (executionType: parallel unless given). */
export function template(name: string, groups: unknown[], steps: unknown[], extra: { executionType?: string } & Record<string, unknown> = {}): Record<string, unknown> {
  const { executionType = 'parallel', ...rest } = extra
  return { name, scheduleRule: 'immediate', exceptionRules: [], target: { executionType, groups }, actions: { accessMode: 'agent', steps }, ...rest }
}

/** The most common job: one group over `nodes` (group fields in `group`), one shell step of `lines`. */
export function shellJob(name: string, nodes: string[], lines: string[], group: Record<string, unknown> = {}, step: Record<string, unknown> = {}): Record<string, unknown> {
  return template(name, [nodesGroup(nodes, group)], [shellStep(lines, step)])
}
