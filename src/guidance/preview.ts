// The lookahead's forward graph: x_t → ε (UNet) → preview latent → decoder → image → Σ wᵢ·lossᵢ(image).
// The engine differentiates it with respect to `latent` (through the UNet and through the preview formula).
// Which previews there are, and what each runs, is one table: previews.ts.
import { UserError } from '../errors.js'
import { GraphBuilder, dataTypeOf, dtypeOf, type Dim, type DType } from '../onnx/builder.js'
import { differentiate } from '../onnx/autodiff.js'
import { embedModel, embedModelAgain, opsetOf } from '../onnx/compose.js'
import { foldGraph } from '../onnx/fold.js'
import { graphOf, toNumber, type LoadedModel } from '../onnx/proto.js'
import { initialNoise } from '../diffusion/pipeline.js'
import { alphaBar } from '../diffusion/schedulers.js'
import type { Tensor } from '../diffusion/conditioning.js'
import type { Guide } from './guide.js'
import { PREVIEWS, previewTimesteps, type PreviewKind } from './previews.js'

export interface PreviewGraph {
  /** the ε model: the LCM UNet for 'lcm', the base UNet for 'x0' */
  unet: LoadedModel
  decoder: LoadedModel
  /** image = outputScale·decoder(inputScale·latent) + outputShift, in [-1,1] (see diffusion/decoders.ts) */
  decoderScales: { inputScale: number; outputScale: number; outputShift: number }
  /** classifier-free guidance inside the preview (x0 uses the sampler's CFG by default; the LCM preview none) */
  cfg: number
  latentShape: number[]
  /** the decoded preview's size: latentShape×8, or smaller to guide at a lower resolution (less memory) */
  imageSize: { height: number; width: number }
  /** the loss (a combination is one guide); undefined: the graph outputs only the decoded preview (figures) */
  guide?: Guide
  /** steps inside the preview (default 1, the paper's): the UNet is called this many times, on one copy of its weights */
  steps?: number
}

/** Names of the graph's inputs besides the UNet's conditioning inputs (which keep their own names). */
export const LATENT = 'latent'
/** preview = coef_a·x_t + coef_b·ε (see schedulers.ts: naive x0 and LCM coefficients) */
export const COEF_A = 'coef_a'
export const COEF_B = 'coef_b'
export const LOSS = 'loss'
export const IMAGE = 'image'

/**
 * The gradient model of a preview's forward graph: d loss / d latent, with the loss and (where the forward outputs
 * it) the decoded preview, in `segments` recomputed segments, folded. The engine's gradient sessions and the
 * memory estimate both derive it here, so the estimate measures the graph that runs.
 */
export function previewGradient(forward: LoadedModel, segments = 1, dims?: Record<string, number>): LoadedModel {
  const keep = graphOf(forward.model).output.some(o => o.name === IMAGE) ? [IMAGE] : []
  return foldGraph(differentiate(forward, { wrt: [LATENT], of: LOSS, keep, segments, dims }), dims)
}
/** The inputs of preview step i ≥ 1: its timestep, its coefficients, and x_{t_i} = renoise_a·x̂₀ + renoise_b·noise. */
export const stepInput = (name: string, i: number) => (i === 0 ? name : `${name}_${i}`)
export const TIMESTEP = 'timestep'
export const NOISE = 'noise'
export const RENOISE_A = 'renoise_a'
export const RENOISE_B = 'renoise_b'

/**
 * The preview's scalar inputs at timestep t besides the conditioning: each step's coefficients, the later steps'
 * timesteps (fed like `timestep`), their re-noising coefficients √ᾱ, √(1−ᾱ) and noise (seeded by `noiseSeed`, so
 * the preview is a fixed function of x_t through one guide step). LCM's multistep sampling re-noises x̂₀ with fresh noise.
 */
export function previewStepInputs(kind: PreviewKind, t: number, steps: number, latentShape: number[], noiseSeed: number) {
  const coefficients: Record<string, number> = {}
  const timesteps: Record<string, number> = {}
  const noises: Record<string, Tensor> = {}
  previewTimesteps(t, steps).forEach((ti, i) => {
    const { a, b } = PREVIEWS[kind].coefficients(ti)
    Object.assign(coefficients, { [stepInput(COEF_A, i)]: a, [stepInput(COEF_B, i)]: b })
    if (i === 0) return
    timesteps[stepInput(TIMESTEP, i)] = ti
    Object.assign(coefficients, { [stepInput(RENOISE_A, i)]: Math.sqrt(alphaBar(ti)), [stepInput(RENOISE_B, i)]: Math.sqrt(1 - alphaBar(ti)) })
    noises[stepInput(NOISE, i)] = initialNoise(noiseSeed * 7919 + i, latentShape)
  })
  return { coefficients, timesteps, noises }
}

function declaredInput(model: LoadedModel, name: string): { dtype: DType; shape: Dim[] } {
  const input = graphOf(model.model).input.find(i => i.name === name)
  const tensor = input?.type?.tensorType
  if (!tensor) throw new UserError(`${model.dir}: the model has no tensor input named ${name}`)
  const shape = (tensor.shape?.dim ?? []).map(d => (d.dimParam ? d.dimParam : toNumber(d.dimValue)))
  return { dtype: dtypeOf[tensor.elemType ?? 1] ?? 'float32', shape }
}

/** The element type a model declares for its output `name` (float32 when it does not say). */
function outputType(model: LoadedModel, name: string): DType {
  const output = graphOf(model.model).output.find(o => o.name === name)
  return dtypeOf[output?.type?.tensorType?.elemType ?? 1] ?? 'float32'
}

/** `value` of type `from` as type `to`: a Cast where they differ (fp16 exports inside a float32 loss). */
function cast(g: GraphBuilder, value: string, from: DType, to: DType): string {
  return from === to ? value : g.op('Cast', [value], { to: dataTypeOf[to] })
}

/**
 * Builds the preview (and loss) graph. Its inputs: `latent`, `coef_a`, `coef_b` and every UNet input other than
 * `sample` under its own name (timestep, encoder_hidden_states, text_embeds, time_ids, lora_scale…), with batch 2
 * when cfg > 1 ([uncond, text], as diffusers orders them); with steps > 1 also each later step's `timestep_i`,
 * `coef_a_i`, `coef_b_i`, `renoise_a_i`, `renoise_b_i` and `noise_i` (previewStepInputs gives them all).
 * Outputs: `loss` (with a guide) and `image`.
 */
export function buildPreviewGraph(p: PreviewGraph): GraphBuilder {
  const opset = Math.max(17, opsetOf(p.unet.model), opsetOf(p.decoder.model))
  const g = new GraphBuilder('lookahead_preview', opset)
  const latent = g.input(LATENT, 'float32', p.latentShape)

  const unetInputs: Record<string, string> = {}
  for (const input of graphOf(p.unet.model).input) {
    const name = input.name ?? ''
    if (name === 'sample' || graphOf(p.unet.model).initializer.some(t => t.name === name)) continue
    const { dtype, shape } = declaredInput(p.unet, name)
    unetInputs[name] = g.input(name, dtype, shape)
  }
  // guiding at a lower resolution: the preview sees x_t resized (linear), the gradient flows back through it
  const [h, w] = [p.imageSize.height / 8, p.imageSize.width / 8]
  const x = h === p.latentShape[2] && w === p.latentShape[3]
    ? latent
    : g.op('Resize', [latent, '', '', g.ints([p.latentShape[0], p.latentShape[1], h, w])], { mode: 'linear', coordinate_transformation_mode: 'half_pixel' })
  const shape = [p.latentShape[0], p.latentShape[1], h, w]
  const withCfg = p.cfg > 1
  /** One preview step: ε from the UNet (its i-th call, on the first call's weights), then x̂₀ = a·x + b·ε. */
  const previewStep = (xi: string, i: number) => {
    const sample = withCfg ? g.op('Concat', [xi, xi], { axis: 0 }) : xi
    const feeds: Record<string, string> = { ...unetInputs, sample: cast(g, sample, 'float32', declaredInput(p.unet, 'sample').dtype) }
    if (i > 0) feeds[TIMESTEP] = g.input(stepInput(TIMESTEP, i), declaredInput(p.unet, TIMESTEP).dtype, declaredInput(p.unet, TIMESTEP).shape)
    const unetOutput = (i === 0 ? embedModel(g, p.unet, feeds, 'unet/') : embedModelAgain(g, p.unet, feeds, `unet${i}/`, 'unet/')).out_sample
    if (!unetOutput) throw new UserError('the UNet has no output named out_sample')
    // the preview, the loss and the update stay float32 whatever the UNet's precision
    let eps = cast(g, unetOutput, outputType(p.unet, 'out_sample'), 'float32')
    if (withCfg) {
      // ε = ε_u + g·(ε_c − ε_u), eq. 6 of Ho & Salimans 2022
      const [uncond, text] = g.node('Split', [eps, g.ints([1, 1])], { axis: 0 }, 2)
      eps = g.op('Add', [uncond, g.op('Mul', [g.op('Sub', [text, uncond]), g.constant(p.cfg)])])
    }
    const [a, b] = [g.input(stepInput(COEF_A, i), 'float32', []), g.input(stepInput(COEF_B, i), 'float32', [])]
    return g.op('Add', [g.op('Mul', [xi, a]), g.op('Mul', [eps, b])])
  }
  let preview = previewStep(x, 0)
  for (let i = 1; i < (p.steps ?? 1); i++) {
    // x_{t_i} = √ᾱ_{t_i}·x̂₀ + √(1−ᾱ_{t_i})·noise (LCM's multistep sampling), then the next step from there
    const noise = g.input(stepInput(NOISE, i), 'float32', shape)
    const [ra, rb] = [g.input(stepInput(RENOISE_A, i), 'float32', []), g.input(stepInput(RENOISE_B, i), 'float32', [])]
    preview = previewStep(g.op('Add', [g.op('Mul', [preview, ra]), g.op('Mul', [noise, rb])]), i)
  }
  const decoderInput = graphOf(p.decoder.model).input[0].name ?? 'latent_sample'
  const { inputScale, outputScale, outputShift } = p.decoderScales
  const scaled = inputScale === 1 ? preview : g.op('Mul', [preview, g.constant(inputScale)])
  const decoderOutput = graphOf(p.decoder.model).output[0].name ?? 'sample'
  const decoderFeed = cast(g, scaled, 'float32', declaredInput(p.decoder, decoderInput).dtype)
  let decoded = cast(g, embedModel(g, p.decoder, { [decoderInput]: decoderFeed }, 'decoder/')[decoderOutput], outputType(p.decoder, decoderOutput), 'float32')
  if (outputScale !== 1 || outputShift !== 0) decoded = g.op('Add', [g.op('Mul', [decoded, g.constant(outputScale)]), g.constant(outputShift)])
  g.outputAs(decoded, IMAGE, 'float32', [1, 3, p.imageSize.height, p.imageSize.width])

  if (p.guide) g.outputAs(p.guide.lossFragment(g, decoded, p.imageSize), LOSS, 'float32', [])
  return g
}
