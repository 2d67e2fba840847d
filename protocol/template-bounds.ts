// Bounds and vocabularies of the Courier job template (protocol/template.ts re-exports them).
// Courier documents no bounds (FORMAT.md §9), so these are Chorus's own limits. Each says its
// unit: bytes (UTF-8), characters (UTF-16 code units, as String.length counts), items (array
// entries), entries (object keys), seconds, or a plain count.

// ---------------------------------------------------------------------------------------------
// Bounds.

/** Largest template text accepted by the parsers, in UTF-8 bytes. */
export const MAX_TEMPLATE_BYTES = 1024 * 1024
/** Template and step names, and other short labels, in characters. */
export const MAX_NAME_CHARS = 256
/** Template and step descriptions, in characters. */
export const MAX_DESCRIPTION_CHARS = 4096
/** `scheduleRule` and `exceptionRules[].rrule`, in characters. */
export const MAX_RRULE_CHARS = 1024
/** `exceptionRules`, in items. (A window's `duration` is bounded by MAX_EXCEPTION_DURATION_MINUTES, protocol/schedule.ts.) */
export const MAX_EXCEPTION_RULES = 64
/** `target.groups`, in items. */
export const MAX_GROUPS = 100
/** `successCriteria` of a group, in items. */
export const MAX_SUCCESS_CRITERIA = 16
/** `nodeIdentifiers` of a group, in items. */
export const MAX_NODE_IDENTIFIERS = 100_000
/** Node IDs, list and filter IDs, interpreter names, filter attribute names, in characters. */
export const MAX_IDENTIFIER_CHARS = 256
/** Entries in `filter.constraints.attributes` / `.skills`, in items. */
export const MAX_FILTER_CONSTRAINTS = 256
/** Values of one filter attribute or skill entry, in items. */
export const MAX_FILTER_VALUES = 1000
/** A filter attribute's `operator` (the longest valid one is "NOT MATCHES"), in characters. */
export const MAX_FILTER_OPERATOR_CHARS = 32
/** `batchSize.value` and `numRuns.value` when `type` is "number", in nodes. */
export const MAX_COUNT_VALUE = MAX_NODE_IDENTIFIERS
/** Group and step timeouts (and the other durations in seconds): 30 days, in seconds. */
export const MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
/** `actions.steps`, in items. */
export const MAX_STEPS = 100
/** Command lines per OS in a shell command, in items. */
export const MAX_COMMAND_LINES = 1000
/** Any single value: a command line, an input value, an expression, a condition value, in UTF-8 bytes. */
export const MAX_VALUE_BYTES = 64 * 1024
/** Entries in `inputs`, `expectedInputs`, `outputFieldRules`, `command.args`, in entries. */
export const MAX_MAP_ENTRIES = 256
/** Keys of maps (input and output names), in characters. */
export const MAX_KEY_CHARS = 128
/** An expected input's `type` (a label such as "string"), in characters. */
export const MAX_INPUT_TYPE_CHARS = 32
/** `conditions` of a step, in items. */
export const MAX_CONDITIONS = 64
/** `retryCount` of a step, in attempts after the first. */
export const MAX_RETRY_COUNT = 100
/** `retryBackoffStrategy.delaySeconds`: one day, in seconds. */
export const MAX_DELAY_SECONDS = 24 * 3600
/** `retryBackoffStrategy.arguments`, in items. */
export const MAX_BACKOFF_ARGUMENTS = 64
/** `interpreter.skill.minVersion` / `maxVersion`, in characters. */
export const MAX_VERSION_CHARS = 64
/** `limits.cores`, in CPU cores. */
export const MAX_LIMIT_CORES = 1024
/** `limits.cpu`, in CPUs' worth of time (1 = one full core). */
export const MAX_LIMIT_CPU = 1024
/** Free-form values (open objects, see protocol/template.ts): nesting depth, in levels. */
export const MAX_FREEFORM_DEPTH = 16
/** Free-form values: every nested value counts, in values. */
export const MAX_FREEFORM_NODES = 10_000
/** Problems reported for one free-form value before the rest are left out, in issues. */
export const MAX_FREEFORM_ISSUES = 10
/** `chorus.timeZone` (the longest IANA names are about 30), in characters. */
export const MAX_TIME_ZONE_CHARS = 64
/** `chorus.globalExceptions` when it lists ids, in items. */
export const MAX_GLOBAL_EXCEPTION_IDS = 64
/** `chorus.missed.max` of the catchUp policy, in occurrences run on return. */
export const MAX_CATCH_UP_OCCURRENCES = 1000
/** A value quoted in a message ("got ..."): longer ones are cut and their length given, in characters. */
export const MAX_QUOTED_VALUE_CHARS = 60
/** Object keys named in a message ("an object {a, b, ...}"), in keys. */
export const MAX_QUOTED_KEYS = 4
/** A UTF-16 code unit takes at most this many UTF-8 bytes: strings this short need no measuring, in bytes. */
export const MAX_UTF8_BYTES_PER_CHAR = 3

// ---------------------------------------------------------------------------------------------
// Enumerations (case-sensitive except EXTRACT_METHODS, FORMAT.md §10.6).

export const EXECUTION_TYPES = ['sequential', 'parallel'] as const
export const COUNT_TYPES = ['number', 'percent'] as const
export const DISTRIBUTION_METHODS = ['batching', 'rolling'] as const
export const RUN_STATUSES = ['success', 'failure'] as const
export const NODE_LIST_TYPES = ['nodes', 'savedList', 'savedFilter', 'filter'] as const
/** Accepted spellings that are normalised to a canonical NODE_LIST_TYPES value. */
export const NODE_LIST_TYPE_ALIASES = { node: 'nodes' } as const
/** Only `agent` is seen anywhere; Chorus runs every step through its agent. */
export const ACCESS_MODES = ['agent'] as const
export const SOURCE_TYPES = ['artifact', 'exitCode', 'file', 'output'] as const
export const EXTRACT_METHODS = ['regEx', 'jsonPath', 'content'] as const
export const CONDITION_OPERATORS = [
  'eq', 'gt', 'gte', 'lt', 'lte', 'matches', 'startsWith', 'endsWith', 'contains',
] as const
export const FAILURE_ACTIONS = ['retryThenFail', 'retryThenIgnore'] as const
export const BACKOFF_TYPES = ['none', 'linear', 'exponential', 'polynomial'] as const
export const SHELL_OS_KEYS = ['linux', 'windows', 'darwin'] as const
/** `filter.constraints.attributes[].operator` (case-insensitive; README "Job templates"). */
export const FILTER_OPERATORS = ['=', 'EQ', 'IN', '!=', 'NE', 'NOT IN', 'MATCHES', 'NOT MATCHES', 'STARTS_WITH', 'ENDS_WITH', 'CONTAINS', '>', '>=', '<', '<='] as const

export const SHELL_INTERPRETER = 'chef-platform/shell-interpreter'
/** Interpreters whose command is `{exec, args?}` (FORMAT.md §5). */
export const EXEC_INTERPRETERS = [
  'chef-platform/chef-client-interpreter',
  'chef-platform/inspec-interpreter',
  'chef-platform/restart-interpreter',
] as const

export const ZERO_UUID = '00000000-0000-0000-0000-000000000000'

export const NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/
/** `{{.NAME}}` / `{{ .NAME }}` in commands and inputs (agent/steps.ts substitutes them). */
export const PLACEHOLDER = /\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g
export const INTERPRETER_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)+$/
export const VERSION_PATTERN = /^[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.+-]+)?$/
export const RRULE_PATTERN = /^RRULE:[A-Z]+=[^;\s]+(;[A-Z]+=[^;\s]+)*$/
