/**
 * chef-platform/chef-client-interpreter, chef-platform/inspec-interpreter and
 * chef-platform/ansible-interpreter: the Courier `{exec, args}` command shapes (FORMAT.md §5)
 * mapped onto the real tools, which must be on PATH (else the step fails with
 * "skill not installed: <tool> not found on PATH"). No shell is involved: arguments are
 * passed as argv. Working directory: `inputs.dir` as for the shell interpreter.
 *
 * chef-client-interpreter (tool `chef-client`):
 *   run   args {mode?: "local", path?, runlist?, config?}
 *         → chef-client [--local-mode] [--config CONFIG] [--config-option cookbook_path=PATH]
 *           [--override-runlist RUNLIST]
 *         (`--override-runlist` runs the list once without changing the node's stored run list)
 *   download / rotate credentials / anything else: refused ("not supported by this agent").
 * inspec-interpreter (tool `inspec`):
 *   scan  args {path (required), waiver?, input?, reporterType?, reporterFileName?, source?,
 *               sourceURL?, username?, token?, licenseKey?, licenseServer?, minSuccess?}
 *         → inspec exec PATH [--waiver-file WAIVER] [--input-file INPUT]
 *           [--reporter cli TYPE[:FILE]] [--reporter json:<workDir>/inspec-report.json]
 *         source "automate": first `inspec automate login SOURCEURL --user USERNAME --token
 *         TOKEN`, then `inspec exec compliance://PATH`. licenseKey / licenseServer go in the
 *         environment (CHEF_LICENSE_KEY, CHEF_LICENSE_SERVER), never on the command line.
 *         Exit codes 0 and 101 (skipped controls only) succeed; 100 (failed controls) fails
 *         unless minSuccess (percent) is given: then the JSON report decides (passed controls
 *         / all non-skipped controls × 100 >= minSuccess). The JSON report is attached as the
 *         artifact "inspec-report.json" when it exists.
 * ansible-interpreter (tool `ansible-playbook`; the Courier shape is undocumented, so this is
 *   Chorus's): run|playbook args {playbook (local path, required), inventory?, limit?, tags?,
 *   extraVars?: object|string, check?: boolean}
 *         → ansible-playbook [-i INVENTORY | -i localhost, -c local] [--limit L] [--tags T]
 *           [--check] [--extra-vars JSON] PLAYBOOK
 *         Playbook URLs (http(s)://, s3://) are refused: fetch them in an earlier step.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { encodeArtifact, MAX_ARTIFACT_BYTES } from './artifacts.js'
import { errorMessage, failure, isRecord, requestProblem, runStepProcess, workingDirectory } from './common.js'
import { findOnPath } from './limits.js'
import { OutputCapture } from './process.js'
import type { Interpreter, StepArtifact, StepRequest, StepResult } from './types.js'

export const CHEF_CLIENT_INTERPRETER_NAME = 'chef-platform/chef-client-interpreter'
export const INSPEC_INTERPRETER_NAME = 'chef-platform/inspec-interpreter'
export const ANSIBLE_INTERPRETER_NAME = 'chef-platform/ansible-interpreter'

export interface ToolOptions {
  /** PATH used to find the tool (tests put fakes first); default process.env.PATH. */
  pathEnv?: string
}

/** One planned invocation: `tool` is looked up on PATH. */
export interface ToolInvocation {
  tool: string
  args: string[]
  env?: Record<string, string>
}

export interface ToolPlan {
  /** Run in order; each must succeed before the next. The last one is the step's result. */
  invocations: ToolInvocation[]
  /** Exit codes of the last invocation that count as success. */
  okCodes: number[]
  minSuccess?: number
  /** When set, the JSON report is written here (relative to the step's scratch dir). */
  jsonReport?: string
}

function str(args: Record<string, unknown>, key: string): string | undefined | { error: string } {
  const v = args[key]
  if (v === undefined || v === null || v === '') return undefined
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  return { error: `args.${key} must be a string` }
}

function execArgs(command: unknown): { exec: string; args: Record<string, unknown> } | string {
  if (!isRecord(command) || typeof command.exec !== 'string') return 'invalid command: expected {exec, args}'
  const args = command.args === undefined ? {} : command.args
  if (!isRecord(args)) return 'invalid command: args must be an object'
  return { exec: command.exec, args }
}

type Getter = (key: string) => string | undefined
function getter(args: Record<string, unknown>, errors: string[]): Getter {
  return (key) => {
    const v = str(args, key)
    if (typeof v === 'object') {
      errors.push(v.error)
      return undefined
    }
    return v
  }
}

/** chef-client-interpreter mapping (see the header). */
export function planChefClient(command: unknown): ToolPlan | string {
  const c = execArgs(command)
  if (typeof c === 'string') return c
  if (c.exec !== 'run') return `chef-client-interpreter command ${JSON.stringify(c.exec)} is not supported by this agent (supported: run)`
  const errors: string[] = []
  const get = getter(c.args, errors)
  const mode = get('mode')
  const path = get('path')
  const runlist = get('runlist')
  const config = get('config')
  if (errors.length > 0) return `invalid command: ${errors.join('; ')}`
  if (mode !== undefined && mode !== 'local') return `invalid command: args.mode ${JSON.stringify(mode)}; expected "local" or nothing`
  const args: string[] = []
  if (mode === 'local') args.push('--local-mode')
  if (config) args.push('--config', config)
  if (path) args.push('--config-option', `cookbook_path=${path}`)
  if (runlist) args.push('--override-runlist', runlist)
  return { invocations: [{ tool: 'chef-client', args }], okCodes: [0] }
}

/** inspec-interpreter mapping (see the header). */
export function planInspec(command: unknown, workDir = '.'): ToolPlan | string {
  const c = execArgs(command)
  if (typeof c === 'string') return c
  if (c.exec !== 'scan') return `inspec-interpreter command ${JSON.stringify(c.exec)} is not supported (supported: scan)`
  const errors: string[] = []
  const get = getter(c.args, errors)
  const path = get('path')
  const waiver = get('waiver')
  const input = get('input')
  const reporterType = get('reporterType')
  const reporterFileName = get('reporterFileName')
  const source = get('source')
  const sourceURL = get('sourceURL')
  const username = get('username')
  const token = get('token')
  const licenseKey = get('licenseKey')
  const licenseServer = get('licenseServer')
  const minRaw = get('minSuccess')
  if (errors.length > 0) return `invalid command: ${errors.join('; ')}`
  if (!path) return 'invalid command: args.path (profile path or URL) is required'
  let minSuccess: number | undefined
  if (minRaw !== undefined) {
    minSuccess = Number(minRaw)
    if (!Number.isFinite(minSuccess) || minSuccess < 0 || minSuccess > 100) return `invalid command: args.minSuccess ${JSON.stringify(minRaw)}; expected a percentage 0-100`
  }
  const env: Record<string, string> = {}
  if (licenseKey) env.CHEF_LICENSE_KEY = licenseKey
  if (licenseServer) env.CHEF_LICENSE_SERVER = licenseServer
  const invocations: ToolInvocation[] = []
  let target = path
  if (source !== undefined) {
    if (source !== 'automate') return `invalid command: args.source ${JSON.stringify(source)}; expected "automate"`
    if (!sourceURL || !username || !token) return 'invalid command: source "automate" needs sourceURL, username and token'
    invocations.push({ tool: 'inspec', args: ['automate', 'login', sourceURL, '--user', username, '--token', token], env })
    target = `compliance://${path}`
  }
  const args = ['exec', target]
  if (waiver) args.push('--waiver-file', waiver)
  if (input) args.push('--input-file', input)
  const jsonReport = 'inspec-report.json'
  const reporters = ['cli']
  if (reporterType && reporterType !== 'cli') reporters.push(reporterFileName ? `${reporterType}:${reporterFileName}` : reporterType)
  reporters.push(`json:${join(workDir, jsonReport)}`)
  args.push('--reporter', ...reporters)
  invocations.push({ tool: 'inspec', args, env })
  return { invocations, okCodes: [0, 101], ...(minSuccess !== undefined ? { minSuccess } : {}), jsonReport }
}

/** ansible-interpreter mapping (see the header). */
export function planAnsible(command: unknown): ToolPlan | string {
  const c = execArgs(command)
  if (typeof c === 'string') return c
  if (c.exec !== 'run' && c.exec !== 'playbook') return `ansible-interpreter command ${JSON.stringify(c.exec)} is not supported (supported: run, playbook)`
  const errors: string[] = []
  const get = getter(c.args, errors)
  const playbook = get('playbook')
  const inventory = get('inventory')
  const limit = get('limit')
  const tags = get('tags')
  if (errors.length > 0) return `invalid command: ${errors.join('; ')}`
  if (!playbook) return 'invalid command: args.playbook (a local path) is required'
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(playbook)) return `playbook ${playbook} is a URL; this agent runs local playbooks only (download it in an earlier step)`
  const args: string[] = []
  if (inventory) args.push('-i', inventory)
  else args.push('-i', 'localhost,', '-c', 'local')
  if (limit) args.push('--limit', limit)
  if (tags) args.push('--tags', tags)
  const check = c.args.check
  if (check !== undefined && typeof check !== 'boolean') return 'invalid command: args.check must be a boolean'
  if (check === true) args.push('--check')
  const extra = c.args.extraVars
  if (extra !== undefined) {
    if (typeof extra === 'string') args.push('--extra-vars', extra)
    else if (isRecord(extra)) args.push('--extra-vars', JSON.stringify(extra))
    else return 'invalid command: args.extraVars must be an object or a string'
  }
  args.push(playbook)
  return { invocations: [{ tool: 'ansible-playbook', args }], okCodes: [0] }
}

/** Percentage of passed controls in an InSpec JSON report (skipped controls excluded). */
export function inspecPassPercent(report: unknown): { percent: number; passed: number; total: number } | undefined {
  if (!isRecord(report) || !Array.isArray(report.profiles)) return undefined
  let passed = 0
  let total = 0
  for (const profile of report.profiles) {
    if (!isRecord(profile) || !Array.isArray(profile.controls)) continue
    for (const control of profile.controls) {
      if (!isRecord(control) || !Array.isArray(control.results)) continue
      const statuses = control.results.map((r) => (isRecord(r) ? r.status : undefined))
      if (statuses.length === 0 || statuses.every((s) => s === 'skipped')) continue
      total++
      if (statuses.every((s) => s === 'passed' || s === 'skipped')) passed++
    }
  }
  return { percent: total === 0 ? 100 : (passed / total) * 100, passed, total }
}

function createToolInterpreter(name: string, plan: (command: unknown, workDir: string) => ToolPlan | string, opts: ToolOptions): Interpreter {
  return {
    name,
    async run(req: StepRequest, signal: AbortSignal): Promise<StepResult> {
      const start = performance.now()
      let scratch: string | undefined
      try {
        const problem = requestProblem(req)
        if (problem) return failure(problem, start)
        let workDir = req.workDir
        if (workDir === undefined) workDir = scratch = await mkdtemp(join(tmpdir(), 'chorus-tool-'))
        const p = plan(req.command, workDir)
        if (typeof p === 'string') return failure(p, start)
        if (req.os === 'windows' || process.platform === 'win32') return failure('windows is not supported by this agent', start)
        const resolved: { file: string; inv: ToolInvocation }[] = []
        for (const inv of p.invocations) {
          const file = await findOnPath(inv.tool, opts.pathEnv ?? process.env.PATH)
          if (file === undefined) return failure(`skill not installed: ${inv.tool} not found on PATH`, start)
          resolved.push({ file, inv })
        }
        const wd = await workingDirectory(req)
        if ('error' in wd) return failure(wd.error, start)
        let result: StepResult | undefined
        // Output accumulates across invocations (bounded like one stream).
        const out = new OutputCapture(req.maxOutputBytes)
        const err = new OutputCapture(req.maxOutputBytes)
        for (const [i, { file, inv }] of resolved.entries()) {
          const last = i === resolved.length - 1
          const r = await runStepProcess(req, signal, start, { file, args: inv.args, cwd: wd.cwd, env: { ...process.env, ...inv.env } }, last ? (p.minSuccess !== undefined ? [0, 100, 101] : p.okCodes) : [0], `${inv.tool} ${inv.args[0] ?? ''}`.trim())
          out.write(r.result.stdout)
          err.write(r.result.stderr)
          result = { ...r.result, stdout: out.text(), stderr: err.text(), truncated: out.truncated || err.truncated || r.result.truncated }
          if (result.status !== 'success') return result
        }
        result = result!
        const artifacts: StepArtifact[] = []
        if (p.jsonReport) {
          const text = await readFile(join(workDir, p.jsonReport)).catch(() => undefined)
          if (text !== undefined && text.length <= MAX_ARTIFACT_BYTES) artifacts.push(encodeArtifact(p.jsonReport, text))
          if (p.minSuccess !== undefined) {
            let parsed: ReturnType<typeof inspecPassPercent>
            try {
              parsed = text === undefined ? undefined : inspecPassPercent(JSON.parse(text.toString('utf8')))
            } catch {
              parsed = undefined
            }
            if (parsed === undefined) {
              result = { ...result, status: 'failure', reason: 'minSuccess given but the InSpec JSON report is missing or unreadable' }
            } else if (parsed.percent < p.minSuccess) {
              result = { ...result, status: 'failure', reason: `${parsed.passed} of ${parsed.total} controls passed (${parsed.percent.toFixed(1)}%), below minSuccess ${p.minSuccess}%` }
            } else {
              const { reason: _drop, ...rest } = result
              void _drop
              result = { ...rest, status: 'success' }
            }
          }
        }
        return artifacts.length > 0 ? { ...result, artifacts } : result
      } catch (e) {
        return failure(`internal error: ${errorMessage(e)}`, start)
      } finally {
        if (scratch !== undefined) await rm(scratch, { recursive: true, force: true }).catch(() => {})
      }
    },
  }
}

export function createChefClientInterpreter(opts: ToolOptions = {}): Interpreter {
  return createToolInterpreter(CHEF_CLIENT_INTERPRETER_NAME, planChefClient, opts)
}
export function createInspecInterpreter(opts: ToolOptions = {}): Interpreter {
  return createToolInterpreter(INSPEC_INTERPRETER_NAME, planInspec, opts)
}
export function createAnsibleInterpreter(opts: ToolOptions = {}): Interpreter {
  return createToolInterpreter(ANSIBLE_INTERPRETER_NAME, planAnsible, opts)
}
