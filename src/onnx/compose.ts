// Wiring models into one graph: a model's nodes and weights are appended to a GraphBuilder under a prefix.
import { resolve } from 'node:path'
import { UserError } from '../errors.js'
import type { GraphBuilder } from './builder.js'
import { graphOf, isExternal, onnx, toNumber, type LoadedModel, type NodeProto, type TensorProto } from './proto.js'

/** The opset of the default domain a model imports. */
export function opsetOf(model: LoadedModel['model']): number {
  const entry = model.opsetImport?.find(o => !o.domain || o.domain === 'ai.onnx')
  return toNumber(entry?.version ?? 1)
}

/**
 * Appends `model` to `g`: every node, initializer and intermediate value is renamed `${prefix}name`; the model's
 * graph inputs are fed from `inputs` (input name → value in g; inputs left out become inputs of g under their
 * prefixed name); external-data locations are made absolute so the weights stay in their files. Nodes written
 * for an older opset are brought to g's opset when g is built (GraphBuilder.build).
 * Returns {output name → value name in g}.
 */
export function embedModel(
  g: GraphBuilder,
  model: LoadedModel,
  inputs: Record<string, string>,
  prefix: string,
): Record<string, string> {
  const graph = graphOf(model.model)
  const from = opsetOf(model.model)
  if (from > g.opset) throw new UserError(`cannot embed an opset-${from} model into an opset-${g.opset} graph`)
  if (from < 11) throw new UserError(`models older than opset 11 are not supported (this one is opset ${from}); re-export it`)
  const initializerNames = new Set(graph.initializer.map(t => t.name))
  const rename = (name: string) => {
    if (name === '') return ''
    if (name in inputs) return inputs[name]
    return `${prefix}${name}`
  }
  for (const input of graph.input) {
    const name = input.name ?? ''
    if (name in inputs || initializerNames.has(name)) continue
    g.inputs.push(new onnx.ValueInfoProto({ ...input, name: rename(name) }))
  }
  for (const initializer of graph.initializer as TensorProto[]) {
    if (initializer.name in inputs) continue
    g.initializers.push(absoluteExternal(new onnx.TensorProto({ ...initializer, name: rename(initializer.name) }), model.dir))
  }
  for (const node of graph.node as NodeProto[]) {
    if (node.domain && node.domain !== 'ai.onnx') throw new UserError(`node ${node.name} uses custom domain ${node.domain}`)
    if (from < 13 && softmaxLike.has(node.opType) && softmaxAxis(node) !== -1) {
      throw new UserError(`node ${node.name}: ${node.opType} before opset 13 flattens its input; re-export the model with opset 13 or later`)
    }
    const copy = new onnx.NodeProto({
      ...node,
      name: `${prefix}${node.name}`,
      input: node.input.map(rename),
      output: node.output.map(rename),
      // a Constant's value may live in external data too
      attribute: node.attribute.map(a => (a.t ? new onnx.AttributeProto({ ...a, t: absoluteExternal(a.t as TensorProto, model.dir) }) : a)),
    })
    g.nodes.push(copy)
  }
  return Object.fromEntries(graph.output.map(o => [o.name ?? '', rename(o.name ?? '')]))
}

/**
 * Appends `model` once more, its nodes and values under `prefix`, reading the weights (initializers) that an
 * earlier embedModel(g, model, …, weightsPrefix) appended: N calls of one UNet hold one copy of its weights.
 */
export function embedModelAgain(g: GraphBuilder, model: LoadedModel, inputs: Record<string, string>, prefix: string, weightsPrefix: string): Record<string, string> {
  const weights = Object.fromEntries(graphOf(model.model).initializer.map(t => [t.name, `${weightsPrefix}${t.name}`]))
  // embedModel wires a name found in `inputs` to the value given there and copies no initializer of that name
  return embedModel(g, model, { ...weights, ...inputs }, prefix)
}

/** A copy of `tensor` whose external-data location is absolute (the source model's tensors are left alone). */
function absoluteExternal(tensor: TensorProto, dir: string): TensorProto {
  const copy = new onnx.TensorProto(tensor)
  if (!isExternal(copy)) return copy
  copy.externalData = copy.externalData.map(entry =>
    entry.key === 'location' ? new onnx.StringStringEntryProto({ key: 'location', value: resolve(dir, entry.value ?? '') }) : entry,
  )
  return copy
}

/** Ops whose meaning changed at opset 13 (they flattened to 2-D before), except along the last axis. */
const softmaxLike = new Set(['Softmax', 'LogSoftmax', 'Hardmax'])
const softmaxAxis = (node: NodeProto) => toNumber(node.attribute.find(a => a.name === 'axis')?.i ?? 1)
