// The paper's fig. 2, for teaching: at several steps of one sampling run, the naive x0 estimate (blurry early)
// beside the LCM preview (sharp, close to the end result) beside the final image.
import { check } from '../errors.js'
import { conditioning, outputTensor, type Tensor } from '../diffusion/conditioning.js'
import { decodeFinal } from '../diffusion/decoders.js'
import { ddimLoop, initialNoise, latentDims, loadSdxl, unetEpsModel, type GenerateSettings } from '../diffusion/pipeline.js'
import { IMAGE, type PreviewKind } from './preview.js'
import { previewFeeds, previewImageSession, previewModels, previewShape } from './engine.js'

export interface FigureRow {
  step: number
  t: number
  /** decoded previews of x_t, [1,3,H,W] in [-1,1] */
  previews: Record<PreviewKind, Tensor>
}

export interface Figure {
  rows: FigureRow[]
  final: Tensor
}

/** One sampling run; at each step in `at`, x_t is previewed both ways (x0 with the sampler's CFG, LCM without). */
export async function previewFigure(settings: GenerateSettings & { at: number[]; cacheDir?: string }): Promise<Figure> {
  for (const s of settings.at) check(Number.isInteger(s) && s >= 0 && s < settings.steps, `step ${s} is outside 0…${settings.steps - 1}`)
  const models = await loadSdxl(settings.models, settings.session)
  const cond = await conditioning(settings, models.unet, models.text)
  const lcmCond = settings.cfg > 1 ? await conditioning({ ...settings, cfg: 1 }, models.unet, models.text) : cond
  const dims = latentDims(models.unet, settings.size)
  const sessions = {
    x0: await previewImageSession(await previewModels(settings.models, 'x0'), previewShape(settings.cfg, dims), settings),
    lcm: await previewImageSession(await previewModels(settings.models, 'lcm'), previewShape(1, dims), settings),
  }
  const rows: FigureRow[] = []
  const latents = await ddimLoop(initialNoise(settings.seed, dims), settings.steps, unetEpsModel(models.unet, cond, settings.cfg), {
    beforeStep: async ({ index, t, x }) => {
      if (!settings.at.includes(index)) return
      const preview = async (kind: PreviewKind) => {
        const out = await sessions[kind].run(previewFeeds(sessions[kind], kind, x, t, kind === 'lcm' ? lcmCond : cond), [IMAGE])
        return outputTensor(out[IMAGE])
      }
      rows.push({ step: index, t, previews: { x0: await preview('x0'), lcm: await preview('lcm') } })
    },
    afterStep: ({ index }) => settings.onStep?.(index + 1, settings.steps),
  })
  return { rows, final: (await decodeFinal(settings.models, latents, settings.decoder, settings.session)).image }
}
