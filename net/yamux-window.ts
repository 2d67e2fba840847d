// Window updates as go-yamux sends them: only once the receive window is half used. @libp2p/yamux
// 8.0.3 answers every data frame it receives with a WINDOW_UPDATE frame of its own, each its own
// noise message and socket write: 16 % of a coordinator's CPU at 1,000 agents went to them
// (README, Sizing). A stream in any state other than Established (opening: SYN/ACK flags;
// paused) takes the library's own path, and so do windows more than half used, so the sender is
// never held longer than by the library itself: it always has at least half a window to send.
// Imported for its effect by net/libp2p.ts; test/rpc-mux.test.ts counts the frames.
import { StreamState, YamuxStream } from '@libp2p/yamux/stream'

interface WindowState {
  state: StreamState
  recvWindow: number
  recvWindowCapacity: number
}

const proto = YamuxStream.prototype as unknown as { sendWindowUpdate(this: WindowState): void; chorusHalfWindow?: true }
if (!proto.chorusHalfWindow) {
  const library = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: WindowState) {
    if (this.state === StreamState.Established && this.recvWindowCapacity * 2 >= this.recvWindow) return
    library.call(this)
  }
  proto.chorusHalfWindow = true
}
