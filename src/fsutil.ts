// Files and folders written so that readers see either none or all of them: built aside, then renamed.
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'

/** Writes a file so that readers see either the old file or the whole new one: temporary file, then rename. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true })
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`
  try {
    await writeFile(tmp, data)
    await rename(tmp, path)
  } catch (error) {
    await rm(tmp, { force: true })
    throw error
  }
}

/**
 * The folder `dir`, built once: by `build` in a temporary folder beside it, checked by `verify` (e.g. that
 * onnxruntime loads it), then renamed into place. Whatever fails or is interrupted leaves only a temporary
 * folder (unfinishedFolder), which `lookahead cache clean` removes.
 */
export async function cachedFolder(dir: string, build: (tmp: string) => Promise<void>, verify: (tmp: string) => Promise<void> = async () => {}): Promise<string> {
  if (existsSync(dir)) return dir
  await mkdir(dirname(dir), { recursive: true })
  const tmp = `${dir}.tmp-${randomBytes(4).toString('hex')}`
  try {
    await build(tmp)
    await verify(tmp)
    await rename(tmp, dir).catch(async error => {
      // another process finished the same folder first: keep its copy
      if (!existsSync(dir)) throw error
    })
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
  return dir
}

/** Whether a folder's name is that of cachedFolder's temporary folder: a build that failed or was interrupted. */
export const unfinishedFolder = (name: string) => /\.tmp-[0-9a-f]+$/.test(name)
