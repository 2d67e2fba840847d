// What a job's steps say, done by real agents over real child processes: outputs feeding
// conditions, retries with backoff, ignored failures, timeouts that kill process trees, the
// allowlist, secrets, and missing skills.
import { describe, expect, it } from 'vitest'
import { readFile, rm, stat } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { LocalFleet } from '../cli/fleet.js'
import { withLocalFleet } from './helpers/fleet.js'
import { storedPlaces } from './helpers/stored.js'
import { apiFetch } from '../cli/client.js'
import type { RunReport } from '../coordinator/report.js'
import { failFast, nodesGroup, shell, template } from './helpers/templates.js'

let fleet: LocalFleet
let dir: string


function job(name: string, node: string, steps: Record<string, unknown>[]) {
  return JSON.stringify(template(name, [nodesGroup([node], { batchSize: { type: 'number', value: 1 } })], steps.map((s) => ({ interpreter: shell, retryCount: 0, failureBehavior: failFast, ...s }))))
}

async function runOf(name: string, node: string, steps: Record<string, unknown>[]): Promise<RunReport> {
  const id = await fleet.submit(job(name, node, steps))
  const report = await fleet.waitForJob(id, 60_000)
  return report.instances[0]!.runs[0]!
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false)
}

// node-1 runs anything signed; node-2 keeps the default allowlist (read-only commands).
withLocalFleet('chorus-what-', { agents: 2, agentConfigFor: (i) => (i === 0 ? { allow: 'any', restartMode: 'simulate', interpreters: [{ name: 'acme/evidence-interpreter', path: new URL('../interpreters/bin/test-interpreter.js', import.meta.url).pathname, version: '1.0.0' }] } : undefined) }, (f, d) => { fleet = f; dir = d })

describe('step semantics over real processes', () => {
  it('extracts outputs by regEx and jsonPath; a false condition skips a later step, a true one runs with the value', async () => {
    const run = await runOf('outputs and conditions', 'node-1', [
      { name: 'version', command: { linux: ["echo 'nginx version: 1.25.3'"] }, outputFieldRules: { VERSION: { sourceType: 'output', source: 'stdout', extractMethod: 'regEx', expression: 'version: ([0-9.]+)' } } },
      { name: 'config', command: { linux: [`echo '{"config":{"enabled":false,"port":8080}}'`] }, outputFieldRules: { ENABLED: { sourceType: 'output', source: 'stdout', extractMethod: 'jsonPath', expression: '$.config.enabled' } } },
      {
        name: 'only when enabled', command: { linux: [`touch ${dir}/enabled-marker`] },
        expectedInputs: { ENABLED: { type: 'string', required: true } },
        conditions: [{ inputName: 'ENABLED', operator: 'eq', value: 'true' }],
      },
      {
        name: 'only on 1.25', command: { linux: ['echo running {{.VERSION}}'] },
        expectedInputs: { VERSION: { type: 'string', required: true } },
        conditions: [{ inputName: 'VERSION', operator: 'startsWith', value: '1.25' }],
      },
    ])
    expect(run.status).toBe('success')
    expect(run.steps.map((s) => s.status)).toEqual(['success', 'success', 'skipped', 'success'])
    expect(run.steps[0]!.outputs).toEqual({ VERSION: '1.25.3' })
    expect(run.steps[1]!.outputs).toEqual({ ENABLED: 'false' })
    expect(run.steps[2]!.reason).toMatch(/conditions not met/)
    expect(run.steps[3]!.stdout.trim()).toBe('running 1.25.3')
    expect(await exists(`${dir}/enabled-marker`)).toBe(false)
  })

  it('a step failing twice then succeeding with retryCount 2 shows 3 attempts and the linear backoff delays', async () => {
    const counter = `${dir}/attempts`
    const run = await runOf('retries', 'node-1', [{
      name: 'flaky', retryCount: 2,
      failureBehavior: { action: 'retryThenFail', retryBackoffStrategy: { type: 'linear', delaySeconds: 1, arguments: [] } },
      command: { linux: [`n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; test $n -ge 3`] },
    }])
    expect(run.status).toBe('success')
    const step = run.steps[0]!
    expect(step.attempts).toBe(3)
    expect(step.attemptLog.map((a) => [a.attempt, a.status])).toEqual([[1, 'failure'], [2, 'failure'], [3, 'success']])
    const t = step.attemptLog.map((a) => ({ start: Date.parse(a.startedAt!), end: Date.parse(a.finishedAt!) }))
    // linear, d = 1 s: retry r waits d·r → 1 s before attempt 2, 2 s before attempt 3.
    expect(t[1]!.start - t[0]!.end).toBeGreaterThanOrEqual(950)
    expect(t[2]!.start - t[1]!.end).toBeGreaterThanOrEqual(1950)
    expect(await readFile(counter, 'utf8')).toBe('3\n')
  })

  it('retryThenIgnore records the failure and lets the run succeed', async () => {
    const run = await runOf('ignored', 'node-1', [
      { name: 'may fail', command: { linux: ['exit 4'] }, retryCount: 1, failureBehavior: { action: 'retryThenIgnore', retryBackoffStrategy: { type: 'none', delaySeconds: 0, arguments: [] } } },
      { name: 'goes on', command: { linux: ['echo still here'] } },
    ])
    expect(run.status).toBe('success')
    expect(run.steps[0]).toMatchObject({ status: 'failure', attempts: 2, exitCode: 4 })
    expect(run.steps[1]).toMatchObject({ status: 'success' })
  })

  it('a sleep 30 step with timeoutSeconds 1 is killed together with its children', async () => {
    const pidFile = `${dir}/child.pid`
    const run = await runOf('timeout', 'node-1', [{
      name: 'too slow', limits: { timeoutSeconds: 1 },
      command: { linux: [`sleep 30 & echo $! > ${pidFile}; sleep 30`] },
    }])
    // Ended by its 1 s limit (the reason says so), not by the 30 s sleeps, and the background child is gone too.
    expect(run.status).toBe('failure')
    expect(run.steps[0]!.reason).toMatch(/timed out/)
    const pid = Number(await readFile(pidFile, 'utf8'))
    const alive = () => {
      try { process.kill(pid, 0) } catch { return false }
      return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
    }
    expect(alive()).toBe(false)
  })

  it('a reboot step: the run is persisted, waits for the node to come back, and resumes', async () => {
    const run = await runOf('reboot', 'node-1', [
      { name: 'before', command: { linux: [`touch ${dir}/before-reboot`] } },
      { name: 'reboot', interpreter: { name: 'chef-platform/restart-interpreter', skill: { minVersion: '1.0.0', maxVersion: '1.9.99' } }, command: { exec: 'machine_reboot', args: { time: 'now' } } },
      { name: 'after', command: { linux: [`touch ${dir}/after-reboot`] } },
    ])
    expect(run.status).toBe('success')
    expect(run.steps.map((s) => s.status)).toEqual(['success', 'success', 'success'])
    expect(run.steps[1]!.reason).toMatch(/rebooted and came back/)
    expect(await exists(`${dir}/after-reboot`)).toBe(true)
    const log = await readFile(fleet.agents[0]!.logFile, 'utf8')
    expect(log.indexOf('step asked for a reboot')).toBeLessThan(log.indexOf('node is back from the reboot'))
  })

  it('an external interpreter attaches evidence that the API returns, bounded', async () => {
    const run = await runOf('evidence', 'node-1', [{ name: 'scan', interpreter: { name: 'acme/evidence-interpreter', skill: { minVersion: '1.0.0', maxVersion: '1.9.99' } }, command: { mode: 'artifacts' } }])
    expect(run.status, JSON.stringify(run.steps[0])).toBe('success')
    expect(run.steps[0]!.artifacts.map((a) => a.name)).toEqual(['report'])
    const res = await apiFetch(fleet.conn, `/v1/runs/${run.runId}/steps/1/artifacts/report`)
    expect(res.status).toBe(200)
    expect(await res.text()).toBe('evidence\n')
    const missing = await apiFetch(fleet.conn, `/v1/runs/${run.runId}/steps/1/artifacts/big`)
    expect(missing.status).toBe(404) // over MAX_ARTIFACT_BYTES: refused by the agent, never carried
  })

  it('a command outside the allowlist never runs', async () => {
    const run = await runOf('not allowed', 'node-2', [{ name: 'write', command: { linux: [`touch ${dir}/forbidden`] } }])
    expect(run.status).toBe('failure')
    expect(run.steps[0]!.status).toBe('failure')
    expect(run.steps[0]!.reason).toMatch(/allowlist/)
    expect(run.steps[0]!.attempts).toBe(0)
    expect(await exists(`${dir}/forbidden`)).toBe(false)
  })

  it('a step whose interpreter skill is missing fails with the reason', async () => {
    const run = await runOf('no skill', 'node-1', [{ name: 'python', interpreter: { name: 'acme/python-interpreter', skill: { minVersion: '3.0', maxVersion: '3.99' } }, command: { script: 'print(1)' } }])
    expect(run.status).toBe('failure')
    expect(run.steps[0]!.reason).toMatch(/skill not installed: interpreter acme\/python-interpreter/)
  })

  it('a sensitive value is absent from every stored byte, logs and reports included', async () => {
    const leak = `${dir}/secret.txt`
    const run = await runOf('secrets', 'node-1', [
      {
        name: 'mint a token', command: { linux: ['head -c 12 /dev/urandom | od -An -tx1 | tr -d " \\n"'] },
        outputFieldRules: { TOKEN: { sourceType: 'output', source: 'stdout', extractMethod: 'content', sensitive: true } },
      },
      {
        name: 'use it', command: { linux: [`echo token={{.TOKEN}}; printf %s {{.TOKEN}} > ${leak}`] },
        expectedInputs: { TOKEN: { type: 'string', required: true, sensitive: true } },
      },
    ])
    expect(run.status).toBe('success')
    const secret = await readFile(leak, 'utf8')
    expect(secret).toMatch(/^[0-9a-f]{24}$/)
    expect(run.steps[0]!.outputs.TOKEN).toBe('[REDACTED]')
    expect(run.steps[1]!.stdout).toContain('token=[REDACTED]')
    // Stop everything, then read every stored byte: raw files and the decoded level records.
    await fleet.stop({ keepDirs: true })
    const found = await storedPlaces(fleet, secret)
    await rm(fleet.baseDir, { recursive: true, force: true })
    expect(found).toEqual([])
  })
})
