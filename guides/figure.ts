// The paper's fig. 5 as a job (`lookahead figure`): the same seeds guided by each loss through each preview,
// laid out as a row per loss, the reference, then each method's final image. A loss whose network is absent
// (no LPIPS or CLIP export in the folder) is left out with its reason; the unguided baseline is run once per
// seed and shown in every row.
import { check, UserError } from '../src/errors.js'
import type { Method } from '../src/guidance/engine.js'
import { lossFigureImage, type LossFigureCell } from '../src/guidance/figure.js'
import type { ImageTensor } from '../src/image/image.js'
import { prepareJob, referenceImage, runGuideJob, type GuideJob, type GuideJobResult } from './jobs.js'

export interface FigureOptions {
  losses: string[]
  methods: Method[]
  seeds: number[]
  onRun?: (done: number, total: number, what: string) => void
}

export interface FigureRun {
  loss: string
  method: Method
  seed: number
  result: GuideJobResult
}

export interface LossFigure {
  image: ImageTensor
  runs: FigureRun[]
  /** the losses left out, with the reason (a network that is not in the models folder) */
  skipped: { loss: string; reason: string }[]
}

/** A line under each image: the held-apart identity distance and, in a demo world, the nearest identity. */
function note(result: GuideJobResult): string {
  const { identity, world } = result.metrics
  return [...(identity ? [`id dist ${identity.distance.toFixed(3)}`] : []), ...(world ? [`nearest ${world.name}`] : [])].join(', ')
}

/** The settings every image of a figure or comparison shares, in a line for its title (`loss`: the loss, if one for all). */
export function settingsTitle(job: GuideJob, seeds: number[], loss?: string): string {
  const seedText = seeds.length > 3 ? `${seeds.length} seeds` : `seed${seeds.length > 1 ? 's' : ''} ${seeds.join(',')}`
  const target = job.ref ?? job.refText
  const what = [...(loss ? [`${loss} loss`] : []), ...(target ? [`towards ${target}`] : [])].join(' ')
  return `${what ? `${what}: ` : ''}${job.steps} DDIM steps, cfg ${job.cfg}, guide step ${job.guideSteps.join(',')}, K=${job.iters}` +
    `${job.recur > 1 ? `, recur ${job.recur}` : ''}, ${job.optimizer} lr ${job.lr}${job.normalize ? '' : ' (raw gradient)'}, ${seedText}`
}

export async function lossFigure(job: GuideJob, options: FigureOptions): Promise<LossFigure> {
  const { losses, methods, seeds } = options
  check(losses.length > 0 && methods.length > 0 && seeds.length > 0, 'a figure needs at least one loss, one method and one seed')
  const guided = methods.filter(m => m !== 'none')
  const prepared = new Map<string, Awaited<ReturnType<typeof prepareJob>>>()
  const skipped: LossFigure['skipped'] = []
  for (const loss of losses) {
    try {
      prepared.set(loss, await prepareJob({ ...job, loss }, guided.length > 0))
    } catch (error) {
      if (!(error instanceof UserError)) throw error
      skipped.push({ loss, reason: error.message })
      job.warn?.(`the ${loss} loss is left out: ${error.message}`)
    }
  }
  check(prepared.size > 0, `no loss can be used: ${skipped.map(s => `${s.loss}: ${s.reason}`).join('; ')}`)

  const total = seeds.length * ((methods.includes('none') ? 1 : 0) + prepared.size * guided.length)
  const runs: FigureRun[] = []
  let done = 0
  const run = async (loss: string, method: Method, seed: number) => {
    options.onRun?.(done++, total, `seed ${seed}, ${method}${method === 'none' ? '' : `, ${loss} loss`}`)
    return runGuideJob({ ...job, loss, seed, preview: method }, prepared.get(loss))
  }
  for (const seed of seeds) {
    // the baseline does not depend on the loss: one run per seed, shown in every row
    const baseline = methods.includes('none') ? await run([...prepared.keys()][0], 'none', seed) : undefined
    for (const loss of prepared.keys()) {
      for (const method of methods) runs.push({ loss, method, seed, result: method === 'none' ? baseline! : await run(loss, method, seed) })
    }
  }
  const cells: LossFigureCell[] = [...prepared.keys()].flatMap(loss =>
    seeds.flatMap(seed => methods.map(method => {
      const { result } = runs.find(r => r.loss === loss && r.seed === seed && r.method === method)!
      return { loss, method, seed, image: result.image, note: note(result) }
    })))
  const reference = job.ref ? await referenceImage(job.ref, job.folder) : undefined
  return { image: lossFigureImage(cells, { reference, title: settingsTitle(job, seeds) }), runs, skipped }
}
