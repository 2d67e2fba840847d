// Where: the template's target (`target.groups`: batch sizes, success criteria, node lists and
// filters).
import { z } from 'zod'
import { parseVersionConstraint } from './version.js'
import { MAX_QUERY_CHARS, parseQuery } from './query.js'
import {
  COUNT_TYPES, DISTRIBUTION_METHODS, EXECUTION_TYPES, FILTER_OPERATORS, MAX_COUNT_VALUE, MAX_FILTER_CONSTRAINTS, MAX_FILTER_OPERATOR_CHARS, MAX_FILTER_VALUES, MAX_GROUPS,
  MAX_IDENTIFIER_CHARS, MAX_NAME_CHARS, MAX_NODE_IDENTIFIERS, MAX_SUCCESS_CRITERIA, MAX_TIMEOUT_SECONDS, NODE_LIST_TYPES, NODE_LIST_TYPE_ALIASES, RUN_STATUSES, ZERO_UUID,
} from './template-bounds.js'
import { boundedArray, bigText, checkFreeform, closedObject, int, isObjectLike, oneOf, refusePattern, text, whenObject } from './template-fields.js'
import { describeValue, expectOneOf, got } from './template-messages.js'

// ---------------------------------------------------------------------------------------------
// Target.

function countSchema(what: string, minValue: number) {
  return closedObject({ type: oneOf(COUNT_TYPES), value: int(minValue, MAX_COUNT_VALUE) }, what).superRefine((v, ctx) => {
    if (v.type === 'percent' && typeof v.value === 'number' && v.value > 100) {
      ctx.addIssue({ code: 'custom', path: ['value'], input: v.value, message: `got ${v.value}; expected at most 100 when type is "percent"` })
    }
  }, whenObject)
}

export const BatchSizeSchema = countSchema('a batch size object {type, value}', 1)

export const SuccessCriterionSchema = closedObject(
  {
    numRuns: countSchema('a run count object {type, value}', 0),
    status: oneOf(RUN_STATUSES),
  },
  'a success criterion object {numRuns, status}',
)

export const FilterAttributeSchema = closedObject(
  {
    name: text({ min: 1, max: MAX_IDENTIFIER_CHARS }),
    operator: text({ min: 1, max: MAX_FILTER_OPERATOR_CHARS }),
    value: boundedArray(bigText(), MAX_FILTER_VALUES, 1, 'an array of strings'),
  },
  'a filter attribute object {name, operator, value}',
).superRefine((a, ctx) => {
  if (typeof a.operator !== 'string') return
  const op = a.operator.trim().toUpperCase().replace(/\s+/g, ' ')
  if (!(FILTER_OPERATORS as readonly string[]).includes(op)) {
    ctx.addIssue({ code: 'custom', path: ['operator'], input: a.operator, message: `got ${describeValue(a.operator)}; ${expectOneOf(FILTER_OPERATORS)} (case-insensitive)` })
  } else if ((op === 'MATCHES' || op === 'NOT MATCHES') && Array.isArray(a.value)) {
    a.value.forEach((v: unknown, j: number) => { if (typeof v === 'string') refusePattern(ctx, ['value', j], v) })
  }
}, whenObject)

export const FilterSkillSchema = closedObject(
  {
    name: text({ min: 1, max: MAX_IDENTIFIER_CHARS }),
    version: boundedArray(text({ min: 1, max: MAX_NAME_CHARS }), MAX_FILTER_VALUES, 0, 'an array of version constraints'),
  },
  'a filter skill object {name, version}',
).superRefine((k, ctx) => {
  if (!Array.isArray(k.version)) return
  k.version.forEach((v: unknown, j: number) => {
    const parsed = typeof v === 'string' ? parseVersionConstraint(v) : []
    if ('error' in parsed) ctx.addIssue({ code: 'custom', path: ['version', j], input: v, message: `got ${describeValue(v)}: ${parsed.error}; expected e.g. ">= 1.2", "= 0.1.0", "~> 18.2", "4.x"` })
  })
}, whenObject)

export const FilterConstraintsSchema = closedObject(
  {
    attributes: boundedArray(FilterAttributeSchema, MAX_FILTER_CONSTRAINTS).default([]),
    skills: boundedArray(FilterSkillSchema, MAX_FILTER_CONSTRAINTS).default([]),
  },
  'a constraints object {attributes, skills}',
)

/** Chorus extension `filter.query`: a search query (protocol/query.ts). */
const FilterQuerySchema = text({ min: 1, max: MAX_QUERY_CHARS, expected: 'a search query such as "role:webapp AND env:prod"' }).superRefine((q, ctx) => {
  const parsed = parseQuery(q)
  if (!parsed.ok) ctx.addIssue({ code: 'custom', input: q, message: `got ${describeValue(q)}: ${parsed.message}` })
})

/** Node Management query. Its root is open (see the header); `constraints` is closed. */
export const NodeFilterSchema = z
  .looseObject(
    { constraints: FilterConstraintsSchema.optional(), query: FilterQuerySchema.optional() },
    { error: (iss) => (iss.code === 'invalid_type' ? `${got(iss.input)}; expected a filter object {constraints, query} or null` : undefined) },
  )
  .superRefine((v, ctx) => {
    const rest: Record<string, unknown> = {}
    for (const [k, item] of Object.entries(v)) if (k !== 'constraints' && k !== 'query') rest[k] = item
    checkFreeform(rest, ctx)
  })

const nodeListType = z
  .enum([...NODE_LIST_TYPES, ...(Object.keys(NODE_LIST_TYPE_ALIASES) as (keyof typeof NODE_LIST_TYPE_ALIASES)[])], {
    error: (iss) => `${got(iss.input)}; ${expectOneOf(NODE_LIST_TYPES)}`,
  })
  .transform((v): (typeof NODE_LIST_TYPES)[number] => (v in NODE_LIST_TYPE_ALIASES ? NODE_LIST_TYPE_ALIASES[v as keyof typeof NODE_LIST_TYPE_ALIASES] : (v as (typeof NODE_LIST_TYPES)[number])))

function isUnsetId(v: unknown): boolean {
  return v === undefined || v === '' || v === ZERO_UUID
}

export const GroupSchema = closedObject(
  {
    timeoutSeconds: int(1, MAX_TIMEOUT_SECONDS),
    batchSize: BatchSizeSchema,
    distributionMethod: oneOf(DISTRIBUTION_METHODS),
    successCriteria: boundedArray(SuccessCriterionSchema, MAX_SUCCESS_CRITERIA, 1, 'an array of success criteria'),
    earlyTermination: z.boolean().default(false),
    nodeListType,
    nodeIdentifiers: boundedArray(text({ min: 1, max: MAX_IDENTIFIER_CHARS }), MAX_NODE_IDENTIFIERS, 0, 'an array of node identifiers').default([]),
    listId: text({ max: MAX_IDENTIFIER_CHARS, expected: 'a saved node list ID (string)' }).optional(),
    filterId: text({ max: MAX_IDENTIFIER_CHARS, expected: 'a saved filter ID (string)' }).optional(),
    filter: NodeFilterSchema.nullable().default(null),
  },
  'a group object {timeoutSeconds, batchSize, distributionMethod, successCriteria, nodeListType, ...}',
).superRefine((g, ctx) => {
  // The selector named by nodeListType must be present (FORMAT.md §10.9). Server fill-ins for
  // unused selectors (filter: null, zero UUIDs) are tolerated. Wrongly typed fields have been
  // reported already, so only missing/empty ones are reported here.
  const raw = g as Record<string, unknown>
  const type = raw.nodeListType === 'node' ? 'nodes' : raw.nodeListType
  switch (type) {
    case 'nodes': {
      const ids = raw.nodeIdentifiers
      if (ids === undefined || (Array.isArray(ids) && ids.length === 0)) {
        ctx.addIssue({ code: 'custom', path: ['nodeIdentifiers'], input: ids, message: `${got(ids)}; expected a non-empty list of node IDs because nodeListType is "nodes"` })
      } else if (Array.isArray(ids)) {
        const seen = new Map<unknown, number>()
        ids.forEach((id, i) => {
          const first = seen.get(id)
          if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['nodeIdentifiers', i], input: id, message: `got duplicate node ID ${describeValue(id)} (also at [${first}]); expected each node once` })
          else seen.set(id, i)
        })
      }
      break
    }
    case 'savedList':
      if (isUnsetId(raw.listId)) {
        ctx.addIssue({ code: 'custom', path: ['listId'], input: raw.listId, message: `${got(raw.listId)}; expected the ID of a saved node list because nodeListType is "savedList"` })
      }
      break
    case 'savedFilter':
      if (isUnsetId(raw.filterId)) {
        ctx.addIssue({ code: 'custom', path: ['filterId'], input: raw.filterId, message: `${got(raw.filterId)}; expected the ID of a saved filter because nodeListType is "savedFilter"` })
      }
      break
    case 'filter': {
      const f = raw.filter
      if (f === undefined || f === null) {
        ctx.addIssue({ code: 'custom', path: ['filter'], input: f, message: `${got(f)}; expected a filter object {constraints: {attributes, skills}} because nodeListType is "filter"` })
      } else if (isObjectLike(f)) {
        const c = f.constraints
        const count = (x: unknown) => (Array.isArray(x) ? x.length : 0)
        const empty = c === undefined || (isObjectLike(c) && count(c.attributes) + count(c.skills) === 0)
        if (empty && f.query === undefined) {
          ctx.addIssue({ code: 'custom', path: ['filter', 'constraints'], input: c, message: `${got(c)}; expected at least one attribute or skill constraint, or a filter.query, because nodeListType is "filter"` })
        }
      }
      break
    }
  }
}, whenObject)

export const TargetSchema = closedObject(
  {
    executionType: oneOf(EXECUTION_TYPES),
    groups: boundedArray(GroupSchema, MAX_GROUPS, 1, 'an array of groups'),
  },
  'a target object {executionType, groups}',
)
