import { fixtureOrSkip, fixtures } from './fixtures.js'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { detectFaces } from '../guides/face.js'
import { UserError } from '../src/errors.js'
import { loadImage, saveImage, type ImageTensor } from '../src/image/image.js'
import { buildWorldFolder } from '../src/world/models.js'
import { drawnFaces, faceSquare, folderFaces } from '../src/world/world.js'


const findFaces = async (image: ImageTensor) => (await detectFaces(image)).map(face => face.box)

describe('demo world from a folder of images', function () {
  this.timeout(60000)
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-world-images-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('reads every image, named by file, resized to the world size, and builds the world', async () => {
    const images = join(dir, 'faces')
    await mkdir(images)
    const faces = drawnFaces(96).slice(0, 4)
    for (const face of faces) await saveImage({ data: face.pixels, width: 96, height: 96 }, join(images, `${face.name}.png`))
    const read = await folderFaces(images, 64)
    assert.deepEqual(read.map(f => f.name), faces.map(f => f.name))
    assert.ok(read.every(f => f.pixels.length === 3 * 64 * 64))
    const { world, files } = await buildWorldFolder(join(dir, 'world'), { images, settings: { size: 64 } })
    assert.equal(world.components.length, 4 * 10)
    // the default rank is at least identities − 1 and keeps 90% of the variance
    assert.ok(world.rank >= 3 && world.explainedVariance >= 0.9)
    assert.deepEqual((await readdir(join(dir, 'world'))).sort(), ['lcm_unet', 'taesdxl_decoder', 'unet', 'vae_decoder', 'vae_encoder', 'world.json'])
    assert.ok(existsSync(files.lcm_unet))
  })

  it('refuses a folder with fewer than two images, and a missing folder, with a UserError', async () => {
    const one = join(dir, 'one')
    await mkdir(one)
    await saveImage({ data: drawnFaces(32)[0].pixels, width: 32, height: 32 }, join(one, 'a.png'))
    await assert.rejects(folderFaces(one, 32), (e: Error) => e instanceof UserError && /at least 2/.test(e.message))
    await assert.rejects(folderFaces(join(dir, 'absent'), 32), (e: Error) => e instanceof UserError && /cannot read/.test(e.message))
  })

  it('builds from the fixture photos (without obama2.jpg, the experiment\'s reference), cropped about their faces', async function () {
    fixtureOrSkip(this, 'faces')
    const images = join(dir, 'fixture-faces')
    await mkdir(images)
    for (const file of ['obama.jpg', 'biden.jpg', 'astronaut.png']) await symlink(join(fixtures, 'faces', file), join(images, file))
    const faces = await folderFaces(images, 128, findFaces)
    assert.deepEqual(faces.map(f => f.name), ['astronaut', 'biden', 'obama'])
    // each crop shows one face, large and near the middle
    for (const face of faces) {
      const found = await detectFaces({ data: face.pixels, width: 128, height: 128 })
      assert.ok(found.length >= 1, face.name)
      const { x, y, width, height } = found[0].box
      assert.ok(width > 40 && Math.abs(x + width / 2 - 64) < 24 && Math.abs(y + height / 2 - 64) < 32, `${face.name}: ${JSON.stringify(found[0].box)}`)
    }
    const { world } = await buildWorldFolder(join(dir, 'fixture-world'), { images, findFaces, settings: { size: 128 } })
    assert.ok(world.rank >= 2 && world.explainedVariance >= 0.9)
  })

  it('takes every face of a group photo as an identity, left to right (--every-face)', async function () {
    fixtureOrSkip(this, 'faces')
    const side = 192
    const photos = ['astronaut.png', 'obama.jpg']
    const [left, right] = await Promise.all(photos.map(file => loadImage(join(fixtures, 'faces', file), { size: side, fit: 'cover' })))
    // the two photos side by side, the astronaut on the left, on a black border
    const pad = 32
    const [width, height] = [2 * side + 2 * pad, side + 2 * pad]
    const group = new Float32Array(3 * width * height).fill(-1)
    for (const [photo, x0] of [[left, pad], [right, pad + side]] as const) {
      for (let c = 0; c < 3; c++) for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) group[(c * height + y + pad) * width + x0 + x] = photo.data[(c * side + y) * side + x]
    }
    const images = join(dir, 'group')
    await mkdir(images)
    await saveImage({ data: group, width, height }, join(images, 'pair.png'))
    await symlink(join(fixtures, 'faces', 'obama2.jpg'), join(images, 'single.jpg'))
    const every = await folderFaces(images, 96, findFaces, true)
    assert.deepEqual(every.map(f => f.name), ['pair-1', 'pair-2', 'single'])
    // the left crop is the astronaut's face: nearer the astronaut's own crop than obama's, and the right one obama's
    const own = await folderFaces(join(fixtures, 'faces'), 96, findFaces)
    const crop = (name: string) => own.find(f => f.name === name)!.pixels
    const distance = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0)
    assert.ok(distance(every[0].pixels, crop('astronaut')) < distance(every[0].pixels, crop('obama')))
    assert.ok(distance(every[1].pixels, crop('obama')) < distance(every[1].pixels, crop('astronaut')))
    assert.deepEqual((await folderFaces(images, 96, findFaces)).map(f => f.name), ['pair', 'single'])
  })

  it('crops a square about a face box, clipped to the image', () => {
    assert.deepEqual(faceSquare({ x: 100, y: 100, width: 50, height: 60 }, { width: 400, height: 300 }), { x: 71, y: 70, width: 108, height: 108 })
    assert.deepEqual(faceSquare({ x: 0, y: 0, width: 50, height: 60 }, { width: 400, height: 300 }), { x: 0, y: 0, width: 108, height: 108 })
    assert.deepEqual(faceSquare({ x: 10, y: 10, width: 300, height: 300 }, { width: 400, height: 300 }), { x: 10, y: 0, width: 300, height: 300 })
  })
})
