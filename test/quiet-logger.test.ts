// net/quiet-logger.ts: with DEBUG unset every libp2p component shares one disabled logger (no
// per-connection or per-stream logger objects); with DEBUG set libp2p makes its own, as before.
import { describe, expect, it } from 'vitest'
import { libp2pLogger } from '../net/quiet-logger.js'

describe('libp2p logger', () => {
  it('is libp2p\'s own when DEBUG names anything', () => {
    expect(libp2pLogger({ DEBUG: 'libp2p:*' })).toBeUndefined()
    expect(libp2pLogger({ DEBUG: 'libp2p:yamux' })).toBeUndefined()
  })

  it('is one shared disabled logger, scopes included, when DEBUG is unset or empty', () => {
    for (const env of [{}, { DEBUG: '' }]) {
      const components = libp2pLogger(env)!
      const a = components.forComponent('libp2p:tcp:connection:inbound:abc')
      const b = components.forComponent('libp2p:yamux')
      expect(a).toBe(b)
      expect(a.enabled).toBe(false)
      const scoped = a.newScope('stream:1')
      expect(scoped).toBe(a)
      expect(() => { a('%s', 'x'); a.error('%e', new Error('boom')); a.trace('t') }).not.toThrow()
    }
  })
})
