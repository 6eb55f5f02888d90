// End-to-end gradients of tiny UNet-, TAESD-, IResNet- and ViT-shaped graphs written the way torch.onnx
// exports them, against finite differences; plus pruning, external weights and the errors a user can hit.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { differentiate, writeGradientModel } from '../src/onnx/autodiff.js'
import { foldGraph } from '../src/onnx/fold.js'
import { GraphBuilder } from '../src/onnx/builder.js'
import { gradcheck } from '../src/onnx/gradcheck.js'
import * as L from '../src/onnx/layers.js'
import { encodeModel, graphOf, writeModelWithExternalData, type LoadedModel, type ModelProto } from '../src/onnx/proto.js'
import { ort } from '../src/onnx/session.js'

/** 1 − cos(e, t) against a random target, as the identity and CLIP guides score. */
function cosineLoss(g: GraphBuilder, e: string, dim: number, rand: L.Normal): string {
  const target = L.randomWeight(g, rand, [1, dim], 1)
  const dot = g.op('ReduceSum', [g.op('Mul', [e, target]), g.ints([1])], { keepdims: 0 })
  const norm = g.op('Sqrt', [g.op('ReduceSum', [g.op('Mul', [e, e]), g.ints([1])], { keepdims: 0 })])
  const cos = g.op('Div', [dot, g.op('Mul', [norm, g.constant(Math.sqrt(dim), [])])])
  return g.op('ReduceSum', [g.op('Sub', [g.constant(1, []), cos])], { keepdims: 0 })
}

/** A UNet-shaped denoiser: conv in, resnet with time embedding, cross-attention transformer, down, up, skip concat, GN, SiLU, conv out. */
function unetShaped(opset: number): ModelProto {
  const g = new GraphBuilder('unet', opset)
  const rand = L.seededNormal(1)
  const sample = g.input('sample', 'float32', ['batch', 4, 'height', 'width'])
  const temb = g.input('temb', 'float32', ['batch', 16])
  const context = g.input('encoder_hidden_states', 'float32', ['batch', 5, 12])
  let h = L.conv2d(g, sample, rand, 4, 8)
  h = L.resnetBlock(g, h, rand, 8, 8, { groups: 4, temb, tembDim: 16 })
  h = L.spatialTransformer(g, h, rand, 8, { heads: 2, groups: 4, context, contextDim: 12 })
  const skip = h
  h = L.resnetBlock(g, L.downsample(g, h, rand, 8), rand, 8, 16, { groups: 4, temb, tembDim: 16 })
  h = L.upsampleNearest2x(g, h)
  h = L.resnetBlock(g, g.op('Concat', [h, skip], { axis: 1 }), rand, 24, 8, { groups: 4, temb, tembDim: 16 })
  const out = L.conv2d(g, L.silu(g, L.groupNorm(g, h, rand, 8, 4)), rand, 8, 4)
  g.outputAs(out, 'out_sample', 'float32', ['batch', 4, 'height', 'width'])
  // the guidance loss on the prediction
  g.outputAs(g.op('ReduceMean', [g.op('Mul', [out, g.op('Sin', [out])])], { keepdims: 0 }), 'loss', 'float32', [])
  return g.build()
}

/** TAESD-decoder-shaped: tanh clamp, conv/ReLU blocks with skips, nearest ×2 upsampling, image out. */
function taesdShaped(): ModelProto {
  const g = new GraphBuilder('taesd', 17)
  const rand = L.seededNormal(2)
  const latent = g.input('latent_sample', 'float32', [1, 4, 'h', 'w'])
  const clamp = (x: string) => g.op('Mul', [g.op('Tanh', [g.op('Div', [x, g.constant(3, [])])]), g.constant(3, [])])
  const block = (x: string, c: number) => g.op('Relu', [g.op('Add', [L.conv2d(g, g.op('Relu', [L.conv2d(g, g.op('Relu', [L.conv2d(g, x, rand, c, c)]), rand, c, c)]), rand, c, c), x])])
  let h = g.op('Relu', [L.conv2d(g, clamp(latent), rand, 4, 8)])
  h = block(h, 8)
  h = L.conv2d(g, L.upsampleNearest2x(g, h), rand, 8, 8, { bias: false })
  h = block(h, 8)
  const image = L.conv2d(g, h, rand, 8, 3)
  g.outputAs(g.op('ReduceSum', [g.op('Mul', [image, g.op('Sin', [image])])], { keepdims: 0 }), 'loss', 'float32', [])
  return g.build()
}

/** IResNet-shaped (ArcFace): Conv/BN/PReLU, residual blocks with a strided shortcut, BN, Flatten, Gemm, BN1d; 1 − cos loss. */
function iresnetShaped(): ModelProto {
  const g = new GraphBuilder('iresnet', 17)
  const rand = L.seededNormal(3)
  const image = g.input('image', 'float32', [1, 3, 8, 8])
  let h = L.prelu(g, L.batchNorm(g, L.conv2d(g, image, rand, 3, 8, { bias: false }), rand, 8), rand, 8)
  const body = L.batchNorm(g, L.conv2d(g, L.prelu(g, L.batchNorm(g, L.conv2d(g, L.batchNorm(g, h, rand, 8), rand, 8, 8, { bias: false }), rand, 8), rand, 8), rand, 8, 8, { stride: 2, bias: false }), rand, 8)
  const shortcut = L.batchNorm(g, L.conv2d(g, h, rand, 8, 8, { kernel: 1, stride: 2, bias: false }), rand, 8)
  h = L.batchNorm(g, g.op('Add', [body, shortcut]), rand, 8)
  const features = L.batchNorm(g, L.linear(g, g.op('Flatten', [h], { axis: 1 }), rand, 8 * 4 * 4, 16, { gemm: true }), rand, 16)
  g.outputAs(cosineLoss(g, features, 16, rand), 'loss', 'float32', [])
  return g.build()
}

/** ViT-shaped (CLIP vision): patch conv, class token, position embedding, pre-LN attention + Erf-GELU MLP blocks, Gather of the class token. */
function vitShaped(): ModelProto {
  const g = new GraphBuilder('vit', 17)
  const rand = L.seededNormal(4)
  const dim = 16
  const pixels = g.input('pixel_values', 'float32', ['batch', 3, 8, 8])
  const patches = L.conv2d(g, pixels, rand, 3, dim, { kernel: 4, stride: 4, pad: 0, bias: false })
  const tokens = g.op('Transpose', [g.op('Reshape', [patches, g.ints([0, dim, -1])])], { perm: [0, 2, 1] })
  const batch = g.op('Slice', [g.op('Shape', [pixels]), g.ints([0]), g.ints([1])])
  const cls = g.op('Expand', [L.randomWeight(g, rand, [1, 1, dim], 0.5), g.op('Concat', [batch, g.ints([1, dim])], { axis: 0 })])
  let h = g.op('Add', [g.op('Concat', [cls, tokens], { axis: 1 }), L.randomWeight(g, rand, [1, 5, dim], 0.5)])
  h = L.layerNorm(g, h, rand, dim)
  for (let i = 0; i < 2; i++) {
    h = g.op('Add', [h, L.attention(g, L.layerNorm(g, h, rand, dim), rand, dim, { heads: 2 })])
    h = g.op('Add', [h, L.linear(g, L.gelu(g, L.linear(g, L.layerNorm(g, h, rand, dim), rand, dim, 4 * dim)), rand, 4 * dim, dim)])
  }
  const pooled = L.layerNorm(g, g.op('Gather', [h, g.constant([0], [], 'int64')], { axis: 1 }), rand, dim)
  const embeds = L.linear(g, pooled, rand, dim, 12, { bias: false })
  g.outputAs(cosineLoss(g, embeds, 12, rand), 'loss', 'float32', [])
  return g.build()
}

/** `epsilon`: a smaller step for ReLU networks, so fewer activations straddle a kink */
async function check(model: ModelProto, wrt: string[], dims: Record<string, number> = {}, epsilon?: number) {
  const gradient = differentiate({ model, dir: '.' }, { wrt, of: 'loss' })
  const result = await gradcheck(encodeModel(model), encodeModel(gradient.model), { wrt, of: 'loss', dims, directions: 3, epsilon })
  assert.ok(result.worst < 1e-2, `worst relative error ${result.worst}: ${JSON.stringify(result.inputs)}`)
  return gradient
}

describe('autodiff end to end', () => {
  for (const opset of [14, 17, 18]) {
    it(`UNet-shaped graph, symbolic batch and size, w.r.t. sample and text (opset ${opset})`, async () => {
      const gradient = await check(unetShaped(opset), ['sample', 'encoder_hidden_states'], { batch: 2, height: 8, width: 6 })
      const outputs = graphOf(gradient.model).output.map(o => o.name)
      assert.deepEqual(outputs, ['loss', 'sample_grad', 'encoder_hidden_states_grad'])
    })
  }
  it('TAESD-shaped decoder', () => check(taesdShaped(), ['latent_sample'], { h: 4, w: 5 }, 1e-4))
  it('IResNet-shaped identity network (PRelu, BatchNormalization, Flatten, Gemm)', () => check(iresnetShaped(), ['image']))
  it('ViT-shaped CLIP vision tower (LayerNorm, Erf GELU, attention, class-token Gather)', () => check(vitShaped(), ['pixel_values'], { batch: 2 }))

  it('differentiates an fp16 body between Casts, as an fp16 UNet with an fp32 loss (fp16 constants in the gradient)', async () => {
    const g = new GraphBuilder('half', 17)
    const x = g.input('x', 'float32', [2, 3, 4])
    const h = g.op('Cast', [x], { to: 10 })
    const y = g.op('Mul', [g.op('Sigmoid', [h]), g.op('Add', [h, g.op('Cast', [g.constant(0.5, [])], { to: 10 })])])
    const s = g.op('Cast', [g.op('Softmax', [y], { axis: -1 })], { to: 1 })
    g.outputAs(g.op('ReduceSum', [g.op('Mul', [s, x])], { keepdims: 0 }), 'loss', 'float32', [])
    const model = g.build()
    const gradient = differentiate({ model, dir: '.' }, { wrt: ['x'] })
    assert.ok(graphOf(gradient.model).initializer.some(t => t.dataType === 10), 'no fp16 constants in the gradient graph')
    // fp16 rounding (~1e-3) limits the agreement: a larger step, a looser bound
    const result = await gradcheck(encodeModel(model), encodeModel(gradient.model), { wrt: ['x'], of: 'loss', epsilon: 3e-2 })
    assert.ok(result.worst < 3e-2, `worst relative error ${result.worst}`)
  })

  it('keeps only the path to the loss: no other outputs, no gradients of weights, shape subgraphs untouched', () => {
    const model = unetShaped(17)
    const gradient = differentiate({ model, dir: '.' }, { wrt: ['sample'], of: 'loss' })
    const graph = graphOf(gradient.model)
    assert.deepEqual(graph.input.map(i => i.name), ['sample', 'temb', 'encoder_hidden_states'])
    assert.deepEqual(graph.output.map(o => o.name), ['loss', 'sample_grad'])
    // every gradient node reads only float values or shape/axes constants; the forward Shape nodes are all still there
    const forwardShapes = graphOf(model).node.filter(n => n.opType === 'Shape').length
    assert.equal(graph.node.filter(n => n.opType === 'Shape' && !n.name!.startsWith('grad__')).length, forwardShapes)
    assert.ok(!graph.node.some(n => /ConvGrad|Gradient|FusedMatMul/.test(n.opType!)))
    assert.ok(graph.node.every(n => !n.domain))
  })

  it('reads Linear weights as they are (Gemm with transB, no Transpose to fold); folded, a LoRA branch is in 2-D between its down and up and summed in 2-D', () => {
    const g = new GraphBuilder('linear', 17)
    const rand = L.seededNormal(3)
    const x = g.input('x', 'float32', [2, 3, 4])
    const weight = (k: number, m: number) => L.randomWeight(g, rand, [k, m], 0.5)
    const y = g.op('Add', [g.op('MatMul', [x, weight(4, 5)]), g.op('MatMul', [g.op('MatMul', [x, weight(4, 2)]), weight(2, 5)])])
    g.outputAs(g.op('ReduceSum', [g.op('Mul', [y, y])], { keepdims: 0 }), 'loss', 'float32', [])
    const gradient = differentiate({ model: g.build(), dir: '.' }, { wrt: ['x'], of: 'loss' })
    const count = (model: LoadedModel, op: string) => graphOf(model.model).node.filter(n => n.opType === op && n.name!.startsWith('grad__')).length
    assert.deepEqual(['Transpose', 'MatMul', 'Gemm', 'Flatten', 'Reshape', 'Add'].map(op => count(gradient, op)), [0, 0, 3, 2, 3, 2])
    // fold.ts: the down's Flatten of the up's Reshape is the up's Gemm; the sum is the down's Gemm with C, reshaped once
    assert.deepEqual(['Transpose', 'MatMul', 'Gemm', 'Flatten', 'Reshape', 'Add'].map(op => count(foldGraph(gradient), op)), [0, 0, 3, 1, 1, 1])
  })

  it('names the op and node when a rule is missing on the path, and ignores ops off the path', () => {
    const g = new GraphBuilder('missing', 17)
    const x = g.input('x', 'float32', [2, 3])
    const side = g.input('side', 'float32', [2, 3])
    const offPath = g.op('HardSwish', [side])
    g.outputAs(g.op('ReduceSum', [g.op('Add', [g.op('Mish', [x]), offPath])], { keepdims: 0 }), 'loss', 'float32', [])
    g.outputAs(g.op('ReduceSum', [g.op('Add', [g.op('Sigmoid', [x]), offPath])], { keepdims: 0 }), 'other', 'float32', [])
    assert.throws(() => differentiate({ model: g.build(), dir: '.' }, { wrt: ['x'], of: 'loss' }), /no gradient rule for Mish \(node Mish_node_\d+\)/)
    // HardSwish only reads `side`: it is off the path from x
    assert.doesNotThrow(() => differentiate({ model: g.build(), dir: '.' }, { wrt: ['x'], of: 'other' }))
  })

  it('raises an opset-13 gradient model to 16 for overlapping MaxPool windows, unless an op changed meaning on the way', () => {
    const build = (withRoiAlign: boolean) => {
      const g = new GraphBuilder('pool', 13)
      const x = g.input('x', 'float32', [1, 2, 6, 6])
      const pooled = g.op('MaxPool', [x], { kernel_shape: [3, 3], strides: [2, 2] })
      let loss = g.op('ReduceSum', [pooled], { keepdims: 0 })
      if (withRoiAlign) {
        const rois = g.op('RoiAlign', [x, g.constant([0, 0, 2, 2], [1, 4]), g.constant([0], [1], 'int64')], { output_height: 1, output_width: 1 })
        loss = g.op('Add', [loss, g.op('ReduceSum', [rois], { keepdims: 0 })])
      }
      g.outputAs(loss, 'loss', 'float32', [])
      return g.build()
    }
    const raised = differentiate({ model: build(false), dir: '.' }, { wrt: ['x'] }).model
    assert.deepEqual(raised.opsetImport.map(o => Number(o.version)), [16])
    assert.ok(Number(raised.irVersion) >= 8)
    assert.throws(() => differentiate({ model: build(true), dir: '.' }, { wrt: ['x'] }), /MaxPool node MaxPool_node_\d+ needs opset 16, but RoiAlign node RoiAlign_node_\d+ means something else there/)
  })

  it('advises --dim only where a dim is symbolic, else names the op shape inference does not cover', () => {
    const build = (dims: (number | string)[]) => {
      const g = new GraphBuilder('advice', 17)
      const x = g.input('x', 'float32', dims)
      // shape inference keeps no rank through an Einsum with an ellipsis; the MatMul's rule needs it
      const mixed = g.op('Einsum', [x, g.constant(Array(16).fill(0.1), [4, 4])], { equation: '...k,kl->...l' })
      g.outputAs(g.op('ReduceSum', [g.op('MatMul', [mixed, g.constant(Array(8).fill(0.1), [4, 2])])], { keepdims: 0 }), 'loss', 'float32', [])
      return g.build()
    }
    assert.throws(() => differentiate({ model: build([2, 3, 4]), dir: '.' }, { wrt: ['x'] }), (error: Error) =>
      /cannot infer the rank of einsum_\d+ \(input of MatMul node MatMul_node_\d+\): shape inference does not cover Einsum node Einsum_node_\d+/.test(error.message) && !error.message.includes('--dim'))
    assert.throws(() => differentiate({ model: build(['batch', 3, 4]), dir: '.' }, { wrt: ['x'] }), /cannot infer the rank of einsum_\d+ .*: shape inference lost it at Einsum node Einsum_node_\d+, whose inputs have symbolic dims: give them values \(--dim name=value\)/)
  })

  it('refuses weights, integer inputs and unknown names with clear messages', () => {
    const g = new GraphBuilder('bad', 17)
    const x = g.input('x', 'float32', [2])
    const n = g.input('n', 'int64', [2])
    const w = g.constant([1, 2], [2])
    g.outputAs(g.op('Mul', [g.op('Mul', [x, w]), g.op('Cast', [n], { to: 1 })]), 'y', 'float32', [2])
    const model = g.build()
    assert.throws(() => differentiate({ model, dir: '.' }, { wrt: [w] }), /no graph input named const_\d+/)
    assert.throws(() => differentiate({ model, dir: '.' }, { wrt: ['n'] }), /input n is int64; only float inputs have gradients/)
    assert.throws(() => differentiate({ model, dir: '.' }, { wrt: ['x'], of: 'z' }), /no output named z/)
  })

  it('keeps external weights in their file and runs from another folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lookahead-autodiff-'))
    try {
      const source = join(dir, 'model', 'model.onnx')
      await writeModelWithExternalData(taesdShaped(), source)
      const target = join(dir, 'grad', 'model.onnx')
      // what `lookahead grad model.onnx --wrt latent_sample -o grad/model.onnx --check` runs
      const summary = await writeGradientModel(source, target, { wrt: ['latent_sample'] })
      assert.deepEqual([summary.of, summary.nodes.forward < summary.nodes.gradient], ['loss', true])
      assert.ok((await readFile(target)).length < 40000, 'weights were copied into the gradient model')
      const check = await gradcheck(source, target, { wrt: ['latent_sample'], of: 'loss', dims: { h: 4, w: 4 }, epsilon: 1e-4 })
      assert.ok(check.worst < 1e-2, `worst relative error ${check.worst}`)
      const session = await ort.InferenceSession.create(target)
      const latent = new ort.Tensor('float32', Float32Array.from({ length: 4 * 4 * 4 }, L.seededNormal(5)), [1, 4, 4, 4])
      const out = await session.run({ latent_sample: latent })
      assert.deepEqual(out.latent_sample_grad.dims, [1, 4, 4, 4])
      assert.ok((out.latent_sample_grad.data as Float32Array).some(v => v !== 0))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
