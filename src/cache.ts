// The cache of derived models (gradient models, previews, folded UNets, LoRA'd UNets, the demo world): where it
// is, and how entries are listed and cleaned (`lookahead cache`). How a derived model's entry is keyed and opened
// is derived.ts (it loads the ONNX layer, which listing the cache does not need).
import { existsSync } from 'node:fs'
import { readdir, rm, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { unfinishedFolder } from './fsutil.js'

/** Where derived models are cached: $LOOKAHEAD_CACHE or ~/.cache/lcm-lookahead. */
export function cacheRoot(): string {
  return process.env.LOOKAHEAD_CACHE || join(homedir(), '.cache', 'lcm-lookahead')
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
    return { name, bytes, modified: new Date(modified), unfinished: unfinishedFolder(name) }
  }))
  return entries.sort((a, b) => b.bytes - a.bytes)
}

/** Removes the entries not modified for `olderThanMs` (all, without it) and unfinished builds; returns them. */
export async function cleanCache(root = cacheRoot(), olderThanMs?: number, now = Date.now()): Promise<CacheEntry[]> {
  const removed = (await listCache(root)).filter(e => e.unfinished || olderThanMs === undefined || now - e.modified.getTime() > olderThanMs)
  for (const e of removed) await rm(join(root, e.name), { recursive: true, force: true })
  return removed
}
