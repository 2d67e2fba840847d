// Bundle entry: the polyfill must run before anything loads libp2p.
import '../protocol/polyfill.js'
await import('./main.js')
