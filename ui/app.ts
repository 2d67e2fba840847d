// The Chorus web console (served at /ui/ by the coordinator): a hash router over the pages in
// ui/pages.ts. A login link from `chorus ui` carries a one-time code in its fragment
// (#code=...), exchanged here for a session cookie; the fragment never reaches a server log.
import { html } from 'htm/preact'
import { render } from 'preact'
import { useEffect, useState } from 'preact/hooks'
import { call } from './api.js'
import { AuditPage, InstancePage, JobPage, JobsPage, NewJobPage, NodesPage, RunPage, SavedPage, canAct, type Me } from './pages.js'

/** Exchanges the fragment's login code, if there is one, and takes it out of the address. */
async function redeemCode(): Promise<string | undefined> {
  const m = /(?:^#|&)code=([^&]+)/.exec(location.hash)
  if (!m) return undefined
  history.replaceState(null, '', `${location.pathname}#/jobs`)
  const r = await call('POST', '/v1/ui/session', { code: decodeURIComponent(m[1]!) })
  return r.status < 300 ? undefined : r.body.error ?? `login failed (HTTP ${r.status})`
}

function useRoute(): string[] {
  const [hash, setHash] = useState(location.hash)
  useEffect(() => {
    const on = () => setHash(location.hash)
    window.addEventListener('hashchange', on)
    return () => window.removeEventListener('hashchange', on)
  }, [])
  return hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent)
}

function Page({ route, me }: { route: string[]; me: Me }) {
  const [name, id = ''] = route
  switch (name) {
    case 'job': return html`<${JobPage} id=${id} me=${me} />`
    case 'instance': return html`<${InstancePage} id=${id} />`
    case 'run': return html`<${RunPage} id=${id} />`
    case 'nodes': return html`<${NodesPage} me=${me} />`
    case 'saved': return html`<${SavedPage} />`
    case 'audit': return me.role === 'admin' ? html`<${AuditPage} />` : html`<p>The audit log is for admins.</p>`
    case 'new': return canAct(me) ? html`<${NewJobPage} />` : html`<p>Submitting needs the operator role.</p>`
    default: return html`<${JobsPage} />`
  }
}

function Nav({ me, logout }: { me: Me; logout: () => void }) {
  return html`<header class="top">
    <strong class="brand">Chorus</strong>
    <nav aria-label="pages">
      <a href="#/jobs">Jobs</a>
      ${canAct(me) && html`<a href="#/new" data-testid="nav-new">New job</a>`}
      <a href="#/nodes">Nodes</a>
      <a href="#/saved">Exceptions and lists</a>
      ${me.role === 'admin' && html`<a href="#/audit">Audit</a>`}
    </nav>
    <span class="me" data-testid="me">${me.name} (${me.role})</span>
    <button data-testid="logout" onClick=${logout}>Log out</button>
  </header>`
}

function Login({ error }: { error?: string }) {
  return html`<main class="login"><h1>Chorus</h1>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <p>Run <code>chorus ui</code> on a machine with a Chorus token and open the link it prints (valid for 5 minutes, once).</p></main>`
}

function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined)
  const [error, setError] = useState<string | undefined>(undefined)
  const route = useRoute()
  useEffect(() => {
    void (async () => {
      const failed = await redeemCode()
      if (failed) setError(failed)
      const r = await call<Me>('GET', '/v1/ui/whoami')
      setMe(r.status === 200 ? r.body : null)
    })()
  }, [])
  const logout = async () => { await call('POST', '/v1/ui/logout', {}); setMe(null) }
  if (me === undefined) return html`<p class="muted">loading…</p>`
  if (me === null) return html`<${Login} error=${error} />`
  return html`<${Nav} me=${me} logout=${logout} /><main><${Page} route=${route} me=${me} /></main>`
}

render(html`<${App} />`, document.getElementById('app')!)
