// The lookahead's forward graph: x_t → ε (UNet) → preview latent → decoder → image → Σ wᵢ·lossᵢ(image).
// The engine differentiates it with respect to `latent` (through the UNet and through the preview formula).
import { UserError } from '../errors.js'
import { GraphBuilder, dtypeOf, type Dim } from '../onnx/builder.js'
import { embedModel, opsetOf } from '../onnx/compose.js'
import { graphOf, toNumber, type LoadedModel } from '../onnx/proto.js'
import type { Guide } from './guide.js'

export type PreviewKind = 'lcm' | 'x0'

export interface PreviewGraph {
  /** the ε model: the LCM UNet for 'lcm', the base UNet for 'x0' */
  unet: LoadedModel
  decoder: LoadedModel
  /** image = outputScale·decoder(inputScale·latent) + outputShift, in [-1,1] (see diffusion/decoders.ts) */
  decoderScales: { inputScale: number; outputScale: number; outputShift: number }
  /** classifier-free guidance inside the preview (x0 uses the sampler's CFG by default; the LCM preview none) */
  cfg: number
  latentShape: number[]
  imageSize: { height: number; width: number }
  /** the loss (a combination is one guide); undefined: the graph outputs only the decoded preview (figures) */
  guide?: Guide
}

/** Names of the graph's inputs besides the UNet's conditioning inputs (which keep their own names). */
export const LATENT = 'latent'
/** preview = coef_a·x_t + coef_b·ε (see schedulers.ts: naive x0 and LCM coefficients) */
export const COEF_A = 'coef_a'
export const COEF_B = 'coef_b'
export const LOSS = 'loss'
export const IMAGE = 'image'

function declaredShape(model: LoadedModel, name: string): { dtype: string; shape: Dim[] } {
  const input = graphOf(model.model).input.find(i => i.name === name)
  const tensor = input?.type?.tensorType
  if (!tensor) throw new UserError(`the UNet has no tensor input named ${name}`)
  const shape = (tensor.shape?.dim ?? []).map(d => (d.dimParam ? d.dimParam : toNumber(d.dimValue)))
  return { dtype: dtypeOf[tensor.elemType ?? 1] ?? 'float32', shape }
}

/**
 * Builds the preview (and loss) graph. Its inputs: `latent`, `coef_a`, `coef_b` and every UNet input other than
 * `sample` under its own name (timestep, encoder_hidden_states, text_embeds, time_ids, lora_scale…), with batch 2
 * when cfg > 1 ([uncond, text], as diffusers orders them). Outputs: `loss` (with a guide) and `image`.
 */
export function buildPreviewGraph(p: PreviewGraph): GraphBuilder {
  const opset = Math.max(17, opsetOf(p.unet.model), opsetOf(p.decoder.model))
  const g = new GraphBuilder('lookahead_preview', opset)
  const latent = g.input(LATENT, 'float32', p.latentShape)
  const a = g.input(COEF_A, 'float32', [])
  const b = g.input(COEF_B, 'float32', [])

  const unetInputs: Record<string, string> = {}
  for (const input of graphOf(p.unet.model).input) {
    const name = input.name ?? ''
    if (name === 'sample' || graphOf(p.unet.model).initializer.some(t => t.name === name)) continue
    const { dtype, shape } = declaredShape(p.unet, name)
    unetInputs[name] = g.input(name, dtype as never, shape)
  }
  const withCfg = p.cfg > 1
  unetInputs.sample = withCfg ? g.op('Concat', [latent, latent], { axis: 0 }) : latent
  let eps = embedModel(g, p.unet, unetInputs, 'unet/').out_sample
  if (!eps) throw new UserError('the UNet has no output named out_sample')
  if (withCfg) {
    // ε = ε_u + g·(ε_c − ε_u), eq. 6 of Ho & Salimans 2022
    const [uncond, text] = g.node('Split', [eps, g.ints([1, 1])], { axis: 0 }, 2)
    eps = g.op('Add', [uncond, g.op('Mul', [g.op('Sub', [text, uncond]), g.constant(p.cfg)])])
  }
  const preview = g.op('Add', [g.op('Mul', [latent, a]), g.op('Mul', [eps, b])])
  const decoderInput = graphOf(p.decoder.model).input[0].name ?? 'latent_sample'
  const { inputScale, outputScale, outputShift } = p.decoderScales
  const scaled = inputScale === 1 ? preview : g.op('Mul', [preview, g.constant(inputScale)])
  let decoded = Object.values(embedModel(g, p.decoder, { [decoderInput]: scaled }, 'decoder/'))[0]
  if (outputScale !== 1 || outputShift !== 0) decoded = g.op('Add', [g.op('Mul', [decoded, g.constant(outputScale)]), g.constant(outputShift)])
  g.outputAs(decoded, IMAGE, 'float32', [1, 3, p.imageSize.height, p.imageSize.width])

  if (p.guide) g.outputAs(p.guide.lossFragment(g, decoded, p.imageSize), LOSS, 'float32', [])
  return g
}
