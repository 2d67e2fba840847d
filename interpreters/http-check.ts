/**
 * chorus/http-check
 *
 * `command` is `{ method?, url, expectStatus?, bodyPattern?, headers? }`:
 *   * method: GET (default), HEAD, POST, PUT, PATCH, DELETE or OPTIONS; no request body is sent.
 *   * url: http:// or https:// only. Redirects are NOT followed (the status is the server's
 *     own answer, so a check can expect 301).
 *   * expectStatus: an integer or a list of integers (default 200). Other status = failure.
 *   * bodyPattern: an RE2 regular expression the body must match (unanchored; linear time).
 *   * headers: optional `{name: value}` strings.
 * The body is read up to MAX_HTTP_BODY_BYTES (the rest is cancelled) and is the step's
 * stdout (then bounded by req.maxOutputBytes like any stdout), so output rules can extract
 * from it; stderr gets a one-line summary. outputs: `status` (the HTTP status code).
 * exitCode is 0 on success, 1 on a failed check, null when no response arrived.
 * req.timeoutMs (0 = DEFAULT_HTTP_TIMEOUT_MS) and the abort signal cancel the request.
 */
import { performance } from 'node:perf_hooks'
import type { RE2JS } from 're2js'
import { compilePattern, testPattern } from '../protocol/pattern.js'
import { errorMessage, failure, isRecord, requestProblem } from './common.js'
import { OutputCapture } from './process.js'
import type { Interpreter, StepRequest, StepResult } from './types.js'

export const HTTP_CHECK_INTERPRETER_NAME = 'chorus/http-check'
export const MAX_HTTP_BODY_BYTES = 1024 * 1024
/** Used when the step has no timeout: a check must not hang forever. */
export const DEFAULT_HTTP_TIMEOUT_MS = 30_000
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']

export interface HttpCheckCommand {
  method: string
  url: URL
  expectStatus: number[]
  bodyPattern?: { source: string; re: RE2JS }
  headers: Record<string, string>
}

export function parseHttpCheck(command: unknown): HttpCheckCommand | string {
  if (!isRecord(command)) return 'invalid command: expected {method, url, expectStatus, bodyPattern?}'
  const known = ['method', 'url', 'expectStatus', 'bodyPattern', 'headers']
  const extra = Object.keys(command).filter((k) => !known.includes(k))
  if (extra.length > 0) return `invalid command: unknown key ${extra.join(', ')}; expected ${known.join(', ')}`
  const method = command.method === undefined ? 'GET' : command.method
  if (typeof method !== 'string' || !METHODS.includes(method.toUpperCase())) return `invalid command: method must be one of ${METHODS.join(', ')}`
  if (typeof command.url !== 'string') return 'invalid command: url must be a string'
  let url: URL
  try {
    url = new URL(command.url)
  } catch {
    return `invalid command: url ${JSON.stringify(command.url)} is not a URL`
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `invalid command: url scheme ${url.protocol} is not http or https`
  const rawStatus = command.expectStatus === undefined ? [200] : Array.isArray(command.expectStatus) ? command.expectStatus : [command.expectStatus]
  const expectStatus: number[] = []
  for (const s of rawStatus) {
    const n = typeof s === 'string' && /^\d+$/.test(s) ? Number(s) : s
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 100 || n > 599) return `invalid command: expectStatus ${JSON.stringify(s)} is not an HTTP status`
    expectStatus.push(n)
  }
  if (expectStatus.length === 0) return 'invalid command: expectStatus is empty'
  let bodyPattern: { source: string; re: RE2JS } | undefined
  if (command.bodyPattern !== undefined) {
    if (typeof command.bodyPattern !== 'string') return 'invalid command: bodyPattern must be a string'
    // A template's pattern runs on RE2 (linear time): `(a+)+$` cannot hang the agent.
    const compiled = compilePattern(command.bodyPattern)
    if (!compiled.ok) return `invalid command: bodyPattern: ${compiled.message}`
    bodyPattern = { source: command.bodyPattern, re: compiled.re }
  }
  const headers: Record<string, string> = {}
  if (command.headers !== undefined) {
    if (!isRecord(command.headers)) return 'invalid command: headers must be an object of strings'
    for (const [k, v] of Object.entries(command.headers)) {
      if (typeof v !== 'string') return `invalid command: header ${k} must be a string`
      headers[k] = v
    }
  }
  return { method: method.toUpperCase(), url, expectStatus, ...(bodyPattern ? { bodyPattern } : {}), headers }
}

async function readBounded(body: ReadableStream<Uint8Array> | null, max: number): Promise<{ bytes: Buffer; truncated: boolean }> {
  if (body === null) return { bytes: Buffer.alloc(0), truncated: false }
  const reader = body.getReader()
  const chunks: Buffer[] = []
  let n = 0
  let truncated = false
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      const room = max - n
      if (value.length > room) {
        chunks.push(Buffer.from(value.subarray(0, room)))
        n += room
        truncated = true
        break
      }
      chunks.push(Buffer.from(value))
      n += value.length
    }
  } finally {
    if (truncated) await reader.cancel().catch(() => {})
    reader.releaseLock()
  }
  return { bytes: Buffer.concat(chunks, n), truncated }
}

export function createHttpCheckInterpreter(): Interpreter {
  return {
    name: HTTP_CHECK_INTERPRETER_NAME,
    async run(req: StepRequest, signal: AbortSignal): Promise<StepResult> {
      const start = performance.now()
      const problem = requestProblem(req)
      if (problem) return failure(problem, start)
      const cmd = parseHttpCheck(req.command)
      if (typeof cmd === 'string') return failure(cmd, start)
      if (signal.aborted) return failure('aborted', start)
      const timeoutMs = req.timeoutMs > 0 ? req.timeoutMs : DEFAULT_HTTP_TIMEOUT_MS
      const timeout = new AbortController()
      const timer = setTimeout(() => timeout.abort(), timeoutMs)
      const combined = AbortSignal.any([signal, timeout.signal])
      const target = `${cmd.method} ${cmd.url.href}`
      try {
        const res = await fetch(cmd.url, { method: cmd.method, headers: cmd.headers, redirect: 'manual', signal: combined })
        const { bytes, truncated: bodyCut } = await readBounded(res.body, MAX_HTTP_BODY_BYTES)
        const body = bytes.toString('utf8')
        const out = new OutputCapture(req.maxOutputBytes)
        out.write(bytes)
        const problems: string[] = []
        if (!cmd.expectStatus.includes(res.status)) problems.push(`status ${res.status}, expected ${cmd.expectStatus.join(' or ')}`)
        if (cmd.bodyPattern && !testPattern(cmd.bodyPattern.re, body)) problems.push(`body does not match /${cmd.bodyPattern.source}/${bodyCut ? ` (first ${MAX_HTTP_BODY_BYTES} bytes checked)` : ''}`)
        const ms = Math.round(performance.now() - start)
        const summary = `${target} -> ${res.status} ${res.statusText} in ${ms} ms; ${bytes.length}${bodyCut ? '+' : ''} body bytes\n`
        return {
          status: problems.length === 0 ? 'success' : 'failure',
          exitCode: problems.length === 0 ? 0 : 1,
          stdout: out.text(),
          stderr: summary,
          truncated: out.truncated || bodyCut,
          ...(problems.length > 0 ? { reason: `http check failed: ${problems.join('; ')}` } : {}),
          durationMs: performance.now() - start,
          outputs: { status: String(res.status) },
        }
      } catch (e) {
        const reason = signal.aborted ? 'aborted' : timeout.signal.aborted ? `timed out after ${timeoutMs} ms` : `${target} failed: ${errorMessage((e as { cause?: unknown }).cause ?? e)}`
        return failure(reason, start)
      } finally {
        clearTimeout(timer)
      }
    },
  }
}
