import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createExecInterpreter } from '../interpreters/exec.js'
import { applyLimits, detectLimitSupport, limitSupport, parseCpuList, UNENFORCED_CPU_NICE } from '../interpreters/limits.js'
import { runProcess } from '../interpreters/process.js'
import { ShellInterpreter } from '../interpreters/shell.js'
import type { StepRequest } from '../interpreters/types.js'
import { alive, waitUntil } from './helpers/process.js'

let work: string
beforeEach(() => {
  work = realpathSync(mkdtempSync(join(tmpdir(), 'chorus-limits-')))
})
afterEach(() => {
  rmSync(work, { recursive: true, force: true })
})

const never = new AbortController().signal
function shellReq(lines: string[], extra: Partial<StepRequest> = {}): StepRequest {
  return {
    runId: 'run-l', stepNumber: 1, attempt: 1, interpreter: 'chef-platform/shell-interpreter', command: { linux: lines },
    inputs: { dir: work }, os: 'linux', timeoutMs: 20_000, maxOutputBytes: 64 * 1024, ...extra,
  }
}

const support = await limitSupport()
const multiCpu = support.allowedCpus.length > 1

describe('limit detection', () => {
  it('parses CPU lists', () => {
    expect(parseCpuList('0-3,8,10-11\n')).toEqual([0, 1, 2, 3, 8, 10, 11])
    expect(parseCpuList('')).toEqual([])
  })
  it('reports what it found', async () => {
    const s = await detectLimitSupport({ disableCgroup: true })
    expect(s.cgroup).toBeUndefined()
    expect(s.notes.join('\n')).toMatch(/cgroups disabled/)
    expect(s.allowedCpus.length).toBeGreaterThan(0)
    console.info(`limit support on this host:\n  ${support.notes.join('\n  ')}`)
  })
  it('no limits means no wrapping (shell behaviour unchanged)', async () => {
    const a = await applyLimits(undefined, support, 'x')
    expect(a.wrap('/bin/sh', ['-c', 'true'])).toEqual({ file: '/bin/sh', args: ['-c', 'true'] })
    expect(a.report).toEqual([])
  })
  it('limits that cannot bind are not applied', async () => {
    const a = await applyLimits({ cores: 4096, cpu: 4096 }, support, 'x')
    expect(a.cgroupDir).toBeUndefined()
    expect(a.report.every((l) => l.includes('not restricted'))).toBe(true)
  })
})

describe.skipIf(!support.tasksetPath || !multiCpu)('cores via taskset', () => {
  it('binds the step to one CPU', async () => {
    const r = await new ShellInterpreter().run(shellReq(['grep Cpus_allowed_list /proc/self/status'], { limits: { cores: 1, cpu: 0 } }), never)
    expect(r.status).toBe('success')
    expect(r.stdout.trim()).toBe(`Cpus_allowed_list:\t${support.allowedCpus[0]}`)
    expect(r.limitsReport).toEqual([`cores=1: enforced, affinity CPU ${support.allowedCpus[0]} (taskset)`])
  })
})

describe.skipIf(!support.cgroup)('cpu via cgroup', () => {
  it('throttles the step and removes its cgroup', async () => {
    const v = support.cgroup!.version
    // Busy-loop for ~1.5 s, then print this process's cgroup cpu.stat.
    const stat = v === 1
      ? 'cat "/sys/fs/cgroup/cpu$(grep -E \'^[0-9]+:([^:]*,)?cpu(,[^:]*)?:\' /proc/self/cgroup | cut -d: -f3)/cpu.stat"'
      : 'cat "/sys/fs/cgroup$(grep \'^0::\' /proc/self/cgroup | cut -d: -f3)/cpu.stat"'
    const r = await new ShellInterpreter().run(shellReq([
      'grep -c chorus-steps /proc/self/cgroup',
      `end=$(($(date +%s) + 2)); while [ "$(date +%s)" -lt "$end" ]; do :; done; ${stat}`,
    ], { limits: { cores: 0, cpu: 0.2 } }), never)
    expect(r.status).toBe('success')
    expect(Number(r.stdout.split('\n')[0])).toBeGreaterThanOrEqual(1)
    const throttled = /nr_throttled (\d+)/.exec(r.stdout)
    expect(Number(throttled?.[1])).toBeGreaterThan(0)
    expect(r.limitsReport?.[0]).toMatch(/^cpu=0.2: enforced, CFS quota 20000\/100000 us \(cgroup v[12] /)
    const dir = /\(cgroup v[12] (.*)\)$/.exec(r.limitsReport![0]!)![1]!
    expect(existsSync(dir)).toBe(false)
  })

  it('kills processes that escaped the process group when the step ends', async () => {
    const pidFile = join(work, 'escapee')
    const r = await createExecInterpreter().run({
      ...shellReq([]), interpreter: 'chorus/exec-interpreter',
      command: { argv: ['/bin/sh', '-c', `setsid sleep 60 </dev/null >/dev/null 2>&1 & echo $! > ${pidFile}`] },
      limits: { cores: 0, cpu: 0.5 },
    }, never)
    expect(r.status).toBe('success')
    const pid = Number(readFileSync(pidFile, 'utf8'))
    expect(await waitUntil(() => !alive(pid), 3_000)).toBe(true)
  })
})

describe.skipIf(!support.nicePath)('cpu fallback without cgroups', () => {
  it('renices and says the cpu limit is not enforced', async () => {
    const s = await detectLimitSupport({ disableCgroup: true })
    const a = await applyLimits({ cores: 0, cpu: 0.5 }, { ...s, allowedCpus: [0, 1] }, 'nice')
    expect(a.report).toEqual(['cpu=0.5: NOT enforced (no writable cgroup on this host)', `cpu=0.5: priority lowered instead (nice ${UNENFORCED_CPU_NICE})`])
    const cmd = a.wrap('/bin/sh', ['-c', 'nice'])
    const r = await runProcess({ ...cmd, timeoutMs: 10_000, maxOutputBytes: 1024 })
    await a.cleanup()
    expect(Number(r.stdout.trim())).toBe(UNENFORCED_CPU_NICE)
  })
})
