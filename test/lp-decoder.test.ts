// net/lp-decoder.ts: noise's length-prefixed framing decodes the same frames, whatever the chunking,
// without an exception for each chunk that ends on a frame boundary.
import { describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import '../net/lp-decoder.js'

/** noise's 2-byte big-endian length, as @chainsafe/libp2p-noise decodes it; counts the RangeErrors it throws. */
function counting(): { decode: (data: Uint8Array | Uint8ArrayList) => number; thrown: () => number } {
  let thrown = 0
  const decode = (data: Uint8Array | Uint8ArrayList) => {
    if (data.length < 2) { thrown++; throw new RangeError('Could not decode int16BE') }
    return data instanceof Uint8Array ? (data[0]! << 8) + data[1]! : data.getUint16(0)
  }
  return { decode, thrown: () => thrown }
}

function frames(n: number): { wire: Buffer; payloads: Buffer[] } {
  const payloads = Array.from({ length: n }, (_, i) => randomBytes(1 + ((i * 37) % 300)))
  return { payloads, wire: Buffer.concat(payloads.flatMap((p) => [Buffer.from([p.length >> 8, p.length & 255]), p])) }
}

describe('length-prefixed decoding', () => {
  it('gives the same frames for any chunking, prefixes cut in two included', () => {
    const { wire, payloads } = frames(200)
    for (const size of [1, 2, 3, 7, 64, 1000, wire.length]) {
      const len = counting()
      const d = new LengthPrefixedDecoder({ lengthDecoder: len.decode, encodingLength: () => 2 })
      const out: Buffer[] = []
      for (let at = 0; at < wire.length; at += size) for (const f of d.decode(wire.subarray(at, at + size))) out.push(Buffer.from(f.subarray()))
      expect(out, `chunks of ${size}`).toEqual(payloads)
    }
  })

  it('throws no exception for chunks that end on a frame boundary (the library threw one per chunk)', () => {
    const { wire, payloads } = frames(50)
    const len = counting()
    const d = new LengthPrefixedDecoder({ lengthDecoder: len.decode, encodingLength: () => 2 })
    let at = 0
    let got = 0
    for (const p of payloads) {
      const end = at + 2 + p.length
      for (const _ of d.decode(wire.subarray(at, end))) got++
      at = end
    }
    expect(got).toBe(50)
    expect(len.thrown()).toBe(0)
    // A prefix cut after its first byte still takes the library's path (its RangeError), then completes.
    const cut = new LengthPrefixedDecoder({ lengthDecoder: len.decode, encodingLength: () => 2 })
    expect([...cut.decode(wire.subarray(0, 1))]).toEqual([])
    expect(len.thrown()).toBe(1)
    expect([...cut.decode(wire.subarray(1, 2 + payloads[0]!.length))].map((f) => Buffer.from(f.subarray()))).toEqual([payloads[0]])
  })

  it('still refuses a length over the limit and a buffer over its bound', () => {
    const d = new LengthPrefixedDecoder({ lengthDecoder: counting().decode, encodingLength: () => 2, maxDataLength: 100 })
    expect(() => [...d.decode(Buffer.from([1, 0, 5]))]).toThrow(/length/i)
    const small = new LengthPrefixedDecoder({ lengthDecoder: counting().decode, encodingLength: () => 2, maxBufferSize: 10 })
    expect(() => [...small.decode(Buffer.alloc(11, 0xff))]).toThrow(/limit/i)
  })
})
