// A map standing in for a core's store in the pure-core tests.

interface PersistEffect { type: 'persist'; puts: readonly { key: string; value: unknown }[]; dels: readonly string[] }

/**
 * Applies a step's persist effects to `db`, in order, as the runtime's one batch per event does
 * (values cloned, so later changes to the core's state do not reach the "disk"); returns the effects.
 */
export function persistInto<E extends { type: string }>(db: Map<string, unknown>): (effects: E[]) => E[] {
  return (effects) => {
    for (const e of effects) {
      if (e.type !== 'persist') continue
      const p = e as unknown as PersistEffect
      for (const put of p.puts) db.set(put.key, structuredClone(put.value))
      for (const k of p.dels) db.delete(k)
    }
    return effects
  }
}
