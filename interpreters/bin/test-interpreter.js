#!/usr/bin/env node
// A tiny external interpreter for tests of the contract in interpreters/external.ts.
// command.mode: "echo" (default) | "fail" | "garbage" | "sleep" | "artifacts" | "crash"
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

let input = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (d) => { input += d })
process.stdin.on('end', () => {
  const req = JSON.parse(input)
  const mode = req.command?.mode ?? 'echo'
  process.stderr.write(`test-interpreter: mode ${mode} step ${req.stepNumber}\n`)
  const reply = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
  switch (mode) {
    case 'echo':
      reply({ status: 'success', exitCode: 0, stdout: JSON.stringify(req) + '\n', stderr: '', outputs: { GREETING: `hello ${req.inputs.who ?? 'nobody'}` } })
      break
    case 'fail':
      reply({ status: 'failure', exitCode: 3, stdout: 'partial\n', stderr: 'boom\n', reason: 'the thing failed' })
      break
    case 'garbage':
      process.stdout.write('this is not json\n')
      break
    case 'crash':
      process.exit(7)
      break
    case 'artifacts':
      writeFileSync(join(req.artifactDir, 'report.txt'), 'evidence\n')
      writeFileSync(join(req.artifactDir, 'big.bin'), Buffer.alloc(1024 * 1024 + 1, 1))
      reply({ status: 'success', exitCode: 0, stdout: '', stderr: '', artifacts: [
        { name: 'report', path: 'report.txt' }, { name: 'big', path: 'big.bin' }, { name: 'escape', path: '/etc/passwd' },
      ] })
      break
    case 'sleep':
      if (req.command.ignoreTerm) process.on('SIGTERM', () => {})
      writeFileSync(req.command.pidFile, String(process.pid))
      setInterval(() => {}, 1000)
      break
  }
})
