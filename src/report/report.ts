// The report page of a comparison (`compare -o DIR` writes DIR/report.html): one self-contained HTML file, with
// the settings, the grid (the reference first), the metrics per method (mean ± standard error, n), the paired
// differences between methods, and each method's loss per iteration (mean and spread over seeds) as inline SVG.
// Images are data: URIs and there is no script, stylesheet or font from outside, so it opens offline.
import { escapeUTF8 as escape } from 'entities'
import sharp from 'sharp'
import { writeFileAtomic } from '../fsutil.js'
import { imageToPixels, type ImageTensor } from '../image/image.js'
import { curveChart } from './chart.js'
import { meanCurve, pairedDifference, stat, type BySeed, type Stat } from './stats.js'

export interface ReportMetric {
  key: string
  label: string
}

export interface ReportRun {
  seed: number
  method: string
  /** the metrics' values for this run by key (undefined where it has none, e.g. no face found) */
  values: Record<string, number | undefined>
  /** the loss before each update, in order, and the guide step it was taken at */
  iterations: { step: number; loss: number }[]
}

export interface CompareReport {
  title: string
  /** every setting of the run, shown as a table (objects and lists as JSON) */
  settings: Record<string, unknown>
  /** the final images, the reference in its first column */
  grid: ImageTensor
  methods: string[]
  metrics: ReportMetric[]
  runs: ReportRun[]
  /** lines under the tables (how the metrics were measured, what [n] means) */
  notes?: string[]
}

/** One colour per method, the same in every chart (Tableau 10's first ones). */
const COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b']
/** Images wider than this are shrunk in the page (the full-size grid is beside it). */
const MAX_IMAGE_WIDTH = 2048

async function dataUri(image: ImageTensor): Promise<string> {
  const png = await sharp(imageToPixels(image), { raw: { width: image.width, height: image.height, channels: 3 } })
    .resize({ width: MAX_IMAGE_WIDTH, withoutEnlargement: true })
    .png()
    .toBuffer()
  return `data:image/png;base64,${png.toString('base64')}`
}

/** "mean ± se n=N" (no ± for one value); a difference more than two standard errors from 0 is highlighted. */
const cell = (s: Stat | undefined, signed = false) =>
  s
    ? `<td${signed && s.se !== undefined && Math.abs(s.mean) > 2 * s.se ? ' class="clear"' : ''}>${signed && s.mean > 0 ? '+' : ''}${s.mean.toFixed(3)}${s.se === undefined ? '' : ` ± ${s.se.toFixed(3)}`} <span class="n">n=${s.n}</span></td>`
    : '<td class="none">–</td>'

function table(header: string[], rows: string[][]): string {
  const head = `<tr>${header.map(h => `<th>${escape(h)}</th>`).join('')}</tr>`
  return `<table><thead>${head}</thead><tbody>${rows.map(r => `<tr>${r.join('')}</tr>`).join('')}</tbody></table>`
}

const settingText = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v))

/** The report as one HTML document. */
export async function renderReport(report: CompareReport): Promise<string> {
  const bySeed = (method: string, key: string): BySeed => new Map(report.runs.filter(r => r.method === method).map(r => [r.seed, r.values[key]]))
  const values = (method: string, key: string) => [...bySeed(method, key).values()].filter((v): v is number => v !== undefined)
  const metrics = report.metrics.filter(m => report.methods.some(method => values(method, m.key).length > 0))

  const summary = table(['method', ...metrics.map(m => m.label)], report.methods.map(method => [`<th>${escape(method)}</th>`, ...metrics.map(m => cell(stat(values(method, m.key))))]))
  const pairs = report.methods.flatMap((b, i) => report.methods.slice(i + 1).map(a => [a, b]))
  const paired = table(['difference (same seeds)', ...metrics.map(m => m.label)], pairs.map(([a, b]) => [`<th>${escape(`${a} − ${b}`)}</th>`, ...metrics.map(m => cell(pairedDifference(bySeed(a, m.key), bySeed(b, m.key)), true))]))

  const charts = report.methods.flatMap((method, i) => {
    const runs = report.runs.filter(r => r.method === method && r.iterations.length > 0)
    if (runs.length === 0) return []
    // a dashed line where each guide step begins, from the first run's schedule
    const markers = runs[0].iterations.flatMap((it, k, all) => (k === 0 || it.step !== all[k - 1].step ? [{ x: k + 1, label: `step ${it.step}` }] : []))
    const curve = meanCurve(runs.map(r => r.iterations.map(it => it.loss)))
    return [curveChart(curve, { title: `${method}: loss on its own preview (${runs.length} seeds)`, xLabel: 'iteration', yLabel: 'loss', colour: COLOURS[i % COLOURS.length], markers })]
  })

  const settings = table(['setting', 'value'], Object.entries(report.settings).filter(([, v]) => v !== undefined).map(([k, v]) => [`<th>${escape(k)}</th>`, `<td class="text">${escape(settingText(v))}</td>`]))
  const seeds = new Set(report.runs.map(r => r.seed)).size

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(report.title)}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1240px; padding: 0 16px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; } td.text { text-align: left; font-family: ui-monospace, monospace; font-size: 13px; }
td.clear { background: #fff3c4; } td.none { color: #999; } .n { color: #777; font-size: 12px; }
figure { margin: 0; } img { max-width: 100%; display: block; } figcaption { color: #555; font-size: 13px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { font: 11px system-ui, sans-serif; background: #fff; border: 1px solid #ddd; }
svg .title { font-size: 13px; font-weight: 600; } svg .grid { stroke: #eee; } svg .axis { stroke: #333; }
svg .band { opacity: 0.18; stroke: none; } svg .mean { fill: none; stroke-width: 2; }
svg line.marker { stroke: #999; stroke-dasharray: 4 3; } svg text.marker { fill: #777; }
</style></head>
<body>
<h1>${escape(report.title)}</h1>
<p>${report.methods.length} methods × ${seeds} seeds, every method on the same seeds.</p>
<h2>Metrics per method</h2>
${summary}
<p>mean ± standard error of the mean over seeds; n: the images behind it (fewer where no face was found).</p>
<h2>Paired differences</h2>
${paired}
<p>per seed, the first method's value minus the second's, then mean ± standard error over the seeds where both have one; highlighted where |mean| &gt; 2 standard errors.</p>
<h2>Loss per iteration</h2>
<div class="charts">${charts.join('\n') || '<p>no guided method in this comparison</p>'}</div>
<p>line: mean over seeds; band: ± one standard deviation. Each method's loss is taken on its own preview, so the levels are not comparable across methods; the shapes are.</p>
${(report.notes ?? []).map(n => `<p class="note">${escape(n)}</p>`).join('\n')}
<h2>Images</h2>
<figure><img alt="grid" src="${await dataUri(report.grid)}"><figcaption>the reference, then the final images: a row per seed, a column per method</figcaption></figure>
<h2>Settings</h2>
${settings}
</body></html>
`
}

/** Writes the page; readers see the old file or the whole new one. */
export async function saveReport(report: CompareReport, path: string): Promise<void> {
  await writeFileAtomic(path, await renderReport(report))
}
