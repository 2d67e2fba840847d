// Web console logins (coordinator/sessions.ts): codes are single-use, expire after 5 minutes,
// are kept hashed and bounded; sessions expire and end on logout; the cookie's attributes.
import { describe, expect, it } from 'vitest'
import { LOGIN_CODE_TTL_MS, MAX_LOGIN_CODES, SESSION_TTL_MS, SessionStore, cookieOf, sessionCookie } from '../coordinator/sessions.js'

const who = { tokenHash: 'h1' }

describe('console sessions', () => {
  it('a code is redeemed once, within 5 minutes, for a session of its token', () => {
    const s = new SessionStore()
    const { code } = s.newCode(who, 0)
    const redeemed = s.redeem(code, LOGIN_CODE_TTL_MS - 1)!
    expect(s.actorOf(redeemed.session, LOGIN_CODE_TTL_MS)).toEqual(who)
    expect(s.redeem(code, 1)).toBeUndefined()
    expect(s.redeem(s.newCode(who, 0).code, LOGIN_CODE_TTL_MS)).toBeUndefined()
  })

  it('a session expires, and ends on logout', () => {
    const s = new SessionStore()
    const a = s.redeem(s.newCode(who, 0).code, 0)!
    expect(s.actorOf(a.session, SESSION_TTL_MS - 1)).toEqual(who)
    expect(s.actorOf(a.session, SESSION_TTL_MS)).toBeUndefined()
    const b = s.redeem(s.newCode(who, 0).code, 0)!
    expect(s.end(b.session)).toBe(true)
    expect(s.actorOf(b.session, 1)).toBeUndefined()
  })

  it('keeps at most MAX_LOGIN_CODES codes (the oldest go first) and never the code itself', () => {
    const s = new SessionStore()
    const first = s.newCode(who, 0).code
    for (let i = 0; i < MAX_LOGIN_CODES; i++) s.newCode(who, 0)
    expect(s.redeem(first, 1)).toBeUndefined()
    expect(JSON.stringify([...(s as unknown as { codes: { byHash: Map<string, unknown> } }).codes.byHash.keys()])).not.toContain(first)
  })

  it('the cookie is HttpOnly, SameSite=Strict, Path=/, expiring, Secure over https', () => {
    expect(sessionCookie('v', 60, false)).toBe('chorus_session=v; HttpOnly; SameSite=Strict; Path=/; Max-Age=60')
    expect(sessionCookie('v', 60, true)).toMatch(/; Secure$/)
    expect(cookieOf('a=1; chorus_session=xyz; b=2', 'chorus_session')).toBe('xyz')
    expect(cookieOf(undefined, 'chorus_session')).toBeUndefined()
  })
})
