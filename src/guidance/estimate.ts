// What a guided run will cost, before running it (`lookahead guide --dry-run`): UNet evaluations, gradient
// passes, and the gradient pass's memory from the graphs alone: the weights, plus the activations of the
// gradient graph at its peak as onnxruntime's sequential allocation planner lays them out, and, as an upper
// bound, every float value on the latent → loss path.
//
// The planner (onnxruntime/core/framework/allocation_planner.cc) frees a value after its last reader, but a
// freed buffer that a later value of the same shape and type can take is kept for it, not returned: a buffer
// lives from its first value's birth to its last value's death. That matters when the backward recomputes
// (recompute.ts): the copies have the shapes of forward values freed long before, whose buffers are then held
// in between. Measured on the bench network (CPU, arena off): 682 MB kept, 569 MB in 4 segments; this model
// says 710 and 568, freeing at the last reader alone 641 and 418.
//
// onnxruntime does not run the nodes in the graph's order but in its own (executionOrder below), after folding
// the nodes that read weights only and removing Identities; on a gradient graph that order can hold twice the
// graph order's peak. Checked against onnxruntime's arena (its profile's mem_in_use_peak) on the torch fixture's
// LCM-preview gradient at the tiny depth (graphOptimizationLevel 'all', the fused SiLU rule): 24.8 MB modelled,
// 27.2 MB in the arena (25.6 MB at 'basic', without the CPU's NCHWc layout copies), RSS 30.0 MB; the planner
// replayed on onnxruntime's own optimised graph in its order: 27.4 MB.
import { stat } from 'node:fs/promises'
import { externalDataFiles, graphOf, isExternal, onnx, type GraphProto, type LoadedModel, type NodeProto, type TensorProto } from '../onnx/proto.js'
import { floatBytes, inferShapes, type Info } from '../onnx/shapes.js'
import { LATENT, previewGradient } from './preview.js'
import { previewUnetCalls } from './previews.js'

export interface GraphMemory {
  /** bytes of all weights: external data files plus inline initializers */
  weights: number
  /** peak bytes of float buffers in the gradient graph, in graph order, as onnxruntime's planner holds them */
  peak: number
  /** the same if each value were returned at its last reader (a lower bound) */
  lowerBound: number
  /** bytes of the forward values the backward nodes read */
  saved: number
  /** bytes of every float value that depends on the latent: what the pass would hold if nothing were freed */
  upperBound: number
  /** values whose size could not be inferred (not counted) */
  unknown: number
}

/** Bytes of each value of a graph, from inferred shapes; undefined where a dim is not known. */
const sizes = (infos: Map<string, Info>) => (value: string) => floatBytes(infos.get(value))

/** The key under which the planner lets one value take another's buffer: type and static shape (not scalars). */
function reuseKey(infos: Map<string, Info>): (value: string) => string | undefined {
  return value => {
    const shape = infos.get(value)?.shape
    return shape && shape.length > 0 && shape.every(d => typeof d === 'number') ? `${infos.get(value)!.dtype}:${shape.join('x')}` : undefined
  }
}

/** Ops whose output is a view of their first input's buffer in onnxruntime's CPU kernels (KernelDef Alias(0, 0)). */
const VIEWS = new Set(['Reshape', 'Squeeze', 'Unsqueeze', 'Flatten', 'Identity'])

/**
 * Peak bytes of a node list's buffers, in order. Each output takes the most recently freed buffer with its key,
 * else a new one; a view (VIEWS) takes its input's buffer, or none where that is a weight or a graph input; a
 * graph output has a buffer of its own, even from a view (onnxruntime's kAllocateOutput); a buffer is freed when
 * its last value's readers are done (graph outputs never are).
 * `reuse: false` returns each buffer at once instead: the lower bound.
 */
export function plannedPeak(nodes: NodeProto[], bytes: (v: string) => number, key: (v: string) => string | undefined, outputs: Set<string>, reuse = true): number {
  const readers = new Map<string, number>()
  for (const node of nodes) for (const v of node.input ?? []) if (v) readers.set(v, (readers.get(v) ?? 0) + 1)
  const buffers: { bytes: number; key?: string; born: number; freed: number; uses: number }[] = []
  const bufferOf = new Map<string, number>()
  const freeList: number[] = [] // most recently freed first
  const release = (b: number, at: number) => {
    buffers[b].freed = at
    if (--buffers[b].uses === 0) freeList.unshift(b)
  }
  nodes.forEach((node, at) => {
    for (const v of node.output ?? []) {
      if (!v) continue
      if (VIEWS.has(node.opType ?? '') && !outputs.has(v)) {
        const viewed = bufferOf.get(node.input?.[0] ?? '')
        if (viewed === undefined) continue
        bufferOf.set(v, viewed)
        buffers[viewed].uses += (readers.get(v) ?? 0) + 1
        continue
      }
      const k = reuse && !outputs.has(v) ? key(v) : undefined
      const free = k === undefined ? -1 : freeList.findIndex(b => buffers[b].key === k)
      const b = free >= 0 ? freeList.splice(free, 1)[0] : buffers.push({ bytes: bytes(v), key: k, born: at, freed: at, uses: 0 }) - 1
      bufferOf.set(v, b)
      buffers[b].uses += (readers.get(v) ?? 0) + (outputs.has(v) ? 1 : 0) + 1 // + 1: its birth, released below
    }
    for (const v of node.input ?? []) if (bufferOf.has(v)) release(bufferOf.get(v)!, at)
    for (const v of node.output ?? []) if (bufferOf.has(v)) release(bufferOf.get(v)!, at)
  })
  const change = new Array<number>(nodes.length + 2).fill(0)
  for (const b of buffers) {
    change[b.born] += b.bytes
    change[b.uses > 0 ? nodes.length + 1 : b.freed + 1] -= b.bytes // still in use at the end: a graph output
  }
  let live = 0
  let peak = 0
  for (const d of change) peak = Math.max(peak, (live += d))
  return peak
}

/**
 * The nodes in the order onnxruntime runs them (its default ExecutionOrder: GraphViewer's reverse depth-first
 * walk, graph.cc ReverseDFSFrom): from the nodes nobody reads, the last first, depth first into each node's
 * producers, the latest in the graph first; a node runs once its producers have. Before that onnxruntime rewrites
 * the graph when it loads it, and two of its rewrites change what the walk sees:
 * - nodes that read only weights (or nothing) do not run: they are folded into weights (Constant nodes, its
 *   ConstantFolding pass);
 * - Identity nodes go (its EliminateIdentity rule): their readers read the input instead; one that writes a graph
 *   output goes where its input is another node's output that nothing else reads and that is no graph output
 *   itself, and that node writes the graph output instead. That makes the node, not the Identity, one the walk
 *   starts from, at its own place in the graph: a gradient graph whose outputs are Identities (foldGraph names them
 *   so) then runs the whole forward first and holds what the backward reads of it (on the torch fixture: 24.8 MB
 *   in this order, 25.6 MB in onnxruntime's arena at 'basic'; walked from the Identities, 21.0 MB).
 * Returns the nodes that run, in that order, with those Identities gone and their values renamed.
 */
export function executionOrder(nodes: NodeProto[], weights: Set<string>, graphOutputs: Set<string>): NodeProto[] {
  const constant = new Set(weights)
  const folded: NodeProto[] = []
  for (const node of nodes) {
    if ((node.input ?? []).every(v => !v || constant.has(v))) for (const v of node.output ?? []) constant.add(v)
    else folded.push(node)
  }
  const identities = folded.filter(node => node.opType === 'Identity' && (node.domain ?? '') === '')
  const eliminated = new Set<NodeProto>()
  const readInstead = new Map<string, string>() // an eliminated Identity's output → its input
  for (const node of identities) {
    if (graphOutputs.has(node.output[0])) continue
    readInstead.set(node.output[0], node.input[0])
    eliminated.add(node)
  }
  const source = (v: string): string => (readInstead.has(v) ? source(readInstead.get(v)!) : v)
  const readers = new Map<string, number>()
  for (const node of folded) if (!eliminated.has(node)) for (const v of node.input ?? []) if (v) readers.set(source(v), (readers.get(source(v)) ?? 0) + 1)
  const produced = new Set(folded.flatMap(node => node.output ?? []))
  const writtenAs = new Map<string, string>() // a node's output → the graph output its eliminated Identity wrote
  for (const node of identities) {
    const input = source(node.input[0])
    if (!graphOutputs.has(node.output[0]) || !produced.has(input) || graphOutputs.has(input) || readers.get(input) !== 1) continue
    writtenAs.set(input, node.output[0])
    eliminated.add(node)
  }
  const running = folded.filter(node => !eliminated.has(node)).map(node => {
    const input = (node.input ?? []).map(v => (v ? source(v) : v))
    const output = (node.output ?? []).map(v => writtenAs.get(v) ?? v)
    return input.every((v, i) => v === node.input[i]) && output.every((v, i) => v === node.output[i]) ? node : new onnx.NodeProto({ ...node, input, output })
  })
  const producer = new Map<string, number>()
  running.forEach((node, i) => { for (const v of node.output ?? []) if (v) producer.set(v, i) })
  const producers = running.map(node => [...new Set((node.input ?? []).flatMap(v => (producer.has(v) ? [producer.get(v)!] : [])))].sort((a, b) => a - b))
  const read = new Set(producers.flat())
  // a stack of [node, leaving]: a node is entered, its producers pushed above it, and it runs when left
  const stack: [number, boolean][] = running.flatMap((_, i) => (read.has(i) ? [] : [[i, false] as [number, boolean]]))
  const entered = new Array<boolean>(running.length).fill(false)
  const order: NodeProto[] = []
  while (stack.length > 0) {
    const [i, leaving] = stack.pop()!
    if (leaving) order.push(running[i])
    else if (!entered[i]) {
      entered[i] = true
      stack.push([i, true])
      for (const p of producers[i]) if (!entered[p]) stack.push([p, false])
    }
  }
  return order
}

/** Bytes of a model's weights: its external data files and its inline initializers. */
export async function weightBytes(model: LoadedModel): Promise<number> {
  let bytes = 0
  for (const file of externalDataFiles(model)) bytes += (await stat(file)).size
  for (const t of graphOf(model.model).initializer as TensorProto[]) if (!isExternal(t)) bytes += t.rawData?.length ?? 0
  return bytes
}

/** A graph's peak bytes of activations as onnxruntime runs and plans it, and if each were freed at once (`infos`: its inferred shapes, dims fixed). */
export function activationPeak(graph: GraphProto, infos = inferShapes(graph)): { peak: number; lowerBound: number } {
  const size = sizes(infos)
  const bytes = (value: string) => size(value) ?? 0
  const key = reuseKey(infos)
  const outputs = new Set(graph.output.map(o => o.name!))
  const nodes = executionOrder(graph.node as NodeProto[], new Set(graph.initializer.map(t => t.name!)), outputs)
  return { peak: plannedPeak(nodes, bytes, key, outputs), lowerBound: plannedPeak(nodes, bytes, key, outputs, false) }
}

/**
 * The memory of the gradient pass of a forward graph whose input `latent` is differentiated (output `loss`).
 * `dims` fixes symbolic dims (batch_size, sequence_length, steps) as the pipeline feeds them.
 */
export async function graphMemory(forward: LoadedModel, dims: Record<string, number> = {}, segments = 1): Promise<GraphMemory> {
  const graph = graphOf(forward.model)
  const weights = await weightBytes(forward)

  const forwardBytes = sizes(inferShapes(graph, dims))
  const active = new Set([LATENT])
  let upperBound = 0
  let unknown = 0
  for (const node of graph.node) {
    if (!node.input?.some(name => active.has(name))) continue
    for (const name of node.output ?? []) {
      const bytes = forwardBytes(name)
      if (bytes === 0) continue
      active.add(name)
      if (bytes === undefined) unknown++
      else upperBound += bytes
    }
  }

  // the gradient graph as the engine derives it (gradientSession): folded, with the preview image it outputs
  const gradient = graphOf(previewGradient(forward, segments, dims).model)
  const infos = inferShapes(gradient, dims)
  const gradientBytes = sizes(infos)
  const bytes = (value: string) => gradientBytes(value) ?? 0
  const forwardNodes = new Set(graph.node.map(n => n.name))
  const forwardValues = new Set(graph.node.flatMap(n => n.output ?? []))
  const saved = new Set(gradient.node.filter(n => !forwardNodes.has(n.name)).flatMap(n => n.input ?? []).filter(v => forwardValues.has(v)))
  return { weights, ...activationPeak(gradient, infos), saved: [...saved].reduce((sum, v) => sum + bytes(v), 0), upperBound, unknown }
}

export interface RunCost {
  /** UNet passes of plain sampling (a batch-2 CFG pass counts as 2) */
  samplingEvaluations: number
  /** UNet-pass equivalents of the guidance: per iteration a forward and a backward (~2 forwards) */
  guidanceEvaluations: number
  gradientPasses: number
  /** (sampling + guidance) / sampling */
  ratio: number
}

/**
 * Counts UNet work: K lookahead iterations cost about 3K UNet evaluations (times 2 with CFG in the preview, times
 * N with N steps inside it); recomputing in S segments adds the forward of all but the last segment, (S − 1)/S of one more.
 */
export function runCost(s: { steps: number; cfg: number; guideSteps: number[]; iters: number; previewCfg: number; guided: boolean; recur?: number; recompute?: number; previewSteps?: number }): RunCost {
  const perPass = (cfg: number) => (cfg > 1 ? 2 : 1)
  const samplingEvaluations = s.steps * perPass(s.cfg)
  const rounds = s.guided ? s.guideSteps.length * (s.recur ?? 1) : 0
  const gradientPasses = rounds * s.iters
  // per round two forwards of the preview (onnxruntime runs only what the asked outputs need): the one the guide's
  // inputs are found on (the face alignment of the id and perceptual guides; counted for every guide, the others
  // skip it) and the loss after the last update; each recurrence round also takes one sampler step
  const recurrenceSteps = s.guided ? s.guideSteps.length * ((s.recur ?? 1) - 1) * perPass(s.cfg) : 0
  const segments = s.recompute ?? 1
  const guidanceEvaluations = (gradientPasses * (3 + (segments - 1) / segments) + rounds * 2) * previewUnetCalls(s.previewSteps ?? 1, s.previewCfg) + recurrenceSteps
  return { samplingEvaluations, guidanceEvaluations, gradientPasses, ratio: (samplingEvaluations + guidanceEvaluations) / samplingEvaluations }
}
