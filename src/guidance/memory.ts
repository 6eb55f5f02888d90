// Memory planning of a run, from its graphs alone (no session is opened, no weights are read): what the
// gradient pass and the other sessions hold (src/guidance/estimate.ts models onnxruntime's planner), and the
// first lower-memory settings that fit a limit.
import { existsSync } from 'node:fs'
import { graphOf, readModel, toNumber, type LoadedModel } from '../onnx/proto.js'
import { inferShapes } from '../onnx/shapes.js'
import { readDecoderFile } from '../diffusion/decoders.js'
import { ModelsFolder } from '../diffusion/models-folder.js'
import { samplerDims } from '../diffusion/pipeline.js'
import { pipelineDims, previewCfgOf, previewForward, previewModels, previewShape, type LookaheadSettings } from './engine.js'
import { activationPeak, cpuNchwcBlock, graphMemory, runCost, weightBytes, type GraphMemory, type RunCost } from './estimate.js'
import { pixelGuide } from './guide.js'
import { previewStepsOf } from './previews.js'

/** The memory of the sessions a run holds beside the gradient pass, in bytes. */
export interface HeldSessions {
  weights: number
  samplingActivations: number
}

export interface DryRun extends RunCost {
  memory: GraphMemory
  /** the sessions a run holds beside the gradient pass: the sampling UNet, the text encoders, the final decoder */
  sessions: HeldSessions
  /** the gradient pass (weights + activations at their peak) and the other sessions, in bytes */
  peakBytes: number
  latentShape: number[]
}

/**
 * What `lookahead` would cost with these settings, from the graphs alone (no session is opened, no weights
 * are read): UNet evaluations, gradient passes, and the gradient pass's peak memory.
 */
export async function dryRun(options: LookaheadSettings, held?: HeldSessions): Promise<DryRun> {
  const settings = { ...options, models: await ModelsFolder.of(options.models) } // opened once for the pieces below
  const kind = settings.preview
  const guided = kind !== 'none' && settings.iters > 0 && settings.guideSteps.length > 0
  const previewCfg = kind === 'none' ? 1 : previewCfgOf(settings, kind)
  const { base, latentShape } = await samplingUnet(settings)
  const cost = runCost({ ...settings, previewCfg, guided, previewSteps: kind === 'none' ? 1 : previewStepsOf(kind, settings.previewSteps) })
  const sessions = held ?? (await heldSessions(settings, base))
  const others = sessions.weights + sessions.samplingActivations
  if (kind === 'none' || !guided) return { ...cost, memory: { weights: 0, peak: 0, lowerBound: 0, saved: 0, upperBound: 0, unknown: 0 }, sessions, peakBytes: others, latentShape }
  const parts = await previewModels(settings.models, kind, settings.previewDecoder)
  const shape = previewShape(previewCfg, latentShape, settings.guideSize, previewStepsOf(kind, settings.previewSteps))
  const memory = await graphMemory(previewForward(parts, shape, settings.guide ?? pixelGuide()), pipelineDims(previewCfg), settings.recompute, layoutBlock(settings))
  return { ...cost, memory, sessions, peakBytes: memory.weights + memory.peak + others, latentShape }
}


/** The base UNet (its graph; no weights are read) and the latent shape it samples at these settings. */
async function samplingUnet(settings: LookaheadSettings): Promise<{ base: LoadedModel; latentShape: number[] }> {
  const base = await readModel((await ModelsFolder.of(settings.models)).path('unet'))
  const channels = graphOf(base.model).input.find(i => i.name === 'sample')?.type?.tensorType?.shape?.dim?.[1]?.dimValue
  return { base, latentShape: [1, channels ? toNumber(channels) : 4, settings.size.height / 8, settings.size.width / 8] }
}

/** The sessions a run holds beside the gradient pass: the sampling UNet, the text encoders, the final decoder. */
async function heldSessions(settings: LookaheadSettings, base: LoadedModel): Promise<HeldSessions> {
  const folder = await ModelsFolder.of(settings.models)
  let weights = await weightBytes(base)
  for (const { encoder } of folder.textEncoders()) if (existsSync(encoder)) weights += await weightBytes(await readModel(encoder))
  // the final decoder where it is: an ONNX export, or TAESDXL's .safetensors built into its graph (weights as held)
  const decoder = folder.decoderFile(folder.finalDecoder(settings.decoder))
  if (decoder) weights += await weightBytes(await readDecoderFile(decoder))
  // a CUDA arena keeps the sampling UNet's activations at their peak between its runs
  const graph = graphOf(base.model)
  const infos = inferShapes(graph, samplerDims(graph, settings.cfg, settings.size))
  return { weights, samplingActivations: activationPeak(graph, infos, layoutBlock(settings)).peak }
}

/** The channel block of the layout onnxruntime runs Convs in: its NCHWc on the CPU; CUDA keeps NCHW. */
const layoutBlock = (settings: LookaheadSettings) => (settings.session?.device === 'cuda' ? 1 : cpuNchwcBlock())

/** A way to fit the gradient pass into less memory, with its estimate. */
export interface MemoryFit {
  recompute: number
  guideSize?: number
  cost: DryRun
}

/**
 * The first settings whose run (gradient pass and other sessions) fits in `limitBytes`: recomputation first
 * (full resolution, at most one more UNet evaluation per iteration), then a smaller preview (--guide-size, a
 * blurrier guide) with it, at `guideSizes` (none in a demo world, whose models work at its own size only).
 */
export async function fitMemory(options: LookaheadSettings, limitBytes: number, guideSizes = [768, 512]): Promise<MemoryFit | undefined> {
  const settings = { ...options, models: await ModelsFolder.of(options.models) } // opened once for every candidate
  const { base } = await samplingUnet(settings)
  const held = await heldSessions(settings, base) // the same for every candidate
  const side = Math.min(settings.size.height, settings.size.width)
  const sizes = [settings.guideSize, ...guideSizes.filter(s => s < (settings.guideSize ?? side))]
  for (const guideSize of sizes) {
    for (const recompute of [1, 2, 4, 8]) {
      if (recompute < (settings.recompute ?? 1) || (recompute === (settings.recompute ?? 1) && guideSize === settings.guideSize)) continue
      const cost = await dryRun({ ...settings, guideSize, recompute }, held)
      if (cost.peakBytes <= limitBytes) return { recompute, guideSize, cost }
    }
  }
  return undefined
}

