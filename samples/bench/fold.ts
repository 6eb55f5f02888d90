// `npm run bench:fold`: what specialising and folding (src/onnx/fold.ts) does to a torch export. Node counts of the
// UNet before and after folding at batch 1, the LCM preview's forward and gradient with and without folding (and
// the gradient's dynamic patterns: NonZero, Shape), and the time onnxruntime takes to create each session.
// Usage: npx tsx samples/bench/fold.ts [--models DIR] [--threads 1]
//   DIR: a folder with unet/model.onnx and vae_decoder/model.onnx exported by torch (default: test/torch/sdxl_patterns.py
//   is run into a temporary folder, with Debian's python3-torch)
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pipelineDims, previewForward, previewShape } from '../../src/guidance/engine.js'
import { pixelGuide } from '../../src/guidance/guide.js'
import { buildPreviewGraph, IMAGE, LATENT, LOSS } from '../../src/guidance/preview.js'
import { differentiate } from '../../src/onnx/autodiff.js'
import { foldGraph, opCounts } from '../../src/onnx/fold.js'
import { decodeModel, encodeModel, graphOf, readModel, writeModel, type LoadedModel } from '../../src/onnx/proto.js'
import { closeSessions, openSession } from '../../src/onnx/session.js'
import { option } from '../args.js'

const threads = Number(option('threads', '1'))
const here = dirname(fileURLToPath(import.meta.url))
const work = await mkdtemp(join(tmpdir(), 'lookahead-fold-bench-'))

try {
  let models = option('models')
  if (!models) {
    models = join(work, 'export')
    const python = ['python3', '/usr/bin/python3'].find(p => spawnSync(p, ['-c', 'import torch, onnx'], { stdio: 'ignore' }).status === 0)
    if (!python) throw new Error('no python3 with torch and onnx: pass --models DIR')
    const exported = spawnSync(python, [join(here, '..', '..', 'test', 'torch', 'sdxl_patterns.py'), models, '14', '100'], { encoding: 'utf8' })
    if (exported.status !== 0) throw new Error(exported.stderr)
  }
  const unet = await readModel(join(models, 'unet', 'model.onnx'))
  const decoder = await readModel(join(models, 'vae_decoder', 'model.onnx'))
  const sampleDims = graphOf(unet.model).input.find(i => i.name === 'sample')!.type!.tensorType!.shape!.dim!
  const side = 8
  const dims = { ...pipelineDims(1), ...Object.fromEntries(sampleDims.flatMap((d, i) => (d.dimParam ? [[d.dimParam, [1, 4, side, side][i]]] : []))) }

  /** Node count, the dynamic patterns, and the session's creation time. */
  const measure = async (label: string, model: LoadedModel) => {
    const path = join(work, label.replace(/\W+/g, '-'), 'model.onnx')
    await writeModel({ model: decodeModel(encodeModel(model.model)), dir: model.dir }, path) // a copy: writeModel moves its locations
    const began = performance.now()
    await openSession(path, { threads })
    const ms = performance.now() - began
    await closeSessions()
    const ops = opCounts(model.model)
    const nodes = graphOf(model.model).node.length
    console.log(`${label.padEnd(34)} ${String(nodes).padStart(7)} nodes  NonZero ${String(ops.NonZero ?? 0).padStart(4)}  Shape ${String(ops.Shape ?? 0).padStart(5)}  session ${(ms / 1000).toFixed(2).padStart(6)} s`)
    return { nodes, ms }
  }

  const exportNodes = graphOf(unet.model).node.length + graphOf(decoder.model).node.length
  console.log(`torch export in ${models}: unet ${graphOf(unet.model).node.length} + decoder ${graphOf(decoder.model).node.length} nodes; LCM preview at batch 1, latent ${side}², ${threads} thread(s)`)
  console.log('unet ops before folding:', JSON.stringify(opCounts(unet.model)))
  const unetRaw = await measure('unet as exported', unet)
  const foldStarted = performance.now()
  const unetFolded = await measure('unet folded at batch 1', foldGraph(unet, dims))
  console.log(`  (folding took ${((performance.now() - foldStarted - unetFolded.ms) / 1000).toFixed(2)} s)`)

  const parts = { unet, decoder, scales: { inputScale: 1, outputScale: 1, outputShift: 0 } }
  const shape = previewShape(1, [1, 4, side, side])
  const raw: LoadedModel = { model: buildPreviewGraph({ unet, decoder, decoderScales: parts.scales, ...shape, guide: pixelGuide() }).build(), dir: unet.dir }
  const folded = previewForward(parts, shape, pixelGuide())
  const gradientOf = (forward: LoadedModel) => differentiate(forward, { wrt: [LATENT], of: LOSS, keep: [IMAGE], dims: pipelineDims(1) })
  const forwardRaw = await measure('preview forward, unfolded', raw)
  const forwardFolded = await measure('preview forward, folded', folded)
  const gradientRaw = await measure('preview gradient, unfolded', gradientOf(raw))
  const gradientFolded = await measure('preview gradient, folded (engine)', foldGraph(gradientOf(folded)))
  const ratio = (a: number, b: number) => (a / b).toFixed(2)
  console.log(`gradient nodes / export nodes: unfolded ${ratio(gradientRaw.nodes, exportNodes)}, folded ${ratio(gradientFolded.nodes, exportNodes)}`)
  console.log(`gradient nodes / forward nodes: unfolded ${ratio(gradientRaw.nodes, forwardRaw.nodes)}, folded ${ratio(gradientFolded.nodes, forwardFolded.nodes)}`)
  console.log(`session creation, folded / unfolded: unet ${ratio(unetFolded.ms, unetRaw.ms)}, preview forward ${ratio(forwardFolded.ms, forwardRaw.ms)}, gradient ${ratio(gradientFolded.ms, gradientRaw.ms)}`)
} finally {
  await rm(work, { recursive: true, force: true })
}
