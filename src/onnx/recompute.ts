// Recomputation (gradient checkpointing; Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"):
// the forward nodes are split into segments holding about equal bytes of the values the backward reads. A
// segment's values are then not kept from the forward pass: they are freed after their last forward reader and
// computed again from the values crossing into the segment, just before the backward reaches it. The gradient
// pass then holds one segment's activations plus the values crossing the cuts (a UNet's skip connections),
// for about one more forward pass. The last segment is kept: its backward starts at once.
//
// ONNX has no control dependencies, so the order is forced through the data: each copied segment reads its
// inputs plus 0 × (one element of the gradient flowing into the segment). Without it a runtime could run
// the copy as soon as its inputs exist, early in the pass, and hold its values as long as before; with it the
// copies also differ from the originals, so common-subexpression elimination cannot merge them back.
import { onnx, type AttributeProto, type NodeProto } from './proto.js'
import { floatBytes, floatTypes } from './shapes.js'
import type { Emitter } from './grad-context.js'

export interface Reached {
  /** the index in the backward nodes where the walk reached the node */
  at: number
  /** the gradient flowing into one of its outputs, if any */
  gradient?: string
}

export interface RecomputeInput {
  /** forward nodes, in order, as the gradient model holds them */
  forward: NodeProto[]
  /** gradient nodes, in the order the reverse walk emitted them */
  backward: NodeProto[]
  /** for each forward node, where the reverse walk reached it (undefined: off the path) */
  reached: (Reached | undefined)[]
  /** values that must keep their forward node (the model's outputs) */
  outputs: Set<string>
  segments: number
  e: Emitter
}

/** Ops whose copies would not give the same values (random) or that read values in their bodies. */
const unrepeatable = (node: NodeProto) =>
  node.opType === 'Constant' || node.opType.startsWith('Random') || node.opType === 'Dropout' || (node.attribute ?? []).some(a => a.g || a.graphs?.length)

/** The backward nodes with each segment's recomputation inserted where the backward reaches the segment. */
export function recomputeSegments({ forward, backward, reached, outputs, segments, e }: RecomputeInput): NodeProto[] {
  const bytes = (value: string) => floatBytes(e.info(value)) ?? 0
  const madeAt = new Map(backward.flatMap((n, j) => n.output.map(v => [v, j] as const)))
  const backwardReaders = new Map<string, number[]>()
  backward.forEach((node, j) => node.input.forEach(v => v && backwardReaders.set(v, [...(backwardReaders.get(v) ?? []), j])))

  const producer = new Map<string, number>()
  forward.forEach((node, i) => node.output.forEach(v => v && producer.set(v, i)))
  const cuts = chooseCuts(forward, producer, segments, v => (backwardReaders.has(v) ? bytes(v) : 0), bytes)
  const segmentOf = forward.map((_, i) => cuts.filter(c => c <= i).length)

  const inserts = new Map<number, NodeProto[]>()
  const renamed = new Map<number, Map<string, string>>() // from a backward index on: value → its recomputed copy
  const pinned = new Set<string>() // values read as they are by a later segment's copy: kept, never recomputed
  for (let s = segments - 2; s >= 0; s--) {
    const members = forward.flatMap((node, i) => (segmentOf[i] === s ? [i] : []))
    // the gradient reaching the segment first: the copies wait for it, and go in after the node making it
    const first = members.filter(i => reached[i]).sort((i, j) => reached[i]!.at - reached[j]!.at)
    const anchor = first.map(i => reached[i]!.gradient).find(g => g !== undefined && floatTypes.has(e.dtype(g)))
    if (anchor === undefined) continue
    const start = Math.max(reached[first[0]]!.at, (madeAt.get(anchor) ?? -1) + 1)
    // a value is recomputed where it is made in this segment and nothing before `start` needs it
    const recomputable = (v: string) => {
      const i = producer.get(v)
      return i !== undefined && segmentOf[i] === s && !unrepeatable(forward[i]) && !outputs.has(v) && !pinned.has(v) &&
        (backwardReaders.get(v) ?? []).every(j => j >= start)
    }
    const targets = members.flatMap(i => forward[i].output.filter(v => v && backwardReaders.has(v) && recomputable(v)))
    if (targets.length === 0) continue
    // the copies: the targets' producers and, through recomputable inputs, theirs, in forward order
    const copied = new Set<number>()
    const visit = (v: string) => {
      const i = producer.get(v)!
      if (copied.has(i)) return
      copied.add(i)
      for (const u of forward[i].input) if (u && recomputable(u)) visit(u)
    }
    targets.forEach(visit)
    const [flat, element, scaled, zero] = ['flat', 'element', 'scaled', 'zero'].map(hint => e.fresh(`recompute_${hint}`))
    const nodes = [
      node('Reshape', [anchor, e.ints([-1])], [flat]),
      node('Slice', [flat, e.ints([0]), e.ints([1])], [element]),
      node('Mul', [element, e.scalar(0, anchor)], [scaled]),
      node('Reshape', [scaled, e.ints([])], [zero]),
    ]
    const zeroOf = new Map<number, string>([[e.dtype(anchor), zero]])
    const anchoredCopies = new Map<string, string>()
    /** An input from outside the copies, made to wait for the anchor (weights and constants need not). */
    const anchored = (u: string): string => {
      const dtype = e.info(u).dtype ?? -1
      if (!floatTypes.has(dtype) || e.constants.has(u)) return u
      pinned.add(u)
      if (!zeroOf.has(dtype)) {
        zeroOf.set(dtype, e.fresh('recompute_zero'))
        nodes.push(node('Cast', [zero], [zeroOf.get(dtype)!], [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: dtype }]))
      }
      if (!anchoredCopies.has(u)) {
        anchoredCopies.set(u, e.fresh(`recompute_${u}`))
        nodes.push(node('Add', [u, zeroOf.get(dtype)!], [anchoredCopies.get(u)!]))
      }
      return anchoredCopies.get(u)!
    }
    const copies = new Map<string, string>()
    for (const i of [...copied].sort((a, b) => a - b)) {
      const original = forward[i]
      const input = original.input.map(u => (!u ? u : recomputable(u) ? copies.get(u)! : anchored(u)))
      const output = original.output.map(v => (v ? e.fresh(`recomputed_${v}`) : ''))
      original.output.forEach((v, k) => v && copies.set(v, output[k]))
      nodes.push(onnx.NodeProto.fromObject({ ...onnx.NodeProto.toObject(original), name: e.fresh(`recompute_${original.name}`), input, output }))
    }
    // segments whose backward starts at the same node (one emitted nothing) share the insertion point
    inserts.set(start, [...(inserts.get(start) ?? []), ...nodes])
    renamed.set(start, new Map([...(renamed.get(start) ?? []), ...targets.map(v => [v, copies.get(v)!] as const)]))
  }

  const result: NodeProto[] = []
  const active = new Map<string, string>()
  backward.forEach((n, j) => {
    for (const [v, copy] of renamed.get(j) ?? []) active.set(v, copy)
    result.push(...(inserts.get(j) ?? []))
    result.push(active.size && n.input.some(v => active.has(v)) ? onnx.NodeProto.fromObject({ ...onnx.NodeProto.toObject(n), input: n.input.map(v => active.get(v) ?? v) }) : n)
  })
  return result
}

/**
 * Where segments begin (forward indices): near each k/S share of the saved bytes, at the position where the
 * fewest bytes cross from before to after (they are kept, as the values the next segment is recomputed from).
 */
function chooseCuts(forward: NodeProto[], producer: Map<string, number>, segments: number, saved: (v: string) => number, bytes: (v: string) => number): number[] {
  const savedBefore = [0]
  forward.forEach(node => savedBefore.push(savedBefore[savedBefore.length - 1] + node.output.reduce((sum, v) => sum + (v ? saved(v) : 0), 0)))
  // crossing[k]: bytes of values made before node k and read by node k or later in the forward
  const change = new Array<number>(forward.length + 1).fill(0)
  const lastReader = new Map<string, number>()
  forward.forEach((node, i) => node.input.forEach(v => v && producer.has(v) && lastReader.set(v, i)))
  for (const [v, reader] of lastReader) {
    change[producer.get(v)! + 1] += bytes(v)
    change[reader + 1] -= bytes(v)
  }
  const crossing: number[] = []
  change.reduce((sum, d, k) => (crossing[k] = sum + d), 0)
  const total = savedBefore[forward.length]
  const cuts: number[] = []
  for (let k = 1; k < segments; k++) {
    const target = (k * total) / segments, slack = total / (2 * segments)
    let best = -1
    for (let i = Math.max(1, (cuts[cuts.length - 1] ?? 0) + 1); i < forward.length; i++) {
      if (Math.abs(savedBefore[i] - target) > slack) continue
      if (best < 0 || crossing[i] < crossing[best] || (crossing[i] === crossing[best] && Math.abs(savedBefore[i] - target) < Math.abs(savedBefore[best] - target))) best = i
    }
    if (best > 0) cuts.push(best)
  }
  return cuts
}

const node = (opType: string, input: string[], output: string[], attribute: Partial<AttributeProto>[] = []) =>
  onnx.NodeProto.fromObject({ opType, input, output, attribute, name: `${output[0]}_node` })
