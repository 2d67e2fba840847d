// Every connection in one pass. libp2p 3.3's connection manager lists all connections by
// concatenating each peer's array onto the list built so far (`conns = conns.concat(c)`), which
// copies the whole list once per peer: O(N²) element copies for N peers. It does so on every
// inbound connection (its maxConnections check), again when one opens (the pruner's count), and
// for every getConnections() without a peer (net/liveness.ts, once per slice of the ping
// interval). At 1,000 connected agents that is about 500,000 copies per call, twice for each
// agent that connects. Here the same list, in the same order, is built with one push per
// connection. Installed by net/libp2p.ts on its node's connection manager.
import type { Connection, PeerId } from '@libp2p/interface'

interface ConnectionManagerLike {
  getConnections(peerId?: PeerId): Connection[]
  getConnectionsMap(): { values(): Iterable<Connection[]> }
}

export function listConnectionsInOnePass(connectionManager: unknown): boolean {
  const cm = connectionManager as Partial<ConnectionManagerLike>
  if (typeof cm.getConnections !== 'function' || typeof cm.getConnectionsMap !== 'function') return false
  const library = cm.getConnections.bind(cm)
  const map = cm.getConnectionsMap.bind(cm)
  cm.getConnections = (peerId?: PeerId): Connection[] => {
    if (peerId != null) return library(peerId)
    const all: Connection[] = []
    for (const list of map().values()) for (const c of list) all.push(c)
    return all
  }
  return true
}
