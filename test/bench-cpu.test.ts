// The benchmark's CPU accounting (/proc/PID/stat) against a process that burns a known CPU time.
import { describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { cpuMs } from '../cli/bench.js'

describe('bench CPU accounting', () => {
  it('measures a process that burns 400 ms of CPU within 20 %', async () => {
    // The child burns CPU time (not wall time: the machine may be busy), says how much it used, then waits to be ended.
    const child = spawn(process.execPath, ['-e', `
      process.stdout.write('ready\\n')
      process.stdin.once('data', () => {
        const t0 = process.cpuUsage(); let x = 0
        while ((process.cpuUsage(t0).user + process.cpuUsage(t0).system) < 400_000) x += Math.sqrt(x + 1)
        const used = process.cpuUsage(t0)
        process.stdout.write(String((used.user + used.system) / 1000) + '\\n')
      })
      setInterval(() => {}, 1000)
    `], { stdio: ['pipe', 'pipe', 'inherit'] })
    try {
      const lines: string[] = []
      child.stdout.setEncoding('utf8').on('data', (d: string) => lines.push(...d.trim().split('\n')))
      while (!lines.includes('ready')) await once(child.stdout, 'data')
      const before = await cpuMs(child.pid)
      child.stdin.write('go\n')
      while (lines.length < 2) await once(child.stdout, 'data')
      const after = await cpuMs(child.pid)
      const reported = Number(lines[1])
      const measured = after!.self - before!.self
      expect(reported).toBeGreaterThanOrEqual(400)
      expect(Math.abs(measured - reported) / reported).toBeLessThan(0.2)
    } finally {
      child.kill('SIGTERM')
    }
  })
})
