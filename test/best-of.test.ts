// Best-of-N: N unguided samples, the final image with the lowest guide loss kept; N from the guided run's cost.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { closeSessions } from '../src/onnx/session.js'
import { bestOfCount, bestOfN, candidateSeed } from '../src/guidance/best-of.js'
import { lookahead, type LookaheadSettings } from '../src/guidance/engine.js'
import { pixelGuide } from '../src/guidance/guide.js'
import { drawnFaces } from '../src/world/world.js'
import { buildWorldFolder } from '../src/world/models.js'

const SIZE = 32

describe('best-of-N', function () {
  this.timeout(60000)
  let dir: string
  let settings: LookaheadSettings & { guide: ReturnType<typeof pixelGuide> }
  const target = drawnFaces(SIZE)[4].pixels
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lookahead-best-'))
    await buildWorldFolder(join(dir, 'world'), { settings: { size: SIZE, lcmSteps: 20 } })
    settings = {
      prompt: '', steps: 10, cfg: 1, seed: 4, size: { height: SIZE, width: SIZE }, models: join(dir, 'world'),
      preview: 'lcm', guide: pixelGuide(target), guideSteps: [2], iters: 3, cacheDir: join(dir, 'cache'),
    }
  })
  after(async () => { await closeSessions(); await rm(dir, { recursive: true, force: true }) })

  it('takes N so that N samples cost the guided run\'s UNet evaluations', () => {
    assert.equal(bestOfCount(83, 50), 2)
    assert.equal(bestOfCount(60, 50), 1)
    assert.equal(bestOfCount(10, 50), 1)
    assert.equal(bestOfCount(250, 50), 5)
  })

  it('keeps the unguided sample whose final image has the lowest guide loss', async () => {
    const best = await bestOfN(settings, 3)
    assert.equal(best.n, 3)
    assert.deepEqual(best.candidates.map(c => c.seed), [0, 1, 2].map(j => candidateSeed(4, j)))
    // each candidate's loss is the mean squared difference of its final image to the target
    const losses: number[] = []
    for (const { seed } of best.candidates) {
      const { image } = await lookahead({ ...settings, seed, preview: 'none' })
      losses.push(image.data.reduce((s, v, i) => s + (v - target[i]) ** 2, 0) / image.data.length)
    }
    best.candidates.forEach((c, i) => assert.ok(Math.abs(c.loss - losses[i]) < 1e-5 * losses[i], `candidate ${i}: ${c.loss} vs ${losses[i]}`))
    assert.ok(new Set(losses).size === 3, 'the candidates differ')
    assert.equal(best.chosen, losses.indexOf(Math.min(...losses)))
    const chosen = await lookahead({ ...settings, seed: best.candidates[best.chosen].seed, preview: 'none' })
    assert.deepEqual(Array.from(best.image.data), Array.from(chosen.image.data))
    assert.equal(best.iterations.length, 0)
  })
})
