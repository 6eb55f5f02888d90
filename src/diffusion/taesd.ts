// TAESD (madebyollin/taesd: taesd.py) built as ONNX graphs from its published weights, so that TAESDXL needs no
// Python export. The weights are a .safetensors file in madebyollin's Sequential naming (`1.weight`,
// `3.conv.0.weight`, …) or diffusers' AutoencoderTiny naming (`decoder.layers.N.…`, `encoder.layers.N.…`; the
// decoder's indices are one lower there, having no Clamp module), in float32, float16 or bfloat16.
//
// The graphs' ranges are madebyollin's: the decoder takes UNet-space latents as they are (scale 1) and outputs
// roughly [0,1]; the encoder takes RGB in [0,1] and outputs UNet-space latents.
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { UserError } from '../errors.js'
import { cacheRoot } from '../cache.js'
import { GraphBuilder } from '../onnx/builder.js'
import { upsampleNearest2x } from '../onnx/layers.js'
import { onnx, writeModel, type LoadedModel } from '../onnx/proto.js'
import { floatValues, readSafetensors, type NamedTensor } from './safetensors.js'

export type TaesdPart = 'encoder' | 'decoder'

type Layer = 'clamp' | 'relu' | 'block' | 'upsample' | { conv: { stride: number } }
const conv = (stride = 1): Layer => ({ conv: { stride } })
const blocks = (n: number): Layer[] => Array(n).fill('block')

/** taesd.py's Encoder and Decoder, one entry per index of its nn.Sequential (channels come from the weights). */
export const TAESD_LAYERS: Record<TaesdPart, Layer[]> = {
  encoder: [conv(), 'block', conv(2), ...blocks(3), conv(2), ...blocks(3), conv(2), ...blocks(3), conv()],
  decoder: ['clamp', conv(), 'relu', ...blocks(3), 'upsample', conv(), ...blocks(3), 'upsample', conv(), ...blocks(3), 'upsample', conv(), 'block', conv()],
}

/** The graphs' input and output names (the decoder's as optimum's vae_decoder, so the models check applies). */
export const TAESD_IO: Record<TaesdPart, { input: string; output: string; inChannels: number; outChannels: number }> = {
  encoder: { input: 'sample', output: 'latent_sample', inChannels: 3, outChannels: 4 },
  decoder: { input: 'latent_sample', output: 'sample', inChannels: 4, outChannels: 3 },
}

/**
 * The part's weights in madebyollin's naming: taken as they are, or renamed from diffusers' `part.layers.N.…`
 * (decoder: N + 1). Fails naming what it expected where the file holds neither, or holds the other part.
 */
export function taesdWeights(tensors: Map<string, NamedTensor>, part: TaesdPart, source = 'the weights'): Map<string, NamedTensor> {
  const prefix = `${part}.layers.`
  const shift = part === 'decoder' ? 1 : 0
  const diffusers = [...tensors].filter(([name]) => name.startsWith(prefix))
  const renamed = diffusers.length > 0
    ? new Map(diffusers.map(([name, t]) => {
      const [index, ...rest] = name.slice(prefix.length).split('.')
      return [[Number(index) + shift, ...rest].join('.'), t]
    }))
    : new Map([...tensors].filter(([name]) => /^\d+\./.test(name)))
  // the first conv tells the parts apart: the encoder's reads RGB at index 0, the decoder's latents at index 1
  const first = TAESD_LAYERS[part].findIndex(layer => typeof layer === 'object')
  const weight = renamed.get(`${first}.weight`)
  if (!weight || weight.shape[1] !== TAESD_IO[part].inChannels) {
    const other = part === 'decoder' ? 'encoder' : 'decoder'
    const hint = renamed.has(`${TAESD_LAYERS[other].findIndex(layer => typeof layer === 'object')}.weight`) || tensors.has(`${other}.layers.0.weight`) ? ` (it looks like a TAESD ${other})` : ''
    throw new UserError(`${source}: no TAESD ${part} weights${hint}; expected madebyollin's taesd.py naming (${first}.weight with ${TAESD_IO[part].inChannels} input channels, …) or diffusers' AutoencoderTiny naming (${prefix}N.…)`)
  }
  return renamed
}

/** The part as a graph: its weights become float32 initializers; dims batch × channels × height × width. */
export function taesdGraph(weights: Map<string, NamedTensor>, part: TaesdPart, source = 'the weights'): GraphBuilder {
  const g = new GraphBuilder(`taesd_${part}`, 17)
  const param = (name: string, required = true): string | undefined => {
    const t = weights.get(name)
    if (!t) {
      if (required) throw new UserError(`${source}: TAESD ${part} weight ${name} is missing`)
      return undefined
    }
    return g.constant(floatValues(t), t.shape, 'float32', name.replace(/\./g, '_'))
  }
  const convFrom = (x: string, name: string, stride = 1, kernel = 3): string => {
    const bias = param(`${name}.bias`, false)
    const pad = kernel >> 1
    return g.op('Conv', [x, param(`${name}.weight`)!, ...(bias ? [bias] : [])], { kernel_shape: [kernel, kernel], strides: [stride, stride], pads: [pad, pad, pad, pad] })
  }
  const relu = (x: string) => g.op('Relu', [x])
  // Block: ReLU(conv-ReLU-conv-ReLU-conv(x) + skip(x)), skip a 1×1 conv where the channels change, else x
  const block = (x: string, i: number) => {
    const h = convFrom(relu(convFrom(relu(convFrom(x, `${i}.conv.0`)), `${i}.conv.2`)), `${i}.conv.4`)
    const skip = weights.has(`${i}.skip.weight`) ? convFrom(x, `${i}.skip`, 1, 1) : x
    return relu(g.op('Add', [h, skip]))
  }
  const io = TAESD_IO[part]
  let x = g.input(io.input, 'float32', ['batch_size', io.inChannels, 'height', 'width'])
  TAESD_LAYERS[part].forEach((layer, i) => {
    if (layer === 'clamp') x = g.op('Mul', [g.op('Tanh', [g.op('Div', [x, g.constant(3)])]), g.constant(3)]) // tanh(x/3)·3
    else if (layer === 'relu') x = relu(x)
    else if (layer === 'block') x = block(x, i)
    else if (layer === 'upsample') x = upsampleNearest2x(g, x)
    else x = convFrom(x, String(i), layer.conv.stride)
  })
  g.outputAs(x, io.output, 'float32', ['batch_size', io.outChannels, part === 'decoder' ? 'image_height' : 'latent_height', part === 'decoder' ? 'image_width' : 'latent_width'])
  return g
}

/**
 * The TAESD encoder or decoder of a .safetensors file as a model (weights inline). Decoder: UNet-space latents
 * [B,4,h,w] → RGB [B,3,8h,8w] in about [0,1]; encoder: RGB in [0,1] → latents [B,4,H/8,W/8]. The decoder says its
 * output range in its metadata (output_range, read by decoders.ts).
 */
export async function taesdModel(path: string, part: TaesdPart): Promise<LoadedModel> {
  const weights = taesdWeights(await readSafetensors(path), part, path)
  const model = taesdGraph(weights, part, path).build()
  if (part === 'decoder') model.metadataProps = [new onnx.StringStringEntryProto({ key: 'output_range', value: '[0,1]' })]
  return { model, dir: dirname(resolve(path)) }
}

/** The part's ONNX file built from `path`, written once under the cache (keyed by the file's path, size and time). */
export async function cachedTaesd(path: string, part: TaesdPart, cacheDir = cacheRoot()): Promise<string> {
  const info = await stat(path).catch(() => {
    throw new UserError(`cannot read ${path}`)
  })
  const key = createHash('sha256').update(`${resolve(path)}|${info.size}|${info.mtimeMs}|${part}`).digest('hex').slice(0, 16)
  const out = join(cacheDir, `taesd-${part}-${key}`, `${basename(path).replace(/\.safetensors$/, '')}.onnx`)
  if (!existsSync(out)) await writeModel(await taesdModel(path, part), out)
  return out
}
