// One guided image as a job, for the CLI and for scripts: its settings (defaults from src/cli/settings.ts, per
// world), the checks across settings done once before any work, the guide and evaluation prepared once, and
// the run. Guides are chosen by name here; the engine never knows which it runs.
import sharp from 'sharp'
import { check, UserError } from '../src/errors.js'
import { DEFAULT_PROMPT } from '../src/cli/flags.js'
import { JOB_SETTINGS, parseLossSpec, withDefaults, type JobSettingKey, type Method, type SettingValues, type WorldContext, type WorldKind } from '../src/cli/settings.js'
import { ModelsFolder, type WorldInfo } from '../src/diffusion/models-folder.js'
import { bestOfCount, bestOfN, imageLossFunction, type BestOfResult } from '../src/guidance/best-of.js'
import { lookahead, previewCfgOf, type Iteration, type LookaheadSettings } from '../src/guidance/engine.js'
import { runCost } from '../src/guidance/estimate.js'
import { previewStepsOf } from '../src/guidance/previews.js'
import { dryRun, fitMemory, type DryRun, type MemoryFit } from '../src/guidance/memory.js'
import { imageFromTensor, loadImage, type ImageTensor } from '../src/image/image.js'
import { setSessionDefaults } from '../src/onnx/session.js'
import { buildWorldFolder, defaultWorldCache, ensureDefaultWorld } from '../src/world/models.js'
import { cachedFolder } from '../src/fsutil.js'
import { DEFAULT_WORLD_SETTINGS, drawnFaces } from '../src/world/world.js'
import type { Guide } from './guide.js'
import { demoWorld, prepareEvaluation, type Evaluation, type Metrics } from './evaluation.js'
import { guideFromSpec } from './by-name.js'

export { JOB_SETTINGS } from '../src/cli/settings.js'
export type JobSettings = SettingValues<JobSettingKey>

export interface JobCallbacks {
  onStep?: (done: number, total: number) => void
  onIteration?: (iteration: Iteration) => void
  /** each iteration's decoded preview and time (`guide --save-iterations`, `--animate`) */
  onPreview?: LookaheadSettings['onPreview']
  /** a one-line warning (a guide's fall-back, a skipped update) */
  warn?: (message: string) => void
  /** a one-line note of progress outside the sampler (e.g. a big reference being shrunk) */
  note?: (message: string) => void
}

/** A job checked, before its models folder is opened (the demo world may not be built yet). */
export interface JobPlan extends JobSettings, JobCallbacks {
  prompt: string
  /** the models folder's path (a demo world is one too) */
  models: string
  /** which kind of folder it is (the demo world's models work at its own size only) */
  world: WorldKind
}

export interface GuideJob extends JobPlan {
  /** the models folder, opened once: the guides, the evaluation and the engine all read this one */
  folder: ModelsFolder
}

/**
 * What differs from the defaults. `models`: a models folder (default $LOOKAHEAD_MODELS); `world: 'demo'`: the
 * embedded demo world instead, built on first use. `methods`: the previews the job will be run with (compare).
 */
export type GuideJobOptions = Partial<JobSettings> & JobCallbacks & { prompt?: string; models?: string; world?: string; methods?: readonly Method[] }

/** Where the models are and what kind of folder it is, before anything is built. */
export interface ModelsLocation {
  dir: string
  world: WorldContext
  /** world.json as read (null: the folder has none, or it is the embedded demo world, not read before ready()) */
  info: WorldInfo | null
  /** the folder, opened: the one a run uses throughout (the embedded demo world is built first, on first use) */
  ready(): Promise<ModelsFolder>
}

/** The models folder: `--world demo` is the embedded demo world (built on first use, by ready()). */
export async function locateModels(options: { models?: string; world?: string }): Promise<ModelsLocation> {
  check(!(options.models && options.world), '--models and --world exclude each other: a world is a models folder')
  if (options.world !== undefined) {
    check(options.world === 'demo', `--world ${options.world}: the only embedded world is "demo" (build others with \`lookahead world build\`)`)
    const dir = defaultWorldCache()
    // the first build goes through a temporary folder, so an interrupted one leaves no half-written world
    const ready = async () => {
      await cachedFolder(dir, async tmp => { await buildWorldFolder(tmp) })
      return ModelsFolder.at(await ensureDefaultWorld(dir))
    }
    return { dir, world: { kind: 'demo', size: DEFAULT_WORLD_SETTINGS.size, text: false }, info: null, ready }
  }
  const folder = await ModelsFolder.open(options.models)
  const info = folder.world
  const demo = info?.kind === 'demo'
  const size = typeof info?.imageSize === 'number' ? info.imageSize : undefined
  return { dir: folder.dir, world: { kind: demo ? 'demo' : 'sdxl', size: demo ? size : undefined, text: info?.text !== false && !demo }, info, ready: async () => folder }
}

/** The checks of the sampling settings against each other and the models folder. */
export function checkSampling(job: { steps: number; size: number }, world: WorldContext): void {
  if (world.size !== undefined) check(job.size === world.size, `--size ${job.size}: this demo world's models work at ${world.size} only (build another with \`lookahead world build --size ${job.size} -o DIR\`, then --models DIR)`)
  check(job.size % 32 === 0, `--size ${job.size}: expected a multiple of 32`)
}

/**
 * The checks across settings, done once before any work (`methods`: the previews the job will run); returns
 * notes on settings that are allowed but do nothing here (the prompt in a world without text).
 */
export function checkJob(job: JobSettings & { prompt?: string }, world: WorldContext, methods: readonly string[] = [job.preview]): string[] {
  checkSampling(job, world)
  const guided = methods.some(m => m !== 'none')
  // without guidance (--preview none) the guidance settings have no effect
  if (guided) for (const s of job.guideSteps) check(s < job.steps, `--guide-steps ${job.guideSteps.join(',')}: step ${s} is outside 0…${job.steps - 1} (there are ${job.steps} steps)`)
  if (job.guideSize !== undefined) {
    check(world.kind !== 'demo', '--guide-size: a demo world\'s models work at its own size only')
    check(job.guideSize % 32 === 0 && job.guideSize <= job.size, `--guide-size ${job.guideSize}: expected a multiple of 32 up to --size (${job.size})`)
  }
  const terms = parseLossSpec(job.loss).map(t => t.name)
  if (job.refText !== undefined) check(terms.includes('clip'), `--ref-text is the target of a clip loss, and --loss ${job.loss} has no clip term (use --ref IMAGE, or --loss clip)`)
  if (guided) {
    const needImage = terms.filter(t => t !== 'clip' || job.refText === undefined)
    check(job.ref !== undefined || needImage.length === 0, `--loss ${job.loss} needs --ref IMAGE${terms.includes('clip') ? ' (a clip loss alone can take --ref-text)' : ''}`)
  }
  const notes: string[] = []
  if (!world.text && job.prompt !== undefined && job.prompt !== DEFAULT_PROMPT) notes.push('this world has no text: the prompt is ignored')
  if (!world.text && job.cfg > 1) notes.push(`--cfg ${job.cfg} in a world without text: the same image at twice the work (cfg 1)`)
  return notes
}

/** A job checked and complete but for its models folder, which ready() opens (building the demo world on first use). */
export interface PlannedJob {
  job: JobPlan
  /** the job with its folder opened (the embedded demo world built on first use) */
  ready(): Promise<GuideJob>
}

/** The job of `options`, every setting checked (see guideJob), without building anything yet; `location`: where locateModels found the models. */
export async function planGuideJob(options: GuideJobOptions = {}, location?: ModelsLocation): Promise<PlannedJob> {
  location ??= await locateModels(options)
  const settings = withDefaults(JOB_SETTINGS, options, location.world.kind)
  const notes = checkJob({ ...settings, prompt: options.prompt }, location.world, options.methods)
  if (settings.ref !== undefined) await (settings.ref.startsWith('world:') ? checkWorldFace(settings.ref, location.info) : checkReadable(settings.ref))
  for (const note of notes) options.note?.(note)
  const { onStep, onIteration, onPreview, warn, note } = options
  const job = { ...settings, prompt: options.prompt ?? DEFAULT_PROMPT, models: location.dir, world: location.world.kind, onStep, onIteration, onPreview, warn, note }
  const { ready } = location
  return { job, ready: async () => ({ ...job, folder: await ready() }) }
}

/**
 * A whole job from only what differs from the defaults (per world: the demo world's lr and cfg differ from
 * SDXL's), checked once; the demo world is built here on first use. For example
 * `runGuideJob(await guideJob({ world: 'demo', ref: 'world:dev', seed: 3 }))`.
 */
export async function guideJob(options: GuideJobOptions = {}): Promise<GuideJob> {
  return (await planGuideJob(options)).ready()
}

/** Refuses an image file sharp cannot read, before any work (its header only is read). */
async function checkReadable(path: string): Promise<void> {
  await sharp(path).metadata().catch((error: Error) => { throw new UserError(`cannot read image ${path}: ${error.message.split('\n')[0]}`) })
}

/** Refuses a `world:NAME` that names no drawn face of the folder's demo world (`info` null: the default one, drawn). */
function checkWorldFace(ref: string, info: WorldInfo | null): void {
  const names = info ? (info.source === 'drawn' ? (info.identities as string[]) : []) : drawnFaces(32).map(f => f.name)
  check(names.length > 0, `--ref ${ref}: world:NAME names a face of a demo world built from the drawn faces (use --world demo)`)
  check(names.includes(ref.slice('world:'.length)), `--ref ${ref}: the demo world's faces are ${names.join(', ')}`)
}

/** References larger than this (pixels per side) are shrunk when read: no guide looks at more. */
export const REFERENCE_MAX_SIDE = 2048

/** A reference image: a file (shrunk early when huge), or `world:NAME`, one of the drawn faces of a demo world. */
export async function referenceImage(ref: string, folder: ModelsFolder, note?: (message: string) => void): Promise<ImageTensor> {
  const name = /^world:(.+)$/.exec(ref)?.[1]
  if (name === undefined) {
    const { width = 0, height = 0 } = await sharp(ref).metadata().catch(() => ({ width: 0, height: 0 }))
    const scale = REFERENCE_MAX_SIDE / Math.max(width, height)
    if (scale >= 1) return loadImage(ref)
    note?.(`shrinking the reference ${width}×${height} to at most ${REFERENCE_MAX_SIDE} px a side`)
    return loadImage(ref, { size: { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) }, fit: 'fill' })
  }
  const world = await demoWorld(folder)
  check(world?.source === 'drawn', `--ref ${ref}: world:NAME names a face of a demo world built from the drawn faces (use --world demo)`)
  const face = drawnFaces(world.codec.imageSize).find(f => f.name === name)
  check(face, `--ref ${ref}: the demo world's faces are ${world.identities.join(', ')}`)
  return { data: face.pixels, width: world.codec.imageSize, height: world.codec.imageSize }
}

export interface GuideJobResult {
  image: ImageTensor
  latents: Float32Array
  iterations: Iteration[]
  /** the loss of the preview after the last update (undefined without guidance) */
  finalLoss?: number
  metrics: Metrics
  timings: { gradientModelMs: number; samplingMs: number; guidanceMs: number }
  /** the run's UNet evaluations as runCost counts them (a CFG pass counts 2; best-of-N: N samples) */
  unetEvaluations: number
  /** the guide's loss on the final image (where the job has a guide): comparable across methods, unlike finalLoss */
  finalImageLoss?: number
  /** best-of-N: N, each candidate's seed and guide loss on its final image, and the one kept */
  bestOf?: Pick<BestOfResult, 'n' | 'candidates' | 'chosen'>
  guide?: string
}

export interface PreparedJob {
  guide?: Guide
  evaluation: Evaluation
}

/** The guide and the evaluation of a job, prepared once per reference (compare reuses them across seeds). */
export async function prepareJob(job: GuideJob, guided = job.preview !== 'none'): Promise<PreparedJob> {
  // the guides' and metrics' own sessions (face detection, reference embeddings) run where the job says
  setSessionDefaults({ device: job.device, threads: job.threads })
  const reference = job.ref ? await referenceImage(job.ref, job.folder, job.note) : undefined
  const settings = { folder: job.folder, warn: job.warn, idNetwork: job.idNetwork }
  const evaluation = await prepareEvaluation(job.folder, reference, settings)
  if (!guided) return { evaluation }
  const guide = guideFromSpec(job.loss, settings)
  await guide.prepare({ image: reference, text: job.refText })
  return { guide, evaluation }
}

/** The job's settings for the engine (best-of-N samples unguided: the engine's 'none', N times). */
export function engineSettings(job: GuideJob, guide?: Guide): LookaheadSettings {
  return {
    ...job,
    models: job.folder,
    preview: job.preview === 'best' ? 'none' : job.preview,
    size: { height: job.size, width: job.size },
    session: { device: job.device, threads: job.threads },
    update: { optimizer: job.optimizer, lr: job.lr, clip: job.clip, normalize: job.normalize, renormalize: job.renormalize },
    guide,
    progress: job.note,
  }
}

/** A job's UNet evaluations with the method `preview` (runCost; best-of-N: N unguided samples). */
export function unetEvaluations(job: GuideJob, preview = job.preview): number {
  if (preview === 'best') return bestOfSamples(job) * unetEvaluations(job, 'none')
  const guided = preview !== 'none' && job.iters > 0
  const { samplingEvaluations, guidanceEvaluations } = runCost({ ...job, guided, previewCfg: guided ? previewCfgOf(job, preview) : 1, previewSteps: guided ? previewStepsOf(preview, job.previewSteps) : 1 })
  return samplingEvaluations + guidanceEvaluations
}

/** N of best-of-N: as many unguided samples as cost what the job's lcm run costs (its --preview-steps included). */
export const bestOfSamples = (job: GuideJob) => bestOfCount(unetEvaluations(job, 'lcm'), unetEvaluations(job, 'none'))

/** One image: sampled, guided as the job says (or the best of N unguided), and scored by the held-apart evaluation. */
export async function runGuideJob(job: GuideJob, prepared?: PreparedJob): Promise<GuideJobResult> {
  const { guide, evaluation } = prepared ?? (await prepareJob(job))
  const settings = engineSettings(job, guide)
  const best = job.preview === 'best' ? await bestOfN({ ...settings, guide: guide! }, bestOfSamples(job)) : undefined
  const result = best ?? (await lookahead(settings))
  const image = imageFromTensor(result.image.data, result.image.dims)
  const metrics = await evaluation.measure(image, result.latents.data, job.prompt)
  const { latents, iterations, finalLoss, timings } = result
  const bestOf = best && { n: best.n, candidates: best.candidates, chosen: best.chosen }
  const finalImageLoss = guide && (bestOf ? bestOf.candidates[bestOf.chosen].loss : await (await imageLossFunction(guide, settings.size, settings))(result.image))
  return { image, latents: latents.data, iterations, finalLoss, metrics, timings, unetEvaluations: unetEvaluations(job), finalImageLoss, ...(bestOf ? { bestOf } : {}), guide: guide?.description }
}

/** The cost of a job from its graphs alone, without the guide network (it is small beside the UNet); best-of-N: N samples. */
export async function dryRunJob(job: GuideJob): Promise<DryRun & { bestOf?: number }> {
  const cost = await dryRun(engineSettings(job))
  if (job.preview !== 'best') return cost
  const n = bestOfSamples(job)
  return { ...cost, bestOf: n, samplingEvaluations: n * cost.samplingEvaluations, ratio: n }
}

/** The first lower-memory settings whose gradient pass fits in `limitBytes` (see fitMemory). */
export const fitMemoryJob = (job: GuideJob, limitBytes: number): Promise<MemoryFit | undefined> => fitMemory(engineSettings(job), limitBytes, job.world === 'demo' ? [] : undefined)

/** A job's settings as plain data, for --json and reports: no callbacks, the folder by its path (models). */
export function jobSettings(job: JobPlan & { folder?: ModelsFolder }) {
  const { onStep, onIteration, onPreview, warn, note, folder, ...settings } = job
  return settings
}
