// The SDXL-shaped graphs of samples/bench/sdxl-shape.ts: valid graphs with optimum's I/O (a scaled-down UNet of
// the same structure runs in onnxruntime from its sparse, all-zero external weights file), weights laid out
// as one contiguous external file, layers named by their diffusers module paths (what LoRA matches), and TAESD's
// decoder size.
import assert from 'node:assert/strict'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openSession, ort } from '../src/onnx/session.js'
import { loraTargets } from '../src/diffusion/lora.js'
import { type UnetShape } from '../src/diffusion/tiny/index.js'
import { SDXL_UNET, parameterCount, sparseSdxlUnet, taesdShapedDecoder, writeShapedModels } from '../samples/bench/sdxl-shape.js'

/** SDXL's structure (3 levels, depths 0/1/2 transformer blocks, 2 layers per block) at a few dozen channels. */
const SMALL: UnetShape = { ...SDXL_UNET, channels: [32, 64, 128], depths: [0, 1, 2], heads: [1, 2, 4], groups: 8, contextDim: 32, pooledDim: 16, addTimeProj: 8 }

const zeros = (dims: number[]) => new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims)

describe('SDXL-shaped models (samples/bench/sdxl-shape.ts)', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sdxl-shape-test-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('writes the UNet\'s weights as contiguous external data in a sparse file of the right size', async () => {
    const unet = sparseSdxlUnet(SMALL, 18)
    await writeShapedModels(dir, unet, taesdShapedDecoder(18, 8, [1, 1, 1, 1]))
    let next = 0
    for (const t of unet.initializers.filter(t => t.externalData.length > 0)) {
      const field = (key: string) => Number(t.externalData.find(e => e.key === key)!.value)
      assert.equal(field('offset'), next, t.name)
      next += field('length')
    }
    const file = await stat(join(dir, 'unet', 'weights.bin'))
    assert.equal(file.size, next)
    assert.ok(file.blocks * 512 < 64 * 1024, 'weights.bin should take no disk space')
    for (const t of unet.initializers) {
      const bytes = 4 * t.dims.reduce<number>((a, d) => a * Number(d), 1)
      assert.equal(t.externalData.length > 0, t.dataType === 1 && bytes >= 1024, `${t.name}: external exactly when float32 of ≥ 1 KiB`)
    }
  })

  it('runs in onnxruntime with optimum\'s I/O', async () => {
    const session = await openSession(join(dir, 'unet', 'model.onnx'), { threads: 1 })
    assert.deepEqual(session.inputs.map(i => i.name), ['sample', 'timestep', 'encoder_hidden_states', 'text_embeds', 'time_ids'])
    const out = await session.run({
      sample: zeros([1, 4, 16, 16]),
      timestep: new ort.Tensor('float32', Float32Array.of(500), []),
      encoder_hidden_states: zeros([1, 77, SMALL.contextDim]),
      text_embeds: zeros([1, SMALL.pooledDim]),
      time_ids: zeros([1, 6]),
    })
    assert.deepEqual(out.out_sample.dims, [1, 4, 16, 16])
  })

  it('names every layer by its own diffusers module path, so that a LoRA (LCM-LoRA) finds each one', () => {
    const unet = sparseSdxlUnet(SMALL, 18).build()
    const weights = new Set(unet.graph!.initializer!.map(t => t.name))
    const layers = unet.graph!.node!.filter(n => ['Conv', 'Gemm', 'MatMul'].includes(n.opType!) && weights.has(n.input![1]))
    const modules = [...loraTargets(unet).values()].map(t => t.module)
    assert.equal(modules.length, layers.length, 'one module per layer')
    for (const module of [
      'time_embedding.linear_2', 'add_embedding.linear_1', 'conv_in', 'down_blocks.0.resnets.1.conv2', 'down_blocks.1.downsamplers.0.conv',
      'down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_k', 'mid_block.attentions.0.transformer_blocks.1.ff.net.2',
      'up_blocks.0.resnets.2.conv_shortcut', 'up_blocks.1.upsamplers.0.conv', 'up_blocks.1.attentions.2.proj_out', 'up_blocks.2.resnets.0.time_emb_proj', 'conv_out',
    ]) assert.ok(modules.includes(module), module)
  })

  it('builds the TAESD decoder with 1.22 M parameters, 8× upsampling to [-1,1]', async () => {
    const decoder = taesdShapedDecoder(18)
    // conv_in 4→64, 10 blocks of three 64→64 convs, 3 bias-free upsampling convs, conv_out 64→3
    assert.equal(parameterCount(decoder), (4 * 9 + 1) * 64 + 10 * 3 * (64 * 9 + 1) * 64 + 3 * 64 * 9 * 64 + (64 * 9 + 1) * 3)
    const session = await openSession(join(dir, 'taesdxl_decoder', 'model.onnx'), { threads: 1 })
    const out = await session.run({ latent_sample: zeros([1, 4, 4, 4]) })
    assert.deepEqual(out.sample.dims, [1, 3, 32, 32])
    assert.ok((out.sample.data as Float32Array).every(v => v === -1), 'zero weights decode to 0·2 − 1')
  })
})
