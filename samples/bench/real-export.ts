// `npm run bench:real-export`: the LCM preview's forward and gradient on a graph exported as a real SDXL export is
// (samples/export/torch/sdxl_fixture.py: SDXL's transformer depths (1, 2, 10) at a small width, 64² images, opset
// 14, external data at threshold 100) rather than on the project's own built graphs. Prints the export's node
// counts by op type; the forward and gradient models' node counts; session creation times (onnxruntime, the
// project's session settings); forward and gradient-pass times and working memory, each in a process of its own
// (samples/bench/measure.ts: best of --runs, peak RSS above the RSS after loading); and the dry run's estimate of
// the gradient pass's activations beside the measured working memory and onnxruntime's own count (its CPU arena's
// peak in use, from its profiler: measure.ts --arena). Session creation is what a user waits for: on a cache hit
// the session is created from the cached file; on a miss the gradient is first derived and written, and its session
// created once (openCachedModel: the session that verified the entry is kept). Creation is given as wall time and as
// the process's CPU time, the steadier on a shared machine. The graphs are the engine's own (previewForward, and
// previewGradient: the gradient as gradientSession derives it and the estimate measures it, folded). A session that
// is not created and run within --timeout seconds is reported as such.
// Usage: npx tsx samples/bench/real-export.ts [--depth real|tiny] [--width 32] [--runs 3] [--threads 1] [--timeout 900]
//   [--models DIR]
//   --models: a fixture folder written before (sdxl_fixture.py), else one is exported into a temporary folder.
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { pipelineDims, previewForward, previewModels, previewShape } from '../../src/guidance/engine.js'
import { graphMemory } from '../../src/guidance/estimate.js'
import { pixelGuide } from '../../src/guidance/guide.js'
import { previewGradient } from '../../src/guidance/preview.js'
import { graphOf, readModel, writeModel, type LoadedModel } from '../../src/onnx/proto.js'
import { closeSessions } from '../../src/onnx/session.js'
import { torchMissing, writeTorchFixture } from '../export/torch/fixture.js'
import { option } from '../args.js'

const here = dirname(fileURLToPath(import.meta.url))
const depth = option('depth', 'real') as 'real' | 'tiny'
const width = Number(option('width', '32'))
const runs = option('runs', '3')
const threads = option('threads', '1')
const given = option('models', '')
const timeout = Number(option('timeout', '900'))
const DIMS = pipelineDims(1)
const MB = 2 ** 20

const opCounts = (model: LoadedModel) => {
  const counts = new Map<string, number>()
  for (const node of graphOf(model.model).node) counts.set(node.opType ?? '', (counts.get(node.opType ?? '') ?? 0) + 1)
  return [...counts].sort((a, b) => b[1] - a[1])
}
const nodes = (model: LoadedModel) => graphOf(model.model).node.length

interface Measured { best_ms: number; workingMB: number; create_ms: number; create_cpu_ms: number }

/** measure.ts on a model file in a process of its own: its last line of JSON; undefined past `timeout`. */
async function measureJson<T>(path: string, ...flags: string[]): Promise<T | undefined> {
  const dims = Object.entries(DIMS).map(([name, value]) => `${name}=${value}`)
  try {
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(here, 'measure.ts'), path, runs, threads, ...flags, ...dims], { maxBuffer: 1 << 24, timeout: timeout * 1000 })
    return JSON.parse(stdout.trim().split('\n').pop()!) as T
  } catch (error) {
    if ((error as { killed?: boolean }).killed) return undefined
    throw error
  }
}

/** Session creation, best run and working memory of a model file. */
async function measure(path: string): Promise<Measured | undefined> {
  const result = await measureJson<Omit<Measured, 'workingMB'> & { baseline_kb: number; peak_kb: number }>(path)
  return result && { ...result, workingMB: (result.peak_kb - result.baseline_kb) / 1024 }
}

if (!given) {
  const missing = await torchMissing()
  if (missing) {
    console.error(missing)
    process.exit(1)
  }
}
const dir = await mkdtemp(join(tmpdir(), 'lookahead-real-export-'))
try {
  let models = given
  if (!models) {
    models = join(dir, 'models')
    const start = performance.now()
    console.log(`${await writeTorchFixture(models, { depth, width })} (${((performance.now() - start) / 1000).toFixed(0)} s)`)
  }
  console.log(`${threads} thread(s), best of ${runs}, each session given ${timeout} s`)

  const unet = await readModel(join(models, 'unet', 'model.onnx'))
  console.log(`\nexport unet/model.onnx: ${nodes(unet)} nodes`)
  console.log(opCounts(unet).map(([op, n]) => `${op} ${n}`).join(', '))

  // as the engine's gradientSession builds them
  const parts = await previewModels(models, 'lcm')
  const shape = previewShape(1, [1, 4, 8, 8])
  const forwardPath = join(dir, 'forward', 'model.onnx')
  // as written: writeModel points the model's external data at the files beside it
  const forward = await writeModel(previewForward(parts, shape, pixelGuide()), forwardPath)
  const start = performance.now()
  const gradient = previewGradient(forward)
  const gradientPath = join(dir, 'gradient', 'model.onnx')
  await writeModel(gradient, gradientPath)
  const deriveMs = performance.now() - start // as a cache miss derives and writes it
  console.log(`\nLCM preview (LoRA'd UNet → VAE decoder → pixel loss), batch 1, 64²:`)
  console.log(`  forward: ${nodes(forward)} nodes; gradient model: ${nodes(gradient)} nodes (${(nodes(gradient) / nodes(forward)).toFixed(2)}× the forward, ` +
    `${(nodes(gradient) / nodes(unet)).toFixed(2)}× the UNet export), derived and written in ${(deriveMs / 1000).toFixed(1)} s`)
  const count = (model: LoadedModel, op: string) => graphOf(model.model).node.filter(n => n.opType === op).length
  console.log(`  gradient model's dynamic-shape ops: ${['NonZero', 'Where', 'Equal', 'Shape', 'ConstantOfShape', 'Expand'].map(op => `${op} ${count(gradient, op)}`).join(', ')}`)

  const memory = await graphMemory(forward, DIMS, 1)
  const forwardRun = await measure(forwardPath)
  const gradientRun = await measure(gradientPath)
  const arena = await measureJson<{ arena_peak_bytes: number }>(gradientPath, '--arena')
  const seconds = (ms?: number) => (ms !== undefined ? `${(ms / 1000).toFixed(2)} s` : `not done in ${timeout} s`)
  const ratio = (a?: number, b?: number) => (a && b ? ` (${(a / b).toFixed(2)}×)` : '')
  const creation = (kind: 'create_ms' | 'create_cpu_ms') => {
    const [f, g] = [forwardRun?.[kind], gradientRun?.[kind]]
    const miss = g !== undefined ? g + deriveMs : undefined
    return `forward ${seconds(f)}, gradient on a cache hit ${seconds(g)}${ratio(g, f)}, on a miss (derived, written, created once) ${seconds(miss)}${ratio(miss, f)}`
  }
  console.log(`  session creation, wall: ${creation('create_ms')}`)
  console.log(`  session creation, CPU time: ${creation('create_cpu_ms')} (deriving counted as wall time)`)
  const gradientPass = gradientRun ? `${gradientRun.best_ms.toFixed(1)} ms${ratio(gradientRun.best_ms, forwardRun?.best_ms)}` : 'not measured'
  if (forwardRun) console.log(`  run: forward ${forwardRun.best_ms.toFixed(1)} ms (working memory ${forwardRun.workingMB.toFixed(1)} MB), gradient pass ${gradientPass}`)
  const unknown = memory.unknown ? `; ${memory.unknown} values of unknown size not counted` : ''
  const measured = gradientRun ? `, measured ${gradientRun.workingMB.toFixed(1)} MB (estimate / measured ${(memory.peak / MB / gradientRun.workingMB).toFixed(2)})` : ''
  const counted = arena ? `, onnxruntime's arena peak ${(arena.arena_peak_bytes / MB).toFixed(1)} MB (estimate / arena ${(memory.peak / arena.arena_peak_bytes).toFixed(2)})` : ''
  console.log(`  gradient pass working memory: estimate ${(memory.peak / MB).toFixed(1)} MB (freed at last reader ${(memory.lowerBound / MB).toFixed(1)} MB)${measured}${counted}${unknown}`)
} finally {
  await closeSessions()
  await rm(dir, { recursive: true, force: true })
}
