import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GraphBuilder, tensor } from '../src/onnx/builder.js'
import { embedModel } from '../src/onnx/compose.js'
import { externalDataFiles, readModel, writeModel, writeModelWithExternalData } from '../src/onnx/proto.js'
import { closeSessions, openSession, ort } from '../src/onnx/session.js'

/** An opset-14 model: y = ReduceMean(x·W, axes=[1]) (axes as an attribute, as opset 14 writes it). */
function meanOfProjection() {
  const g = new GraphBuilder('proj', 14)
  const x = g.input('x', 'float32', [2, 8])
  const w = g.constant(Float32Array.from({ length: 8 * 4 }, (_, i) => Math.sin(i)), [8, 4])
  g.outputAs(g.op('ReduceMean', [g.op('MatMul', [x, w])], { axes: [1], keepdims: 0 }), 'y', 'float32', [2])
  return g.build()
}

/** y = Relu(x·W + b) with W and b as Constant nodes (as torch exports some weights), large enough for external data. */
function constantWeights(seed: number) {
  const g = new GraphBuilder('constants', 17)
  const x = g.input('x', 'float32', [2, 8])
  const value = (dims: number[]) => tensor('value', 'float32', dims, Float32Array.from({ length: dims.reduce((a, b) => a * b) }, (_, i) => Math.sin(seed + i)))
  const w = g.op('Constant', [], { value: value([8, 8]) })
  const b = g.op('Constant', [], { value: value([8]) })
  g.outputAs(g.op('Relu', [g.op('Add', [g.op('MatMul', [x, w]), b])]), 'y', 'float32', [2, 8])
  return g.build()
}

describe('compose', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-compose-')) })
  after(async () => { await closeSessions(); await rm(dir, { recursive: true, force: true }) })

  it('embeds an opset-14 model with external weights twice into an opset-18 graph', async () => {
    const part = join(dir, 'part', 'model.onnx')
    await writeModelWithExternalData(meanOfProjection(), part)
    const loaded = await readModel(part)

    const g = new GraphBuilder('composed', 18)
    const a = g.input('a', 'float32', [2, 8])
    const first = embedModel(g, loaded, { x: a }, 'first/').y
    const second = embedModel(g, loaded, { x: g.op('Mul', [a, g.constant(2)]) }, 'second/').y
    g.outputAs(g.op('Sub', [second, g.op('Mul', [first, g.constant(2)])]), 'zero', 'float32', [2])
    g.outputAs(first, 'first', 'float32', [2])
    const out = join(dir, 'composed', 'model.onnx')
    await writeModel({ model: g.build(), dir }, out)

    const x = Float32Array.from({ length: 16 }, (_, i) => i / 7 - 1)
    const reference = await (await openSession(part)).run({ x: new ort.Tensor('float32', x, [2, 8]) })
    const result = await (await openSession(out)).run({ a: new ort.Tensor('float32', x, [2, 8]) })
    assert.deepEqual(Array.from(result.first.data as Float32Array), Array.from(reference.y.data as Float32Array))
    for (const v of result.zero.data as Float32Array) assert.ok(Math.abs(v) < 1e-5)
  })

  it('brings opset-11 attribute forms (Unsqueeze, ReduceSum, Squeeze axes; Split sizes) to an opset-17 graph', async () => {
    const old = new GraphBuilder('old', 11)
    const x = old.input('x', 'float32', [2, 6])
    const [left, right] = old.node('Split', [x], { axis: 1, split: [2, 4] }, 2)
    const summed = old.op('ReduceSum', [old.op('Unsqueeze', [right], { axes: [0] })], { axes: [2], keepdims: 1 })
    old.outputAs(old.op('Squeeze', [summed], { axes: [0, 2] }), 'y', 'float32', [2])
    old.outputAs(left, 'left', 'float32', [2, 2])
    const part = join(dir, 'old', 'model.onnx')
    await writeModel({ model: old.build(), dir }, part)

    const g = new GraphBuilder('new', 17)
    const a = g.input('a', 'float32', [2, 6])
    const out = embedModel(g, await readModel(part), { x: a }, 'old/')
    g.outputAs(out.y, 'y', 'float32', [2])
    const path = join(dir, 'new', 'model.onnx')
    await writeModel({ model: g.build(), dir }, path)

    const x6 = Float32Array.from({ length: 12 }, (_, i) => i)
    const result = await (await openSession(path)).run({ a: new ort.Tensor('float32', x6, [2, 6]) })
    assert.deepEqual(Array.from(result.y.data as Float32Array), [2 + 3 + 4 + 5, 8 + 9 + 10 + 11])
  })

  it('refuses an opset-12 Softmax, whose meaning changed at opset 13', async () => {
    const old = new GraphBuilder('softmax', 12)
    old.outputAs(old.op('Softmax', [old.input('x', 'float32', [2, 3, 4])], { axis: 1 }), 'y')
    const part = join(dir, 'softmax', 'model.onnx')
    await writeModel({ model: old.build(), dir }, part)
    const g = new GraphBuilder('new', 17)
    assert.throws(() => embedModel(g, { model: old.build(), dir }, {}, 'p/'), /Softmax before opset 13 flattens its input/)
  })

  it('writes a graph composed of two models whose weight files have the same name', async () => {
    const first = join(dir, 'a', 'model.onnx')
    const second = join(dir, 'b', 'model.onnx')
    await writeModelWithExternalData(meanOfProjection(), first)
    await writeModelWithExternalData(meanOfProjection(), second)
    const g = new GraphBuilder('two', 17)
    const x = g.input('x', 'float32', [2, 8])
    const y1 = embedModel(g, await readModel(first), { x }, 'a/').y
    const y2 = embedModel(g, await readModel(second), { x }, 'b/').y
    g.outputAs(g.op('Add', [y1, y2]), 'sum', 'float32', [2])
    const out = join(dir, 'two', 'model.onnx')
    const written = await writeModel({ model: g.build(), dir }, out)
    await writeModel(written, out) // again into the same folder: the links are reused
    const input = new ort.Tensor('float32', Float32Array.from({ length: 16 }, (_, i) => i), [2, 8])
    const single = (await (await openSession(first)).run({ x: input })).y.data as Float32Array
    const both = (await (await openSession(out)).run({ x: input })).sum.data as Float32Array
    assert.deepEqual(Array.from(both), Array.from(single, v => 2 * v))
  })

  it('composes two models whose Constant nodes hold external data in files of one name, as the models compute them apart', async () => {
    const [first, second] = [join(dir, 'const-a', 'model.onnx'), join(dir, 'const-b', 'model.onnx')]
    await writeModelWithExternalData(constantWeights(1), first, 16)
    await writeModelWithExternalData(constantWeights(2), second, 16)
    const [a, b] = [await readModel(first), await readModel(second)]
    assert.deepEqual(externalDataFiles(a), [`${first}_data`])
    const g = new GraphBuilder('chain', 17)
    const x = g.input('x', 'float32', [2, 8])
    g.outputAs(embedModel(g, b, { x: embedModel(g, a, { x }, 'a/').y }, 'b/').y, 'z', 'float32', [2, 8])
    const composed = { model: g.build(), dir }
    assert.deepEqual(externalDataFiles(composed).sort(), [`${first}_data`, `${second}_data`])
    // written into a folder that already holds another model.onnx_data (grad -o beside a model)
    const out = join(dir, 'const-a', 'chain.onnx')
    await writeModel(composed, out)

    const input = new ort.Tensor('float32', Float32Array.from({ length: 16 }, (_, i) => i / 5 - 1), [2, 8])
    const y = (await (await openSession(first)).run({ x: input })).y
    const expected = (await (await openSession(second)).run({ x: y })).y.data as Float32Array
    const z = (await (await openSession(out)).run({ x: input })).z.data as Float32Array
    assert.ok(expected.some(v => v > 0))
    assert.deepEqual(Array.from(z), Array.from(expected))
  })
})
