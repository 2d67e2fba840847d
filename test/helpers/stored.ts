// Where a string is stored: every file under a directory (raw bytes) and every decoded record of
// the level stores of a stopped fleet. For the tests that prove a secret is written nowhere.
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Level } from 'level'
import type { LocalFleet } from '../../cli/fleet.js'

/** Files under `dir` whose bytes contain `needle`. */
export async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const found: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, e.name)
    if (e.isDirectory()) found.push(...await filesContaining(full, needle))
    else if ((await readFile(full)).includes(needle)) found.push(full)
  }
  return found
}

/** Every place a stopped fleet (directories kept) holds `needle`: files under its base directory, then decoded level records (`db:key`). */
export async function storedPlaces(fleet: LocalFleet, needle: string): Promise<string[]> {
  const found = await filesContaining(fleet.baseDir, needle)
  for (const db of [join(fleet.coordinator.dir, 'db'), ...fleet.agents.map((a) => join(a.dir, 'db'))]) {
    const level = new Level<string, string>(db, { valueEncoding: 'utf8' })
    for await (const [k, v] of level.iterator()) if (k.includes(needle) || v.includes(needle)) found.push(`${db}:${k}`)
    await level.close()
  }
  return found
}
