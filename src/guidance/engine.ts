// The lookahead guidance engine (Gal et al. 2024, §5.1): DDIM to the guide step; there, K times: preview the
// clean image in one step (LCM UNet, or the naive x0 estimate), decode it, score it with the guide, and move
// x_t down the loss gradient; then plain DDIM to the end. Guidance wraps the sampler through its hooks.
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { check } from '../errors.js'
import { cacheRoot } from '../fsutil.js'
import { differentiate } from '../onnx/autodiff.js'
import { encodeModel, externalDataFiles, graphOf, readModel, toNumber, writeModel, type GraphProto, type LoadedModel } from '../onnx/proto.js'
import { inferShapes } from '../onnx/shapes.js'
import { openSession, ort, type Session, type SessionSettings } from '../onnx/session.js'
import { conditioning, conditioningFeeds, inputTensor, TEXT_ENCODERS, type Conditioning, type Tensor } from '../diffusion/conditioning.js'
import { decodeFinal, decoderFile, decoderModelPath, decoderScales, DECODER_FOLDERS, finalDecoder, type Decoder, type DecoderKind } from '../diffusion/decoders.js'
import { lcmUnetPath } from '../diffusion/models-folder.js'
import { ddimLoop, initialNoise, latentDims, loadSdxl, unetEpsModel, type GenerateSettings, type LoopHooks, type StepState } from '../diffusion/pipeline.js'
import { ddimStep, lcmPreviewCoefficients, naiveX0Coefficients, renoise, type Linear } from '../diffusion/schedulers.js'
import { imageFromTensor } from '../image/image.js'
import { pixelGuide, type Guide } from './guide.js'
import { buildPreviewGraph, COEF_A, COEF_B, IMAGE, LATENT, LOSS, type PreviewKind } from './preview.js'
import { activationPeak, graphMemory, runCost, weightBytes, type GraphMemory, type RunCost } from './estimate.js'
import { defaultUpdate, makeUpdater, type Skip, type UpdateSettings } from './update.js'

export type Method = PreviewKind | 'none'
export const METHODS: Method[] = ['none', 'x0', 'lcm']

export interface LookaheadSettings extends GenerateSettings {
  /** which preview the loss is taken on; 'none' samples without guidance (the baseline) */
  preview: Method
  guide?: Guide
  /** indices in the N-step schedule where x_t is updated (e.g. [10] of 50) */
  guideSteps: number[]
  /** update iterations per guide step (K) */
  iters: number
  /** self-recurrence: at each guide step, R rounds of (K updates, one DDIM step, re-noise back to t); 1 = off */
  recur?: number
  update?: UpdateSettings
  /** CFG inside the preview; default: the sampler's for x0, none (1) for lcm, as the paper does */
  previewCfg?: number
  /** guide at a lower resolution: the preview's square image side (x_t is resized for the preview only) */
  guideSize?: number
  /** hold less in the gradient pass: recompute its forward in this many segments during the backward (1: off) */
  recompute?: number
  /** the decoder inside the preview; default TAESDXL where the folder has one */
  previewDecoder?: DecoderKind
  /** where gradient models are cached; default $LOOKAHEAD_CACHE or ~/.cache/lcm-lookahead */
  cacheDir?: string
  onIteration?: (iteration: Iteration) => void
  warn?: (message: string) => void
}

export interface Iteration {
  step: number
  t: number
  iter: number
  /** the loss of the preview before this iteration's update */
  loss: number
  /** the self-recurrence round (with recur > 1) */
  round?: number
  skipped?: Skip
}

export interface LookaheadResult {
  latents: Tensor
  image: Tensor
  iterations: Iteration[]
  timings: { gradientModelMs: number; samplingMs: number; guidanceMs: number }
}

/** The preview's coefficients at timestep t: x̂ = a·x_t + b·ε. */
export const previewCoefficients = (kind: PreviewKind, t: number): Linear => (kind === 'lcm' ? lcmPreviewCoefficients(t) : naiveX0Coefficients(t))

/** A key for a model built from other models: its graph bytes plus the size and mtime of each weight file. */
async function modelKey(model: LoadedModel, extra: string): Promise<string> {
  const hash = createHash('sha256').update(encodeModel(model.model)).update(extra)
  for (const file of externalDataFiles(model).sort()) {
    const { size, mtimeMs } = await stat(file)
    hash.update(`${file}|${size}|${mtimeMs}`)
  }
  return hash.digest('hex').slice(0, 24)
}

export interface PreviewModels {
  unet: LoadedModel
  decoder: LoadedModel
  /** how the decoder's input and output are scaled (see diffusion/decoders.ts) */
  scales: Pick<Decoder, 'inputScale' | 'outputScale' | 'outputShift'>
}

/** The ε model and decoder a preview runs through. */
export async function previewModels(models: string, kind: PreviewKind, decoder?: DecoderKind): Promise<PreviewModels> {
  const unetPath = kind === 'lcm' ? await lcmUnetPath(models) : join(models, 'unet', 'model.onnx')
  const decoderKind = decoder ?? (decoderFile(models, 'taesd') ? 'taesd' : 'vae')
  const decoderModel = await readModel(await decoderModelPath(models, decoderKind))
  return { unet: await readModel(unetPath), decoder: decoderModel, scales: decoderScales(decoderKind, decoderModel.model) }
}

/** A model derived from `forward` (itself, or its gradient), written once under the cache and opened. */
export async function cachedSession(forward: LoadedModel, derive: (m: LoadedModel) => LoadedModel, tag: string, settings: CacheSettings): Promise<Session> {
  const path = join(settings.cacheDir ?? cacheRoot(), `${tag}-${await modelKey(forward, tag)}`, 'model.onnx')
  if (!existsSync(path)) await writeModel(derive(forward), path)
  return openSession(path, settings.session)
}

export interface CacheSettings {
  cacheDir?: string
  session?: SessionSettings
}

/** The preview's forward graph: with a guide it outputs `loss` (and `image`), without one only `image`. */
export function previewForward(parts: PreviewModels, shape: PreviewShape, guide?: Guide): LoadedModel {
  const g = buildPreviewGraph({ unet: parts.unet, decoder: parts.decoder, decoderScales: parts.scales, ...shape, guide })
  return { model: g.build(), dir: parts.unet.dir }
}

/** The preview's CFG, the sampled latent's shape, and the preview's image size (smaller: --guide-size). */
export interface PreviewShape {
  cfg: number
  latentShape: number[]
  imageSize: { height: number; width: number }
}

/** The preview's shape for a run: full size unless a smaller square side `guideSize` is asked for. */
export function previewShape(cfg: number, latentShape: number[], guideSize?: number): PreviewShape {
  const full = { height: latentShape[2] * 8, width: latentShape[3] * 8 }
  if (guideSize === undefined) return { cfg, latentShape, imageSize: full }
  check(guideSize % 32 === 0 && guideSize >= 32 && guideSize <= Math.min(full.height, full.width), `--guide-size ${guideSize}: expected a multiple of 32 up to the image size`)
  return { cfg, latentShape, imageSize: { height: guideSize, width: guideSize } }
}

/** The decoded preview of x_t (the paper's fig. 2), as a session: inputs as the preview graph's, output `image`. */
export const previewImageSession = (parts: PreviewModels, shape: PreviewShape, settings: CacheSettings) =>
  cachedSession(previewForward(parts, shape), m => m, 'preview', settings)

/**
 * The gradient of the preview's loss w.r.t. the latent, with the loss and the decoded preview, built once and
 * cached on disk, keyed by the forward graph (which holds the guide's target), its weight files and the
 * recomputation's segments.
 */
export const gradientSession = (parts: PreviewModels, guide: Guide, shape: PreviewShape, settings: CacheSettings, segments = 1) =>
  cachedSession(previewForward(parts, shape, guide), m => differentiate(m, { wrt: [LATENT], of: LOSS, keep: [IMAGE], segments }), segments > 1 ? `grad-image-recompute${segments}` : 'grad-image', settings)

/** Feeds for a preview or gradient session at latent x, timestep t. */
export function previewFeeds(session: Session, kind: PreviewKind, x: Tensor, t: number, cond: Conditioning): Record<string, ort.Tensor> {
  const { a, b } = previewCoefficients(kind, t)
  return {
    ...conditioningFeeds(session, t, cond),
    [LATENT]: inputTensor(session.input(LATENT), x.data, x.dims),
    [COEF_A]: new ort.Tensor('float32', Float32Array.of(a), []),
    [COEF_B]: new ort.Tensor('float32', Float32Array.of(b), []),
  }
}

/** Text → image with lookahead guidance at the chosen steps. */
export async function lookahead(settings: LookaheadSettings): Promise<LookaheadResult> {
  const started = performance.now()
  check(Number.isInteger(settings.steps) && settings.steps >= 1, `--steps ${settings.steps}: expected a positive integer`)
  check(Number.isInteger(settings.iters) && settings.iters >= 0, `--iters ${settings.iters}: expected a non-negative integer`)
  for (const s of settings.guideSteps) check(Number.isInteger(s) && s >= 0 && s < settings.steps, `guide step ${s} is outside 0…${settings.steps - 1}`)
  check(settings.preview === 'none' || settings.guide, `--preview ${settings.preview} needs a loss (--loss) and its reference`)
  const recur = settings.recur ?? 1
  check(Number.isInteger(recur) && recur >= 1, `--recur ${recur}: expected a positive integer`)
  const segments = settings.recompute ?? 1
  check(Number.isInteger(segments) && segments >= 1, `--recompute ${segments}: expected a positive integer`)
  const update = settings.update ?? defaultUpdate
  const models = await loadSdxl(settings.models, settings.session)
  const cond = await conditioning(settings, models.unet, models.text)
  const eps = unetEpsModel(models.unet, cond, settings.cfg)
  const dims = latentDims(models.unet, settings.size)
  check(!(settings.guideSize && models.world?.kind === 'demo'), '--guide-size: a demo world\'s models work at its own size only')

  const iterations: Iteration[] = []
  let gradientModelMs = 0
  let guidanceMs = 0
  let beforeStep: LoopHooks['beforeStep']
  if (settings.preview !== 'none' && settings.iters > 0 && settings.guideSteps.length > 0) {
    const kind = settings.preview
    const guide = settings.guide!
    const previewCfg = settings.previewCfg ?? (kind === 'x0' ? settings.cfg : 1)
    const parts = await previewModels(settings.models, kind, settings.previewDecoder)
    const built = performance.now()
    const shape = previewShape(previewCfg, dims, settings.guideSize)
    const gradient = await gradientSession(parts, guide, shape, settings, segments)
    gradientModelMs = performance.now() - built
    const previewCond = previewCfg === settings.cfg ? cond : await conditioning({ ...settings, cfg: previewCfg }, models.unet, models.text)

    /** K updates of x_t down the gradient of the preview's loss. */
    const guideAt = async (index: number, t: number, x: Tensor, round: number): Promise<Tensor> => {
      const step = makeUpdater(update)
      let latent = x
      // inputs the guide computes outside the gradient (the face alignment) come from this round's first
      // preview: a pass with the reference's defaults shows it (its gradient is not used). The gradient session
      // gives the preview, so no second copy of the UNet is held for it.
      let guideFeeds = await guide.feeds()
      if (Object.keys(guideFeeds).length > 0) {
        const shown = await gradient.run({ ...previewFeeds(gradient, kind, latent, t, previewCond), ...guideFeeds }, [IMAGE])
        guideFeeds = await guide.feeds(imageFromTensor(shown[IMAGE].data as Float32Array, shown[IMAGE].dims))
      }
      for (let iter = 0; iter < settings.iters; iter++) {
        const out = await gradient.run({ ...previewFeeds(gradient, kind, latent, t, previewCond), ...guideFeeds })
        const record: Iteration = { step: index, t, iter, loss: Number((out[LOSS].data as Float32Array)[0]), ...(recur > 1 ? { round } : {}) }
        const next = step(latent.data, out[`${LATENT}_grad`].data as Float32Array)
        if ('skipped' in next) {
          record.skipped = next.skipped
          settings.warn?.(`step ${index}, iteration ${iter}: ${next.skipped} gradient, update skipped`)
        } else latent = { data: next.latent, dims: x.dims }
        iterations.push(record)
        settings.onIteration?.(record)
      }
      return latent
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
  const { image } = await decodeFinal(settings.models, latents, settings.decoder, settings.session)
  const samplingMs = performance.now() - started - gradientModelMs - guidanceMs
  return { latents, image, iterations, timings: { gradientModelMs, samplingMs, guidanceMs } }
}

/** Values for the symbolic dims of a UNet's `sample` input (optimum: batch_size, height, width), by position. */
function sampleDims(unet: GraphProto, shape: number[]): Record<string, number> {
  const declared = unet.input.find(i => i.name === 'sample')?.type?.tensorType?.shape?.dim ?? []
  return Object.fromEntries(declared.flatMap((d, i) => (d.dimParam ? [[d.dimParam, shape[i]]] : [])))
}

/** The memory of the sessions a run holds beside the gradient pass, in bytes. */
export interface HeldSessions {
  weights: number
  samplingActivations: number
}

export interface DryRun extends RunCost {
  memory: GraphMemory
  /** the sessions a run holds beside the gradient pass: the sampling UNet, the text encoders, the final decoder */
  sessions: HeldSessions
  /** the gradient pass (weights + activations at their peak) and the other sessions, in bytes */
  peakBytes: number
  latentShape: number[]
}

/**
 * What `lookahead` would cost with these settings, from the graphs alone (no session is opened, no weights
 * are read): UNet evaluations, gradient passes, and the gradient pass's peak memory.
 */
export async function dryRun(settings: LookaheadSettings, held?: HeldSessions): Promise<DryRun> {
  const guided = settings.preview !== 'none' && settings.iters > 0 && settings.guideSteps.length > 0
  const previewCfg = settings.previewCfg ?? (settings.preview === 'x0' ? settings.cfg : 1)
  const { base, latentShape } = await samplingUnet(settings)
  const cost = runCost({ ...settings, previewCfg, guided })
  const sessions = held ?? (await heldSessions(settings, base, latentShape))
  const others = sessions.weights + sessions.samplingActivations
  if (!guided) return { ...cost, memory: { weights: 0, peak: 0, lowerBound: 0, saved: 0, upperBound: 0, unknown: 0 }, sessions, peakBytes: others, latentShape }
  const parts = await previewModels(settings.models, settings.preview as PreviewKind, settings.previewDecoder)
  const memory = await graphMemory(previewForward(parts, previewShape(previewCfg, latentShape, settings.guideSize), settings.guide ?? pixelGuide()), pipelineDims(previewCfg), settings.recompute)
  return { ...cost, memory, sessions, peakBytes: memory.weights + memory.peak + others, latentShape }
}

/** The dims the pipeline feeds: the batch, 77 text tokens, a timestep of [1] where it is int64 [steps] (optimum ≤ 1.23). */
export const pipelineDims = (cfg: number) => ({ batch_size: cfg > 1 ? 2 : 1, sequence_length: 77, steps: 1 })

/** The base UNet (its graph; no weights are read) and the latent shape it samples at these settings. */
async function samplingUnet(settings: LookaheadSettings): Promise<{ base: LoadedModel; latentShape: number[] }> {
  const base = await readModel(join(settings.models, 'unet', 'model.onnx'))
  const channels = graphOf(base.model).input.find(i => i.name === 'sample')?.type?.tensorType?.shape?.dim?.[1]?.dimValue
  return { base, latentShape: [1, channels ? toNumber(channels) : 4, settings.size.height / 8, settings.size.width / 8] }
}

/** The sessions a run holds beside the gradient pass: the sampling UNet, the text encoders, the final decoder. */
async function heldSessions(settings: LookaheadSettings, base: LoadedModel, latentShape: number[]): Promise<HeldSessions> {
  const folders = [...TEXT_ENCODERS, DECODER_FOLDERS[finalDecoder(settings.models, settings.decoder)]].map(folder => join(settings.models, folder, 'model.onnx'))
  let weights = await weightBytes(base)
  for (const path of folders) if (existsSync(path)) weights += await weightBytes(await readModel(path))
  // a CUDA arena keeps the sampling UNet's activations at their peak between its runs
  const graph = graphOf(base.model)
  const dims = pipelineDims(settings.cfg)
  const infos = inferShapes(graph, { ...dims, ...sampleDims(graph, [dims.batch_size, ...latentShape.slice(1)]) })
  return { weights, samplingActivations: activationPeak(graph, infos).peak }
}

/** A way to fit the gradient pass into less memory, with its estimate. */
export interface MemoryFit {
  recompute: number
  guideSize?: number
  cost: DryRun
}

/**
 * The first settings whose run (gradient pass and other sessions) fits in `limitBytes`: recomputation first
 * (full resolution, at most one more UNet evaluation per iteration), then a smaller preview (--guide-size, a
 * blurrier guide) with it.
 */
export async function fitMemory(settings: LookaheadSettings, limitBytes: number): Promise<MemoryFit | undefined> {
  const { base, latentShape } = await samplingUnet(settings)
  const held = await heldSessions(settings, base, latentShape) // the same for every candidate
  const side = Math.min(settings.size.height, settings.size.width)
  const sizes = [settings.guideSize, ...[768, 512].filter(s => s < (settings.guideSize ?? side))]
  for (const guideSize of sizes) {
    for (const recompute of [1, 2, 4, 8]) {
      if (recompute < (settings.recompute ?? 1) || (recompute === (settings.recompute ?? 1) && guideSize === settings.guideSize)) continue
      const cost = await dryRun({ ...settings, guideSize, recompute }, held)
      if (cost.peakBytes <= limitBytes) return { recompute, guideSize, cost }
    }
  }
  return undefined
}

