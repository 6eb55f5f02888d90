// Graph pieces shared by the face-api networks, with static shapes tracked so TensorFlow's padding
// rules ('same' puts the odd pixel at the end, 'valid' pads nothing) become explicit ONNX pads.
import type { GraphBuilder } from '../../src/onnx/builder.js'
import { depthwiseToOihw, hwioToOihw, type Weight } from './weights.js'

/** A value in the graph with its NCHW shape (batch 1). */
export interface Feature {
  name: string
  channels: number
  height: number
  width: number
}

export type Padding = 'same' | 'valid'

/** [top, left, bottom, right] pads of TensorFlow's padding rule, and the output size. */
function tfPads(size: number, kernel: number, stride: number, padding: Padding): { before: number; after: number; out: number } {
  if (padding === 'valid') return { before: 0, after: 0, out: Math.floor((size - kernel) / stride) + 1 }
  const out = Math.ceil(size / stride)
  const total = Math.max((out - 1) * stride + kernel - size, 0)
  return { before: Math.floor(total / 2), after: total - Math.floor(total / 2), out }
}

export interface ConvSpec {
  /** OIHW filter (for grouped convs [C, 1, kh, kw]) */
  filter: Weight
  bias?: Float32Array
  stride?: number
  padding?: Padding
  group?: number
}

export function conv(g: GraphBuilder, x: Feature, spec: ConvSpec): Feature {
  const { filter, bias, stride = 1, padding = 'same', group = 1 } = spec
  const [out, , kh, kw] = filter.shape
  const ph = tfPads(x.height, kh, stride, padding)
  const pw = tfPads(x.width, kw, stride, padding)
  const inputs = [x.name, g.constant(filter.values, filter.shape, 'float32', 'filter')]
  if (bias) inputs.push(g.constant(bias, [out], 'float32', 'bias'))
  const name = g.op('Conv', inputs, {
    kernel_shape: [kh, kw],
    strides: [stride, stride],
    pads: [ph.before, pw.before, ph.after, pw.after],
    dilations: [1, 1],
    group,
  })
  return { name, channels: out, height: ph.out, width: pw.out }
}

/** tf conv2d (HWIO filter) + bias. */
export function tfConv(g: GraphBuilder, x: Feature, filter: Weight, bias: Weight | undefined, stride: number, padding: Padding): Feature {
  return conv(g, x, { filter: hwioToOihw(filter), bias: bias?.values, stride, padding })
}

/** tf separableConv2d (depthwise then pointwise, one bias at the end). */
export function separableConv(g: GraphBuilder, x: Feature, depthwise: Weight, pointwise: Weight, bias: Weight, stride: number, padding: Padding): Feature {
  const d = conv(g, x, { filter: depthwiseToOihw(depthwise), stride, padding, group: x.channels })
  return conv(g, d, { filter: hwioToOihw(pointwise), bias: bias.values, padding: 'valid' })
}

export function pool(g: GraphBuilder, op: 'MaxPool' | 'AveragePool', x: Feature, kernel: number, stride: number, padding: Padding): Feature {
  const ph = tfPads(x.height, kernel, stride, padding)
  const pw = tfPads(x.width, kernel, stride, padding)
  // tf's 'same' average pool divides by the pixels inside the image; max pool ignores the padding anyway
  const attrs: Record<string, number | number[]> = { kernel_shape: [kernel, kernel], strides: [stride, stride], pads: [ph.before, pw.before, ph.after, pw.after] }
  if (op === 'AveragePool') attrs.count_include_pad = 0
  return { ...x, name: g.op(op, [x.name], attrs), height: ph.out, width: pw.out }
}

export function unary(g: GraphBuilder, op: string, x: Feature): Feature {
  return { ...x, name: g.op(op, [x.name]) }
}

export function add(g: GraphBuilder, a: Feature, b: Feature): Feature {
  return { ...a, name: g.op('Add', [a.name, b.name]) }
}

/** Appends zeros along `axis` (1 = channels, 2 = rows, 3 = columns) with Concat. */
export function appendZeros(g: GraphBuilder, x: Feature, axis: 1 | 2 | 3, count: number): Feature {
  const dims = [1, x.channels, x.height, x.width]
  dims[axis] = count
  const zeros = g.constant(new Float32Array(dims.reduce((a, b) => a * b, 1)), dims, 'float32', 'zeros')
  const grown = { ...x, name: g.op('Concat', [x.name, zeros], { axis }) }
  if (axis === 1) grown.channels += count
  if (axis === 2) grown.height += count
  if (axis === 3) grown.width += count
  return grown
}

/** (x − mean) / 255 per RGB channel, for inputs in 0..255. */
export function normaliseRgb(g: GraphBuilder, x: string, mean: [number, number, number]): string {
  const centred = g.op('Sub', [x, g.constant(mean, [1, 3, 1, 1], 'float32', 'mean_rgb')])
  return g.op('Mul', [centred, g.constant([1 / 255], [], 'float32', 'inv255')])
}

