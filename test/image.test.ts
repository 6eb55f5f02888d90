import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { UserError } from '../src/errors.js'
import { composeGrid, imageFromPixels, imageToPixels, loadImage, resizeImage, saveImage, type ImageTensor } from '../src/image/image.js'

/** A gradient image drawn by code: red grows with x, green with y, blue constant. */
function gradient(width: number, height: number): Uint8Array {
  const pixels = new Uint8Array(width * height * 3)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) pixels.set([Math.round((255 * x) / (width - 1)), Math.round((255 * y) / (height - 1)), 64], (y * width + x) * 3)
  }
  return pixels
}

describe('image I/O', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-image-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('round-trips PNG exactly through [-1,1] tensors', async () => {
    const pixels = gradient(37, 23)
    const image = imageFromPixels(pixels, 37, 23, 3)
    assert.equal(image.data.length, 3 * 37 * 23)
    assert.ok(Math.min(...image.data) >= -1 && Math.max(...image.data) <= 1)
    const path = join(dir, 'g.png')
    await saveImage(image, path)
    const back = await loadImage(path)
    assert.equal(back.width, 37)
    assert.equal(back.height, 23)
    assert.deepEqual(imageToPixels(back), pixels)
    assert.deepEqual((await readdir(dir)).filter(f => f.endsWith('.tmp')), [], 'no temporary file is left')
  })

  it('reads JPEG, WebP and RGBA PNG, resizing with cover / contain / fill', async () => {
    const raw = { raw: { width: 64, height: 32, channels: 3 as const } }
    await sharp(Buffer.from(gradient(64, 32)), raw).jpeg().toFile(join(dir, 'g.jpg'))
    await sharp(Buffer.from(gradient(64, 32)), raw).webp().toFile(join(dir, 'g.webp'))
    const rgba = new Uint8Array(8 * 8 * 4).fill(0) // fully transparent: composed over white
    await sharp(Buffer.from(rgba), { raw: { width: 8, height: 8, channels: 4 } }).png().toFile(join(dir, 'a.png'))
    for (const name of ['g.jpg', 'g.webp']) {
      const cover = await loadImage(join(dir, name), { size: 16 })
      assert.deepEqual([cover.width, cover.height], [16, 16])
      const fill = await loadImage(join(dir, name), { size: { width: 20, height: 10 }, fit: 'fill' })
      assert.deepEqual([fill.width, fill.height], [20, 10])
      // red grows left to right in every format
      const red = (im: ImageTensor, x: number) => im.data[5 * im.width + x]
      assert.ok(red(fill, 18) > red(fill, 1) + 1)
    }
    const contain = await loadImage(join(dir, 'g.jpg'), { size: 16, fit: 'contain' })
    assert.ok(contain.data[0] < -0.95, 'letterbox bars are black')
    const white = await loadImage(join(dir, 'a.png'))
    assert.ok(white.data.every(v => v === 1))
  })

  it('names the file when it is not an image', async () => {
    const path = join(dir, 'notes.txt')
    await writeFile(path, 'not an image')
    await assert.rejects(loadImage(path), (e: Error) => e instanceof UserError && e.message.includes(path))
    await assert.rejects(loadImage(join(dir, 'missing.png')), UserError)
  })

  it('composes a labelled grid with ink under each image', async () => {
    const a = imageFromPixels(gradient(32, 32), 32, 32, 3)
    const b = imageFromPixels(gradient(24, 32), 24, 32, 3)
    const grid = composeGrid([[{ image: a, label: 'x0' }, { image: b, label: 'lcm' }], [{ image: b }]], { gap: 2, labelScale: 1 })
    assert.equal(grid.width, 2 * 32 + 3 * 2)
    assert.equal(grid.height, 2 * (32 + 14 + 4) + 3 * 2)
    const plane = grid.width * grid.height
    const inkIn = (x0: number, y0: number, w: number, h: number) => {
      let ink = 0
      for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) if (grid.data[y * grid.width + x] === -1 && grid.data[plane + y * grid.width + x] === -1) ink++
      return ink
    }
    assert.ok(inkIn(2, 36, 32, 14) > 10, 'label under the first image')
    assert.ok(inkIn(36, 36, 32, 14) > 10, 'label under the second image')
    assert.equal(inkIn(2, 36 + 52, 32, 14), 0, 'no label where none was given')
    const path = join(dir, 'grid.png')
    await saveImage(grid, path)
    assert.deepEqual((await sharp(path).metadata()).width, grid.width)
  })

  it('resizes in JS: constants stay constant, shrinking averages (antialiased), ramps stay ramps', () => {
    const flat: ImageTensor = { width: 30, height: 20, data: new Float32Array(3 * 600).fill(0.25) }
    assert.ok(resizeImage(flat, 7, 11).data.every(v => Math.abs(v - 0.25) < 1e-6))
    // a one-pixel checkerboard shrunk 4× becomes its mean, not an aliased pattern
    const checker: ImageTensor = { width: 32, height: 32, data: Float32Array.from({ length: 3 * 1024 }, (_, i) => ((i % 32) + Math.floor(i / 32)) % 2 ? 1 : -1) }
    const small = resizeImage(checker, 8, 8)
    assert.ok(small.data.every(v => Math.abs(v) < 0.2), `max ${Math.max(...small.data.map(Math.abs))}`)
    // a horizontal ramp is still a ramp (equal steps) after enlarging, away from the borders
    const ramp: ImageTensor = { width: 8, height: 2, data: Float32Array.from({ length: 48 }, (_, i) => (i % 8) / 8) }
    const big = resizeImage(ramp, 16, 2).data.slice(0, 16)
    for (let x = 2; x < 13; x++) assert.ok(Math.abs(big[x + 1] - big[x] - 1 / 16) < 1e-6)
  })
})
