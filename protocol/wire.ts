// Wire messages of protocol version 1. Every message travels inside a signed envelope; the
// envelope's body is the canonical JSON of exactly one of the bodies below, discriminated on
// `type`. Every string, array and payload is bounded, and the bound is named here.
import { z } from 'zod'
import { canonicalJson } from './canonical.js'
import { signBytes, verifyBytes, type Identity } from './keys.js'
import { JobTemplateSchema } from './template.js'
import { REASON_CODES } from './reasons.js'

export const PROTOCOL_VERSION = 1
/** Largest envelope we accept or send: gossipsub drops messages over ~4 MiB silently, so stay well below. */
export const MAX_ENVELOPE_BYTES = 2 * 1024 * 1024
export const MAX_ID_CHARS = 128
export const MAX_TARGET_NODES = 100_000
export const MAX_STEP_OUTPUT_CHARS = 16 * 1024
export const MAX_OUTPUT_VALUE_CHARS = 16 * 1024
export const MAX_OUTPUTS_PER_STEP = 64
export const MAX_REASON_CHARS = 1024
export const MAX_STEPS_PER_RUN = 100
/** Per hello: facts (and configured attributes), each value's characters, and all keys and values together. */
export const MAX_FACTS = 128
export const MAX_FACT_CHARS = 1024
export const MAX_FACTS_TOTAL_CHARS = 16 * 1024
/** Skills a hello may list (interpreters), each with at most 8 versions. */
export const MAX_SKILLS = 64
export const MAX_ACK_RUN_IDS = 1000
export const MAX_SYNC_JOBS = 256
export const MAX_CANCELED_OCCURRENCES = 1000
export const MAX_GLOBAL_EXCEPTIONS = 64
export const MAX_PEERS_SHARED = 8
export const MAX_ADDRS_PER_PEER = 4
/** Attributes an enrolment token fixes for the nodes it enrols. */
export const MAX_FIXED_ATTRIBUTES = 32
/** Revoked nodes one signed revocation list carries (entries older than a certificate's lifetime are dropped: their certificates have expired). */
export const MAX_REVOKED = 10_000
/** Longest pause an overloaded coordinator may ask of an agent (`retryAfterMs` in a reply). */
export const MAX_RETRY_AFTER_MS = 60_000
/** Characters of an enrolment token (a prefix and 43 base64url characters). */
export const MAX_ENROLL_TOKEN_CHARS = 128

export const TOPIC_JOBS = 'chorus/jobs/v1'
/** Rollout progress between agents (acks, starts, leases, dones) of jobs that gate on each other. */
export const TOPIC_PROGRESS = 'chorus/progress/v1'
/** Checkpoints in one reply, and gated runs a sync request reports. */
export const MAX_CHECKPOINTS_IN_REPLY = 16
export const MAX_GATED_IN_SYNC = 64
/** Targets up to which an ungated definition carries every target's ticket (about 330 bytes each: ≤ ~21 KB). */
export const MAX_INLINE_TICKETS = 64
/**
 * A definition of more than MAX_INLINE_TICKETS targets lists each group's targets in rollout
 * order (its roster), so a target learns its place from the definition alone instead of asking
 * for its ticket, up to this many targets and this many bytes of ids (each id's length + 3:
 * quotes and a comma; ~1,400 ids of 20 characters). The coordinator publishes one copy to each
 * target it is connected to: at most 2,000 × 32 KiB (62.5 MiB) in flight for one definition. A
 * longer roster would cost the publisher and every target more than the round trips it saves.
 */
export const MAX_ROSTER_TARGETS = 2_000
export const MAX_ROSTER_BYTES = 32 * 1024
/** Agents from this version read a definition's roster (older ones refuse a definition with one: they get tickets). */
export const ROSTER_AGENT_VERSION = '0.2.0'
/**
 * Agents from this version read a definition's schema fingerprint (older ones refuse a
 * definition with one: it is left out unless every target runs this version or later).
 */
export const SCHEMA_AGENT_VERSION = '0.3.0'
/**
 * Raised by hand whenever what JobBodySchema accepts changes in a way its JSON Schema does not
 * show (a refinement, a transform); the JSON Schema part is pinned by test/fingerprint.test.ts.
 */
export const JOB_SCHEMA_REVISION = 1
/**
 * The fingerprint of JobBodySchema: the first 22 characters of the base64url SHA-256 of
 * `${JOB_SCHEMA_REVISION}:` and z.toJSONSchema(JobBodySchema, { unrepresentable: 'any', io:
 * 'input' }) as JSON (test/fingerprint.test.ts recomputes it; a literal, so that no agent computes
 * it at start). A coordinator that validated a definition with this schema says so in it
 * (`schema`), under its signature; an agent with the same fingerprint that verified that
 * signature checks the body's shape cheaply instead of parsing it with zod again (trustedJobBody).
 */
export const JOB_SCHEMA_FINGERPRINT = 'owZeZtXuwd3Ofihy1aH65s'
export const PROTOCOL_RPC = '/chorus/rpc/1.0.0'
/** The same requests and replies, many over one long-lived stream per peer (net/rpc-mux.ts). */
export const PROTOCOL_RPC_MUX = '/chorus/rpc/2.0.0'

const id = z.string().min(1).max(MAX_ID_CHARS).regex(/^[A-Za-z0-9._:@-]+$/, 'expected letters, digits and . _ : @ - only')
const publicKey = z.string().length(43)
const ms = z.number().int().nonnegative()

export const SignedEnvelopeSchema = z.object({
  v: z.literal(PROTOCOL_VERSION),
  /** base64url raw ed25519 public key of the signer */
  signer: publicKey,
  /** base64url ed25519 signature over the UTF-8 bytes of `body` */
  sig: z.string().length(86),
  /** canonical JSON of one WireBody */
  body: z.string().max(MAX_ENVELOPE_BYTES),
}).strict()
export type SignedEnvelope = z.infer<typeof SignedEnvelopeSchema>

export const ResolvedGroupSchema = z.object({
  /** Nodes in this group at submit time. */
  size: z.number().int().min(0).max(MAX_TARGET_NODES),
  /**
   * The roster: the group's node ids in rollout order (a node's position is its index), when the
   * definition has more than MAX_INLINE_TICKETS targets, at most MAX_ROSTER_BYTES of ids, and every
   * target runs an agent of ROSTER_AGENT_VERSION or later. Otherwise who the targets are is not in
   * the definition: each node learns its own place from its ticket.
   */
  nodes: z.array(id).max(MAX_ROSTER_TARGETS).optional(),
}).strict().refine((g) => g.nodes === undefined || g.nodes.length === g.size, { message: 'a roster lists exactly size node ids', path: ['nodes'] })

export const JobBodySchema = z.object({
  type: z.literal('job'),
  v: z.literal(PROTOCOL_VERSION),
  jobId: id,
  /** Coordinator clock when the definition was signed (ms since epoch). */
  issuedAt: ms,
  /** Agents drop the definition after this time: a bound on replays of old messages. */
  expiresAt: ms,
  template: JobTemplateSchema,
  /**
   * Targets resolved by the coordinator at submit time, one entry per template group: only
   * the sizes (percent batches and criteria need them), so a definition is O(groups) bytes
   * whatever the fleet size. Each target learns its group and position from its ticket.
   */
  resolved: z.object({
    groups: z.array(ResolvedGroupSchema).max(100),
    /**
     * Small ungated jobs (at most MAX_INLINE_TICKETS targets, all registered) carry every
     * target's ticket, so a target knows its place from the definition alone, without a round trip.
     */
    tickets: z.array(SignedEnvelopeSchema).max(MAX_INLINE_TICKETS).optional(),
  }).strict(),
  /**
   * JOB_SCHEMA_FINGERPRINT of the coordinator that validated this definition, when every target
   * runs an agent of SCHEMA_AGENT_VERSION or later (older agents refuse the field).
   */
  schema: z.string().length(22).optional(),
}).strict()
export type JobBody = z.infer<typeof JobBodySchema>

/**
 * A node's place in a job, signed by the coordinator: its group and position in the group's
 * deterministic rollout order (sorted node ids), and the key it registered with, or `place:
 * null` when the job does not target it. Agents fetch their own ticket in a sync reply and
 * attach it to the progress they gossip, so any target can check a peer's place and key.
 */
export const TicketBodySchema = z.object({
  type: z.literal('ticket'),
  v: z.literal(PROTOCOL_VERSION),
  jobId: id,
  nodeId: id,
  key: publicKey,
  place: z.object({ group: z.number().int().min(0).max(99), position: z.number().int().min(0).max(MAX_TARGET_NODES) }).strict().nullable(),
  issuedAt: ms,
}).strict()
export type TicketBody = z.infer<typeof TicketBodySchema>

/**
 * The coordinator's aggregate of one gated instance's progress, per group (in group order):
 * lower bounds an agent can gate on without hearing from every other target. `done` counts
 * runs that ended (or, release policy, whose holder the coordinator released) and
 * `succeeded` those that succeeded; every position below `prefix` is done; no position at or
 * above `frontier` has started or finished as far as the coordinator knows. O(groups) bytes.
 */
export const CheckpointGroupSchema = z.object({
  acked: z.number().int().min(0),
  done: z.number().int().min(0),
  succeeded: z.number().int().min(0),
  prefix: z.number().int().min(0),
  frontier: z.number().int().min(0),
}).strict()
export type CheckpointGroup = z.infer<typeof CheckpointGroupSchema>

export const CheckpointBodySchema = z.object({
  type: z.literal('checkpoint'),
  v: z.literal(PROTOCOL_VERSION),
  jobId: id,
  instanceId: id,
  occurrenceAt: ms,
  /** Increases with every change, across coordinator restarts (a timestamp in µs, or the last + 1): agents keep the highest. */
  seq: z.number().int().min(1),
  groups: z.array(CheckpointGroupSchema).max(100),
  issuedAt: ms,
}).strict()
export type CheckpointBody = z.infer<typeof CheckpointBodySchema>

export const FactsSchema = z.record(z.string().max(128), z.string().max(MAX_FACT_CHARS))
  .refine((r) => Object.keys(r).length <= MAX_FACTS, `at most ${MAX_FACTS} facts`)
  .refine((r) => Object.entries(r).reduce((n, [k, v]) => n + k.length + v.length, 0) <= MAX_FACTS_TOTAL_CHARS, `facts and attributes total at most ${MAX_FACTS_TOTAL_CHARS} characters`)

/**
 * A node's membership certificate, signed by the coordinator when the node enrols and renewed
 * while it is connected: its node id, its key, and the attributes its enrolment token fixed.
 * Agents admit a peer to the mesh only when it presents a valid certificate for the key its
 * connection proved (noise), not expired and not revoked: the check needs no coordinator.
 */
export const MemberBodySchema = z.object({
  type: z.literal('member'),
  v: z.literal(PROTOCOL_VERSION),
  nodeId: id,
  key: publicKey,
  attributes: z.record(z.string().max(128), z.string().max(MAX_FACT_CHARS)).refine((r) => Object.keys(r).length <= MAX_FIXED_ATTRIBUTES, `at most ${MAX_FIXED_ATTRIBUTES} attributes`),
  issuedAt: ms,
  expiresAt: ms,
}).strict()
export type MemberBody = z.infer<typeof MemberBodySchema>

/** The coordinator's list of revoked nodes, versioned like job states: agents keep the highest and drop those peers. */
export const RevocationsBodySchema = z.object({
  type: z.literal('revocations'),
  v: z.literal(PROTOCOL_VERSION),
  version: z.number().int().min(1),
  nodes: z.array(z.object({ nodeId: id, key: publicKey, at: ms }).strict()).max(MAX_REVOKED),
  issuedAt: ms,
}).strict()
export type RevocationsBody = z.infer<typeof RevocationsBodySchema>

/**
 * The mutable part of a job, versioned: the coordinator signs a new state for every change
 * (cancellation, a global exception added or removed) and agents keep the highest version.
 * It reaches agents by gossip, in sync replies, and from peers.
 */
export const JobStateBodySchema = z.object({
  type: z.literal('job_state'),
  v: z.literal(PROTOCOL_VERSION),
  jobId: id,
  version: z.number().int().min(1),
  status: z.enum(['active', 'canceled']),
  /** Occurrence times (ms) canceled before they ran or while their runs were pending. */
  canceledOccurrences: z.array(ms).max(MAX_CANCELED_OCCURRENCES),
  /** Global exception windows this job opted into, as they stand at this version. */
  globalExceptions: z.array(z.object({ id, rrule: z.string().max(1024), duration: z.number().int().min(1) }).strict()).max(MAX_GLOBAL_EXCEPTIONS),
  issuedAt: ms,
}).strict()
export type JobStateBody = z.infer<typeof JobStateBodySchema>

export const PeerInfoSchema = z.object({
  peerId: z.string().max(128),
  addrs: z.array(z.string().max(256)).max(MAX_ADDRS_PER_PEER),
}).strict()
export type PeerInfo = z.infer<typeof PeerInfoSchema>

export const HelloBodySchema = z.object({
  type: z.literal('hello'),
  v: z.literal(PROTOCOL_VERSION),
  nodeId: id,
  peerId: z.string().max(128),
  /** Where other agents can reach this one (for the agent mesh). */
  addrs: z.array(z.string().max(256)).max(MAX_ADDRS_PER_PEER).default([]),
  facts: FactsSchema,
  /** Installed skills (interpreters) and their versions. */
  skills: z.record(z.string().max(128), z.array(z.string().max(64)).max(8)).refine((r) => Object.keys(r).length <= MAX_SKILLS, `at most ${MAX_SKILLS} skills`).default({}),
  agentVersion: z.string().max(64),
  sentAt: ms,
  /** A node that is not enrolled yet presents the enrolment token an admin gave it (the connection is noise-encrypted to the pinned coordinator). */
  enrollToken: z.string().max(MAX_ENROLL_TOKEN_CHARS).optional(),
}).strict()
export type HelloBody = z.infer<typeof HelloBodySchema>

export const RunStatusSchema = z.enum(['pending', 'running', 'success', 'failure', 'timeout', 'skipped'])
export type RunStatus = z.infer<typeof RunStatusSchema>
export const StepStatusSchema = z.enum(['success', 'failure', 'skipped', 'not_run'])
export type StepStatus = z.infer<typeof StepStatusSchema>

/** Evidence carried in a result: per artifact and per run (later artifacts are cut when the run's budget is spent). */
export const MAX_REPORTED_ARTIFACT_CHARS = 64 * 1024
export const MAX_RESULT_ARTIFACT_CHARS = 512 * 1024

/** Characters of an artifact's name, of a step's name in a result, and artifacts per step. */
export const MAX_ARTIFACT_NAME_CHARS = 128
export const MAX_STEP_NAME_CHARS = 256
export const MAX_ARTIFACTS_PER_STEP = 8

export const ArtifactSchema = z.object({
  name: z.string().min(1).max(MAX_ARTIFACT_NAME_CHARS),
  encoding: z.enum(['utf8', 'base64']),
  /** Size of the file the interpreter attached. */
  bytes: z.number().int().min(0),
  content: z.string().max(MAX_REPORTED_ARTIFACT_CHARS),
  /** The content was cut to fit MAX_REPORTED_ARTIFACT_CHARS or the run's budget. */
  truncated: z.boolean(),
}).strict()
export type Artifact = z.infer<typeof ArtifactSchema>

/** Attempts kept per step in a result (the latest ones). */
export const MAX_ATTEMPT_LOG = 20

export const AttemptRecordSchema = z.object({
  attempt: z.number().int().min(1),
  status: z.enum(['success', 'failure']),
  exitCode: z.number().int().nullable(),
  startedAt: ms,
  finishedAt: ms,
}).strict()
export type AttemptRecord = z.infer<typeof AttemptRecordSchema>

export const StepOutcomeSchema = z.object({
  number: z.number().int().min(1).max(MAX_STEPS_PER_RUN),
  name: z.string().max(MAX_STEP_NAME_CHARS),
  status: StepStatusSchema,
  attempts: z.number().int().min(0).max(1000),
  exitCode: z.number().int().nullable(),
  outputs: z.record(z.string().max(128), z.string().max(MAX_OUTPUT_VALUE_CHARS))
    .refine((r) => Object.keys(r).length <= MAX_OUTPUTS_PER_STEP, `at most ${MAX_OUTPUTS_PER_STEP} outputs`),
  stdout: z.string().max(MAX_STEP_OUTPUT_CHARS),
  stderr: z.string().max(MAX_STEP_OUTPUT_CHARS),
  reason: z.string().max(MAX_REASON_CHARS).optional(),
  startedAt: ms.optional(),
  finishedAt: ms.optional(),
  /** Every attempt that ran, oldest first (at most MAX_ATTEMPT_LOG, the latest). */
  attemptLog: z.array(AttemptRecordSchema).max(MAX_ATTEMPT_LOG).optional(),
  /** Evidence the step attached (last attempt), bounded. */
  artifacts: z.array(ArtifactSchema).max(MAX_ARTIFACTS_PER_STEP).optional(),
}).strict()
export type StepOutcome = z.infer<typeof StepOutcomeSchema>

export const ResultBodySchema = z.object({
  type: z.literal('result'),
  v: z.literal(PROTOCOL_VERSION),
  runId: id,
  jobId: id,
  instanceId: id,
  nodeId: id,
  /** The occurrence this run belongs to (instanceId derives from jobId and it). */
  occurrenceAt: ms,
  group: z.number().int().min(0),
  batch: z.number().int().min(0),
  /** skipped: the run was not performed (missed while the agent was down, canceled, distribution stopped, quorum failed); the reason says which. */
  status: z.enum(['success', 'failure', 'skipped']),
  reason: z.string().max(MAX_REASON_CHARS).optional(),
  /** Why, as a code (protocol/reasons.ts): what control flow and checks look at. */
  reasonCode: z.enum(REASON_CODES).optional(),
  startedAt: ms,
  finishedAt: ms,
  steps: z.array(StepOutcomeSchema).max(MAX_STEPS_PER_RUN),
}).strict()
export type ResultBody = z.infer<typeof ResultBodySchema>

/**
 * One agent's progress on one instance, gossiped to the other targets of a gated rollout
 * (batches, sequential groups, quorum). ack: the node holds the job and will take part;
 * start: it took its turn (leaseUntil: how long its slot is held without renewal);
 * renew: it still holds the slot; done: its run ended with `status`.
 */
export const ProgressBodySchema = z.object({
  type: z.literal('progress'),
  v: z.literal(PROTOCOL_VERSION),
  jobId: id,
  instanceId: id,
  occurrenceAt: ms,
  nodeId: id,
  event: z.enum(['ack', 'start', 'renew', 'done']),
  status: z.enum(['success', 'failure', 'skipped']).optional(),
  leaseUntil: ms.optional(),
  at: ms,
  /** The sender's ticket (coordinator-signed place and key): attached when gossiped to peers. */
  ticket: SignedEnvelopeSchema.optional(),
}).strict()
export type ProgressBody = z.infer<typeof ProgressBodySchema>

export const SyncRequestBodySchema = z.object({
  type: z.literal('sync'),
  v: z.literal(PROTOCOL_VERSION),
  nodeId: id,
  sentAt: ms,
  /** Jobs the node holds, with the job-state version it has (0: none) and whether it holds its ticket: the reply leaves those out. */
  known: z.array(z.object({ jobId: id, version: z.number().int().min(0), ticket: z.boolean().default(true) }).strict()).max(256).default([]),
  /** The node's gated runs not yet finished (waiting: acknowledged; running: holds its slot until leaseUntil). */
  gated: z.array(z.object({ instanceId: id, jobId: id, occurrenceAt: ms, state: z.enum(['waiting', 'running']), leaseUntil: ms.optional(), seq: z.number().int().min(0).optional() }).strict()).max(MAX_GATED_IN_SYNC).default([]),
  /** Hold the reply until a newer checkpoint decides one of the waiting runs (or a few seconds pass). */
  watch: z.boolean().default(false),
  /** When the node's membership certificate expires (0: it has none): the reply renews it when due. */
  certExpiresAt: ms.default(0),
  /** The revocation list version the node holds: the reply carries a newer one. */
  revocations: z.number().int().min(0).default(0),
}).strict()
export type SyncRequestBody = z.infer<typeof SyncRequestBodySchema>

/** Coordinator → agent answer to an rpc request; signed like everything else. */
export const ReplyBodySchema = z.object({
  type: z.literal('reply'),
  v: z.literal(PROTOCOL_VERSION),
  ok: z.boolean(),
  error: z.string().max(MAX_REASON_CHARS).optional(),
  /** results the coordinator has stored durably and the agent may forget */
  ackRunIds: z.array(id).max(MAX_ACK_RUN_IDS).default([]),
  /** job definitions and job states (coordinator-signed envelopes) the node should know about */
  jobs: z.array(SignedEnvelopeSchema).max(MAX_SYNC_JOBS).default([]),
  /** a few other agents to connect to, so the mesh holds without the coordinator */
  peers: z.array(PeerInfoSchema).max(MAX_PEERS_SHARED).default([]),
  /** the node's tickets for the jobs it holds without one, or is sent here (coordinator-signed envelopes) */
  tickets: z.array(SignedEnvelopeSchema).max(MAX_SYNC_JOBS).default([]),
  /** checkpoints of live gated instances that target the node (coordinator-signed envelopes) */
  checkpoints: z.array(SignedEnvelopeSchema).max(MAX_CHECKPOINTS_IN_REPLY).default([]),
  /** The node's membership certificate, on enrolment and when it is due for renewal. */
  certificate: SignedEnvelopeSchema.optional(),
  /** The coordinator's revocation list, when newer than the node's. */
  revocations: SignedEnvelopeSchema.optional(),
  /** An enrolment waits for an admin's approval (`chorus nodes approve`): ask again later. */
  pending: z.boolean().optional(),
  /** The coordinator sheds load: send nothing to it for this long (jittered by the coordinator). */
  retryAfterMs: z.number().int().min(1).max(MAX_RETRY_AFTER_MS).optional(),
}).strict()
export type ReplyBody = z.infer<typeof ReplyBodySchema>

export const WireBodySchema = z.discriminatedUnion('type', [MemberBodySchema, RevocationsBodySchema, JobBodySchema, JobStateBodySchema, TicketBodySchema, CheckpointBodySchema, HelloBodySchema, ResultBodySchema, SyncRequestBodySchema, ReplyBodySchema, ProgressBodySchema])
export type WireBody = z.infer<typeof WireBodySchema>
export type WireBodyInput = z.input<typeof WireBodySchema>

export function seal(identity: Identity, body: WireBodyInput): SignedEnvelope {
  const text = canonicalJson(body)
  return { v: PROTOCOL_VERSION, signer: identity.publicKey, sig: signBytes(identity, Buffer.from(text, 'utf8')), body: text }
}

export type OpenResult =
  | { ok: true; body: WireBody; signer: string }
  | { ok: false; reason: string }

/**
 * Verifies an envelope and parses its body. `trusted`, when given, lists the only signers
 * accepted. Never throws: a bad message is an operating error and comes back as a reason.
 */
/**
 * Verified and parsed envelopes, by signature: the same definition reaching many cores in one
 * process (the simulator; several agents per process) is verified and parsed once and its
 * parsed body shared. Callers must treat bodies as immutable. Bounded (OPEN_CACHE_MAX, LRU).
 */
const openCache = new Map<string, { signer: string; body: string; result: OpenResult }>()
/** Whether an open() was asked to trust its signer's schema fingerprint (openFromCoordinator), for the cache. */
type Trust = 'schema' | 'none'
export const OPEN_CACHE_MAX = 1024
const ONCE_TYPES = new Set(['result', 'sync', 'hello', 'progress'])

export function open(envelope: unknown, trusted?: readonly string[]): OpenResult {
  return openTrusting(envelope, trusted, 'none')
}

/**
 * open() for what the coordinator whose key this agent pins sends it (definitions, job states,
 * revocations): a definition that carries this build's JOB_SCHEMA_FINGERPRINT, signed by that
 * key, was validated by the coordinator with the same schema, so its signature is verified and
 * its shape checked (trustedJobBody) without zod; anything else is parsed as open() does.
 */
export function openFromCoordinator(envelope: unknown, coordinatorKey: string): OpenResult {
  return openTrusting(envelope, [coordinatorKey], 'schema')
}

function openTrusting(envelope: unknown, trusted: readonly string[] | undefined, trust: Trust): OpenResult {
  const env = SignedEnvelopeSchema.safeParse(envelope)
  if (!env.success) return { ok: false, reason: `malformed envelope: ${env.error.issues[0]?.path.join('.')}: ${env.error.issues[0]?.message}` }
  const { signer, sig, body } = env.data
  if (trusted && !trusted.includes(signer)) return { ok: false, reason: `signed by untrusted key ${signer}` }
  const cached = openCache.get(sig)
  if (cached && cached.signer === signer && cached.body === body) {
    openCache.delete(sig)
    openCache.set(sig, cached)
    return cached.result
  }
  const result = openUncached(signer, sig, body, trust)
  // Only what many cores (or one, again and again) open: definitions, states, tickets, checkpoints,
  // replies. A result, sync, hello or progress message is opened once; caching it would only evict those.
  if (result.ok && !ONCE_TYPES.has(result.body.type)) {
    if (openCache.size >= OPEN_CACHE_MAX) openCache.delete(openCache.keys().next().value!)
    openCache.set(sig, { signer, body, result })
  }
  return result
}

/**
 * Parses an envelope whose author something else already proved: a request on a connection
 * whose noise handshake proved the signer's key (the peer id derived from `signer`), or a ticket
 * inside a job definition whose own signature was verified. The body is checked like open()
 * does; the signature is not verified again.
 */
export function openFromAuthenticatedPeer(envelope: unknown, signer: string): OpenResult {
  const env = SignedEnvelopeSchema.safeParse(envelope)
  if (!env.success) return { ok: false, reason: `malformed envelope: ${env.error.issues[0]?.path.join('.')}: ${env.error.issues[0]?.message}` }
  if (env.data.signer !== signer) return { ok: false, reason: 'signed by another key than the connection\'s' }
  return parseBody(env.data.signer, env.data.body)
}

function openUncached(signer: string, sig: string, body: string, trust: Trust = 'none'): OpenResult {
  if (!verifyBytes(signer, Buffer.from(body, 'utf8'), sig)) return { ok: false, reason: 'bad signature (tampered or corrupted)' }
  return parseBody(signer, body, trust)
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isMs = (v: unknown): boolean => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0

/**
 * The cheap path of a definition the pinned coordinator signed with this build's schema
 * fingerprint: the coordinator parsed its template with JobTemplateSchema and built the rest
 * from its own state, so the body is what zod would return (test/fingerprint.test.ts checks the
 * two agree on every example). Only its shape is checked, what the agent core reaches into
 * before anything else: a body that fails goes through zod, which names the field.
 */
export function trustedJobBody(json: unknown): JobBody | undefined {
  if (!isObject(json) || json.type !== 'job' || json.v !== PROTOCOL_VERSION || json.schema !== JOB_SCHEMA_FINGERPRINT) return undefined
  if (typeof json.jobId !== 'string' || !isMs(json.issuedAt) || !isMs(json.expiresAt)) return undefined
  const t = json.template
  const r = json.resolved
  if (!isObject(t) || !isObject(r) || !isObject(t.actions) || !isObject(t.target) || typeof t.scheduleRule !== 'string') return undefined
  const steps = t.actions.steps
  const groups = t.target.groups
  if (!Array.isArray(steps) || steps.length === 0 || !steps.every(isObject) || !Array.isArray(groups) || !groups.every(isObject)) return undefined
  if (!Array.isArray(r.groups) || r.groups.length !== groups.length || !r.groups.every(isObject)) return undefined
  if (r.tickets !== undefined && !Array.isArray(r.tickets)) return undefined
  return json as unknown as JobBody
}

function parseBody(signer: string, body: string, trust: Trust = 'none'): OpenResult {
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch {
    return { ok: false, reason: 'body is not JSON' }
  }
  if (trust === 'schema') {
    const job = trustedJobBody(json)
    if (job) return { ok: true, body: job, signer }
  }
  const parsed = WireBodySchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    return { ok: false, reason: `invalid body: ${issue?.path.join('.') || '$'}: ${issue?.message}` }
  }
  return { ok: true, body: parsed.data, signer }
}

export function encodeEnvelope(envelope: SignedEnvelope): Uint8Array {
  return Buffer.from(JSON.stringify(envelope), 'utf8')
}

export function decodeEnvelope(bytes: Uint8Array): unknown {
  if (bytes.byteLength > MAX_ENVELOPE_BYTES + 1024) throw new Error(`message of ${bytes.byteLength} bytes exceeds MAX_ENVELOPE_BYTES`)
  return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'))
}
