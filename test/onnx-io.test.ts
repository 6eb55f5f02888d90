import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GraphBuilder } from '../src/onnx/builder.js'
import { seededNormal } from '../src/onnx/layers.js'
import { externalDataFiles, graphOf, readModel, writeModel, writeModelWithExternalData } from '../src/onnx/proto.js'
import { closeSessions, openSession, ort } from '../src/onnx/session.js'

const randn = (n: number, seed: number) => Float32Array.from({ length: n }, seededNormal(seed))

/** y = relu(x·W + b), with W and b large enough to go to external data. */
function denseModel() {
  const g = new GraphBuilder('dense')
  const x = g.input('x', 'float32', ['batch', 64])
  const w = g.constant(randn(64 * 32, 1), [64, 32])
  const b = g.constant(randn(32, 2), [32])
  g.outputAs(g.op('Relu', [g.op('Add', [g.op('MatMul', [x, w]), b])]), 'y', 'float32', ['batch', 32])
  return g.build()
}

describe('ONNX model I/O', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-io-')) })
  after(async () => { await closeSessions(); await rm(dir, { recursive: true, force: true }) })

  it('round-trips a model with external data through read → modify → write → run, with identical outputs', async () => {
    const source = join(dir, 'src', 'model.onnx')
    await writeModelWithExternalData(denseModel(), source)
    assert.ok((await stat(`${source}_data`)).size >= (64 * 32 + 32) * 4)

    const loaded = await readModel(source)
    assert.deepEqual(externalDataFiles(loaded), [`${source}_data`])
    // modify: expose the pre-activation as a second output
    const graph = graphOf(loaded.model)
    const add = graph.node.find(n => n.opType === 'Add')!.output![0]
    graph.output.push({ ...graph.output[0], name: add } as (typeof graph.output)[0])
    const rewritten = join(dir, 'elsewhere', 'model.onnx')
    await writeModel(loaded, rewritten)
    // the graph file stays small: weights were not copied into it
    assert.ok((await readFile(rewritten)).length < 2000)

    const x = new ort.Tensor('float32', randn(3 * 64, 7), [3, 64])
    const before = await (await openSession(source)).run({ x })
    const after = await (await openSession(rewritten)).run({ x })
    assert.deepEqual(Array.from(after.y.data as Float32Array), Array.from(before.y.data as Float32Array))
    const pre = after[add].data as Float32Array
    assert.deepEqual(Array.from(pre, v => Math.max(v, 0)), Array.from(before.y.data as Float32Array))
  })

  it('reads input names, dtypes and symbolic shapes from the session', async () => {
    const path = join(dir, 'io.onnx')
    await writeModelWithExternalData(denseModel(), path)
    const session = await openSession(path)
    assert.deepEqual(session.inputs, [{ name: 'x', type: 'float32', shape: ['batch', 64] }])
    assert.deepEqual(session.outputs.map(o => o.name), ['y'])
  })

  it('refuses CUDA clearly where the provider is not installed', async function () {
    const { cudaInstalled } = await import('../src/onnx/session.js')
    if (cudaInstalled()) this.skip()
    const path = join(dir, 'cuda.onnx')
    await writeModelWithExternalData(denseModel(), path)
    await assert.rejects(openSession(path, { device: 'cuda' }), /CUDA provider is not installed/)
  })

  it('says which file is not a model', async () => {
    const path = join(dir, 'junk.onnx')
    await (await import('node:fs/promises')).writeFile(path, 'not a model at all')
    await assert.rejects(readModel(path), /junk.onnx is not an ONNX model/)
  })
})
