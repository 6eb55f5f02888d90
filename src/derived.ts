// Derived models (gradient models, previews, folded UNets) in the cache (cache.ts): how an entry is keyed (the
// source graph, its weight files, a tag and the deriving code's version) and opened (built as a cachedFolder,
// fsutil.ts: in a temporary folder, renamed into place only once it loads, so never a broken entry).
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cacheRoot } from './cache.js'
import { encodeModel, externalDataFiles, writeModel, type LoadedModel } from './onnx/proto.js'
import { openCachedModel, type Session, type SessionSettings } from './onnx/session.js'

let derivationCode: string | undefined

/**
 * A hash of the code that derives models (src/onnx: fold, autodiff, their rules): part of every derived model's
 * key, so an entry built by other code (a fold or a gradient rule changed) is never reused.
 */
export function derivationVersion(): string {
  if (derivationCode) return derivationCode
  const dir = join(dirname(fileURLToPath(import.meta.url)), 'onnx')
  const hash = createHash('sha256')
  for (const name of readdirSync(dir).filter(n => /\.(js|ts)$/.test(n) && !n.endsWith('.d.ts')).sort()) hash.update(name).update(readFileSync(join(dir, name)))
  derivationCode = hash.digest('hex').slice(0, 12)
  return derivationCode
}

/** A key for a model built from other models: its graph bytes plus the size and mtime of each weight file. */
async function modelKey(model: LoadedModel, extra: string): Promise<string> {
  const hash = createHash('sha256').update(encodeModel(model.model)).update(extra)
  for (const file of externalDataFiles(model).sort()) {
    const { size, mtimeMs } = await stat(file)
    hash.update(`${file}|${size}|${mtimeMs}`)
  }
  return hash.digest('hex').slice(0, 24)
}

export interface CacheSettings {
  cacheDir?: string
  session?: SessionSettings
  /** hears of a model being derived (a cache miss: the slow first run) */
  progress?: (line: string) => void
}

/**
 * A model derived from `source` (folded, differentiated), written once under the cache and opened. `tag` names
 * the entry and everything the result depends on besides `source` (the dims it is folded at, the options): the
 * key hashes `source` as given, the tag and the deriving code's version, so a hit derives nothing. The model is
 * written to a temporary folder and moved into the cache only once onnxruntime loads it. `name`: what the
 * session's errors call the model, the user's file it is derived from where there is one (never the cache's copy).
 */
export async function cachedSession(source: LoadedModel, derive: (m: LoadedModel) => LoadedModel, tag: string, settings: CacheSettings, name = `the derived model ${tag}`): Promise<Session> {
  const dir = join(settings.cacheDir ?? cacheRoot(), `${tag}-${await modelKey(source, `${tag}|${derivationVersion()}`)}`)
  return openCachedModel(dir, async tmp => {
    settings.progress?.(`deriving ${tag} (once: it is cached)`)
    await writeModel(derive(source), join(tmp, 'model.onnx'))
  }, name, settings.session)
}

/** A tag for a model folded at `dims`: the name and the dims' values (e.g. unet-1x77x1x8x8). */
export const foldedTag = (name: string, dims: Record<string, number>) => `${name}-${Object.values(dims).join('x')}`
