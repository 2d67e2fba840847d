// Secrets never leave memory in clear, over a real coordinator and a real agent with an allowlist:
// a sensitive value used by a long-running shell step and put in commands the agent refuses
// (one by its allowlist, one because it would be in a program's argv) is nowhere on disk (raw
// bytes and decoded level records of both stores), in the logs, in the API's answers, or in
// /proc/PID/cmdline of any process while the step runs.
import { describe, expect, it } from 'vitest'
import { apiFetch } from '../cli/client.js'
import { readdirSync, readFileSync } from 'node:fs'
import { readFile, rm, stat } from 'node:fs/promises'
import { LocalFleet } from '../cli/fleet.js'
import { withLocalFleet } from './helpers/fleet.js'
import { storedPlaces } from './helpers/stored.js'
import { exec, ignoreFailure, shell } from './helpers/templates.js'

let fleet: LocalFleet
let dir: string


const TOKEN_IN = { TOKEN: { type: 'string', required: true, sensitive: true } }

// The shell runs anything; exec only printf (so curl is refused by the allowlist, printf by the argv rule).
withLocalFleet('chorus-secrets-', {
  agents: 1,
  agentConfigFor: () => ({ allow: { interpreters: [{ name: shell.name, commands: 'any' }, { name: exec.name, commands: ['/printf .*/'] }] } }),
}, (f, d) => { fleet = f; dir = d })

function job(leak: string) {
  return JSON.stringify({
    name: 'secrets in refused commands', scheduleRule: 'immediate', exceptionRules: [],
    target: { executionType: 'parallel', groups: [{ timeoutSeconds: 60, batchSize: { type: 'number', value: 1 }, distributionMethod: 'batching', successCriteria: [{ numRuns: { type: 'percent', value: 100 }, status: 'success' }], nodeListType: 'nodes', nodeIdentifiers: ['node-1'] }] },
    actions: {
      accessMode: 'agent',
      steps: [
        {
          name: 'mint a token', interpreter: shell, retryCount: 0, failureBehavior: ignoreFailure, command: { linux: ['head -c 12 /dev/urandom | od -An -tx1 | tr -d " \\n"'] },
          outputFieldRules: { TOKEN: { sourceType: 'output', source: 'stdout', extractMethod: 'content', sensitive: true } },
        },
        // printf is a shell builtin: the test learns the token without putting it in anyone's argv.
        { name: 'use it while it runs', interpreter: shell, retryCount: 0, failureBehavior: ignoreFailure, expectedInputs: TOKEN_IN, command: { linux: [`printf %s {{.TOKEN}} > ${leak}; sleep 4; echo used {{.TOKEN}}`] } },
        { name: 'refused by the allowlist', interpreter: exec, retryCount: 0, failureBehavior: ignoreFailure, expectedInputs: TOKEN_IN, command: { argv: ['curl', '-H', 'Authorization: {{.TOKEN}}', 'http://127.0.0.1:1/'] } },
        { name: 'secret in argv', interpreter: exec, retryCount: 0, failureBehavior: ignoreFailure, expectedInputs: TOKEN_IN, command: { argv: ['printf', '%s', '{{.TOKEN}}'] } },
      ],
    },
  })
}

/** Every process's command line readable now, as any local user reads them. */
function cmdlines(): string[] {
  const out: string[] = []
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try { out.push(readFileSync(`/proc/${pid}/cmdline`, 'utf8')) } catch { /* gone */ }
  }
  return out
}

async function apiText(path: string): Promise<string> {
  const res = await apiFetch(fleet.conn, path)
  expect(res.status, path).toBe(200)
  return res.text()
}

describe('secrets over a real agent', () => {
  it('a secret used by a running step and put in refused commands is in no argv, log, API answer, file or record', async () => {
    const leak = `${dir}/token.txt`
    const id = await fleet.submit(job(leak))
    // Read every process's command line while the job runs (the step sleeps 4 s).
    const seen = new Set<string>()
    let sawSleep = false
    const deadline = Date.now() + 30_000
    let leakSeenAt: number | undefined
    while (Date.now() < deadline && (leakSeenAt === undefined || Date.now() - leakSeenAt < 3_000)) {
      for (const c of cmdlines()) {
        seen.add(c)
        if (c === 'sleep\u00004\u0000') sawSleep = true
      }
      if (leakSeenAt === undefined && await stat(leak).then(() => true, () => false)) leakSeenAt = Date.now()
      await new Promise((r) => setTimeout(r, 50))
    }
    const report = await fleet.waitForJob(id, 60_000)
    const secret = await readFile(leak, 'utf8')
    expect(secret).toMatch(/^[0-9a-f]{24}$/)
    expect(sawSleep).toBe(true) // the step was running while we looked
    expect([...seen].filter((c) => c.includes(secret))).toEqual([])

    const run = report.instances[0]!.runs[0]!
    expect(run.steps.map((s) => s.status)).toEqual(['success', 'success', 'failure', 'failure'])
    expect(run.steps[1]!.stdout).toBe('used [REDACTED]\n')
    expect(run.steps[2]!.reason).toBe('refused by the agent allowlist, not run: command "curl -H Authorization: [REDACTED] http://127.0.0.1:1/" is not allowed for chorus/exec-interpreter on this node (agent allowlist)')
    expect(run.steps[3]!.reason).toMatch(/^a sensitive value would be in the command line of chorus\/exec-interpreter/)
    expect(run.steps[3]!.attempts).toBe(0)

    // The API's answers, the logs, then (everything stopped) every stored byte and record.
    const answers = await Promise.all([`/v1/reports/${id}`, `/v1/reports/${report.instances[0]!.id}`, `/v1/runs/${run.runId}`, `/v1/instances/${report.instances[0]!.id}/runs`, `/v1/jobs/${id}`].map(apiText))
    expect(answers.filter((a) => a.includes(secret))).toEqual([])
    expect(answers[2]).toContain('[REDACTED]')
    const logs = await Promise.all([fleet.coordinator.logFile, fleet.agents[0]!.logFile].map((f) => readFile(f, 'utf8')))
    expect(logs[1]).toContain('step refused before running')
    expect(logs.filter((l) => l.includes(secret))).toEqual([])
    await fleet.stop({ keepDirs: true })
    const found = await storedPlaces(fleet, secret)
    await rm(fleet.baseDir, { recursive: true, force: true })
    expect(found).toEqual([])
  }, 90_000)
})
