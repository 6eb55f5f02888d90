// Reports of a comparison: statistics per method, the summary as a text table, one CSV row per run.
import type { Method } from '../src/cli/settings.js'
import type { RunRecord } from './compare.js'

export interface Stat {
  mean: number
  /** standard error of the mean; undefined for one value */
  se?: number
  n: number
}

export function stat(values: number[]): Stat | undefined {
  if (values.length === 0) return undefined
  const n = values.length
  const mean = values.reduce((a, b) => a + b, 0) / n
  if (n === 1) return { mean, n }
  const variance = values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1)
  return { mean, se: Math.sqrt(variance / n), n }
}

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

/** Per method, the statistics of every metric over the runs that have it. */
export function summarise(runs: RunRecord[], methods: Method[], referenceIdentity?: string): MethodSummary[] {
  return methods.map(method => {
    const mine = runs.filter(r => r.method === method)
    const values = (pick: (r: RunRecord) => number | undefined) => stat(mine.map(pick).filter((v): v is number => v !== undefined))
    return {
      method,
      identityDistance: values(r => r.metrics.identity?.distance),
      identitySimilarity: values(r => r.metrics.identity?.similarity),
      lossNetworkDistance: values(r => r.metrics.identity?.loss?.distance),
      finalLoss: values(finalLoss),
      finalImageLoss: values(r => r.finalImageLoss),
      matchesReference: referenceIdentity ? values(r => (r.metrics.world ? Number(r.metrics.world.name === referenceIdentity) : undefined)) : undefined,
      offDistribution: values(r => (r.metrics.world ? Number(!r.metrics.world.typical) : undefined)),
      clip: values(r => r.metrics.clip),
      unetEvaluations: values(r => r.unetEvaluations),
      ...(mine[0]?.bestOf ? { bestOf: mine[0].bestOf.n } : {}),
    }
  })
}

const SUMMARY_COLUMNS: [keyof Omit<MethodSummary, 'method' | 'unetEvaluations' | 'bestOf'>, string][] = [
  ['identityDistance', 'id distance (held-apart)'],
  ['identitySimilarity', 'id cosine (held-apart)'],
  ['lossNetworkDistance', 'id distance (loss net)'],
  ['finalLoss', 'loss on own preview'],
  ['finalImageLoss', 'loss on final image'],
  ['matchesReference', 'ref identity'],
  ['offDistribution', 'off-distribution'],
  ['clip', 'clip'],
]

/**
 * The summary as rows of text cells (header first): "mean ± se (n)" per metric that any method has; with
 * one value, no ± (a standard error needs two).
 */
export function summaryTable(summary: MethodSummary[]): string[][] {
  const columns = SUMMARY_COLUMNS.filter(([key]) => summary.some(s => s[key]))
  const cell = (s?: Stat) => (s ? `${s.mean.toFixed(3)}${s.se === undefined ? '' : ` ± ${s.se.toFixed(3)}`} (n=${s.n})` : '–')
  const cost = (s: MethodSummary) => (s.unetEvaluations ? `${+s.unetEvaluations.mean.toFixed(1)}${s.bestOf ? ` (N=${s.bestOf})` : ''}` : '–')
  return [['method', ...columns.map(([, label]) => label), 'UNet evaluations'], ...summary.map(s => [s.method, ...columns.map(([key]) => cell(s[key])), cost(s)])]
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
