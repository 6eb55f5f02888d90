// Statistics over seeds for comparisons: means with standard errors, paired differences between methods run
// on the same seeds, and loss curves (mean and spread per iteration).

export interface Stat {
  mean: number
  /** standard error of the mean (sample standard deviation / √n); undefined for one value */
  se?: number
  n: number
}

/** Mean and standard error; undefined for no values. */
export function stat(values: number[]): Stat | undefined {
  if (values.length === 0) return undefined
  const n = values.length
  const mean = values.reduce((a, b) => a + b, 0) / n
  if (n === 1) return { mean, n }
  const variance = values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1)
  return { mean, se: Math.sqrt(variance / n), n }
}

/** One value per seed (undefined where a run has none, e.g. no face was found). */
export type BySeed = Map<number, number | undefined>

/** a − b over the seeds where both have a value: pairing removes the seed's own variation from the comparison. */
export function pairedDifference(a: BySeed, b: BySeed): Stat | undefined {
  const differences: number[] = []
  for (const [seed, va] of a) {
    const vb = b.get(seed)
    if (va !== undefined && vb !== undefined) differences.push(va - vb)
  }
  return stat(differences)
}

export interface Curve {
  /** the iterations (1-based) that have a value in some run */
  iteration: number[]
  /** per iteration: mean over the seeds that reached it, and ± one standard deviation */
  mean: number[]
  low: number[]
  high: number[]
  /** seeds behind each point */
  n: number[]
}

/** The mean curve of several runs' per-iteration values, with a band of ± one standard deviation over the runs (non-finite values left out). */
export function meanCurve(runs: number[][]): Curve {
  const length = Math.max(0, ...runs.map(r => r.length))
  const curve: Curve = { iteration: [], mean: [], low: [], high: [], n: [] }
  for (let i = 0; i < length; i++) {
    const values = runs.flatMap(r => (i < r.length && Number.isFinite(r[i]) ? [r[i]] : []))
    const s = stat(values)
    if (!s) continue
    const sd = (s.se ?? 0) * Math.sqrt(s.n)
    curve.iteration.push(i + 1)
    curve.mean.push(s.mean)
    curve.low.push(s.mean - sd)
    curve.high.push(s.mean + sd)
    curve.n.push(s.n)
  }
  return curve
}
