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
// LCM-preview gradient at the tiny depth (graphOptimizationLevel 'all', the fused SiLU rule): 27.4 MB modelled
// with the CPU's NCHWc layout (nchwcLayout; 24.9 MB without), 27.2 MB in the arena (25.6 MB at 'basic', which has
// no NCHWc layout), RSS 30.0 MB; the planner replayed on onnxruntime's own optimised graph in its order: 27.4 MB.
import { readFileSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import { arch } from 'node:os'
import { externalDataFiles, graphOf, isExternal, onnx, type GraphProto, type LoadedModel, type NodeProto, type TensorProto } from '../onnx/proto.js'
import { floatBytes, inferShapes, intAttr, stringAttr, type Info } from '../onnx/shapes.js'
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
 * `layout` rewrites the nodes that run before they are ordered, as onnxruntime's layout passes do (nchwcLayout).
 * Returns the nodes that run, in that order, with those Identities gone and their values renamed.
 */
export function executionOrder(nodes: NodeProto[], weights: Set<string>, graphOutputs: Set<string>, layout?: Layout): NodeProto[] {
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
  const laid = layout ? layout(running, constant, graphOutputs) : running
  const producer = new Map<string, number>()
  laid.forEach((node, i) => { for (const v of node.output ?? []) if (v) producer.set(v, i) })
  const producers = laid.map(node => [...new Set((node.input ?? []).flatMap(v => (producer.has(v) ? [producer.get(v)!] : [])))].sort((a, b) => a - b))
  const read = new Set(producers.flat())
  // a stack of [node, leaving]: a node is entered, its producers pushed above it, and it runs when left
  const stack: [number, boolean][] = laid.flatMap((_, i) => (read.has(i) ? [] : [[i, false] as [number, boolean]]))
  const entered = new Array<boolean>(laid.length).fill(false)
  const order: NodeProto[] = []
  while (stack.length > 0) {
    const [i, leaving] = stack.pop()!
    if (leaving) order.push(laid[i])
    else if (!entered[i]) {
      entered[i] = true
      stack.push([i, true])
      for (const p of producers[i]) if (!entered[p]) stack.push([p, false])
    }
  }
  return order
}

/** A rewrite onnxruntime applies to the nodes that run (after folding and Identity elimination), before it orders them. */
export type Layout = (running: NodeProto[], constant: Set<string>, graphOutputs: Set<string>) => NodeProto[]

/**
 * MLAS's NCHWc channel block on this machine (MlasNchwcGetBlockSize): 16 with AVX-512F, 8 with AVX2, else 1,
 * where onnxruntime leaves the layout alone (it registers its NchwcTransformer only for a block above 1; x86-64
 * only, read from /proc/cpuinfo where there is one, else AVX2 assumed).
 */
export function cpuNchwcBlock(): number {
  cpuBlock ??= readCpuNchwcBlock() // every estimate asks; the CPU does not change
  return cpuBlock
}
let cpuBlock: number | undefined

function readCpuNchwcBlock(): number {
  if (arch() !== 'x64') return 1
  let flags: string
  try {
    flags = readFileSync('/proc/cpuinfo', 'utf8')
  } catch {
    return 8
  }
  return /\bavx512f\b/.test(flags) ? 16 : /\bavx2\b/.test(flags) ? 8 : 1
}

const NCHWC = 'com.microsoft.nchwc'
const FLOAT = onnx.TensorProto.DataType.FLOAT

/**
 * onnxruntime's CPU NCHWc layout (its NchwcTransformer, at graphOptimizationLevel 'all', with MLAS's channel
 * block `block`): a Conv with constant float weights whose channels suit the block runs on blocked tensors, its
 * output's channels padded up to the block. Its input gets a reordered copy (ReorderInput, shared by the Convs
 * that read the same value) unless it is blocked already or has fewer channels than a block (read as it is).
 * Pools, and nodes all of whose computed inputs are blocked (Add, Sum, Mul of equal shapes, Concat on channels,
 * Relu/Sigmoid/Tanh, nearest Resize), stay blocked; an Add of a single-use Conv's output is fused into the Conv
 * (its 4th input) and so is an activation. A blocked value that any other node, or the graph's outputs, still
 * reads gets a NCHW copy (ReorderOutput). The new nodes go after the others, as onnxruntime adds them (their
 * indices decide the walk's order); a blocked value is named `value#nchwc`, its Info set in `infos` (padded).
 * BatchNormalization and Transpose, which onnxruntime also converts after a blocked value, are left as they are.
 */
export function nchwcLayout(infos: Map<string, Info>, block: number): Layout {
  return (running, constant, graphOutputs) => {
    if (block <= 1) return running
    const uses = new Map<string, number>()
    for (const node of running) for (const v of node.input ?? []) if (v) uses.set(v, (uses.get(v) ?? 0) + 1)
    for (const v of graphOutputs) uses.set(v, (uses.get(v) ?? 0) + 1)
    const produced = new Set(running.flatMap(node => node.output ?? []))
    interface Blocked { value: string; producer: NodeProto; channels: number; uses: number; remaining: number }
    const blocked = new Map<string, Blocked>() // an original value → its blocked form
    const reordered = new Map<string, string>() // an original value → its ReorderInput copy
    const activated = new Set<NodeProto>()
    const kept: (NodeProto | undefined)[] = [...running]
    const added: NodeProto[] = []
    const shapeOf = (v: string) => infos.get(v)?.shape
    const add = (opType: string, input: string[], output: string[], node?: NodeProto) => {
      const created = new onnx.NodeProto({ name: `${output[0]}_${opType}`, opType, domain: NCHWC, input, output, attribute: node?.attribute })
      added.push(created)
      return created
    }
    // the node's output becomes blocked, `channels` of it real; `producer` writes its blocked form
    const makeBlocked = (original: string, producer: NodeProto, channels: number) => {
      const value = `${original}#nchwc`
      const shape = shapeOf(original)
      infos.set(value, { dtype: FLOAT, shape: shape && [shape[0], Math.ceil(channels / block) * block, ...shape.slice(2)] })
      producer.output[0] = value
      blocked.set(original, { value, producer, channels, uses: uses.get(original) ?? 0, remaining: uses.get(original) ?? 0 })
    }
    // the node's first input as a blocked value: the blocked form, or a shared ReorderInput copy
    const blockedInput = (v: string) => {
      const b = blocked.get(v)
      if (b) {
        b.remaining--
        return b.value
      }
      if (!reordered.has(v)) {
        reordered.set(v, `${v}#reordered`)
        infos.set(`${v}#reordered`, infos.get(v) ?? {})
        add('ReorderInput', [v], [`${v}#reordered`])
      }
      return reordered.get(v)!
    }
    // a kept node now reading blocked inputs and writing a blocked value
    const keepBlocked = (at: number, node: NodeProto, input: string[], channels: number) => {
      for (const v of node.input) if (blocked.has(v)) blocked.get(v)!.remaining--
      const rewritten = new onnx.NodeProto({ ...node, input, output: [...node.output] })
      kept[at] = rewritten
      makeBlocked(node.output[0], rewritten, channels)
    }
    // a single-use nchwc Conv that has no activation nor Sum yet takes over `node` (an Add or activation)
    const fusable = (b: Blocked) => b.producer.opType === 'Conv' && b.producer.domain === NCHWC && b.uses === 1 && !activated.has(b.producer)
    const fuse = (at: number, node: NodeProto, into: Blocked) => {
      kept[at] = undefined
      blocked.set(node.output[0], { ...into, uses: uses.get(node.output[0]) ?? 0, remaining: uses.get(node.output[0]) ?? 0 })
    }
    running.forEach((node, at) => {
      const op = (node.domain ?? '') === '' ? node.opType : ''
      const input = node.input ?? []
      const x = input[0]
      if (op === 'Conv') {
        const w = infos.get(input[1])
        const b = input[2] ? infos.get(input[2]) : undefined
        if (!constant.has(input[1]) || w?.dtype !== FLOAT || w.shape?.length !== 4) return
        if (input[2] && (!constant.has(input[2]) || b?.dtype !== FLOAT || b.shape?.length !== 1 || b.shape[0] !== w.shape[0])) return
        const [outC, inC] = w.shape as number[]
        const group = intAttr(node, 'group', 1)
        let reorder = true
        if (group > 1) {
          if (outC % block !== 0) return
          if (!(inC === 1 && outC === group) && (inC % block !== 0 || outC % group !== 0 || (outC / group) % block !== 0)) return
        } else if (inC < block) reorder = false
        else if (inC % block !== 0) return
        const conv = add('Conv', [reorder ? blockedInput(x) : x, ...input.slice(1)], [node.output[0]], node)
        kept[at] = undefined
        makeBlocked(node.output[0], conv, outC)
        return
      }
      const shape = shapeOf(x)
      // the global pools only after a blocked value
      if (op === 'MaxPool' || op === 'AveragePool' || ((op === 'GlobalMaxPool' || op === 'GlobalAveragePool') && blocked.has(x))) {
        const channels = shape?.[1]
        if (node.output.length > 1 || infos.get(x)?.dtype !== FLOAT || shape?.length !== 4 || typeof channels !== 'number' || channels % block !== 0) return
        kept[at] = undefined
        makeBlocked(node.output[0], add(op, [blockedInput(x)], [node.output[0]], node), channels)
        return
      }
      // the rest only where every computed input is blocked already
      if (input.length === 0 || !input.every(v => !v || !produced.has(v) || blocked.has(v))) return
      const ins = input.map(v => blocked.get(v))
      if (op === 'Add' || op === 'Sum' || op === 'Mul') {
        if (!ins.every(b => b && b.channels === ins[0]!.channels)) return
        if (!input.every(v => JSON.stringify(shapeOf(v)) === JSON.stringify(shape) && shape?.every(d => typeof d === 'number'))) return
        const into = op !== 'Mul' && ins.length === 2 ? ins.find(b => fusable(b!) && b!.producer.input.length < 4) : undefined
        if (into) {
          for (const b of ins) b!.remaining--
          into.producer.input[2] ??= ''
          into.producer.input[3] = ins.find(b => b !== into)!.value
          return fuse(at, node, into)
        }
        return keepBlocked(at, node, ins.map(b => b!.value), ins[0]!.channels)
      }
      if (op === 'Concat') {
        if (intAttr(node, 'axis', 0) !== 1 || !ins.every(b => b && b.channels % block === 0)) return
        return keepBlocked(at, node, ins.map(b => b!.value), ins.reduce((sum, b) => sum + b!.channels, 0))
      }
      const first = ins[0]
      if (!first) return
      if (op === 'Relu' || op === 'Sigmoid' || op === 'Tanh') {
        if (!fusable(first)) return keepBlocked(at, node, [first.value], first.channels)
        first.remaining--
        activated.add(first.producer)
        return fuse(at, node, first)
      }
      if (op === 'Resize' || op === 'Upsample') {
        // nearest, by integer scales of the spatial dims only (onnxruntime reads them from the constant scales)
        const out = shapeOf(node.output[0])
        if (stringAttr(node, 'mode', 'nearest') !== 'nearest' || !constant.has(input[input.length - 1]) || input.length > 3) return
        if (op === 'Resize' && input.length === 3 && (stringAttr(node, 'coordinate_transformation_mode', '') !== 'asymmetric' || stringAttr(node, 'nearest_mode', '') !== 'floor')) return
        if (!shape || !out || out.length !== 4 || !out.every((d, i) => typeof d === 'number' && typeof shape[i] === 'number' && d % (shape[i] as number) === 0 && (i > 1 || d === shape[i]))) return
        first.remaining--
        kept[at] = undefined
        makeBlocked(node.output[0], add('Upsample', [first.value], [node.output[0]]), first.channels)
      }
    })
    for (const [original, b] of blocked) if (b.remaining > 0) add('ReorderOutput', [b.value], [original])
    return [...kept.filter((node): node is NodeProto => node !== undefined), ...added]
  }
}

/** Bytes of a model's weights: its external data files and its inline initializers. */
export async function weightBytes(model: LoadedModel): Promise<number> {
  let bytes = 0
  for (const file of externalDataFiles(model)) bytes += (await stat(file)).size
  for (const t of graphOf(model.model).initializer as TensorProto[]) if (!isExternal(t)) bytes += t.rawData?.length ?? 0
  return bytes
}

/** A graph's peak bytes of activations as onnxruntime runs and plans it, and if each were freed at once (`infos`: its inferred shapes, dims fixed). */
export function activationPeak(graph: GraphProto, infos = inferShapes(graph), nchwcBlock = cpuNchwcBlock()): { peak: number; lowerBound: number } {
  const laidInfos = new Map(infos) // with the blocked values the NCHWc layout adds
  const outputs = new Set(graph.output.map(o => o.name!))
  const nodes = executionOrder(graph.node as NodeProto[], new Set(graph.initializer.map(t => t.name!)), outputs, nchwcLayout(laidInfos, nchwcBlock))
  const size = sizes(laidInfos)
  const bytes = (value: string) => size(value) ?? 0
  const key = reuseKey(laidInfos)
  return { peak: plannedPeak(nodes, bytes, key, outputs), lowerBound: plannedPeak(nodes, bytes, key, outputs, false) }
}

/**
 * The memory of the gradient pass of a forward graph whose input `latent` is differentiated (output `loss`).
 * `dims` fixes symbolic dims (batch_size, sequence_length, steps) as the pipeline feeds them.
 */
export async function graphMemory(forward: LoadedModel, dims: Record<string, number> = {}, segments = 1, nchwcBlock = cpuNchwcBlock()): Promise<GraphMemory> {
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
  return { weights, ...activationPeak(gradient, infos, nchwcBlock), saved: [...saved].reduce((sum, v) => sum + bytes(v), 0), upperBound, unknown }
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
