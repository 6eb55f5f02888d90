// What a guided run will cost, before running it (`lookahead guide --dry-run`): UNet evaluations, gradient
// passes, and peak memory estimated from the graph: the weights, plus the activations the backward pass keeps
// (every float value on the latent → loss path, an upper bound: onnxruntime may free or share a few).
import { stat } from 'node:fs/promises'
import { DataType, externalDataFiles, graphOf, isExternal, type LoadedModel, type TensorProto } from '../onnx/proto.js'
import { inferShapes } from '../onnx/shapes.js'
import { LATENT } from './preview.js'

const BYTES: Partial<Record<number, number>> = { [DataType.FLOAT]: 4, [DataType.FLOAT16]: 2, [DataType.DOUBLE]: 8, [DataType.BFLOAT16]: 2 }

export interface GraphMemory {
  /** bytes of all weights: external data files plus inline initializers */
  weights: number
  /** bytes of the float values that depend on the latent (kept for the backward pass) */
  activations: number
  /** values whose size could not be inferred (not counted) */
  unknown: number
}

/** Weights and kept activations of a forward graph whose input `latent` is differentiated. */
export async function graphMemory(forward: LoadedModel, dims: Record<string, number> = {}): Promise<GraphMemory> {
  const graph = graphOf(forward.model)
  let weights = 0
  for (const file of externalDataFiles(forward)) weights += (await stat(file)).size
  for (const t of graph.initializer as TensorProto[]) if (!isExternal(t)) weights += t.rawData?.length ?? 0
  const infos = inferShapes(graph, dims)
  const active = new Set([LATENT])
  let activations = 0
  let unknown = 0
  for (const node of graph.node) {
    if (!node.input?.some(name => active.has(name))) continue
    for (const name of node.output ?? []) {
      const info = infos.get(name)
      const size = info?.dtype === undefined ? undefined : BYTES[info.dtype]
      if (size === undefined) continue
      active.add(name)
      const shape = info?.shape
      if (!shape || shape.some(d => typeof d !== 'number')) unknown++
      else activations += size * (shape as number[]).reduce((a, b) => a * b, 1)
    }
  }
  return { weights, activations, unknown }
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
