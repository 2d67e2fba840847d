#!/usr/bin/env node
// Entry point of the `chorus` command: the compiled CLI lives in dist/ (built by `npm ci`).
import '../dist/protocol/polyfill.js'
await import('../dist/cli/main.js')
