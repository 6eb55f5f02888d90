// A fast subset of the torchvision oracle (npm run oracle has the whole set): torch.onnx exports of
// torchvision architectures, differentiated by our autodiff, against torch autograd's float64 gradient.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { checkCase, exportCases, torchPython, type TorchCase } from '../samples/oracle/oracle.js'

// depthwise convs with ReLU6, shifted-window attention, LayerNorm with 7×7 depthwise convs, multi-head
// attention, bilinear and nearest resizes (≈ 40 s on 2 idle cores, most of it torch.onnx)
const CASES = ['mobilenet_v2', 'swin', 'convnext', 'vit', 'resample']
const OPSETS = [13, 17]

describe('torchvision oracle (subset)', function () {
  this.timeout(180_000)
  let dir: string | undefined
  let manifest: TorchCase[] = []

  before(async function () {
    const python = await torchPython()
    if (!python) {
      console.log('      skipped: torch and torchvision are not importable (install Debian\'s python3-torch and python3-torchvision, or set PYTHON)')
      this.skip()
    }
    dir = await mkdtemp(join(tmpdir(), 'oracle-test-'))
    manifest = await exportCases(python!, dir, CASES, OPSETS, 0)
  })
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('matches torch autograd on every case and opset', async () => {
    assert.deepEqual(manifest.map(c => c.name), CASES)
    const failures: string[] = []
    for (const entry of manifest) {
      for (const opset of OPSETS) {
        const row = await checkCase(dir!, entry, opset, 0)
        if (row.status !== 'match') failures.push(`${row.name}@${opset}: ${row.status} ${row.reason ?? `rel. error ${row.error?.toExponential(1)}`}`)
      }
    }
    assert.deepEqual(failures, [])
  })
})
