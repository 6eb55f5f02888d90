import assert from 'node:assert/strict'
import { guideLatent } from '../src/guidance/engine.js'
import { makeUpdater, unusable, type UpdateSettings } from '../src/guidance/update.js'

const sgd: UpdateSettings = { optimizer: 'sgd', lr: 0.1, normalize: true, clip: 0, renormalize: false }
const norm = (v: Float32Array) => Math.hypot(...v)

describe('latent updates', () => {
  it('skips zero and non-finite gradients instead of dividing by a zero norm or spreading NaN', () => {
    assert.equal(unusable(new Float32Array(4)), 'zero')
    assert.equal(unusable(Float32Array.of(1, NaN, 0)), 'non-finite')
    assert.equal(unusable(Float32Array.of(1, Infinity)), 'non-finite')
    assert.equal(unusable(Float32Array.of(0, 1e-30)), undefined)
    const step = makeUpdater(sgd)
    assert.deepEqual(step(Float32Array.of(1, 2), Float32Array.of(NaN, 0)), { skipped: 'non-finite' })
    assert.deepEqual(step(Float32Array.of(1, 2), Float32Array.of(0, 0)), { skipped: 'zero' })
  })

  it('normalises the gradient to unit RMS, so lr is the per-element step whatever the loss scale', () => {
    for (const scale of [1e-6, 1, 1e6]) {
      const result = makeUpdater(sgd)(Float32Array.of(0, 0, 0, 0), Float32Array.of(3, 0, 0, 4).map(v => v * scale))
      assert.ok('latent' in result)
      const rms = norm(result.latent) / 2
      assert.ok(Math.abs(rms - 0.1) < 1e-6, `rms step ${rms} at scale ${scale}`)
      assert.ok(result.latent[3] < result.latent[0] && result.latent[0] < 0, 'moves against the gradient')
    }
  })

  it('clips each element, and keeps the norm when asked (DOODL)', () => {
    const clipped = makeUpdater({ ...sgd, lr: 1, clip: 0.5 })(Float32Array.of(0, 0), Float32Array.of(1, 0.01))
    assert.ok('latent' in clipped && clipped.latent[0] === -0.5)
    const latent = Float32Array.of(3, 4)
    const kept = makeUpdater({ ...sgd, renormalize: true })(latent, Float32Array.of(1, -2))
    assert.ok('latent' in kept && Math.abs(norm(kept.latent) - 5) < 1e-5)
  })

  it('Adam: the first step is lr·sign(g) per element (bias-corrected), without normalisation', () => {
    const step = makeUpdater({ ...sgd, optimizer: 'adam', normalize: false, lr: 0.01 })
    const first = step(Float32Array.of(0, 0), Float32Array.of(5, -0.001))
    assert.ok('latent' in first)
    assert.ok(Math.abs(first.latent[0] + 0.01) < 1e-6 && Math.abs(first.latent[1] - 0.01) < 1e-5)
  })
})

describe('the x_t update of a guide step (guideLatent)', () => {
  const c = Float32Array.of(1, -2, 3, 0.5)
  // ½|x − c|²: its gradient is x − c
  const loss = (x: Float32Array) => 0.5 * x.reduce((s, v, i) => s + (v - c[i]) ** 2, 0)
  const pass = async (t: { data: Float32Array }) => ({ loss: loss(t.data), grad: t.data.map((v, i) => v - c[i]) })
  const lossOf = async (t: { data: Float32Array }) => loss(t.data)

  it('reports each iteration\'s loss before its update and the loss after the last one', async () => {
    const reported: { iter: number; loss: number }[] = []
    const x = { data: new Float32Array(4), dims: [1, 4] }
    const { latent, finalLoss } = await guideLatent(x, 3, { ...sgd, lr: 0.2 }, pass, lossOf, r => reported.push(r))
    assert.deepEqual(reported.map(r => r.iter), [0, 1, 2])
    assert.equal(reported[0].loss, loss(x.data))
    assert.ok(reported[1].loss < reported[0].loss && reported[2].loss < reported[1].loss, 'descends')
    assert.equal(finalLoss, loss(latent.data), 'the final loss is that of the updated latent')
    assert.ok(finalLoss < reported[2].loss)
    const once = await guideLatent(x, 1, { ...sgd, lr: 0.2 }, pass, lossOf, () => {})
    assert.notEqual(once.finalLoss, loss(x.data), 'with one iteration the two losses differ')
  })

  it('keeps the latent on an unusable gradient and says so', async () => {
    const reported: { skipped?: string }[] = []
    const x = { data: Float32Array.from(c), dims: [1, 4] } // at the minimum: a zero gradient
    const { latent, finalLoss } = await guideLatent(x, 2, sgd, pass, lossOf, r => reported.push(r))
    assert.deepEqual(reported.map(r => r.skipped), ['zero', 'zero'])
    assert.deepEqual(latent.data, x.data)
    assert.equal(finalLoss, 0)
  })
})
