// `npm run bench` (part 4): the N-step LCM preview holds one copy of the UNet's weights. SDXL's UNet at a quarter of
// its width (random weights, LCM-LoRA branches) with the TAESD-shaped decoder and a pixel loss, the preview's
// gradient pass with 1 and 2 LCM steps inside: the weights in the composed graph, the files on disk, the dry run's
// activation estimate, and what onnxruntime holds (RSS after loading: the weights once; the working memory above it),
// each in a process of its own, with the time. ≈ 1 minute.
// Usage: npx tsx samples/bench/preview-steps.ts [--side 256] [--runs 3] [--threads 1]
import { execFile } from 'node:child_process'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { writeTinyModels } from '../../src/diffusion/tiny/index.js'
import { previewModels } from '../../src/guidance/engine.js'
import { pipelineDims } from '../../src/guidance/memory.js'
import { graphMemory, weightBytes } from '../../src/guidance/estimate.js'
import { pixelGuide } from '../../src/guidance/guide.js'
import { buildPreviewGraph, LATENT, LOSS } from '../../src/guidance/preview.js'
import { differentiate } from '../../src/onnx/autodiff.js'
import { writeModel } from '../../src/onnx/proto.js'
import { QUARTER_SDXL_UNET } from './sdxl-shape.js'

const here = dirname(fileURLToPath(import.meta.url))
const option = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : fallback
}
const side = Number(option('side', '256'))
const runs = option('runs', '3')
const threads = option('threads', '1')
const DIMS = pipelineDims(1)
const MB = 2 ** 20

const dir = await mkdtemp(join(tmpdir(), 'lookahead-preview-steps-'))
try {
  await writeTinyModels(join(dir, 'models'), { unet: QUARTER_SDXL_UNET })
  const parts = await previewModels(join(dir, 'models'), 'lcm')
  const forward = (steps: number) => {
    const g = buildPreviewGraph({ ...parts, decoderScales: parts.scales, cfg: 1, latentShape: [1, 4, side / 8, side / 8], imageSize: { height: side, width: side }, guide: pixelGuide(), steps })
    return { model: g.build(), dir: parts.unet.dir }
  }
  console.log(`SDXL's UNet at ¼ width, LCM preview's gradient pass at ${side}², ${threads} thread(s), best of ${runs}; ` +
    'RSS after loading (weights) and working memory (peak RSS above it), each in its own process')
  console.log(`  the LCM UNet's weights: ${((await weightBytes(parts.unet)) / MB).toFixed(0)} MB`)
  let oneStep: { ms: number; loadedKb: number; workingKb: number } | undefined
  for (const steps of [1, 2]) {
    const memory = await graphMemory(forward(steps), DIMS)
    const path = join(dir, `grad-${steps}`, 'model.onnx')
    await writeModel(differentiate(forward(steps), { wrt: [LATENT], of: LOSS, dims: DIMS }), path)
    const onDisk = (await stat(path)).size
    const dims = Object.entries(DIMS).map(([name, value]) => `${name}=${value}`)
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(here, 'measure.ts'), path, runs, threads, ...dims])
    const measured = JSON.parse(stdout.trim().split('\n').pop()!) as { best_ms: number; baseline_kb: number; peak_kb: number }
    const now = { ms: measured.best_ms, loadedKb: measured.baseline_kb, workingKb: measured.peak_kb - measured.baseline_kb }
    oneStep ??= now
    console.log(`  ${steps} step(s): weights in the graph ${(memory.weights / MB).toFixed(0)} MB, gradient model file ${(onDisk / MB).toFixed(0)} MB, ` +
      `activations estimated ${(memory.peak / MB).toFixed(0)} MB; measured RSS after loading ${(now.loadedKb / 1024).toFixed(0)} MB ` +
      `(${(now.loadedKb / oneStep.loadedKb).toFixed(2)}× 1 step), working ${(now.workingKb / 1024).toFixed(0)} MB (${(now.workingKb / oneStep.workingKb).toFixed(2)}×), ` +
      `${now.ms.toFixed(0)} ms (${(now.ms / oneStep.ms).toFixed(2)}×)`)
  }
} finally {
  await rm(dir, { recursive: true, force: true })
}
