// The compare report page: its statistics, its SVG charts, and the page itself rendered offline by Debian's
// headless chromium (DOM after load, and a screenshot), skipped with a message where chromium is absent.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { roundTicks, curveChart } from '../src/report/chart.js'
import { saveReport, renderReport, type CompareReport, type ReportRun } from '../src/report/report.js'
import { meanCurve, pairedDifference, stat } from '../src/report/stats.js'
import type { ImageTensor } from '../src/image/image.js'
import { CHROMIUM, dumpDom, screenshot } from './chromium.js'

/** A colour ramp drawn by code, so the grid is not a flat colour. */
const ramp = (width: number, height: number, hue: number): ImageTensor => ({
  width, height,
  data: Float32Array.from({ length: 3 * width * height }, (_, i) => (Math.floor(i / (width * height)) === hue ? ((i % width) / width) * 2 - 1 : -0.6)),
})

/** 6 seeds × none, x0, lcm; the two guided methods with 2 guide steps of 4 iterations; one seed without a face for x0. */
function exampleReport(): CompareReport {
  const methods = ['none', 'x0', 'lcm']
  const runs: ReportRun[] = []
  for (let seed = 0; seed < 6; seed++) {
    methods.forEach((method, m) => {
      const iterations = method === 'none' ? [] : Array.from({ length: 8 }, (_, k) => ({ step: k < 4 ? 10 : 12, loss: 1 - 0.05 * k * m + 0.01 * seed }))
      runs.push({ seed, method, values: { distance: method === 'x0' && seed === 5 ? undefined : 0.5 - 0.1 * m + 0.01 * seed, offDistribution: 0 }, iterations })
    })
  }
  return {
    title: 'compare: id loss towards world:dev',
    settings: { loss: 'id', guideSteps: [10, 12], update: { lr: 0.01, optimizer: 'sgd' }, prompt: '<b>not markup</b>', skipped: undefined },
    grid: ramp(200, 400, 1),
    methods,
    metrics: [{ key: 'distance', label: 'id distance' }, { key: 'offDistribution', label: 'off-distribution' }, { key: 'absent', label: 'never measured' }],
    runs,
    notes: ['identity metric: a note & more'],
  }
}

describe('report page', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-report-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('means with standard errors; paired differences over the seeds both have; curves with a band', () => {
    const s = stat([1, 2, 3, 4])!
    assert.equal(s.mean, 2.5)
    assert.ok(Math.abs(s.se! - Math.sqrt(5 / 3 / 4)) < 1e-12)
    assert.equal(stat([]), undefined)
    assert.deepEqual(stat([2]), { mean: 2, n: 1 }, 'no standard error from one value')
    // seed 2 lacks b: left out; the seeds' common offset cancels
    const a = new Map([[0, 10.5], [1, 20.5], [2, 30]])
    const b = new Map<number, number | undefined>([[0, 10], [1, 20], [2, undefined]])
    assert.deepEqual(pairedDifference(a, b), { mean: 0.5, se: 0, n: 2 })
    const curve = meanCurve([[1, 2, 3], [3, 4]])
    assert.deepEqual(curve.iteration, [1, 2, 3])
    assert.deepEqual(curve.mean, [2, 3, 3])
    assert.deepEqual(curve.n, [2, 2, 1])
    assert.ok(Math.abs(curve.high[0] - (2 + Math.SQRT2)) < 1e-12 && curve.low[2] === 3)
  })

  it('round ticks cover the range at 1, 2 or 5 × 10^k', () => {
    const unit = roundTicks(0, 1)
    assert.equal(unit.length, 6)
    unit.forEach((v, i) => assert.ok(Math.abs(v - i / 5) < 1e-12, `tick ${i}: ${v}`))
    const ticks = roundTicks(0.213, 0.887)
    assert.ok(ticks.length >= 4 && ticks.length <= 8 && ticks[0] >= 0.213 && ticks.at(-1)! <= 0.887)
    const step = ticks[1] - ticks[0]
    assert.ok([0.1, 0.2, 0.05].some(s => Math.abs(step - s) < 1e-12), `step ${step}`)
    assert.deepEqual(roundTicks(1, 8, 7), [1, 2, 3, 4, 5, 6, 7, 8])
  })

  it('draws a curve as SVG paths, one point per iteration, markers where guide steps begin', () => {
    const svg = curveChart(meanCurve([[0.9, 0.7, 0.6], [0.8, 0.6, 0.4]]), { title: 'lcm <loss>', xLabel: 'iteration', yLabel: 'loss', colour: '#2ca02c', markers: [{ x: 2, label: 'step 12' }] })
    assert.equal(svg.match(/<circle /g)?.length, 3)
    assert.match(svg, /<path class="mean" stroke="#2ca02c" d="M[\d.,L]+"\/>/)
    assert.match(svg, /<path class="band"[^>]* d="M[\d.,L]+Z"\/>/)
    assert.match(svg, /lcm &lt;loss&gt;/)
    assert.match(svg, /step 12/)
  })

  it('is one self-contained page: inline images, nothing from the network, text escaped', async () => {
    const html = await renderReport(exampleReport())
    assert.doesNotMatch(html, /https?:|\/\/cdn|<script|<link/i)
    const sources = [...html.matchAll(/src="([^"]*)"/g)].map(m => m[1])
    assert.equal(sources.length, 1, 'the grid')
    assert.ok(sources.every(s => s.startsWith('data:image/png;base64,')))
    assert.match(html, /&lt;b&gt;not markup&lt;\/b&gt;/)
    assert.doesNotMatch(html, /never measured/, 'a metric no method has is left out')
    // x0 lost a seed: n=5 in its cell; lcm − x0 paired over those 5 seeds: -0.100 exactly
    assert.match(html, /n=5/)
    assert.match(html, /<th>lcm − x0<\/th><td class="clear">-0\.100 ± 0\.000 <span class="n">n=5<\/span>/)
  })

  it('renders in headless chromium: its tables, both guided methods\' charts, and not a blank page', async function () {
    if (!CHROMIUM) {
      console.log('      skipped: no chromium (Debian: apt-get install chromium) to render the page with')
      this.skip()
    }
    this.timeout(120_000)
    const page = join(dir, 'report.html')
    await saveReport(exampleReport(), page)
    const dom = await dumpDom(page)
    const tables = [...dom.matchAll(/<table>([\s\S]*?)<\/table>/g)].map(m => m[1])
    assert.equal(tables.length, 3, 'metrics, paired differences, settings')
    assert.equal(tables[0].match(/<tr>/g)?.length, 1 + 3, 'a header and one row per method')
    assert.equal(tables[1].match(/<tr>/g)?.length, 1 + 3, 'x0 − none, lcm − none, lcm − x0')
    assert.equal(dom.match(/<svg class="chart"/g)?.length, 2, 'a chart per guided method')
    assert.equal(dom.match(/<path class="mean"/g)?.length, 2)

    const shot = join(dir, 'shot.png')
    await screenshot(page, shot, 1280, 2000)
    const { data, info } = await sharp(shot).removeAlpha().raw().toBuffer({ resolveWithObject: true })
    assert.equal(info.width, 1280)
    const pixels = info.width * info.height
    const count = (test: (r: number, g: number, b: number) => boolean) => {
      let n = 0
      for (let i = 0; i < pixels; i++) if (test(data[3 * i], data[3 * i + 1], data[3 * i + 2])) n++
      return n
    }
    assert.ok(count((r, g, b) => r + g + b < 200) > 2000, 'text is drawn')
    // the x0 and lcm curves in their colours (#ff7f0e, #2ca02c) and the grid's green ramp are on screen
    const near = (c: number[], tolerance = 24) => (r: number, g: number, b: number) => Math.abs(r - c[0]) + Math.abs(g - c[1]) + Math.abs(b - c[2]) < tolerance
    assert.ok(count(near([0xff, 0x7f, 0x0e])) > 50, 'the x0 curve')
    assert.ok(count(near([0x2c, 0xa0, 0x2c])) > 50, 'the lcm curve')
    assert.ok(count((r, g, b) => g > 200 && r < 70 && b < 70) > 1000, 'the grid image')
    assert.ok((await readFile(shot)).length > 10_000)
  })
})
