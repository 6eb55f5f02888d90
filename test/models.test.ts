import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { checkModels, heldPieces, ModelsFolder, modelsDir, type PieceReport } from '../src/diffusion/models-folder.js'
import { f32, writeSafetensors } from '../src/diffusion/safetensors.js'
import { tinyVaeDecoder, writeTinyModels } from '../src/diffusion/tiny/index.js'
import { GraphBuilder } from '../src/onnx/builder.js'
import { writeModelWithExternalData } from '../src/onnx/proto.js'
import { closeSessions, openSession } from '../src/onnx/session.js'

/** A UNet from an unknown exporter: int32 timestep of rank 2, no time_ids, 3 latent channels out. */
function brokenUnet() {
  const g = new GraphBuilder('unet', 17)
  const sample = g.input('sample', 'float32', ['batch', 4, 'h', 'w'])
  g.input('timestep', 'int32', [2, 3])
  g.input('encoder_hidden_states', 'float32', ['batch', 77, 80])
  g.input('text_embeds', 'float32', ['batch', 32])
  g.outputAs(g.op('Slice', [sample, g.ints([0]), g.ints([3]), g.ints([1])]), 'out_sample', 'float32', ['batch', 3, 'h', 'w'])
  return g.build()
}

/** A VAE decoder whose input has another name (the check reads the graph; it never runs it). */
function renamedVae() {
  const g = tinyVaeDecoder('optimum-onnx')
  g.inputs[0].name = 'z'
  return g.build()
}

describe('lookahead models (checking a folder)', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-models-')) })
  after(async () => {
    await closeSessions()
    await rm(dir, { recursive: true, force: true })
  })

  const byPiece = (reports: PieceReport[]) => Object.fromEntries(reports.map(r => [r.piece, r]))

  it('passes a complete folder and names each problem of a broken one, with how to fix it', async () => {
    const good = join(dir, 'good')
    await writeTinyModels(good)
    assert.ok((await checkModels(good)).every(r => r.status === 'ok' || r.status === 'optional'))

    const broken = join(dir, 'broken')
    await writeTinyModels(broken)
    await rm(join(broken, 'text_encoder_2'), { recursive: true })
    await rm(join(broken, 'tokenizer', 'merges.txt'))
    await writeModelWithExternalData(brokenUnet(), join(broken, 'unet', 'model.onnx'))
    await writeModelWithExternalData(renamedVae(), join(broken, 'vae_decoder', 'model.onnx'))
    await writeSafetensors(join(broken, 'lcm_lora', 'pytorch_lora_weights.safetensors'), new Map([
      ['lora_unet_input_blocks_4_1_proj_in.lora_down.weight', f32([2, 3], new Float32Array(6))],
      ['lora_unet_input_blocks_4_1_proj_in.lora_up.weight', f32([3, 2], new Float32Array(6))],
    ]))
    const report = byPiece(await checkModels(broken))
    assert.equal(report.text_encoder_2.status, 'missing')
    assert.match(report.text_encoder_2.howTo!, /optimum/)
    assert.equal(report.tokenizer.status, 'mismatch')
    assert.match(report.tokenizer.problems.join(), /merges\.txt is missing/)
    assert.equal(report.unet.status, 'mismatch')
    const unetProblems = report.unet.problems.join('\n')
    assert.match(unetProblems, /no input time_ids/)
    assert.match(unetProblems, /output out_sample has shape \[batch,3,h,w\]; expected \[\*,4,\*,\*\]/)
    assert.match(unetProblems, /input timestep is int32 of rank 2/)
    assert.equal(report.vae_decoder.status, 'mismatch')
    assert.match(report.vae_decoder.problems.join(), /no input latent_sample/)
    assert.equal(report.lcm_lora.status, 'mismatch')
    assert.match(report.lcm_lora.problems.join(), /1 of 1 LoRA layers match no UNet layer, e.g. input_blocks_4_1_proj_in/)
    assert.equal(report.text_encoder.status, 'ok')
    assert.equal(report.taesdxl_decoder.status, 'ok')
  })

  it('flags an fp16 VAE, skips text pieces in a world without text, and needs a folder', async () => {
    const half = join(dir, 'half')
    await writeTinyModels(half)
    const g = tinyVaeDecoder('optimum-onnx')
    g.inputs[0].type!.tensorType!.elemType = 10 // declared fp16 (the graph itself is not run here)
    await writeModelWithExternalData(g.build(), join(half, 'vae_decoder', 'model.onnx'))
    await rm(join(half, 'text_encoder'), { recursive: true })
    await writeFile(join(half, 'world.json'), JSON.stringify({ kind: 'demo', text: false }))
    const report = byPiece(await checkModels(half))
    assert.match(report.vae_decoder.problems.join(), /fp16/)
    assert.equal(report.text_encoder.status, 'optional')
    assert.match(report.text_encoder.notes.join(), /"text": false/)
    assert.throws(() => modelsDir(join(dir, 'nowhere')), /does not exist/)
    const saved = process.env.LOOKAHEAD_MODELS
    delete process.env.LOOKAHEAD_MODELS
    try {
      assert.throws(() => modelsDir(undefined), /pass --models DIR or set LOOKAHEAD_MODELS/)
    } finally {
      if (saved !== undefined) process.env.LOOKAHEAD_MODELS = saved
    }
  })

  it('names a truncated weights file and the size it should have; onnxruntime\'s error on it is one line', async () => {
    const cut = join(dir, 'cut')
    await writeTinyModels(cut)
    const data = join(cut, 'unet', 'model.onnx_data')
    const size = (await stat(data)).size
    await truncate(data, size - 100)
    const report = byPiece(await checkModels(cut))
    assert.equal(report.unet.status, 'mismatch')
    assert.ok(report.unet.problems.includes(`external data file ${data} is ${size - 100} bytes; its tensors need ${size} (truncated?)`), report.unet.problems.join('\n'))
    await assert.rejects(openSession(join(cut, 'unet', 'model.onnx')), (error: Error) => /^onnxruntime cannot load .*\S$/.test(error.message) && !error.message.includes('\n'))
  })

  it('lists the models a folder holds (models --write-tiny refuses those without --force)', async () => {
    const held = join(dir, 'held')
    assert.deepEqual(heldPieces(held), [])
    await writeTinyModels(held)
    assert.ok(heldPieces(held).includes(join('unet', 'model.onnx')))
  })

  it('ModelsFolder: the layout, world.json, decoder defaults, and the LoRA\'d UNet built once, announced', async () => {
    const tiny = join(dir, 'folder')
    await writeTinyModels(tiny)
    await rm(join(tiny, 'lcm_unet'), { recursive: true, force: true })
    const folder = await ModelsFolder.at(tiny)
    assert.equal(folder.path('unet'), join(tiny, 'unet', 'model.onnx'))
    assert.deepEqual([folder.previewDecoder(), folder.finalDecoder(), folder.previewDecoder('vae')], ['taesd', 'vae', 'vae'])
    assert.deepEqual(folder.world, JSON.parse(await readFile(folder.path('world'), 'utf8')))
    const lines: string[] = []
    const built = await folder.lcmUnet(line => lines.push(line))
    assert.equal(lines.length, 1)
    assert.match(lines[0], /applying lcm_lora.* to unet/)
    assert.equal(await folder.lcmUnet(line => lines.push(line)), built)
    assert.equal(lines.length, 1, 'the second time it comes from the cache')
    await rm(join(tiny, 'lcm_lora'), { recursive: true })
    await assert.rejects(folder.lcmUnet(), /has neither lcm_unet.* nor lcm_lora/)
  })
})
