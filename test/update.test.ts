import assert from 'node:assert/strict'
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
