import assert from 'node:assert/strict'
import {
  alphaBar, alphasCumprod, ddimStep, ddimTimesteps, guide, lcmPreview, lcmScalings, naiveX0, previousTimestep,
} from '../src/diffusion/schedulers.js'

const close = (actual: ArrayLike<number>, expected: number[], tolerance: number) =>
  expected.forEach((e, i) => assert.ok(Math.abs(actual[i] - e) <= tolerance, `[${i}] ${actual[i]} vs ${e}`))

describe('schedulers', () => {
  it('ᾱ matches diffusers (scaled_linear 0.00085–0.012) to 1e-6', () => {
    // reference values from shared/reference/model-contracts.md §3 (diffusers, float32)
    const reference: Record<number, number> = { 1: 0.998296, 21: 0.980381, 261: 0.655669, 501: 0.274999, 781: 0.043456, 981: 0.005775, 0: 0.99915 }
    const alphas = alphasCumprod()
    assert.equal(alphas.length, 1000)
    for (const [t, value] of Object.entries(reference)) assert.ok(Math.abs(alphas[Number(t)] - value) <= 1e-6, `ᾱ[${t}] = ${alphas[Number(t)]}`)
    assert.equal(alphaBar(-19), alphas[0]) // set_alpha_to_one = false: the step after the last uses ᾱ[0]
  })

  it('uses "leading" timesteps with steps_offset 1: 981, 961, …, 1 for 50 steps', () => {
    const steps = ddimTimesteps(50)
    assert.equal(steps.length, 50)
    assert.deepEqual(steps.slice(0, 3), [981, 961, 941])
    assert.deepEqual(steps.slice(-2), [21, 1])
    assert.deepEqual(ddimTimesteps(4), [751, 501, 251, 1])
    assert.equal(previousTimestep(981, 50), 961)
    assert.equal(previousTimestep(1, 50), -19)
  })

  // Reference numbers: the diffusers formulas (scheduling_ddim.py step, eta 0; scheduling_lcm.py boundary
  // scalings) evaluated with Debian's torch 1.13 on float32 tensors; x and ε are torch.randn with seeds 0 and 1.
  const x = Float32Array.from([1.5409960746765137, -0.293428897857666, -2.1787893772125244, 0.5684312582015991])
  const eps = Float32Array.from([0.6613521575927734, 0.266924113035202, 0.06167725846171379, 0.6213173270225525])

  it('DDIM step (eta 0, no clipping), naive x0 and the LCM preview match the reference', () => {
    close(ddimStep(x, eps, 981, 961), [1.6487970352172852, -0.36237603425979614, -2.45405912399292, 0.5616854429244995], 1e-5)
    close(naiveX0(x, eps, 981), [11.599932670593262, -7.363229274749756, -29.478761672973633, -0.6722559332847595], 1e-4)
    close(lcmPreview(x, eps, 981), [11.599932670593262, -7.363229274749756, -29.478761672973633, -0.6722559332847595], 1e-4)
    // the last step goes to ᾱ[0]; at t = 1 c_skip is not negligible
    close(ddimStep(x, eps, 1, -19), [1.5336251258850098, -0.2967953085899353, -2.1804699897766113, 0.5611304044723511], 1e-6)
    close(lcmPreview(x, eps, 1), [1.5169398784637451, -0.30505862832069397, -2.185905694961548, 0.5439864993095398], 1e-6)
  })

  it('LCM boundary scalings: c_skip 2.5e-3 at t = 1, negligible from t ≈ 20; c_out → 1', () => {
    assert.ok(Math.abs(lcmScalings(1).cSkip - 0.25 / 100.25) < 1e-12)
    assert.ok(lcmScalings(19).cSkip < 1e-5)
    assert.ok(Math.abs(lcmScalings(500).cOut - 1) < 1e-7)
  })

  it('classifier-free guidance is uncond + g·(text − uncond)', () => {
    assert.deepEqual(Array.from(guide(Float32Array.from([1, 2]), Float32Array.from([3, 0]), 5)), [11, -8])
  })
})
