// Bundle entry: the polyfill must run before anything loads libp2p.
import '../runtime/polyfill.js'
await import('./main.js')
