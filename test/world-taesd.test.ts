// The demo world on SDXL's latent space: the real TAESDXL encoder as its codec and the real decoder as its
// decoders (`world build --codec taesd --taesd DIR`). Needs ../shared/fixtures/taesd; skips where absent.
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fixtureOrSkip } from './fixtures.js'
import { UserError } from '../src/errors.js'
import { cachedTaesd } from '../src/diffusion/taesd.js'
import { saveImage } from '../src/image/image.js'
import { closeSessions, openSession, ort } from '../src/onnx/session.js'
import { VAE_SCALING } from '../src/world/codec.js'
import { buildWorldFolder, readTaesd } from '../src/world/models.js'
import { componentLatent, drawnFaces, parseWorld, placeLatent, type DemoWorld } from '../src/world/world.js'

const SIZE = 128

describe('demo world with the TAESDXL codec', function () {
  this.timeout(120000)
  let dir: string
  let taesdDir: string
  let world: DemoWorld
  before(async function () {
    taesdDir = fixtureOrSkip(this, 'taesd')
    dir = await mkdtemp(join(tmpdir(), 'lookahead-world-taesd-'))
    const images = join(dir, 'faces')
    await mkdir(images)
    for (const face of drawnFaces(SIZE).slice(0, 3)) await saveImage({ data: face.pixels, width: SIZE, height: SIZE }, join(images, `${face.name}.png`))
    ;({ world } = await buildWorldFolder(join(dir, 'world'), { images, taesd: await readTaesd(taesdDir), settings: { size: SIZE, lcmSteps: 20 } }))
  })
  after(async () => { await closeSessions(); if (dir) await rm(dir, { recursive: true, force: true }) })

  const tensor = (data: Float32Array | Float64Array, dims: number[]) => new ort.Tensor('float32', Float32Array.from(data), dims)

  it('says its codec in world.json and holds SDXL latents 4×(S/8)²', async () => {
    const saved = parseWorld(await readFile(join(dir, 'world', 'world.json'), 'utf8'), 'world.json')
    assert.equal(saved.codecKind, 'taesd')
    assert.equal(saved.dimension, 4 * (SIZE / 8) ** 2)
  })

  it('decodes with the real TAESDXL decoder, to [-1,1]', async () => {
    const latent = componentLatent(world, 0)
    const n = SIZE / 8
    const decoded = (await (await openSession(join(dir, 'world', 'taesdxl_decoder', 'model.onnx'))).run({ latent_sample: tensor(latent, [1, 4, n, n]) })).sample.data as Float32Array
    const raw = (await (await openSession(await cachedTaesd(join(taesdDir, 'taesdxl_decoder.safetensors'), 'decoder', join(dir, 'cache')))).run({ latent_sample: tensor(latent, [1, 4, n, n]) })).sample.data as Float32Array
    let worst = 0
    for (let i = 0; i < raw.length; i++) worst = Math.max(worst, Math.abs(decoded[i] - (2 * raw[i] - 1)))
    assert.ok(worst < 1e-4, `largest difference to the raw decoder: ${worst}`)
    // the centre of ada's unshifted component (a TAESD round trip, through the rank-r subspace) decodes to ada's
    // face, not to the others'
    const psnr = (face: Float32Array) => 10 * Math.log10(4 / (face.reduce((s, v, i) => s + (v - decoded[i]) ** 2, 0) / face.length))
    const [ada, ...others] = drawnFaces(SIZE).slice(0, 3).map(f => psnr(f.pixels))
    assert.ok(ada > 18 && others.every(p => p < ada - 3), `round trip ${ada.toFixed(1)} dB; to the other faces ${others.map(p => p.toFixed(1))} dB`)
  })

  it('places a face, encoded by the folder\'s vae_encoder, on its own identity', async () => {
    const encoder = await openSession(join(dir, 'world', 'vae_encoder', 'model.onnx'))
    for (const [identity, face] of drawnFaces(SIZE).slice(0, 3).entries()) {
      const out = (await encoder.run({ sample: tensor(face.pixels, [1, 3, SIZE, SIZE]) })).latent_parameters.data as Float32Array
      const latent = Float64Array.from(out.subarray(0, world.dimension), v => v * VAE_SCALING)
      assert.equal(placeLatent(world, latent).identity, identity)
    }
  })

  it('refuses a missing TAESD path with one clear error', async () => {
    await assert.rejects(readTaesd(join(dir, 'absent')), (e: Error) => e instanceof UserError && /no such file or folder/.test(e.message))
    await assert.rejects(readTaesd(dir), (e: Error) => e instanceof UserError && /taesdxl_encoder.safetensors is missing/.test(e.message))
  })
})
