import assert from 'node:assert/strict'
import { GraphBuilder } from '../src/onnx/builder.js'
import { graphMemory, plannedPeak, runCost } from '../src/guidance/estimate.js'
import { onnx } from '../src/onnx/proto.js'
import { LATENT } from '../src/guidance/preview.js'

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
