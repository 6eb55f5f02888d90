// Our gradients of small torch.onnx exports (test/autodiff_torch.py: the ops whose rules are newest or were
// wrong, at several opsets) against torch autograd's, on the same inputs. Skips where PyTorch is absent.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { differentiate } from '../src/onnx/autodiff.js'
import { encodeModel, readModel } from '../src/onnx/proto.js'
import { ort } from '../src/onnx/session.js'
import { cannotImport, python } from '../samples/python.js'

const script = join(dirname(fileURLToPath(import.meta.url)), 'autodiff_torch.py')

interface Export {
  name: string
  opset: number
  model: string
  inputs: Record<string, { shape: number[]; input: string; grad: string }>
}

async function floats(path: string): Promise<Float32Array> {
  const bytes = await readFile(path)
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
}

describe('gradients vs torch autograd on torch.onnx exports', function () {
  this.timeout(120_000)
  let dir = ''
  let exports: Export[] = []

  before(async function () {
    const missing = await cannotImport(['torch'])
    if (missing) {
      console.log(`      skipped: ${missing}`)
      this.skip()
    }
    dir = await mkdtemp(join(tmpdir(), 'autodiff-torch-'))
    await promisify(execFile)(python, [script, dir])
    exports = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'))
  })
  after(() => dir && rm(dir, { recursive: true, force: true }))

  it('matches every export (max |ours − torch| ≤ 1e-4 · max |torch|)', async () => {
    assert.ok(exports.length >= 20, `only ${exports.length} exports`)
    const failures: string[] = []
    for (const x of exports) {
      const wrt = Object.keys(x.inputs)
      const gradient = differentiate(await readModel(x.model), { wrt, of: 'loss' })
      const session = await ort.InferenceSession.create(encodeModel(gradient.model))
      const feeds = Object.fromEntries(await Promise.all(wrt.map(async n => [n, new ort.Tensor('float32', await floats(x.inputs[n].input), x.inputs[n].shape)] as const)))
      const out = await session.run(feeds)
      await session.release()
      for (const n of wrt) {
        const ours = out[`${n}_grad`].data as Float32Array, reference = await floats(x.inputs[n].grad)
        let difference = 0, scale = 0
        reference.forEach((r, i) => { difference = Math.max(difference, Math.abs(ours[i] - r)); scale = Math.max(scale, Math.abs(r)) })
        if (!(difference <= 1e-4 * scale)) failures.push(`${x.name} (opset ${x.opset}) d/d${n}: max difference ${difference.toExponential(2)}, scale ${scale.toExponential(2)}`)
      }
    }
    assert.deepEqual(failures, [])
  })
})
