// `npm run oracle:paired -- --dir DIR`: gradient graphs timed against each other, interleaved in one process, on
// the oracle's exports in DIR (`npm run oracle -- --dir DIR` makes them). Single ratios on a shared machine swing
// ±30%; paired, the variants see the same load. Per case×opset and round: the forward, then each variant's
// forward+gradient, each as the median CPU time of its runs (1 thread); a variant's ratio is the median over the
// rounds of (its time / that round's forward time).
// Variants (--variants, comma-separated; default base,new):
// - base:  the gradient graph saved by --save-base (the code before a change), <model>.base.grad.onnx
// - new:   the gradient graph of this checkout's autodiff, written afresh
// - NAME:extended (or :basic): that graph in a session with onnxruntime's graph optimisation at that level
// - twice: no gradient, the forward graph twice over (the copy with its own nodes and weights, reading the same
//          input): what a second pass over a second copy of the weights costs. A gradient's adjoint Convs read
//          their own (transposed, flipped) copy of each weight, so on weight-bound nets this is the floor an
//          emitted form can reach in onnxruntime.
// Options: --cases a,b (default every architecture in DIR), --opsets 17, --rounds 5, --repeats 5, --save-base.
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { writeGradientModel } from '../../src/onnx/autodiff.js'
import { decodeModel, encodeModel, graphOf, readModel } from '../../src/onnx/proto.js'
import { ort } from '../../src/onnx/session.js'
import { caseFeeds, median, medianCpuMs, open, readManifest } from './oracle.js'
import { option } from '../args.js'

const dir = option('dir', '')
if (!dir) {
  console.error('--dir DIR is required: a folder of oracle exports (npm run oracle -- --dir DIR)')
  process.exit(1)
}
const cases = option('cases', '').split(',').filter(Boolean)
const opsets = option('opsets', '17').split(',').map(Number)
const rounds = Number(option('rounds', '5'))
const repeats = Number(option('repeats', '5'))
const variants = option('variants', 'base,new').split(',').map(spec => {
  const [graph, level] = spec.split(':')
  if (!['base', 'new', 'twice'].includes(graph) || (level && !['extended', 'basic', 'all'].includes(level))) {
    console.error(`unknown variant ${spec}: base, new or twice, optionally :extended, :basic or :all`)
    process.exit(1)
  }
  return { spec, graph, level: level as 'extended' | 'basic' | 'all' | undefined }
})
const saveBase = process.argv.includes('--save-base')

/** Writes the forward model with its graph twice over: the copy's nodes, weights and outputs renamed, its inputs shared. */
async function writeTwice(forwardPath: string, path: string): Promise<void> {
  const { model } = await readModel(forwardPath)
  const graph = graphOf(model), copy = graphOf(decodeModel(encodeModel(model)))
  if (graph.node.some(node => (node.attribute ?? []).some(a => a.g || a.graphs?.length))) throw new Error(`${forwardPath}: subgraphs are not copied`)
  const inputs = new Set(graph.input.map(i => i.name))
  const renamed = (name: string) => (!name || inputs.has(name) ? name : `${name}__twice`)
  for (const node of copy.node) {
    node.name = renamed(node.name ?? '')
    node.input = (node.input ?? []).map(renamed)
    node.output = (node.output ?? []).map(renamed)
  }
  for (const t of copy.initializer) t.name = renamed(t.name ?? '')
  for (const o of copy.output) o.name = renamed(o.name ?? '')
  graph.node.push(...copy.node)
  graph.initializer.push(...copy.initializer.filter(t => !inputs.has(t.name ?? '')))
  graph.output.push(...copy.output)
  graph.valueInfo = []
  await writeFile(path, encodeModel(model))
}

const manifest = (await readManifest(dir)).filter(c => (cases.length ? cases.includes(c.name) : c.kind === 'architecture') && !c.error)
console.log(`(forward+gradient)/forward, CPU time, 1 thread, median of ${rounds} interleaved rounds; torch's from its export`)
console.log(`${'case'.padEnd(20)} opset  ${'torch'.padStart(7)}  ${variants.map(v => v.spec.padStart(13)).join('  ')}`)
const table: number[][] = []
for (const entry of manifest) {
  for (const opset of opsets) {
    const model = entry.opsets?.[opset]?.model
    if (!model) continue
    const forwardPath = join(dir, model)
    const basePath = forwardPath.replace(/\.onnx$/, '.base.grad.onnx'), newPath = forwardPath.replace(/\.onnx$/, '.grad.onnx')
    if (saveBase) {
      await writeGradientModel(forwardPath, basePath, { wrt: ['x'] })
      console.log(`${entry.name}@${opset}: saved ${basePath}`)
      continue
    }
    const twicePath = forwardPath.replace(/\.onnx$/, '.twice.onnx')
    if (variants.some(v => v.graph === 'new')) await writeGradientModel(forwardPath, newPath, { wrt: ['x'] })
    if (variants.some(v => v.graph === 'twice')) await writeTwice(forwardPath, twicePath)
    const feeds: Record<string, ort.Tensor> = await caseFeeds(dir, entry)
    const forward = await open(forwardPath)
    const sessions = await Promise.all(variants.map(v => open({ base: basePath, new: newPath, twice: twicePath }[v.graph]!, v.level ? { graphOptimizationLevel: v.level } : {})))
    const ratios = variants.map((): number[] => [])
    for (let r = 0; r < rounds; r++) {
      const forwardMs = await medianCpuMs(forward, feeds, repeats)
      for (const [i, session] of sessions.entries()) ratios[i].push((await medianCpuMs(session, feeds, repeats)) / forwardMs)
    }
    for (const s of [forward, ...sessions]) await s.release()
    const row = ratios.map(median)
    table.push(row)
    const torch = entry.gradient_ms! / entry.forward_ms!
    console.log(`${entry.name.padEnd(20)} ${String(opset).padStart(5)}  ${`${torch.toFixed(2)}×`.padStart(7)}  ${row.map(x => `${x.toFixed(2)}×`.padStart(13)).join('  ')}`)
  }
}
if (table.length) console.log(`${'median'.padEnd(27)}  ${''.padStart(7)}  ${variants.map((_, i) => `${median(table.map(row => row[i])).toFixed(2)}×`.padStart(13)).join('  ')}`)
