// Sessions over onnxruntime-node: provider choice, threads, caching, and the model's I/O read from the session.
import * as ort from 'onnxruntime-node'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { cachedFolder } from '../fsutil.js'
import { UserError } from '../errors.js'
import { encodeModel, readModel, relocateExternalData } from './proto.js'

export type Device = 'cpu' | 'cuda'
export const devices: Device[] = ['cpu', 'cuda']

export interface SessionSettings {
  device?: Device
  /** intra-op threads; 0 lets onnxruntime choose */
  threads?: number
}

export interface ValueSpec {
  name: string
  /** onnxruntime's type name: 'float32', 'int64', 'float16', … */
  type: string
  /** dims; strings for symbolic dims, [] for a scalar or an unknown shape */
  shape: (number | string)[]
}

export const CUDA_HELP =
  'the CUDA provider is not installed: reinstall with `ONNXRUNTIME_NODE_INSTALL=cuda12 npm install onnxruntime-node` ' +
  'on a machine with CUDA 12, cuDNN 9 and internet (see README, "GPU")'

/**
 * A loaded model: run it, and ask it for its inputs and outputs. `path` is the file onnxruntime loaded; `source`
 * the model its errors name, the file the user owns (for a model derived into the cache, the one it came from).
 */
export class Session {
  constructor(readonly path: string, readonly device: Device, private readonly session: ort.InferenceSession, readonly source = path) {}

  get inputs(): ValueSpec[] {
    return this.session.inputMetadata.map(spec)
  }

  get outputs(): ValueSpec[] {
    return this.session.outputMetadata.map(spec)
  }

  input(name: string): ValueSpec {
    const found = this.inputs.find(i => i.name === name)
    if (!found) throw new UserError(`${this.source} has no input named ${name} (it has ${this.inputs.map(i => i.name).join(', ')})`)
    return found
  }

  async run(feeds: Record<string, ort.Tensor>, outputs?: string[]): Promise<Record<string, ort.Tensor>> {
    try {
      const result = outputs ? await this.session.run(feeds, outputs) : await this.session.run(feeds)
      return result as Record<string, ort.Tensor>
    } catch (error) {
      // a model that does not fit its feeds (another export's shapes): the user's file, in one line
      throw new UserError(`onnxruntime cannot run ${this.source}: ${firstLine(error as Error)}`)
    }
  }

  async release(): Promise<void> {
    await this.session.release()
  }
}

function spec(meta: ort.InferenceSession.ValueMetadata): ValueSpec {
  if (!meta.isTensor) return { name: meta.name, type: 'non-tensor', shape: [] }
  return { name: meta.name, type: meta.type, shape: [...meta.shape] }
}

function providers(device: Device): ort.InferenceSession.ExecutionProviderConfig[] {
  return device === 'cuda' ? ['cuda'] : ['cpu']
}

const cache = new Map<string, Promise<Session>>()

let defaults: Required<SessionSettings> = { device: 'cpu', threads: 0 }

/** The device and threads of sessions opened without their own (face detection, reference embeddings, metrics): a run sets them once from --device/--threads. */
export function setSessionDefaults(settings: SessionSettings): void {
  defaults = { ...defaults, ...settings }
}

/** Settings with the run's defaults filled in. */
export function sessionSettings(settings: SessionSettings = {}): Required<SessionSettings> {
  return { device: settings.device ?? defaults.device, threads: settings.threads ?? defaults.threads }
}

/** The one way the project creates an onnxruntime session: from a file or model bytes, with its device and threads. */
export function createInferenceSession(model: string | Uint8Array, settings: SessionSettings = {}, externalDataFolder?: string): Promise<ort.InferenceSession> {
  const { device, threads } = sessionSettings(settings)
  const options = sessionOptions(device, threads)
  // a model given as bytes finds its external weights in this folder (see createSession)
  if (externalDataFolder) options.extra = { session: { model_external_initializers_file_folder_path: externalDataFolder } }
  return typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options)
}

/**
 * Opens (or returns the cached) session for a model file. `--device cuda` uses CUDA only: where the
 * provider is missing this is an error, never a silent fall-back to the CPU. `source`: the model its errors
 * name (Session), where that is not the file itself.
 */
export function openSession(path: string, settings: SessionSettings = {}, source?: string): Promise<Session> {
  const { device, threads } = sessionSettings(settings)
  const full = resolve(path)
  const key = sessionKey(full, device, threads)
  let session = cache.get(key)
  if (!session) {
    session = createSession(full, device, threads, full, source)
    cache.set(key, session)
    session.catch(() => cache.delete(key))
  }
  return session
}

const sessionKey = (full: string, device: Device, threads: number) => `${full}|${device}|${threads}`

/**
 * The session of the derived model `dir`/model.onnx in the cache, written by `build` (into a temporary folder,
 * cachedFolder) where it is missing. The session that checks a new entry loads is the one returned, so a miss
 * creates the session once, not twice; it is kept under the entry's path as openSession keeps its sessions.
 * `source` names the model in its errors (Session), and when onnxruntime cannot load it: the file the user owns
 * that it was derived from, not the cache's copy.
 */
export async function openCachedModel(dir: string, build: (tmp: string) => Promise<void>, source: string, settings: SessionSettings = {}): Promise<Session> {
  const { device, threads } = sessionSettings(settings)
  const path = resolve(dir, 'model.onnx')
  let verified: Session | undefined
  try {
    await cachedFolder(dir, build, async tmp => {
      verified = await createSession(join(tmp, 'model.onnx'), device, threads, path, source)
    })
  } catch (error) {
    await verified?.release()
    throw error
  }
  const key = sessionKey(path, device, threads)
  // onnxruntime has read the weights: the entry's folder can be renamed (or, where another process won, removed) under it
  if (verified && !cache.has(key)) cache.set(key, Promise.resolve(verified))
  else await verified?.release()
  return openSession(path, settings, source)
}

/** The options every session of the project is created with. */
export function sessionOptions(device: Device, threads: number): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: providers(device),
    intraOpNumThreads: threads,
    graphOptimizationLevel: 'all',
    // memory patterns pre-plan one block for all intermediates: for gradient graphs that nearly doubled the
    // peak RSS (npm run bench), at no measurable speed gain
    enableMemPattern: false,
    // onnxruntime's own log of a failed load is many raw lines; its error reaches the user as one (loadError)
    logSeverityLevel: 4,
  }
}

/**
 * A session of the model file `path`; `shown`: the path the Session holds (where the file is about to be moved);
 * `source`: the model its errors name (see Session).
 */
async function createSession(path: string, device: Device, threads: number, shown = path, source = shown): Promise<Session> {
  if (!existsSync(path)) throw new UserError(`model file ${path} does not exist`)
  if (device === 'cuda' && !cudaInstalled()) throw new UserError(CUDA_HELP)
  try {
    const session = await createInferenceSession(path, { device, threads })
    return new Session(shown, device, session, source)
  } catch (error) {
    if (!/External data path/.test((error as Error).message)) throw loadError(source, device, error as Error)
  }
  // the weights are symlinks (a Hugging Face cache; links into a cache on another file system): from the bytes,
  // with the data's real folder, onnxruntime reads them where they are
  const { model, folder } = await relocateExternalData(await readModel(path))
  try {
    return new Session(shown, device, await createInferenceSession(encodeModel(model), { device, threads }, folder), source)
  } catch (error) {
    throw loadError(source, device, error as Error)
  }
}

/** onnxruntime's load error as one line naming `source` (less its own "Load model from PATH failed:": PATH may be a temporary copy). */
function loadError(source: string, device: Device, error: Error): UserError {
  const line = firstLine(error).replace(/^Load model from .* failed:\s*/, '')
  if (device === 'cuda' && /cuda/i.test(error.message)) return new UserError(`${CUDA_HELP} (${line})`)
  return new UserError(`onnxruntime cannot load ${source}: ${line}`)
}

/** The first line of onnxruntime's error, which may span many lines of its log. */
const firstLine = (error: Error) => error.message.split('\n').map(l => l.trim()).find(Boolean) ?? 'unknown error'

/** Whether onnxruntime-node's CUDA provider library was installed beside the binding. */
export function cudaInstalled(): boolean {
  return ort.listSupportedBackends().some(b => b.name === 'cuda' && existsSync(cudaProviderPath()))
}

function cudaProviderPath(): string {
  // The install script puts libonnxruntime_providers_cuda.so next to the binding.
  const main = createRequire(import.meta.url).resolve('onnxruntime-node')
  return join(dirname(main), '..', 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so')
}

/** Drops every cached session (tests, and after a model file was rewritten). */
export async function closeSessions(): Promise<void> {
  const sessions = [...cache.values()]
  cache.clear()
  for (const s of sessions) await s.then(x => x.release()).catch(() => undefined)
}

export { ort }
