// The torchvision oracle: torch_cases.py exports each case and writes torch autograd's input gradient;
// here our autodiff differentiates the same export, onnxruntime runs it, and the two are compared. Also
// times both sides the same way: CPU time of one intra-op thread, median of repeats, (forward+gradient)
// / forward, in onnxruntime and in torch.
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { UserError } from '../../src/errors.js'
import { writeGradientModel } from '../../src/onnx/autodiff.js'
import { ort, sessionOptions } from '../../src/onnx/session.js'
import { cannotImport, python } from '../python.js'

const run = promisify(execFile)
const script = join(dirname(fileURLToPath(import.meta.url)), 'torch_cases.py')

/**
 * Largest |ours − torch| / largest |torch| that counts as a match (float32 through tens of layers), against
 * torch's float64 gradient; or, where float32 torch is itself further off (FLOOR_FACTOR × its error), that.
 */
export const TOLERANCE = 1e-4
export const FLOOR_FACTOR = 4
export const OPSETS = [13, 14, 17]

export interface TorchCase {
  name: string
  /** a torchvision architecture or a small exporter pattern */
  kind: 'architecture' | 'pattern'
  /** why torchvision could not build it */
  error?: string
  shape?: number[]
  loss?: number
  /** float32 torch's gradient against the float64 reference, as `error` below */
  float32_error?: number
  /** torch's CPU time (1 thread, median): forward under no_grad, and forward + backward w.r.t. x */
  forward_ms?: number
  gradient_ms?: number
  opsets?: Record<string, { model?: string; error?: string }>
}

export type Status = 'match' | 'refused' | 'MISMATCH' | 'ERROR' | 'no export'

export interface Row {
  name: string
  kind: TorchCase['kind']
  opset: number
  status: Status
  /** the refusal, error or export failure */
  reason?: string
  /** max |ours − torch| / max |torch| of d loss / d x, torch's in float64 */
  error?: number
  /** the same for float32 torch */
  torchError?: number
  /** (forward + gradient) / forward CPU time: ours in onnxruntime, torch's autograd */
  ours?: number
  torch?: number
  /** our forward+gradient over torch's forward+backward, CPU time: onnxruntime's forward is often the faster */
  versusTorch?: number
}

/** The Python with torch and torchvision, or undefined. */
export async function torchPython(candidate = python): Promise<string | undefined> {
  return (await cannotImport(['torch', 'torchvision'], candidate)) ? undefined : candidate
}

/** Exports the cases (all where `cases` is empty) into dir; returns the manifest's cases. */
export async function exportCases(python: string, dir: string, cases: string[], opsets: number[], repeats: number): Promise<TorchCase[]> {
  const env = { ...process.env, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1', MKL_NUM_THREADS: '1', PYTHONWARNINGS: 'ignore' }
  try {
    await run(python, [script, 'export', '--dir', dir, '--cases', cases.join(','), '--opsets', opsets.join(','), '--repeats', String(repeats)], { env, maxBuffer: 1 << 24 })
  } catch (error) {
    const stderr = ((error as { stderr?: string }).stderr ?? '').trim().split('\n')
    throw new Error(`torch_cases.py export failed: ${stderr[stderr.length - 1] || (error as Error).message}`)
  }
  return readManifest(dir)
}

export async function readManifest(dir: string): Promise<TorchCase[]> {
  return JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')).cases
}

async function floats(path: string): Promise<Float32Array> {
  const bytes = await readFile(path)
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))
}

function relativeError(ours: Float32Array, reference: Float32Array): number {
  let difference = 0, scale = 0
  reference.forEach((r, i) => {
    difference = Math.max(difference, Math.abs(ours[i] - r))
    scale = Math.max(scale, Math.abs(r))
  })
  return Number.isFinite(difference) && ours.length === reference.length ? difference / scale : Infinity
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** Median CPU time of a session's run (ms), after two warm-ups: at least `repeats` runs and ~0.2 s. */
export async function medianCpuMs(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>, repeats: number): Promise<number> {
  for (let i = 0; i < 2; i++) await session.run(feeds)
  const times: number[] = []
  let total = 0
  while (times.length < repeats || (total < 200 && times.length < 400)) {
    const start = process.cpuUsage()
    await session.run(feeds)
    const used = process.cpuUsage(start)
    times.push((used.user + used.system) / 1000)
    total += times[times.length - 1]
  }
  return median(times)
}

export const open = (path: string, extra: ort.InferenceSession.SessionOptions = {}) =>
  ort.InferenceSession.create(path, { ...sessionOptions('cpu', 1), interOpNumThreads: 1, ...extra })

/** Differentiates one export with our autodiff, runs it and compares with torch; times both sides unless repeats is 0. */
export async function checkCase(dir: string, entry: TorchCase, opset: number, repeats: number): Promise<Row> {
  const base = { name: entry.name, kind: entry.kind, opset }
  if (entry.error) return { ...base, status: 'no export', reason: entry.error }
  const exported = entry.opsets?.[opset]
  if (!exported?.model) return { ...base, status: 'no export', reason: exported?.error ?? `not exported at opset ${opset}` }
  const model = join(dir, exported.model)
  const gradient = model.replace(/\.onnx$/, '.grad.onnx')
  try {
    await writeGradientModel(model, gradient, { wrt: ['x'] })
  } catch (error) {
    if (error instanceof UserError) return { ...base, status: 'refused', reason: error.message }
    throw error
  }
  const folder = join(dir, entry.name)
  const feeds = { x: new ort.Tensor('float32', await floats(join(folder, 'x.bin')), entry.shape!) }
  let sessions: ort.InferenceSession[] = []
  try {
    sessions = [await open(model), await open(gradient)]
    const out = await sessions[1].run(feeds)
    const error = relativeError(out.x_grad.data as Float32Array, await floats(join(folder, 'grad.bin')))
    const torchError = entry.float32_error!
    const row: Row = { ...base, status: error <= Math.max(TOLERANCE, FLOOR_FACTOR * torchError) ? 'match' : 'MISMATCH', error, torchError }
    if (repeats > 0) {
      const [forward, withGradient] = [await medianCpuMs(sessions[0], feeds, repeats), await medianCpuMs(sessions[1], feeds, repeats)]
      row.ours = withGradient / forward
      row.torch = entry.gradient_ms! / entry.forward_ms!
      row.versusTorch = withGradient / entry.gradient_ms!
    }
    return row
  } catch (error) {
    return { ...base, status: 'ERROR', reason: `onnxruntime: ${(error as Error).message.split('\n')[0]}` }
  } finally {
    for (const s of sessions) await s.release()
  }
}

/** onnxruntime's per-node profile of `runs` runs of a model: ms per run by op type, largest first. */
export async function profileByOp(model: string, feeds: Record<string, ort.Tensor>, runs: number): Promise<[string, number][]> {
  const folder = await mkdtemp(join(tmpdir(), 'oracle-profile-'))
  try {
    const session = await open(model, { enableProfiling: true, profileFilePrefix: join(folder, 'profile') })
    for (let i = 0; i < runs; i++) await session.run(feeds)
    session.endProfiling()
    await session.release()
    const file = (await readdir(folder)).find(f => f.endsWith('.json'))
    if (!file) throw new Error(`onnxruntime wrote no profile in ${folder}`)
    const events: { cat: string; name: string; dur: number; args?: { op_name?: string } }[] = JSON.parse(await readFile(join(folder, file), 'utf8'))
    // each node's median over the runs (a shared machine preempts some), summed by op type
    const byNode = new Map<string, { op: string; ms: number[] }>()
    for (const event of events) {
      if (event.cat !== 'Node' || !event.name.endsWith('_kernel_time') || !event.args?.op_name) continue
      const node = byNode.get(event.name) ?? { op: event.args.op_name, ms: [] }
      node.ms.push(event.dur / 1000)
      byNode.set(event.name, node)
    }
    const byOp = new Map<string, number>()
    for (const { op, ms } of byNode.values()) byOp.set(op, (byOp.get(op) ?? 0) + median(ms))
    return [...byOp].sort((a, b) => b[1] - a[1])
  } finally {
    await rm(folder, { recursive: true, force: true })
  }
}

export async function caseFeeds(dir: string, entry: TorchCase): Promise<Record<string, ort.Tensor>> {
  return { x: new ort.Tensor('float32', await floats(join(dir, entry.name, 'x.bin')), entry.shape!) }
}

export const manifestExists = (dir: string) => existsSync(join(dir, 'manifest.json'))
export { median }
