// The lookahead guidance engine (Gal et al. 2024, §5.1): DDIM to the guide step; there, K times: preview the
// clean image in one step (LCM UNet, or the naive x0 estimate), decode it, score it with the guide, and move
// x_t down the loss gradient; then plain DDIM to the end. Guidance wraps the sampler through its hooks.
import { cachedSession, foldedTag, type CacheSettings } from '../derived.js'
import { check } from '../errors.js'
import { foldGraph } from '../onnx/fold.js'
import { readModel, type LoadedModel } from '../onnx/proto.js'
import { ort, type Session } from '../onnx/session.js'
import { conditioning, conditioningFeeds, inputTensor, type Conditioning, type Tensor } from '../diffusion/conditioning.js'
import { decodeFinal, decoderScales, type Decoder, type DecoderKind } from '../diffusion/decoders.js'
import { ModelsFolder } from '../diffusion/models-folder.js'
import { ddimLoop, initialNoise, latentDims, loadSdxl, pipelineDims, unetEpsModel, type GenerateSettings, type LoopHooks, type StepState } from '../diffusion/pipeline.js'
import { ddimStep, renoise } from '../diffusion/schedulers.js'
import { imageFromTensor, type ImageTensor } from '../image/image.js'
import type { Method } from '../cli/settings.js'
import type { Guide } from './guide.js'
import { buildPreviewGraph, IMAGE, LATENT, LOSS, NOISE, previewGradient, previewStepInputs, stepInput } from './preview.js'
import { PREVIEWS, previewStepsOf, type PreviewKind } from './previews.js'
import { defaultUpdate, makeUpdater, type Skip, type UpdateSettings } from './update.js'

export { METHODS, type Method } from '../cli/settings.js'
export { pipelineDims } from '../diffusion/pipeline.js'

export interface LookaheadSettings extends GenerateSettings {
  /** which preview the loss is taken on (previews.ts); 'none' samples without guidance (the baseline) */
  preview: PreviewKind | 'none'
  guide?: Guide
  /** indices in the N-step schedule where x_t is updated (e.g. [10] of 50) */
  guideSteps: number[]
  /** update iterations per guide step (K) */
  iters: number
  /** self-recurrence: at each guide step, R rounds of (K updates, one DDIM step, re-noise back to t); 1 = off */
  recur?: number
  update?: UpdateSettings
  /** CFG inside the preview; default: the preview's own (previews.ts: the sampler's for x0, none for lcm, as the paper does) */
  previewCfg?: number
  /** steps inside a multi-step preview (lcm); default 1, the paper's */
  previewSteps?: number
  /** guide at a lower resolution: the preview's square image side (x_t is resized for the preview only) */
  guideSize?: number
  /** hold less in the gradient pass: recompute its forward in this many segments during the backward (1: off) */
  recompute?: number
  /** the decoder inside the preview; default TAESDXL where the folder has one */
  previewDecoder?: DecoderKind
  /** where gradient models are cached; default $LOOKAHEAD_CACHE or ~/.cache/lcm-lookahead */
  cacheDir?: string
  onIteration?: (iteration: Iteration) => void
  /**
   * The decoded preview each iteration's loss was taken on, and the iteration's time (gradient pass and update)
   * in ms; for pictures of the lookahead at work. It costs no UNet evaluation: the gradient pass outputs it.
   */
  onPreview?: (iteration: Iteration, preview: ImageTensor, ms: number) => void
  warn?: (message: string) => void
  /** a line for a long step the run takes once (building the LoRA'd UNet) */
  progress?: (line: string) => void
}

export interface Iteration {
  step: number
  t: number
  iter: number
  /** the loss of the preview before this iteration's update */
  loss: number
  /** the self-recurrence round (0 without --recur) */
  round: number
  skipped?: Skip
}

export interface LookaheadResult {
  latents: Tensor
  image: Tensor
  iterations: Iteration[]
  /** the loss of the preview after the last update of the last guide step (undefined without guidance) */
  finalLoss?: number
  timings: { gradientModelMs: number; samplingMs: number; guidanceMs: number }
}

export interface PreviewModels {
  unet: LoadedModel
  decoder: LoadedModel
  /** how the decoder's input and output are scaled (see diffusion/decoders.ts) */
  scales: Pick<Decoder, 'inputScale' | 'outputScale' | 'outputShift'>
}

/** The ε model and decoder a preview runs through; `progress` hears of the LoRA'd UNet being built. */
export async function previewModels(models: string | ModelsFolder, kind: PreviewKind, decoder?: DecoderKind, progress?: (line: string) => void): Promise<PreviewModels> {
  const folder = await ModelsFolder.of(models)
  const unetPath = PREVIEWS[kind].unet === 'lcm' ? await folder.lcmUnet(progress) : folder.path('unet')
  const decoderKind = folder.previewDecoder(decoder)
  const decoderModel = await readModel(await folder.decoderPath(decoderKind))
  return { unet: await readModel(unetPath), decoder: decoderModel, scales: decoderScales(decoderKind, decoderModel.model) }
}

/**
 * The preview's composed graph as built, unfolded: with a guide it outputs `loss` (and `image`), without one only
 * `image`. Its cached sessions are keyed on it, so a cache hit neither folds nor differentiates.
 */
export function previewGraph(parts: PreviewModels, shape: PreviewShape, guide?: Guide): LoadedModel {
  const g = buildPreviewGraph({ unet: parts.unet, decoder: parts.decoder, decoderScales: parts.scales, ...shape, guide })
  return { model: g.build(), dir: parts.unet.dir }
}

/** The preview's forward graph specialised to the pipeline's dims and folded (onnx/fold.ts): its gradient has static shapes. */
export const previewForward = (parts: PreviewModels, shape: PreviewShape, guide?: Guide): LoadedModel =>
  foldPreview(previewGraph(parts, shape, guide), shape.cfg)

const foldPreview = (graph: LoadedModel, cfg: number) => foldGraph(graph, pipelineDims(cfg))

/** The preview's CFG, the sampled latent's shape, the preview's image size (smaller: --guide-size) and its steps. */
export interface PreviewShape {
  cfg: number
  latentShape: number[]
  imageSize: { height: number; width: number }
  steps: number
}

/** The preview's shape for a run: full size unless a smaller square side `guideSize` is asked for (checked in guides/jobs.ts checkJob). */
export function previewShape(cfg: number, latentShape: number[], guideSize?: number, steps = 1): PreviewShape {
  const full = { height: latentShape[2] * 8, width: latentShape[3] * 8 }
  if (guideSize === undefined) return { cfg, latentShape, imageSize: full, steps }
  return { cfg, latentShape, imageSize: { height: guideSize, width: guideSize }, steps }
}

/** The preview's CFG for a run: --preview-cfg, else the preview's own default from the sampler's. */
export const previewCfgOf = (settings: Pick<LookaheadSettings, 'cfg' | 'previewCfg'>, kind: PreviewKind) => settings.previewCfg ?? PREVIEWS[kind].defaultCfg(settings.cfg)

/** The decoded preview of x_t (the paper's fig. 2), as a session: inputs as the preview graph's, output `image`. */
export const previewImageSession = (parts: PreviewModels, shape: PreviewShape, settings: CacheSettings) =>
  cachedSession(previewGraph(parts, shape), m => foldPreview(m, shape.cfg), foldedTag('preview', pipelineDims(shape.cfg)), settings)

/**
 * The gradient of the preview's loss w.r.t. the latent, with the loss and the decoded preview, built once and
 * cached on disk, keyed by the unfolded forward graph (which holds the guide's target), its weight files, the
 * dims it is folded at and the recomputation's segments.
 */
export function gradientSession(parts: PreviewModels, guide: Guide, shape: PreviewShape, settings: CacheSettings, segments = 1): Promise<Session> {
  const derive = (m: LoadedModel) => previewGradient(foldPreview(m, shape.cfg), segments)
  const tag = foldedTag(segments > 1 ? `grad-image-recompute${segments}` : 'grad-image', pipelineDims(shape.cfg))
  return cachedSession(previewGraph(parts, shape, guide), derive, tag, settings)
}

/**
 * Feeds for a preview or gradient session at latent x, timestep t: with `steps` > 1 also the later steps'
 * timesteps, coefficients and re-noising noise (seeded by `noiseSeed`; shaped as the preview's latent).
 */
export function previewFeeds(session: Session, kind: PreviewKind, x: Tensor, t: number, cond: Conditioning, steps = 1, noiseSeed = 0): Record<string, ort.Tensor> {
  const noiseShape = steps > 1 ? (session.input(stepInput(NOISE, 1)).shape as number[]) : x.dims
  const { coefficients, timesteps, noises } = previewStepInputs(kind, t, steps, noiseShape, noiseSeed)
  const timestep = session.input('timestep')
  const feeds: Record<string, ort.Tensor> = {
    ...conditioningFeeds(session, t, cond),
    [LATENT]: inputTensor(session.input(LATENT), x.data, x.dims),
  }
  for (const [name, value] of Object.entries(coefficients)) feeds[name] = new ort.Tensor('float32', Float32Array.of(value), [])
  for (const [name, value] of Object.entries(timesteps)) feeds[name] = inputTensor(session.input(name), [value], timestep.shape.length === 0 ? [] : [1])
  for (const [name, noise] of Object.entries(noises)) feeds[name] = new ort.Tensor('float32', noise.data, noise.dims)
  return feeds
}

/** Text → image with lookahead guidance at the chosen steps. */
export async function lookahead(settings: LookaheadSettings): Promise<LookaheadResult> {
  const started = performance.now()
  // the settings were checked where they were read (src/cli/settings.ts); here only what the engine adds
  check(settings.preview === 'none' || settings.guide, `--preview ${settings.preview} needs a loss (--loss) and its reference`)
  const recur = settings.recur ?? 1
  const segments = settings.recompute ?? 1
  const update = settings.update ?? defaultUpdate
  const models = await loadSdxl(settings.models, settings.session, settings)
  const cond = await conditioning(settings, models.unet, models.text)
  const eps = unetEpsModel(models.unet, cond, settings.cfg)
  const dims = latentDims(models.unet, settings.size)

  const iterations: Iteration[] = []
  let finalLoss: number | undefined
  let gradientModelMs = 0
  let guidanceMs = 0
  let beforeStep: LoopHooks['beforeStep']
  if (settings.preview !== 'none' && settings.iters > 0 && settings.guideSteps.length > 0) {
    const kind = settings.preview
    const guide = settings.guide!
    const previewCfg = previewCfgOf(settings, kind)
    const steps = previewStepsOf(kind, settings.previewSteps)
    const parts = await previewModels(models.folder, kind, settings.previewDecoder, settings.progress)
    const built = performance.now()
    const shape = previewShape(previewCfg, dims, settings.guideSize, steps)
    const gradient = await gradientSession(parts, guide, shape, settings, segments)
    gradientModelMs = performance.now() - built
    const previewCond = previewCfg === settings.cfg ? cond : await conditioning({ ...settings, cfg: previewCfg }, models.unet, models.text)

    /** One guide step's round: K updates of x_t, with the loss of the preview after the last one. */
    const guideAt = async (index: number, t: number, x: Tensor, round: number): Promise<Tensor> => {
      // a multi-step preview re-noises with noise fixed through this round (so its loss is a function of x_t)
      const previewAt = (latent: Tensor) => previewFeeds(gradient, kind, latent, t, previewCond, steps, settings.seed * 100003 + index * 101 + round + 50021)
      // inputs the guide computes outside the gradient (the face alignment) come from this round's first
      // preview: a pass with the reference's defaults shows it (its gradient is not used). The gradient session
      // gives the preview, so no second copy of the UNet is held for it.
      let guideFeeds = await guide.feeds()
      if (Object.keys(guideFeeds).length > 0) {
        const shown = await gradient.run({ ...previewAt(x), ...guideFeeds }, [IMAGE])
        guideFeeds = await guide.feeds(imageFromTensor(shown[IMAGE].data as Float32Array, shown[IMAGE].dims))
      }
      const feeds = (latent: Tensor) => ({ ...previewAt(latent), ...guideFeeds })
      // the last pass's preview image and start, for onPreview
      let shown: ImageTensor | undefined
      let passStarted = 0
      const pass: GradientPass = async latent => {
        passStarted = performance.now()
        const out = await gradient.run(feeds(latent), [LOSS, `${LATENT}_grad`, ...(settings.onPreview ? [IMAGE] : [])])
        if (settings.onPreview) shown = imageFromTensor(out[IMAGE].data as Float32Array, out[IMAGE].dims)
        return { loss: Number((out[LOSS].data as Float32Array)[0]), grad: out[`${LATENT}_grad`].data as Float32Array }
      }
      // onnxruntime runs only what the asked outputs need: the loss alone is one forward
      const lossOf = async (latent: Tensor) => Number(((await gradient.run(feeds(latent), [LOSS]))[LOSS].data as Float32Array)[0])
      const guided = await guideLatent(x, settings.iters, update, pass, lossOf, ({ iter, loss, skipped }) => {
        const record: Iteration = { step: index, t, iter, loss, round, ...(skipped ? { skipped } : {}) }
        if (skipped) settings.warn?.(`step ${index}, iteration ${iter}: ${skipped} gradient, update skipped`)
        iterations.push(record)
        settings.onIteration?.(record)
        if (shown) settings.onPreview?.(record, shown, performance.now() - passStarted)
      })
      finalLoss = guided.finalLoss
      return guided.latent
    }

    beforeStep = async ({ index, t, tPrev, x }: StepState) => {
      if (!settings.guideSteps.includes(index)) return
      const began = performance.now()
      let latent = await guideAt(index, t, x, 0)
      for (let round = 1; round < recur; round++) {
        // self-recurrence: step to t_prev, then back to t with fresh noise (seeded by seed, step and round)
        const stepped = ddimStep(latent.data, await eps(latent, t), t, tPrev)
        const noise = initialNoise(settings.seed * 100003 + index * 101 + round, x.dims).data
        latent = await guideAt(index, t, { data: renoise(stepped, noise, tPrev, t), dims: x.dims }, round)
      }
      guidanceMs += performance.now() - began
      return latent
    }
  }
  const noise = initialNoise(settings.seed, dims)
  const latents = await ddimLoop(noise, settings.steps, eps, {
    beforeStep,
    afterStep: ({ index }) => settings.onStep?.(index + 1, settings.steps),
  })
  const { image } = await decodeFinal(models.folder, latents, settings.decoder, settings.session)
  const samplingMs = performance.now() - started - gradientModelMs - guidanceMs
  return { latents, image, iterations, finalLoss, timings: { gradientModelMs, samplingMs, guidanceMs } }
}

/** The loss of the preview at a latent and its gradient there. */
export type GradientPass = (latent: Tensor) => Promise<{ loss: number; grad: Float32Array }>

/**
 * The x_t update of one guide step: `iters` steps down the gradient of the preview's loss (an unusable
 * gradient keeps the latent), each reported with the loss before it; then the loss after the last update.
 */
export async function guideLatent(
  x: Tensor,
  iters: number,
  update: UpdateSettings,
  pass: GradientPass,
  lossOf: (latent: Tensor) => Promise<number>,
  report: (iteration: { iter: number; loss: number; skipped?: Skip }) => void,
): Promise<{ latent: Tensor; finalLoss: number }> {
  const step = makeUpdater(update)
  let latent = x
  for (let iter = 0; iter < iters; iter++) {
    const { loss, grad } = await pass(latent)
    const next = step(latent.data, grad)
    if ('skipped' in next) report({ iter, loss, skipped: next.skipped })
    else {
      latent = { data: next.latent, dims: x.dims }
      report({ iter, loss })
    }
  }
  return { latent, finalLoss: await lossOf(latent) }
}

