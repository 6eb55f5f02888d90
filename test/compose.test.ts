import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GraphBuilder } from '../src/onnx/builder.js'
import { embedModel } from '../src/onnx/compose.js'
import { readModel, writeModel, writeModelWithExternalData } from '../src/onnx/proto.js'
import { closeSessions, openSession, ort } from '../src/onnx/session.js'

/** An opset-14 model: y = ReduceMean(x·W, axes=[1]) (axes as an attribute, as opset 14 writes it). */
function meanOfProjection() {
  const g = new GraphBuilder('proj', 14)
  const x = g.input('x', 'float32', [2, 8])
  const w = g.constant(Float32Array.from({ length: 8 * 4 }, (_, i) => Math.sin(i)), [8, 4])
  g.outputAs(g.op('ReduceMean', [g.op('MatMul', [x, w])], { axes: [1], keepdims: 0 }), 'y', 'float32', [2])
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
})
