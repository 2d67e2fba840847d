// `chorus enroll …` and `chorus nodes pending|approve|reject|revoke|revoked`: fleet membership (admin).
import type { Command } from 'commander'
import { InvalidArgumentError } from 'commander'
import { TtlSchema } from '../protocol/api.js'

export interface MemberCommandHelpers {
  apiOption: readonly [string, string]
  collectAttr: (value: string, previous: Record<string, string>) => Record<string, string>
  /** Sends one API request and prints the JSON answer (exit 1 with the error otherwise). */
  request: (o: { api?: string }, method: string, path: string, body?: unknown) => Promise<unknown>
}

function uses(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new InvalidArgumentError(`expected a whole number from 1 to 100000, got "${value}"`)
  return n
}

/** Checked by the API's own schema (protocol/api.ts TtlSchema), so the CLI and the API accept the same durations. */
function ttl(value: string): string {
  const checked = TtlSchema.safeParse(value)
  if (!checked.success) throw new InvalidArgumentError(`${checked.error.issues.map((i) => i.message).join('; ')}, got "${value}"`)
  return value
}

export function registerMemberCommands(program: Command, nodes: Command, h: MemberCommandHelpers): void {
  const enroll = program.command('enroll').description('Enrolment tokens: a node joins the fleet only with one (admin)')
  enroll.command('create')
    .description('Create an enrolment token and print it (shown once; the coordinator keeps only its hash). Give it to `chorus agent --enroll-token-file`')
    .option('--name <name>', 'a name for the token (default: drawn at random)')
    .option('--uses <n>', 'how many nodes it may enrol', uses, 1)
    .option('--ttl <duration>', 'how long it may be used: 30m, 1h, 7d', ttl, '1h')
    .option('--attr <key=value>', 'an attribute fixed for every node it enrols; the agent cannot override it (repeatable)', h.collectAttr, {})
    .option('--json', 'print the whole answer as JSON, not only the token')
    .option(...h.apiOption)
    .action(async (o: { name?: string; uses: number; ttl: string; attr: Record<string, string>; json?: boolean; api?: string }) => {
      const body = { ...(o.name ? { name: o.name } : {}), uses: o.uses, ttl: o.ttl, attributes: o.attr }
      const out = (await h.request(o, 'POST', '/v1/enrollments', body)) as { token: string }
      process.stdout.write(o.json ? JSON.stringify(out, null, 2) + '\n' : `${out.token}\n`)
    })
  enroll.command('list').description('List enrolment tokens (never the tokens themselves): uses left, expiry, fixed attributes')
    .option(...h.apiOption)
    .action(async (o: { api?: string }) => print(await h.request(o, 'GET', '/v1/enrollments')))
  enroll.command('delete').description('Delete an enrolment token: no node can enrol with it any more').argument('<name>')
    .option(...h.apiOption)
    .action(async (name: string, o: { api?: string }) => print(await h.request(o, 'DELETE', `/v1/enrollments/${encodeURIComponent(name)}`)))

  nodes.command('pending').description('Enrolments awaiting approval (coordinator started with --require-approval)')
    .option(...h.apiOption)
    .action(async (o: { api?: string }) => print(await h.request(o, 'GET', '/v1/nodes/pending')))
  nodes.command('revoked').description('Revoked nodes')
    .option(...h.apiOption)
    .action(async (o: { api?: string }) => print(await h.request(o, 'GET', '/v1/nodes/revoked')))
  const actions = {
    approve: 'Admit a node awaiting approval: it gets its certificate on its next hello',
    reject: 'Refuse a node awaiting approval',
    revoke: 'Revoke an enrolled node: its results are refused, later jobs skip it, its connections are closed, and its peers drop it',
  } as const
  for (const [action, description] of Object.entries(actions)) {
    nodes.command(action).description(description).argument('<node-id>')
      .option(...h.apiOption)
      .action(async (id: string, o: { api?: string }) => print(await h.request(o, 'POST', `/v1/nodes/${encodeURIComponent(id)}/${action}`, {})))
  }
}

function print(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n')
}
