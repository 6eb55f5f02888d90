// face-api's face recognition network (dlib's ResNet-34 variant, 128-d descriptor), rebuilt as ONNX from
// the weights the npm package ships. Structure: face-api src/faceRecognitionNet; facts in
// ../shared/reference/face-recognition-net.md. Input: an RGB face crop, 150×150, values 0..255.
import type { GraphBuilder } from '../../src/onnx/builder.js'
import { add, appendZeros, conv, normaliseRgb, pool, unary, type Feature, type Padding } from './ops.js'
import { faceApiWeights, hwioToOihw, type Weight } from './weights.js'

export const RECOGNITION_SIZE = 150
const MEAN_RGB: [number, number, number] = [122.782, 117.001, 104.298]

type Weights = Map<string, Weight>

/** conv + bias, then the per-channel scale layer, folded into the filter: (conv·w + b)·s + t. */
function scaledConv(g: GraphBuilder, w: Weights, prefix: string, x: Feature, stride: number, padding: Padding, relu: boolean): Feature {
  const filter = hwioToOihw(w.get(`${prefix}/conv/filters`)!)
  const bias = w.get(`${prefix}/conv/bias`)!.values
  const scale = w.get(`${prefix}/scale/weights`)!.values
  const shift = w.get(`${prefix}/scale/biases`)!.values
  const perOut = filter.values.length / scale.length
  const values = filter.values.map((v, i) => v * scale[Math.floor(i / perOut)])
  const folded = Float32Array.from(bias, (b, o) => b * scale[o] + shift[o])
  const y = conv(g, x, { filter: { shape: filter.shape, values }, bias: folded, stride, padding })
  return relu ? unary(g, 'Relu', y) : y
}

function residual(g: GraphBuilder, w: Weights, prefix: string, x: Feature): Feature {
  const y = scaledConv(g, w, `${prefix}/conv1`, x, 1, 'same', true)
  return unary(g, 'Relu', add(g, scaledConv(g, w, `${prefix}/conv2`, y, 1, 'same', false), x))
}

/** Stride-2 block: the shortcut is a 2×2 average pool, zero-padded in channels; the conv branch gets a zero row and column where it comes out one smaller. */
function residualDown(g: GraphBuilder, w: Weights, prefix: string, x: Feature): Feature {
  let y = scaledConv(g, w, `${prefix}/conv1`, x, 2, 'valid', true)
  y = scaledConv(g, w, `${prefix}/conv2`, y, 1, 'same', false)
  let shortcut = pool(g, 'AveragePool', x, 2, 2, 'valid')
  if (shortcut.height !== y.height) y = appendZeros(g, appendZeros(g, y, 2, shortcut.height - y.height), 3, shortcut.width - y.width)
  if (shortcut.channels !== y.channels) shortcut = appendZeros(g, shortcut, 1, y.channels - shortcut.channels)
  return unary(g, 'Relu', add(g, y, shortcut))
}

/** The early feature maps, for perceptual losses: after the stem, after the 32- and after the 64-channel stage. `faces` is [1,3,150,150] RGB in 0..255. */
export function recognitionStages(g: GraphBuilder, faces: string, w: Weights): Feature[] {
  const input: Feature = { name: normaliseRgb(g, faces, MEAN_RGB), channels: 3, height: RECOGNITION_SIZE, width: RECOGNITION_SIZE }
  let x = pool(g, 'MaxPool', scaledConv(g, w, 'conv32_down', input, 2, 'valid', true), 3, 2, 'valid')
  const stages: Feature[] = [x]
  for (const block of ['conv32_1', 'conv32_2', 'conv32_3']) x = residual(g, w, block, x)
  stages.push(x)
  x = residualDown(g, w, 'conv64_down', x)
  for (const block of ['conv64_1', 'conv64_2', 'conv64_3']) x = residual(g, w, block, x)
  stages.push(x)
  return stages
}

/** The network's weights (read once from the npm package). */
export const recognitionWeights = () => faceApiWeights('face_recognition_model')

/** Appends the network to g: `faces` is [1,3,150,150] RGB in 0..255; returns the [1,128] descriptor. */
export function recognitionNet(g: GraphBuilder, faces: string, w: Weights): string {
  let x = recognitionStages(g, faces, w)[2]
  x = residualDown(g, w, 'conv128_down', x)
  for (const block of ['conv128_1', 'conv128_2']) x = residual(g, w, block, x)
  x = residualDown(g, w, 'conv256_down', x)
  for (const block of ['conv256_1', 'conv256_2']) x = residual(g, w, block, x)
  x = residualDown(g, w, 'conv256_down_out', x)
  const pooled = g.op('ReduceMean', [x.name], { axes: [2, 3], keepdims: 0 })
  const fc = w.get('fc')!
  return g.op('MatMul', [pooled, g.constant(fc.values, fc.shape, 'float32', 'fc')])
}
