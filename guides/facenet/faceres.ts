// HSE FaceRes (github.com/HSE-asavchenko/HSE_FaceRec_tf: a MobileNet trained for face identification on
// VGGFace2, then given age and gender heads), as @vladmandic/human ships it (tfjs graph model, MIT). Its
// 1024-d global-pooling features are Human's face descriptor. We convert the graph to ONNX up to that output,
// in NCHW, by walking its nodes: a recognizer of another architecture, data and training than the loss
// networks, for the identity metric. Input: RGB 224×224, values 0..255 (Human feeds its crop × 255).
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { UserError } from '../../src/errors.js'
import type { GraphBuilder } from '../../src/onnx/builder.js'
import { conv, type Feature, type Padding } from './ops.js'
import { depthwiseToOihw, hwioToOihw, readManifestWeights, type Weight, type WeightsManifest } from './weights.js'

export const FACERES_SIZE = 224
const OUTPUT = 'global_pooling/Mean'

interface TfNode {
  name: string
  op: string
  input?: string[]
  attr?: Record<string, { s?: string; b?: boolean; list?: { i?: string[] } }>
}

export interface FaceresModel {
  nodes: Map<string, TfNode>
  weights: Map<string, Weight>
}

let loaded: Promise<FaceresModel> | undefined

/** The graph and weights from node_modules/@vladmandic/human/models (read once). */
export function faceresModel(): Promise<FaceresModel> {
  loaded ??= (async () => {
    // the package exports only its bundles: its models folder sits beside dist/
    const dir = join(dirname(createRequire(import.meta.url).resolve('@vladmandic/human')), '..', 'models')
    let json: { modelTopology: { node: TfNode[] }; weightsManifest: WeightsManifest }
    try {
      json = JSON.parse(await readFile(join(dir, 'faceres.json'), 'utf8'))
    } catch {
      throw new UserError(`Human's faceres model is missing from ${dir}: reinstall the npm dependencies (npm ci)`)
    }
    return { nodes: new Map(json.modelTopology.node.map(n => [n.name, n])), weights: await readManifestWeights(json.weightsManifest, dir) }
  })()
  return loaded
}

const text = (node: TfNode, key: string) => Buffer.from(node.attr?.[key]?.s ?? '', 'base64').toString()
const stride = (node: TfNode) => Number(node.attr?.strides?.list?.i?.[1] ?? 1)
const padding = (node: TfNode): Padding => (text(node, 'padding') === 'VALID' ? 'valid' : 'same')
/** NHWC axis → NCHW axis */
const NCHW_AXIS = [0, 2, 3, 1]

type Value = { feature: Feature } | { plain: string } | { weight: Weight }

/** Appends the network up to the 1024-d descriptor: `faces` is [1,3,224,224] RGB in 0..255; returns [1,1024]. */
export function faceresNet(g: GraphBuilder, faces: string, model: FaceresModel): string {
  const values = new Map<string, Value>()
  const constant = (w: Weight, channels?: number) =>
    g.constant(w.values, w.shape.length === 1 && channels === w.shape[0] ? [1, channels, 1, 1] : w.shape, 'float32', 'faceres_const')
  const visit = (name: string): Value => {
    const key = name.replace(/:0$/, '')
    const known = values.get(key)
    if (known) return known
    const node = model.nodes.get(key)
    if (!node) throw new Error(`faceres: no node ${key}`)
    const inputs = (node.input ?? []).filter(i => !i.startsWith('^')).map(visit)
    const value = convert(node, inputs)
    values.set(key, value)
    return value
  }
  const featureOf = (v: Value, node: TfNode): Feature => {
    if ('feature' in v) return v.feature
    throw new Error(`faceres: ${node.op} ${node.name} expects an image-shaped input`)
  }
  const convert = (node: TfNode, inputs: Value[]): Value => {
    switch (node.op) {
      case 'Placeholder':
        return { feature: { name: faces, channels: 3, height: FACERES_SIZE, width: FACERES_SIZE } }
      case 'Const': {
        const w = model.weights.get(node.name)
        if (!w) throw new Error(`faceres: no weights for ${node.name}`)
        return { weight: w }
      }
      case 'Conv2D':
      case 'DepthwiseConv2dNative': {
        const x = featureOf(inputs[0], node)
        const w = (inputs[1] as { weight: Weight }).weight
        const depthwise = node.op === 'DepthwiseConv2dNative'
        return { feature: conv(g, x, { filter: depthwise ? depthwiseToOihw(w) : hwioToOihw(w), stride: stride(node), padding: padding(node), group: depthwise ? x.channels : 1 }) }
      }
      case 'Add':
      case 'Mul':
      case 'Minimum':
      case 'Maximum': {
        const op = { Add: 'Add', Mul: 'Mul', Minimum: 'Min', Maximum: 'Max' }[node.op]
        const [a, b] = inputs
        if (!('feature' in a)) throw new Error(`faceres: ${node.name} has a constant first input`)
        const other = 'weight' in b ? constant(b.weight, a.feature.channels) : 'feature' in b ? b.feature.name : b.plain
        return { feature: { ...a.feature, name: g.op(op, [a.feature.name, other]) } }
      }
      case 'Relu': {
        const x = featureOf(inputs[0], node)
        return { feature: { ...x, name: g.op('Relu', [x.name]) } }
      }
      case 'Mean': {
        const x = featureOf(inputs[0], node)
        const axes = Array.from((inputs[1] as { weight: Weight }).weight.values, a => NCHW_AXIS[a])
        if (node.attr?.keep_dims?.b) throw new Error(`faceres: ${node.name} keeps dims, which is not handled`)
        return { plain: g.op('ReduceMean', [x.name], { axes, keepdims: 0 }) }
      }
      default:
        throw new Error(`faceres: op ${node.op} (${node.name}) is not converted`)
    }
  }
  const out = visit(OUTPUT)
  if (!('plain' in out)) throw new Error('faceres: the descriptor is not a plain value')
  return out.plain
}
