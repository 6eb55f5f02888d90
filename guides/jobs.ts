// Whole jobs for the CLI and for scripts: one guided image (`lookahead guide`), and a comparison of methods
// over many seeds (`lookahead compare`). Guides are chosen by name here; the engine never knows which it runs.
import { readFile } from 'node:fs/promises'
import { check, UserError } from '../src/errors.js'
import { ModelsFolder } from '../src/diffusion/models-folder.js'
import { dryRun, fitMemory, lookahead, type DryRun, type MemoryFit, type Iteration, type LookaheadSettings, type Method } from '../src/guidance/engine.js'
import type { DecoderKind } from '../src/diffusion/decoders.js'
import type { UpdateSettings } from '../src/guidance/update.js'
import { imageFromTensor, loadImage, resizeImage, type ImageTensor } from '../src/image/image.js'
import { encodeImage } from '../src/world/codec.js'
import type { SessionSettings } from '../src/onnx/session.js'
import { defaultWorldCache, ensureDefaultWorld } from '../src/world/models.js'
import { drawnFaces, parseWorld, placeLatent, type DemoWorld, type Placement } from '../src/world/world.js'
import type { Guide } from './guide.js'
import { guideFromSpec, type AllGuideSettings } from './index.js'
import { clipTextScore, IdentityMetric, type IdentityScore } from './metric.js'

/** The models folder: `--world demo` builds (once) and uses the embedded demo world. */
export async function resolveModels(flags: { models?: string; world?: string }): Promise<string> {
  check(!(flags.models && flags.world), '--models and --world exclude each other: a world is a models folder')
  if (flags.world) {
    check(flags.world === 'demo', `--world ${flags.world}: the only embedded world is "demo" (build others with \`lookahead world build\`)`)
    return ensureDefaultWorld(defaultWorldCache())
  }
  return (await ModelsFolder.open(flags.models)).dir
}

/** The default image size of a folder: its world's size, else SDXL's 1024. */
export async function defaultSize(models: string): Promise<number> {
  const { world } = await ModelsFolder.at(models)
  return typeof world?.imageSize === 'number' ? world.imageSize : 1024
}

async function demoWorld(models: string): Promise<DemoWorld | undefined> {
  const folder = await ModelsFolder.at(models)
  const path = folder.path('world')
  if (folder.world?.kind !== 'demo') return undefined
  return parseWorld(await readFile(path, 'utf8'), path)
}

export interface Metrics {
  /** identity of the final image against the reference, by the held-apart recognizer */
  identity?: IdentityScore
  /** CLIP score of the final image against the prompt, where a CLIP export is present */
  clip?: number
  /** in a demo world: the final latent's nearest component and how typical it is */
  world?: Placement
}

/** The evaluation held apart from the loss, prepared once for a reference and reused across images. */
export interface Evaluation {
  description: string[]
  /** in a demo world: where the reference itself lies (the identity a guided sample should land on) */
  referencePlacement?: Placement
  measure(image: ImageTensor, latents: Float32Array, prompt: string): Promise<Metrics>
}

export async function prepareEvaluation(models: string, reference: ImageTensor | undefined, settings: AllGuideSettings): Promise<Evaluation> {
  // a reference without a face (a CLIP or LPIPS target) has no identity to score
  const identity = reference ? await IdentityMetric.create(reference, { ...settings, lossNetwork: settings.idNetwork }).catch(noFace) : undefined
  const world = await demoWorld(models)
  // the reference's place in a demo world: the component nearest its encoded latent
  const side = world?.codec.imageSize ?? 0
  const referencePlacement = world && reference ? placeLatent(world, encodeImage(world.codec, resizeImage(reference, side, side).data)) : undefined
  return {
    description: [identity?.description ?? 'identity metric: none (no face in the reference)', ...(world ? ['demo world: nearest component, Mahalanobis distance'] : [])],
    referencePlacement,
    async measure(image, latents, prompt) {
      const metrics: Metrics = {}
      if (identity) metrics.identity = await identity.measure(image)
      const clip = world ? undefined : await clipTextScore(models, image, prompt)
      if (clip !== undefined) metrics.clip = clip
      if (world) metrics.world = placeLatent(world, latents)
      return metrics
    },
  }
}

function noFace(error: unknown): undefined {
  if (error instanceof UserError && /no face/.test(error.message)) return undefined
  throw error
}

/** A reference image: a file, or `world:NAME`, one of the drawn faces of a demo world. */
export async function referenceImage(ref: string, models: string): Promise<ImageTensor> {
  const name = /^world:(.+)$/.exec(ref)?.[1]
  if (name === undefined) return loadImage(ref)
  const world = await demoWorld(models)
  check(world?.source === 'drawn', `--ref ${ref}: world:NAME names a face of a demo world built from the drawn faces (use --world demo)`)
  const face = drawnFaces(world.codec.imageSize).find(f => f.name === name)
  check(face, `--ref ${ref}: the demo world's faces are ${world.identities.join(', ')}`)
  return { data: face.pixels, width: world.codec.imageSize, height: world.codec.imageSize }
}

export interface GuideJob {
  prompt: string
  negative?: string
  steps: number
  cfg: number
  seed: number
  size?: number
  models: string
  session: SessionSettings
  /** `--loss` spec, e.g. 'id' or 'id=1,clip=0.5' */
  loss: string
  ref?: string
  /** the text target of a CLIP guide (default: none, the reference image is the target) */
  refText?: string
  preview: Method
  guideSteps: number[]
  iters: number
  recur?: number
  update: UpdateSettings
  previewCfg?: number
  previewDecoder?: DecoderKind
  /** the preview's image side, to guide at a lower resolution */
  guideSize?: number
  /** segments the gradient pass's forward is recomputed in (less memory); 1: off */
  recompute?: number
  idNetwork?: AllGuideSettings['idNetwork']
  onStep?: (done: number, total: number) => void
  onIteration?: (iteration: Iteration) => void
  warn?: (message: string) => void
}

export interface GuideJobResult {
  image: ImageTensor
  latents: Float32Array
  iterations: Iteration[]
  metrics: Metrics
  timings: { gradientModelMs: number; samplingMs: number; guidanceMs: number }
  guide?: string
}

export interface PreparedJob {
  guide?: Guide
  evaluation: Evaluation
}

/** The guide and the evaluation of a job, prepared once per reference (compare reuses them across seeds). */
export async function prepareJob(job: GuideJob): Promise<PreparedJob> {
  const reference = job.ref ? await referenceImage(job.ref, job.models) : undefined
  const evaluation = await prepareEvaluation(job.models, reference, { models: job.models, device: job.session.device, idNetwork: job.idNetwork })
  if (job.preview === 'none') return { evaluation }
  check(reference || job.refText, '--ref IMAGE (or --ref-text for a clip loss) is needed to guide')
  const guide = guideFromSpec(job.loss, { models: job.models, device: job.session.device, warn: job.warn, idNetwork: job.idNetwork })
  await guide.prepare({ image: reference, text: job.refText })
  return { guide, evaluation }
}

/** The job's settings for the engine: the image size defaults to the folder's (a world's, else 1024). */
async function engineSettings(job: GuideJob, guide?: Guide): Promise<LookaheadSettings> {
  const side = job.size ?? (await defaultSize(job.models))
  return { ...job, size: { height: side, width: side }, guide }
}

/** One image: sampled, guided as the job says, and scored by the held-apart evaluation. */
export async function runGuideJob(job: GuideJob, prepared?: PreparedJob): Promise<GuideJobResult> {
  const { guide, evaluation } = prepared ?? (await prepareJob(job))
  const result = await lookahead(await engineSettings(job, guide))
  const image = imageFromTensor(result.image.data, result.image.dims)
  const metrics = await evaluation.measure(image, result.latents.data, job.prompt)
  return { image, latents: result.latents.data, iterations: result.iterations, metrics, timings: result.timings, guide: guide?.description }
}

/** The cost of a job from its graphs alone, without the guide network (it is small beside the UNet). */
export async function dryRunJob(job: GuideJob): Promise<DryRun> {
  return dryRun(await engineSettings(job))
}

/** The first lower-memory settings whose gradient pass fits in `limitBytes` (see fitMemory). */
export async function fitMemoryJob(job: GuideJob, limitBytes: number): Promise<MemoryFit | undefined> {
  return fitMemory(await engineSettings(job), limitBytes)
}

/** A job's settings as plain data, for --json and reports: no callbacks, the device instead of the session. */
export function jobSettings(job: GuideJob) {
  const { onStep, onIteration, warn, session, ...settings } = job
  return { ...settings, device: session.device }
}

export interface Comparison {
  seeds: number[]
  methods: Method[]
  /** one run per seed and method */
  runs: { seed: number; method: Method; result: GuideJobResult }[]
  summary: MethodSummary[]
  /** the reference's own place in a demo world (the identity a guided sample should land on) */
  referenceIdentity?: string
}

export interface Stat {
  mean: number
  /** standard error of the mean */
  se: number
  n: number
}

export interface MethodSummary {
  method: Method
  /** identity distance of the final images to the reference (held-apart recognizer; images with a face) */
  identityDistance?: Stat
  identitySimilarity?: Stat
  /** the same by the loss's own id network, on the final images */
  lossNetworkDistance?: Stat
  /** the guide's loss before the last update, on the method's own preview (not comparable across methods) */
  finalLoss?: Stat
  /** demo world: fraction whose nearest component has the reference's identity */
  matchesReference?: Stat
  /** demo world: fraction beyond the 99.9% Mahalanobis radius of their nearest component */
  offDistribution?: Stat
  clip?: Stat
}

export function stat(values: number[]): Stat | undefined {
  if (values.length === 0) return undefined
  const n = values.length
  const mean = values.reduce((a, b) => a + b, 0) / n
  const variance = n > 1 ? values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1) : 0
  return { mean, se: Math.sqrt(variance / n), n }
}

/** Every method on every seed with the same settings; the guide and the evaluation are prepared once. */
export async function compareMethods(
  job: GuideJob,
  seeds: number[],
  methods: Method[],
  onRun?: (done: number, total: number, seed: number, method: Method) => void,
): Promise<Comparison> {
  check(seeds.length > 0 && methods.length > 0, 'compare needs at least one seed and one method')
  const { guide, evaluation } = await prepareJob({ ...job, preview: methods.find(m => m !== 'none') ?? 'none' })
  const referenceIdentity = evaluation.referencePlacement
  const runs: Comparison['runs'] = []
  for (const seed of seeds) {
    for (const method of methods) {
      onRun?.(runs.length, seeds.length * methods.length, seed, method)
      runs.push({ seed, method, result: await runGuideJob({ ...job, seed, preview: method }, { guide, evaluation }) })
    }
  }
  const summary = methods.map(method => {
    const results = runs.filter(r => r.method === method).map(r => r.result)
    const values = (pick: (r: GuideJobResult) => number | undefined) => stat(results.map(pick).filter((v): v is number => v !== undefined))
    return {
      method,
      identityDistance: values(r => r.metrics.identity?.distance),
      identitySimilarity: values(r => r.metrics.identity?.similarity),
      lossNetworkDistance: values(r => r.metrics.identity?.loss?.distance),
      finalLoss: values(r => r.iterations.at(-1)?.loss),
      matchesReference: referenceIdentity ? values(r => (r.metrics.world ? Number(r.metrics.world.identity === referenceIdentity.identity) : undefined)) : undefined,
      offDistribution: values(r => (r.metrics.world ? Number(!r.metrics.world.typical) : undefined)),
      clip: values(r => r.metrics.clip),
    }
  })
  return { seeds, methods, runs, summary, referenceIdentity: referenceIdentity?.name }
}

const SUMMARY_COLUMNS: [keyof Omit<MethodSummary, 'method'>, string][] = [
  ['identityDistance', 'id distance (held-apart)'],
  ['identitySimilarity', 'id cosine (held-apart)'],
  ['lossNetworkDistance', 'id distance (loss net)'],
  ['finalLoss', 'loss on own preview'],
  ['matchesReference', 'ref identity'],
  ['offDistribution', 'off-distribution'],
  ['clip', 'clip'],
]

/**
 * The summary as rows of text cells (header first): "mean ± se" per metric that any method has, with the
 * number of images behind it in brackets where that is fewer than the runs (identity needs a detected face).
 */
export function summaryTable(summary: MethodSummary[], runs: number): string[][] {
  const columns = SUMMARY_COLUMNS.filter(([key]) => summary.some(s => s[key]))
  const cell = (s?: Stat) => (s ? `${s.mean.toFixed(3)} ± ${s.se.toFixed(3)}${s.n < runs ? ` [${s.n}]` : ''}` : '–')
  return [['method', ...columns.map(([, label]) => label)], ...summary.map(s => [s.method, ...columns.map(([key]) => cell(s[key]))])]
}

/** One CSV row per run. */
export function runsCsv(comparison: Comparison): string {
  const header = 'seed,method,id_distance,id_cosine,loss_net_distance,own_preview_loss,nearest_identity,matches_reference,mahalanobis,off_distribution,clip'
  const rows = comparison.runs.map(({ seed, method, result: r }) => {
    const w = r.metrics.world
    return [seed, method, r.metrics.identity?.distance, r.metrics.identity?.similarity, r.metrics.identity?.loss?.distance, r.iterations.at(-1)?.loss, w?.name,
      w && comparison.referenceIdentity !== undefined ? Number(w.name === comparison.referenceIdentity) : undefined,
      w?.mahalanobis, w ? Number(!w.typical) : undefined, r.metrics.clip].map(v => (v === undefined ? '' : String(v))).join(',')
  })
  return [header, ...rows].join('\n') + '\n'
}
