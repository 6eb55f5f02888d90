// The preview table and the N-step LCM preview: its graph against the same steps taken one by one, its
// gradient against finite differences, and one copy of the UNet's weights however many steps it takes.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { differentiate } from '../src/onnx/autodiff.js'
import { gradcheck } from '../src/onnx/gradcheck.js'
import { graphOf, writeModel, type TensorProto } from '../src/onnx/proto.js'
import { closeSessions, openSession, ort } from '../src/onnx/session.js'
import { initialNoise } from '../src/diffusion/pipeline.js'
import { alphaBar, lcmPreviewCoefficients } from '../src/diffusion/schedulers.js'
import { previewModels } from '../src/guidance/engine.js'
import { pixelGuide } from '../src/guidance/guide.js'
import { buildPreviewGraph, IMAGE, LATENT, LOSS, previewStepInputs } from '../src/guidance/preview.js'
import { previewStepsOf, PREVIEW_KINDS, PREVIEWS, previewTimesteps, previewUnetCalls } from '../src/guidance/previews.js'
import { drawnFaces } from '../src/world/world.js'
import { buildWorldFolder } from '../src/world/models.js'

const SIZE = 32
const LATENT_SHAPE = [1, 4, SIZE / 8, SIZE / 8]

describe('previews (table, N-step LCM preview)', function () {
  this.timeout(120000)
  let dir: string
  let models: string
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lookahead-preview-'))
    models = join(dir, 'world')
    await buildWorldFolder(models, { settings: { size: SIZE, lcmSteps: 40 } })
  })
  after(async () => { await closeSessions(); await rm(dir, { recursive: true, force: true }) })

  const graph = async (steps: number, withLoss: boolean) => {
    const parts = await previewModels(models, 'lcm')
    const g = buildPreviewGraph({ ...parts, decoderScales: parts.scales, cfg: 1, latentShape: LATENT_SHAPE, imageSize: { height: SIZE, width: SIZE }, steps, guide: withLoss ? pixelGuide(drawnFaces(SIZE)[2].pixels) : undefined })
    return { model: g.build(), dir: parts.unet.dir }
  }

  it('lists each preview with its UNet, CFG and steps; lcm alone takes several steps', () => {
    assert.deepEqual(PREVIEW_KINDS, ['x0', 'lcm'])
    assert.equal(PREVIEWS.x0.defaultCfg(5), 5)
    assert.equal(PREVIEWS.lcm.defaultCfg(5), 1)
    assert.equal(previewUnetCalls(2, 1), 2)
    assert.equal(previewUnetCalls(1, 5), 2)
    assert.equal(previewStepsOf('lcm', 3), 3)
    assert.equal(previewStepsOf('x0', 2), 1)
    assert.throws(() => previewStepsOf('lcm', 0), /positive integer/)
    assert.deepEqual(previewTimesteps(801, 2), [801, 401])
  })

  it('takes two LCM steps in one graph as the same steps taken one by one (re-noised with the given noise)', async () => {
    const path = join(dir, 'two-steps.onnx')
    await writeModel(await graph(2, false), path)
    const composed = await openSession(path)
    const unet = await openSession(join(models, 'lcm_unet', 'model.onnx'))
    const decoder = await openSession(join(models, 'taesdxl_decoder', 'model.onnx'))
    const t = 701
    const x = initialNoise(5, LATENT_SHAPE).data
    const tensor = (data: Float32Array, dims = LATENT_SHAPE) => new ort.Tensor('float32', data, dims)
    const scalar = (v: number) => new ort.Tensor('float32', Float32Array.of(v), [])
    const conditioning = {
      encoder_hidden_states: tensor(new Float32Array(77 * 2048), [1, 77, 2048]),
      text_embeds: tensor(new Float32Array(1280), [1, 1280]),
      time_ids: tensor(new Float32Array(6), [1, 6]),
    }
    const { coefficients, timesteps, noises } = previewStepInputs('lcm', t, 2, LATENT_SHAPE, 9)
    const out = await composed.run({
      [LATENT]: tensor(x), timestep: scalar(t), ...conditioning,
      ...Object.fromEntries(Object.entries(coefficients).map(([k, v]) => [k, scalar(v)])),
      ...Object.fromEntries(Object.entries(timesteps).map(([k, v]) => [k, scalar(v)])),
      ...Object.fromEntries(Object.entries(noises).map(([k, v]) => [k, tensor(v.data)])),
    }, [IMAGE])

    // the same by hand: x̂₀ at t, x_{t₁} = √ᾱ·x̂₀ + √(1−ᾱ)·noise, x̂₀ at t₁, decoded
    const step = async (xi: Float32Array, ti: number) => {
      const eps = (await unet.run({ sample: tensor(xi), timestep: scalar(ti), ...conditioning })).out_sample.data as Float32Array
      const { a, b } = lcmPreviewCoefficients(ti)
      return xi.map((v, i) => a * v + b * eps[i])
    }
    const t1 = previewTimesteps(t, 2)[1]
    const first = await step(x, t)
    const noise = noises.noise_1.data
    const second = await step(first.map((v, i) => Math.sqrt(alphaBar(t1)) * v + Math.sqrt(1 - alphaBar(t1)) * noise[i]), t1)
    const image = (await decoder.run({ latent_sample: tensor(second) })).sample.data as Float32Array
    const got = out[IMAGE].data as Float32Array
    let worst = 0
    for (let i = 0; i < image.length; i++) worst = Math.max(worst, Math.abs(got[i] - image[i]))
    assert.ok(worst < 1e-3, `largest difference ${worst}`)
    // and the second step changed the preview: it is not the one-step preview again
    const one = (await decoder.run({ latent_sample: tensor(first) })).sample.data as Float32Array
    assert.ok(one.some((v, i) => Math.abs(v - image[i]) > 1e-2))
  })

  it('holds one copy of the UNet\'s weights for two steps', async () => {
    const bytes = (model: Awaited<ReturnType<typeof graph>>) => (graphOf(model.model).initializer as TensorProto[]).reduce((sum, t) => sum + (t.rawData?.length ?? 0), 0)
    const [one, two] = [await graph(1, true), await graph(2, true)]
    const basis = (model: typeof one) => graphOf(model.model).initializer.filter(t => t.name?.startsWith('unet') && t.name.includes('basis')).length
    assert.equal(basis(two), basis(one))
    assert.equal(bytes(two), bytes(one))
    assert.equal(graphOf(two.model).node.filter(n => n.name?.startsWith('unet1/')).length, graphOf(one.model).node.filter(n => n.name?.startsWith('unet/')).length)
  })

  it('differentiates the two-step preview correctly (finite differences)', async () => {
    const model = await graph(2, true)
    const [forward, gradient] = [join(dir, 'forward2.onnx'), join(dir, 'gradient2.onnx')]
    await writeModel(model, forward)
    await writeModel(differentiate(model, { wrt: [LATENT, 'noise_1'], of: LOSS }), gradient)
    const result = await gradcheck(forward, gradient, { wrt: [LATENT, 'noise_1'], of: LOSS, seed: 2, directions: 4 })
    assert.ok(result.worst < 1e-2, `worst relative error ${result.worst}`)
  })
})
