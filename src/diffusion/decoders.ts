// Latents → images in [-1,1]: the SDXL VAE decoder (optimum's vae_decoder wraps vae.decode, so it takes
// latents / 0.13025 and returns roughly [-1,1]; keep it fp32, SDXL's VAE overflows in fp16) and TAESDXL
// (takes the UNet-space latents as they are; diffusers' DecoderTiny returns [-1,1], madebyollin's raw
// taesd.py Decoder [0,1] — told apart by the graph's last op, and normalised). TAESDXL may also be its published
// weights (taesdxl_decoder.safetensors), built into a graph by taesd.ts.
import { UserError } from '../errors.js'
import { graphOf, readModel, type LoadedModel, type ModelProto } from '../onnx/proto.js'
import { openSession, type Session, type SessionSettings } from '../onnx/session.js'
import { inputTensor, outputTensor, type Tensor } from './conditioning.js'
import type { ModelsFolder } from './models-folder.js'
import { taesdModel } from './taesd.js'

/** SDXL's vae scaling_factor (vae_decoder/config.json of the official export). */
export const VAE_SCALING_FACTOR = 0.13025

export type DecoderKind = 'vae' | 'taesd'

/** A decoder file as a model: an ONNX export, or the TAESD decoder built from .safetensors weights. */
export const readDecoderFile = (path: string): Promise<LoadedModel> =>
  path.endsWith('.safetensors') ? taesdModel(path, 'decoder') : readModel(path)

export interface Decoder {
  kind: DecoderKind
  session: Session
  /** what latents are multiplied by before the model: 1/0.13025 for the VAE, 1 for TAESDXL */
  inputScale: number
  /** image = outputScale·y + outputShift maps the model's output y to [-1,1] */
  outputScale: number
  outputShift: number
}

/**
 * '[0,1]' when the graph ends in a Conv (madebyollin's raw taesd.py Decoder, whose last layer is a conv),
 * else '[-1,1]' (diffusers' DecoderTiny ends in x·2 − 1; the folder contract says [-1,1]).
 */
export function taesdOutputRange(model: ModelProto): '[-1,1]' | '[0,1]' {
  // models we write say so in their metadata (key output_range)
  const declared = model.metadataProps?.find(p => p.key === 'output_range')?.value
  if (declared === '[-1,1]' || declared === '[0,1]') return declared
  const graph = graphOf(model)
  const producer = (value: string) => graph.node.find(n => n.output?.includes(value))
  let last = producer(graph.output[0]?.name ?? '')
  while (last?.opType === 'Identity') last = producer(last.input?.[0] ?? '')
  return last?.opType === 'Conv' ? '[0,1]' : '[-1,1]'
}

/** How a decoder's input and output are scaled, from its kind and graph (no weights are read). */
export function decoderScales(kind: DecoderKind, model: ModelProto): Pick<Decoder, 'inputScale' | 'outputScale' | 'outputShift'> {
  if (kind === 'vae') return { inputScale: 1 / VAE_SCALING_FACTOR, outputScale: 1, outputShift: 0 }
  const zeroToOne = taesdOutputRange(model) === '[0,1]'
  return { inputScale: 1, outputScale: zeroToOne ? 2 : 1, outputShift: zeroToOne ? -1 : 0 }
}

/** The folder's decoder of this kind, opened (where it is: ModelsFolder.decoderPath). */
export async function openDecoder(folder: ModelsFolder, kind: DecoderKind, settings: SessionSettings = {}): Promise<Decoder> {
  const path = await folder.decoderPath(kind)
  const session = await openSession(path, settings)
  return { kind, session, ...decoderScales(kind, (await readModel(path)).model) }
}

/** Decodes UNet-space latents [B,4,h,w] to images [B,3,8h,8w] in [-1,1]. */
export async function decode(decoder: Decoder, latents: Tensor): Promise<Tensor> {
  const [input] = decoder.session.inputs
  if (!input) throw new UserError(`${decoder.session.path} has no input`)
  const scaled = latents.data.map(v => v * decoder.inputScale)
  const result = await decoder.session.run({ [input.name]: inputTensor(input, scaled, latents.dims) })
  const image = outputTensor(Object.values(result)[0])
  if (decoder.outputScale !== 1 || decoder.outputShift !== 0) image.data = image.data.map(v => decoder.outputScale * v + decoder.outputShift)
  return image
}

/**
 * Decodes a run's final latents with `kind`, by default the SDXL VAE where the folder has it, else TAESDXL.
 */
export async function decodeFinal(folder: ModelsFolder, latents: Tensor, kind?: DecoderKind, settings: SessionSettings = {}): Promise<{ image: Tensor; kind: DecoderKind }> {
  const chosen = folder.finalDecoder(kind)
  return { image: await decode(await openDecoder(folder, chosen, settings), latents), kind: chosen }
}
