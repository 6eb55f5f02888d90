// The baseline guidance must beat at equal compute: best-of-N. N unguided samples (seed, then seeds derived from
// it); the one whose final image has the lowest guide loss is kept, with N chosen so that the N samples cost the
// guided run's UNet evaluations. Guidance that does not beat this is not worth its cost.
import { check } from '../errors.js'
import { GraphBuilder } from '../onnx/builder.js'
import type { Tensor } from '../diffusion/conditioning.js'
import { imageFromTensor } from '../image/image.js'
import { ort } from '../onnx/session.js'
import { cachedSession, type CacheSettings } from '../derived.js'
import { lookahead, type LookaheadResult, type LookaheadSettings } from './engine.js'
import type { Guide, Size } from './guide.js'
import { IMAGE, LOSS } from './preview.js'

/** N whose unguided samples cost about the guided run's UNet evaluations: round(guided / one sample), at least 1. */
export function bestOfCount(guidedEvaluations: number, samplingEvaluations: number): number {
  check(samplingEvaluations > 0, 'best-of-N: a sample costs no UNet evaluation')
  return Math.max(1, Math.round(guidedEvaluations / samplingEvaluations))
}

/** The seed of candidate j for a run's seed: the seed itself first (so best-of-1 is the unguided sample). */
export const candidateSeed = (seed: number, j: number) => seed + 1000003 * j

/**
 * The guide's loss on a (final) image [1,3,H,W] in [-1,1], as a function: the same loss the previews are scored
 * with, so it compares methods on the images they end with. The guide's own inputs (the face alignment) are
 * found on the image it scores.
 */
export async function imageLossFunction(guide: Guide, size: Size, settings: CacheSettings): Promise<(image: Tensor) => Promise<number>> {
  const g = new GraphBuilder('guide_loss', 17)
  const input = g.input(IMAGE, 'float32', [1, 3, size.height, size.width])
  g.outputAs(guide.lossFragment(g, input, size), LOSS, 'float32', [])
  const session = await cachedSession({ model: g.build(), dir: '.' }, m => m, 'guide-loss', settings)
  return async image => {
    const feeds = await guide.feeds(imageFromTensor(image.data as Float32Array, image.dims))
    const out = await session.run({ ...feeds, [IMAGE]: new ort.Tensor('float32', image.data as Float32Array, image.dims) })
    return Number((out[LOSS].data as Float32Array)[0])
  }
}

export interface BestOfResult extends LookaheadResult {
  n: number
  /** the candidates' seeds and their final images' guide losses */
  candidates: { seed: number; loss: number }[]
  chosen: number
}

/** N unguided samples from `settings` (its preview is ignored); the final image with the lowest guide loss wins. */
export async function bestOfN(settings: LookaheadSettings & { guide: Guide }, n: number): Promise<BestOfResult> {
  check(Number.isInteger(n) && n >= 1, `best-of-N: N must be a positive integer (got ${n})`)
  const lossOf = await imageLossFunction(settings.guide, settings.size, settings)
  const candidates: BestOfResult['candidates'] = []
  let best: { result: LookaheadResult; chosen: number } | undefined
  for (let j = 0; j < n; j++) {
    const seed = candidateSeed(settings.seed, j)
    const result = await lookahead({ ...settings, seed, preview: 'none' })
    const loss = await lossOf(result.image)
    if (!best || loss < candidates[best.chosen].loss) best = { result, chosen: j }
    candidates.push({ seed, loss })
  }
  return { ...best!.result, n, candidates, chosen: best!.chosen }
}
