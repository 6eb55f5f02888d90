// The paper's fig. 2, for teaching: at several steps of one sampling run, the naive x0 estimate (blurry early)
// beside the LCM preview (sharp, close to the end result) beside the final image.
import { check } from '../errors.js'
import { conditioning, outputTensor, type Tensor } from '../diffusion/conditioning.js'
import { decodeFinal } from '../diffusion/decoders.js'
import { ddimLoop, initialNoise, latentDims, loadSdxl, unetEpsModel, type GenerateSettings } from '../diffusion/pipeline.js'
import { IMAGE } from './preview.js'
import { PREVIEW_KINDS, PREVIEWS, type PreviewKind } from './previews.js'
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

/** One sampling run; at each step in `at`, x_t is previewed every way (previews.ts; each with its own default CFG). */
export async function previewFigure(settings: GenerateSettings & { at: number[]; cacheDir?: string }): Promise<Figure> {
  for (const s of settings.at) check(Number.isInteger(s) && s >= 0 && s < settings.steps, `step ${s} is outside 0…${settings.steps - 1}`)
  const models = await loadSdxl(settings.models, settings.session)
  const cond = await conditioning(settings, models.unet, models.text)
  const dims = latentDims(models.unet, settings.size)
  const previews = {} as Record<PreviewKind, { session: Awaited<ReturnType<typeof previewImageSession>>; cond: typeof cond }>
  for (const kind of PREVIEW_KINDS) {
    const cfg = PREVIEWS[kind].defaultCfg(settings.cfg)
    const session = await previewImageSession(await previewModels(settings.models, kind), previewShape(cfg, dims), settings)
    previews[kind] = { session, cond: cfg === settings.cfg ? cond : await conditioning({ ...settings, cfg }, models.unet, models.text) }
  }
  const rows: FigureRow[] = []
  const latents = await ddimLoop(initialNoise(settings.seed, dims), settings.steps, unetEpsModel(models.unet, cond, settings.cfg), {
    beforeStep: async ({ index, t, x }) => {
      if (!settings.at.includes(index)) return
      const row = {} as Record<PreviewKind, Tensor>
      for (const kind of PREVIEW_KINDS) {
        const { session, cond } = previews[kind]
        row[kind] = outputTensor((await session.run(previewFeeds(session, kind, x, t, cond), [IMAGE]))[IMAGE])
      }
      rows.push({ step: index, t, previews: row })
    },
    afterStep: ({ index }) => settings.onStep?.(index + 1, settings.steps),
  })
  return { rows, final: (await decodeFinal(settings.models, latents, settings.decoder, settings.session)).image }
}
