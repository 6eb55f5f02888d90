// A teaching walk-through of the LCM lookahead in the demo world, with the programmatic API:
//   npx tsx samples/teaching/walkthrough.ts [OUT]      (default OUT: out/teaching; about a minute on 2 cores)
// 1. the schedule: where the naive x0 estimate and the LCM preview put their weight,
// 2. the paper's fig. 2: at several steps, x0 estimate | LCM preview | final image, and how far each is from the end,
// 3. one seed guided towards a face through no preview, the x0 preview and the LCM preview, with the loss curves.
import { join } from 'node:path'
import { guideFromSpec } from '../../guides/index.js'
import { ModelsFolder } from '../../src/diffusion/models-folder.js'
import { alphaBar, ddimTimesteps, lcmScalings, naiveX0Coefficients } from '../../src/diffusion/schedulers.js'
import { lookahead, type LookaheadSettings } from '../../src/guidance/engine.js'
import { PREVIEW_KINDS } from '../../src/guidance/previews.js'
import { gridWithReference, previewDistances, previewFigure, previewFigureImage } from '../../src/guidance/figure.js'
import { imageFromTensor, saveImage } from '../../src/image/image.js'
import { defaultWorldCache, ensureDefaultWorld } from '../../src/world/models.js'
import { drawnFaces } from '../../src/world/world.js'

const out = process.argv[2] ?? join('out', 'teaching')
const models = await ModelsFolder.at(await ensureDefaultWorld(defaultWorldCache()))
const side = 256
const steps = 50
const timesteps = ddimTimesteps(steps)

console.log('1. The schedule (SDXL: scaled_linear β, 1000 steps, "leading" spacing). At step i the latent is')
console.log('   x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, so the one-step estimate x̂₀ = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t divides by a small √ᾱ_t early:')
for (const i of [2, 5, 10, 20, 35]) {
  const t = timesteps[i]
  const { a, b } = naiveX0Coefficients(t)
  const { cSkip, cOut } = lcmScalings(t)
  console.log(`   step ${String(i).padStart(2)}  t=${String(t).padStart(3)}  ᾱ=${alphaBar(t).toFixed(4)}  x̂₀ = ${a.toFixed(2)}·x_t ${b.toFixed(2)}·ε̂   LCM: c_skip=${cSkip.toExponential(1)}, c_out=${cOut.toFixed(4)}`)
}
console.log('   The formulas are the same (c_skip ≈ 0): the LCM preview differs only in whose ε̂ it uses — a UNet distilled')
console.log('   to jump to the end of the trajectory, instead of the denoiser\'s posterior mean, a blend of every possible end.\n')

const at = [2, 5, 10, 20]
const figure = await previewFigure({ prompt: '', steps, cfg: 1, seed: 1, size: { height: side, width: side }, models, at })
console.log('2. Previews of one sampling run (seed 1), pixel RMS distance to the final image:')
for (const d of previewDistances(figure)) console.log(`   step ${String(d.step).padStart(2)}: x0 estimate ${d.x0.toFixed(3)}, LCM preview ${d.lcm.toFixed(3)}`)
await saveImage(previewFigureImage(figure, { title: `seed 1, ${steps} DDIM steps: the x0 estimate and the LCM preview of x_t` }), join(out, 'previews.png'))
console.log(`   → ${join(out, 'previews.png')}\n`)

const reference = drawnFaces(side).find(f => f.name === 'dev')!
const guide = guideFromSpec('id', { folder: models, idNetwork: 'faceapi', warn: () => {} })
await guide.prepare({ image: { data: reference.pixels, width: side, height: side } })
const settings: LookaheadSettings = {
  prompt: '', steps, cfg: 1, seed: 3, size: { height: side, width: side }, models, guide, guideSteps: [10], iters: 10, preview: 'none',
  update: { optimizer: 'sgd', lr: 0.01, normalize: true, clip: 0, renormalize: false },
}
console.log(`3. Seed ${settings.seed} guided at step 10 towards "${reference.name}" (id loss, face-api network, K=10, lr 0.01):`)
const cells = []
for (const preview of ['none', ...PREVIEW_KINDS] as const) {
  const result = await lookahead({ ...settings, preview })
  const losses = result.iterations.map(i => i.loss.toFixed(3))
  console.log(`   ${preview.padEnd(4)}: ${losses.length ? `loss on its own preview ${losses.join(' → ')}` : 'no guidance'}`)
  cells.push({ image: imageFromTensor(result.image.data, result.image.dims), label: preview })
}
await saveImage(gridWithReference([cells], { data: reference.pixels, width: side, height: side }), join(out, 'guided.png'))
console.log(`   → ${join(out, 'guided.png')}`)
console.log('   Measure, do not assume: `lookahead compare` runs every preview over many seeds (see samples/experiment).')
