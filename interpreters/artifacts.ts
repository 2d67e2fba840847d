/**
 * Step artifacts (evidence files) and their bounds.
 *
 * An interpreter names artifacts as `{ name, path }`; the agent reads each file itself,
 * refusing anything outside the attempt's artifact directory (after resolving symlinks),
 * anything that is not a regular file, names that are empty, longer than
 * MAX_ARTIFACT_NAME_CHARS or not printable, duplicates, files over MAX_ARTIFACT_BYTES, and
 * everything past the first MAX_ARTIFACTS_PER_STEP artifacts. Refusals are reported as
 * problems (the step still gets the artifacts that were fine).
 */
import { open, realpath } from 'node:fs/promises'
import { isAbsolute, relative, resolve } from 'node:path'
import type { StepArtifact } from './types.js'

export const MAX_ARTIFACT_NAME_CHARS = 128
export const MAX_ARTIFACT_BYTES = 1024 * 1024
export const MAX_ARTIFACTS_PER_STEP = 8

const NAME_OK = /^[^\u0000-\u001f\u007f/\\]+$/

export interface ArtifactRef {
  name: string
  path: string
}

/** Decodes bytes as UTF-8 when valid, else base64. */
export function encodeArtifact(name: string, bytes: Buffer): StepArtifact {
  const text = bytes.toString('utf8')
  const valid = Buffer.from(text, 'utf8').equals(bytes)
  return valid
    ? { name, content: text, encoding: 'utf8', bytes: bytes.length }
    : { name, content: bytes.toString('base64'), encoding: 'base64', bytes: bytes.length }
}

/** Name check shared by everything that creates artifacts; returns a problem or undefined. */
export function artifactNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string' || name === '') return 'artifact name must be a non-empty string'
  if (name.length > MAX_ARTIFACT_NAME_CHARS) return `artifact name has ${name.length} characters; at most ${MAX_ARTIFACT_NAME_CHARS} allowed`
  if (!NAME_OK.test(name)) return `artifact name ${JSON.stringify(name)} contains a slash, backslash or control character`
  return undefined
}

/** Reads the artifacts named by an interpreter, within the bounds above. Never throws. */
export async function collectArtifacts(refs: readonly ArtifactRef[], artifactDir: string): Promise<{ artifacts: StepArtifact[]; problems: string[] }> {
  const artifacts: StepArtifact[] = []
  const problems: string[] = []
  if (refs.length > MAX_ARTIFACTS_PER_STEP) {
    problems.push(`${refs.length} artifacts named; only the first ${MAX_ARTIFACTS_PER_STEP} are kept`)
  }
  let root: string
  try {
    root = await realpath(artifactDir)
  } catch {
    return { artifacts, problems: [...problems, `artifact directory ${artifactDir} is not accessible`] }
  }
  const seen = new Set<string>()
  for (const ref of refs.slice(0, MAX_ARTIFACTS_PER_STEP)) {
    const bad = artifactNameProblem(ref.name)
    if (bad !== undefined) {
      problems.push(bad)
      continue
    }
    if (seen.has(ref.name)) {
      problems.push(`duplicate artifact name ${JSON.stringify(ref.name)}`)
      continue
    }
    seen.add(ref.name)
    if (typeof ref.path !== 'string' || ref.path === '') {
      problems.push(`artifact ${ref.name}: path must be a non-empty string`)
      continue
    }
    let file: string
    try {
      file = await realpath(resolve(root, ref.path))
    } catch {
      problems.push(`artifact ${ref.name}: ${ref.path} does not exist`)
      continue
    }
    const rel = relative(root, file)
    if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
      problems.push(`artifact ${ref.name}: ${ref.path} is outside the artifact directory`)
      continue
    }
    try {
      const fh = await open(file, 'r')
      try {
        const st = await fh.stat()
        if (!st.isFile()) {
          problems.push(`artifact ${ref.name}: ${ref.path} is not a regular file`)
          continue
        }
        if (st.size > MAX_ARTIFACT_BYTES) {
          problems.push(`artifact ${ref.name}: ${st.size} bytes exceeds ${MAX_ARTIFACT_BYTES}`)
          continue
        }
        // Read at most one byte past the bound, in case the file grew after stat.
        const buf = Buffer.alloc(MAX_ARTIFACT_BYTES + 1)
        let n = 0
        for (;;) {
          const { bytesRead } = await fh.read(buf, n, buf.length - n, n)
          if (bytesRead === 0) break
          n += bytesRead
          if (n >= buf.length) break
        }
        if (n > MAX_ARTIFACT_BYTES) {
          problems.push(`artifact ${ref.name}: more than ${MAX_ARTIFACT_BYTES} bytes`)
          continue
        }
        artifacts.push(encodeArtifact(ref.name, buf.subarray(0, n)))
      } finally {
        await fh.close()
      }
    } catch (e) {
      problems.push(`artifact ${ref.name}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`)
    }
  }
  return { artifacts, problems }
}
