// Collects the experiment's `lookahead compare` outputs into one markdown file: per configuration, the metrics
// and UNet evaluations per method (mean ± standard error over seeds) and the paired differences per seed
// (lcm − x0 first), plus a check of how well each recognizer tells the reference's identity from the others.
// Usage: tsx samples/experiment/collect.ts RUNS_DIR [IDENTITY] > tables.md
// IDENTITY: the world identity a guided sample should land on, where the reference's own nearest component is
// not it (a held-out photo of a person in the world: its latent's nearest component is a matter of framing).
// RUNS_DIR holds one folder per configuration (summary.json from `compare`, wall_s.txt from run.sh); a folder
// NAME-lcm2 (lcm with --preview-steps 2 on the same seeds) joins NAME as the method lcm2. Where a folder has
// held-apart.jsonl (held-apart.ts), its identity scores are used: the face at the reference's position where none
// was detected, so that every image has a score ("face detected" counts where the detector found one).
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

interface Similarity { similarity: number; distance: number }
interface Run {
  seed: number
  method: string
  metrics: {
    /** detected: false where held-apart.ts scored the face at the reference's position (no face detected) */
    identity?: Similarity & { loss?: Similarity; detected?: boolean }
    world?: { name: string; mahalanobis: number; typical: boolean; offSubspace: number }
  }
  iterations: { loss: number }[]
  finalLoss?: number
  timings: { gradientModelMs: number; samplingMs: number; guidanceMs: number }
  unetEvaluations?: number
  finalImageLoss?: number
  bestOf?: { n: number }
}
interface Summary {
  settings: { models: string; loss: string; guideSteps: number[]; iters: number; steps: number; cfg: number; lr: number; optimizer: string }
  referenceIdentity?: string
  runs: Run[]
}

/** mean ± standard error of the mean, and n; '–' when there are no values. */
function stat(values: number[]): { text: string; mean: number; se: number; n: number } {
  const n = values.length
  if (n === 0) return { text: '–', mean: NaN, se: NaN, n }
  const mean = values.reduce((a, b) => a + b, 0) / n
  const se = n > 1 ? Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1) / n) : 0
  return { text: `${mean.toFixed(3)} ± ${se.toFixed(3)}`, mean, se, n }
}

const defined = (values: (number | undefined)[]) => values.filter((v): v is number => v !== undefined)
const faceDetected = (r: Run) => Number(r.metrics.identity !== undefined && r.metrics.identity.detected !== false)

/** Every per-run quantity the tables report; undefined where a run lacks it (e.g. no face found). */
const QUANTITIES: [string, (r: Run, reference?: string) => number | undefined][] = [
  ['face detected', faceDetected],
  ['held-apart id distance ↓', r => r.metrics.identity?.distance],
  ['held-apart id cosine ↑', r => r.metrics.identity?.similarity],
  ['face-api distance ↓', r => r.metrics.identity?.loss?.distance],
  ['guide loss on the final image ↓', r => r.finalImageLoss],
  ['final guide loss (own preview) ↓', r => r.finalLoss ?? r.iterations.at(-1)?.loss],
  ['guide loss drop ↑', r => (r.iterations.length ? r.iterations[0].loss - (r.finalLoss ?? r.iterations.at(-1)!.loss) : undefined)],
  ['ref identity ↑', (r, ref) => (r.metrics.world && ref ? Number(r.metrics.world.name === ref) : undefined)],
  ['off-distribution ↓', r => (r.metrics.world ? Number(!r.metrics.world.typical) : undefined)],
  ['Mahalanobis', r => r.metrics.world?.mahalanobis],
  ['UNet evaluations', r => r.unetEvaluations],
]

const row = (cells: string[]) => `| ${cells.join(' | ')} |`
const header = (cells: string[]) => [row(cells), row(cells.map(() => '---'))]

const PAIRS: [string, string][] = [['x0', 'none'], ['lcm', 'none'], ['lcm', 'x0'], ['lcm2', 'x0'], ['lcm2', 'lcm'], ['x0', 'best'], ['lcm', 'best'], ['lcm2', 'best']]

/** Differences a − b per seed (the same initial noise under both methods), mean ± se over the seeds where both have a value. */
function pairedDifferences(summary: Summary, a: string, b: string, pick: (r: Run, reference?: string) => number | undefined) {
  const bySeed = (method: string) => new Map(summary.runs.filter(r => r.method === method).map(r => [r.seed, r]))
  const [runsA, runsB] = [bySeed(a), bySeed(b)]
  const diffs: number[] = []
  for (const [seed, ra] of runsA) {
    const rb = runsB.get(seed)
    const [va, vb] = [pick(ra, summary.referenceIdentity), rb && pick(rb, summary.referenceIdentity)]
    if (va !== undefined && vb !== undefined) diffs.push(va - vb)
  }
  return { ...stat(diffs), seeds: runsA.size }
}

function pairedRow(summary: Summary, a: string, b: string): string {
  return row([`${a} − ${b} (paired)`, ...QUANTITIES.map(([, pick]) => {
    const st = pairedDifferences(summary, a, b, pick)
    return st.n === st.seeds ? st.text : `${st.text} (n=${st.n})`
  })])
}

function configurationTables(name: string, summary: Summary, wall?: string): string[] {
  const s = summary.settings
  const methods = [...new Set(summary.runs.map(r => r.method))]
  const seeds = new Set(summary.runs.map(r => r.seed)).size
  const lines = [`### ${name}`, '',
    `loss \`${s.loss}\`, guide step(s) ${s.guideSteps.join(',')} of ${s.steps}, K=${s.iters}, ${s.optimizer} lr ${s.lr}, cfg ${s.cfg}, ${seeds} seeds` +
    `${wall ? `; wall time ${wall} s` : ''}; reference identity in the world: ${summary.referenceIdentity ?? '?'}`, '']
  lines.push(...header(['method', ...QUANTITIES.map(([label]) => label)]))
  for (const method of methods) {
    const runs = summary.runs.filter(r => r.method === method)
    lines.push(row([method, ...QUANTITIES.map(([, pick]) => {
      const st = stat(defined(runs.map(r => pick(r, summary.referenceIdentity))))
      return st.n === runs.length ? st.text : `${st.text} (n=${st.n})`
    })]))
  }
  for (const [a, b] of PAIRS) if (methods.includes(a) && methods.includes(b)) lines.push(pairedRow(summary, a, b))
  const guided = summary.runs.filter(r => r.method !== 'none' && r.method !== 'best')
  if (guided.length) lines.push('', `guidance time per guided run: ${stat(guided.map(r => r.timings.guidanceMs / 1000)).text} s`)
  const best = summary.runs.find(r => r.bestOf)
  if (best) lines.push('', `best: the best of N = ${best.bestOf!.n} unguided samples by the guide's loss on the final image`)
  return [...lines, '']
}

const quantity = (label: string) => QUANTITIES.find(([l]) => l.startsWith(label))![1]

/** One line per configuration: the headline metrics per method and the paired lcm − x0 differences. */
function overview(names: string[], summaries: Summary[]): string[] {
  const perMethod = (s: Summary, label: string, methods: string[]) =>
    methods.map(m => stat(defined(s.runs.filter(r => r.method === m).map(r => quantity(label)(r, s.referenceIdentity)))))
      .map(st => (st.n ? st.mean.toFixed(3) : '–')).join(' / ')
  const paired = (s: Summary, label: string, a = 'lcm', b = 'x0') => pairedDifferences(s, a, b, quantity(label)).text
  const all = ['none', 'x0', 'lcm', 'lcm2', 'best']
  const lines = ['### Overview (means per method none / x0 / lcm / lcm2 / best; paired differences as mean ± se over seeds)', '']
  lines.push(...header(['configuration', 'seeds', 'ref identity', 'off-distribution', 'guide loss on the final image', 'held-apart id distance', 'UNet evaluations',
    'Δ ref identity lcm − x0', 'Δ final-image guide loss lcm − x0', 'Δ held-apart distance lcm − x0', 'Δ off-distribution lcm − x0', 'Δ final-image guide loss lcm − best', 'Δ ref identity lcm − best', 'Δ ref identity lcm2 − lcm']))
  names.forEach((name, i) => {
    const s = summaries[i]
    lines.push(row([name, String(new Set(s.runs.map(r => r.seed)).size), perMethod(s, 'ref identity', all), perMethod(s, 'off-distribution', all),
      perMethod(s, 'guide loss on the final image', all), perMethod(s, 'held-apart id distance', all), perMethod(s, 'UNet evaluations', all),
      paired(s, 'ref identity'), paired(s, 'guide loss on the final image'), paired(s, 'held-apart id distance'), paired(s, 'off-distribution'),
      paired(s, 'guide loss on the final image', 'lcm', 'best'), paired(s, 'ref identity', 'lcm', 'best'), paired(s, 'ref identity', 'lcm2', 'lcm')]))
  })
  return [...lines, '']
}

/** How well each recognizer separates final images of the reference's identity from the others' (unguided runs), per world and guide loss. */
function metricCheck(summaries: Summary[]): string[] {
  const reference = identity ?? summaries.find(s => s.referenceIdentity)?.referenceIdentity
  // the unguided runs of a world by seed: the same images in every configuration of that world and loss
  const unguided = new Map<string, Map<number, Run>>()
  for (const s of summaries) {
    const key = `${s.settings.models}, loss ${s.settings.loss}`
    const runs = unguided.get(key) ?? new Map<number, Run>()
    unguided.set(key, runs)
    for (const r of s.runs) if (r.method === 'none') runs.set(r.seed, r)
  }
  const lines = ['### Does the metric see identity here? (unguided runs, by the identity of their nearest world component)', '']
  lines.push(...header(['world, guide loss', 'group', 'runs', 'face detected', 'held-apart id distance', 'held-apart id cosine', 'face-api distance', 'face-api cosine', 'guide loss on the final image']))
  for (const [world, bySeed] of unguided) {
    const runs = [...bySeed.values()]
    const groups: [string, Run[]][] = [
      [`nearest component = ${reference}`, runs.filter(r => r.metrics.world?.name === reference)],
      ['nearest component = another identity', runs.filter(r => r.metrics.world && r.metrics.world.name !== reference)],
    ]
    for (const [label, group] of groups) {
      lines.push(row([world, label, String(group.length),
        stat(group.map(faceDetected)).text,
        stat(defined(group.map(r => r.metrics.identity?.distance))).text,
        stat(defined(group.map(r => r.metrics.identity?.similarity))).text,
        stat(defined(group.map(r => r.metrics.identity?.loss?.distance))).text,
        stat(defined(group.map(r => r.metrics.identity?.loss?.similarity))).text,
        stat(defined(group.map(r => r.finalImageLoss))).text]))
    }
  }
  return [...lines, '']
}

const [dir, identity] = process.argv.slice(2)
if (!dir) throw new Error('usage: tsx samples/experiment/collect.ts RUNS_DIR [IDENTITY]')
/** A folder's summary; where held-apart.ts rescored its images, their identity scores replace the recorded ones. */
function read(n: string): Summary {
  const summary = JSON.parse(readFileSync(join(dir, n, 'summary.json'), 'utf8')) as Summary
  const rescored = join(dir, n, 'held-apart.jsonl')
  if (!existsSync(rescored)) return summary
  const scores = new Map(readFileSync(rescored, 'utf8').split('\n').filter(l => l.trim()).map(l => {
    const { seed, method, ...identity } = JSON.parse(l) as Run['metrics']['identity'] & { seed: number; method: string }
    return [`${seed} ${method}`, identity]
  }))
  for (const r of summary.runs) r.metrics.identity = scores.get(`${r.seed} ${r.method}`)
  return summary
}
const finished = readdirSync(dir).filter(n => existsSync(join(dir, n, 'summary.json'))).sort()
const names = finished.filter(n => !n.endsWith('-lcm2'))
const summaries = names.map(n => {
  const summary = read(n)
  if (finished.includes(`${n}-lcm2`)) summary.runs.push(...read(`${n}-lcm2`).runs.map(r => ({ ...r, method: 'lcm2' })))
  return identity ? { ...summary, referenceIdentity: identity } : summary
})
const out: string[] = [...overview(names, summaries)]
names.forEach((name, i) => {
  const wallPath = join(dir, name, 'wall_s.txt')
  out.push(...configurationTables(name, summaries[i], existsSync(wallPath) ? readFileSync(wallPath, 'utf8').trim() : undefined))
})
out.push(...metricCheck(summaries))
console.log(out.join('\n'))
