import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ddimStep, ddimTimesteps, naiveX0, previousTimestep, alphaBar } from '../src/diffusion/schedulers.js'
import { GraphBuilder } from '../src/onnx/builder.js'
import { differentiate } from '../src/onnx/autodiff.js'
import { embedModel } from '../src/onnx/compose.js'
import { seededNormal } from '../src/onnx/layers.js'
import { encodeModel, readModel } from '../src/onnx/proto.js'
import { closeSessions, openSession, ort, type Session } from '../src/onnx/session.js'
import { VAE_SCALING, encodeImage } from '../src/world/codec.js'
import { chiQuantile, flowEndpoint, lift, posteriorMean, project, responsibilities } from '../src/world/mixture.js'
import { LAYOUT } from '../src/diffusion/models-folder.js'
import { WORLD_PIECES, ensureDefaultWorld, writeWorld } from '../src/world/models.js'
import { DEFAULT_WORLD_SETTINGS, buildWorld, componentLatent, drawnFaces, parseWorld, placeLatent, type DemoWorld } from '../src/world/world.js'

const distance = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, v, i) => s + (v - b[i]) ** 2, 0))

describe('demo world', function () {
  let dir: string
  let world: DemoWorld
  let unet: Session
  let lcm: Session
  let buildSeconds: number
  const rand = seededNormal(7)

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'lookahead-world-'))
    const start = performance.now()
    world = buildWorld(drawnFaces(DEFAULT_WORLD_SETTINGS.size))
    await writeWorld(world, dir)
    buildSeconds = (performance.now() - start) / 1000
    unet = await openSession(join(dir, LAYOUT.unet))
    lcm = await openSession(join(dir, LAYOUT.lcm_unet))
  })
  after(async () => {
    await closeSessions()
    await rm(dir, { recursive: true, force: true })
  })

  const shape = () => [1, 4, world.codec.latentSize, world.codec.latentSize]
  /** The SDXL UNet feeds: zero text conditioning, as the pipeline gives a world without text. */
  function feeds(x: Float32Array, t: number): Record<string, ort.Tensor> {
    const batch = x.length / world.dimension
    return {
      sample: new ort.Tensor('float32', x, [batch, ...shape().slice(1)]),
      timestep: new ort.Tensor('float32', new Float32Array([t]), []),
      encoder_hidden_states: new ort.Tensor('float32', new Float32Array(batch * 77 * 2048), [batch, 77, 2048]),
      text_embeds: new ort.Tensor('float32', new Float32Array(batch * 1280), [batch, 1280]),
      time_ids: new ort.Tensor('float32', new Float32Array(batch * 6), [batch, 6]),
    }
  }
  const eps = async (session: Session, x: Float32Array, t: number) => (await session.run(feeds(x, t))).out_sample.data as Float32Array
  /** x_t at timestep t from a clean latent. */
  const noised = (z0: ArrayLike<number>, t: number) => Float32Array.from(z0, v => Math.sqrt(alphaBar(t)) * v + Math.sqrt(1 - alphaBar(t)) * rand())
  const coordsAt = (x: Float32Array, t: number) => project(world, Float64Array.from(x, v => v / Math.sqrt(alphaBar(t)))).coords
  const sigmaAt = (t: number) => Math.sqrt((1 - alphaBar(t)) / alphaBar(t))

  it('builds the default world well under a minute, with the SDXL UNet contract', async () => {
    console.log(`      build + write: ${buildSeconds.toFixed(1)} s; ${world.components.length} components, rank ${world.rank}, explained variance ${world.explainedVariance.toFixed(3)}`)
    assert.ok(buildSeconds < 30)
    assert.equal(world.identities.length, 12)
    for (const session of [unet, lcm]) {
      assert.deepEqual(session.inputs.map(i => [i.name, i.type, i.shape]), [
        ['sample', 'float32', ['batch', 4, 32, 32]],
        ['timestep', 'float32', []],
        ['encoder_hidden_states', 'float32', ['batch', 77, 2048]],
        ['text_embeds', 'float32', ['batch', 1280]],
        ['time_ids', 'float32', ['batch', 6]],
      ])
      assert.deepEqual(session.outputs.map(o => o.name), ['out_sample'])
    }
  })

  it('is built deterministically; ensureDefaultWorld builds it where missing and keeps it where current', async () => {
    const again = await mkdtemp(join(tmpdir(), 'lookahead-world-'))
    try {
      await ensureDefaultWorld(again)
      for (const file of WORLD_PIECES.map(piece => LAYOUT[piece])) assert.ok((await readFile(join(dir, file))).equals(await readFile(join(again, file))), file)
      const written = (await stat(join(again, LAYOUT.lcm_unet))).mtimeMs
      await ensureDefaultWorld(again)
      assert.equal((await stat(join(again, LAYOUT.lcm_unet))).mtimeMs, written)
    } finally {
      await rm(again, { recursive: true, force: true })
    }
  })

  it('reads world.json back to the same subspace and components', async () => {
    const read = parseWorld(await readFile(join(dir, LAYOUT.world), 'utf8'), 'world.json')
    assert.deepEqual(read.mean, world.mean)
    assert.deepEqual(read.basis, world.basis)
    assert.deepEqual(read.coords, world.coords)
    assert.deepEqual(read.components, world.components)
    assert.deepEqual(read.identities, world.identities)
  })

  it('decodes as the inverse of the encoder on the data subspace; the VAE decoder takes latents/0.13025', async () => {
    const encoder = await openSession(join(dir, LAYOUT.vae_encoder))
    const taesd = await openSession(join(dir, LAYOUT.taesdxl_decoder))
    const vae = await openSession(join(dir, LAYOUT.vae_decoder))
    const latent = Float32Array.from(componentLatent(world, 5), (v, i) => v + 0.3 * world.basis[i * world.rank + 2])
    const image = (await taesd.run({ latent_sample: new ort.Tensor('float32', latent, shape()) })).sample
    const vaeImage = (await vae.run({ latent_sample: new ort.Tensor('float32', latent.map(v => v / VAE_SCALING), shape()) })).sample
    assert.ok(distance(image.data as Float32Array, vaeImage.data as Float32Array) < 1e-4 * Math.sqrt(image.data.length))
    const parameters = (await encoder.run({ sample: image })).latent_parameters
    const mean = (parameters.data as Float32Array).subarray(0, world.dimension).map(v => v * VAE_SCALING)
    const error = distance(mean, latent) / distance(latent, new Float32Array(latent.length))
    assert.ok(error < 1e-5, `round trip error ${error}`)
    // the ONNX encoder is the float64 one used to build the world
    const reference = encodeImage(world.codec, image.data as Float32Array)
    assert.ok(distance(reference, mean) < 1e-5 * distance(reference, new Float64Array(reference.length)))
  })

  it('unet: ε of the exact posterior mean, as the float64 reference', async () => {
    for (const t of [981, 781, 501, 21, 1]) {
      const x = noised(componentLatent(world, 17), t)
      const x0 = naiveX0(x, await eps(unet, x, t), t)
      const reference = lift(world, posteriorMean(world, coordsAt(x, t), sigmaAt(t) ** 2))
      const error = distance(x0, reference) / distance(reference, world.mean)
      assert.ok(error < 1e-4, `t=${t}: relative error ${error}`)
    }
  })

  it('lcm_unet: its one-step x0 is the probability-flow endpoint (200 steps; vs a 4000-step solve)', async function () {
    const errors: string[] = []
    const { lcmSteps, sigmaMin } = world.settings
    for (const t of [981, 781, 501, 261, 21]) {
      const x = noised(componentLatent(world, 40), t)
      const x0 = naiveX0(x, await eps(lcm, x, t), t)
      const p = coordsAt(x, t)
      const solve = (steps: number, order: 1 | 2) => lift(world, flowEndpoint(world, p, sigmaAt(t), steps, sigmaMin, order))
      const fine = solve(4000, 2)
      const error = (latent: ArrayLike<number>) => distance(latent, fine) / distance(fine, world.mean)
      const float32Error = distance(x0, solve(lcmSteps, 2)) / distance(fine, world.mean)
      errors.push(`t=${t}: ${error(x0).toExponential(1)} (float32 graph vs float64: ${float32Error.toExponential(0)}; ` +
        `DDIM ${lcmSteps} steps: ${error(solve(lcmSteps, 1)).toExponential(1)}, DDIM 50: ${error(solve(50, 1)).toExponential(1)})`)
      assert.ok(float32Error < 1e-4, `t=${t}: float32 graph vs float64 ${lcmSteps}-step solve ${float32Error}`)
      assert.ok(error(x0) < 3e-3, `t=${t}: vs 4000-step solve ${error(x0)}`)
    }
    console.log(`      relative endpoint error vs a 4000-step float64 solve:\n        ${errors.join('\n        ')}`)
  })

  it('x0 preview at an early step is a blurry blend; the LCM preview is sharp and predicts the 50-step DDIM result', async () => {
    const taesd = await openSession(join(dir, LAYOUT.taesdxl_decoder))
    const size = world.codec.imageSize
    /** Mean squared difference of horizontally adjacent pixels of the decoded image: a sharpness measure. */
    const sharpness = async (latent: Float32Array) => {
      const image = (await taesd.run({ latent_sample: new ort.Tensor('float32', latent, shape()) })).sample.data as Float32Array
      let sum = 0
      for (let i = 0; i < image.length; i++) if (i % size !== size - 1) sum += (image[i + 1] - image[i]) ** 2
      return sum / image.length
    }
    const steps = 50
    const previewStep = 10
    const seeds = 8
    const mean = { x0Distance: 0, lcmDistance: 0, blend: 0, x0Sharpness: 0, lcmSharpness: 0, offSubspace: 0 }
    let sameIdentity = 0
    for (let seed = 0; seed < seeds; seed++) {
      const noise = seededNormal(100 + seed)
      let x: Float32Array = Float32Array.from({ length: world.dimension }, () => noise())
      let previews: { x0: Float32Array; lcm: Float32Array; blend: number } | undefined
      for (const [i, t] of ddimTimesteps(steps).entries()) {
        const e = await eps(unet, x, t)
        if (i === previewStep) {
          // the x0 preview is Σ_k w_k·(component k's Wiener estimate): 1/Σw² is how many components it blends
          const w = responsibilities(world, coordsAt(x, t), sigmaAt(t) ** 2)
          previews = { x0: naiveX0(x, e, t), lcm: naiveX0(x, await eps(lcm, x, t), t), blend: 1 / w.reduce((s, v) => s + v * v, 0) }
        }
        x = ddimStep(x, e, t, previousTimestep(t, steps))
      }
      // DDIM ends at ᾱ[0] < 1 (set_alpha_to_one = false): the last latent keeps noise of σ ≈ 0.03 off the data
      // subspace, so previews are compared with its part in the subspace.
      const final = Float32Array.from(lift(world, coordsAt(x, 0)))
      mean.offSubspace += project(world, x).offSubspace / distance(final, world.mean) / seeds
      const scale = distance(final, world.mean)
      const finalSharpness = await sharpness(final)
      mean.x0Distance += distance(previews!.x0, final) / scale / seeds
      mean.lcmDistance += distance(previews!.lcm, final) / scale / seeds
      mean.blend += previews!.blend / seeds
      mean.x0Sharpness += (await sharpness(previews!.x0)) / finalSharpness / seeds
      mean.lcmSharpness += (await sharpness(previews!.lcm)) / finalSharpness / seeds
      if (placeLatent(world, previews!.lcm).identity === placeLatent(world, final).identity) sameIdentity++
    }
    console.log(`      step ${previewStep}/${steps}, ${seeds} seeds: relative distance to the final latent x0 ${mean.x0Distance.toFixed(3)}, ` +
      `lcm ${mean.lcmDistance.toFixed(4)}; sharpness / final's: x0 ${mean.x0Sharpness.toFixed(2)}, lcm ${mean.lcmSharpness.toFixed(2)}; ` +
      `x0 blends ${mean.blend.toFixed(1)} components; LCM preview's identity = final's in ${sameIdentity}/${seeds}; ` +
      `the final latent's noise off the subspace: ${mean.offSubspace.toFixed(3)}`)
    assert.ok(mean.lcmDistance < 0.03, `lcm preview distance ${mean.lcmDistance}`)
    assert.ok(mean.x0Distance > 4 * mean.lcmDistance)
    assert.ok(mean.x0Sharpness < 0.9 && mean.lcmSharpness > 0.95)
    assert.ok(mean.blend > 2)
    assert.equal(sameIdentity, seeds)
  })

  it("both UNets are differentiated by the project's autodiff (checked by finite differences)", async () => {
    for (const file of [LAYOUT.unet, LAYOUT.lcm_unet]) {
      // loss = Σ c ⊙ ε(x, t) with fixed random weights c, zero text conditioning
      const g = new GraphBuilder('loss', 17)
      const x = g.input('x', 'float32', shape())
      const t = g.input('t', 'float32', [])
      const zeros = (dims: number[]) => g.constant(new Float32Array(dims.reduce((a, b) => a * b, 1)), dims)
      const out = embedModel(g, await readModel(join(dir, file)), { sample: x, timestep: t, encoder_hidden_states: zeros([1, 77, 2048]), text_embeds: zeros([1, 1280]), time_ids: zeros([1, 6]) }, 'unet/')
      const weights = g.constant(Float32Array.from({ length: world.dimension }, rand), shape())
      g.outputAs(g.op('ReduceSum', [g.op('Mul', [out.out_sample, weights])], { keepdims: 0 }), 'loss', 'float32', [])
      const forward = g.build()
      const gradient = differentiate({ model: forward, dir }, { wrt: ['x'], of: 'loss' }).model
      const quiet = { logSeverityLevel: 3 as const } // the zero text inputs are unused initializers here
      const forwardSession = await ort.InferenceSession.create(encodeModel(forward), quiet)
      const gradientSession = await ort.InferenceSession.create(encodeModel(gradient), quiet)
      for (const step of [781, 501]) {
        const point = noised(componentLatent(world, 60), step)
        const feedsAt = (v: Float32Array) => ({ x: new ort.Tensor('float32', v, shape()), t: new ort.Tensor('float32', new Float32Array([step]), []) })
        const grad = (await gradientSession.run(feedsAt(point))).x_grad.data as Float32Array
        const direction = Float64Array.from({ length: world.dimension }, rand)
        const h = 1e-2
        const loss = async (sign: number) => (await forwardSession.run(feedsAt(point.map((v, i) => v + sign * h * direction[i])))).loss.data[0] as number
        const numeric = ((await loss(1)) - (await loss(-1))) / (2 * h)
        const analytic = grad.reduce((s, v, i) => s + v * direction[i], 0)
        assert.ok(Math.abs(numeric - analytic) < 1e-3 * Math.abs(numeric), `${file} t=${step}: ${analytic} vs finite differences ${numeric}`)
      }
      await forwardSession.release()
      await gradientSession.release()
    }
  })

  it('places a latent: nearest component, identity, Mahalanobis distance, off-subspace norm', () => {
    const centre = componentLatent(world, 33)
    const placed = placeLatent(world, centre)
    assert.equal(placed.component, 33)
    assert.equal(placed.name, world.identities[world.components[33].identity])
    assert.ok(placed.mahalanobis < 1e-9 && placed.typical && placed.offSubspace < 1e-9)
    // 10 standard deviations along the last principal direction: off the distribution
    const far = centre.map((v, i) => v + 10 * Math.sqrt(world.variances[world.rank - 1]) * world.basis[i * world.rank + world.rank - 1])
    assert.ok(!placeLatent(world, far).typical)
    const off = centre.map(v => v + 0.01)
    assert.ok(placeLatent(world, off).offSubspace > 0.1)
  })

  it('χ quantiles: exact for 2 degrees of freedom, the χ² table for 11', () => {
    assert.ok(Math.abs(chiQuantile(2, 0.999) - Math.sqrt(-2 * Math.log(0.001))) < 1e-9)
    // χ²_{11}(0.999) = 31.264 (standard tables)
    assert.ok(Math.abs(chiQuantile(11, 0.999) ** 2 - 31.264) < 1e-3)
  })
})
