// Figures for teaching and comparing. The paper's fig. 2: at several steps of one sampling run, the naive x0
// estimate (blurry early) beside the LCM preview (sharp, close to the end result) and the final image. Fig. 5:
// a row per loss, the reference, then each method's guided image. One grid (image/image.ts) draws them all.
import { check } from '../errors.js'
import { conditioning, outputTensor, type Tensor } from '../diffusion/conditioning.js'
import { decodeFinal } from '../diffusion/decoders.js'
import { ddimLoop, initialNoise, latentDims, loadSdxl, unetEpsModel, type GenerateSettings } from '../diffusion/pipeline.js'
import { composeGrid, coverImage, imageFromTensor, type GridCell, type GridOptions, type ImageTensor } from '../image/image.js'
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
  const models = await loadSdxl(settings.models, settings.session, settings)
  const cond = await conditioning(settings, models.unet, models.text)
  const dims = latentDims(models.unet, settings.size)
  const previews = {} as Record<PreviewKind, { session: Awaited<ReturnType<typeof previewImageSession>>; cond: typeof cond }>
  for (const kind of PREVIEW_KINDS) {
    const cfg = PREVIEWS[kind].defaultCfg(settings.cfg)
    const session = await previewImageSession(await previewModels(models.folder, kind), previewShape(cfg, dims), settings)
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
  return { rows, final: (await decodeFinal(models.folder, latents, settings.decoder, settings.session)).image }
}

/** Pixel RMS distance between two images of the same size, both in [-1,1]. */
export function pixelRms(a: Float32Array, b: Float32Array): number {
  check(a.length === b.length, `images differ in size (${a.length} and ${b.length} values)`)
  return Math.sqrt(a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0) / a.length)
}

/** How far each preview is from the final image (pixel RMS): the lookahead's promise is a small lcm distance early. */
export function previewDistances(figure: Figure): { step: number; t: number; x0: number; lcm: number }[] {
  return figure.rows.map(({ step, t, previews }) => ({ step, t, x0: pixelRms(previews.x0.data, figure.final.data), lcm: pixelRms(previews.lcm.data, figure.final.data) }))
}

/**
 * Rows of cells with the reference shown once, at the head of the first row (every layout of the project:
 * compare's grid, fig. 2 and fig. 5). The reference is cropped and resized to the first cell's size.
 */
export function gridWithReference(rows: GridCell[][], reference: ImageTensor | undefined, options: GridOptions = {}): ImageTensor {
  const first = rows[0]?.[0]?.image
  const shown = reference && first ? { image: coverImage(reference, first.width, first.height), label: 'reference' } : undefined
  return composeGrid(shown ? rows.map((row, i) => [i === 0 ? shown : undefined, ...row]) : rows, options)
}

/** The paper's fig. 2 as one image: a row per step (x0 estimate, LCM preview, each with its distance to the final image), the final image once. */
export function previewFigureImage(figure: Figure, options: { reference?: ImageTensor; title?: string } = {}): ImageTensor {
  const final = imageFromTensor(figure.final.data, figure.final.dims)
  const distances = previewDistances(figure)
  const rows: GridCell[][] = figure.rows.map((row, i) => [
    ...(['x0', 'lcm'] as const).map(kind => ({
      image: imageFromTensor(row.previews[kind].data, row.previews[kind].dims),
      label: `step ${row.step} (t=${row.t}) ${kind}\nto final: ${distances[i][kind].toFixed(3)}`,
    })),
    ...(i === 0 ? [{ image: final, label: 'final image' }] : []),
  ])
  return gridWithReference(rows, options.reference, { title: options.title })
}

/** One guided image of fig. 5: its loss (the row), method and seed, and a line of its own (e.g. a metric). */
export interface LossFigureCell {
  loss: string
  method: string
  seed: number
  image: ImageTensor
  note?: string
}

/**
 * The paper's fig. 5: a row per loss, the reference, then each method's image (per seed, methods side by side),
 * under a title with the settings.
 */
export function lossFigureImage(cells: LossFigureCell[], options: { reference?: ImageTensor; title?: string } = {}): ImageTensor {
  check(cells.length > 0, 'a figure needs at least one image')
  const losses = [...new Set(cells.map(c => c.loss))]
  const rows = losses.map(loss => cells.filter(c => c.loss === loss).map(c => ({ image: c.image, label: `${c.loss}: ${c.method}, seed ${c.seed}${c.note ? `\n${c.note}` : ''}` })))
  return gridWithReference(rows, options.reference, { title: options.title })
}
