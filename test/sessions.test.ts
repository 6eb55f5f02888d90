// One session factory (the run's --device/--threads reach every session) and one face detection per image.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { detectFaces } from '../guides/face.js'
import { drawnFaces } from '../src/world/world.js'
import { GraphBuilder } from '../src/onnx/builder.js'
import { generate } from '../src/diffusion/pipeline.js'
import { writeTinyModels } from '../src/diffusion/tiny/index.js'
import { UserError } from '../src/errors.js'
import { graphOf, readModel, writeModel, type ModelProto } from '../src/onnx/proto.js'
import { closeSessions, openCachedModel, openSession, ort, sessionSettings, setSessionDefaults } from '../src/onnx/session.js'

describe('sessions and face detection', () => {
  after(() => setSessionDefaults({ device: 'cpu', threads: 0 }))

  it('fills a session\'s device and threads from the run\'s defaults', () => {
    setSessionDefaults({ threads: 1 })
    assert.deepEqual(sessionSettings(), { device: 'cpu', threads: 1 })
    assert.deepEqual(sessionSettings({ threads: 2 }), { device: 'cpu', threads: 2 })
  })

  it('creates a new cache entry\'s session once: the one that checked the entry loads', async () => {
    const root = await mkdtemp(join(tmpdir(), 'lookahead-cached-model-'))
    const create = ort.InferenceSession.create
    let created = 0
    ort.InferenceSession.create = ((...args: Parameters<typeof create>) => { created++; return create(...args) }) as typeof create
    try {
      const g = new GraphBuilder('twice')
      const x = g.input('x', 'float32', [2])
      g.outputAs(g.op('Add', [x, x]), 'y', 'float32', [2])
      const build = async (tmp: string) => { await writeModel({ model: g.build(), dir: '.' }, join(tmp, 'model.onnx')) }
      const session = await openCachedModel(join(root, 'entry'), build, 'test', { threads: 1 })
      assert.equal(created, 1)
      assert.deepEqual(await readdir(root), ['entry'], 'renamed into place')
      const y = await session.run({ x: new ort.Tensor('float32', Float32Array.of(1, 2), [2]) })
      assert.deepEqual(Array.from(y.y.data as Float32Array), [2, 4])
      assert.equal(await openSession(join(root, 'entry', 'model.onnx'), { threads: 1 }), session, 'kept under the entry\'s path')
      await closeSessions()
      await openCachedModel(join(root, 'entry'), async () => assert.fail('a hit builds nothing'), 'test', { threads: 1 })
      assert.equal(created, 2, 'a hit opens the entry once')
      await assert.rejects(openCachedModel(join(root, 'broken'), async tmp => { await build(tmp); await rm(join(tmp, 'model.onnx')) }, 'broken-model', { threads: 1 }), /model file .* does not exist/)
      assert.ok(!existsSync(join(root, 'broken')))
    } finally {
      ort.InferenceSession.create = create
      await closeSessions()
      await rm(root, { recursive: true, force: true })
    }
  })

  it('names the folder\'s UNet, not its folded copy in the cache, where that cannot load or run: in one line', async () => {
    const root = await mkdtemp(join(tmpdir(), 'lookahead-broken-unet-'))
    const savedCache = process.env.LOOKAHEAD_CACHE
    process.env.LOOKAHEAD_CACHE = join(root, 'cache')
    try {
      const models = join(root, 'models')
      await writeTinyModels(models)
      const unet = join(models, 'unet', 'model.onnx')
      const original = await readModel(unet)
      const sample = (model: ModelProto) => graphOf(model).input.find(i => i.name === 'sample')!.type!.tensorType!.shape!.dim!
      const broken: [string, (model: ModelProto) => void, RegExp][] = [
        ['an op onnxruntime does not know', model => { graphOf(model).node[0].opType = 'NoSuchOp' }, /^onnxruntime cannot load (\S+) \(folded for sampling\): .*NoSuchOp/],
        ['3 latent channels for a UNet built for 4', model => { sample(model)[1].dimValue = 3 }, /^onnxruntime cannot run (\S+) \(folded for sampling\): .*channels/],
      ]
      for (const [what, edit, expected] of broken) {
        const model = await readModel(unet)
        edit(model.model)
        await writeModel(model, unet)
        await assert.rejects(generate({ prompt: 'a cat', steps: 1, cfg: 1, seed: 0, size: { height: 64, width: 64 }, models }), (error: Error) => {
          assert.ok(error instanceof UserError, `${what}: ${error.stack}`)
          assert.match(error.message, expected, what)
          assert.equal(expected.exec(error.message)![1], unet, what)
          assert.ok(!error.message.includes('\n') && !error.message.includes(join(root, 'cache')), `${what}: ${error.message}`)
          return true
        })
        await writeModel(original, unet)
        await closeSessions()
      }
    } finally {
      if (savedCache === undefined) delete process.env.LOOKAHEAD_CACHE
      else process.env.LOOKAHEAD_CACHE = savedCache
      await closeSessions()
      await rm(root, { recursive: true, force: true })
    }
  })

  it('detects the faces of an image once, however many guides and metrics look at it', async () => {
    const face = drawnFaces(128)[0]
    const image = { data: face.pixels, width: 128, height: 128 }
    const first = detectFaces(image)
    assert.equal(detectFaces(image), first, 'the same detection')
    assert.notEqual(detectFaces({ ...image }), first, 'another image is detected afresh')
    assert.ok(Array.isArray(await first))
  })
})
