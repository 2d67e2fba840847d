// Web console logins: one-time login codes (made by `chorus ui` with a token) and the browser
// sessions they are exchanged for. Both live in this coordinator process only (a restart logs
// everyone out), are bounded in number, expire, and are stored as SHA-256 hashes; a code is
// single-use. A session carries the hash of the token that made its login code, so it has that
// token's name and role and ends when the token is revoked or expires.
import { hashToken, newToken } from './access.js'

/** How long a login URL is valid. */
export const LOGIN_CODE_TTL_MS = 5 * 60_000
/** How long a browser session lasts. */
export const SESSION_TTL_MS = 8 * 60 * 60_000
/** Login codes waiting at once; the oldest is dropped beyond this. */
export const MAX_LOGIN_CODES = 256
/** Sessions held at once; the oldest is dropped beyond this. */
export const MAX_SESSIONS = 1_024
export const SESSION_COOKIE = 'chorus_session'

export interface SessionActor { tokenHash: string }
interface Entry { actor: SessionActor; expiresAt: number }

/** A map of hash -> entry that drops expired entries and, when full, the oldest one. */
class Expiring {
  private readonly byHash = new Map<string, Entry>()
  constructor(private readonly max: number, private readonly ttlMs: number) {}

  add(secret: string, actor: SessionActor, now: number): number {
    this.sweep(now)
    while (this.byHash.size >= this.max) this.byHash.delete(this.byHash.keys().next().value!)
    const expiresAt = now + this.ttlMs
    this.byHash.set(hashToken(secret), { actor, expiresAt })
    return expiresAt
  }

  get(secret: string, now: number): Entry | undefined {
    const e = this.byHash.get(hashToken(secret))
    return e && e.expiresAt > now ? e : undefined
  }

  delete(secret: string): boolean {
    return this.byHash.delete(hashToken(secret))
  }

  private sweep(now: number): void {
    for (const [h, e] of this.byHash) if (e.expiresAt <= now) this.byHash.delete(h)
  }
}

export class SessionStore {
  private readonly codes = new Expiring(MAX_LOGIN_CODES, LOGIN_CODE_TTL_MS)
  private readonly sessions = new Expiring(MAX_SESSIONS, SESSION_TTL_MS)

  /** A new one-time login code for `actor`. */
  newCode(actor: SessionActor, now = Date.now()): { code: string; expiresAt: number } {
    const code = newToken('login_')
    return { code, expiresAt: this.codes.add(code, actor, now) }
  }

  /** Exchanges a code (once) for a session; undefined when it is unknown, used or expired. */
  redeem(code: string, now = Date.now()): { session: string; actor: SessionActor; expiresAt: number } | undefined {
    const entry = this.codes.get(code, now)
    if (!entry || !this.codes.delete(code)) return undefined
    const session = newToken('session_')
    return { session, actor: entry.actor, expiresAt: this.sessions.add(session, entry.actor, now) }
  }

  actorOf(session: string, now = Date.now()): SessionActor | undefined {
    return this.sessions.get(session, now)?.actor
  }

  end(session: string): boolean {
    return this.sessions.delete(session)
  }
}

/** The value of cookie `name` in a Cookie header. */
export function cookieOf(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=')
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim()
  }
  return undefined
}

export function sessionCookie(value: string, maxAgeSeconds: number, secure: boolean): string {
  return `${SESSION_COOKIE}=${value}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${maxAgeSeconds}${secure ? '; Secure' : ''}`
}
