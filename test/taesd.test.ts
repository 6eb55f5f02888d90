// TAESD built from its published weights (src/diffusion/taesd.ts): the real TAESDXL round trip, the decoder's
// gradient against finite differences, both namings and all three dtypes, and a models folder that holds
// taesdxl_decoder.safetensors in place of an ONNX export.
import assert from 'node:assert/strict'
import { copyFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { decode, openDecoder } from '../src/diffusion/decoders.js'
import { checkModels, ModelsFolder } from '../src/diffusion/models-folder.js'
import { readSafetensors, toHalf, f32, floatValues, type NamedTensor } from '../src/diffusion/safetensors.js'
import { taesdGraph, taesdModel, taesdWeights, TAESD_IO } from '../src/diffusion/taesd.js'
import { writeTinyModels } from '../src/diffusion/tiny/index.js'
import { loadImage } from '../src/image/image.js'
import { differentiate } from '../src/onnx/autodiff.js'
import { gradcheck } from '../src/onnx/gradcheck.js'
import { encodeModel, type ModelProto } from '../src/onnx/proto.js'
import { closeSessions, ort } from '../src/onnx/session.js'
import { fixtureOrSkip } from './fixtures.js'

const run = async (model: ModelProto, input: string, data: Float32Array, dims: number[]) => {
  const session = await ort.InferenceSession.create(encodeModel(model))
  try {
    const result = await session.run({ [input]: new ort.Tensor('float32', data, dims) })
    return Object.values(result)[0] as ort.Tensor
  } finally {
    await session.release()
  }
}

const maxDifference = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0)

describe('TAESD from safetensors', function () {
  this.timeout(120000)
  after(closeSessions)

  it('round-trips obama.jpg at 256² through the real TAESDXL encoder and decoder at ≥ 23 dB PSNR', async function () {
    const encoderPath = fixtureOrSkip(this, 'taesd/taesdxl_encoder.safetensors')
    const decoderPath = fixtureOrSkip(this, 'taesd/taesdxl_decoder.safetensors')
    const image = await loadImage(fixtureOrSkip(this, 'faces/obama.jpg'), { size: 256 })
    const rgb = image.data.map(v => (v + 1) / 2) // the encoder takes [0,1]
    const latents = await run((await taesdModel(encoderPath, 'encoder')).model, TAESD_IO.encoder.input, rgb, [1, 3, 256, 256])
    assert.deepEqual(latents.dims, [1, 4, 32, 32])
    const decoded = await run((await taesdModel(decoderPath, 'decoder')).model, TAESD_IO.decoder.input, latents.data as Float32Array, [...latents.dims])
    assert.deepEqual(decoded.dims, [1, 3, 256, 256])
    const out = decoded.data as Float32Array
    let squared = 0
    for (let i = 0; i < out.length; i++) squared += (Math.min(1, Math.max(0, out[i])) - rgb[i]) ** 2
    const psnr = 10 * Math.log10(1 / (squared / out.length))
    console.log(`      round trip PSNR ${psnr.toFixed(2)} dB (torch with these weights: 23.75 dB)`)
    assert.ok(psnr >= 23, `PSNR ${psnr.toFixed(2)} dB`)
  })

  it("gives the same decoder from madebyollin's and diffusers' naming, in bf16, fp16 and fp32", async function () {
    const stored = await readSafetensors(fixtureOrSkip(this, 'taesd/taesdxl_decoder.safetensors'))
    const asF32 = new Map([...stored].map(([name, t]) => [name, f32(t.shape, floatValues(t))] as [string, NamedTensor]))
    // diffusers' DecoderTiny has no Clamp module: its layer N is taesd.py's N + 1
    const diffusers = new Map([...stored].map(([name, t]) => {
      const [index, ...rest] = name.split('.')
      return [['decoder', 'layers', Number(index) - 1, ...rest].join('.'), toHalf(t)] as [string, NamedTensor]
    }))
    const latent = Float32Array.from({ length: 4 * 8 * 8 }, (_, i) => Math.sin(i * 0.37) * 2)
    const decodeWith = async (tensors: Map<string, NamedTensor>) =>
      (await run(taesdGraph(taesdWeights(tensors, 'decoder'), 'decoder').build(), 'latent_sample', latent, [1, 4, 8, 8])).data as Float32Array
    const reference = await decodeWith(stored) // bf16, madebyollin's naming
    assert.ok(maxDifference(reference, await decodeWith(asF32)) === 0, 'bf16 widened to fp32 is exact')
    // fp16 rounds bf16's 8-bit mantissas exactly, except where the exponent range differs (none in these weights)
    assert.ok(maxDifference(reference, await decodeWith(diffusers)) < 1e-5)
    assert.ok(Math.max(...reference) - Math.min(...reference) > 0.2, 'the decoded image is not flat')
  })

  it('says which part a file holds when the other is asked for', async function () {
    const encoderPath = fixtureOrSkip(this, 'taesd/taesdxl_encoder.safetensors')
    await assert.rejects(taesdModel(encoderPath, 'decoder'), /no TAESD decoder weights \(it looks like a TAESD encoder\)/)
    await assert.rejects(Promise.resolve().then(() => taesdWeights(new Map([['foo', f32([1], Float32Array.of(1))]]), 'encoder', 'x.safetensors')), /x.safetensors: no TAESD encoder weights; expected/)
  })

  it('has a decoder gradient that matches finite differences', async function () {
    const weights = taesdWeights(await readSafetensors(fixtureOrSkip(this, 'taesd/taesdxl_decoder.safetensors')), 'decoder')
    const g = taesdGraph(weights, 'decoder')
    // a loss that weights every pixel differently, so no symmetry hides an error; a 2×2 latent (16² image) and a
    // small step, because each of the decoder's ReLUs a step crosses adds an error of the order of the step
    const mask = g.constant(Float32Array.from({ length: 3 * 16 * 16 }, (_, i) => Math.cos(i * 0.11)), [1, 3, 16, 16])
    g.outputAs(g.op('ReduceMean', [g.op('Mul', [g.op('Mul', ['sample', 'sample']), mask])], { keepdims: 0 }), 'loss', 'float32', [])
    const model = g.build()
    const gradient = differentiate({ model, dir: '.' }, { wrt: ['latent_sample'], of: 'loss' })
    const dims = { batch_size: 1, height: 2, width: 2 }
    const result = await gradcheck(encodeModel(model), encodeModel(gradient.model), { wrt: ['latent_sample'], of: 'loss', dims, directions: 4, epsilon: 3e-5 })
    console.log(`      worst relative error ${result.worst.toExponential(2)}`)
    assert.ok(result.worst < 1e-2, `worst relative error ${result.worst}`)
  })

  it('decodes from taesdxl_decoder.safetensors in a models folder, which `models` accepts', async function () {
    const weights = fixtureOrSkip(this, 'taesd/taesdxl_decoder.safetensors')
    const dir = await mkdtemp(join(tmpdir(), 'lookahead-taesd-'))
    const savedCache = process.env.LOOKAHEAD_CACHE
    process.env.LOOKAHEAD_CACHE = join(dir, 'cache') // the decoder built from the weights is cached here
    try {
      await writeTinyModels(dir)
      await rm(join(dir, 'taesdxl_decoder'), { recursive: true })
      await copyFile(weights, join(dir, 'taesdxl_decoder.safetensors'))
      const report = (await checkModels(dir)).find(r => r.piece === 'taesdxl_decoder')
      assert.equal(report?.status, 'ok', JSON.stringify(report))
      assert.match(report!.notes.join(' '), /\[0,1\]/)
      const decoder = await openDecoder(await ModelsFolder.at(dir), 'taesd')
      assert.deepEqual([decoder.inputScale, decoder.outputScale, decoder.outputShift], [1, 2, -1]) // [0,1] mapped to [-1,1]
      const image = await decode(decoder, { data: new Float32Array(4 * 4 * 4).fill(0.5), dims: [1, 4, 4, 4] })
      assert.deepEqual(image.dims, [1, 3, 32, 32])
      assert.ok(image.data.every(v => v >= -1.5 && v <= 1.5))
    } finally {
      if (savedCache === undefined) delete process.env.LOOKAHEAD_CACHE
      else process.env.LOOKAHEAD_CACHE = savedCache
      await rm(dir, { recursive: true, force: true })
    }
  })
})
