// `npm run bench` (part 3): the dry run's memory estimate against onnxruntime, on SDXL's structure. SDXL's UNet at
// a quarter of its width (random weights) with LCM-LoRA branches, TAESD-shaped decoder and a pixel loss: the
// preview's gradient pass at 256², kept and recomputed in 4 and 8 segments, and with 2 LCM steps inside the preview
// (--preview-steps 2: the UNet's weights shared by both calls). For each: the estimator's activations (estimate.ts,
// as `lookahead guide --dry-run` computes them), the weights in the graph, the RSS after loading and the working
// memory onnxruntime measures (peak RSS above it, in a process of its own), and the time. ≈ 1–2 minutes.
// --prepacking both: each model measured a second time with onnxruntime's weight pre-packing off (a line
// "no prepacking" below it: RSS after loading, working memory and time against the default's).
// Usage: npx tsx samples/bench/memory.ts [--side 256] [--runs 3] [--threads 1] [--prepacking both]
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { writeTinyModels } from '../../src/diffusion/tiny/index.js'
import { pipelineDims, previewForward, previewModels, previewShape } from '../../src/guidance/engine.js'
import { graphMemory } from '../../src/guidance/estimate.js'
import { pixelGuide } from '../../src/guidance/guide.js'
import { previewGradient } from '../../src/guidance/preview.js'
import { writeModel } from '../../src/onnx/proto.js'
import { QUARTER_SDXL_UNET } from './sdxl-shape.js'
import { option } from '../args.js'

const here = dirname(fileURLToPath(import.meta.url))
const side = Number(option('side', '256'))
const runs = option('runs', '3')
const threads = option('threads', '1')
const comparePrepacking = option('prepacking', 'on') === 'both'
const DIMS = pipelineDims(1)
const MB = 2 ** 20

const dir = await mkdtemp(join(tmpdir(), 'lookahead-memory-'))
try {
  await writeTinyModels(join(dir, 'models'), { unet: QUARTER_SDXL_UNET })
  const parts = await previewModels(join(dir, 'models'), 'lcm')
  const forward = (steps: number) => previewForward(parts, previewShape(1, [1, 4, side / 8, side / 8], undefined, steps), pixelGuide())
  console.log(`SDXL's UNet at ¼ width, LCM preview's gradient pass at ${side}², ${threads} thread(s), best of ${runs}; working memory: peak RSS above the RSS after loading`)
  let keptMs = 0
  for (const { segments, steps } of [{ segments: 1, steps: 1 }, { segments: 4, steps: 1 }, { segments: 8, steps: 1 }, { segments: 1, steps: 2 }]) {
    const memory = await graphMemory(forward(steps), DIMS, segments)
    const path = join(dir, `grad-${segments}-${steps}`, 'model.onnx')
    // as the engine's gradientSession derives it (and graphMemory estimates it)
    await writeModel(previewGradient(forward(steps), segments), path)
    const dims = Object.entries(DIMS).map(([name, value]) => `${name}=${value}`)
    const measure = async (...flags: string[]) => {
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(here, 'measure.ts'), path, runs, threads, ...flags, ...dims])
      return JSON.parse(stdout.trim().split('\n').pop()!) as { best_ms: number; baseline_kb: number; peak_kb: number }
    }
    const measured = await measure()
    keptMs ||= measured.best_ms
    const label = steps > 1 ? `--preview-steps ${steps}` : segments === 1 ? 'kept' : `--recompute ${segments}`
    console.log(`  ${label.padEnd(17)} estimate ${(memory.peak / MB).toFixed(0).padStart(5)} MB (freed at last reader ${(memory.lowerBound / MB).toFixed(0)} MB)   ` +
      `measured ${((measured.peak_kb - measured.baseline_kb) / 1024).toFixed(0).padStart(5)} MB   ${measured.best_ms.toFixed(0)} ms (${(measured.best_ms / keptMs).toFixed(2)}× kept)   ` +
      `weights in the graph ${(memory.weights / MB).toFixed(0)} MB, RSS after loading ${(measured.baseline_kb / 1024).toFixed(0)} MB`)
    if (comparePrepacking) {
      const off = await measure('--disable-prepacking')
      console.log(`  ${''.padEnd(17)} no prepacking: measured ${((off.peak_kb - off.baseline_kb) / 1024).toFixed(0)} MB   ${off.best_ms.toFixed(0)} ms ` +
        `(${(off.best_ms / measured.best_ms).toFixed(2)}× with it)   RSS after loading ${(off.baseline_kb / 1024).toFixed(0)} MB`)
    }
  }
} finally {
  await rm(dir, { recursive: true, force: true })
}
