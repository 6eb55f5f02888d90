// The project's own torch-exported SDXL fixture (samples/export/torch/sdxl_fixture.py, exported as optimum 1.23
// does: Constant/Shape/Gather chains, Expand(timestep, Where(Equal(..))), baddbmm attention, external data with
// convert_attribute): `lookahead models` passes it, `generate` runs on it, and the engine's LCM-preview gradient
// model matches torch autograd on the same modules. Skips where Debian's python3-torch is absent.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { checkModels } from '../src/diffusion/models-folder.js'
import { conditioning, outputTensor, unetFeeds } from '../src/diffusion/conditioning.js'
import { generate, initialNoise, loadSdxl } from '../src/diffusion/pipeline.js'
import { opCounts } from '../src/onnx/fold.js'
import { graphOf, readModel } from '../src/onnx/proto.js'
import { gradientSession, previewImageSession, previewModels, previewShape } from '../src/guidance/engine.js'
import { pixelGuide } from '../src/guidance/guide.js'
import { closeSessions, ort, type Session } from '../src/onnx/session.js'
import { torchMissing, writeTorchFixture } from '../samples/export/torch/fixture.js'

interface Reference {
  inputs: Record<string, { type: 'int64' | 'float32'; dims: number[]; data: number[] }>
  loss: number
  image: number[]
  latent_grad: number[]
}

describe('torch-exported SDXL fixture', function () {
  this.timeout(300000)
  let dir: string
  let models: string
  let referenceMissing = false
  const savedCache = process.env.LOOKAHEAD_CACHE

  before(async function () {
    this.timeout(900000) // the export: about 25 s alone, minutes on a busy machine
    const missing = await torchMissing()
    if (missing) {
      console.log(`      skipped: ${missing}`)
      this.skip()
    }
    dir = await mkdtemp(join(tmpdir(), 'lookahead-torch-'))
    models = join(dir, 'models')
    process.env.LOOKAHEAD_CACHE = join(dir, 'cache') // the LoRA'd UNet and the gradient model are cached here
    // torch's own reference is now and then non-finite under mocha (see write_reference in sdxl_fixture.py): then
    // the fixture is exported without it and the two comparisons with torch skip, saying so
    try {
      console.log(`      ${await writeTorchFixture(models, { depth: 'tiny', threshold: 1024, reference: true })}`)
    } catch (error) {
      if (!/reference preview is not finite/.test(String(error))) throw error
      await rm(`${models}.partial`, { recursive: true, force: true })
      console.log(`      ${await writeTorchFixture(models, { depth: 'tiny', threshold: 1024 })} (torch's reference was not finite)`)
      referenceMissing = true
    }
  })
  after(async () => {
    await closeSessions()
    if (savedCache === undefined) delete process.env.LOOKAHEAD_CACHE
    else process.env.LOOKAHEAD_CACHE = savedCache
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  const skipWithoutReference = (test: Mocha.Context) => {
    if (!referenceMissing) return
    console.log("      skipped: torch's own reference came out non-finite in this run (a known flake of the fixture's torch run)")
    test.skip()
  }

  it('passes `lookahead models`', async () => {
    const reports = await checkModels(models)
    const status = Object.fromEntries(reports.map(r => [r.piece, r.status]))
    for (const piece of ['unet', 'text_encoder', 'text_encoder_2', 'tokenizer', 'tokenizer_2', 'vae_decoder', 'lcm_lora', 'unet ↔ text encoders']) {
      assert.equal(status[piece], 'ok', `${piece}: ${JSON.stringify(reports.find(r => r.piece === piece))}`)
    }
  })

  it('runs `generate`', async () => {
    const { image, decoder } = await generate({ prompt: 'a photo of the cat', steps: 3, cfg: 5, seed: 0, size: { height: 64, width: 64 }, models })
    assert.equal(decoder, 'vae')
    assert.deepEqual(image.dims, [1, 3, 64, 64])
    assert.ok(image.data.every(Number.isFinite))
    const mean = image.data.reduce((s, v) => s + v, 0) / image.data.length
    assert.ok(image.data.some(v => Math.abs(v - mean) > 1e-3), 'the image is not flat')
  })

  it("folds the sampling UNet at the sampler's dims: the export's shape arithmetic gone, its outputs kept", async () => {
    const size = { height: 64, width: 64 }
    const [exported, folded] = [await loadSdxl(models), await loadSdxl(models, {}, { cfg: 5, size })]
    const [before, after] = [await readModel(exported.unet.path), await readModel(folded.unet.path)]
    const ops = opCounts(after.model)
    console.log(`      UNet nodes: ${graphOf(before.model).node.length} exported, ${graphOf(after.model).node.length} folded at batch 2`)
    assert.ok(graphOf(after.model).node.length < 0.5 * graphOf(before.model).node.length)
    assert.deepEqual([ops.Shape, ops.Where, ops.ConstantOfShape], [undefined, undefined, undefined])
    const cond = await conditioning({ prompt: 'a photo of the cat', cfg: 5, size }, exported.unet, exported.text)
    const x = initialNoise(3, [2, 4, 8, 8])
    const eps = async (unet: Session) => outputTensor((await unet.run(unetFeeds(unet, x, 501, cond))).out_sample).data
    const [ours, theirs] = [await eps(exported.unet), await eps(folded.unet)]
    const worst = ours.reduce((m, v, i) => Math.max(m, Math.abs(v - theirs[i])), 0) / Math.max(...ours.map(Math.abs))
    console.log(`      ε: max |folded − exported| / max |exported| = ${worst.toExponential(2)}`)
    assert.ok(worst < 1e-5, `the folded UNet's ε differs by ${worst}`)
  })

  /** The reference's inputs as feeds, with the LCM-LoRA at full strength (fused at scale 1 in torch's reference). */
  const referenceFeeds = (reference: Reference): Record<string, ort.Tensor> => ({
    ...Object.fromEntries(Object.entries(reference.inputs).map(([name, { type, dims, data }]) =>
      [name, type === 'int64' ? new ort.Tensor('int64', BigInt64Array.from(data, BigInt), dims) : new ort.Tensor('float32', Float32Array.from(data), dims)])),
    lora_scale: new ort.Tensor('float32', Float32Array.of(1), []),
  })
  const relativeError = (ours: ArrayLike<number>, torch: number[]) =>
    torch.reduce((m, v, i) => Math.max(m, Math.abs(v - ours[i])), 0) / Math.max(...torch.map(Math.abs))

  it("decodes the LCM preview as torch does (the engine's composed forward)", async function () {
    skipWithoutReference(this)
    const reference = JSON.parse(await readFile(join(models, 'reference.json'), 'utf8')) as Reference
    const session = await previewImageSession(await previewModels(models, 'lcm'), previewShape(1, reference.inputs.latent.dims), {})
    const image = (await session.run(referenceFeeds(reference), ['image'])).image.data as Float32Array
    const worst = relativeError(image, reference.image)
    console.log(`      image: max |ours − torch| / max |torch| = ${worst.toExponential(2)}`)
    assert.ok(worst < 1e-4, `image differs from torch's by ${worst}`)
  })

  it("has an LCM-preview gradient model that matches torch autograd", async function () {
    skipWithoutReference(this)
    // folded (onnx/fold.ts) the gradient is static; unfolded, the export's Expand(timestep, Where(Equal(..))) made
    // every broadcast dynamic and the session took many minutes to create
    const reference = JSON.parse(await readFile(join(models, 'reference.json'), 'utf8')) as Reference
    const session = await gradientSession(await previewModels(models, 'lcm'), pixelGuide(), previewShape(1, reference.inputs.latent.dims), {})
    const result = await session.run(referenceFeeds(reference), ['loss', 'latent_grad'])
    const worst = relativeError(result.latent_grad.data as Float32Array, reference.latent_grad)
    const loss = (result.loss.data as Float32Array)[0]
    console.log(`      loss ${loss} (torch ${reference.loss}); gradient: max |ours − torch| / max |torch| = ${worst.toExponential(2)}`)
    assert.ok(Math.abs(loss - reference.loss) <= 1e-4 * Math.abs(reference.loss), `loss ${loss} vs torch ${reference.loss}`)
    assert.ok(worst < 1e-4, `gradient differs from torch's by ${worst}`)
  })
})
