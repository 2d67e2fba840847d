#!/usr/bin/env node
// Entry point of the `chorus` command. `npm ci` builds dist/bundle (one minified ESM bundle
// split per subcommand): an agent process loads only what an agent needs.
await import('../dist/bundle/entry.js')
