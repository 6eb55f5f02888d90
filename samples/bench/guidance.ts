// `npm run bench` (part 2): the end-to-end cost of `guide` relative to `generate` with the same settings
// (50 DDIM steps, CFG 5, K = 10 lookahead iterations at step 10, LCM preview, id guide on face-api's network),
// on the tiny SDXL-shaped models and in the demo world. Times are the best of --runs runs in this process
// (the first run, which builds and caches the gradient model, is not counted); ratios come from one run.
// --big adds a third line where, as in SDXL, the UNet dominates: SDXL's UNet at a quarter of its width with random
// weights (143 M parameters, 570 MB) beside the tiny text encoders and decoders, at 256²: one generate takes ≈ 27 s
// on one thread and the line ≈ 8½ min (the other two ≈ 20 s), so `npm run bench` leaves it out.
// Usage: npx tsx samples/bench/guidance.ts [--runs N] [--threads N] [--big]
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { guideFromSpec } from '../../guides/index.js'
import { conditioning } from '../../src/diffusion/conditioning.js'
import { decode, openDecoder } from '../../src/diffusion/decoders.js'
import { ModelsFolder } from '../../src/diffusion/models-folder.js'
import { initialNoise, latentDims, loadSdxl, unetEpsModel } from '../../src/diffusion/pipeline.js'
import { writeTinyModels } from '../../src/diffusion/tiny/index.js'
import { lookahead, type LookaheadSettings } from '../../src/guidance/engine.js'
import { runCost } from '../../src/guidance/estimate.js'
import { pixelGuide } from '../../src/guidance/guide.js'
import { buildWorldFolder } from '../../src/world/models.js'
import { drawnFaces } from '../../src/world/world.js'
import { QUARTER_SDXL_UNET } from './sdxl-shape.js'
import { option } from '../args.js'

const runs = Number(option('runs', '3'))
const threads = Number(option('threads', '1'))

async function best(settings: LookaheadSettings): Promise<{ ms: number; guidanceMs: number }> {
  let result = { ms: Infinity, guidanceMs: 0 }
  for (let i = 0; i < runs; i++) {
    const started = performance.now()
    const { timings } = await lookahead(settings)
    const ms = performance.now() - started
    if (ms < result.ms) result = { ms, guidanceMs: timings.guidanceMs }
  }
  return result
}

/** The best of 10 timings of `work`, in ms. */
async function fastest(work: () => Promise<unknown>): Promise<number> {
  let ms = Infinity
  for (let i = 0; i < 10; i++) {
    const started = performance.now()
    await work()
    ms = Math.min(ms, performance.now() - started)
  }
  return ms
}

async function bench(name: string, models: string, side: number, cache: string) {
  const reference = drawnFaces(side)[3]
  const guide = guideFromSpec('id', { folder: await ModelsFolder.at(models), idNetwork: 'faceapi', warn: () => {} })
  await guide.prepare({ image: { data: reference.pixels, width: side, height: side } })
  const base: LookaheadSettings = {
    prompt: 'a portrait photo', steps: 50, cfg: 5, seed: 0, size: { height: side, width: side }, models,
    session: { threads }, preview: 'none', guideSteps: [10], iters: 10, cacheDir: cache, guide,
    update: { optimizer: 'sgd', lr: 0.01, normalize: true, clip: 0, renormalize: false },
  }
  const counted = runCost({ steps: 50, cfg: 5, guideSteps: [10], iters: 10, previewCfg: 1, guided: true })
  const plain = await best(base)
  // the units: one batch-1 UNet evaluation (folded as the sampler's), and one decode of the preview, timed alone
  const sdxl = await loadSdxl(models, { threads }, { ...base, cfg: 1 })
  const eps = unetEpsModel(sdxl.unet, await conditioning({ ...base, cfg: 1 }, sdxl.unet, sdxl.text), 1)
  const x = initialNoise(0, latentDims(sdxl.unet, base.size))
  const unetMs = await fastest(() => eps(x, 781))
  const decoder = await openDecoder(sdxl.folder, 'taesd', { threads })
  const decodeMs = await fastest(() => decode(decoder, x))
  const line = async (label: string, settings: LookaheadSettings) => {
    await lookahead(settings) // builds and caches the gradient model
    const guided = await best(settings)
    const perIteration = guided.guidanceMs / 10
    console.log(`  ${label}: guide ${guided.ms.toFixed(0)} ms → ${(guided.ms / plain.ms).toFixed(2)}× generate; one lookahead iteration ${perIteration.toFixed(1)} ms = ${(perIteration / unetMs).toFixed(1)} UNet evaluations`)
  }
  console.log(`${name} (${side}×${side}): generate ${plain.ms.toFixed(0)} ms (${counted.samplingEvaluations} UNet evaluations in batch-2 CFG passes); ` +
    `one batch-1 UNet evaluation ${unetMs.toFixed(2)} ms, one preview decode ${decodeMs.toFixed(2)} ms (= ${(decodeMs / unetMs).toFixed(1)} UNet evaluations); ` +
    `UNet-evaluation count with guidance: ${counted.ratio.toFixed(2)}×`)
  await line('id loss (face-api network)', { ...base, preview: 'lcm' })
  // the same with a loss that costs nothing (mean squared pixel difference): what the UNet, the decoder and
  // the engine cost per iteration without the face network
  await line('pixel loss (no guide network)', { ...base, preview: 'lcm', guide: pixelGuide(reference.pixels) })
}

const dir = await mkdtemp(join(tmpdir(), 'lookahead-bench-'))
try {
  console.log(`guide vs generate: 50 steps, CFG 5, K=10 at step 10, LCM preview, id loss; best of ${runs}, ${threads} thread(s)`)
  await writeTinyModels(join(dir, 'tiny'))
  await bench('tiny SDXL-shaped models', join(dir, 'tiny'), 128, join(dir, 'cache'))
  await buildWorldFolder(join(dir, 'world'))
  await bench('demo world', join(dir, 'world'), 256, join(dir, 'cache'))
  if (process.argv.includes('--big')) {
    await writeTinyModels(join(dir, 'big'), { unet: QUARTER_SDXL_UNET })
    await bench('SDXL-shaped UNet at ¼ width, tiny text encoders and decoders', join(dir, 'big'), 256, join(dir, 'cache'))
  }
} finally {
  await rm(dir, { recursive: true, force: true })
}
