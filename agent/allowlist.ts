// The agent's allowlist (Chef Push Jobs' "whitelist"): which interpreters may run on this
// node, and which commands. checkAllowed() is consulted for every step attempt AFTER
// {{.NAME}} substitution; a step that is not allowed never starts and fails with the reason.
// Pure functions; the agent reads the config from its config file.
//
// Config shape (agent config key `allow`):
//   { "interpreters": [
//       { "name": "chef-platform/shell-interpreter", "commands": ["hostname", "/uname( -[a-z]+)*/"] },
//       { "name": "chorus/http-check", "commands": "any" },
//       { "name": "chef-platform/inspec-interpreter", "commands": ["scan"] } ] }
//
// * `name` is an exact interpreter name, or "*" for every interpreter.
// * `commands` is "any", or a list of patterns. A pattern written `/…/` is a regular
//   expression matched against the WHOLE command string (implicitly anchored); any other
//   pattern must equal the command string exactly.
// * The command strings checked, per interpreter:
//     shell-interpreter: every line of the list for the node's OS (each must be allowed);
//     exec-style {exec, args} (chef-client, inspec, restart, ansible): the `exec` value;
//     chorus/exec-interpreter: argv joined with single spaces;
//     chorus/http-check: "METHOD URL" (method upper-cased, GET when absent);
//     anything else: the command's canonical JSON text.
// * Shell metacharacters: a shell line containing any of ; & | ` $ < > ( ) { } \ or a
//   newline is allowed only by an EXACT pattern, never by a regex. `/echo .*/` therefore does
//   not let `echo $(rm -rf ~)` through, while the exact line `df -h /tmp | tail -1` can be
//   allowed on purpose.
//
// Default (no `allow` in the agent config): DEFAULT_ALLOWLIST. It is safe yet lets the demo
// run: read-only identification commands in the shell (hostname, uname, id, whoami, date,
// uptime, df, true, echo of plain words, sleep) and http-check GET/HEAD requests. Everything
// else (arbitrary shell, exec, restart, chef-client, inspec, ansible, external interpreters)
// needs an explicit entry. Operators who trust their coordinator's key with root on every
// node opt in with `{ "interpreters": [{ "name": "*", "commands": "any" }] }`
// (ALLOW_EVERYTHING); the agent should log a warning when it sees that.

export interface AllowRule {
  name: string
  commands: 'any' | readonly string[]
}

export interface AllowlistConfig {
  interpreters: readonly AllowRule[]
}

export interface AllowRequest {
  interpreter: string
  command: unknown
  os: string
}

export type AllowDecision = { ok: true } | { ok: false; reason: string }

const SHELL = 'chef-platform/shell-interpreter'
const EXEC = 'chorus/exec-interpreter'
const HTTP = 'chorus/http-check'
const EXEC_STYLE = [
  'chef-platform/chef-client-interpreter',
  'chef-platform/inspec-interpreter',
  'chef-platform/restart-interpreter',
  'chef-platform/ansible-interpreter',
]

/** Characters that make a shell line more than a simple command. */
export const SHELL_METACHARACTERS = /[;&|`$<>(){}\\\n\r]/

export const DEFAULT_ALLOWLIST: AllowlistConfig = {
  interpreters: [
    {
      name: SHELL,
      commands: [
        '/hostname( -[sfi])?/',
        '/uname( -[a-zA-Z]+)*/',
        '/id|whoami|date|uptime|true|nproc/',
        '/df( -[a-zA-Z]+)*( [A-Za-z0-9_./-]+)*/',
        '/echo( [A-Za-z0-9_.,:=+@%/-]+)*/',
        '/sleep [0-9]+(\\.[0-9]+)?/',
        'df -h /tmp | tail -1',
      ],
    },
    { name: HTTP, commands: ['/(GET|HEAD) https?:\\/\\/\\S+/'] },
  ],
}

export const ALLOW_EVERYTHING: AllowlistConfig = { interpreters: [{ name: '*', commands: 'any' }] }

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`
  if (isRecord(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`).join(',')}}`
  return JSON.stringify(v) ?? 'null'
}

/** The strings checked for a request (see the header), or a reason the command is malformed. */
export function commandStrings(req: AllowRequest): { strings: string[]; shell: boolean } | { error: string } {
  const c = req.command
  if (req.interpreter === SHELL) {
    if (!isRecord(c)) return { error: 'shell command is not an object' }
    const lines = c[req.os]
    if (!Array.isArray(lines) || lines.some((l) => typeof l !== 'string')) return { error: `no command lines for os ${req.os}` }
    return { strings: lines as string[], shell: true }
  }
  if (EXEC_STYLE.includes(req.interpreter)) {
    if (!isRecord(c) || typeof c.exec !== 'string') return { error: 'command has no exec' }
    return { strings: [c.exec], shell: false }
  }
  if (req.interpreter === EXEC) {
    if (!isRecord(c) || !Array.isArray(c.argv) || c.argv.some((a) => typeof a !== 'string')) return { error: 'command has no argv' }
    return { strings: [(c.argv as string[]).join(' ')], shell: false }
  }
  if (req.interpreter === HTTP) {
    if (!isRecord(c) || typeof c.url !== 'string') return { error: 'command has no url' }
    const method = typeof c.method === 'string' ? c.method.toUpperCase() : 'GET'
    return { strings: [`${method} ${c.url}`], shell: false }
  }
  return { strings: [canonicalJson(c)], shell: false }
}

/** Validates an allowlist config (from the agent config file); returns it or the problems. */
export function parseAllowlist(value: unknown): AllowlistConfig | { errors: string[] } {
  const errors: string[] = []
  if (!isRecord(value) || !Array.isArray(value.interpreters)) return { errors: ['allow: expected {interpreters: [{name, commands}]}'] }
  const rules: AllowRule[] = []
  value.interpreters.forEach((r: unknown, i: number) => {
    const where = `allow.interpreters[${i}]`
    if (!isRecord(r) || typeof r.name !== 'string' || r.name === '') return errors.push(`${where}: expected {name, commands}`)
    if (r.commands === 'any') return rules.push({ name: r.name, commands: 'any' })
    if (!Array.isArray(r.commands) || r.commands.some((p) => typeof p !== 'string' || p === '')) return errors.push(`${where}.commands: expected "any" or a list of non-empty patterns`)
    for (const p of r.commands as string[]) {
      if (isRegexPattern(p)) {
        try {
          new RegExp(p.slice(1, -1))
        } catch (e) {
          errors.push(`${where}.commands: invalid regex ${p}: ${(e as Error).message}`)
        }
      }
    }
    return rules.push({ name: r.name, commands: r.commands as string[] })
  })
  return errors.length > 0 ? { errors } : { interpreters: rules }
}

function isRegexPattern(p: string): boolean {
  return p.length >= 2 && p.startsWith('/') && p.endsWith('/')
}

function patternAllows(pattern: string, text: string, shell: boolean): boolean {
  if (!isRegexPattern(pattern)) return pattern === text
  if (shell && SHELL_METACHARACTERS.test(text)) return false
  try {
    return new RegExp(`^(?:${pattern.slice(1, -1)})$`).test(text)
  } catch {
    return false
  }
}

/**
 * Whether `request` may run under `config` (see the header). Anything not allowed never runs.
 * `show` turns a refused command into the text of the reason: the caller redacts its secrets
 * there, before the reason shortens it (a secret cut in half would no longer be recognised).
 */
export function checkAllowed(config: AllowlistConfig = DEFAULT_ALLOWLIST, request: AllowRequest, show: (command: string) => string = (c) => c): AllowDecision {
  const rules = config.interpreters.filter((r) => r.name === request.interpreter || r.name === '*')
  if (rules.length === 0) return { ok: false, reason: `interpreter ${request.interpreter} is not allowed on this node (agent allowlist)` }
  if (rules.some((r) => r.commands === 'any')) return { ok: true }
  const cs = commandStrings(request)
  if ('error' in cs) return { ok: false, reason: `command not allowed: ${cs.error}` }
  for (const s of cs.strings) {
    const allowed = rules.some((r) => r.commands !== 'any' && r.commands.some((p) => patternAllows(p, s, cs.shell)))
    if (!allowed) {
      const text = show(s)
      const shown = text.length > 120 ? `${text.slice(0, 117)}...` : text
      const hint = cs.shell && SHELL_METACHARACTERS.test(s) ? ' (it contains shell metacharacters, which only an exact pattern allows)' : ''
      return { ok: false, reason: `command ${JSON.stringify(shown)} is not allowed for ${request.interpreter} on this node (agent allowlist)${hint}` }
    }
  }
  return { ok: true }
}
