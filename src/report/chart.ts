// Line charts as inline SVG, written by hand (no library): a mean curve with a shaded band, axes with round
// ticks, and vertical markers (where a new guide step begins). The SVG is text, so a report stays one file.
import { escapeUTF8 as escape } from 'entities'
import type { Curve } from './stats.js'

export interface ChartOptions {
  title: string
  xLabel: string
  yLabel: string
  colour: string
  /** vertical dashed lines at these x values, labelled */
  markers?: { x: number; label: string }[]
  width?: number
  height?: number
}

/** About `count` round values (1, 2 or 5 × 10^k apart, the nearest on a log scale, as d3's ticks) covering [lo, hi]. */
export function roundTicks(lo: number, hi: number, count = 5): number[] {
  const raw = (hi - lo) / count
  const magnitude = 10 ** Math.floor(Math.log10(raw))
  const ratio = raw / magnitude
  const step = magnitude * (ratio >= Math.sqrt(50) ? 10 : ratio >= Math.sqrt(10) ? 5 : ratio >= Math.sqrt(2) ? 2 : 1)
  const ticks: number[] = []
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) ticks.push(Number((k * step).toPrecision(12)))
  return ticks
}

/** Tick labels with as many decimals as the tick spacing needs. */
function tickLabels(ticks: number[]): string[] {
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : 1
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9))
  return ticks.map(v => v.toFixed(decimals))
}

/** [lo, hi] with a margin, widened where all values are equal. */
function domain(values: number[], margin = 0.05): [number, number] {
  const lo = Math.min(...values)
  const hi = Math.max(...values)
  const pad = hi > lo ? (hi - lo) * margin : Math.max(Math.abs(lo) * 0.1, 1e-3)
  return [lo - pad, hi + pad]
}

/** One curve (mean line, band, a dot per point) on its own axes, as an <svg> element. */
export function curveChart(curve: Curve, options: ChartOptions): string {
  const width = options.width ?? 420
  const height = options.height ?? 260
  const plot = { left: 64, right: width - 16, top: 34, bottom: height - 44 }
  const [x0, x1] = curve.iteration.length > 1 ? [curve.iteration[0], curve.iteration.at(-1)!] : [curve.iteration[0] - 1, curve.iteration[0] + 1]
  const [y0, y1] = domain([...curve.low, ...curve.high])
  const px = (x: number) => plot.left + ((x - x0) / (x1 - x0)) * (plot.right - plot.left)
  const py = (y: number) => plot.bottom - ((y - y0) / (y1 - y0)) * (plot.bottom - plot.top)
  const f = (v: number) => v.toFixed(1)
  const line = (ys: number[]) => ys.map((y, i) => `${f(px(curve.iteration[i]))},${f(py(y))}`)
  const parts: string[] = []
  parts.push(`<text class="title" x="${width / 2}" y="18" text-anchor="middle">${escape(options.title)}</text>`)
  const yTicks = roundTicks(y0, y1)
  tickLabels(yTicks).forEach((label, i) => {
    const y = f(py(yTicks[i]))
    parts.push(`<line class="grid" x1="${plot.left}" x2="${plot.right}" y1="${y}" y2="${y}"/>`, `<text x="${plot.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${label}</text>`)
  })
  const xTicks = roundTicks(x0, x1, Math.min(8, Math.max(1, x1 - x0))).filter(v => Number.isInteger(v))
  tickLabels(xTicks).forEach((label, i) => parts.push(`<text x="${f(px(xTicks[i]))}" y="${plot.bottom + 16}" text-anchor="middle">${label}</text>`))
  for (const m of options.markers ?? []) {
    const x = f(px(m.x))
    parts.push(`<line class="marker" x1="${x}" x2="${x}" y1="${plot.top}" y2="${plot.bottom}"/>`, `<text class="marker" x="${x}" y="${plot.top - 4}" text-anchor="start">${escape(m.label)}</text>`)
  }
  parts.push(
    `<path class="band" fill="${options.colour}" d="M${[...line(curve.high), ...line(curve.low).reverse()].join('L')}Z"/>`,
    `<path class="mean" stroke="${options.colour}" d="M${line(curve.mean).join('L')}"/>`,
    ...curve.mean.map((y, i) => `<circle cx="${f(px(curve.iteration[i]))}" cy="${f(py(y))}" r="2.5" fill="${options.colour}"/>`),
    `<line class="axis" x1="${plot.left}" x2="${plot.left}" y1="${plot.top}" y2="${plot.bottom}"/>`,
    `<line class="axis" x1="${plot.left}" x2="${plot.right}" y1="${plot.bottom}" y2="${plot.bottom}"/>`,
    `<text x="${(plot.left + plot.right) / 2}" y="${height - 8}" text-anchor="middle">${escape(options.xLabel)}</text>`,
    `<text x="14" y="${(plot.top + plot.bottom) / 2}" text-anchor="middle" transform="rotate(-90 14 ${(plot.top + plot.bottom) / 2})">${escape(options.yLabel)}</text>`,
  )
  return `<svg class="chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img">${parts.join('')}</svg>`
}
