// Pictures for teaching and comparing: the grid's title and multi-line labels, fig. 2 and fig. 5 layouts,
// animations, and the per-iteration recorder. Images are drawn by code.
import assert from 'node:assert/strict'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { UserError } from '../src/errors.js'
import { encodeAnimation, saveAnimation } from '../src/image/animation.js'
import { composeGrid, coverImage, loadImage, wrapText, type ImageTensor } from '../src/image/image.js'
import { GLYPH_HEIGHT } from '../src/image/font.js'
import { gridWithReference, lossFigureImage, previewDistances, previewFigureImage, type Figure } from '../src/guidance/figure.js'
import { IterationRecorder } from '../src/report/iterations.js'

const flat = (value: number, width = 16, height = width): ImageTensor => ({ data: new Float32Array(3 * width * height).fill(value), width, height })

/** Pixels of the region that are black in all channels (the font's ink). */
function inkIn(image: ImageTensor, x0: number, y0: number, w: number, h: number): number {
  const plane = image.width * image.height
  let ink = 0
  for (let y = y0; y < y0 + h; y++) {
    for (let x = x0; x < x0 + w; x++) {
      const at = y * image.width + x
      if (image.data[at] === -1 && image.data[plane + at] === -1 && image.data[2 * plane + at] === -1) ink++
    }
  }
  return ink
}

/** Whether the region is all white (the canvas, where a cell was left blank). */
function blank(image: ImageTensor, x0: number, y0: number, w: number, h: number): boolean {
  const plane = image.width * image.height
  for (let c = 0; c < 3; c++) for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) if (image.data[c * plane + y * image.width + x] !== 1) return false
  return true
}

describe('pictures', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-pictures-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('wraps text at spaces, cutting only words longer than a line', () => {
    assert.deepEqual(wrapText('steps 50 cfg 1 seed 3', 10), ['steps 50', 'cfg 1 seed', '3'])
    assert.deepEqual(wrapText('abcdefghij k', 4), ['abcd', 'efgh', 'ij k'])
    assert.deepEqual(wrapText('one\ntwo', 20), ['one', 'two'])
  })

  it('draws a title over the grid, multi-line labels under cells, and leaves undefined cells blank', () => {
    const gap = 2
    const grid = composeGrid([[{ image: flat(0.2, 32), label: 'x0\nline two' }, { image: flat(0.4, 32) }], [undefined, { image: flat(0.6, 32), label: 'lcm' }]],
      { gap, labelScale: 1, title: 'a title long enough to wrap onto a second line' })
    const line = GLYPH_HEIGHT
    const titleLines = wrapText('a title long enough to wrap onto a second line', Math.floor((grid.width - 2 * gap) / 8)).length
    assert.ok(titleLines >= 2)
    const labelHeight = 2 * line + 2 * gap
    assert.equal(grid.width, 2 * 32 + 3 * gap)
    assert.equal(grid.height, titleLines * line + gap + 2 * (32 + labelHeight) + 3 * gap)
    const top = titleLines * line + gap
    assert.ok(inkIn(grid, gap, gap, grid.width - 2 * gap, line) > 10, 'the title is drawn')
    assert.ok(inkIn(grid, gap, top + gap + 32 + gap, 32, line) > 5, 'first label line')
    assert.ok(inkIn(grid, gap, top + gap + 32 + gap + line, 32, line) > 5, 'second label line')
    assert.equal(inkIn(grid, 2 * gap + 32, top + gap + 32 + gap, 32, 2 * line), 0, 'no label where none was given')
    assert.ok(blank(grid, gap, top + 2 * gap + 32 + labelHeight, 32, 32), 'the undefined cell is blank')
  })

  it('crops to cover: a wide image keeps its centre', () => {
    // left third -1, middle 0, right third 1, 48×16 → 16×16 keeps the middle
    const wide: ImageTensor = { width: 48, height: 16, data: Float32Array.from({ length: 3 * 48 * 16 }, (_, i) => Math.floor((i % 48) / 16) - 1) }
    const square = coverImage(wide, 8, 8)
    assert.deepEqual([square.width, square.height], [8, 8])
    assert.ok(square.data.every(v => Math.abs(v) < 1e-6))
  })

  it("fig. 2: the reference and the final image once, each preview labelled with its distance to the final image", () => {
    const t = (v: number) => ({ data: new Float32Array(3 * 16 * 16).fill(v), dims: [1, 3, 16, 16] })
    const figure: Figure = { final: t(0), rows: [{ step: 2, t: 961, previews: { x0: t(0.5), lcm: t(0.1) } }, { step: 10, t: 801, previews: { x0: t(-0.25), lcm: t(0.05) } }] }
    const distances = previewDistances(figure)
    assert.deepEqual(distances.map(d => d.step), [2, 10])
    assert.ok(Math.abs(distances[0].x0 - 0.5) < 1e-6 && Math.abs(distances[0].lcm - 0.1) < 1e-6 && Math.abs(distances[1].x0 - 0.25) < 1e-6)
    const image = previewFigureImage(figure, { reference: flat(-0.5, 32) })
    const gap = 4
    // columns: reference, x0, lcm, final
    assert.equal(image.width, 4 * 16 + 5 * gap)
    const rowHeight = 16 + 2 * GLYPH_HEIGHT + 2 * gap + gap
    // the second row has no reference and no final image; its x0 cell holds the x0 preview
    assert.ok(blank(image, gap, gap + rowHeight, 16, 16))
    assert.ok(blank(image, gap + 3 * (16 + gap), gap + rowHeight, 16, 16))
    assert.ok(!blank(image, gap + 3 * (16 + gap), gap, 16, 16), 'the final image, in the first row')
    assert.ok(Math.abs(image.data[(gap + rowHeight) * image.width + gap + 16 + gap] - -0.25) < 1e-6)
    // the reference is resized to the cells' size
    assert.ok(Math.abs(image.data[gap * image.width + gap] - -0.5) < 1e-6)
  })

  it('fig. 5: one row per loss, the reference first, cells labelled with loss, method and seed', () => {
    const cells = ['id', 'perceptual'].flatMap(loss => ['none', 'x0', 'lcm'].map((method, i) => ({ loss, method, seed: 3, image: flat(i / 4), note: 'id 0.412' })))
    const image = lossFigureImage(cells, { reference: flat(-1), title: 'steps 50, guide step 10, K 10' })
    assert.equal(image.width, 4 * 16 + 5 * 4)
    const unlabelled = gridWithReference([[{ image: flat(0) }], [{ image: flat(0) }]], undefined)
    assert.ok(image.height > 2 * (16 + 4) && unlabelled.width === 16 + 2 * 4, 'no reference column without a reference')
    assert.throws(() => lossFigureImage([]), UserError)
  })

  it('writes animated WebP and GIF with a delay per frame, and refuses other extensions and unequal frames', async () => {
    const frames = [flat(-1, 24), flat(0, 24), flat(1, 24)]
    for (const ext of ['webp', 'gif']) {
      const path = join(dir, `a.${ext}`)
      await saveAnimation(frames, path, [100, 100, 500])
      const meta = await sharp(path, { animated: true }).metadata()
      assert.equal(meta.pages, 3)
      assert.deepEqual(meta.delay, [100, 100, 500])
      assert.equal(meta.pageHeight, 24)
      // the last frame is white, the first black
      const back = await loadImage(path)
      assert.ok(back.data[0] < -0.9)
    }
    await assert.rejects(saveAnimation(frames, join(dir, 'a.png'), [1, 1, 1]), (e: Error) => e instanceof UserError && /\.webp or \.gif file/.test(e.message))
    await assert.rejects(encodeAnimation([flat(0, 24), flat(0, 16)], 'gif', [1, 1]), UserError)
  })

  it('records every iteration: PNGs, the final image, an index and a labelled animation', async () => {
    const out = join(dir, 'iterations')
    const animation = join(dir, 'run.gif') // a palette, not lossy: the label pixels below compare exactly
    assert.throws(() => new IterationRecorder({ animation: join(dir, 'run.mp4'), iters: 2 }), UserError)
    const recorder = new IterationRecorder({ dir: out, animation, reference: flat(1, 128), iters: 2, title: 'lcm preview, id loss' })
    const losses = [0.5, 0.4, 0.3]
    losses.forEach((loss, k) => recorder.add({ step: 10 + 2 * Math.floor(k / 2), t: 801, iter: k % 2, round: 0, loss, ms: 12 + k, preview: flat(loss, 128) }))
    const result = await recorder.finish(flat(0, 128), { samplingMs: 5 })
    const files = (await readdir(out)).sort()
    assert.deepEqual(files, ['final.png', 'index.json', 'reference.png', 'step010-iter000.png', 'step010-iter001.png', 'step012-iter000.png'])
    const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8'))
    assert.deepEqual(index.iterations.map((i: { loss: number }) => i.loss), losses)
    assert.deepEqual(index.iterations[1], { file: 'step010-iter001.png', step: 10, t: 801, iter: 1, round: 0, loss: 0.4, ms: 13 })
    assert.equal(index.final, 'final.png')
    assert.deepEqual(index.timings, { samplingMs: 5 })
    const second = await loadImage(join(out, 'step010-iter001.png'))
    assert.ok(second.data.every(v => Math.abs(v - 0.4) < 0.01), 'the preview as it was handed out')
    assert.equal(result.animation, animation)
    const meta = await sharp(animation, { animated: true }).metadata()
    assert.equal(meta.pages, losses.length + 1, 'a frame per iteration and the final image')
    assert.equal(meta.delay?.at(-1), 2500, 'the final image shows longest')
    // frames differ in their labels (loss 0.5000 vs 0.4000), not only in the preview
    const pages = await Promise.all([0, 1].map(page => sharp(animation, { page }).removeAlpha().raw().toBuffer()))
    const width = meta.width!
    const labelsTop = wrapText('lcm preview, id loss', Math.floor((width - 8) / 8)).length * GLYPH_HEIGHT + 4 + 4 + 128 + 4
    const differing = new Set<number>()
    for (let i = 0; i < pages[0].length; i += 3) if (pages[0][i] !== pages[1][i]) differing.add(Math.floor(i / 3 / width))
    assert.ok([...differing].some(row => row >= labelsTop + GLYPH_HEIGHT), 'the second label lines (the loss) differ')
    assert.ok([...differing].every(row => row >= labelsTop - 128 - 4), 'the title does not change')
  })
})
