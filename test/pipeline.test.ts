import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { conditioning, encodePrompt, inputTensor, outputTensor, penultimateHiddenState, unetFeeds } from '../src/diffusion/conditioning.js'
import { decode, openDecoder, VAE_SCALING_FACTOR } from '../src/diffusion/decoders.js'
import { ModelsFolder } from '../src/diffusion/models-folder.js'
import { ddimLoop, generate, initialNoise, loadSdxl, unetEpsModel } from '../src/diffusion/pipeline.js'
import { alphaBar, ddimTimesteps, guide } from '../src/diffusion/schedulers.js'
import { writeTinyModels } from '../src/diffusion/tiny/index.js'
import { GraphBuilder } from '../src/onnx/builder.js'
import { writeModelWithExternalData } from '../src/onnx/proto.js'
import { closeSessions, openSession } from '../src/onnx/session.js'

const size = { width: 64, height: 64 }

describe('SDXL pipeline', () => {
  let dir: string
  const savedCache = process.env.LOOKAHEAD_CACHE
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lookahead-pipeline-'))
    process.env.LOOKAHEAD_CACHE = join(dir, 'cache') // the LoRA'd UNet is cached here
    await writeTinyModels(join(dir, 'tiny'), { generation: 'optimum-1.23' })
  })
  after(async () => {
    if (savedCache === undefined) delete process.env.LOOKAHEAD_CACHE
    else process.env.LOOKAHEAD_CACHE = savedCache
    await closeSessions()
    await rm(dir, { recursive: true, force: true })
  })

  it('conditions on hidden_states[-2] of both encoders, concatenated, and encoder 2\'s text_embeds', async () => {
    const models = await loadSdxl(join(dir, 'tiny'))
    const text = models.text!
    assert.deepEqual(text.encoders.map(penultimateHiddenState), ['hidden_states.2', 'hidden_states.2'])
    const embeddings = await encodePrompt('a cat', text)
    assert.deepEqual(embeddings.hidden.dims, [1, 77, 80])
    assert.deepEqual(embeddings.pooled.dims, [1, 32])
    // the same numbers straight from the sessions
    const [one, two] = await Promise.all(text.encoders.map((e, i) =>
      e.run({ input_ids: inputTensor(e.input('input_ids'), text.tokenizers[i].ids('a cat'), [1, 77]) })))
    const h1 = outputTensor(one['hidden_states.2']).data
    const h2 = outputTensor(two['hidden_states.2']).data
    for (const token of [0, 5, 76]) {
      assert.deepEqual(embeddings.hidden.data.slice(token * 80, token * 80 + 32), h1.slice(token * 32, token * 32 + 32))
      assert.deepEqual(embeddings.hidden.data.slice(token * 80 + 32, token * 80 + 80), h2.slice(token * 48, token * 48 + 48))
    }
    assert.deepEqual(embeddings.pooled.data, outputTensor(two.text_embeds).data)
  })

  it('builds the CFG batch [negative, positive], zeros without a negative prompt, and SDXL time ids', async () => {
    const models = await loadSdxl(join(dir, 'tiny'))
    const zeroNegative = await conditioning({ prompt: 'a cat', cfg: 5, size }, models.unet, models.text)
    assert.deepEqual(zeroNegative.encoderHiddenStates.dims, [2, 77, 80])
    const half = 77 * 80
    assert.ok(zeroNegative.encoderHiddenStates.data.subarray(0, half).every(v => v === 0))
    assert.ok(zeroNegative.textEmbeds.data.subarray(0, 32).every(v => v === 0))
    const positive = await encodePrompt('a cat', models.text!)
    assert.deepEqual(zeroNegative.encoderHiddenStates.data.subarray(half), positive.hidden.data)
    assert.deepEqual(Array.from(zeroNegative.timeIds.data), [64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64])
    const emptyNegative = await conditioning({ prompt: 'a cat', negative: '', cfg: 5, size }, models.unet, models.text)
    assert.deepEqual(emptyNegative.encoderHiddenStates.data.subarray(0, half), (await encodePrompt('', models.text!)).hidden.data)
    const noCfg = await conditioning({ prompt: 'a cat', cfg: 1, size }, models.unet, models.text)
    assert.deepEqual(noCfg.encoderHiddenStates.dims, [1, 77, 80])
  })

  it('feeds inputs in the dtype each session declares (fp16 exports included) and reads fp16 outputs', () => {
    const values = [0.5, -1.25, 981]
    const half = inputTensor({ name: 'sample', type: 'float16', shape: [3] }, values, [3])
    assert.equal(half.type, 'float16')
    assert.deepEqual(Array.from(outputTensor(half).data), values) // all three are exact in fp16
    assert.deepEqual(Array.from(inputTensor({ name: 'timestep', type: 'int64', shape: ['steps'] }, [981], [1]).data as BigInt64Array), [981n])
    assert.deepEqual(Array.from(inputTensor({ name: 'input_ids', type: 'int32', shape: [1, 77] }, [49406, 49407], [1, 2]).data as Int32Array), [49406, 49407])
    assert.throws(() => inputTensor({ name: 'x', type: 'string', shape: [] }, [1], []), /expected float32, float16, int64 or int32/)
  })

  it('applies classifier-free guidance to the two halves of one batched UNet call', async () => {
    const models = await loadSdxl(join(dir, 'tiny'))
    const cond = await conditioning({ prompt: 'a cat', cfg: 5, size }, models.unet, models.text)
    const x = initialNoise(3, [1, 4, 8, 8])
    const eps = await unetEpsModel(models.unet, cond, 5)(x, 501)
    const batch = { data: new Float32Array([...x.data, ...x.data]), dims: [2, 4, 8, 8] }
    const both = outputTensor((await models.unet.run(unetFeeds(models.unet, batch, 501, cond))).out_sample).data
    assert.deepEqual(eps, guide(both.subarray(0, 256), both.subarray(256), 5))
  })

  it("folds the sampling UNet at the sampler's dims, with the export's outputs", async () => {
    const [exported, folded] = [await loadSdxl(join(dir, 'tiny')), await loadSdxl(join(dir, 'tiny'), {}, { cfg: 5, size })]
    assert.deepEqual([exported.unet.input('sample').shape, folded.unet.input('sample').shape], [['batch_size', 4, 'height', 'width'], [2, 4, 8, 8]])
    const cond = await conditioning({ prompt: 'a cat', cfg: 5, size }, exported.unet, exported.text)
    const x = initialNoise(3, [2, 4, 8, 8])
    const [a, b] = [exported, folded].map(async ({ unet }) => outputTensor((await unet.run(unetFeeds(unet, x, 501, cond))).out_sample).data)
    const [ours, theirs] = [await a, await b]
    // the same ops in float32 (onnxruntime fuses the static graph differently: rounding only)
    const worst = ours.reduce((m, v, i) => Math.max(m, Math.abs(v - theirs[i])), 0) / Math.max(...ours.map(Math.abs))
    assert.ok(worst < 1e-5, `the folded UNet's ε differs from the export's by ${worst} of its largest value`)
  })

  it('runs the DDIM loop with hooks that can replace x_t, from any start step', async () => {
    // with ε ≡ 0 each step multiplies x by √(ᾱ_prev/ᾱ_t): the product telescopes to √(ᾱ[0]/ᾱ_first)
    const zero = async (x: { data: Float32Array }) => new Float32Array(x.data.length)
    const x = { data: Float32Array.of(1, -2), dims: [2] }
    const seen: number[] = []
    const result = await ddimLoop(x, 10, zero, { afterStep: ({ t }) => void seen.push(t) })
    assert.deepEqual(seen, ddimTimesteps(10))
    const factor = Math.sqrt(alphaBar(0) / alphaBar(901))
    assert.ok(Math.abs(result.data[0] - factor) < 1e-4 && Math.abs(result.data[1] + 2 * factor) < 1e-4)
    const replaced = await ddimLoop(x, 10, zero, { beforeStep: ({ index, x }) => (index === 8 ? { data: Float32Array.of(5, 5), dims: x.dims } : undefined) }, 7)
    const last = Math.sqrt(alphaBar(0) / alphaBar(101)) // steps 101 → 1 → end
    assert.ok(Math.abs(replaced.data[0] - 5 * last) < 1e-4)
  })

  it('decodes with the VAE (latents / 0.13025) and TAESDXL (latents as they are) to [-1,1]', async () => {
    const latents = initialNoise(4, [1, 4, 8, 8])
    const vae = await openDecoder(await ModelsFolder.at(join(dir, 'tiny')), 'vae')
    const image = await decode(vae, latents)
    assert.deepEqual(image.dims, [1, 3, 64, 64])
    const raw = await vae.session.run({ latent_sample: inputTensor(vae.session.input('latent_sample'), latents.data.map(v => v / VAE_SCALING_FACTOR), latents.dims) })
    assert.deepEqual(image.data, outputTensor(raw.sample).data)
    // the tiny TAESDXL ends in ·2 − 1 like diffusers' DecoderTiny: its output is used as it is, on unscaled latents
    const taesd = await openDecoder(await ModelsFolder.at(join(dir, 'tiny')), 'taesd')
    assert.deepEqual([taesd.inputScale, taesd.outputScale, taesd.outputShift], [1, 1, 0])
    const direct = await taesd.session.run({ latent_sample: inputTensor(taesd.session.input('latent_sample'), latents.data, latents.dims) })
    assert.deepEqual((await decode(taesd, latents)).data, outputTensor(direct.sample).data)
    // a raw taesd.py Decoder export ends in a Conv and gives [0,1]: mapped by 2y − 1
    const g = new GraphBuilder('raw_taesd', 17)
    const input = g.input('latent_sample', 'float32', ['batch', 4, 'h', 'w'])
    g.outputAs(g.op('Conv', [input, g.constant(Float32Array.from({ length: 12 }, (_, i) => (i % 5 === 0 ? 1 : 0)), [3, 4, 1, 1])]), 'sample', 'float32', ['batch', 3, 'h', 'w'])
    await writeModelWithExternalData(g.build(), join(dir, 'raw', 'taesdxl_decoder', 'model.onnx'))
    const raw01 = await openDecoder(await ModelsFolder.at(join(dir, 'raw')), 'taesd')
    assert.deepEqual([raw01.outputScale, raw01.outputShift], [2, -1])
    const decoded = await decode(raw01, latents)
    assert.ok(Math.abs(decoded.data[0] - (2 * latents.data[0] - 1)) < 1e-6)
  })

  it('runs the LCM-LoRA UNet (branches, lora_scale fed) and worlds without text (zero conditioning)', async () => {
    const lcm = await openSession(await (await ModelsFolder.at(join(dir, 'tiny'))).lcmUnet())
    const models = await loadSdxl(join(dir, 'tiny'))
    const cond = await conditioning({ prompt: 'a cat', cfg: 1, size }, models.unet, models.text)
    const x = initialNoise(5, [1, 4, 8, 8])
    const [full, none, base] = [await unetEpsModel(lcm, cond, 1, 1)(x, 499), await unetEpsModel(lcm, cond, 1, 0)(x, 499), await unetEpsModel(models.unet, cond, 1)(x, 499)]
    assert.ok(none.every((v, i) => Math.abs(v - base[i]) < 1e-5))
    assert.ok(full.some((v, i) => Math.abs(v - base[i]) > 1e-3))

    const textless = join(dir, 'textless')
    await writeTinyModels(textless)
    await writeFile(join(textless, 'world.json'), JSON.stringify({ kind: 'tiny', text: false }))
    await rm(join(textless, 'text_encoder'), { recursive: true })
    const a = await generate({ prompt: 'one', steps: 2, cfg: 3, seed: 1, size, models: textless })
    const b = await generate({ prompt: 'two', steps: 2, cfg: 3, seed: 1, size, models: textless })
    assert.deepEqual(a.latents.data, b.latents.data)
  })
})
