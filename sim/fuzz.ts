// Template fuzzing: seeded mutations of the Courier samples, serialized as JSON, YAML or TOML,
// pushed through everything a template reaches: validation (protocol/parse.ts), planning
// over a small synthetic registry (coordinator/plan.ts), schedule expansion
// (protocol/schedule.ts) and step evaluation on synthetic output (agent/steps.ts).
//
// Properties, per input: an answer within MAX_INPUT_MS; no exception escapes any stage; a
// rejection names a non-empty path for every problem. One seed gives one input (Prng), so a
// failure is replayed by its seed alone: `npm run fuzz -- --seed N --count 1`.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseYamlValue, stringify as yamlStringify } from 'yaml'
import { stringify as tomlStringify } from 'smol-toml'
import { Prng } from './prng.js'
import { parseTemplateText, type TemplateFormat } from '../protocol/parse.js'
import type { JobTemplate } from '../protocol/template.js'
import { deriveSchedule } from '../protocol/jobschedule.js'
import { dueOccurrences, nextOccurrences, planOccurrences } from '../protocol/schedule.js'
import { completeStep, planStep } from '../agent/steps.js'
import { emptyCoordinatorState, type CoordinatorState } from '../coordinator/core.js'
import { planJob } from '../coordinator/plan.js'

/** An input slower than this (all stages together) is a failure. */
export const MAX_INPUT_MS = 2000
/** Occurrences expanded per accepted input. */
export const FUZZ_OCCURRENCES = 20

export interface Sample {
  name: string
  value: unknown
}

export interface FuzzInput {
  seed: number
  sample: string
  format: TemplateFormat
  mutations: string[]
  text: string
}

export interface FuzzOutcome {
  seed: number
  sample: string
  format: TemplateFormat
  mutations: string[]
  ms: number
  accepted: boolean
  /** Set when a property failed: the stage and what happened. */
  failure?: string
}

// ---------------------------------------------------------------------------------------------
// Samples.

function templateLike(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && ['actions', 'target', 'scheduleRule'].some((k) => k in v)
}

/** Every template sample (JSON and YAML, any folder but responses/), sorted by name. */
export function loadSamples(dir: string): Sample[] {
  const out: Sample[] = []
  const walk = (sub: string) => {
    for (const entry of readdirSync(join(dir, sub), { withFileTypes: true })) {
      const rel = sub === '' ? entry.name : `${sub}/${entry.name}`
      if (entry.isDirectory()) {
        if (entry.name !== 'responses') walk(rel)
        continue
      }
      const value = readSample(join(dir, rel))
      if (templateLike(value)) out.push({ name: rel, value })
    }
  }
  walk('')
  return out.sort((a, b) => a.name.localeCompare(b.name))
}

function readSample(file: string): unknown {
  const text = readFileSync(file, 'utf8')
  try {
    if (/\.ya?ml$/.test(file)) return parseYamlValue(text, { uniqueKeys: false })
    if (file.endsWith('.json')) return JSON.parse(text)
  } catch {
    // Not a template this fuzzer can start from.
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// Mutations of the parsed value.

type Json = unknown
type Container = Record<string, Json> | Json[]

const RRULE_BOMBS = [
  'RRULE:FREQ=MINUTELY;BYDAY=MO;BYHOUR=5;COUNT=1', 'RRULE:FREQ=MINUTELY;BYDAY=MO;BYHOUR=5',
  'RRULE:DTSTART=20250106;FREQ=DAILY;INTERVAL=7;BYDAY=TU', 'RRULE:FREQ=YEARLY;BYMONTHDAY=16;BYYEARDAY=34',
  'RRULE:FREQ=YEARLY;BYMONTHDAY=16;BYYEARDAY=34;COUNT=3', 'RRULE:FREQ=SECONDLY;COUNT=100000',
  'RRULE:FREQ=SECONDLY;BYMINUTE=5;COUNT=100000', 'RRULE:FREQ=YEARLY;BYWEEKNO=1;BYMONTH=6',
  'RRULE:FREQ=SECONDLY;INTERVAL=2;BYSECOND=1', 'RRULE:FREQ=MONTHLY;BYDAY=5FR;BYMONTHDAY=13',
  'RRULE:FREQ=YEARLY;BYSETPOS=366;BYDAY=MO', 'RRULE:FREQ=HOURLY;BYDAY=MO;BYHOUR=5;TZID=Australia/Lord_Howe',
  'RRULE:FREQ=DAILY;TZID=Mars/Olympus', 'RRULE:FREQ=DAILY;UNTIL=19000101', 'RRULE:FREQ=DAILY;COUNT=0',
  'DTSTART;TZID=Europe/Paris:20250330T023000\nRRULE:FREQ=MINUTELY;INTERVAL=7;BYMONTH=2;BYMONTHDAY=29',
]
const RRULE_PARTS = ['FREQ=SECONDLY', 'FREQ=MINUTELY', 'FREQ=HOURLY', 'FREQ=DAILY', 'FREQ=WEEKLY', 'FREQ=MONTHLY', 'FREQ=YEARLY',
  'INTERVAL=7', 'INTERVAL=13', 'COUNT=5', 'COUNT=99999', 'UNTIL=20301231', 'BYDAY=MO', 'BYDAY=-1SU', 'BYMONTH=2',
  'BYMONTHDAY=29', 'BYMONTHDAY=-1', 'BYYEARDAY=366', 'BYWEEKNO=53', 'BYHOUR=5', 'BYMINUTE=30', 'BYSECOND=59',
  'BYSETPOS=-1', 'WKST=SU', 'DTSTART=20250106', 'TZID=America/New_York']
/** Catastrophic for a backtracking engine, valid RE2 (linear there). */
const REGEX_BOMBS = ['(a+)+$', '(.*a){25}', '(?:a|a)*b', '^(([a-z])+.)+[A-Z]([a-z])+$', '(a|aa)+$', '(x+x+)+y', '([0-9.]+)$']
/** Patterns RE2 refuses (validate must name them). */
const BAD_PATTERNS = ['(a)\\1', 'x(?=y)', '^([0-9]+', '[', '\\', '(?<n>a)\\k<n>', 'a{1001}']
const WILDCARD_QUERIES = [`node:${'*a'.repeat(30)}*b`, `hostname:${'?*'.repeat(100)}`, 'role:web AND (', '-', 'NOT NOT NOT', `(${'('.repeat(200)}a:b${')'.repeat(200)})`]
const NUMERIC_EDGES: Json[] = ['NaN', 'Infinity', '-0', -0, 0, -1, 1.5, 1e21, 2 ** 31, '1e3', ' 12 ', '0x10', Number.MAX_SAFE_INTEGER]
const STRINGS = ['', ' ', '\u0000', '\uD800', '\u202Eevil', 'é', 'e\u0301', '🧨', '{{.X}}', '{{ .UNDECLARED }}', '$..version', '$[*][*]', 'Europe/Paris', 'Mars/Olympus', '../../etc/passwd', 'immediate', '__proto__']
const PROTO_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf']
const ENUM_FIELDS = ['executionType', 'distributionMethod', 'nodeListType', 'accessMode', 'sourceType', 'extractMethod', 'operator', 'action', 'type', 'status', 'policy', 'vanishedHolder']

/** Every container in the value with its path, depth-first (bounded). */
function containers(root: Json): { node: Container; path: (string | number)[] }[] {
  const out: { node: Container; path: (string | number)[] }[] = []
  const walk = (v: Json, path: (string | number)[]) => {
    if (out.length > 5000 || typeof v !== 'object' || v === null) return
    out.push({ node: v as Container, path })
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, i]))
    else for (const [k, x] of Object.entries(v)) walk(x, [...path, k])
  }
  walk(root, [])
  return out
}

/** A random slot (container and key) holding a value. */
function pickSlot(rng: Prng, root: Json): { node: Container; key: string | number } | undefined {
  const filled = containers(root).filter((c) => Object.keys(c.node).length > 0)
  if (filled.length === 0) return undefined
  const { node } = rng.pick(filled)
  const keys = Object.keys(node)
  const key = rng.pick(keys)
  return { node, key: Array.isArray(node) ? Number(key) : key }
}

function setSlot(slot: { node: Container; key: string | number }, value: Json): void {
  Object.defineProperty(slot.node, slot.key, { value, enumerable: true, writable: true, configurable: true })
}

function randomValue(rng: Prng): Json {
  switch (rng.int(7)) {
    case 0: return rng.pick(STRINGS)
    case 1: return rng.pick(NUMERIC_EDGES)
    case 2: return rng.chance(0.5)
    case 3: return null
    case 4: return []
    case 5: return {}
    default: return rng.pick(RRULE_BOMBS)
  }
}

function randomRule(rng: Prng): string {
  const n = 1 + rng.int(5)
  const parts = [rng.pick(RRULE_PARTS.slice(0, 7))]
  for (let i = 0; i < n; i++) parts.push(rng.pick(RRULE_PARTS))
  return `RRULE:${parts.join(';')}`
}

/** Sets every field named `key` somewhere in the value (or the first found) to `value`. */
function setField(rng: Prng, root: Json, keys: readonly string[], value: () => Json): boolean {
  const hits = containers(root).filter((c) => !Array.isArray(c.node) && keys.some((k) => k in c.node))
  if (hits.length === 0) return false
  const hit = rng.pick(hits).node as Record<string, Json>
  const key = rng.pick(keys.filter((k) => k in hit))
  hit[key] = value()
  return true
}

function nest(value: Json, depth: number, asArray: boolean): Json {
  let v = value
  for (let i = 0; i < depth; i++) v = asArray ? [v] : { x: v }
  return v
}

type Mutation = (rng: Prng, root: Json) => boolean

const MUTATIONS: Record<string, Mutation> = {
  delete: (rng, root) => {
    const slot = pickSlot(rng, root)
    if (slot === undefined) return false
    if (Array.isArray(slot.node)) slot.node.splice(Number(slot.key), 1)
    else delete slot.node[slot.key as string]
    return true
  },
  retype: (rng, root) => { const s = pickSlot(rng, root); if (s) setSlot(s, randomValue(rng)); return s !== undefined },
  numeric: (rng, root) => { const s = pickSlot(rng, root); if (s) setSlot(s, rng.pick(NUMERIC_EDGES)); return s !== undefined },
  hugeString: (rng, root) => { const s = pickSlot(rng, root); if (s) setSlot(s, rng.pick(['a', '{{.X}}', 'é', '*a']).repeat(rng.pick([70_000, 300_000]))); return s !== undefined },
  unicode: (rng, root) => { const s = pickSlot(rng, root); if (s) setSlot(s, rng.pick(STRINGS) + rng.pick(STRINGS)); return s !== undefined },
  deepNest: (rng, root) => { const s = pickSlot(rng, root); if (s) setSlot(s, nest(rng.pick(STRINGS), rng.pick([20, 70, 300]), rng.chance(0.5))); return s !== undefined },
  protoKey: (rng, root) => {
    const objects = containers(root).filter((c) => !Array.isArray(c.node))
    if (objects.length === 0) return false
    setSlot({ node: rng.pick(objects).node, key: rng.pick(PROTO_KEYS) }, rng.chance(0.5) ? { polluted: true } : 'x')
    return true
  },
  wrongEnum: (rng, root) => setField(rng, root, ENUM_FIELDS, () => rng.pick(['sometimes', 'REGEX', 'Nodes', '', 'percentage', 'skip'])),
  rruleBomb: (rng, root) => setField(rng, root, ['scheduleRule', 'rrule'], () => (rng.chance(0.5) ? rng.pick(RRULE_BOMBS) : randomRule(rng))),
  exceptionFlood: (rng, root) => {
    if (typeof root !== 'object' || root === null || Array.isArray(root)) return false
    const rule = rng.chance(0.5) ? rng.pick(RRULE_BOMBS) : randomRule(rng)
    ;(root as Record<string, Json>).exceptionRules = Array.from({ length: rng.pick([1, 8, 64]) }, () => ({ rrule: rule, duration: rng.pick([1, 60, 1_000_000]) }))
    return true
  },
  regexBomb: (rng, root) => {
    const steps = listAt(root, ['actions', 'steps'])
    if (steps.length === 0) return false
    const step = rng.pick(steps)
    const bomb = rng.chance(0.7) ? rng.pick(REGEX_BOMBS) : rng.pick(BAD_PATTERNS)
    if (rng.chance(0.5)) step.outputFieldRules = { OUT: { sourceType: 'output', source: 'stdout', extractMethod: 'regEx', expression: bomb } }
    else {
      step.expectedInputs = { ...(step.expectedInputs as object), X: { default: `${'a'.repeat(3000)}b` } }
      step.conditions = [{ inputName: 'X', operator: 'matches', value: bomb }]
    }
    return true
  },
  filterBomb: (rng, root) => {
    const groups = listAt(root, ['target', 'groups'])
    if (groups.length === 0) return false
    const attribute = { name: rng.pick(['hostname', 'os', 'kernel_release']), operator: rng.pick(['MATCHES', 'NOT MATCHES']), value: [rng.chance(0.7) ? rng.pick(REGEX_BOMBS) : rng.pick(BAD_PATTERNS)] }
    Object.assign(rng.pick(groups), { nodeListType: 'filter', filter: { constraints: { attributes: [attribute] } } })
    return true
  },
  describe: (rng, root) => setField(rng, root, ['description'], () => (rng.chance(0.3) ? 'é'.repeat(rng.pick([100, 4000, 5000])) : rng.pick(STRINGS))),
  query: (rng, root) => setField(rng, root, ['filter'], () => ({ query: rng.pick(WILDCARD_QUERIES) })),
  chorus: (rng, root) => {
    if (typeof root !== 'object' || root === null || Array.isArray(root)) return false
    ;(root as Record<string, Json>).chorus = rng.pick<Json>([
      { timeZone: rng.pick(['Europe/Paris', 'Mars/Olympus', '../../etc/passwd', 'Australia/Lord_Howe']) },
      { missed: { policy: rng.pick(['skip', 'catchUp', 'sometimes']), max: rng.pick(NUMERIC_EDGES) } },
      { quorum: { type: 'percent', value: rng.pick(NUMERIC_EDGES) } }, { globalExceptions: rng.chance(0.5) },
    ])
    return true
  },
}
const MUTATION_NAMES = Object.keys(MUTATIONS)
/** Mutations that often leave a template valid, so later stages see hostile but accepted input. */
const TARGETED = ['rruleBomb', 'regexBomb', 'filterBomb', 'query', 'chorus', 'exceptionFlood', 'describe']

/** The objects of the array at `path` in the value (empty when there is none). */
function listAt(root: Json, path: string[]): Record<string, Json>[] {
  let v: Json = root
  for (const k of path) v = typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, Json>)[k] : undefined
  return Array.isArray(v) ? v.filter((x): x is Record<string, Json> => typeof x === 'object' && x !== null && !Array.isArray(x)) : []
}

// ---------------------------------------------------------------------------------------------
// Serialization and text-level mutations.

const FORMATS: TemplateFormat[] = ['json', 'yaml', 'toml']

/** TOML has no null: a key whose value is null is left out, as a TOML author would. */
function withoutNulls(v: Json): Json {
  if (Array.isArray(v)) return v.map(withoutNulls)
  if (typeof v !== 'object' || v === null) return v
  const out: Record<string, Json> = {}
  for (const [k, x] of Object.entries(v)) if (x !== null) Object.defineProperty(out, k, { value: withoutNulls(x), enumerable: true, writable: true, configurable: true })
  return out
}

function serialize(value: Json, format: TemplateFormat): string {
  try {
    if (format === 'yaml') return yamlStringify(value, { aliasDuplicateObjects: false, lineWidth: 0 })
    if (format === 'toml') return tomlStringify(withoutNulls(value) as Record<string, unknown>)
  } catch {
    // TOML has no null and no mixed arrays: such values go as JSON text in a TOML file.
  }
  return JSON.stringify(value, null, 1) ?? 'null'
}

const BILLION_LAUGHS = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
  ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(9).fill(`*${String.fromCharCode(97 + i)}`).join(',')}]`),
  'name: *i'].join('\n')

const TEXT_MUTATIONS: Record<string, (rng: Prng, text: string, format: TemplateFormat) => string> = {
  duplicateKey: (_rng, text, format) => (format === 'json' ? text.replace('{', '{"name": "duplicate",') : format === 'yaml' ? `name: duplicate\n${text}` : `name = "duplicate"\n${text}`),
  aliasBomb: () => BILLION_LAUGHS,
  hugeTomlArray: (rng) => `name = "x"\nbig = [${Array(rng.pick([10_000, 100_000])).fill('1').join(',')}]\n`,
  deepText: (rng, _text, format) => (format === 'yaml' ? `${'- '.repeat(rng.pick([100, 5000]))}x` : '['.repeat(rng.pick([100, 10_000]))),
  truncate: (rng, text) => text.slice(0, rng.int(text.length + 1)),
  byteFlip: (rng, text) => {
    const chars = [...text]
    for (let i = 0; i < 1 + rng.int(4) && chars.length > 0; i++) chars[rng.int(chars.length)] = String.fromCharCode(rng.int(128))
    return chars.join('')
  },
  bigInteger: (_rng, text, format) => (format === 'toml' ? text : text.replace(/(\d+)/, '9007199254740993')),
  infinity: (_rng, text, format) => (format === 'json' ? text.replace(/: (\d+)/, ': 1e309') : text.replace(/: (\d+)/, ': .inf')),
}
const TEXT_MUTATION_NAMES = Object.keys(TEXT_MUTATIONS)

/** The input of one seed: a sample, 1 to 3 mutations, a format, and sometimes a text mutation. */
export function makeInput(samples: readonly Sample[], seed: number): FuzzInput {
  const rng = new Prng(seed)
  const sample = rng.pick(samples)
  const value = structuredClone(sample.value)
  const mutations: string[] = []
  const pool = rng.chance(0.5) ? TARGETED : MUTATION_NAMES
  for (let i = 1 + rng.int(3); i > 0; i--) {
    const name = rng.pick(pool)
    if (MUTATIONS[name]!(rng, value)) mutations.push(name)
  }
  const format = rng.pick(FORMATS)
  let text = serialize(value, format)
  if (rng.chance(0.2)) {
    const name = rng.pick(TEXT_MUTATION_NAMES)
    text = TEXT_MUTATIONS[name]!(rng, text, format)
    mutations.push(`text:${name}`)
  }
  return { seed, sample: sample.name, format, mutations, text }
}

// ---------------------------------------------------------------------------------------------
// Running one input.

const NOW = Date.UTC(2026, 11, 1, 9, 0, 0)
const HOUR_MS = 3_600_000

/** A small registry: a few Linux and Windows nodes with facts, skills, a saved list and filter. */
export function syntheticRegistry(): CoordinatorState {
  const state = emptyCoordinatorState()
  const nodes = ['web-01', 'web-02', 'db-01', 'win-01', 'mac-01', 'node1', 'node2']
  nodes.forEach((nodeId, i) => {
    const os = nodeId.startsWith('win') ? 'Windows' : nodeId.startsWith('mac') ? 'Darwin' : 'Linux'
    state.nodes.set(nodeId, {
      nodeId, publicKey: `key-${nodeId}`, peerId: `peer-${nodeId}`, agentVersion: 'fuzz', addrs: [], firstSeenAt: NOW, lastSeenAt: NOW,
      facts: { hostname: nodeId, kernel_name: os, os: os.toLowerCase(), role: nodeId.split('-')[0]!, kernel_release: `5.${i}.0-rc.${i}`, cpus: String(1 + i) },
      skills: { 'chef-platform/shell-interpreter': ['1.0.0'], 'chef-platform/chef-client-interpreter': [`18.2.7.${i}`, '1.9.996.1'], 'chef-platform/inspec-interpreter': ['2.0.0-rc.1'] },
    })
  })
  state.lists.set('web', { id: 'web', name: 'web', nodes: ['web-01', 'web-02', 'ghost'] })
  state.filters.set('linux', { id: 'linux', name: 'linux', query: 'kernel_name:Linux' })
  return state
}

/** Synthetic step output: ReDoS bait, JSON for jsonPath rules, and every file rule's source. */
function syntheticOutcome(rules: JobTemplate['actions']['steps'][number]['outputFieldRules'], i: number) {
  const stdout = i % 2 === 0 ? `${'a'.repeat(3000)}b\nversion 1.2.3\nfalse\n` : JSON.stringify({ version: '1.2.3', items: [{ a: 1 }, { a: 'a'.repeat(3000) }] })
  const files: Record<string, string> = {}
  const artifacts: Record<string, string> = {}
  for (const r of Object.values(rules)) if (r.source) files[r.source] = artifacts[r.source] = stdout
  return { status: 'success' as const, exitCode: 0, stdout, stderr: 'a'.repeat(2000), files, artifacts }
}

/** Plans, expands and evaluates an accepted template; throws on any escaped exception. */
function exercise(template: JobTemplate, registry: CoordinatorState): string | undefined {
  const plan = planJob(registry, template, NOW)
  if (!plan.ok && plan.problems.some((p) => p.path === '')) return 'plan: a problem without a path'
  const derived = deriveSchedule(template, NOW, [])
  if (derived.ok) {
    const { schedule, exceptions, policy } = derived.value
    nextOccurrences(schedule, NOW, FUZZ_OCCURRENCES)
    planOccurrences(schedule, exceptions, NOW, 5)
    dueOccurrences(schedule, exceptions, NOW - HOUR_MS, NOW + 24 * HOUR_MS, policy, 100)
  }
  let available: Record<string, string> = { X: 'a'.repeat(3000) + 'b' }
  template.actions.steps.forEach((step, i) => {
    const planned = planStep(step, available)
    const done = completeStep(step.outputFieldRules, syntheticOutcome(step.outputFieldRules, i), planned.action === 'run' ? planned.secrets : [])
    available = { ...available, ...done.outputs }
  })
  return undefined
}

function checkRejection(problems: readonly { path: string; message: string }[]): string | undefined {
  if (problems.length === 0) return 'rejected without a problem'
  const bad = problems.find((p) => typeof p.path !== 'string' || p.path === '' || typeof p.message !== 'string' || p.message === '')
  return bad === undefined ? undefined : `a problem without a path or message: ${JSON.stringify(bad).slice(0, 200)}`
}

/** Runs one input through every stage and checks the properties. */
export function runInput(input: FuzzInput, registry: CoordinatorState = syntheticRegistry()): FuzzOutcome {
  const t0 = performance.now()
  let accepted = false
  let failure: string | undefined
  try {
    const r = parseTemplateText(input.text, input.format)
    accepted = r.ok
    failure = r.ok ? exercise(r.template, registry) : checkRejection(r.problems)
  } catch (e) {
    failure = `exception: ${e instanceof Error ? (e.stack ?? e.message).slice(0, 500) : String(e)}`
  }
  const ms = performance.now() - t0
  if (failure === undefined && ms > MAX_INPUT_MS) failure = `took ${ms.toFixed(0)} ms (bound ${MAX_INPUT_MS} ms)`
  const outcome: FuzzOutcome = { seed: input.seed, sample: input.sample, format: input.format, mutations: input.mutations, ms, accepted }
  if (failure !== undefined) outcome.failure = failure
  return outcome
}

export interface FuzzSummary {
  inputs: number
  accepted: number
  failures: FuzzOutcome[]
  slowest: FuzzOutcome | undefined
  totalMs: number
}

/** Runs seeds first, first + 1, ... until `count` inputs or `deadlineMs` (performance.now()). */
export function fuzz(samples: readonly Sample[], o: { firstSeed: number; count: number; deadlineMs?: number; onFailure?: (f: FuzzOutcome) => void }): FuzzSummary {
  const registry = syntheticRegistry()
  const t0 = performance.now()
  const summary: FuzzSummary = { inputs: 0, accepted: 0, failures: [], slowest: undefined, totalMs: 0 }
  for (let i = 0; i < o.count && (o.deadlineMs === undefined || performance.now() < o.deadlineMs); i++) {
    const outcome = runInput(makeInput(samples, (o.firstSeed + i) >>> 0), registry)
    summary.inputs++
    if (outcome.accepted) summary.accepted++
    if (summary.slowest === undefined || outcome.ms > summary.slowest.ms) summary.slowest = outcome
    if (outcome.failure !== undefined) {
      summary.failures.push(outcome)
      o.onFailure?.(outcome)
    }
  }
  summary.totalMs = performance.now() - t0
  return summary
}

/** One line about an outcome, with the command that replays it. */
export function describeOutcome(o: FuzzOutcome): string {
  return `seed ${o.seed} (${o.sample} as ${o.format}, ${o.mutations.join('+') || 'unchanged'}): ${o.failure ?? `${o.ms.toFixed(0)} ms`}; replay: npm run fuzz -- --seed ${o.seed} --count 1`
}
