// Recomputation in segments (src/onnx/recompute.ts): the same gradient, less held at the peak, and copies that
// cannot run before the backward reaches their segment.
import assert from 'node:assert/strict'
import { differentiate } from '../src/onnx/autodiff.js'
import { GraphBuilder } from '../src/onnx/builder.js'
import { gradcheck, randomFeeds } from '../src/onnx/gradcheck.js'
import * as L from '../src/onnx/layers.js'
import { encodeModel, graphOf, type ModelProto } from '../src/onnx/proto.js'
import { ort } from '../src/onnx/session.js'
import { graphMemory } from '../src/guidance/estimate.js'

/** A deeper UNet-shaped graph: four resnet + cross-attention levels, their skips concatenated on the way up. */
function deepUnet(): ModelProto {
  const g = new GraphBuilder('unet', 17)
  const rand = L.seededNormal(1)
  const sample = g.input('latent', 'float32', [1, 4, 12, 12])
  const temb = g.input('temb', 'float32', [1, 16])
  const context = g.input('encoder_hidden_states', 'float32', [1, 5, 12])
  let h = L.conv2d(g, sample, rand, 4, 8)
  const skips: string[] = []
  for (let i = 0; i < 4; i++) {
    h = L.resnetBlock(g, h, rand, 8, 8, { groups: 4, temb, tembDim: 16 })
    h = L.spatialTransformer(g, h, rand, 8, { heads: 2, groups: 4, context, contextDim: 12 })
    skips.push(h)
  }
  for (const skip of skips.reverse()) h = L.resnetBlock(g, g.op('Concat', [h, skip], { axis: 1 }), rand, 16, 8, { groups: 4, temb, tembDim: 16 })
  const out = L.conv2d(g, L.silu(g, L.groupNorm(g, h, rand, 8, 4)), rand, 8, 4)
  g.outputAs(g.op('ReduceMean', [g.op('Mul', [out, g.op('Sin', [out])])], { keepdims: 0 }), 'loss', 'float32', [])
  return g.build()
}

/** A ViT-shaped tower (LayerNormalization's saved statistics are extra forward outputs the copies must make too). */
function vit(): ModelProto {
  const g = new GraphBuilder('vit', 17)
  const rand = L.seededNormal(4)
  const pixels = g.input('latent', 'float32', [1, 3, 8, 8])
  const patches = L.conv2d(g, pixels, rand, 3, 16, { kernel: 4, stride: 4, pad: 0, bias: false })
  let h = g.op('Transpose', [g.op('Reshape', [patches, g.ints([0, 16, -1])])], { perm: [0, 2, 1] })
  for (let i = 0; i < 3; i++) {
    h = g.op('Add', [h, L.attention(g, L.layerNorm(g, h, rand, 16), rand, 16, { heads: 2 })])
    h = g.op('Add', [h, L.linear(g, L.gelu(g, L.linear(g, L.layerNorm(g, h, rand, 16), rand, 16, 64)), rand, 64, 16)])
  }
  g.outputAs(g.op('ReduceMean', [g.op('Mul', [h, h])], { keepdims: 0 }), 'loss', 'float32', [])
  return g.build()
}

async function latentGradient(model: ModelProto, segments: number, feeds: Record<string, ort.Tensor>): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(encodeModel(differentiate({ model, dir: '.' }, { wrt: ['latent'], of: 'loss', segments }).model))
  return (await session.run(feeds)).latent_grad.data as Float32Array
}

describe('recomputation in segments', () => {
  for (const [name, build] of [['UNet-shaped', deepUnet], ['ViT-shaped', vit]] as const) {
    it(`${name}: the same gradient with 2, 3 and 5 segments as with none`, async () => {
      const model = build()
      const feeds = randomFeeds(await ort.InferenceSession.create(encodeModel(model)), {}, 0)
      const kept = await latentGradient(model, 1, feeds)
      const scale = Math.max(...kept.map(Math.abs))
      assert.ok(scale > 0)
      for (const segments of [2, 3, 5]) {
        const recomputed = await latentGradient(model, segments, feeds)
        const worst = Math.max(...recomputed.map((v, i) => Math.abs(v - kept[i])))
        assert.ok(worst <= 1e-5 * scale, `${segments} segments: differs by ${worst} (scale ${scale})`)
      }
    })
  }

  it('agrees with finite differences', async () => {
    const model = deepUnet()
    const gradient = differentiate({ model, dir: '.' }, { wrt: ['latent'], of: 'loss', segments: 3 })
    const result = await gradcheck(encodeModel(model), encodeModel(gradient.model), { wrt: ['latent'], of: 'loss', directions: 3 })
    assert.ok(result.worst < 1e-2, `worst relative error ${result.worst}`)
  })

  it('holds less at the peak, the more segments (up to a point)', async () => {
    const peak = async (segments: number) => (await graphMemory({ model: deepUnet(), dir: '.' }, {}, segments)).peak
    const [one, two, four] = [await peak(1), await peak(2), await peak(4)]
    assert.ok(two < 0.8 * one && four < 0.6 * one, `peaks: ${one}, ${two}, ${four} bytes`)
  })

  it('copies wait for the backward: none can run before the forward pass has ended', () => {
    const model = deepUnet()
    const forward = new Set(graphOf(model).node.map(n => n.name))
    const graph = graphOf(differentiate({ model, dir: '.' }, { wrt: ['latent'], of: 'loss', segments: 4 }).model)
    // each value's depth: the longest chain of nodes making it, from the inputs and weights (depth 0)
    const depth = new Map<string, number>()
    for (const node of graph.node) {
      const d = 1 + Math.max(0, ...(node.input ?? []).map(v => depth.get(v) ?? 0))
      for (const v of node.output ?? []) depth.set(v, d)
    }
    const forwardEnd = Math.max(...graph.node.filter(n => forward.has(n.name)).flatMap(n => (n.output ?? []).map(v => depth.get(v)!)))
    const copies = graph.node.filter(n => n.name!.includes('recompute_') && !forward.has(n.name))
    assert.ok(copies.length > 50, `${copies.length} copied nodes`)
    assert.deepEqual(copies.filter(n => (n.output ?? []).some(v => depth.get(v)! <= forwardEnd)).map(n => n.name), [])
  })

  it('recomputes an fp16 body between Casts in fp16 (its copies wait on a gradient cast to each input\'s type)', async () => {
    const g = new GraphBuilder('half', 17)
    const rand = L.seededNormal(7)
    const x = g.input('latent', 'float32', [4, 8])
    let h = g.op('Cast', [x], { to: 10 })
    for (let i = 0; i < 6; i++) h = g.op('Tanh', [g.op('MatMul', [h, g.op('Cast', [L.randomWeight(g, rand, [8, 8], 0.5)], { to: 10 })])])
    const y = g.op('Mul', [g.op('Cast', [h], { to: 1 }), x])
    g.outputAs(g.op('ReduceSum', [g.op('Mul', [y, y])], { keepdims: 0 }), 'loss', 'float32', [])
    const model = g.build()
    const feeds = randomFeeds(await ort.InferenceSession.create(encodeModel(model)), {}, 0)
    const kept = await latentGradient(model, 1, feeds)
    const recomputed = await latentGradient(model, 3, feeds)
    const graph = graphOf(differentiate({ model, dir: '.' }, { wrt: ['latent'], of: 'loss', segments: 3 }).model)
    assert.ok(graph.node.some(n => n.name!.includes('recompute_') && n.opType === 'MatMul'), 'nothing was recomputed')
    assert.deepEqual(Array.from(recomputed), Array.from(kept)) // the same ops in the same precision
  })

  it('refuses a segment count that is not a positive integer', () => {
    assert.throws(() => differentiate({ model: vit(), dir: '.' }, { wrt: ['latent'], of: 'loss', segments: 0 }), /recompute segments 0: expected a positive integer/)
  })
})
