// SDXL sampling on an optimum export, as diffusers' StableDiffusionXLPipeline with DDIMScheduler does it, in
// parts the guidance engine reuses: an ε-model callback over the UNet (with CFG), a DDIM loop with per-step
// hooks, the conditioning (conditioning.ts), the schedulers (schedulers.ts) and the decoders (decoders.ts).
import { cachedSession, foldedTag, type CacheSettings } from '../derived.js'
import { check } from '../errors.js'
import { foldGraph } from '../onnx/fold.js'
import { seededNormal } from '../onnx/layers.js'
import { graphOf, readModel, toNumber, type GraphProto } from '../onnx/proto.js'
import { openSession, type Session, type SessionSettings } from '../onnx/session.js'
import { conditioning, loadTextEncoders, outputTensor, unetFeeds, type Conditioning, type PromptSettings, type TextEncoders, type Tensor } from './conditioning.js'
import { decodeFinal, type DecoderKind } from './decoders.js'
import { ModelsFolder } from './models-folder.js'
import { ddimStep, ddimTimesteps, guide, previousTimestep } from './schedulers.js'

export interface SdxlModels {
  folder: ModelsFolder
  unet: Session
  /** null in a world without text ("text": false in world.json) */
  text: TextEncoders | null
}

/** What the sampler runs the UNet at, and where its folded session is cached (default: the cache root). */
export interface SamplerShape extends Omit<CacheSettings, 'session'> {
  cfg: number
  size: { height: number; width: number }
}

/**
 * The folder's UNet and text encoders. With `sampler`, the UNet's session is specialised and folded at the
 * sampler's dims (onnx/fold.ts) and cached: a torch export's shape arithmetic folds away, and onnxruntime creates
 * the session several times faster. Without it, the export as it is (any batch and size).
 */
export async function loadSdxl(models: string | ModelsFolder, settings: SessionSettings = {}, sampler?: SamplerShape): Promise<SdxlModels> {
  const folder = await ModelsFolder.of(models)
  const unet = sampler ? await foldedUnet(folder.path('unet'), sampler, settings) : await openSession(folder.path('unet'), settings)
  const text = folder.world?.text === false ? null : await loadTextEncoders(folder, settings)
  return { folder, unet, text }
}

async function foldedUnet(path: string, sampler: SamplerShape, settings: SessionSettings): Promise<Session> {
  const unet = await readModel(path)
  const dims = samplerDims(graphOf(unet.model), sampler.cfg, sampler.size)
  const cache = { cacheDir: sampler.cacheDir, progress: sampler.progress, session: settings }
  return cachedSession(unet, m => foldGraph(m, dims), foldedTag('unet', dims), cache, `${path} (folded for sampling)`)
}

/** The dims the pipeline feeds: the batch, 77 text tokens, a timestep of [1] where it is int64 [steps] (optimum ≤ 1.23). */
export const pipelineDims = (cfg: number) => ({ batch_size: cfg > 1 ? 2 : 1, sequence_length: 77, steps: 1 })

/** The pipeline's dims and values for the symbolic dims of the UNet's `sample` (optimum: batch_size, height, width), by position. */
export function samplerDims(unet: GraphProto, cfg: number, size: { height: number; width: number }): Record<string, number> {
  const dims = pipelineDims(cfg)
  const declared = unet.input.find(i => i.name === 'sample')?.type?.tensorType?.shape?.dim ?? []
  const channels = declared[1]?.dimValue
  const shape = [dims.batch_size, ...latentShape(channels ? toNumber(channels) : 4, size).slice(1)]
  return { ...dims, ...Object.fromEntries(declared.flatMap((d, i) => (d.dimParam ? [[d.dimParam, shape[i]]] : []))) }
}

/** The UNet conditioning for a prompt (and negative, CFG, size) with a loaded folder's text encoders. */
export function conditioningFor(settings: PromptSettings, models: SdxlModels): Promise<Conditioning> {
  return conditioning(settings, models.unet, models.text)
}

/** ε(x_t, t): one UNet evaluation, or two batched ones with classifier-free guidance. */
export type EpsModel = (x: Tensor, t: number) => Promise<Float32Array>

/** The UNet as an ε model for `cond` (batch 2 = [negative, positive] with CFG, batch 1 without). */
export function unetEpsModel(unet: Session, cond: Conditioning, cfg: number, loraScale = 1): EpsModel {
  const batch = cond.encoderHiddenStates.dims[0]
  check(batch === 1 || batch === 2, `conditioning batch ${batch}: expected 1, or 2 for classifier-free guidance`)
  return async (x, t) => {
    const sample: Tensor = batch === 1 ? x : { data: doubled(x.data), dims: [2, ...x.dims.slice(1)] }
    const result = await unet.run(unetFeeds(unet, sample, t, cond, loraScale), ['out_sample'])
    const eps = outputTensor(result.out_sample).data
    if (batch === 1) return eps
    const half = x.data.length
    return guide(eps.subarray(0, half), eps.subarray(half), cfg)
  }
}

function doubled(data: Float32Array): Float32Array {
  const result = new Float32Array(2 * data.length)
  result.set(data)
  result.set(data, data.length)
  return result
}

export interface StepState {
  /** index in the N-step schedule */
  index: number
  t: number
  /** the timestep this step goes to (negative after the last) */
  tPrev: number
  x: Tensor
}

export interface LoopHooks {
  /** before the step's UNet call; a returned tensor replaces x_t (guidance updates the latents here) */
  beforeStep?: (state: StepState) => Promise<Tensor | void> | Tensor | void
  /** after the step, with x already at tPrev */
  afterStep?: (state: StepState) => Promise<void> | void
}

/**
 * DDIM (eta 0) over the N-step "leading" schedule, from step `start` (0: from pure noise) to the end.
 * Returns x₀'s latents.
 */
export async function ddimLoop(x: Tensor, steps: number, eps: EpsModel, hooks: LoopHooks = {}, start = 0): Promise<Tensor> {
  const timesteps = ddimTimesteps(steps)
  for (let index = start; index < steps; index++) {
    const t = timesteps[index]
    const tPrev = previousTimestep(t, steps)
    x = (await hooks.beforeStep?.({ index, t, tPrev, x })) ?? x
    x = { data: ddimStep(x.data, await eps(x, t), t, tPrev), dims: x.dims }
    await hooks.afterStep?.({ index, t, tPrev, x })
  }
  return x
}

/**
 * Initial latents x_T ~ N(0, I) (DDIM's init_noise_sigma is 1) from a seeded JS generator (mulberry32 with
 * Box-Muller): deterministic for a seed, but not the numbers torch's generator would draw for that seed.
 */
export function initialNoise(seed: number, dims: number[]): Tensor {
  const normal = seededNormal(seed)
  return { data: Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, normal), dims }
}

/** The latent shape for an image size: [1, C, H/8, W/8] with C as the UNet declares it. */
export function latentDims(unet: Session, size: { height: number; width: number }): number[] {
  const channels = unet.input('sample').shape[1]
  return latentShape(typeof channels === 'number' ? channels : 4, size)
}

function latentShape(channels: number, size: { height: number; width: number }): number[] {
  check(size.height % 32 === 0 && size.width % 32 === 0, `image size ${size.width}x${size.height}: width and height must be multiples of 32`)
  return [1, channels, size.height / 8, size.width / 8]
}

export interface GenerateSettings {
  prompt: string
  /** undefined: zero negative embeddings, as diffusers does without a negative prompt */
  negative?: string
  steps: number
  /** classifier-free guidance scale; ≤ 1 turns it off */
  cfg: number
  seed: number
  size: { height: number; width: number }
  /** the models folder (a command's, opened once), or its path */
  models: string | ModelsFolder
  session?: SessionSettings
  /** default: the VAE when the folder has one, else TAESDXL */
  decoder?: DecoderKind
  onStep?: (done: number, total: number) => void
}

export interface Generated {
  /** final latents [1,4,h,w] (UNet space, not divided by the VAE scaling factor) */
  latents: Tensor
  /** [1,3,H,W] in [-1,1] */
  image: Tensor
  decoder: DecoderKind
}

/** Text → image: SDXL with DDIM, deterministic for a seed on a given provider. */
export async function generate(settings: GenerateSettings): Promise<Generated> {
  check(Number.isInteger(settings.steps) && settings.steps >= 1 && settings.steps <= 1000, `--steps ${settings.steps}: expected an integer from 1 to 1000`)
  const models = await loadSdxl(settings.models, settings.session, settings)
  const cond = await conditioningFor(settings, models)
  const eps = unetEpsModel(models.unet, cond, settings.cfg)
  const noise = initialNoise(settings.seed, latentDims(models.unet, settings.size))
  const latents = await ddimLoop(noise, settings.steps, eps, { afterStep: ({ index }) => settings.onStep?.(index + 1, settings.steps) })
  const { image, kind } = await decodeFinal(models.folder, latents, settings.decoder, settings.session)
  return { latents, image, decoder: kind }
}
