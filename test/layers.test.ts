import assert from 'node:assert/strict'
import { GraphBuilder } from '../src/onnx/builder.js'
import { downsample, groupNorm, mulberry32, resnetBlock, seededNormal, spatialTransformer, upsampleNearest2x, conv2d } from '../src/onnx/layers.js'
import { encodeModel } from '../src/onnx/proto.js'
import { ort } from '../src/onnx/session.js'

function randomTensor(dims: number[], seed: number): ort.Tensor {
  const rand = seededNormal(seed)
  return new ort.Tensor('float32', Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, rand), dims)
}

/** A UNet-shaped graph: conv in, resnet + transformer, down, up, conv out; symbolic batch and spatial dims. */
function tinyUnet(opset: number) {
  const g = new GraphBuilder('tiny', opset)
  const rand = seededNormal(1)
  const x = g.input('sample', 'float32', ['batch', 4, 'height', 'width'])
  const context = g.input('context', 'float32', ['batch', 5, 12])
  let h = conv2d(g, x, rand, 4, 16)
  h = resnetBlock(g, h, rand, 16, 16, { groups: 4 })
  h = spatialTransformer(g, h, rand, 16, { heads: 2, groups: 4, context, contextDim: 12 })
  const skip = h
  h = resnetBlock(g, downsample(g, h, rand, 16), rand, 16, 24, { groups: 4 })
  h = upsampleNearest2x(g, h)
  h = g.op('Concat', [h, skip], { axis: 1 })
  h = conv2d(g, groupNorm(g, h, rand, 40, 4), rand, 40, 4)
  g.outputAs(h, 'out', 'float32', ['batch', 4, 'height', 'width'])
  return g.build()
}

describe('layer builders', () => {
  it('draws the same weights for the same seed, and uniform values in [0, 1)', () => {
    const a = mulberry32(7), b = mulberry32(7)
    const values = Array.from({ length: 1000 }, a)
    assert.deepEqual(values, Array.from({ length: 1000 }, b))
    assert.ok(values.every(v => v >= 0 && v < 1))
    const normal = seededNormal(3)
    const samples = Array.from({ length: 20000 }, normal)
    const mean = samples.reduce((s, v) => s + v, 0) / samples.length
    const variance = samples.reduce((s, v) => s + (v - mean) ** 2, 0) / samples.length
    assert.ok(Math.abs(mean) < 0.03 && Math.abs(variance - 1) < 0.05, `mean ${mean}, variance ${variance}`)
  })

  for (const opset of [14, 17, 18]) {
    it(`builds a UNet-shaped graph that onnxruntime runs at opset ${opset}, at two sizes`, async () => {
      const session = await ort.InferenceSession.create(encodeModel(tinyUnet(opset)))
      for (const [height, width] of [[8, 8], [12, 16]]) {
        const out = await session.run({ sample: randomTensor([2, 4, height, width], 2), context: randomTensor([2, 5, 12], 3) })
        assert.deepEqual(out.out.dims, [2, 4, height, width])
        assert.ok((out.out.data as Float32Array).every(Number.isFinite))
      }
    })
  }

  it('GroupNorm as exported normalises each group to zero mean and unit variance before γ, β', async () => {
    const g = new GraphBuilder('gn', 17)
    const x = g.input('x', 'float32', [1, 8, 3, 3])
    // γ = 1, β = 0 by construction: draw with a generator that returns zeros
    g.outputAs(groupNorm(g, x, () => 0, 8, 2), 'y')
    const session = await ort.InferenceSession.create(encodeModel(g.build()))
    const y = (await session.run({ x: randomTensor([1, 8, 3, 3], 5) })).y.data as Float32Array
    for (let group = 0; group < 2; group++) {
      const values = Array.from(y.subarray(group * 36, (group + 1) * 36))
      const mean = values.reduce((s, v) => s + v, 0) / 36
      const variance = values.reduce((s, v) => s + (v - mean) ** 2, 0) / 36
      assert.ok(Math.abs(mean) < 1e-5 && Math.abs(variance - 1) < 1e-3)
    }
  })
})
