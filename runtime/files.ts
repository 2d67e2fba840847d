// Template files: reading them is the CLI's I/O; parsing and checking is protocol/parse.ts.
import { readFile, stat } from 'node:fs/promises'
import { MAX_TEMPLATE_BYTES } from '../protocol/template.js'
import { clip, formatFromFileName, parseTemplateText, type Problem } from '../protocol/parse.js'

/** Reads and validates template files; the format comes from each file's extension. */
export async function validateFiles(files: string[]): Promise<{ file: string; problems: Problem[] }[]> {
  const results: { file: string; problems: Problem[] }[] = []
  for (const file of files) {
    results.push({ file, problems: await validateFile(file) })
  }
  return results
}

async function validateFile(file: string): Promise<Problem[]> {
  let bytes: Buffer
  try {
    const info = await stat(file)
    if (!info.isFile()) return [{ path: '$', message: 'not a regular file; expected a template file' }]
    if (info.size > MAX_TEMPLATE_BYTES) {
      return [{ path: '$', message: `template is ${info.size} bytes; expected at most ${MAX_TEMPLATE_BYTES} bytes (1 MiB)` }]
    }
    bytes = await readFile(file)
  } catch (e) {
    return [{ path: '$', message: `cannot read file: ${clip(e instanceof Error ? e.message : String(e))}` }]
  }
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    return [{ path: '$', message: 'file is not valid UTF-8; expected UTF-8 text' }]
  }
  const result = parseTemplateText(text, formatFromFileName(file))
  return result.ok ? [] : result.problems
}

