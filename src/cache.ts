// The cache of derived models (gradient models, previews, LoRA'd UNets, the demo world): where it is, how an
// entry is built (in a temporary folder, renamed into place only once it loads: never a broken entry), and
// how it is listed and cleaned (`lookahead cache`).
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'

/** Where derived models are cached: $LOOKAHEAD_CACHE or ~/.cache/lcm-lookahead. */
export function cacheRoot(): string {
  return process.env.LOOKAHEAD_CACHE || join(homedir(), '.cache', 'lcm-lookahead')
}

/**
 * The cache entry `dir`: built by `build` in a temporary folder beside it, checked by `verify` (e.g. that
 * onnxruntime loads it), then renamed into place. Whatever fails or is interrupted leaves only a temporary
 * folder (named *.tmp-*), which `cleanCache` removes.
 */
export async function cachedFolder(dir: string, build: (tmp: string) => Promise<void>, verify: (tmp: string) => Promise<void> = async () => {}): Promise<string> {
  if (existsSync(dir)) return dir
  await mkdir(dirname(dir), { recursive: true })
  const tmp = `${dir}.tmp-${randomBytes(4).toString('hex')}`
  try {
    await build(tmp)
    await verify(tmp)
    await rename(tmp, dir).catch(async error => {
      // another process finished the same entry first: keep its copy
      if (!existsSync(dir)) throw error
    })
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
  return dir
}

export interface CacheEntry {
  name: string
  bytes: number
  /** the newest modification inside the entry */
  modified: Date
  /** a temporary folder left by an interrupted build */
  unfinished: boolean
}

async function folderStats(path: string): Promise<{ bytes: number; modified: number }> {
  const s = await stat(path)
  if (!s.isDirectory()) return { bytes: s.size, modified: s.mtimeMs }
  let bytes = 0
  let modified = s.mtimeMs
  for (const entry of await readdir(path)) {
    const inner = await folderStats(join(path, entry))
    bytes += inner.bytes
    modified = Math.max(modified, inner.modified)
  }
  return { bytes, modified }
}

/** The entries of the cache, largest first (none where it does not exist yet). */
export async function listCache(root = cacheRoot()): Promise<CacheEntry[]> {
  if (!existsSync(root)) return []
  const entries = await Promise.all((await readdir(root)).map(async name => {
    const { bytes, modified } = await folderStats(join(root, name))
    return { name, bytes, modified: new Date(modified), unfinished: /\.tmp-[0-9a-f]+$/.test(name) }
  }))
  return entries.sort((a, b) => b.bytes - a.bytes)
}

/** Removes the entries not modified for `olderThanMs` (all, without it) and unfinished builds; returns them. */
export async function cleanCache(root = cacheRoot(), olderThanMs?: number, now = Date.now()): Promise<CacheEntry[]> {
  const removed = (await listCache(root)).filter(e => e.unfinished || olderThanMs === undefined || now - e.modified.getTime() > olderThanMs)
  for (const e of removed) await rm(join(root, e.name), { recursive: true, force: true })
  return removed
}
