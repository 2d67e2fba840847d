// The web console in a real browser (Debian's chromium through playwright-core) against a real
// coordinator and 4 real agents: login through a `chorus ui` URL, a rolling job submitted from
// the page and watched live, a failed run's redacted stderr, a reader without actions (and the
// server's 403), a template's problem shown at its path. Each test saves a screenshot in
// test-results/.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { chromium, type Browser, type Page } from 'playwright-core'
import { CHORUS_BIN } from '../cli/paths.js'
import type { LocalFleet } from '../cli/fleet.js'
import { apiRequest } from '../cli/client.js'
import { stringify as stringifyYaml } from 'yaml'
import { withLocalFleet } from './helpers/fleet.js'
import { failFast, nodesGroup, shell, template } from './helpers/templates.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const SHOTS = 'test-results'
const NODES = ['node-1', 'node-2', 'node-3', 'node-4']

let fleet: LocalFleet
let browser: Browser

// Checked before the fleet starts: a missing browser fails the file at once, saying what to do.
beforeAll(() => {
  if (!existsSync(CHROMIUM)) throw new Error(`the browser tests need chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH); they never download one`)
})
withLocalFleet('chorus-ui-', { agents: NODES.length, agentConfig: { allow: 'any' } }, (f) => { fleet = f }, 120_000)

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true })
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] })
})
afterAll(async () => { await browser?.close() })

/** A template: one group over NODES, one shell step per entry of `steps`. */
function job(name: string, steps: Record<string, unknown>[], group: Record<string, unknown> = {}): Record<string, unknown> {
  return template(name, [nodesGroup(NODES, group)], steps.map((s, i) => ({ name: `step ${i + 1}`, interpreter: shell, retryCount: 0, failureBehavior: failFast, ...s })))
}
const sh = (...lines: string[]) => ({ command: { linux: lines } })

/** The URL `chorus ui` prints for `token`. */
function loginUrl(token: string): string {
  const r = spawnSync(process.execPath, [CHORUS_BIN, 'ui', '--api', fleet.api, '--token', token], { encoding: 'utf8' })
  expect(r.status, r.stderr).toBe(0)
  const url = r.stdout.trim()
  expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/ui\/#code=login_/)
  return url
}

/** A fresh browser context logged in through a `chorus ui` URL. */
async function loggedIn(token: string): Promise<Page> {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage()
  const errors: string[] = []
  page.on('pageerror', (e) => errors.push(e.message))
  page.on('console', (m) => { if (m.type() === 'error' && !/40[13]/.test(m.text())) errors.push(m.text()) })
  await page.goto(loginUrl(token))
  await page.getByTestId('me').waitFor()
  expect(page.url()).not.toContain('code=')
  expect(errors, errors.join("\n")).toEqual([])
  return page
}

async function tokenFor(name: string, role: string): Promise<string> {
  const r = await apiRequest<{ token: string }>(fleet.conn, 'POST', '/v1/tokens', { name, role })
  expect(r.status).toBe(201)
  return r.body.token
}

/** Exchanges the code of a login URL as the page does (outside a browser). */
const redeem = (url: URL) => fetch(`${url.origin}/v1/ui/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: url.hash.replace('#code=', '') }) })

const count = async (page: Page, testid: string, bucket: string) => Number(await page.getByTestId(testid).locator(`[data-bucket=${bucket}] b`).textContent())

describe('web console', () => {
  it('serves the console with a strict CSP and no token; the login page loads without one', async () => {
    const res = await fetch(`http://${fleet.api}/ui/`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'")
    expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    const html = await res.text()
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/)
    expect((await fetch(`http://${fleet.api}/ui/app.js`)).headers.get('content-type')).toMatch(/javascript/)
    const page = await (await browser.newContext()).newPage()
    await page.goto(`http://${fleet.api}/ui/`)
    await page.getByText('chorus ui').first().waitFor()
    await page.screenshot({ path: `${SHOTS}/ui-login.png` })
  })

  it('logs in through a chorus ui URL, submits a rolling job from the page and watches it advance live; final counts equal the report', async () => {
    const page = await loggedIn(await tokenFor('ui-operator', 'operator'))
    await page.getByTestId('nav-new').click()
    const template = job('rolling from the console', [sh('sleep 1.2')], { batchSize: { type: 'number', value: 1 } })
    await page.getByTestId('template').fill(JSON.stringify(template, null, 2))
    await page.getByTestId('problems').getByText('valid').waitFor()
    await page.getByTestId('plan').click()
    await page.getByTestId('plan-view').getByText('batch 3: node-4').waitFor()
    await page.getByTestId('submit').click()
    await page.waitForURL(/#\/job\//)
    await page.getByTestId('instances').locator('a[href^="#/instance/"]').first().click()
    await page.getByTestId('progress-all').waitFor()
    await page.evaluate(() => { (window as unknown as { marker: number }).marker = 42 })
    // Successes seen while it runs: they rise one batch at a time, without a reload.
    const seen = new Set<number>()
    const bars = new Set<number>()
    for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
      seen.add(await count(page, 'progress-all', 'success'))
      bars.add(await page.locator('[data-testid=timeline] rect').count())
      if ((await page.getByTestId('instance-status').textContent())?.includes('success')) break
      await page.waitForTimeout(150)
    }
    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(42)
    expect(await page.getByTestId('instance-status').textContent()).toContain('success')
    await page.waitForFunction(() => !document.querySelector('[data-testid=live]'))
    expect([...seen].filter((n) => n > 0 && n < NODES.length).length).toBeGreaterThanOrEqual(2)
    await expect.poll(() => page.locator('[data-testid=timeline] rect').count()).toBe(NODES.length)
    expect(Math.min(...bars)).toBeLessThan(NODES.length)
    // One bar per batch of the group (batch size 1: a batch per node).
    expect(await page.locator('[data-testid^=progress-g][data-testid*=-b]').count()).toBe(NODES.length)
    const instanceId = /#\/instance\/(.+)$/.exec(page.url())![1]!
    const report = (await fleet.report(instanceId)).instances[0]!
    for (const bucket of ['success', 'failure', 'running', 'pending']) expect(await count(page, 'progress-all', bucket), bucket).toBe(report.counts[bucket] ?? 0)
    expect(report.counts.success).toBe(NODES.length)
    await page.screenshot({ path: `${SHOTS}/ui-instance-live.png`, fullPage: true })
    // Audited under the name of the token that made the login URL.
    const audit = await apiRequest<{ items: { token: string; action: string; object: string }[] }>(fleet.conn, 'GET', '/v1/audit?limit=1000')
    expect(audit.body.items.filter((a) => a.object.includes(report.jobId)).map((a) => a.token)).toContain('ui-operator')
  }, 120_000)

  it('opens a failed run and reads its stderr: the sensitive value shows as [REDACTED]', async () => {
    const secret = 's3cr3t-vAlue-4711'
    const id = await fleet.submit(JSON.stringify(job('secret on stderr', [
      { ...sh(`printf ${secret}`), outputFieldRules: { TOKEN: { sourceType: 'output', source: 'stdout', extractMethod: 'content', sensitive: true } } },
      { ...sh('echo "using {{.TOKEN}}" >&2', 'exit 3'), retryCount: 1, expectedInputs: { TOKEN: { type: 'string', required: true, sensitive: true } } },
    ], { nodeIdentifiers: ['node-1'] })))
    const report = await fleet.waitForJob(id, 60_000)
    const run = report.instances[0]!.runs[0]!
    expect(run.status).toBe('failure')
    const page = await loggedIn(fleet.token)
    await page.goto(`http://${fleet.api}/ui/#/instance/${report.instances[0]!.id}`)
    await page.getByTestId('failures').locator('a').first().click()
    const stderr = page.getByTestId('step-2').getByTestId('stderr')
    await stderr.waitFor()
    expect(await stderr.textContent()).toContain('using [REDACTED]')
    expect(await page.getByTestId('step-2').getByTestId('attempts').locator('li').allTextContents()).toEqual([expect.stringMatching(/^attempt 1: ✗ failure exit 3/), expect.stringMatching(/^attempt 2: ✗ failure exit 3/)])
    expect(await page.content()).not.toContain(secret)
    expect(await page.getByTestId('step-1').locator('table.outputs').textContent()).toContain('[REDACTED]')
    await page.screenshot({ path: `${SHOTS}/ui-run-redacted.png`, fullPage: true })
  }, 90_000)

  it('a reader sees no action controls, and the server refuses a crafted POST from the page (403); logout ends the session', async () => {
    const jobId = await fleet.submit(JSON.stringify(job('for the reader', [sh('true')], { nodeIdentifiers: ['node-2'] })))
    const page = await loggedIn(await tokenFor('ui-reader', 'reader'))
    expect(await page.getByTestId('me').textContent()).toContain('(reader)')
    expect(await page.getByTestId('nav-new').count()).toBe(0)
    await page.goto(`http://${fleet.api}/ui/#/job/${jobId}`)
    await page.getByText('Template as submitted').waitFor()
    expect(await page.getByRole('button', { name: /run now|cancel|submit/i }).count()).toBe(0)
    await page.screenshot({ path: `${SHOTS}/ui-reader-job.png`, fullPage: true })
    const statuses = await page.evaluate(async (id) => {
      const post = (path: string, body: string) => fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => r.status)
      return [await post(`/v1/jobs/${id}/cancel`, '{}'), await post(`/v1/jobs/${id}/run`, '{}'), await post('/v1/jobs', '{}'), (await fetch('/v1/jobs')).status]
    }, jobId)
    expect(statuses).toEqual([403, 403, 403, 200])
    await page.getByTestId('logout').click()
    await page.getByText('Run chorus ui', { exact: false }).waitFor()
    expect(await page.evaluate(() => fetch('/v1/jobs').then((r) => r.status))).toBe(401)
  }, 90_000)

  it('a login code works once; a session cookie without an Origin cannot change state; revoking the token ends its sessions', async () => {
    const url = new URL(loginUrl(fleet.token))
    const first = await redeem(url)
    expect(first.status).toBe(200)
    const cookie = first.headers.get('set-cookie')!
    expect(cookie).toMatch(/HttpOnly/)
    expect(cookie).toMatch(/SameSite=Strict/)
    expect(cookie).toMatch(/Path=\//)
    expect(cookie).toMatch(/Max-Age=\d+/)
    expect((await redeem(url)).status).toBe(401)
    const session = cookie.split(';')[0]!
    expect((await fetch(`${url.origin}/v1/jobs`, { headers: { cookie: session } })).status).toBe(200)
    const post = (origin?: string) => fetch(`${url.origin}/v1/jobs`, { method: 'POST', headers: { cookie: session, 'content-type': 'application/json', ...(origin ? { origin } : {}) }, body: '{}' })
    expect((await post()).status).toBe(403)
    expect((await post('http://evil.example')).status).toBe(403)
    const revocable = await tokenFor('ui-revoked', 'reader')
    const later = (await redeem(new URL(loginUrl(revocable)))).headers.get('set-cookie')!.split(';')[0]!
    expect((await fetch(`${url.origin}/v1/jobs`, { headers: { cookie: later } })).status).toBe(200)
    expect((await apiRequest(fleet.conn, 'DELETE', '/v1/tokens/ui-revoked', {})).status).toBe(200)
    expect((await fetch(`${url.origin}/v1/jobs`, { headers: { cookie: later } })).status).toBe(401)
  })

  it('a template with a typo shows the problem at its path before submit', async () => {
    const page = await loggedIn(fleet.token)
    await page.getByTestId('nav-new').click()
    await page.getByLabel('upload one').setInputFiles({ name: 'job.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(job('uploaded', [sh('true')]))) })
    await page.getByTestId('problems').getByText('valid').waitFor()
    expect(await page.getByTestId('template').inputValue()).toContain('"uploaded"')
    const template = job('typo', [sh('true')])
    ;(template.target as { executionType: string }).executionType = 'paralel'
    await page.getByTestId('template').fill(JSON.stringify(template, null, 2))
    const path = page.getByTestId('problems').locator('code.path', { hasText: 'target.executionType' })
    await path.waitFor()
    expect(await page.getByTestId('submit').isDisabled()).toBe(true)
    // The problem's line; its button selects the text at the path in the editor.
    const text = JSON.stringify(template, null, 2)
    const line = text.split('\n').findIndex((l) => l.includes('"paralel"')) + 1
    await page.getByTestId('problem-line').first().click()
    expect(await page.getByTestId('problem-line').first().textContent()).toBe(`line ${line}`)
    expect(await page.evaluate(() => { const e = document.activeElement as HTMLTextAreaElement; return e.value.slice(e.selectionStart, e.selectionEnd) })).toBe('"executionType": "paralel"')
    await page.screenshot({ path: `${SHOTS}/ui-template-problem.png`, fullPage: true })
    // YAML is checked by the same parser: the same problem at the same path.
    await page.getByTestId('template').fill(stringifyYaml(template))
    await page.getByTestId('problems').getByText('parallel', { exact: false }).waitFor()
    expect(await page.getByTestId('problems').locator('code.path').allTextContents()).toEqual(['target.executionType'])
  })

  it('lists jobs with their last outcome and next occurrence; an operator cancels one occurrence; exceptions and lists are shown', async () => {
    await apiRequest(fleet.conn, 'POST', '/v1/exceptions', { id: 'weekend', rrule: 'RRULE:FREQ=WEEKLY;BYDAY=SA', duration: 2880 })
    await apiRequest(fleet.conn, 'PUT', '/v1/lists/web', { name: 'web', nodes: ['node-1', 'node-2'] })
    const daily = job('daily from afar', [sh('true')], { nodeIdentifiers: ['node-3'] })
    const start = new Date(Date.now() + 3 * 86_400_000).toISOString().slice(0, 10).replace(/-/g, '')
    const id = await fleet.submit(JSON.stringify({ ...daily, scheduleRule: `RRULE:DTSTART=${start}T020000Z;FREQ=DAILY` }))
    const page = await loggedIn(fleet.token)
    const row = page.getByTestId('jobs').locator('tr', { hasText: 'daily from afar' })
    await row.waitFor()
    expect(await row.locator('time').first().getAttribute('title')).toMatch(/^local: /)
    await page.getByTestId('jobs').locator('tr', { hasText: 'rolling from the console' }).getByText('success').waitFor()
    await row.getByRole('link').first().click()
    const first = page.getByTestId('next').locator('li').first()
    await first.getByRole('button', { name: 'Cancel this occurrence' }).click()
    await first.getByText('canceled').waitFor()
    await page.getByTestId('run-now').click()
    await page.getByRole('status').getByText(/done: job /).waitFor()
    await page.getByTestId('cancel-job').click()
    await page.locator('h1').getByText('canceled').waitFor()
    expect((await apiRequest<{ status: string }>(fleet.conn, 'GET', `/v1/jobs/${id}`)).body.status).toBe('canceled')
    const runs = await apiRequest<{ items: { runOf?: string }[] }>(fleet.conn, 'GET', '/v1/jobs?size=1000')
    expect(runs.body.items.filter((j) => j.runOf === id)).toHaveLength(1)
    await page.screenshot({ path: `${SHOTS}/ui-job-next.png`, fullPage: true })
    await page.goto(`http://${fleet.api}/ui/#/saved`)
    await page.getByTestId('exceptions').getByText('weekend').waitFor()
    await page.getByTestId('lists').getByText('node-1').waitFor()
    await page.goto(`http://${fleet.api}/ui/#/audit`)
    await page.getByTestId('audit').getByText('job.submit').first().waitFor()
    await page.goto(`http://${fleet.api}/ui/#/nodes`)
    await page.getByText('node-4').waitFor()
    await page.screenshot({ path: `${SHOTS}/ui-nodes.png`, fullPage: true })
  }, 90_000)

  it('an instance of 1,000 runs stays responsive: node rows are paged, events still update the counts (synthetic API answers)', async () => {
    const page = await loggedIn(fleet.token)
    const id = 'synthetic-instance'
    const at = (s: number) => new Date(Date.UTC(2026, 11, 1, 10, 0, s)).toISOString()
    const runs = Array.from({ length: 1000 }, (_, i) => ({
      runId: `r${i}`, nodeId: `n-${String(i).padStart(4, '0')}`, group: 0, batch: Math.floor(i / 100), status: i < 990 ? 'success' : 'running',
      startedAt: at(i % 60), finishedAt: i < 990 ? at((i % 60) + 2) : null, receivedAt: null, steps: [],
    }))
    const json = (body: unknown) => ({ status: 200, contentType: 'application/json', body: JSON.stringify(body) })
    await page.route(`**/v1/instances/${id}`, (r) => r.fulfill(json({ id, jobId: 'j', status: 'running', occurrenceAt: at(0), createdAt: at(0), updatedAt: at(0), counts: { success: 990, running: 10 } })))
    await page.route(`**/v1/instances/${id}/runs?*`, (r) => r.fulfill(json({ items: runs, pagination: { page: 1, size: 1000, total: 1000 } })))
    const counts = { group: 0, pending: 0, running: 9, success: 991, failure: 0, skipped: 0 }
    const event = { id: 'e.1', type: 'run_finished', at: at(70), jobId: 'j', instanceId: id, runId: 'r990', nodeId: 'n-0990', group: 0, batch: 9, status: 'success', counts: [counts] }
    await page.route(`**/v1/instances/${id}/events`, (r) => r.fulfill({ status: 200, contentType: 'text/event-stream', body: `event: run_finished\ndata: ${JSON.stringify(event)}\n\n` }))
    await page.goto(`http://${fleet.api}/ui/#/instance/${id}`)
    await page.getByText('page 1 of 20').first().waitFor()
    expect(await page.locator('[data-testid=timeline] g.row').count()).toBe(50)
    await page.getByTestId('progress-group-0').locator('[data-bucket=success] b', { hasText: '991' }).waitFor()
    await page.getByTestId('progress-all').locator('[data-bucket=success] b', { hasText: '991' }).waitFor()
    await page.getByRole('button', { name: /next/ }).first().click()
    await page.locator('[data-testid=timeline] g.row[data-node="n-0050"]').waitFor()
    expect(await page.locator('[data-testid^=progress-g0-b]').count()).toBe(10)
    await page.screenshot({ path: `${SHOTS}/ui-instance-1000.png`, fullPage: true })
  }, 60_000)

  it('is keyboard navigable: Tab reaches the navigation, Enter follows it', async () => {
    const page = await loggedIn(fleet.token)
    await page.keyboard.press('Tab')
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Jobs')
    await page.keyboard.press('Tab')
    await page.keyboard.press('Enter')
    await page.getByTestId('template').waitFor()
    expect(page.url()).toContain('#/new')
  })
})
