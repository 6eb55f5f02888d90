// A comparison of methods over many seeds (`lookahead compare`): every run written as it finishes (its image
// and one JSON line), so an interrupted comparison keeps its finished runs and `--resume` continues it.
import { existsSync } from 'node:fs'
import { appendFile, mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { check } from '../src/errors.js'
import { writeFileAtomic } from '../src/fsutil.js'
import type { Method } from '../src/cli/settings.js'
import type { Iteration } from '../src/guidance/engine.js'
import { gridWithReference } from '../src/guidance/figure.js'
import { loadImage, saveImage } from '../src/image/image.js'
import { saveReport } from '../src/report/report.js'
import type { Metrics } from './evaluation.js'
import { settingsTitle } from './figure.js'
import { jobSettings, prepareJob, referenceImage, runGuideJob, type GuideJob, type GuideJobResult, type JobPlan } from './jobs.js'
import { CSV_HEADER, csvRow, missingReasons, RUN_METRICS, summarise, type MethodSummary } from './report.js'

/** One finished run, as runs.jsonl holds it. */
export interface RunRecord {
  seed: number
  method: Method
  metrics: Metrics
  iterations: Iteration[]
  finalLoss?: number
  timings: GuideJobResult['timings']
  unetEvaluations: number
  finalImageLoss?: number
  bestOf?: GuideJobResult['bestOf']
}

export interface Comparison {
  seeds: number[]
  methods: Method[]
  runs: RunRecord[]
  summary: MethodSummary[]
  /** the reference's own place in a demo world (the identity a guided sample should land on) */
  referenceIdentity?: string
}

/** The files of a comparison folder. */
export const COMPARISON_FILES = { settings: 'settings.json', runs: 'runs.jsonl', csv: 'runs.csv', summary: 'summary.json', grid: 'grid.png', report: 'report.html' }
export const runImage = (dir: string, seed: number, method: Method) => join(dir, 'runs', `seed${seed}-${method}.png`)

/** The settings a comparison is defined by: the job's, without the seed and preview of one run. */
export function comparisonSettings(job: JobPlan) {
  const { seed, preview, ...settings } = jobSettings(job)
  return settings
}

/**
 * The finished runs of a comparison folder with these settings (none for a new folder). A folder holding a
 * comparison is continued only with `resume`, and only with the same settings (seeds and methods may differ).
 */
export async function finishedRuns(dir: string, job: JobPlan, resume: boolean): Promise<RunRecord[]> {
  const settingsPath = join(dir, COMPARISON_FILES.settings)
  if (!existsSync(settingsPath)) {
    check(!resume, `--resume ${dir}: there is no comparison there to continue`)
    return []
  }
  check(resume, `${dir} holds a comparison already: --resume ${dir} continues it (or choose another folder)`)
  const recorded = JSON.parse(await readFile(settingsPath, 'utf8')) as Record<string, unknown>
  const current = JSON.parse(JSON.stringify(comparisonSettings(job))) as Record<string, unknown>
  // the thread count changes the speed, not the images
  const differ = [...new Set([...Object.keys(recorded), ...Object.keys(current)])].filter(k => k !== 'threads' && JSON.stringify(recorded[k]) !== JSON.stringify(current[k]))
  check(differ.length === 0, `--resume ${dir}: its comparison was run with other settings (${differ.map(k => `${k}: ${JSON.stringify(recorded[k])} there, ${JSON.stringify(current[k])} now`).join('; ')})`)
  const path = join(dir, COMPARISON_FILES.runs)
  const lines = existsSync(path) ? (await readFile(path, 'utf8')).split('\n') : []
  const runs: RunRecord[] = []
  for (const line of lines) {
    // a line cut short by an interruption is a run not finished
    try { if (line.trim()) runs.push(JSON.parse(line) as RunRecord) } catch { break }
  }
  return runs.filter(r => existsSync(runImage(dir, r.seed, r.method)))
}

export interface CompareOptions {
  seeds: number[]
  methods: Method[]
  /** the folder every finished run is written to (runs/seedS-METHOD.png and a line of runs.jsonl) */
  dir: string
  /** continue the comparison in `dir`: its finished runs are kept (see finishedRuns) */
  resume?: boolean
  onRun?: (done: number, total: number, seed: number, method: Method) => void
}

/** Every method on every seed with the same settings; the guide and the evaluation are prepared once. */
export async function compareMethods(job: GuideJob, options: CompareOptions): Promise<Comparison> {
  const { seeds, methods, dir } = options
  check(seeds.length > 0 && methods.length > 0, 'compare needs at least one seed and one method')
  const finished = await finishedRuns(dir, job, options.resume ?? false)
  await mkdir(join(dir, 'runs'), { recursive: true })
  await writeFileAtomic(join(dir, COMPARISON_FILES.settings), `${JSON.stringify(comparisonSettings(job), null, 1)}\n`)
  const guided = methods.some(m => m !== 'none')
  const prepared = await prepareJob(job, guided)
  const referenceIdentity = prepared.evaluation.referencePlacement?.name
  const wanted = seeds.flatMap(seed => methods.map(method => ({ seed, method })))
  const runs: RunRecord[] = []
  for (const [done, { seed, method }] of wanted.entries()) {
    const before = finished.find(r => r.seed === seed && r.method === method)
    if (before) {
      runs.push(before)
      continue
    }
    options.onRun?.(done, wanted.length, seed, method)
    const result = await runGuideJob({ ...job, seed, preview: method }, prepared)
    const { metrics, iterations, finalLoss, timings, unetEvaluations, finalImageLoss, bestOf } = result
    const record: RunRecord = { seed, method, metrics, iterations, finalLoss, timings, unetEvaluations, finalImageLoss, ...(bestOf ? { bestOf } : {}) }
    await saveImage(result.image, runImage(dir, seed, method))
    await appendFile(join(dir, COMPARISON_FILES.runs), `${JSON.stringify(record)}\n`)
    runs.push(record)
  }
  return { seeds, methods, runs, summary: summarise(runs, methods, referenceIdentity), referenceIdentity }
}

/** The folder's reports of a finished comparison: the grid of the first `gridRows` seeds, runs.csv, summary.json, report.html. */
export async function writeComparison(dir: string, job: GuideJob, comparison: Comparison, gridRows: number) {
  const { seeds, methods, runs, summary, referenceIdentity } = comparison
  const rows = await Promise.all(seeds.slice(0, gridRows).map(seed => Promise.all(methods.map(async method => ({
    image: await loadImage(runImage(dir, seed, method)),
    label: `seed ${seed} ${method}`,
  })))))
  const reference = job.ref ? await referenceImage(job.ref, job.folder) : undefined
  const title = settingsTitle(job, seeds, job.loss)
  const grid = gridWithReference(rows, reference, { title })
  await saveImage(grid, join(dir, COMPARISON_FILES.grid))
  await writeFileAtomic(join(dir, COMPARISON_FILES.csv), [CSV_HEADER, ...runs.map(r => csvRow(r, referenceIdentity))].join('\n') + '\n')
  const report = { settings: { ...comparisonSettings(job), seeds, methods }, summary, referenceIdentity, runs }
  await writeFileAtomic(join(dir, COMPARISON_FILES.summary), `${JSON.stringify(report, null, 1)}\n`)
  await saveReport({
    title: `compare: ${title}`,
    settings: report.settings,
    grid,
    methods,
    metrics: RUN_METRICS,
    runs: runs.map(r => ({ seed: r.seed, method: r.method, values: Object.fromEntries(RUN_METRICS.map(m => [m.key, m.pick(r, referenceIdentity)])), iterations: r.iterations })),
    notes: [...(referenceIdentity ? [`the reference's own identity in the demo world: ${referenceIdentity}`] : []), ...missingReasons(runs).map(reason => `missing: ${reason}`)],
  }, join(dir, COMPARISON_FILES.report))
  return report
}
