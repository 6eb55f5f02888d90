// The lookahead engine end to end on a small demo world, with a pixel-space test guide (no face detection).
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gradcheck } from '../src/onnx/gradcheck.js'
import { closeSessions, ort } from '../src/onnx/session.js'
import { graphOf, readModel, writeModel } from '../src/onnx/proto.js'
import { GraphBuilder as Builder } from '../src/onnx/builder.js'
import { embedModel } from '../src/onnx/compose.js'
import { cp } from 'node:fs/promises'
import { differentiate } from '../src/onnx/autodiff.js'
import { lookahead, previewModels, type LookaheadSettings } from '../src/guidance/engine.js'
import { dryRun, fitMemory } from '../src/guidance/memory.js'
import { pixelGuide, type Guide } from '../src/guidance/guide.js'
import { buildPreviewGraph, LATENT, LOSS } from '../src/guidance/preview.js'
import { drawnFaces } from '../src/world/world.js'
import { buildWorldFolder } from '../src/world/models.js'
import { writeTinyModels } from '../src/diffusion/tiny/index.js'
import { LAYOUT } from '../src/diffusion/models-folder.js'
import { f32, writeSafetensors, type NamedTensor } from '../src/diffusion/safetensors.js'
import { TAESD_LAYERS } from '../src/diffusion/taesd.js'
import { seededNormal } from '../src/onnx/layers.js'
import { cpuNchwcBlock } from '../src/guidance/estimate.js'

const SIZE = 64

/** TAESD decoder weights in madebyollin's naming (taesd.ts TAESD_LAYERS) with `channels` channels, float32, seeded. */
function tinyTaesdDecoder(channels: number): Map<string, NamedTensor> {
  const normal = seededNormal(5)
  const weights = new Map<string, NamedTensor>()
  const conv = (name: string, out: number, input: number, bias = true) => {
    weights.set(`${name}.weight`, f32([out, input, 3, 3], Float32Array.from({ length: out * input * 9 }, () => 0.1 * normal())))
    if (bias) weights.set(`${name}.bias`, f32([out], Float32Array.from({ length: out }, () => 0.1 * normal())))
  }
  TAESD_LAYERS.decoder.forEach((layer, i) => {
    if (layer === 'block') for (const part of [0, 2, 4]) conv(`${i}.conv.${part}`, channels, channels)
    else if (typeof layer === 'object') conv(String(i), i === TAESD_LAYERS.decoder.length - 1 ? 3 : channels, i === 1 ? 4 : channels, i === 1 || i === TAESD_LAYERS.decoder.length - 1)
  })
  return weights
}

/** A [3,S,S] image at half size (2×2 means), for the half-size preview's target. */
function halfSize(image: Float32Array, side: number): Float32Array {
  const half = side / 2
  return Float32Array.from({ length: 3 * half * half }, (_, i) => {
    const [c, y, x] = [Math.floor(i / (half * half)), Math.floor(i / half) % half, i % half]
    const at = (dy: number, dx: number) => image[(c * side + 2 * y + dy) * side + 2 * x + dx]
    return (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4
  })
}

describe('lookahead engine (demo world)', function () {
  this.timeout(120000)
  let dir: string
  let models: string
  let settings: LookaheadSettings
  const target = drawnFaces(SIZE)[4].pixels

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lookahead-engine-'))
    models = join(dir, 'world')
    await buildWorldFolder(models, { settings: { size: SIZE } })
    settings = {
      prompt: '', steps: 20, cfg: 1, seed: 3, size: { height: SIZE, width: SIZE }, models,
      preview: 'lcm', guide: pixelGuide(target), guideSteps: [4], iters: 6,
      update: { optimizer: 'sgd', lr: 0.02, normalize: true, clip: 0, renormalize: false },
      cacheDir: join(dir, 'cache'),
    }
  })
  after(async () => { await closeSessions(); await rm(dir, { recursive: true, force: true }) })

  it('differentiates the preview graph correctly (finite differences), through the UNet and the preview formula', async () => {
    for (const kind of ['lcm', 'x0'] as const) {
      const parts = await previewModels(models, kind)
      const g = buildPreviewGraph({ ...parts, decoderScales: parts.scales, cfg: 1, latentShape: [1, 4, SIZE / 8, SIZE / 8], imageSize: { height: SIZE, width: SIZE }, guide: pixelGuide(target) })
      const forward = join(dir, `forward-${kind}.onnx`)
      const gradient = join(dir, `gradient-${kind}.onnx`)
      await writeModel({ model: g.build(), dir }, forward)
      await writeModel(differentiate({ model: g.build(), dir }, { wrt: [LATENT], of: LOSS }), gradient)
      // timestep 261 and the x0 coefficients there; the other inputs are conditioning the world ignores
      const result = await gradcheck(forward, gradient, { wrt: [LATENT], of: LOSS, seed: 1, directions: 4 })
      assert.ok(result.worst < 1e-2, `${kind}: worst relative error ${result.worst}`)
    }
  })

  it('lowers the guide loss at the guide step and caches the gradient model', async () => {
    const result = await lookahead(settings)
    const losses = result.iterations.map(i => i.loss)
    assert.equal(losses.length, 6)
    assert.ok(losses[5] < losses[0] * 0.98, `loss ${losses[0]} → ${losses[5]}`)
    assert.ok(result.iterations.every(i => !i.skipped))
    const cached = await readdir(settings.cacheDir!)
    assert.ok(cached.some(name => name.startsWith('grad-')), `cache holds ${cached}`)
    assert.ok(result.image.data.every(Number.isFinite))
  })

  it('derives the gradient model and the folded sampling UNet on the first run only: a cache hit neither folds nor differentiates', async () => {
    const lines: string[] = []
    const once = { ...settings, iters: 1, cacheDir: join(dir, 'cache-once'), progress: (line: string) => lines.push(line) }
    await lookahead(once)
    assert.equal(lines.filter(line => /^deriving grad-image-1x77x1 /.test(line)).length, 1, lines.join('\n'))
    assert.equal(lines.filter(line => /^deriving unet-1x77x1x1 /.test(line)).length, 1, lines.join('\n')) // the world's UNet has one symbolic dim, its batch
    // a new process (no session open) finds both in the cache, keyed by the unfolded graphs
    await closeSessions()
    lines.length = 0
    await lookahead(once)
    assert.deepEqual(lines, [])
    // other dims are another entry
    await lookahead({ ...once, cfg: 2 })
    assert.ok(lines.some(line => /^deriving unet-2x77x1x2 /.test(line)), lines.join('\n'))
  })

  it('counts the weights of a TAESDXL final decoder given as .safetensors in the dry run', async () => {
    const folder = join(dir, 'safetensors-decoder')
    await writeTinyModels(folder)
    for (const decoder of ['vae_decoder', 'taesdxl_decoder']) await rm(join(folder, decoder), { recursive: true })
    const plain = { ...settings, models: folder, preview: 'none' as const, decoder: 'taesd' as const }
    const without = await dryRun(plain)
    const weights = tinyTaesdDecoder(4)
    await writeSafetensors(join(folder, LAYOUT.taesdxl_weights), weights)
    const withDecoder = await dryRun(plain)
    const bytes = [...weights.values()].reduce((sum, t) => sum + 4 * t.shape.reduce((a, b) => a * b, 1), 0)
    // held as the built graph holds them: the weights in float32, plus a few scalars (the clamp's, the upsamplings')
    const added = withDecoder.sessions.weights - without.sessions.weights
    assert.ok(added >= bytes && added < bytes + 100, `${added} bytes counted for ${bytes} bytes of weights`)
  })

  it('is deterministic for a seed, and guidance changes the image', async () => {
    const [a, b, plain] = [await lookahead(settings), await lookahead(settings), await lookahead({ ...settings, preview: 'none' })]
    assert.deepEqual(Array.from(a.image.data), Array.from(b.image.data))
    const moved = a.latents.data.reduce((s, v, i) => s + (v - plain.latents.data[i]) ** 2, 0)
    assert.ok(moved > 1e-3, `guided and unguided latents differ by ${moved}`)
    const toTarget = (img: Float32Array) => img.reduce((s, v, i) => s + (v - target[i]) ** 2, 0)
    assert.ok(toTarget(a.image.data) < toTarget(plain.image.data), 'guided final image is closer to the target')
  })

  it('self-recurrence: R rounds of K updates, each after a step and a re-noise back to t, deterministically', async () => {
    const recurrent = { ...settings, recur: 2 }
    const [a, b] = [await lookahead(recurrent), await lookahead(recurrent)]
    assert.deepEqual(a.iterations.map(i => i.round), [...Array(6).fill(0), ...Array(6).fill(1)])
    assert.deepEqual(Array.from(a.latents.data), Array.from(b.latents.data))
    const single = await lookahead(settings)
    assert.notDeepEqual(Array.from(a.latents.data), Array.from(single.latents.data))
    assert.ok(a.image.data.every(Number.isFinite))
  })

  it('guides at a lower resolution (--guide-size, tiny SDXL-shaped models): the gradient flows back through the resize', async () => {
    const tiny = join(dir, 'tiny')
    await writeTinyModels(tiny)
    const small = await lookahead({ ...settings, models: tiny, size: { height: 128, width: 128 }, guideSize: 64, guide: pixelGuide(halfSize(drawnFaces(128)[4].pixels, 128)) })
    const losses = small.iterations.map(i => i.loss)
    assert.ok(losses[5] < losses[0], `loss ${losses[0]} → ${losses[5]}`)
    // a --guide-size the models cannot run is refused where the settings are read (test/settings.test.ts)
  })

  it('recomputes the gradient pass in segments (--recompute): the same guided latents, less memory, offered when over a limit', async () => {
    const tiny = join(dir, 'tiny')
    if (!existsSync(tiny)) await writeTinyModels(tiny)
    const base = { ...settings, models: tiny, size: { height: 128, width: 128 }, guide: pixelGuide(drawnFaces(128)[4].pixels) }
    const [kept, recomputed] = [await lookahead(base), await lookahead({ ...base, recompute: 3 })]
    const worst = Math.max(...recomputed.latents.data.map((v, i) => Math.abs(v - kept.latents.data[i])))
    assert.ok(worst < 1e-4, `latents differ by ${worst}`)
    assert.ok((await readdir(settings.cacheDir!)).some(name => name.startsWith('grad-image-recompute3-')))
    const [one, four] = [await dryRun(base), await dryRun({ ...base, recompute: 4 })]
    // estimated 0.81 with the CPU's NCHWc layout (onnxruntime's arena measured 0.87 on this preview's gradient)
    assert.ok(four.memory.peak < 0.85 * one.memory.peak, `peak ${one.memory.peak} → ${four.memory.peak}`)
    assert.ok(four.guidanceEvaluations > one.guidanceEvaluations)
    // CUDA runs the Convs in NCHW: its estimate has neither the CPU layout's reordered copies nor its fused Adds
    const cuda = await dryRun({ ...base, session: { device: 'cuda' } })
    if (cpuNchwcBlock() > 1) assert.notEqual(cuda.memory.peak, one.memory.peak)
    // a limit 20% of the activations below the kept pass's total
    const limit = one.peakBytes - 0.2 * one.memory.peak
    const fit = await fitMemory(base, limit)
    assert.ok(fit && fit.recompute > 1 && fit.guideSize === undefined && fit.cost.peakBytes <= limit, JSON.stringify(fit && { ...fit, cost: fit.cost.peakBytes }))
    assert.equal(await fitMemory(base, 1000), undefined)
  })

  it('finds the guide\'s own inputs (the face alignment) on each round\'s preview, which the gradient session shows', async () => {
    const seen: number[][] = []
    const base = pixelGuide(target)
    // a pixel loss plus an input `offset` that the guide sets from the preview's mean, as the id guide sets its alignment
    const guide: Guide = {
      ...base,
      lossFragment: (g, image, size) => g.op('Add', [base.lossFragment(g, image, size), g.input('offset', 'float32', [])]),
      async feeds(preview) {
        if (preview) seen.push([preview.width, preview.height, preview.data.reduce((a, b) => a + b, 0) / preview.data.length])
        return { offset: new ort.Tensor('float32', Float32Array.of(preview ? 1000 : 0), []) }
      },
    }
    const result = await lookahead({ ...settings, guide, recur: 2 })
    assert.deepEqual(seen.map(([w, h]) => [w, h]), [[SIZE, SIZE], [SIZE, SIZE]]) // one preview per round
    assert.ok(seen.every(([, , mean]) => Number.isFinite(mean)))
    assert.ok(result.iterations.every(i => i.loss >= 1000), 'every update used the inputs found on the preview')
  })

  it('refuses guidance without a loss (a guide step outside the schedule is refused where settings are read)', async () => {
    await assert.rejects(lookahead({ ...settings, guide: undefined }), /needs a loss/)
    assert.ok(existsSync(models))
  })

  it('runs an fp16 UNet export: casts at its boundary, loss and update in float32', async () => {
    // the world's UNets behind an fp16 interface, as an fp16 optimum export declares its I/O
    const fp16 = join(dir, 'fp16')
    await cp(models, fp16, { recursive: true })
    for (const file of ['unet/model.onnx', 'lcm_unet/model.onnx']) {
      const source = await readModel(join(models, file))
      const g = new Builder('fp16_unet', 17)
      const inputs: Record<string, string> = {}
      for (const input of graphOf(source.model).input) {
        const name = input.name!
        const tensor = input.type!.tensorType!
        const shape = tensor.shape!.dim!.map(d => d.dimParam || Number(d.dimValue))
        // float inputs become float16 (cast back inside); the timestep stays as declared
        inputs[name] = tensor.elemType === 1 && name !== 'timestep' ? g.op('Cast', [g.input(name, 'float16', shape)], { to: 1 }) : g.input(name, 'float32', shape)
      }
      const eps = embedModel(g, source, inputs, 'f32/').out_sample
      g.outputAs(g.op('Cast', [eps], { to: 10 }), 'out_sample', 'float16', ['batch', 4, SIZE / 8, SIZE / 8])
      await writeModel({ model: g.build(), dir: source.dir }, join(fp16, file))
    }
    const result = await lookahead({ ...settings, models: fp16, cacheDir: join(dir, 'cache16') })
    const losses = result.iterations.map(i => i.loss)
    assert.ok(losses[5] < losses[0], `fp16 loss ${losses[0]} → ${losses[5]}`)
    assert.ok(result.image.data.every(Number.isFinite))
  })
})
