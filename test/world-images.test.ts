import { fixtureOrSkip, fixtures } from './fixtures.js'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { detectFaces } from '../guides/face.js'
import { UserError } from '../src/errors.js'
import { saveImage, type ImageTensor } from '../src/image/image.js'
import { buildWorldFolder } from '../src/world/models.js'
import { drawnFaces, faceSquare, folderFaces } from '../src/world/world.js'


describe('demo world from a folder of images', () => {
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
    assert.ok(existsSync(files.lcmUnet))
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
    const findFace = async (image: ImageTensor) => (await detectFaces(image))[0]?.box
    const faces = await folderFaces(images, 128, findFace)
    assert.deepEqual(faces.map(f => f.name), ['astronaut', 'biden', 'obama'])
    // each crop shows one face, large and near the middle
    for (const face of faces) {
      const found = await detectFaces({ data: face.pixels, width: 128, height: 128 })
      assert.ok(found.length >= 1, face.name)
      const { x, y, width, height } = found[0].box
      assert.ok(width > 40 && Math.abs(x + width / 2 - 64) < 24 && Math.abs(y + height / 2 - 64) < 32, `${face.name}: ${JSON.stringify(found[0].box)}`)
    }
    const { world } = await buildWorldFolder(join(dir, 'fixture-world'), { images, findFace, settings: { size: 128 } })
    assert.ok(world.rank >= 2 && world.explainedVariance >= 0.9)
  })

  it('crops a square about a face box, clipped to the image', () => {
    assert.deepEqual(faceSquare({ x: 100, y: 100, width: 50, height: 60 }, { width: 400, height: 300 }), { x: 71, y: 70, width: 108, height: 108 })
    assert.deepEqual(faceSquare({ x: 0, y: 0, width: 50, height: 60 }, { width: 400, height: 300 }), { x: 0, y: 0, width: 108, height: 108 })
    assert.deepEqual(faceSquare({ x: 10, y: 10, width: 300, height: 300 }, { width: 400, height: 300 }), { x: 10, y: 0, width: 300, height: 300 })
  })
})
