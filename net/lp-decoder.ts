// Length-prefixed decoding without an exception per message. @libp2p/utils' LengthPrefixedDecoder
// (noise's framing: every message a connection receives) loops until the buffer holds no whole
// frame, and learns that the buffer is empty by calling the length decoder, which throws a
// RangeError (a new Error with its stack trace) that the loop catches: one exception for every
// chunk read from every socket, 2.4 % of a coordinator's CPU while 500 agents reconnected. Here
// an empty buffer decodes as a frame of maxDataLength bytes, which the loop sees it cannot hold
// yet and stops at, exactly where the exception stopped it; a buffer with bytes takes the
// library's own decoder, RangeError included when the prefix itself is cut. Imported for its
// effect by net/libp2p.ts; test/lp-decoder.test.ts.
import { LengthPrefixedDecoder } from '@libp2p/utils'

interface DecoderFields {
  lengthDecoder: (data: { byteLength: number }) => number
  maxDataLength: number
  /** On the instance: its length decoder is wrapped (the prototype's flag says decode is). */
  chorusLengthGuarded?: true
}

const proto = LengthPrefixedDecoder.prototype as unknown as { decode(this: DecoderFields, buf: unknown): Generator<unknown>; chorusEmptyGuard?: true }
if (!proto.chorusEmptyGuard) {
  const library = proto.decode
  proto.decode = function (this: DecoderFields, buf: unknown) {
    if (!this.chorusLengthGuarded) {
      const decodeLength = this.lengthDecoder
      this.lengthDecoder = (data) => (data.byteLength === 0 && Number.isFinite(this.maxDataLength) ? this.maxDataLength : decodeLength(data))
      this.chorusLengthGuarded = true
    }
    return library.call(this, buf)
  }
  proto.chorusEmptyGuard = true
}
