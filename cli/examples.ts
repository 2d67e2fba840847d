// One example per command, shown at the end of its --help (commands that set their own are not listed).
import type { Command } from 'commander'

export const EXAMPLES: Record<string, string> = {
  keys: 'chorus keys --data /var/lib/chorus/coord',
  validate: 'chorus validate job.yaml other.json',
  coordinator: 'chorus coordinator --data /var/lib/chorus/coord --listen /ip4/0.0.0.0/tcp/7700 --api 127.0.0.1:7070',
  job: 'chorus job submit job.yaml --wait',
  'job plan': 'chorus job plan job.yaml --json',
  'job show': 'chorus job show 3f1c9a2e-...',
  'job cancel': 'chorus job cancel 3f1c9a2e-... --occurrence 2026-12-05T02:00:00Z',
  'job next': 'chorus job next 3f1c9a2e-... --count 5',
  exceptions: 'chorus exceptions list',
  'exceptions add': 'chorus exceptions add --id weekend --rrule "RRULE:FREQ=WEEKLY;BYDAY=SA" --duration 2880',
  'exceptions list': 'chorus exceptions list',
  'exceptions remove': 'chorus exceptions remove weekend',
  report: 'chorus report 3f1c9a2e-... --json',
  artifacts: 'chorus artifacts 5b2c... --step 2 --name evidence.txt',
  instance: 'chorus instance list --status running',
  run: 'chorus run logs 5b2c... --step 1',
  enroll: 'chorus enroll create --uses 10 --ttl 1h',
  'enroll create': 'chorus enroll create --name rack-7 --uses 40 --ttl 2h --attr rack=7',
  'enroll list': 'chorus enroll list',
  'enroll delete': 'chorus enroll delete rack-7',
  'nodes pending': 'chorus nodes pending',
  'nodes revoked': 'chorus nodes revoked',
  'nodes approve': 'chorus nodes approve web-07',
  'nodes reject': 'chorus nodes reject web-07',
  'nodes revoke': 'chorus nodes revoke web-07',
  lists: 'chorus lists set web --nodes web-01,web-02',
  'lists list': 'chorus lists list',
  'lists set': 'chorus lists set web --nodes web-01,web-02',
  'lists remove': 'chorus lists remove web',
  filters: 'chorus filters set linux --query "kernel_name:Linux"',
  'filters list': 'chorus filters list',
  'filters set': 'chorus filters set linux --query "kernel_name:Linux"',
  'filters remove': 'chorus filters remove linux',
  tokens: 'chorus tokens create --name ci --role operator --ttl 30d',
  'tokens create': 'chorus tokens create --name ci --role operator --ttl 30d',
  'tokens list': 'chorus tokens list --json',
  'tokens revoke': 'chorus tokens revoke ci',
  audit: 'chorus audit --since 2026-12-01T00:00:00Z --json',
  ui: 'chorus ui --api 127.0.0.1:7070 --token "$(cat /var/lib/chorus/coord/admin.token)"',
  demo: 'chorus demo --agents 10 --job examples/hello-fleet.json',
  bench: 'chorus bench fanout --agents 20 --rounds 5 --json',
  'bench fanout': 'chorus bench fanout --agents 20 --rounds 5 --json',
  'bench fleet': 'chorus bench fleet --agents 250 --per-process 50 --json',
  sim: 'chorus sim --scenario fleet-patch --agents 1000 --seeds 5',
}

/** Adds the example of every command listed (commands with an example of their own are not). */
export function addExamples(cmd: Command, path = ''): void {
  for (const c of cmd.commands) {
    const name = path ? `${path} ${c.name()}` : c.name()
    const example = EXAMPLES[name]
    if (example) c.addHelpText('after', `\nExample: ${example}`)
    addExamples(c, name)
  }
}
