// One socket write per noise message. @chainsafe/libp2p-noise 17 hands each encrypted message to
// the TCP connection as a list of two chunks, its 2-byte length and its ciphertext, and
// @libp2p/tcp 11 writes every chunk with its own socket.write(): two syscalls (and, with
// TCP_NODELAY, two segments) per message, one of them 2 bytes long. Here a list of chunks is
// joined and written once. The TCP connection class is not exported: its prototype is found from
// the first connection (`maConn`, which carries the socket) and patched once, for every later
// connection too. Called by net/libp2p.ts on every connection:open; test/rpc-mux.test.ts counts
// the syscalls' effect (writes per rpc).
interface Chunks {
  byteLength: number
  bufs?: unknown[]
  subarray(): Uint8Array
  [Symbol.iterator](): Iterator<Uint8Array>
}
type SendData = (this: unknown, data: Chunks | Uint8Array[]) => { sentBytes: number; canSendMore: boolean }

export function joinTcpWrites(connection: unknown): boolean {
  const maConn = (connection as { maConn?: { socket?: unknown } }).maConn
  if (!maConn || typeof maConn.socket !== 'object') return false
  const proto = Object.getPrototypeOf(maConn) as { sendData?: SendData; chorusOneWrite?: true }
  if (proto.chorusOneWrite) return true
  if (typeof proto.sendData !== 'function') return false
  const library = proto.sendData
  proto.sendData = function (data) {
    if (!Array.isArray(data) && Array.isArray(data.bufs) && data.bufs.length > 1) return library.call(this, [data.subarray()])
    return library.call(this, data)
  }
  proto.chorusOneWrite = true
  return true
}
