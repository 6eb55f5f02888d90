import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { GraphBuilder, tensor } from '../src/onnx/builder.js'
import * as L from '../src/onnx/layers.js'
import { differentiate, writeGradientModel } from '../src/onnx/autodiff.js'
import { gradcheck } from '../src/onnx/gradcheck.js'
import { foldGraph, opCounts } from '../src/onnx/fold.js'
import { graphOf, readModel, writeModel, type LoadedModel } from '../src/onnx/proto.js'
import { closeSessions, openSession, ort } from '../src/onnx/session.js'
import { gradientSession, pipelineDims, previewForward, previewShape } from '../src/guidance/engine.js'
import { pixelGuide } from '../src/guidance/guide.js'
import { buildPreviewGraph, COEF_A, COEF_B, LATENT, LOSS } from '../src/guidance/preview.js'
import { cannotImport, python } from '../samples/python.js'

const wave = (n: number, seed = 1) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed + i * 1.7))

/**
 * torch's patterns on a [batch, 4, h, w] input: `t.expand(batch)` as Expand(t, Where(Equal(s, -1), ConstantOfShape,
 * s)), baddbmm's Add(x·2, ConstantOfShape(Shape(x))·0) then a float→float Cast, a Reshape whose target is Concat(Gather
 * (Shape)), an Identity, and a Constant node.
 */
function torchPatterns() {
  const g = new GraphBuilder('patterns', 17)
  const x = g.input('x', 'float32', ['batch', 4, 'h', 'w'])
  const t = g.input('t', 'int64', ['steps'])
  const first = g.constant(0, [], 'int64')
  const batch = g.op('Reshape', [g.op('Unsqueeze', [g.op('Gather', [g.op('Shape', [x]), first], { axis: 0 }), g.ints([0])]), g.ints([-1])])
  const minusOne = g.op('Constant', [], { value: tensor('v', 'int64', [1], [-1]) })
  const ones = g.op('ConstantOfShape', [g.op('Shape', [batch])], { value: tensor('one', 'int64', [1], [1]) })
  const target = g.op('Where', [g.op('Equal', [batch, minusOne]), ones, batch])
  const time = g.op('Cast', [g.op('Expand', [t, target])], { to: 1 })
  const scaled = g.op('Mul', [x, g.op('Reshape', [time, g.ints([-1, 1, 1, 1])])])
  const dead = g.op('Mul', [g.op('ConstantOfShape', [g.op('Shape', [x])]), g.constant(0)])
  const scores = g.op('Identity', [g.op('Cast', [g.op('Add', [g.op('Mul', [scaled, g.constant(2)]), dead])], { to: 1 })])
  const rows = g.op('Concat', [g.op('Unsqueeze', [g.op('Gather', [g.op('Shape', [scores]), first], { axis: 0 }), g.ints([0])]), g.ints([-1])], { axis: 0 })
  g.outputAs(g.op('Reshape', [scores, rows]), 'y', 'float32', ['batch', '?'])
  return g.build()
}

async function run(path: string, feeds: Record<string, ort.Tensor>, name: string) {
  return (await (await openSession(path, { threads: 1 })).run(feeds))[name].data as Float32Array
}

const maxDifference = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0)

describe('fold', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-fold-')) })
  after(async () => { await closeSessions(); await rm(dir, { recursive: true, force: true }) })

  it('folds the shape arithmetic, the Where, the dead x·0 term, no-op Casts and Identities, with the same outputs', async () => {
    const model = { model: torchPatterns(), dir }
    const folded = foldGraph(model, { batch: 2, h: 3, w: 5, steps: 1 })
    const ops = opCounts(folded.model)
    for (const op of ['Shape', 'Gather', 'Where', 'Equal', 'ConstantOfShape', 'Constant', 'Concat', 'Unsqueeze']) assert.equal(ops[op], undefined, `${op} left: ${JSON.stringify(ops)}`)
    // left: Expand(t) and its Cast (t is an input), the two Reshapes, x·time, ·2, and the output's Identity
    assert.deepEqual(ops, { Expand: 1, Cast: 1, Reshape: 2, Mul: 2, Identity: 1 })
    const [path, foldedPath] = [join(dir, 'patterns.onnx'), join(dir, 'patterns-folded.onnx')]
    await writeModel(model, path)
    await writeModel(folded, foldedPath)
    const feeds = { x: new ort.Tensor('float32', wave(2 * 4 * 3 * 5), [2, 4, 3, 5]), t: new ort.Tensor('int64', BigInt64Array.of(3n), [1]) }
    const expected = await run(path, feeds, 'y')
    assert.ok(expected.some(v => v !== 0))
    assert.deepEqual(Array.from(await run(foldedPath, feeds, 'y')), Array.from(expected))
    // the inputs declare the dims it was specialised to
    assert.deepEqual(graphOf(folded.model).input[0].type?.tensorType?.shape?.dim?.map(d => Number(d.dimValue)), [2, 4, 3, 5])
  })

  it('keeps x·0 where x is computed (it may be Inf or NaN; recompute.ts orders its copies with it)', () => {
    const g = new GraphBuilder('computed-zero', 17)
    const x = g.input('x', 'float32', [2, 3])
    g.outputAs(g.op('Add', [x, g.op('Mul', [g.op('Exp', [x]), g.constant(0)])]), 'y', 'float32', [2, 3])
    assert.deepEqual(opCounts(foldGraph({ model: g.build(), dir }).model), { Exp: 1, Mul: 1, Add: 1, Identity: 1 })
  })

  it("folds Swin's window pads: (w − h mod w) mod w from Shape, reversed as torch's F.pad does (Reshape, Slice, Transpose)", async () => {
    const g = new GraphBuilder('window-pads', 17)
    const x = g.input('x', 'float32', [1, 2, 5, 7])
    const window = g.constant([4, 4], [2], 'int64')
    const spatial = g.op('Slice', [g.op('Shape', [x]), g.ints([2]), g.ints([4])])
    const after = g.op('Mod', [g.op('Sub', [window, g.op('Mod', [spatial, window])]), window])
    // torch's pad order (last axis first, begin/end pairs) → ONNX's: [[0, a_w], [0, a_h], [0, 0], [0, 0]] reversed and transposed
    const torchOrder = g.op('Concat', [g.ints([0]), g.op('Slice', [after, g.ints([1]), g.ints([2])]), g.ints([0]), g.op('Slice', [after, g.ints([0]), g.ints([1])]), g.ints([0, 0, 0, 0])], { axis: 0 })
    const reversed = g.op('Slice', [g.op('Reshape', [torchOrder, g.ints([-1, 2])]), g.ints([-1]), g.ints([-(2 ** 62)]), g.ints([0]), g.ints([-1])])
    const pads = g.op('Reshape', [g.op('Transpose', [reversed], { perm: [1, 0] }), g.ints([-1])])
    g.outputAs(g.op('Pad', [x, pads]), 'y', 'float32', [1, 2, 8, 8])
    const model = { model: g.build(), dir }
    const folded = foldGraph(model)
    assert.deepEqual(opCounts(folded.model), { Pad: 1, Identity: 1 }) // the Identity names the output
    const [path, foldedPath] = [join(dir, 'window-pads.onnx'), join(dir, 'window-pads-folded.onnx')]
    await writeModel(model, path)
    await writeModel(folded, foldedPath)
    const feeds = { x: new ort.Tensor('float32', wave(70), [1, 2, 5, 7]) }
    const expected = await run(path, feeds, 'y')
    assert.equal(expected.length, 2 * 8 * 8)
    assert.deepEqual(Array.from(await run(foldedPath, feeds, 'y')), Array.from(expected))
  })

  it('grad --dim: writes a specialised, folded gradient that passes the finite-difference check', async () => {
    const [path, gradPath] = [join(dir, 'grad-dim', 'patterns.onnx'), join(dir, 'grad-dim', 'grad.onnx')]
    await writeModel({ model: torchPatterns(), dir }, path)
    const dims = { batch: 2, h: 3, w: 5, steps: 1 }
    await writeGradientModel(path, gradPath, { wrt: ['x'], of: 'y', dims })
    const ops = opCounts((await readModel(gradPath)).model)
    for (const op of ['Shape', 'NonZero', 'Where', 'ConstantOfShape']) assert.equal(ops[op], undefined, `${op} left: ${JSON.stringify(ops)}`)
    const check = await gradcheck(path, gradPath, { wrt: ['x'], of: 'y', dims, threads: 1 })
    assert.ok(check.worst < 1e-2, `worst relative error ${check.worst}`)
  })

  /** The model and its folded copy give the same outputs (to float rounding: a Gemm with C sums in another order). */
  async function sameOutputs(model: LoadedModel, folded: LoadedModel, feeds: Record<string, ort.Tensor>, name: string) {
    const [path, foldedPath] = [join(dir, name, 'model.onnx'), join(dir, name, 'folded.onnx')]
    await writeModel(model, path)
    await writeModel(folded, foldedPath)
    for (const output of graphOf(model.model).output.map(o => o.name!)) {
      const expected = await run(path, feeds, output)
      assert.ok(expected.some(v => v !== 0))
      assert.ok(maxDifference(await run(foldedPath, feeds, output), expected) <= 1e-6 * expected.reduce((m, v) => Math.max(m, Math.abs(v)), 0), output)
    }
  }
  const tensorOf = (shape: number[], seed = 1) => new ort.Tensor('float32', wave(shape.reduce((a, b) => a * b, 1), seed), shape)

  it('peepholes: a chain of views is one Reshape, or none where the shape comes back; a Transpose of size-1 dims is a view', async () => {
    const g = new GraphBuilder('views', 17)
    const x = g.input('x', 'float32', [1, 3, 1, 4])
    const moved = g.op('Transpose', [x], { perm: [2, 1, 0, 3] })
    const flat = g.op('Flatten', [g.op('Reshape', [moved, g.ints([3, 4])])], { axis: 1 })
    const viewed = g.op('Unsqueeze', [flat, g.ints([0])])
    g.outputAs(g.op('Sigmoid', [viewed]), 'y', 'float32', [1, 3, 4])
    g.outputAs(g.op('Add', [g.op('Reshape', [viewed, g.ints([1, 3, 1, 4])]), x]), 'z', 'float32', [1, 3, 1, 4])
    const model = { model: g.build(), dir }
    const folded = foldGraph(model)
    assert.deepEqual(opCounts(folded.model), { Reshape: 1, Sigmoid: 1, Add: 1, Identity: 2 }) // the Identities name the outputs
    await sameOutputs(model, folded, { x: tensorOf([1, 3, 1, 4]) }, 'views')
  })

  it('peepholes: Transpose∘Transpose is one Transpose, or none', async () => {
    const g = new GraphBuilder('transposes', 17)
    const x = g.input('x', 'float32', [2, 3, 4])
    const twice = g.op('Transpose', [g.op('Transpose', [x], { perm: [1, 0, 2] })], { perm: [0, 2, 1] })
    g.outputAs(g.op('Sigmoid', [twice]), 'y', 'float32', [3, 4, 2])
    g.outputAs(g.op('Add', [g.op('Transpose', [twice], { perm: [2, 0, 1] }), x]), 'z', 'float32', [2, 3, 4])
    const model = { model: g.build(), dir }
    const folded = foldGraph(model)
    assert.deepEqual(opCounts(folded.model), { Transpose: 1, Sigmoid: 1, Add: 1, Identity: 2 })
    await sameOutputs(model, folded, { x: tensorOf([2, 3, 4]) }, 'transposes')
  })

  it('peepholes: a sum of reshaped Gemms is summed in 2-D, as Gemms with C, and reshaped once', async () => {
    const g = new GraphBuilder('gemm-sums', 17)
    const rand = L.seededNormal(5)
    const [a, b, c] = ['a', 'b', 'c'].map(name => g.input(name, 'float32', [6, name === 'c' ? 5 : 4]))
    const viewedGemm = (x: string) => g.op('Reshape', [g.op('Gemm', [x, L.randomWeight(g, rand, [5, 4], 0.5)], { transB: 1 }), g.ints([2, 3, 5])])
    g.outputAs(g.op('Add', [viewedGemm(a), viewedGemm(b)]), 'y', 'float32', [2, 3, 5])
    g.outputAs(g.op('Sum', [viewedGemm(a), viewedGemm(b), g.op('Reshape', [c, g.ints([2, 3, 5])])]), 'z', 'float32', [2, 3, 5])
    const model = { model: g.build(), dir }
    const folded = foldGraph(model)
    assert.deepEqual(opCounts(folded.model), { Gemm: 4, Reshape: 2, Identity: 2 })
    await sameOutputs(model, folded, { a: tensorOf([6, 4]), b: tensorOf([6, 4], 2), c: tensorOf([6, 5], 3) }, 'gemm-sums')
  })

  it("peepholes: a view of x·s is view(x)·s, and identical nodes are one (a LoRA branch's scaled dY flattened once)", async () => {
    const g = new GraphBuilder('hoist', 17)
    const rand = L.seededNormal(6)
    const x = g.input('x', 'float32', [2, 3, 4])
    const s = g.input('s', 'float32', [])
    const linear = (v: string) => g.op('Gemm', [g.op('Flatten', [v], { axis: 2 }), L.randomWeight(g, rand, [5, 4], 0.5)], { transB: 1 })
    g.outputAs(linear(x), 'y', 'float32', [6, 5])
    g.outputAs(linear(g.op('Mul', [x, s])), 'z', 'float32', [6, 5])
    g.outputAs(g.op('Add', [g.op('Sigmoid', [x]), g.op('Sigmoid', [x])]), 'w', 'float32', [2, 3, 4])
    const model = { model: g.build(), dir }
    const folded = foldGraph(model)
    assert.deepEqual(opCounts(folded.model), { Flatten: 1, Mul: 1, Gemm: 2, Sigmoid: 1, Add: 1, Identity: 3 })
    await sameOutputs(model, folded, { x: tensorOf([2, 3, 4]), s: new ort.Tensor('float32', Float32Array.of(0.7), []) }, 'hoist')
  })

  it('peepholes: a view sunk below an op that merges with an earlier one reads that one', async () => {
    const g = new GraphBuilder('sunk-merged', 17)
    const [a, b] = ['a', 'b'].map(name => g.input(name, 'float32', [6, 4]))
    g.outputAs(g.op('Sigmoid', [g.op('Add', [a, b])]), 'y', 'float32', [6, 4])
    const view = (x: string) => g.op('Reshape', [x, g.ints([2, 3, 4])])
    g.outputAs(g.op('Add', [view(a), view(b)]), 'z', 'float32', [2, 3, 4])
    const model = { model: g.build(), dir }
    const folded = foldGraph(model)
    assert.deepEqual(opCounts(folded.model), { Add: 1, Sigmoid: 1, Reshape: 1, Identity: 2 })
    await sameOutputs(model, folded, { a: tensorOf([6, 4]), b: tensorOf([6, 4], 2) }, 'sunk-merged')
  })

  it("peepholes on attention's gradient (LoRA'd q, k, v; heads split and merged): no view of a view, and the finite-difference check passes", async () => {
    const g = new GraphBuilder('attention', 17)
    const rand = L.seededNormal(7)
    const x = g.input('x', 'float32', [1, 4, 8])
    const scale = g.input('lora_scale', 'float32', [])
    const loraLinear = (v: string) => {
      const lora = g.op('MatMul', [g.op('MatMul', [v, L.randomWeight(g, rand, [8, 2], 0.5)]), L.randomWeight(g, rand, [2, 8], 0.5)])
      return g.op('Add', [g.op('MatMul', [v, L.randomWeight(g, rand, [8, 8], 0.3)]), g.op('Mul', [lora, scale])])
    }
    const heads = (v: string) => g.op('Reshape', [g.op('Transpose', [g.op('Reshape', [v, g.ints([1, 4, 2, 4])])], { perm: [0, 2, 1, 3] }), g.ints([2, 4, 4])])
    const [q, k, v] = [0, 1, 2].map(() => heads(loraLinear(x)))
    const scores = g.op('Mul', [g.op('MatMul', [q, g.op('Transpose', [k], { perm: [0, 2, 1] })]), g.constant(0.5)])
    const attended = g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), v])
    const merged = g.op('Reshape', [g.op('Transpose', [g.op('Reshape', [attended, g.ints([1, 2, 4, 4])])], { perm: [0, 2, 1, 3] }), g.ints([1, 4, 8])])
    const y = loraLinear(merged)
    g.outputAs(g.op('ReduceSum', [g.op('Mul', [y, y])], { keepdims: 0 }), 'loss', 'float32', [])
    const [path, gradPath] = [join(dir, 'attention', 'model.onnx'), join(dir, 'attention', 'grad.onnx')]
    await writeModel({ model: g.build(), dir }, path)
    await writeGradientModel(path, gradPath, { wrt: ['x'], of: 'loss' })
    const graph = graphOf((await readModel(gradPath)).model)
    const producer = new Map(graph.node.flatMap(n => n.output!.map(o => [o, n.opType] as const)))
    const viewsOfViews = graph.node.filter(n => ['Reshape', 'Flatten'].includes(n.opType!) && ['Reshape', 'Flatten'].includes(producer.get(n.input![0]) ?? ''))
    assert.deepEqual(viewsOfViews.map(n => n.name), [])
    assert.deepEqual(graph.node.filter(n => n.opType === 'Transpose' && producer.get(n.input![0]) === 'Transpose').map(n => n.name), [])
    const check = await gradcheck(path, gradPath, { wrt: ['x'], of: 'loss', threads: 1 })
    assert.ok(check.worst < 1e-2, `worst relative error ${check.worst}`)
  })

  describe('on a torch export', function () {
    this.timeout(120_000)
    let models: string
    before(async function () {
      const missing = await cannotImport(['torch', 'onnx'])
      if (missing) {
        console.log(`      skipped: ${missing}`)
        this.skip()
      }
      models = join(dir, 'torch')
      const script = join(dirname(fileURLToPath(import.meta.url)), 'torch', 'sdxl_patterns.py')
      const exported = spawnSync(python, [script, models, '14', '100'], { encoding: 'utf8' })
      assert.equal(exported.status, 0, exported.stderr)
    })

    it("the LCM preview's gradient at batch 1 is static (no NonZero, no Shape) and at most 2.5× the export's nodes, and matches the unfolded one", async () => {
      const [unet, decoder] = [await readModel(join(models, 'unet', 'model.onnx')), await readModel(join(models, 'vae_decoder', 'model.onnx'))]
      const parts = { unet, decoder, scales: { inputScale: 1, outputScale: 1, outputShift: 0 } }
      const shape = previewShape(1, [1, 4, 8, 8])
      const session = await gradientSession(parts, pixelGuide(), shape, { cacheDir: join(dir, 'cache'), session: { threads: 1 } })
      const gradient = await readModel(session.path)
      const graph = graphOf(gradient.model)
      const ops = opCounts(gradient.model)
      assert.equal(ops.NonZero, undefined)
      assert.equal(ops.Shape, undefined)
      const initializers = new Set(graph.initializer.map(t => t.name))
      assert.deepEqual(graph.node.filter(n => n.opType === 'ReduceSum' && n.input![1] && !initializers.has(n.input![1])), [])
      const exportNodes = graphOf(unet.model).node.length + graphOf(decoder.model).node.length
      assert.ok(graph.node.length <= 2.5 * exportNodes, `${graph.node.length} gradient nodes for ${exportNodes} export nodes`)

      // the same gradient as differentiating the graph as composed, unfolded
      const raw: LoadedModel = { model: buildPreviewGraph({ unet, decoder, decoderScales: parts.scales, ...shape, guide: pixelGuide() }).build(), dir: unet.dir }
      const rawPath = join(dir, 'raw', 'model.onnx')
      await writeModel(differentiate(raw, { wrt: [LATENT], of: LOSS, dims: pipelineDims(1) }), rawPath)
      const feeds = {
        [LATENT]: new ort.Tensor('float32', wave(256), [1, 4, 8, 8]),
        [COEF_A]: new ort.Tensor('float32', Float32Array.of(0.3), []),
        [COEF_B]: new ort.Tensor('float32', Float32Array.of(-0.5), []),
        timestep: new ort.Tensor('int64', BigInt64Array.of(500n), [1]),
        encoder_hidden_states: new ort.Tensor('float32', wave(77 * 16, 2), [1, 77, 16]),
        text_embeds: new ort.Tensor('float32', wave(12, 3), [1, 12]),
        time_ids: new ort.Tensor('float32', wave(6, 4), [1, 6]),
      }
      const expected = await run(rawPath, feeds, `${LATENT}_grad`)
      const scale = expected.reduce((m, v) => Math.max(m, Math.abs(v)), 0)
      assert.ok(scale > 0)
      assert.ok(maxDifference(await run(session.path, feeds, `${LATENT}_grad`), expected) <= 1e-5 * scale)
      // and the folded forward is the forward
      const forward = previewForward(parts, shape, pixelGuide())
      assert.ok(graphOf(forward.model).node.length < graphOf(raw.model).node.length / 3)
    })

    it('grad -o into the folder of a model.onnx_data whose weights are in Constant nodes', async () => {
      const unet = join(models, 'unet', 'model.onnx')
      const out = join(models, 'unet', 'grad.onnx')
      const dims = { batch_size: 1, height: 8, width: 8, steps: 1, sequence_length: 7 }
      await writeGradientModel(unet, out, { wrt: ['sample'], of: 'out_sample', dims })
      const check = await gradcheck(unet, out, { wrt: ['sample'], of: 'out_sample', dims, directions: 2, threads: 1 })
      assert.ok(check.worst < 1e-2, `worst relative error ${check.worst}`)
    })
  })
})
