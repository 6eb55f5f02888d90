// Sessions over onnxruntime-node: provider choice, threads, caching, and the model's I/O read from the session.
import * as ort from 'onnxruntime-node'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { UserError } from '../errors.js'

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

/** A loaded model: run it, and ask it for its inputs and outputs. */
export class Session {
  constructor(readonly path: string, readonly device: Device, private readonly session: ort.InferenceSession) {}

  get inputs(): ValueSpec[] {
    return this.session.inputMetadata.map(spec)
  }

  get outputs(): ValueSpec[] {
    return this.session.outputMetadata.map(spec)
  }

  input(name: string): ValueSpec {
    const found = this.inputs.find(i => i.name === name)
    if (!found) throw new UserError(`${this.path} has no input named ${name} (it has ${this.inputs.map(i => i.name).join(', ')})`)
    return found
  }

  async run(feeds: Record<string, ort.Tensor>, outputs?: string[]): Promise<Record<string, ort.Tensor>> {
    const result = outputs ? await this.session.run(feeds, outputs) : await this.session.run(feeds)
    return result as Record<string, ort.Tensor>
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
export function createInferenceSession(model: string | Uint8Array, settings: SessionSettings = {}): Promise<ort.InferenceSession> {
  const { device, threads } = sessionSettings(settings)
  const options = sessionOptions(device, threads)
  return typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options)
}

/**
 * Opens (or returns the cached) session for a model file. `--device cuda` uses CUDA only: where the
 * provider is missing this is an error, never a silent fall-back to the CPU.
 */
export function openSession(path: string, settings: SessionSettings = {}): Promise<Session> {
  const { device, threads } = sessionSettings(settings)
  const full = resolve(path)
  const key = `${full}|${device}|${threads}`
  let session = cache.get(key)
  if (!session) {
    session = createSession(full, device, threads)
    cache.set(key, session)
    session.catch(() => cache.delete(key))
  }
  return session
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
  }
}

async function createSession(path: string, device: Device, threads: number): Promise<Session> {
  if (!existsSync(path)) throw new UserError(`model file ${path} does not exist`)
  if (device === 'cuda' && !cudaInstalled()) throw new UserError(CUDA_HELP)
  try {
    const session = await createInferenceSession(path, { device, threads })
    return new Session(path, device, session)
  } catch (error) {
    const message = (error as Error).message
    if (device === 'cuda' && /cuda/i.test(message)) throw new UserError(`${CUDA_HELP} (${message.split('\n')[0]})`)
    throw new UserError(`onnxruntime cannot load ${path}: ${message.split('\n')[0]}`)
  }
}

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
