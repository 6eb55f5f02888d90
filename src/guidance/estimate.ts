// What a guided run will cost, before running it (`lookahead guide --dry-run`): UNet evaluations, gradient
// passes, and the gradient pass's memory from the graphs alone: the weights, plus the activations of the
// gradient graph at its peak when each value is freed after its last reader (as onnxruntime's memory planner
// does), and, as an upper bound, every float value on the latent → loss path.
import { stat } from 'node:fs/promises'
import { differentiate } from '../onnx/autodiff.js'
import { DataType, externalDataFiles, graphOf, isExternal, type GraphProto, type LoadedModel, type TensorProto } from '../onnx/proto.js'
import { inferShapes } from '../onnx/shapes.js'
import { LATENT, LOSS } from './preview.js'

const BYTES: Partial<Record<number, number>> = { [DataType.FLOAT]: 4, [DataType.FLOAT16]: 2, [DataType.DOUBLE]: 8, [DataType.BFLOAT16]: 2 }

export interface GraphMemory {
  /** bytes of all weights: external data files plus inline initializers */
  weights: number
  /** peak bytes of live float values in the gradient graph, each freed after its last reader in graph order */
  peak: number
  /** bytes of the forward values the backward nodes read */
  saved: number
  /** bytes of every float value that depends on the latent: what the pass would hold if nothing were freed */
  upperBound: number
  /** values whose size could not be inferred (not counted) */
  unknown: number
}

/** Bytes of each value of a graph, from inferred shapes; undefined where a dim is not known. */
function sizes(graph: GraphProto, dims: Record<string, number>): (value: string) => number | undefined {
  const infos = inferShapes(graph, dims)
  return value => {
    const info = infos.get(value)
    const size = info?.dtype === undefined ? undefined : BYTES[info.dtype]
    if (size === undefined) return 0
    if (!info?.shape || info.shape.some(d => typeof d !== 'number')) return undefined
    return size * (info.shape as number[]).reduce((a, b) => a * b, 1)
  }
}

/**
 * The memory of the gradient pass of a forward graph whose input `latent` is differentiated (output `loss`).
 * `dims` fixes symbolic dims (batch_size, sequence_length, steps) as the pipeline feeds them.
 */
export async function graphMemory(forward: LoadedModel, dims: Record<string, number> = {}): Promise<GraphMemory> {
  const graph = graphOf(forward.model)
  let weights = 0
  for (const file of externalDataFiles(forward)) weights += (await stat(file)).size
  for (const t of graph.initializer as TensorProto[]) if (!isExternal(t)) weights += t.rawData?.length ?? 0

  const forwardBytes = sizes(graph, dims)
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

  // the gradient graph, as the project's autodiff writes it: its values freed after their last reader
  const gradient = graphOf(differentiate(forward, { wrt: [LATENT], of: LOSS, dims }).model)
  const gradientBytes = sizes(gradient, dims)
  const bytes = (value: string) => gradientBytes(value) ?? 0
  const forwardNodes = new Set(graph.node.map(n => n.name))
  const forwardValues = new Set(graph.node.flatMap(n => n.output ?? []))
  const saved = new Set(gradient.node.filter(n => !forwardNodes.has(n.name)).flatMap(n => n.input ?? []).filter(v => forwardValues.has(v)))
  const lastRead = new Map<string, number>()
  gradient.node.forEach((node, i) => node.input?.forEach(v => lastRead.set(v, i)))
  const outputs = new Set(gradient.output.map(o => o.name))
  const produced = new Set(gradient.node.flatMap(n => n.output ?? []))
  let live = 0
  let peak = 0
  gradient.node.forEach((node, i) => {
    for (const v of node.output ?? []) live += bytes(v)
    peak = Math.max(peak, live)
    const freed = new Set([...(node.input ?? []).filter(v => lastRead.get(v) === i), ...(node.output ?? []).filter(v => !lastRead.has(v))])
    for (const v of freed) if (produced.has(v) && !outputs.has(v)) live -= bytes(v)
  })
  return { weights, peak, saved: [...saved].reduce((sum, v) => sum + bytes(v), 0), upperBound, unknown }
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

/** Counts UNet work: K lookahead iterations cost about 3K UNet evaluations (times 2 with CFG in the preview). */
export function runCost(s: { steps: number; cfg: number; guideSteps: number[]; iters: number; previewCfg: number; guided: boolean; recur?: number }): RunCost {
  const perPass = (cfg: number) => (cfg > 1 ? 2 : 1)
  const samplingEvaluations = s.steps * perPass(s.cfg)
  const rounds = s.guided ? s.guideSteps.length * (s.recur ?? 1) : 0
  const gradientPasses = rounds * s.iters
  // per round one extra preview forward, for the guide's inputs found on the preview (face alignment); each
  // recurrence round also takes one sampler step
  const recurrenceSteps = s.guided ? s.guideSteps.length * ((s.recur ?? 1) - 1) * perPass(s.cfg) : 0
  const guidanceEvaluations = (gradientPasses * 3 + rounds) * perPass(s.previewCfg) + recurrenceSteps
  return { samplingEvaluations, guidanceEvaluations, gradientPasses, ratio: (samplingEvaluations + guidanceEvaluations) / samplingEvaluations }
}
