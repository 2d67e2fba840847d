// Many rpcs over one long-lived stream per peer (PROTOCOL_RPC_MUX). The one-stream-per-request
// protocol (PROTOCOL_RPC) costs each rpc a yamux stream opened and closed (SYN, ACK, two FINs),
// a multistream-select negotiation and a peer-store lookup: 5 data frames and 4 window updates,
// each its own noise message and socket write, about 1.2 ms of CPU for both ends together on
// this machine (`chorus bench rpc`). Here a request and its reply are one frame each.
//
// A frame is [u32 length][u8 kind][u32 id][payload]; length counts kind, id and payload. The
// requester numbers its requests; the server answers each with a reply (or an error) carrying
// the same id, in whatever order its handler finishes. When the stream closes (the connection
// dropped, the peer went away) every request still waiting on it fails at once: a held watch does
// not outlive its connection.
import type { Stream } from '@libp2p/interface'

/** What a stream's 'message' event carries: bytes, or a list of byte chunks (Uint8ArrayList). */
type Chunk = Uint8Array | { subarray(): Uint8Array }

/** Bytes of a frame's header: length, kind and id. */
export const MUX_HEADER_BYTES = 9
/** Requests one requester may have waiting on one peer's stream at once; more fail at once, as a failed rpc does. */
export const MAX_MUX_PENDING = 64
/** Longest error text sent back for a request whose handler threw, in characters. */
export const MAX_MUX_ERROR_CHARS = 200

const KIND_REQUEST = 0
const KIND_REPLY = 1
const KIND_ERROR = 2

export interface MuxFrame {
  kind: number
  id: number
  payload: Uint8Array
}

export class MuxFrameError extends Error {
  override name = 'MuxFrameError'
}

export function encodeFrame(kind: number, id: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(MUX_HEADER_BYTES + payload.byteLength)
  const view = new DataView(out.buffer)
  view.setUint32(0, 5 + payload.byteLength)
  out[4] = kind
  view.setUint32(5, id)
  out.set(payload, MUX_HEADER_BYTES)
  return out
}

/**
 * Splits a byte stream into frames. A length above maxPayload() (asked again for every frame:
 * a peer's limit grows once it is a member) or below the header is refused before its bytes
 * are buffered.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = []
  private length = 0
  constructor(private readonly maxPayload: () => number) {}

  /** Bytes held for a frame not yet complete. */
  get buffered(): number { return this.length }

  /** The first n bytes as one array (n ≤ length), joining chunks only when a frame spans them. */
  private head(n: number): Uint8Array {
    if (this.chunks[0]!.byteLength < n) {
      const joined = new Uint8Array(this.length)
      let at = 0
      for (const c of this.chunks) { joined.set(c, at); at += c.byteLength }
      this.chunks = [joined]
    }
    return this.chunks[0]!
  }

  private consume(n: number): void {
    const first = this.chunks[0]!
    if (first.byteLength === n) this.chunks.shift()
    else this.chunks[0] = first.subarray(n)
    this.length -= n
  }

  push(chunk: Chunk): MuxFrame[] {
    const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    if (bytes.byteLength > 0) { this.chunks.push(bytes); this.length += bytes.byteLength }
    const frames: MuxFrame[] = []
    while (this.length >= 4) {
      let h = this.head(4)
      const length = new DataView(h.buffer, h.byteOffset, 4).getUint32(0)
      if (length < 5) throw new MuxFrameError(`frame length ${length} is below its 5-byte header`)
      if (length - 5 > this.maxPayload()) throw new MuxFrameError(`frame of ${length - 5} bytes is over the ${this.maxPayload()}-byte limit`)
      if (this.length < 4 + length) break
      h = this.head(4 + length)
      const view = new DataView(h.buffer, h.byteOffset, MUX_HEADER_BYTES)
      frames.push({ kind: view.getUint8(4), id: view.getUint32(5), payload: h.slice(MUX_HEADER_BYTES, 4 + length) })
      this.consume(4 + length)
    }
    return frames
  }
}

/** Hands each message's complete frames to handle; bytes that are no valid frame abort the stream. */
function onFrames(stream: Stream, decoder: FrameDecoder, handle: (frames: MuxFrame[]) => void): void {
  stream.addEventListener('message', (evt) => {
    let frames: MuxFrame[]
    try {
      frames = decoder.push(evt.data)
    } catch (err) {
      stream.abort(err as Error)
      return
    }
    handle(frames)
  })
}

/** Writes frames in order, waiting for the stream to drain when its send buffer is full. */
function writer(stream: Stream): (frame: Uint8Array) => void {
  const out: Uint8Array[] = []
  let flushing = false
  const flush = async () => {
    flushing = true
    try {
      while (out.length > 0) {
        if (stream.writeStatus !== 'writable') { out.length = 0; break }
        if (!stream.send(out.shift()!)) await stream.onDrain()
      }
    } catch {
      out.length = 0 // the stream closed: its 'close' handler fails what waits on it
    } finally {
      flushing = false
    }
  }
  return (frame) => {
    out.push(frame)
    if (!flushing) void flush()
  }
}

export interface MuxServeOptions {
  /** Largest request payload this peer may send now, in bytes. */
  maxPayload: () => number
  /** Requests handled at once on this stream; the stream is paused (yamux flow control holds the peer) while that many run. */
  maxConcurrent: number
  /** A request begun must be complete within this many ms, or the stream is aborted. */
  partialDeadlineMs: number
}

/** Serves one inbound mux stream until it closes. A handler's exception becomes an error reply to that request only. */
export function serveMux(stream: Stream, from: string, handler: (data: Uint8Array, from: string) => Promise<Uint8Array>, o: MuxServeOptions): void {
  const decoder = new FrameDecoder(o.maxPayload)
  const write = writer(stream)
  const queue: MuxFrame[] = []
  let running = 0
  let partial: ReturnType<typeof setTimeout> | undefined
  let completed = false
  const arm = () => {
    completed = false
    partial = setTimeout(() => {
      partial = undefined
      if (decoder.buffered === 0) return
      if (completed) { arm(); return }
      stream.abort(new MuxFrameError(`request not complete within ${o.partialDeadlineMs} ms`))
    }, o.partialDeadlineMs)
  }
  const next = () => {
    while (running < o.maxConcurrent && queue.length > 0) {
      const f = queue.shift()!
      running++
      let reply: Promise<Uint8Array>
      try { reply = handler(f.payload, from) } catch (err) { reply = Promise.reject(err) }
      reply.then(
        (bytes) => write(encodeFrame(KIND_REPLY, f.id, bytes)),
        (err: unknown) => write(encodeFrame(KIND_ERROR, f.id, new TextEncoder().encode(String((err as Error)?.message ?? err).slice(0, MAX_MUX_ERROR_CHARS)))),
      ).finally(() => {
        running--
        try { next() } catch { /* the stream ended under us: nothing more to serve on it */ }
      })
    }
    // pause() and resume() throw on a stream closing or closed (the peer went away meanwhile).
    if (stream.readStatus === 'closing' || stream.readStatus === 'closed') return
    if (queue.length > 0 || running >= o.maxConcurrent) stream.pause()
    else if (stream.readStatus === 'paused') stream.resume()
  }
  onFrames(stream, decoder, (frames) => {
    // A request begun must be complete within partialDeadlineMs: the timer runs from the first
    // byte of an incomplete frame and is not reset by later bytes of it (a peer trickling a byte
    // at a time does not hold it open); frames completed meanwhile re-arm it instead.
    if (frames.length > 0) completed = true
    if (decoder.buffered === 0) { if (partial) { clearTimeout(partial); partial = undefined } }
    else if (!partial) arm()
    for (const f of frames) {
      if (f.kind !== KIND_REQUEST) { stream.abort(new MuxFrameError(`frame kind ${f.kind} is not a request`)); return }
      queue.push(f)
    }
    try { next() } catch (err) { stream.abort(err as Error) }
  })
  stream.addEventListener('close', () => {
    if (partial) clearTimeout(partial)
    queue.length = 0
  })
}

interface Waiting {
  resolve: (reply: Uint8Array) => void
  reject: (err: Error) => void
  timer: ReturnType<typeof setTimeout>
}

/** The requester's side of one mux stream. */
export class MuxClient {
  private readonly waiting = new Map<number, Waiting>()
  private readonly write: (frame: Uint8Array) => void
  private nextId = 1

  constructor(private readonly stream: Stream, maxPayload: number) {
    this.write = writer(stream)
    onFrames(stream, new FrameDecoder(() => maxPayload), (frames) => {
      for (const f of frames) {
        const w = this.waiting.get(f.id)
        if (!w) continue // its request timed out: the late reply is dropped
        this.waiting.delete(f.id)
        clearTimeout(w.timer)
        if (f.kind === KIND_REPLY) w.resolve(f.payload)
        else w.reject(new Error(`the peer failed the request: ${new TextDecoder().decode(f.payload)}`))
      }
    })
    stream.addEventListener('close', (evt) => {
      const why = (evt as { error?: Error }).error?.message ?? 'closed'
      for (const w of this.waiting.values()) {
        clearTimeout(w.timer)
        w.reject(new Error(`rpc stream closed: ${why}`))
      }
      this.waiting.clear()
    })
  }

  /** Whether requests can still go out on this stream (read from the stream: it may have closed before the listeners above were added). */
  get usable(): boolean {
    return this.stream.status === 'open' && this.stream.writeStatus === 'writable'
  }

  get pending(): number { return this.waiting.size }

  request(data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (!this.usable) return Promise.reject(new Error('rpc stream closed'))
    if (this.waiting.size >= MAX_MUX_PENDING) return Promise.reject(new Error(`${MAX_MUX_PENDING} requests already wait on this peer`))
    const id = this.nextId
    this.nextId = this.nextId >= 0xffff_ffff ? 1 : this.nextId + 1
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id)
        reject(new Error(`rpc timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.waiting.set(id, { resolve, reject, timer })
      this.write(encodeFrame(KIND_REQUEST, id, data))
    })
  }

  close(): void {
    this.stream.abort(new Error('closed by this side'))
  }
}
