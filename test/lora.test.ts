import assert from 'node:assert/strict'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LORA_SCALE, addLoraBranches, cachedLoraUnet, loraTargets, parseLora, writeLoraUnet } from '../src/diffusion/lora.js'
import { f32, floatToHalf, floatValues, halfToFloat, readSafetensors, toHalf, writeSafetensors, type NamedTensor } from '../src/diffusion/safetensors.js'
import { GraphBuilder, tensor, type AttrValue } from '../src/onnx/builder.js'
import { seededNormal } from '../src/onnx/layers.js'
import { tinyLora, tinyUnet } from '../src/diffusion/tiny/index.js'
import { initialNoise } from '../src/diffusion/pipeline.js'
import { dims, graphOf, inlineTensorValues, onnx, readModel, writeModelWithExternalData, type ModelProto, type TensorProto } from '../src/onnx/proto.js'
import { closeSessions, openSession, ort } from '../src/onnx/session.js'

/** W + scale·(α/r)·up·down written into the ONNX weight layout (MatMul [in,out], Gemm transB [out,in], Conv [out,in,k,k]). */
function fuse(model: ModelProto, lora: Map<string, NamedTensor>, scale: number): ModelProto {
  const { layers } = parseLora(lora)
  const targets = loraTargets(model)
  for (const [key, layer] of layers) {
    const { node, weight } = targets.get(key)!
    const w = Float32Array.from(inlineTensorValues(weight) as Float32Array)
    const shape = dims(weight)
    const [rank] = layer.down.shape
    const factor = (scale * (layer.alpha ?? rank)) / rank
    const [down, up] = [floatValues(layer.down), floatValues(layer.up)]
    const inSize = down.length / rank // in·k·k for Conv
    const outSize = layer.up.shape[0]
    for (let o = 0; o < outSize; o++) {
      for (let i = 0; i < inSize; i++) {
        let delta = 0
        for (let r = 0; r < rank; r++) delta += up[o * rank + r] * down[r * inSize + i]
        const index = node.opType === 'MatMul' ? i * shape[1] + o : o * inSize + i
        w[index] += factor * delta
      }
    }
    ;(weight as TensorProto).rawData = new Uint8Array(w.buffer)
  }
  return model
}

async function run(path: string, extra: Record<string, ort.Tensor> = {}) {
  const session = await openSession(path)
  const batch = 2
  const feeds: Record<string, ort.Tensor> = {
    sample: new ort.Tensor('float32', initialNoise(1, [batch, 4, 8, 8]).data, [batch, 4, 8, 8]),
    timestep: new ort.Tensor('float32', Float32Array.of(481), []),
    encoder_hidden_states: new ort.Tensor('float32', initialNoise(2, [batch, 77, 80]).data, [batch, 77, 80]),
    text_embeds: new ort.Tensor('float32', initialNoise(3, [batch, 32]).data, [batch, 32]),
    time_ids: new ort.Tensor('float32', Float32Array.from({ length: 12 }, (_, i) => [64, 64, 0, 0, 64, 64][i % 6]), [batch, 6]),
    ...extra,
  }
  return (await session.run(feeds)).out_sample.data as Float32Array
}

const maxDifference = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0)
const scale = (s: number) => ({ [LORA_SCALE]: new ort.Tensor('float32', Float32Array.of(s), []) })

describe('LoRA', () => {
  let dir: string
  let lora: Map<string, NamedTensor>
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lookahead-lora-'))
    lora = tinyLora(tinyUnet('optimum-onnx').build())
    await writeModelWithExternalData(tinyUnet('optimum-onnx').build(), join(dir, 'unet', 'model.onnx'))
    await writeSafetensors(join(dir, 'lora.safetensors'), lora)
  })
  after(async () => {
    await closeSessions()
    await rm(dir, { recursive: true, force: true })
  })

  it('reads and writes safetensors (F32 exactly, F16 to half precision)', async () => {
    const back = await readSafetensors(join(dir, 'lora.safetensors'))
    assert.deepEqual([...back.keys()], [...lora.keys()])
    for (const [key, t] of lora) assert.deepEqual(back.get(key), t)
    await writeSafetensors(join(dir, 'half.safetensors'), new Map([...lora].map(([key, t]) => [key, toHalf(t)])))
    const half = await readSafetensors(join(dir, 'half.safetensors'))
    for (const [key, t] of lora) {
      assert.equal(half.get(key)!.dtype, 'F16')
      const values = floatValues(t)
      assert.ok(maxDifference(floatValues(half.get(key)!), values) <= 1e-3 * Math.max(1, ...values.map(Math.abs)), key)
    }
  })

  it('branches beside the base layers give the fused-weight model\'s output, at any lora_scale', async () => {
    const out = join(dir, 'cache', 'lcm.onnx')
    const report = await writeLoraUnet(join(dir, 'unet', 'model.onnx'), join(dir, 'lora.safetensors'), out)
    assert.equal(report.unmatched.length, 0)
    assert.equal(report.mismatched.length, 0)
    assert.equal(report.applied.length, parseLora(lora).layers.size)
    assert.ok(report.applied.includes('down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k'))
    assert.ok(report.applied.includes('down_blocks.0.resnets.0.time_emb_proj') && report.applied.includes('up_blocks.0.upsamplers.0.conv'))
    // the base weights are shared (same inode), not copied
    const [base, linked] = await Promise.all([stat(join(dir, 'unet', 'model.onnx_data')), stat(join(dir, 'cache', 'model.onnx_data'))])
    assert.equal(linked.ino, base.ino)

    const plain = await run(join(dir, 'unet', 'model.onnx'))
    for (const s of [1, 0.4]) {
      const fusedPath = join(dir, `fused-${s}`, 'model.onnx')
      await writeModelWithExternalData(fuse(tinyUnet('optimum-onnx').build(), lora, s), fusedPath)
      const [branched, fused] = [await run(out, scale(s)), await run(fusedPath)]
      assert.ok(maxDifference(fused, plain) > 1e-2, 'the LoRA changes the output') // so the comparison below means something
      assert.ok(maxDifference(branched, fused) < 1e-4, `scale ${s}: branch vs fused differ by ${maxDifference(branched, fused)}`)
    }
    assert.ok(maxDifference(await run(out, scale(0)), plain) < 1e-5, 'lora_scale 0 is the base UNet')
    // a float16 file (as lcm-lora-sdxl ships) on a float32 UNet: Cast nodes, same result as fusing the half values
    const half = new Map([...lora].map(([key, t]) => [key, toHalf(t)]))
    await writeSafetensors(join(dir, 'half-lora.safetensors'), half)
    await writeLoraUnet(join(dir, 'unet', 'model.onnx'), join(dir, 'half-lora.safetensors'), join(dir, 'half-cache', 'lcm.onnx'))
    await writeModelWithExternalData(fuse(tinyUnet('optimum-onnx').build(), half, 1), join(dir, 'fused-half', 'model.onnx'))
    assert.ok(maxDifference(await run(join(dir, 'half-cache', 'lcm.onnx'), scale(1)), await run(join(dir, 'fused-half', 'model.onnx'))) < 1e-4)
  })

  it('accepts the diffusers and peft key spellings, and reports keys it cannot place', async () => {
    const peft = new Map<string, NamedTensor>()
    const targets = loraTargets(tinyUnet('optimum-onnx').build())
    for (const [key, value] of lora) {
      const m = /^lora_unet_(.+)\.lora_(down|up)\.weight$/.exec(key)
      if (!m) continue // peft files carry no alpha
      const module = targets.get(m[1])!.module
      peft.set(`unet.${module}.${m[2] === 'down' ? 'lora_A' : 'lora_B'}.weight`, value)
    }
    peft.set('lora_unet_no_such_layer.lora_down.weight', f32([4, 3], new Float32Array(12)))
    peft.set('lora_unet_no_such_layer.lora_up.weight', f32([3, 4], new Float32Array(12)))
    peft.set('lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', f32([1, 1], new Float32Array(1)))
    await writeSafetensors(join(dir, 'peft.safetensors'), peft)
    const report = await writeLoraUnet(join(dir, 'unet', 'model.onnx'), join(dir, 'peft.safetensors'), join(dir, 'peft', 'lcm.onnx'))
    assert.equal(report.applied.length, parseLora(lora).layers.size)
    assert.deepEqual(report.unmatched.sort(), ['lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', 'no_such_layer'])
  })

  it('adds branches in float16 to a float16 export (Cast nodes), matching the float32 result', async () => {
    const rand = seededNormal(9)
    const values = (n: number) => Float32Array.from({ length: n }, () => halfToFloat(floatToHalf(rand()))) // exact in fp16
    const [convWeight, linearWeight] = [values(5 * 3 * 3 * 3), values(6 * 5)]
    const build = (dtype: 'float32' | 'float16') => {
      const cast = (v: Float32Array) => (dtype === 'float16' ? Uint16Array.from(v, floatToHalf) : v)
      const g = new GraphBuilder('half', 17)
      g.input('image', dtype, [1, 3, 4, 4])
      const features = g.input('features', dtype, [2, 6])
      g.initializers.push(tensor('conv.weight', dtype, [5, 3, 3, 3], cast(convWeight)), tensor('onnx::MatMul_1', dtype, [6, 5], cast(linearWeight)))
      g.outputAs(g.op('Conv', ['image', 'conv.weight'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }), 'conv_out', dtype)
      g.outputAs(g.op('MatMul', [features, 'onnx::MatMul_1']), 'linear_out', dtype)
      g.nodes.find(n => n.opType === 'MatMul')!.name = '/lin/MatMul'
      return g.build()
    }
    const layer = (down: number[], up: number[]) => ({ down: f32(down, values(down.reduce((a, b) => a * b))), up: f32(up, values(up.reduce((a, b) => a * b))), alpha: 1 })
    const layers = new Map([['conv', layer([2, 3, 3, 3], [5, 2, 1, 1])], ['lin', layer([2, 6], [5, 2])]])
    const [imageValues, featureValues] = [values(48), values(12)]
    const outputs: Record<string, Float32Array>[] = []
    for (const dtype of ['float32', 'float16'] as const) {
      const model = { model: build(dtype), dir }
      assert.deepEqual(addLoraBranches(model, layers).applied.sort(), ['conv', 'lin'])
      await writeModelWithExternalData(model.model, join(dir, `branches-${dtype}`, 'model.onnx'))
      const session = await openSession(join(dir, `branches-${dtype}`, 'model.onnx'))
      const feed = (v: Float32Array, dims: number[]) => (dtype === 'float16' ? new ort.Tensor('float16', Uint16Array.from(v, floatToHalf), dims) : new ort.Tensor('float32', v, dims))
      const result = await session.run({ image: feed(imageValues, [1, 3, 4, 4]), features: feed(featureValues, [2, 6]), ...scale(0.7) })
      outputs.push(Object.fromEntries(Object.entries(result).map(([name, t]) => [name, t.type === 'float16' ? Float32Array.from(t.data as Uint16Array, halfToFloat) : (t.data as Float32Array)])))
    }
    const plain = (await (await openSession(join(dir, 'branches-float32', 'model.onnx'))).run({ image: new ort.Tensor('float32', imageValues, [1, 3, 4, 4]), features: new ort.Tensor('float32', featureValues, [2, 6]), ...scale(0) })).conv_out.data as Float32Array
    assert.ok(maxDifference(outputs[0].conv_out, plain) > 0.1, 'the branch changes the output')
    assert.ok(maxDifference(outputs[0].conv_out, outputs[1].conv_out) < 0.05)
    assert.ok(maxDifference(outputs[0].linear_out, outputs[1].linear_out) < 0.02)
  })

  it('places layers whose weight torch.onnx deduplicated (an Identity of an equal initializer)', async () => {
    // torch.onnx keeps one initializer per set of equal tensors; the other layers read an Identity of it, named as
    // their own weight was (found in a torch 1.13 export by samples/export/check_lora_naming.py)
    const rand = seededNormal(12)
    const values = (n: number) => Float32Array.from({ length: n }, () => rand())
    const [convWeight, linearWeight, gemmWeight] = [values(3 * 3 * 3 * 3), values(3 * 3), values(3 * 3)]
    const build = (deduplicated: boolean) => {
      const g = new GraphBuilder('deduplicated', 17)
      const first = new Map<Float32Array, string>() // the initializer of each weight's values
      // a layer named as torch.onnx names it; with `deduplicated`, a weight equal to an earlier one is an Identity of it
      const layer = (node: string, op: string, x: string, weight: string, shape: number[], data: Float32Array, attributes: Record<string, AttrValue> = {}) => {
        const source = first.get(data)
        if (deduplicated && source) g.nodes.push(new onnx.NodeProto({ opType: 'Identity', name: `Identity_${g.nodes.length}`, input: [source], output: [weight] }))
        else g.initializers.push(tensor(weight, 'float32', shape, data))
        if (!source) first.set(data, weight)
        const out = g.op(op, [x, weight], attributes)
        g.nodes.at(-1)!.name = node
        return out
      }
      const image = g.input('image', 'float32', [1, 3, 4, 4])
      const context = g.input('context', 'float32', [1, 5, 3])
      const temb = g.input('temb', 'float32', [2, 3])
      const conv = { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }
      const c0 = layer('/resnets.0/conv2/Conv', 'Conv', image, 'resnets.0.conv2.weight', [3, 3, 3, 3], convWeight, conv)
      g.outputAs(layer('/resnets.1/conv2/Conv', 'Conv', c0, 'resnets.1.conv2.weight', [3, 3, 3, 3], convWeight, conv), 'conv_out')
      const k = layer('/attn2/to_k/MatMul', 'MatMul', context, 'onnx::MatMul_1', [3, 3], linearWeight)
      const v = layer('/attn2/to_v/MatMul', 'MatMul', context, 'onnx::MatMul_2', [3, 3], linearWeight)
      g.outputAs(g.op('Add', [k, v]), 'linear_out')
      const t0 = layer('/resnets.0/time_emb_proj/Gemm', 'Gemm', temb, 'resnets.0.time_emb_proj.weight', [3, 3], gemmWeight, { transB: 1 })
      g.outputAs(layer('/resnets.1/time_emb_proj/Gemm', 'Gemm', t0, 'resnets.1.time_emb_proj.weight', [3, 3], gemmWeight, { transB: 1 }), 'gemm_out')
      return g.build()
    }
    const modules = { 'resnets.0.conv2': 3, 'resnets.1.conv2': 3, 'attn2.to_k': 1, 'attn2.to_v': 1, 'resnets.0.time_emb_proj': 1, 'resnets.1.time_emb_proj': 1 }
    const lora = new Map<string, NamedTensor>()
    for (const [module, k] of Object.entries(modules)) {
      const key = `lora_unet_${module.replace(/\./g, '_')}`
      lora.set(`${key}.lora_down.weight`, f32(k === 3 ? [2, 3, 3, 3] : [2, 3], values(2 * 3 * k * k)))
      lora.set(`${key}.lora_up.weight`, f32(k === 3 ? [3, 2, 1, 1] : [3, 2], values(3 * 2)))
    }
    const model = { model: build(true), dir }
    assert.deepEqual(addLoraBranches(model, parseLora(lora).layers).applied.sort(), Object.keys(modules).sort())
    await writeModelWithExternalData(model.model, join(dir, 'deduplicated', 'model.onnx'))
    await writeModelWithExternalData(fuse(build(false), lora, 1), join(dir, 'deduplicated-fused', 'model.onnx'))
    const feeds = { image: new ort.Tensor('float32', values(48), [1, 3, 4, 4]), context: new ort.Tensor('float32', values(15), [1, 5, 3]), temb: new ort.Tensor('float32', values(6), [2, 3]) }
    const branched = await (await openSession(join(dir, 'deduplicated', 'model.onnx'))).run({ ...feeds, ...scale(1) })
    const plain = await (await openSession(join(dir, 'deduplicated', 'model.onnx'))).run({ ...feeds, ...scale(0) })
    const fused = await (await openSession(join(dir, 'deduplicated-fused', 'model.onnx'))).run(feeds)
    for (const name of ['conv_out', 'linear_out', 'gemm_out']) {
      const [b, p, f] = [branched, plain, fused].map(r => r[name].data as Float32Array)
      assert.ok(maxDifference(f, p) > 1e-2, `${name}: the LoRA changes the output`)
      assert.ok(maxDifference(b, f) < 1e-4, `${name}: branch vs fused differ by ${maxDifference(b, f)}`)
    }
  })

  it('caches the LoRA\'d UNet by its inputs', async () => {
    const cache = join(dir, 'lora-cache')
    const first = await cachedLoraUnet(join(dir, 'unet', 'model.onnx'), join(dir, 'lora.safetensors'), cache)
    const second = await cachedLoraUnet(join(dir, 'unet', 'model.onnx'), join(dir, 'lora.safetensors'), cache)
    assert.ok(first.report && !second.report)
    assert.equal(first.path, second.path)
    assert.ok(graphOf((await readModel(first.path)).model).input.some(i => i.name === LORA_SCALE))
  })
})
