import assert from 'node:assert/strict'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GraphBuilder } from '../src/onnx/builder.js'
import { cpuNchwcBlock, executionOrder, graphMemory, nchwcLayout, plannedPeak, runCost } from '../src/guidance/estimate.js'
import { encodeModel, graphOf, onnx, type NodeProto } from '../src/onnx/proto.js'
import { ort } from '../src/onnx/session.js'
import { LATENT } from '../src/guidance/preview.js'
import { floatBytes, inferShapes } from '../src/onnx/shapes.js'

interface NodeEvent { cat: string; name: string; args: { op_name: string; output_type_shape: Record<string, number[]>[] } }

/** The profile's node events of one run of onnxruntime, at graphOptimizationLevel `level`. */
async function profiled(model: Uint8Array, feeds: Record<string, ort.Tensor>, level: 'disabled' | 'all'): Promise<NodeEvent[]> {
  const dir = await mkdtemp(join(tmpdir(), 'estimate-order-'))
  try {
    const session = await ort.InferenceSession.create(model, { graphOptimizationLevel: level, enableProfiling: true, profileFilePrefix: join(dir, 'profile') })
    await session.run(feeds)
    session.endProfiling()
    await session.release()
    const events = JSON.parse(await readFile(join(dir, (await readdir(dir))[0]), 'utf8')) as NodeEvent[]
    return events.filter(e => e.cat === 'Node')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** The node names in the order onnxruntime ran them (its profile), at graphOptimizationLevel `level`. */
async function ranOrder(model: Uint8Array, feeds: Record<string, ort.Tensor>, level: 'disabled' | 'all' = 'disabled'): Promise<string[]> {
  return (await profiled(model, feeds, level)).map(e => e.name.replace(/_kernel_time$/, ''))
}

describe('cost estimates (--dry-run)', () => {
  it('counts the weights, the float values on the latent → loss path, and the gradient pass at its peak', async () => {
    const g = new GraphBuilder('small')
    const latent = g.input(LATENT, 'float32', [1, 4, 8, 8])
    const other = g.input('text', 'float32', [1, 1000])
    const weight = g.constant(new Float32Array(4), [1, 4, 1, 1])
    const scaled = g.op('Mul', [latent, weight]) // 256 floats
    const relu = g.op('Relu', [scaled]) // 256 floats
    g.op('Relu', [other]) // off the path: not counted
    g.outputAs(g.op('ReduceSum', [relu, g.ints([1, 2, 3])], { keepdims: 0 }), 'loss', 'float32', [1]) // 1 float
    const memory = await graphMemory({ model: g.build(), dir: '.' })
    assert.equal(memory.weights, 16 + 3 * 8) // the weight and the int64 axes
    // upper bound: Mul, Relu, ReduceSum and the Identity naming the output
    assert.equal(memory.upperBound, (256 + 256 + 1 + 1) * 4)
    assert.equal(memory.unknown, 0)
    // the backward reads the Relu's output (its mask) and nothing else of size: at most Relu + Mul outputs
    // and the gradient tensors of one layer are alive together
    assert.ok(memory.saved >= 256 * 4 && memory.saved <= 2 * 256 * 4 + 8, `saved ${memory.saved}`)
    assert.ok(memory.peak >= 2 * 256 * 4 && memory.peak <= 6 * 256 * 4, `peak ${memory.peak}`)
  })

  it('holds a freed buffer for a later value of the same shape, as onnxruntime\'s planner does', () => {
    // a (shape A, 100 bytes) dies early; b, c, e (shape B, 100 each) live together; d (shape A) comes last.
    // onnxruntime measured the same pattern at 25M floats: 382 MB working, 287 MB when d's shape differs.
    const node = (input: string[], output: string) => new onnx.NodeProto({ opType: 'Op', input, output: [output] })
    const nodes = [node(['x'], 'a'), node(['a'], 's'), node(['s'], 'b'), node(['b'], 'c'), node(['b', 'c'], 'e'), node(['x', 'e'], 'd'), node(['d'], 'y')]
    const shape: Record<string, string> = { a: 'A', b: 'B', c: 'B', e: 'B', d: 'A' }
    const bytes = (v: string) => (shape[v] ? 100 : 1)
    const outputs = new Set(['y'])
    assert.equal(plannedPeak(nodes, bytes, v => shape[v], outputs), 400) // a's buffer waits for d beside b, c, e
    assert.equal(plannedPeak(nodes, bytes, v => shape[v], outputs, false), 300)
    assert.equal(plannedPeak(nodes, bytes, v => (v === 'd' ? 'D' : shape[v]), outputs), 300) // nothing to wait for: freed
  })

  it('runs the nodes in onnxruntime\'s order, not the graph\'s, without the ones that read only weights', async () => {
    const g = new GraphBuilder('order')
    const x = g.input('x', 'float32', [2, 3])
    const scale = g.op('Exp', [g.constant(new Float32Array([1, 2, 3]), [3])]) // weights only: folded at load
    const a = g.op('Relu', [x])
    const b = g.op('Neg', [g.op('Mul', [x, scale])])
    const c = g.op('Exp', [a])
    const d = g.op('Sigmoid', [b])
    g.outputAs(g.op('Add', [g.op('Mul', [c, d]), g.op('Tanh', [a])]), 'y', 'float32', [2, 3])
    const model = g.build()
    const graph = graphOf(model)
    const order = executionOrder(graph.node as NodeProto[], new Set(graph.initializer.map(t => t.name!)), new Set(['y'])).map(n => n.name!)
    const ran = await ranOrder(encodeModel(model), { x: new ort.Tensor('float32', new Float32Array(6), [2, 3]) }, 'all')
    assert.deepEqual(order, ran) // the Exp on weights folded, the output's Identity gone (its producer writes y)
    assert.notDeepEqual(order, graph.node.slice(1).map(n => n.name)) // the graph's own order differs
  })

  it('follows onnxruntime\'s Identity elimination: a graph output written through one starts the walk at its producer', async () => {
    // a forward f1 → f2 → f3 (the image) and a backward reading f1 through a term of its own (d = sigmoid(f1), as
    // a gradient rule's factor that needs no incoming gradient); the outputs are Identities, last in the graph, as
    // foldGraph writes them. onnxruntime drops the Identities of loss and grad (their inputs have no other reader):
    // the walk starts from the image's Identity, runs the whole forward first and holds f1 until d.
    const g = new GraphBuilder('identities')
    const x = g.input('x', 'float32', [1, 256]) // 1 KB values
    const f1 = g.op('Exp', [x])
    const f2 = g.op('Tanh', [f1])
    const f3 = g.op('Neg', [f2])
    const loss = g.op('ReduceSum', [f3], { keepdims: 0 })
    const g1 = g.op('Mul', [f2, f3]) // the gradient coming in
    const d = g.op('Sigmoid', [f1])
    const grad = g.op('Mul', [g1, d])
    g.outputAs(loss, 'loss', 'float32', [])
    g.outputAs(f3, 'image', 'float32', [1, 256])
    g.outputAs(grad, 'grad', 'float32', [1, 256])
    const model = g.build()
    const graph = graphOf(model)
    const outputs = new Set(['loss', 'image', 'grad'])
    const order = executionOrder(graph.node as NodeProto[], new Set(), outputs)
    assert.deepEqual(order.map(n => n.output[0]), [f1, f2, f3, 'image', d, g1, 'grad', 'loss'])
    const ran = await ranOrder(encodeModel(model), { x: new ort.Tensor('float32', new Float32Array(256), [1, 256]) }, 'all')
    assert.deepEqual(order.map(n => n.name), ran)
    // at the Sigmoid f1, f2, f3, the image (a copy: a graph output has a buffer of its own) and d: 5 KB. Walked
    // from grad's Identity (the Identities kept) d comes first, f1 goes after the Tanh, and the peak is 4 KB.
    const bytes = (v: string) => (v === 'loss' ? 4 : v === 'x' ? 0 : 1024)
    assert.equal(plannedPeak(order, bytes, () => undefined, outputs), 5 * 1024)
  })

  it('lays Convs out in NCHWc blocks as onnxruntime\'s CPU does: its reorder copies, padded channels, fused Sums', async () => {
    // x (16 channels) feeds two Convs through one reordered copy; b's 4 channels are padded to the block in its
    // blocked form, and c reads b as NCHW (fewer channels than a block), so b gets a ReorderOutput; a + c fuses into
    // a's Conv; s · tanh(s) and the nearest Resize stay blocked; the image (NCHW) comes from a ReorderOutput.
    const block = cpuNchwcBlock()
    const g = new GraphBuilder('nchwc')
    const x = g.input('x', 'float32', [1, 16, 8, 8])
    const weights = (dims: number[]) => g.constant(new Float32Array(dims.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i)), dims)
    const a = g.op('Conv', [x, weights([32, 16, 3, 3]), weights([32])], { pads: [1, 1, 1, 1] })
    const b = g.op('Conv', [x, weights([4, 16, 1, 1])])
    const c = g.op('Conv', [b, weights([32, 4, 1, 1])])
    const s = g.op('Add', [a, c])
    const y = g.op('Mul', [s, g.op('Tanh', [s])])
    const scales = g.constant(new Float32Array([1, 1, 2, 2]), [4])
    const u = g.op('Resize', [y, '', scales], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' })
    g.outputAs(u, 'image', 'float32', [1, 32, 16, 16])
    g.outputAs(g.op('ReduceSum', [b], { keepdims: 0 }), 'loss', 'float32', [])
    const model = g.build()
    const graph = graphOf(model)
    const infos = inferShapes(graph)
    const order = executionOrder(graph.node as NodeProto[], new Set(graph.initializer.map(t => t.name!)), new Set(['image', 'loss']), nchwcLayout(infos, block))
    const events = await profiled(encodeModel(model), { x: new ort.Tensor('float32', new Float32Array(16 * 64), [1, 16, 8, 8]) }, 'all')
    // the same nodes in the same order, each output of the size onnxruntime allocated
    const ran = events.map(e => ({ op: e.args.op_name, bytes: e.args.output_type_shape.map(t => Object.values(t)[0].reduce((p, d) => p * d, 4)) }))
    const ours = order.map(n => ({ op: n.opType, bytes: n.output.map(v => floatBytes(infos.get(v))) }))
    assert.deepEqual(ours, ran)
    if (block > 1) {
      const ops = order.map(n => `${n.domain === 'com.microsoft.nchwc' ? 'nchwc.' : ''}${n.opType}`)
      assert.deepEqual(ops.filter(op => op.startsWith('nchwc.')).sort(), ['nchwc.Conv', 'nchwc.Conv', 'nchwc.Conv', 'nchwc.ReorderInput', 'nchwc.ReorderOutput', 'nchwc.ReorderOutput', 'nchwc.Upsample'])
      assert.equal(floatBytes(infos.get(`${b}#nchwc`)), block * 64 * 4)
      assert.equal(order.find(n => n.output[0] === `${a}#nchwc`)?.input[3], `${c}#nchwc`) // the Sum fused into a's Conv
    }
  })

  it('counts a view (Reshape, Squeeze, …) in its input\'s buffer, and none of a view of a weight', () => {
    const node = (opType: string, input: string[], output: string) => new onnx.NodeProto({ opType, input, output: [output] })
    const nodes = [node('Relu', ['x'], 'a'), node('Reshape', ['a', 'shape'], 'r'), node('Unsqueeze', ['w'], 'u'), node('Add', ['r', 'u'], 'y')]
    const bytes = (v: string) => ({ a: 100, r: 100, u: 100, y: 100 })[v] ?? 0
    assert.equal(plannedPeak(nodes, bytes, () => undefined, new Set(['y'])), 200) // a (= r) and y
  })

  it('counts UNet work: K iterations ≈ 3K evaluations, CFG doubles a pass', () => {
    const plain = runCost({ steps: 50, cfg: 5, guideSteps: [10], iters: 10, previewCfg: 1, guided: false })
    assert.deepEqual(plain, { samplingEvaluations: 100, guidanceEvaluations: 0, gradientPasses: 0, ratio: 1 })
    const lcm = runCost({ steps: 50, cfg: 5, guideSteps: [10], iters: 10, previewCfg: 1, guided: true })
    assert.equal(lcm.guidanceEvaluations, 32) // 10 passes of 3 evaluations, and two forwards: the alignment's and the final loss
    assert.ok(Math.abs(lcm.ratio - 1.32) < 1e-9)
    const x0 = runCost({ steps: 50, cfg: 5, guideSteps: [8, 10], iters: 10, previewCfg: 5, guided: true })
    assert.equal(x0.gradientPasses, 20)
    assert.equal(x0.guidanceEvaluations, (20 * 3 + 2 * 2) * 2)
    const recomputed = runCost({ steps: 50, cfg: 5, guideSteps: [10], iters: 10, previewCfg: 1, guided: true, recompute: 4 })
    assert.equal(recomputed.guidanceEvaluations, 10 * 3.75 + 2)
    const twoSteps = runCost({ steps: 50, cfg: 5, guideSteps: [10], iters: 10, previewCfg: 1, guided: true, previewSteps: 2 })
    assert.equal(twoSteps.guidanceEvaluations, 2 * 32) // two UNet calls in every pass and forward
  })
})
