import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { checkModels } from '../src/diffusion/models-folder.js'
import { generate } from '../src/diffusion/pipeline.js'
import { taesdOutputRange } from '../src/diffusion/decoders.js'
import { GENERATIONS, writeTinyModels } from '../src/diffusion/tiny/index.js'
import { opsetOf } from '../src/onnx/compose.js'
import { readModel } from '../src/onnx/proto.js'
import { closeSessions, openSession } from '../src/onnx/session.js'

describe('tiny SDXL-shaped models', () => {
  let root: string
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'lookahead-tiny-'))
    for (const generation of GENERATIONS) await writeTinyModels(join(root, generation), { generation })
  })
  after(async () => {
    await closeSessions()
    await rm(root, { recursive: true, force: true })
  })

  it('declare the I/O of both optimum generations', async () => {
    const expected = {
      'optimum-1.23': { timestep: ['int64', ['steps']], ids1: 'int32', opset: 14 },
      'optimum-onnx': { timestep: ['float32', []], ids1: 'int64', opset: 18 },
    } as const
    for (const generation of GENERATIONS) {
      const dir = join(root, generation)
      const unet = await openSession(join(dir, 'unet', 'model.onnx'))
      assert.deepEqual(unet.inputs.map(i => i.name), ['sample', 'timestep', 'encoder_hidden_states', 'text_embeds', 'time_ids'])
      assert.deepEqual([unet.input('timestep').type, unet.input('timestep').shape], expected[generation].timestep)
      assert.deepEqual(unet.outputs.map(o => o.name), ['out_sample'])
      const text1 = await openSession(join(dir, 'text_encoder', 'model.onnx'))
      const text2 = await openSession(join(dir, 'text_encoder_2', 'model.onnx'))
      assert.equal(text1.input('input_ids').type, expected[generation].ids1)
      assert.equal(text2.input('input_ids').type, 'int64')
      assert.deepEqual(text1.outputs.map(o => o.name).slice(0, 3), ['last_hidden_state', 'pooler_output', 'hidden_states.0'])
      assert.deepEqual(text2.outputs.map(o => o.name).slice(0, 3), ['text_embeds', 'last_hidden_state', 'hidden_states.0'])
      for (const decoder of ['vae_decoder', 'taesdxl_decoder']) {
        const session = await openSession(join(dir, decoder, 'model.onnx'))
        assert.deepEqual([session.inputs.map(i => i.name), session.outputs.map(o => o.name)], [['latent_sample'], ['sample']])
      }
      assert.equal(opsetOf((await readModel(join(dir, 'unet', 'model.onnx'))).model), expected[generation].opset)
      assert.equal(taesdOutputRange((await readModel(join(dir, 'taesdxl_decoder', 'model.onnx'))).model), '[-1,1]')
      assert.deepEqual(JSON.parse(await readFile(join(dir, 'world.json'), 'utf8')).kind, 'tiny')
      const report = await checkModels(dir)
      assert.deepEqual(report.filter(r => r.status === 'missing' || r.status === 'mismatch'), [])
    }
  })

  it('generate: deterministic per seed, the same image from both generations (same weights, other dtypes)', async () => {
    const settings = { prompt: 'a photo of the cat', steps: 4, cfg: 5, seed: 7, size: { width: 64, height: 64 } }
    const started = performance.now()
    const first = await generate({ ...settings, models: join(root, 'optimum-onnx') })
    const elapsed = performance.now() - started
    const again = await generate({ ...settings, models: join(root, 'optimum-onnx') })
    const other = await generate({ ...settings, models: join(root, 'optimum-1.23') })
    const reseeded = await generate({ ...settings, seed: 8, models: join(root, 'optimum-onnx') })
    assert.deepEqual(first.image.dims, [1, 3, 64, 64])
    assert.deepEqual(first.latents.dims, [1, 4, 8, 8])
    assert.equal(first.decoder, 'vae')
    assert.deepEqual(again.image.data, first.image.data)
    assert.ok(first.latents.data.every((v, i) => Math.abs(v - other.latents.data[i]) < 1e-4))
    assert.ok(reseeded.latents.data.some((v, i) => Math.abs(v - first.latents.data[i]) > 1e-2))
    assert.ok(first.image.data.every(Number.isFinite))
    assert.ok(elapsed < 5000, `a 4-step tiny generation took ${elapsed} ms`)
  })
})
