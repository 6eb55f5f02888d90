// Checks a gradient model against central finite differences of its forward model, on random inputs:
// for random directions v, (f(x + εv) − f(x − εv)) / 2ε against ⟨∇f(x), v⟩, accumulated in float64.
import { UserError } from '../errors.js'
import { seededNormal } from './layers.js'
import { ort, type Device } from './session.js'

export interface GradCheckOptions {
  wrt: string[]
  of: string
  /** values for symbolic dims; others default to 1 for names with "batch", else 8 */
  dims?: Record<string, number>
  /** random directions per input */
  directions?: number
  /** step, relative to the input's RMS (plus one) */
  epsilon?: number
  seed?: number
  device?: Device
  /** intra-op threads (0: onnxruntime decides) */
  threads?: number
}

export interface GradCheckResult {
  /** the worst relative error |fd − ⟨∇f, v⟩| / max(|fd|, |⟨∇f, v⟩|, |∇f|) over all inputs and directions */
  worst: number
  inputs: { name: string; shape: number[]; relativeErrors: number[] }[]
}

type ModelSource = string | Uint8Array

async function open(model: ModelSource, device: Device, threads: number): Promise<ort.InferenceSession> {
  const options: ort.InferenceSession.SessionOptions = { executionProviders: [device], graphOptimizationLevel: 'all', intraOpNumThreads: threads }
  // one create() overload per source type
  return typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options)
}

export function concreteShape(shape: readonly (number | string)[], dims: Record<string, number>, what: string): number[] {
  return shape.map(d => {
    if (typeof d === 'number' && d >= 0) return d
    if (typeof d === 'string' && dims[d] !== undefined) return dims[d]
    if (typeof d === 'string' && d !== '') return /batch/i.test(d) ? 1 : 8
    throw new UserError(`${what} has a dim with no name or size; give the input a concrete shape`)
  })
}

const FLOATS = new Set(['float32', 'float64'])

/** Random feeds for every input of a session: N(0,1) floats, small non-negative integers, false booleans. */
export function randomFeeds(session: ort.InferenceSession, dims: Record<string, number>, seed: number): Record<string, ort.Tensor> {
  const rand = seededNormal(seed)
  const feeds: Record<string, ort.Tensor> = {}
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) throw new UserError(`input ${meta.name} is not a tensor`)
    const shape = concreteShape(meta.shape, dims, `input ${meta.name}`)
    const count = shape.reduce((a, b) => a * b, 1)
    switch (meta.type) {
      case 'float32': feeds[meta.name] = new ort.Tensor('float32', Float32Array.from({ length: count }, rand), shape); break
      case 'float64': feeds[meta.name] = new ort.Tensor('float64', Float64Array.from({ length: count }, rand), shape); break
      case 'int64': feeds[meta.name] = new ort.Tensor('int64', BigInt64Array.from({ length: count }, () => BigInt(Math.floor(Math.abs(rand()) * 3))), shape); break
      case 'int32': feeds[meta.name] = new ort.Tensor('int32', Int32Array.from({ length: count }, () => Math.floor(Math.abs(rand()) * 3)), shape); break
      case 'bool': feeds[meta.name] = new ort.Tensor('bool', new Uint8Array(count), shape); break
      default: throw new UserError(`input ${meta.name} has type ${meta.type}, which the check cannot fill (float16 models: check a float32 export)`)
    }
  }
  return feeds
}

const sum = (data: ArrayLike<number>) => {
  let total = 0
  for (let i = 0; i < data.length; i++) total += data[i]
  return total
}

/**
 * Compares the gradient model's `X_grad` outputs with central finite differences of the forward model's
 * `of` output (summed when it is not a scalar).
 */
export async function gradcheck(forward: ModelSource, gradient: ModelSource, options: GradCheckOptions): Promise<GradCheckResult> {
  const { wrt, of, dims = {}, directions = 3, epsilon = 1e-3, seed = 0, device = 'cpu', threads = 0 } = options
  const forwardSession = await open(forward, device, threads)
  const gradientSession = await open(gradient, device, threads)
  try {
    const feeds = randomFeeds(forwardSession, dims, seed)
    const value = async (inputs: Record<string, ort.Tensor>) => sum((await forwardSession.run(inputs, [of]))[of].data as Float32Array)
    const analytic = await gradientSession.run(feeds, wrt.map(x => `${x}_grad`))
    const rand = seededNormal(seed + 1)
    const inputs: GradCheckResult['inputs'] = []
    for (const x of wrt) {
      const base = feeds[x]
      if (!base || !FLOATS.has(base.type)) throw new UserError(`input ${x} is not a float input of the forward model`)
      const data = base.data as Float32Array | Float64Array
      const grad = analytic[`${x}_grad`].data as Float32Array
      const rms = Math.sqrt(sum(Array.from(data, v => v * v)) / data.length)
      const step = epsilon * (rms + 1)
      const relativeErrors: number[] = []
      for (let d = 0; d < directions; d++) {
        const direction = Float64Array.from({ length: data.length }, rand)
        const shifted = (sign: number) => {
          const values = data instanceof Float64Array ? new Float64Array(data.length) : new Float32Array(data.length)
          for (let i = 0; i < data.length; i++) values[i] = data[i] + sign * step * direction[i]
          return { ...feeds, [x]: new ort.Tensor(base.type as 'float32', values as Float32Array, base.dims) }
        }
        const numeric = ((await value(shifted(1))) - (await value(shifted(-1)))) / (2 * step)
        let exact = 0, norm = 0
        for (let i = 0; i < grad.length; i++) {
          exact += grad[i] * direction[i]
          norm += grad[i] * grad[i]
        }
        // ⟨∇f, v⟩ ~ N(0, |∇f|²) for v ~ N(0, I): |∇f| is its scale even where the sum happens to cancel
        relativeErrors.push(Math.abs(numeric - exact) / Math.max(Math.abs(numeric), Math.abs(exact), Math.sqrt(norm), 1e-6))
      }
      inputs.push({ name: x, shape: [...base.dims], relativeErrors })
    }
    return { worst: Math.max(...inputs.flatMap(i => i.relativeErrors)), inputs }
  } finally {
    await forwardSession.release()
    await gradientSession.release()
  }
}
