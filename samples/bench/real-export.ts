// `npm run bench:real-export`: the LCM preview's forward and gradient on a graph exported as a real SDXL export is
// (samples/export/torch/sdxl_fixture.py: SDXL's transformer depths (1, 2, 10) at a small width, 64² images, opset
// 14, external data at threshold 100) rather than on the project's own built graphs. Prints the export's node
// counts by op type; the forward and gradient models' node counts; session creation times (onnxruntime, the
// project's session settings); forward and gradient-pass times and working memory, each in a process of its own
// (samples/bench/measure.ts: best of --runs, peak RSS above the RSS after loading); and the dry run's estimate of
// the gradient pass's activations beside the measured working memory. The graphs are the engine's own
// (previewForward, gradientSession), so whatever the engine does to them (specialising and folding, once
// src/onnx/fold.ts is merged) is measured too; the output says whether fold.ts is present.
// Usage: npx tsx samples/bench/real-export.ts [--depth real|tiny] [--width 32] [--runs 3] [--threads 1] [--models DIR]
//   --models: a fixture folder written before (sdxl_fixture.py), else one is exported into a temporary folder.
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { gradientSession, pipelineDims, previewForward, previewModels, previewShape } from '../../src/guidance/engine.js'
import { graphMemory } from '../../src/guidance/estimate.js'
import { pixelGuide } from '../../src/guidance/guide.js'
import { graphOf, readModel, writeModel, type LoadedModel } from '../../src/onnx/proto.js'
import { closeSessions, ort, sessionOptions } from '../../src/onnx/session.js'
import { torchMissing, writeTorchFixture } from '../export/torch/fixture.js'

const here = dirname(fileURLToPath(import.meta.url))
const option = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : fallback
}
const depth = option('depth', 'real') as 'real' | 'tiny'
const width = Number(option('width', '32'))
const runs = option('runs', '3')
const threads = option('threads', '1')
const given = option('models', '')
const DIMS = pipelineDims(1)
const MB = 2 ** 20

const opCounts = (model: LoadedModel) => {
  const counts = new Map<string, number>()
  for (const node of graphOf(model.model).node) counts.set(node.opType ?? '', (counts.get(node.opType ?? '') ?? 0) + 1)
  return [...counts].sort((a, b) => b[1] - a[1])
}
const nodes = (model: LoadedModel) => graphOf(model.model).node.length

/** onnxruntime's session creation for a model file, with the project's settings (the cache's write not included). */
async function creationMs(path: string): Promise<number> {
  const start = performance.now()
  const session = await ort.InferenceSession.create(path, sessionOptions('cpu', Number(threads)))
  const ms = performance.now() - start
  await session.release()
  return ms
}

async function measure(path: string): Promise<{ best_ms: number; workingMB: number }> {
  const dims = Object.entries(DIMS).map(([name, value]) => `${name}=${value}`)
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(here, 'measure.ts'), path, runs, threads, ...dims], { maxBuffer: 1 << 24 })
  const result = JSON.parse(stdout.trim().split('\n').pop()!) as { best_ms: number; baseline_kb: number; peak_kb: number }
  return { best_ms: result.best_ms, workingMB: (result.peak_kb - result.baseline_kb) / 1024 }
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
  const folded = existsSync(join(here, '../../src/onnx/fold.ts'))
  console.log(`src/onnx/fold.ts ${folded ? 'present: the engine\'s graphs are measured as it builds them' : 'absent: graphs as exported (not folded)'}; ${threads} thread(s), best of ${runs}`)

  const unet = await readModel(join(models, 'unet', 'model.onnx'))
  console.log(`\nexport unet/model.onnx: ${nodes(unet)} nodes`)
  console.log(opCounts(unet).map(([op, n]) => `${op} ${n}`).join(', '))

  const parts = await previewModels(models, 'lcm')
  const shape = previewShape(1, [1, 4, 8, 8])
  const guide = pixelGuide()
  const forward = previewForward(parts, shape, guide)
  const forwardPath = join(dir, 'forward', 'model.onnx')
  await writeModel(forward, forwardPath)
  let start = performance.now()
  const gradient = await gradientSession(parts, guide, shape, { cacheDir: join(dir, 'cache'), session: { threads: Number(threads) } })
  const deriveMs = performance.now() - start
  await closeSessions()
  const gradientModel = await readModel(gradient.path)
  console.log(`\nLCM preview (LoRA'd UNet → VAE decoder → pixel loss), batch 1, 64²:`)
  console.log(`  forward: ${nodes(forward)} nodes; gradient model: ${nodes(gradientModel)} nodes (${(nodes(gradientModel) / nodes(forward)).toFixed(2)}× the forward, ${(nodes(gradientModel) / nodes(unet)).toFixed(2)}× the UNet export)`)
  const dynamic = ['NonZero', 'Where', 'Equal', 'Shape', 'ConstantOfShape', 'Expand'].map(op => `${op} ${opCounts(gradientModel).find(([o]) => o === op)?.[1] ?? 0}`)
  console.log(`  gradient model's shape ops: ${dynamic.join(', ')}`)
  console.log(`  gradientSession (derive, write, create): ${(deriveMs / 1000).toFixed(1)} s`)

  const forwardCreate = await creationMs(forwardPath)
  const gradientCreate = await creationMs(gradient.path)
  console.log(`  session creation: forward ${(forwardCreate / 1000).toFixed(2)} s, gradient ${(gradientCreate / 1000).toFixed(2)} s (${(gradientCreate / forwardCreate).toFixed(2)}×)`)

  const forwardRun = await measure(forwardPath)
  const gradientRun = await measure(gradient.path)
  console.log(`  run: forward ${forwardRun.best_ms.toFixed(1)} ms, gradient pass ${gradientRun.best_ms.toFixed(1)} ms (${(gradientRun.best_ms / forwardRun.best_ms).toFixed(2)}×)`)

  const memory = await graphMemory(forward, DIMS, 1)
  const unknown = memory.unknown ? `; ${memory.unknown} values of unknown size not counted` : ''
  console.log(`  gradient pass working memory: estimate ${(memory.peak / MB).toFixed(1)} MB (freed at last reader ${(memory.lowerBound / MB).toFixed(1)} MB), ` +
    `measured ${gradientRun.workingMB.toFixed(1)} MB (estimate / measured ${(memory.peak / MB / gradientRun.workingMB).toFixed(2)})${unknown}; forward measured ${forwardRun.workingMB.toFixed(1)} MB`)
} finally {
  await closeSessions()
  await rm(dir, { recursive: true, force: true })
}
