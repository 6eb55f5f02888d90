import { fixtureOrSkip, fixtures } from './fixtures.js'
import assert from 'node:assert/strict'
import { differentiate } from '../src/onnx/autodiff.js'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { ClipGuide } from '../guides/clip.js'
import { combineGuides, parseLossSpec, type Guide, type Size } from '../guides/guide.js'
import { detectOptions, IdentityGuide } from '../guides/id.js'
import { GUIDE_NAMES, guideFromSpec } from '../guides/index.js'
import { LpipsGuide } from '../guides/lpips.js'
import { IdentityMetric, clipTextScore } from '../guides/metric.js'
import { PerceptualGuide } from '../guides/perceptual.js'
import { LAYOUT, ModelsFolder } from '../src/diffusion/models-folder.js'
import { UserError } from '../src/errors.js'
import { loadImage, resizeImage, type ImageTensor } from '../src/image/image.js'
import { GraphBuilder } from '../src/onnx/builder.js'
import { batchNorm, conv2d, gelu, layerNorm, linear, prelu, randomWeight, seededNormal } from '../src/onnx/layers.js'
import { writeModel, type LoadedModel } from '../src/onnx/proto.js'
import { closeSessions, ort } from '../src/onnx/session.js'

const faces = join(fixtures, 'faces')

/** A smooth image drawn by code; `phase` makes different images. */
function pattern(width: number, height: number, phase: number): ImageTensor {
  const data = new Float32Array(3 * width * height)
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) data[(c * height + y) * width + x] = 0.8 * Math.sin(0.21 * x * (1 + 0.3 * phase) + 1.3 * c + phase) * Math.cos(0.17 * y - c * phase)
  return { data, width, height }
}

// --- stand-ins for the user exports, with the real exports' inputs, outputs and op patterns ---

/** insightface-like ArcFace: 'input.1' [N,3,112,112] → conv / BN / PRelu stages → Gemm → 512-d (here 32-d). */
function arcfaceStandIn() {
  const g = new GraphBuilder('arcface', 13)
  const r = seededNormal(11)
  let x = g.input('input.1', 'float32', ['N', 3, 112, 112])
  x = prelu(g, batchNorm(g, conv2d(g, x, r, 3, 8, { kernel: 4, stride: 4, pad: 0 }), r, 8), r, 8)
  x = prelu(g, batchNorm(g, conv2d(g, x, r, 8, 16, { kernel: 3, stride: 2 }), r, 16), r, 16)
  x = g.op('Flatten', [g.op('AveragePool', [x], { kernel_shape: [14, 14], strides: [14, 14] })])
  g.outputAs(linear(g, x, r, 16, 32, { gemm: true }), '683', 'float32', ['N', 32])
  return g.build()
}

/** LPIPS-like: in0, in1 [N,3,H,W] in [-1,1] → shared conv trunk → unit-normalised features → squared difference → mean. */
function lpipsStandIn() {
  const g = new GraphBuilder('lpips', 17)
  const r = seededNormal(12)
  const weight = randomWeight(g, r, [8, 3, 3, 3], 0.3)
  const bias = randomWeight(g, r, [8], 0.1)
  const trunk = (x: string) => g.op('MaxPool', [g.op('Relu', [g.op('Conv', [x, weight, bias], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] })])], { kernel_shape: [2, 2], strides: [2, 2] })
  const unit = (f: string) => g.op('Div', [f, g.op('Add', [g.op('Sqrt', [g.op('ReduceSum', [g.op('Mul', [f, f]), g.ints([1])], { keepdims: 1 })]), g.constant([1e-10], [])])])
  const a = unit(trunk(g.input('in0', 'float32', ['N', 3, 'H', 'W'])))
  const b = unit(trunk(g.input('in1', 'float32', ['N', 3, 'H', 'W'])))
  const d = g.op('Sub', [a, b])
  g.outputAs(g.op('ReduceMean', [g.op('ReduceSum', [g.op('Mul', [d, d]), g.ints([1])], { keepdims: 1 })], { axes: [2, 3], keepdims: 1 }), 'distance', 'float32', ['N', 1, 1, 1])
  return g.build()
}

/** CLIP-like vision tower: pixel_values [N,3,224,224] → 32×32 patches → LayerNorm, GELU MLP → class token → image_embeds. */
function clipVisionStandIn() {
  const g = new GraphBuilder('vision', 17)
  const r = seededNormal(13)
  const patches = conv2d(g, g.input('pixel_values', 'float32', ['N', 3, 224, 224]), r, 3, 16, { kernel: 32, stride: 32, pad: 0, bias: false })
  let tokens = g.op('Transpose', [g.op('Reshape', [patches, g.ints([0, 16, 49])])], { perm: [0, 2, 1] })
  tokens = layerNorm(g, tokens, r, 16)
  tokens = g.op('Add', [tokens, linear(g, gelu(g, linear(g, tokens, r, 16, 32)), r, 32, 16)])
  const first = g.op('Gather', [tokens, g.constant([0], [], 'int64')], { axis: 1 })
  g.outputAs(linear(g, layerNorm(g, first, r, 16), r, 16, 8, { bias: false }), 'image_embeds', 'float32', ['N', 8])
  return g.build()
}

/** CLIP-like text tower: input_ids int64 [N,S] → token embeddings → mean → text_embeds. */
function clipTextStandIn(vocabulary: number) {
  const g = new GraphBuilder('text', 17)
  const r = seededNormal(14)
  const ids = g.input('input_ids', 'int64', ['N', 'S'])
  const table = g.constant(Float32Array.from({ length: vocabulary * 16 }, () => r()), [vocabulary, 16])
  const mean = g.op('ReduceMean', [g.op('Gather', [table, ids], { axis: 0 })], { axes: [1], keepdims: 0 })
  g.outputAs(linear(g, mean, r, 16, 8, { bias: false }), 'text_embeds', 'float32', ['N', 8])
  return g.build()
}

/** A byte-level vocabulary without merges: enough for the CLIP tokenizer to run. */
async function writeTinyTokenizer(dir: string): Promise<number> {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)
  let extra = 0
  const chars = Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : 256 + extra++))
  const tokens = [...chars, ...chars.map(c => `${c}</w>`), '<|startoftext|>', '<|endoftext|>']
  await writeFile(join(dir, 'vocab.json'), JSON.stringify(Object.fromEntries(tokens.map((t, i) => [t, i]))))
  await writeFile(join(dir, 'merges.txt'), '#version: 0.2\n')
  return tokens.length
}

// --- running a guide's fragment, its gradient, and descent ---


/** A model: image → loss (and, with `gradient`, image_grad), opened as a session. */
async function lossSession(guide: Guide, size: Size, dir: string, gradient = false, opset = 17) {
  const g = new GraphBuilder('loss', opset)
  const image = g.input('image', 'float32', [1, 3, size.height, size.width])
  g.outputAs(guide.lossFragment(g, image, size), 'loss', 'float32', [])
  let loaded: LoadedModel = { model: g.build(), dir }
  if (gradient) loaded = differentiate(loaded, { wrt: ['image'], of: 'loss' })
  const path = join(dir, `${guide.name}-${gradient ? 'grad' : 'loss'}-${size.width}-${opset}.onnx`)
  await writeModel(loaded, path)
  const session = await ort.InferenceSession.create(path)
  return async (data: Float32Array, feeds: Record<string, ort.Tensor>) => {
    const out = await session.run({ image: new ort.Tensor('float32', data, [1, 3, size.height, size.width]), ...feeds })
    return { loss: (out.loss.data as Float32Array)[0], grad: out.image_grad?.data as Float32Array | undefined }
  }
}

/**
 * Directional derivatives along unit directions v: ⟨∇L, v⟩ against (L(x + hv) − L(x − hv)) / 2h, along the
 * gradient itself and along two random directions, each error relative to ‖∇L‖ (the largest directional
 * derivative there is). Float32 losses and ReLU/max-pool kinks limit the agreement to well under a percent.
 */
async function checkGradient(run: Awaited<ReturnType<typeof lossSession>>, image: ImageTensor, feeds: Record<string, ort.Tensor>, h = 1e-2) {
  const { grad } = await run(image.data, feeds)
  assert.ok(grad, 'the gradient model outputs image_grad')
  const length = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0))
  const norm = length(grad)
  assert.ok(norm > 0 && Number.isFinite(norm), `gradient norm ${norm}`)
  const r = seededNormal(5)
  const random = () => {
    const v = Float32Array.from(image.data, () => r())
    const l = length(v)
    return v.map(x => x / l)
  }
  const errors = []
  for (const v of [grad.map(x => x / norm), random(), random()]) {
    const step = (sign: number) => Float32Array.from(image.data, (x, k) => x + sign * h * v[k])
    const numeric = ((await run(step(1), feeds)).loss - (await run(step(-1), feeds)).loss) / (2 * h)
    const analytic = grad.reduce((s, gk, k) => s + gk * v[k], 0)
    errors.push(Math.abs(numeric - analytic) / norm)
  }
  if (process.env.VERBOSE) console.log(`      relative errors ${errors.map(e => e.toExponential(2))}`)
  assert.ok(Math.max(...errors) < 1e-2, `relative errors ${errors.map(e => e.toExponential(2))}`)
}

/** Normalised gradient steps on the image itself: the loss must go down. */
async function descend(run: Awaited<ReturnType<typeof lossSession>>, image: ImageTensor, feeds: Record<string, ort.Tensor>, steps = 8, rate = 0.02) {
  const x = Float32Array.from(image.data)
  const losses: number[] = []
  for (let i = 0; i <= steps; i++) {
    const { loss, grad } = await run(x, feeds)
    losses.push(loss)
    if (i === steps) break
    const norm = Math.sqrt(grad!.reduce((s, v) => s + v * v, 0) / grad!.length)
    for (let k = 0; k < x.length; k++) x[k] -= (rate * grad![k]) / norm
  }
  if (process.env.VERBOSE) console.log(`      losses ${losses.map(l => l.toFixed(4)).join(' ')}`)
  return losses
}

describe('guides', function () {
  let dir: string
  let folder: ModelsFolder
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lookahead-guides-'))
    const models = join(dir, 'models')
    // each where the models folder's layout says (writeModel makes the folders)
    await writeModel({ model: arcfaceStandIn(), dir }, join(models, LAYOUT.arcface))
    await writeModel({ model: lpipsStandIn(), dir }, join(models, LAYOUT.lpips_alex))
    await writeModel({ model: clipVisionStandIn(), dir }, join(models, LAYOUT.clip_vision))
    const vocabulary = await writeTinyTokenizer(join(models, LAYOUT.clip))
    await writeModel({ model: clipTextStandIn(vocabulary), dir }, join(models, LAYOUT.clip_text))
    folder = await ModelsFolder.at(models)
  })
  after(async () => {
    await closeSessions()
    await rm(dir, { recursive: true, force: true })
  })

  describe('--loss specs', () => {
    it('parses names and weights', () => {
      assert.deepEqual(parseLossSpec('id=1,clip=0.5'), [{ name: 'id', weight: 1 }, { name: 'clip', weight: 0.5 }])
      assert.deepEqual(parseLossSpec(' lpips '), [{ name: 'lpips', weight: 1 }])
      assert.deepEqual(parseLossSpec('perceptual=2e-1'), [{ name: 'perceptual', weight: 0.2 }])
    })
    for (const bad of ['', 'id=', 'id=-1', 'id=0', 'foo', 'id,id=2', 'id=1;clip=2']) {
      it(`refuses "${bad}" with a one-line error`, () => {
        assert.throws(() => parseLossSpec(bad), (e: Error) => e instanceof UserError && !e.message.includes('\n'))
      })
    }
  })

  it('asks the models folder for its networks: a missing one is named by its layout path, with how `models` says to make it', async () => {
    const empty = join(dir, 'empty')
    await mkdir(empty)
    const emptyFolder = await ModelsFolder.at(empty)
    const image = pattern(8, 8, 0)
    const missing = [
      ['lpips_alex', () => new LpipsGuide({ folder: emptyFolder }).prepare({ image }), /LPIPS alex or vgg/],
      ['clip_vision', () => new ClipGuide({ folder: emptyFolder }).prepare({ image }), /transformers\.js CLIP export/],
      ['arcface', () => new IdentityGuide({ network: 'arcface', folder: emptyFolder }).prepare({ image }), /w600k_r50/],
    ] as const
    for (const [piece, prepare, howTo] of missing) {
      await assert.rejects(prepare(), (error: Error) => error instanceof UserError && error.message.startsWith(`no ${LAYOUT[piece]} in ${empty}`) && howTo.test(error.message), piece)
    }
    // the CLIP text target needs the text model beside the vision model
    await writeModel({ model: clipVisionStandIn(), dir }, join(empty, LAYOUT.clip_vision))
    await assert.rejects(new ClipGuide({ folder: emptyFolder }).prepare({ text: 'a face' }), (error: Error) => error.message.startsWith(`no ${LAYOUT.clip_text} in ${empty}`))
    // the SCRFD detector where the layout puts it, else face-api's
    assert.deepEqual(await detectOptions(emptyFolder), {})
    await mkdir(dirname(join(empty, LAYOUT.scrfd)), { recursive: true })
    await writeFile(join(empty, LAYOUT.scrfd), '')
    assert.deepEqual(await detectOptions(emptyFolder), { scrfd: join(empty, LAYOUT.scrfd) })
  })

  describe('lpips (stand-in export)', () => {
    const size = { height: 32, width: 40 }
    it('is zero on the reference and positive elsewhere', async () => {
      const reference = pattern(40, 32, 0)
      const guide = new LpipsGuide({ folder })
      await guide.prepare({ image: reference })
      const run = await lossSession(guide, size, dir)
      assert.ok(Math.abs((await run(reference.data, {})).loss) < 1e-6)
      assert.ok((await run(pattern(40, 32, 1).data, {})).loss > 0.01)
    })
    it('has the gradient finite differences give, and descent lowers it', async function () {
      const guide = new LpipsGuide({ folder })
      await guide.prepare({ image: pattern(80, 64, 0) }) // resized to the preview's size
      const run = await lossSession(guide, size, dir, true)
      await checkGradient(run, pattern(40, 32, 1), {})
      const losses = await descend(run, pattern(40, 32, 1), {})
      assert.ok(losses.at(-1)! < 0.7 * losses[0], `losses ${losses.map(l => l.toFixed(4))}`)
    })
    it('says what is missing without a models folder', async () => {
      await assert.rejects(new LpipsGuide({}).prepare({ image: pattern(8, 8, 0) }), UserError)
    })
  })

  describe('clip (stand-in export, transformers.js layout)', () => {
    const size = { height: 48, width: 64 }
    it('is zero against its own image, positive against another, and reads text targets', async () => {
      const reference = pattern(64, 48, 0)
      const guide = new ClipGuide({ folder })
      await guide.prepare({ image: reference })
      const run = await lossSession(guide, size, dir)
      assert.ok(Math.abs((await run(reference.data, {})).loss) < 1e-5)
      assert.ok((await run(pattern(64, 48, 2).data, {})).loss > 1e-3)
      const text = new ClipGuide({ folder })
      await text.prepare({ text: 'a photo of a face' })
      const textRun = await lossSession(text, size, dir)
      const loss = (await textRun(reference.data, {})).loss
      assert.ok(loss >= 0 && loss <= 2)
      const score = await clipTextScore(folder, reference, 'a photo of a face')
      assert.ok(Math.abs(score! - 100 * (1 - loss)) < 1e-3, 'the metric agrees with the loss')
    })
    it('has the gradient finite differences give, and descent lowers it', async function () {
      const guide = new ClipGuide({ folder })
      await guide.prepare({ image: pattern(64, 48, 0) })
      const run = await lossSession(guide, size, dir, true)
      await checkGradient(run, pattern(64, 48, 2), {})
      const losses = await descend(run, pattern(64, 48, 2), {})
      assert.ok(losses.at(-1)! < 0.7 * losses[0], `losses ${losses.map(l => l.toFixed(4))}`)
    })
    it('has the right gradient through the pooled resize of a large preview', async function () {
      const guide = new ClipGuide({ folder })
      await guide.prepare({ image: pattern(160, 120, 0) })
      const large = { height: 460, width: 520 } // shrinks by more than 2: average pool, then bilinear
      await checkGradient(await lossSession(guide, large, dir, true), pattern(large.width, large.height, 2), {})
    })
  })

  it('combines weighted guides into one loss', async () => {
    const reference = pattern(40, 32, 0)
    const size = { height: 32, width: 40 }
    const lpips = new LpipsGuide({ folder })
    const clip = new ClipGuide({ folder })
    const both = combineGuides([{ guide: lpips, weight: 1 }, { guide: clip, weight: 0.5 }])
    assert.equal(both.name, 'lpips=1,clip=0.5')
    await both.prepare({ image: reference })
    const other = pattern(40, 32, 3).data
    const combined = (await (await lossSession(both, size, dir))(other, {})).loss
    const parts = [(await (await lossSession(lpips, size, dir))(other, {})).loss, (await (await lossSession(clip, size, dir))(other, {})).loss]
    assert.ok(Math.abs(combined - (parts[0] + 0.5 * parts[1])) < 1e-5)
    assert.equal(guideFromSpec('clip', { folder }).name, 'clip')
    assert.equal(guideFromSpec('id=1,clip=0.5', { folder }).name, 'id=1,clip=0.5')
  })

  describe('face guides', () => {
    it('refuses a reference without a face', async () => {
      await assert.rejects(new IdentityGuide({ network: 'faceapi' }).prepare({ image: pattern(96, 96, 0) }), /no face found/)
      await assert.rejects(new PerceptualGuide().prepare({ image: pattern(96, 96, 0) }), /no face found/)
    })

    describe('on real photos', function () {
      let obama: ImageTensor
      let obama2: ImageTensor
      let biden: ImageTensor
      before(async function () {
        fixtureOrSkip(this, 'faces')
        const small = async (name: string) => {
          const image = await loadImage(join(faces, name))
          const scale = 320 / Math.max(image.width, image.height)
          return resizeImage(image, Math.round(image.width * scale), Math.round(image.height * scale))
        }
        ;[obama, obama2, biden] = await Promise.all(['obama.jpg', 'obama2.jpg', 'biden.jpg'].map(small))
      })

      for (const [label, make] of [
        ['id, face-api network', () => new IdentityGuide({ network: 'faceapi' })],
        ['id, ArcFace stand-in', () => new IdentityGuide({ network: 'arcface', folder })],
        ['perceptual', () => new PerceptualGuide()],
      ] as const) {
        it(`${label}: zero on the reference itself, larger for another person (in an opset-18 graph)`, async () => {
          const guide = make()
          await guide.prepare({ image: obama })
          const self = await lossSession(guide, obama, dir, false, 18)
          assert.ok(Math.abs((await self(obama.data, await guide.feeds(obama))).loss) < 1e-4)
          const other = await lossSession(guide, biden, dir)
          assert.ok((await other(biden.data, await guide.feeds(biden))).loss > 0.01)
        })
      }

      it('id, face-api network: the same person scores lower than another', async () => {
        const guide = new IdentityGuide({ network: 'faceapi' })
        await guide.prepare({ image: obama })
        const loss = async (image: ImageTensor) => (await (await lossSession(guide, image, dir))(image.data, await guide.feeds(image))).loss
        const same = await loss(obama2)
        const other = await loss(biden)
        assert.ok(same < other - 0.05, `same person ${same}, other ${other}`)
      })

      it('falls back to the reference face position, with a warning, when the preview has no face', async () => {
        const warnings: string[] = []
        const guide = new IdentityGuide({ network: 'faceapi', warn: m => warnings.push(m) })
        await guide.prepare({ image: obama })
        await lossSession(guide, { height: 160, width: 128 }, dir)
        const blank = pattern(128, 160, 0)
        const fed = await guide.feeds(blank)
        assert.equal(warnings.length, 1)
        assert.match(warnings[0], /no face found on the preview/)
        const matrix = fed.id_face_crop.data as Float32Array
        const initial = (await guide.feeds()).id_face_crop.data as Float32Array
        assert.deepEqual(Array.from(matrix), Array.from(initial))
        // the reference's box, stretched to the preview's size: the crop centre lands where the face was
        const cx = matrix[0] * 75 + matrix[1] * 75 + matrix[2]
        assert.ok(cx > 0 && cx < 128)
      })

      for (const [label, make] of [
        ['id, face-api network', () => new IdentityGuide({ network: 'faceapi' })],
        ['id, ArcFace stand-in', () => new IdentityGuide({ network: 'arcface', folder })],
        ['perceptual', () => new PerceptualGuide()],
      ] as const) {
        it(`${label}: has the gradient finite differences give, and descent lowers it`, async function () {
          const guide = make()
          await guide.prepare({ image: biden })
          const run = await lossSession(guide, obama2, dir, true)
          const feeds = await guide.feeds(obama2)
          await checkGradient(run, obama2, feeds)
          const losses = await descend(run, obama2, feeds, 6, 0.01)
          assert.ok(losses.at(-1)! < 0.8 * losses[0], `losses ${losses.map(l => l.toFixed(4))}`)
        })
      }

      it('identity metric: a recognizer held apart from the loss, and the loss network beside it', async () => {
        const metric = await IdentityMetric.create(obama, { lossNetwork: 'faceapi' })
        assert.match(metric.description, /FaceRes.*loss network: face-api/)
        const same = (await metric.measure(obama2))!
        const other = (await metric.measure(biden))!
        assert.ok(same.similarity > other.similarity + 0.1, `held apart: same ${same.similarity}, other ${other.similarity}`)
        assert.ok(same.loss!.distance < 0.6 && other.loss!.distance > 0.6, `loss network: same ${same.loss!.distance}, other ${other.loss!.distance}`)
        assert.equal(await metric.measure(pattern(64, 64, 0)), undefined)
        // with the fallback, a faceless image is scored at the reference's face position, and says so
        const atReference = (await metric.measure(pattern(64, 64, 0), 'reference'))!
        const atReferenceToo = (await metric.measure(pattern(64, 64, 1), 'reference'))!
        assert.equal(atReference.detected, false)
        assert.ok(atReference.similarity < same.similarity && atReference.loss!.distance > same.loss!.distance, `faceless: ${JSON.stringify(atReference)}`)
        assert.equal(atReferenceToo.detected, false)
        assert.notEqual(atReference.distance, atReferenceToo.distance)
        const detected = (await metric.measure(obama2, 'reference'))!
        assert.deepEqual([detected.detected, detected.similarity, detected.loss], [true, same.similarity, same.loss])
        const plain = await IdentityMetric.create(obama)
        assert.equal((await plain.measure(obama2))!.loss, undefined)
        const withArcface = await IdentityMetric.create(obama, { folder, lossNetwork: 'auto' })
        assert.match(withArcface.description, /loss network: ArcFace/)
      })
    })
  })
})
