// Reports of a comparison: statistics per method, the summary as a text table, one CSV row per run.
import type { Method } from '../src/cli/settings.js'
import { stat, type Stat } from '../src/report/stats.js'
import type { RunRecord } from './compare.js'

export { stat, type Stat }

export interface MethodSummary {
  method: Method
  /** identity distance of the final images to the reference (held-apart recognizer; images with a face) */
  identityDistance?: Stat
  identitySimilarity?: Stat
  /** the same by the loss's own id network, on the final images */
  lossNetworkDistance?: Stat
  /** the guide's loss of the last preview, after the last update (not comparable across methods) */
  finalLoss?: Stat
  /** the guide's loss on the final image (comparable across methods) */
  finalImageLoss?: Stat
  /** demo world: fraction whose nearest component has the reference's identity */
  matchesReference?: Stat
  /** demo world: fraction beyond the 99.9% Mahalanobis radius of their nearest component */
  offDistribution?: Stat
  clip?: Stat
  /** UNet evaluations per run (runCost: a CFG pass counts 2; best-of-N: N samples) */
  unetEvaluations?: Stat
  /** best-of-N: N */
  bestOf?: number
}

/** The loss of the preview after the last update of a run (undefined without guidance). */
export const finalLoss = (r: RunRecord) => r.finalLoss ?? r.iterations.at(-1)?.loss

export interface RunMetric {
  key: keyof Omit<MethodSummary, 'method' | 'unetEvaluations' | 'bestOf'>
  label: string
  /** the run's value; undefined where it has none (no face found, not a demo world) */
  pick: (r: RunRecord, referenceIdentity?: string) => number | undefined
}

/** Every per-run metric of a comparison, declared once: the summary, its text table and the report page derive from it. */
export const RUN_METRICS: RunMetric[] = [
  { key: 'identityDistance', label: 'id distance (held-apart)', pick: r => r.metrics.identity?.distance },
  { key: 'identitySimilarity', label: 'id cosine (held-apart)', pick: r => r.metrics.identity?.similarity },
  { key: 'lossNetworkDistance', label: 'id distance (loss net)', pick: r => r.metrics.identity?.loss?.distance },
  { key: 'finalLoss', label: 'loss on own preview', pick: finalLoss },
  { key: 'finalImageLoss', label: 'loss on final image', pick: r => r.finalImageLoss },
  { key: 'matchesReference', label: 'ref identity', pick: (r, ref) => (ref !== undefined && r.metrics.world ? Number(r.metrics.world.name === ref) : undefined) },
  { key: 'offDistribution', label: 'off-distribution', pick: r => (r.metrics.world ? Number(!r.metrics.world.typical) : undefined) },
  { key: 'clip', label: 'clip', pick: r => r.metrics.clip },
]

/** Per method, the statistics of every metric over the runs that have it. */
export function summarise(runs: RunRecord[], methods: Method[], referenceIdentity?: string): MethodSummary[] {
  return methods.map(method => {
    const mine = runs.filter(r => r.method === method)
    const values = (pick: (r: RunRecord) => number | undefined) => stat(mine.map(pick).filter((v): v is number => v !== undefined))
    return {
      method,
      ...Object.fromEntries(RUN_METRICS.map(m => [m.key, values(r => m.pick(r, referenceIdentity))])),
      unetEvaluations: values(r => r.unetEvaluations),
      ...(mine[0]?.bestOf ? { bestOf: mine[0].bestOf.n } : {}),
    }
  })
}

/**
 * The summary as rows of text cells (header first): "mean ± se (n)" per metric that any method has; with
 * one value, no ± (a standard error needs two).
 */
export function summaryTable(summary: MethodSummary[]): string[][] {
  const columns = RUN_METRICS.filter(({ key }) => summary.some(s => s[key]))
  const cell = (s?: Stat) => (s ? `${s.mean.toFixed(3)}${s.se === undefined ? '' : ` ± ${s.se.toFixed(3)}`} (n=${s.n})` : '–')
  // the cost column where the runs recorded it (best-of-N with its N)
  const costed = summary.some(s => s.unetEvaluations)
  const cost = (s: MethodSummary) => (!costed ? [] : [s.unetEvaluations ? `${+s.unetEvaluations.mean.toFixed(1)}${s.bestOf ? ` (N=${s.bestOf})` : ''}` : '–'])
  return [['method', ...columns.map(({ label }) => label), ...(costed ? ['UNet evaluations'] : [])], ...summary.map(s => [s.method, ...columns.map(({ key }) => cell(s[key])), ...cost(s)])]
}

/** Why metrics are missing, counted over the runs: "identity: no face found on the final image (2 of 8 runs)". */
export function missingReasons(runs: RunRecord[]): string[] {
  const counts = new Map<string, number>()
  for (const r of runs) for (const [metric, why] of Object.entries(r.metrics.missing ?? {})) counts.set(`${metric}: ${why}`, (counts.get(`${metric}: ${why}`) ?? 0) + 1)
  return [...counts].map(([reason, n]) => `${reason} (${n} of ${runs.length} runs)`)
}

export const CSV_HEADER = 'seed,method,id_distance,id_cosine,loss_net_distance,own_preview_loss,nearest_identity,matches_reference,mahalanobis,off_distribution,clip,unet_evaluations,final_image_loss'

/** One CSV row for a run. */
export function csvRow(r: RunRecord, referenceIdentity?: string): string {
  const w = r.metrics.world
  return [r.seed, r.method, r.metrics.identity?.distance, r.metrics.identity?.similarity, r.metrics.identity?.loss?.distance, finalLoss(r), w?.name,
    w && referenceIdentity !== undefined ? Number(w.name === referenceIdentity) : undefined,
    w?.mahalanobis, w ? Number(!w.typical) : undefined, r.metrics.clip, r.unetEvaluations, r.finalImageLoss].map(v => (v === undefined ? '' : String(v))).join(',')
}
