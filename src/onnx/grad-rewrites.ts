// Graph rewrites before the reverse walk, for patterns whose best gradient spans several nodes: each fuses
// the nodes into one node of FUSED_DOMAIN with a rule in gradients.ts, so every rule reads only its own node.
// They exist only for the walk: the assembled model keeps the original forward nodes.
// - Step-1 Slices tiling a tensor along one axis → a fused Split (its gradient one Concat).
// - Attention's softmax(S)·V → AttentionCore (the row sums from dO·O).
// - SiLU's x·sigmoid(x) → SiLU (one expression instead of the Mul's, the Sigmoid's and their sum's).
// - torch's exact GELU, x·(erf(x/√2) + 1)·0.5 → ErfGelu (seven passes instead of ten).
import type { Emitter } from './grad-context.js'
import { onnx, type NodeProto } from './proto.js'
import { intAttr } from './shapes.js'

/** The domain of fused nodes. */
export const FUSED_DOMAIN = 'lcm-lookahead.autodiff'

export interface Rewritten {
  /** the nodes for the walk, in topological order */
  nodes: NodeProto[]
  /** the node of `nodes` an original node is part of: itself, or the fused node */
  partOf: (node: NodeProto) => NodeProto
}

/**
 * Applies the rewrites to the nodes (in topological order) reading values that need a gradient (`active`).
 * A fused node stands where its inputs exist and before any reader of its outputs.
 */
export function rewriteForGradients(nodes: NodeProto[], active: Set<string>, graphOutputs: Set<string>, e: Emitter): Rewritten {
  const readers = new Map<string, NodeProto[]>()
  for (const node of nodes) for (const name of new Set(node.input)) if (name) readers.set(name, [...(readers.get(name) ?? []), node])
  const producers = new Map(nodes.flatMap(node => node.output.map(name => [name, node] as const)))
  const at = new Map<NodeProto, NodeProto>() // a position in `nodes` → the fused node taking it
  const fusedOf = new Map<NodeProto, NodeProto>()
  const fuse = (fused: NodeProto, originals: NodeProto[], position: NodeProto) => {
    originals.forEach(node => fusedOf.set(node, fused))
    at.set(position, fused)
  }
  for (const node of nodes) {
    if (fusedOf.has(node) || !node.input.some(name => active.has(name))) continue
    const tiling = node.opType === 'Slice' ? sliceTiling(node, readers.get(node.input[0]) ?? [], e) : undefined
    // the Split reads only x: it can stand at the first slice
    if (tiling) fuse(new onnx.NodeProto({ opType: 'Split', domain: FUSED_DOMAIN, name: node.name, input: [node.input[0]], output: tiling.slices.map(s => s.output[0]), attribute: [{ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: tiling.axis }] }), tiling.slices, node)
    const attention = node.opType === 'Softmax' ? attentionCore(node, readers, graphOutputs, e) : undefined
    // V may be made after the softmax: the fused node stands at the MatMul
    if (attention) fuse(attention.node, [node, attention.matMul], attention.matMul)
    const silu = node.opType === 'Sigmoid' ? siluOf(node, readers, graphOutputs) : undefined
    if (silu) fuse(silu.node, [node, silu.mul], silu.mul)
    const gelu = node.opType === 'Erf' ? erfGeluOf(node, producers, readers, graphOutputs, e) : undefined
    if (gelu) fuse(gelu.node, gelu.originals, gelu.originals[gelu.originals.length - 1])
  }
  return {
    nodes: nodes.flatMap(node => (at.has(node) ? [at.get(node)!] : fusedOf.has(node) ? [] : [node])),
    partOf: node => fusedOf.get(node) ?? node,
  }
}

const normalise = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis)

/**
 * Step-1 Slices of x along one axis that together cover it exactly, in order (GEGLU's chunk(2) halves): their
 * gradients concatenate, instead of each being padded back to x's size and added. Found from the first slice.
 */
function sliceTiling(slice: NodeProto, xReaders: NodeProto[], e: Emitter): { slices: NodeProto[]; axis: number } | undefined {
  const x = slice.input[0]
  const rank = e.rank(x)
  if (rank === undefined) return undefined
  const bounds = xReaders.filter(node => node.opType === 'Slice' && node.input[0] === x).map(node => {
    const [, starts, ends, axesInput, steps] = node.input
    const s = e.known(starts), en = e.known(ends), axes = axesInput ? e.known(axesInput) : [0]
    const dim = axes?.length === 1 ? e.info(x).shape?.[normalise(axes[0], rank)] : undefined
    if (!s || !en || !axes || s.length !== 1 || typeof dim !== 'number' || (steps && e.known(steps)?.[0] !== 1) || !node.output[0]) return undefined
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim)
    return { node, axis: normalise(axes[0], rank), start: clamp(s[0]), end: clamp(en[0]), dim }
  })
  const own = bounds.find(b => b?.node === slice)
  if (!own) return undefined
  const sorted = bounds.filter(b => b?.axis === own.axis).map(b => b!).sort((a, b) => a.start - b.start)
  const tiles = sorted.length >= 2 && sorted.every((b, i) => b.start === (i === 0 ? 0 : sorted[i - 1].end) && b.end > b.start) && sorted[sorted.length - 1].end === own.dim
  return tiles && sorted.every(b => xReaders.indexOf(b.node) >= xReaders.indexOf(slice)) ? { slices: sorted.map(b => b.node), axis: own.axis } : undefined
}

/**
 * Attention's O = softmax(S)·V over the last axis, with the probabilities read by that MatMul alone: one
 * fused AttentionCore(S, V) → (O, P) node, whose rule takes the row sums from dO·O (gradients.ts).
 */
function attentionCore(softmax: NodeProto, readers: Map<string, NodeProto[]>, graphOutputs: Set<string>, e: Emitter): { node: NodeProto; matMul: NodeProto } | undefined {
  const p = softmax.output[0]
  const matMuls = readers.get(p) ?? []
  const matMul = matMuls[0]
  if (matMuls.length !== 1 || graphOutputs.has(p) || matMul.opType !== 'MatMul' || matMul.input[0] !== p || matMul.input[1] === p) return undefined
  const [v, o] = [matMul.input[1], matMul.output[0]]
  const rows = (value: string) => e.info(value).shape?.slice(0, -1)
  const [rowsP, rowsO] = [rows(p), rows(o)]
  const sameRows = !!rowsP && !!rowsO && rowsP.length === rowsO.length && rowsP.every((d, i) => d !== undefined && d === rowsO[i])
  const axis = intAttr(softmax, 'axis', -1)
  if (!(axis === -1 || axis === (e.rank(p) ?? 0) - 1) || !sameRows || (e.rank(v) ?? 0) < 2) return undefined
  const node = new onnx.NodeProto({ opType: 'AttentionCore', domain: FUSED_DOMAIN, name: softmax.name, input: [softmax.input[0], v], output: [o, p] })
  return { node, matMul }
}

/** The node reading `value`, where it is the only reader, an `op` of the default domain, and `value` no graph output. */
function onlyReaderOf(value: string, op: string, readers: Map<string, NodeProto[]>, graphOutputs: Set<string>): NodeProto | undefined {
  const found = readers.get(value)
  return found?.length === 1 && !graphOutputs.has(value) && found[0].opType === op && (found[0].domain ?? '') === '' ? found[0] : undefined
}

/** x·sigmoid(x), the sigmoid read by that Mul alone: one fused SiLU(x) → (y, sigmoid) node. */
function siluOf(sigmoid: NodeProto, readers: Map<string, NodeProto[]>, graphOutputs: Set<string>): { node: NodeProto; mul: NodeProto } | undefined {
  const [x, s] = [sigmoid.input[0], sigmoid.output[0]]
  const mul = onlyReaderOf(s, 'Mul', readers, graphOutputs)
  if (!mul) return undefined
  if (!((mul.input[0] === x && mul.input[1] === s) || (mul.input[0] === s && mul.input[1] === x))) return undefined
  return { node: new onnx.NodeProto({ opType: 'SiLU', domain: FUSED_DOMAIN, name: sigmoid.name, input: [x], output: [mul.output[0], s] }), mul }
}

/**
 * torch's GELU export, Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5) (either operand order), each intermediate read by
 * the next node alone: one fused ErfGelu(x) → (y, erf + 1, x/√2) node, standing at the last Mul.
 */
function erfGeluOf(erf: NodeProto, producers: Map<string, NodeProto>, readers: Map<string, NodeProto[]>, graphOutputs: Set<string>, e: Emitter): { node: NodeProto; originals: NodeProto[] } | undefined {
  const onlyReader = (value: string, op: string) => onlyReaderOf(value, op, readers, graphOutputs)
  const near = (value: string | undefined, target: number) => {
    const values = value === undefined ? undefined : e.floatValues(value)
    return values?.length === 1 && Math.abs(values[0] - target) < 1e-6
  }
  const other = (node: NodeProto, value: string) => (node.input[0] === value ? node.input[1] : node.input[1] === value ? node.input[0] : undefined)
  const div = producers.get(erf.input[0])
  if (div?.opType !== 'Div' || !onlyReader(erf.input[0], 'Erf') || !near(div.input[1], Math.SQRT2)) return undefined
  const x = div.input[0]
  const add = onlyReader(erf.output[0], 'Add')
  const mul = add && near(other(add, erf.output[0]), 1) ? onlyReader(add.output[0], 'Mul') : undefined
  const half = mul && other(mul, add!.output[0]) === x ? onlyReader(mul.output[0], 'Mul') : undefined
  if (!half || !near(other(half, mul!.output[0]), 0.5)) return undefined
  const node = new onnx.NodeProto({ opType: 'ErfGelu', domain: FUSED_DOMAIN, name: erf.name, input: [x], output: [half.output[0], add!.output[0], div.output[0]] })
  return { node, originals: [div, erf, add!, mul!, half] }
}
