// Reverse-mode autodiff over ONNX graphs, emitting standard ONNX ops only, so the gradient model runs on
// stock onnxruntime (CPU and CUDA). Gradients are taken w.r.t. chosen graph inputs, never weights; the walk
// is pruned to the path from those inputs to one output. Three steps: plan (check the request, order the
// nodes, find the path), the reverse walk (one rule per node from gradients.ts, after the rewrites of
// grad-rewrites.ts), assemble (forward + gradient nodes, pruned to what the outputs need).
import { UserError } from '../errors.js'
import { Emitter, type GradContext } from './grad-context.js'
import { rewriteForGradients, FUSED_DOMAIN } from './grad-rewrites.js'
import { gradients, opsetNeeded } from './gradients.js'
import { graphOf, isExternal, onnx, readModel, writeModel, type GraphProto, type LoadedModel, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from './proto.js'
import { foldGraph, specialiseInput } from './fold.js'
import { recomputeSegments, type Reached } from './recompute.js'
import { dtypeName, floatTypes, inferShapes, type Info } from './shapes.js'

export interface DifferentiateOptions {
  /** graph inputs to differentiate with respect to */
  wrt: string[]
  /** the output to differentiate (a scalar; a tensor is differentiated as the sum of its elements); default: the only output */
  of?: string
  /** values for symbolic input dims: the result is specialised to them (its inputs declare them), with more static shapes */
  dims?: Record<string, number>
  /** recompute the forward in this many segments during the backward pass, to hold less (recompute.ts); default 1: keep all */
  segments?: number
  /** other outputs of the model to keep beside `of` (a preview image the gradient pass computes anyway) */
  keep?: string[]
}

/** Nodes in topological order (exporters sort them, composed graphs might not): a depth-first walk to each node's producers. */
function topologicalOrder(nodes: NodeProto[], available: Set<string>): NodeProto[] {
  const producer = new Map<string, NodeProto>()
  for (const node of nodes) for (const name of node.output) if (name) producer.set(name, node)
  const state = new Map<NodeProto, 'open' | 'done'>()
  const order: NodeProto[] = []
  for (const root of nodes) {
    if (state.has(root)) continue
    state.set(root, 'open')
    const stack: [NodeProto, number][] = [[root, 0]]
    while (stack.length) {
      const top = stack[stack.length - 1]
      const [node, next] = top
      if (next === node.input.length) {
        stack.pop()
        state.set(node, 'done')
        order.push(node)
        continue
      }
      top[1]++
      const name = node.input[next]
      if (!name || available.has(name)) continue
      const before = producer.get(name)
      if (!before || state.get(before) === 'open') throw new UserError(`autodiff: node ${node.name} (${node.opType}) reads ${name}, which ${before ? 'depends on its own output' : 'nothing produces'}`)
      if (!state.has(before)) {
        state.set(before, 'open')
        stack.push([before, 0])
      }
    }
  }
  return order
}

interface Plan {
  model: ModelProto
  graph: GraphProto
  infos: Map<string, Info>
  /** every node, in topological order */
  nodes: NodeProto[]
  /** float values that depend on a wrt input */
  active: Set<string>
  /** values from which `of` can be reached */
  relevant: Set<string>
  of: string
  outputs: ValueInfoProto[]
  inputs: Map<string, ValueInfoProto>
  /** every name in the graph (values and nodes), for fresh names that clash with none */
  names: Set<string>
  opset: number
}

/** Checks the request against the model and finds the nodes between the wrt inputs and `of`. */
function plan(loaded: LoadedModel, options: DifferentiateOptions): Plan {
  const model = loaded.model
  const graph = graphOf(model)
  const declared = model.opsetImport.find(o => !o.domain || o.domain === 'ai.onnx')?.version
  const opset = typeof declared === 'number' ? declared : Number(declared ?? 0)
  if (opset < 13) throw new UserError(`autodiff needs opset 13 or later; this model uses opset ${opset} (re-export it with a newer opset)`)
  const outputNames = graph.output.map(o => o.name).join(', ')
  const of = options.of ?? (graph.output.length === 1 ? graph.output[0].name! : undefined)
  if (!of) throw new UserError(`the model has ${graph.output.length} outputs (${outputNames}); say which one to differentiate (--of)`)
  const outputs = [of, ...(options.keep ?? [])].map((name, i) => {
    const found = graph.output.find(o => o.name === name)
    if (!found) throw new UserError(`the model has no output named ${name}${i > 0 ? ' to keep' : ''} (it has ${outputNames})`)
    return found as ValueInfoProto
  })
  if (options.wrt.length === 0) throw new UserError('say which inputs to differentiate with respect to (--wrt)')
  const segments = options.segments ?? 1
  if (!Number.isInteger(segments) || segments < 1) throw new UserError(`recompute segments ${segments}: expected a positive integer`)

  const infos = inferShapes(graph, options.dims)
  const inputs = new Map(graph.input.map(i => [i.name!, i as ValueInfoProto]))
  for (const x of options.wrt) {
    if (!inputs.has(x) || graph.initializer.some(t => t.name === x)) throw new UserError(`the model has no graph input named ${x} (inputs: ${[...inputs.keys()].join(', ')})`)
    if (!floatTypes.has(infos.get(x)?.dtype ?? -1)) throw new UserError(`input ${x} is ${dtypeName(infos.get(x)?.dtype)}; only float inputs have gradients`)
  }
  const available = new Set([...graph.input.map(i => i.name!), ...graph.initializer.map(t => t.name!)])
  const nodes = topologicalOrder(graph.node as NodeProto[], available)
  const active = new Set(options.wrt)
  for (const node of nodes) {
    if (!node.input.some(name => active.has(name))) continue
    for (const name of node.output) if (name && floatTypes.has(infos.get(name)?.dtype ?? -1)) active.add(name)
  }
  if (!active.has(of)) throw new UserError(`output ${of} does not depend on ${options.wrt.join(', ')} through float values`)
  const relevant = new Set([of])
  for (let i = nodes.length - 1; i >= 0; i--) if (nodes[i].output.some(name => relevant.has(name))) for (const name of nodes[i].input) if (name) relevant.add(name)
  const names = new Set([...available, ...nodes.flatMap(n => [...n.output, n.name ?? ''])])
  return { model, graph, infos, nodes, active, relevant, of, outputs, inputs, names, opset }
}

/** Whether a node is on the path: it reads a value that depends on a wrt input and makes one `of` depends on. */
const onPath = (node: NodeProto, p: Plan) => node.input.some(name => p.active.has(name)) && node.output.some(name => p.relevant.has(name) && p.active.has(name))

/** Ops whose meaning changed after opset 13, with the opset that changed it (RoiAlign's default coordinates). */
const CHANGED_MEANING: Record<string, number> = { RoiAlign: 16 }

/** The gradient model's opset: the model's, raised to what a rule on the path needs where nothing in the model changed meaning on the way. */
function gradientOpset(p: Plan): number {
  const needs = p.nodes.filter(node => onPath(node, p)).map(node => ({ node, opset: opsetNeeded[node.opType]?.(node, p.infos) ?? 0 }))
  const highest = needs.reduce((a, b) => (b.opset > a.opset ? b : a), { node: undefined as NodeProto | undefined, opset: p.opset })
  if (!highest.node) return p.opset
  const changed = p.nodes.find(node => CHANGED_MEANING[node.opType] > p.opset && CHANGED_MEANING[node.opType] <= highest.opset)
  if (changed) throw new UserError(`autodiff: the gradient of ${highest.node.opType} node ${highest.node.name} needs opset ${highest.opset}, but ${changed.opType} node ${changed.name} means something else there; re-export the model with opset ${highest.opset} or later`)
  return highest.opset
}

/**
 * The reverse walk over the path (nodes in topological order): each node's rule maps the gradients of its
 * outputs to its inputs'; a value read by several nodes sums their contributions. Returns each value's total
 * gradient and where the walk reached each node (for recompute.ts).
 */
function reverseWalk(path: NodeProto[], active: Set<string>, of: string, wrt: string[], e: Emitter): { total: (value: string) => string | undefined; reached: Map<NodeProto, Reached> } {
  const contributions = new Map<string, string[]>()
  const contribute = (value: string, gradient: string) => {
    // a gradient shaped like a broadcast result (Add's c.g) is summed down to its input's shape; one the
    // emitter knows no shape of (a Reshape back to the input's) has its input's shape already
    const from = e.infos.get(gradient)
    const fitted = from && (from.shape === undefined || from.shape !== e.info(value).shape) ? e.unbroadcast(gradient, value, gradient) : gradient
    contributions.set(value, [...(contributions.get(value) ?? []), e.like(fitted, value)])
  }
  const total = (value: string): string | undefined => {
    const list = contributions.get(value)
    if (list && list.length > 1) contributions.set(value, [e.like(e.op(list.length === 2 ? 'Add' : 'Sum', list), value)])
    return contributions.get(value)?.[0]
  }
  const ofInfo = e.info(of)
  contribute(of, ofInfo.shape?.every(d => d === 1) ? e.typed(1, ofInfo.dtype!, ofInfo.shape as number[]) : e.op('Expand', [e.scalar(1, of), e.shape(of)]))
  const reached = new Map<NodeProto, Reached>()
  for (const node of [...path].reverse()) {
    const dy = node.output.map(name => (active.has(name) ? total(name) : undefined))
    reached.set(node, { at: e.nodes.length, gradient: dy.find(d => d !== undefined) })
    if (dy.every(d => d === undefined)) continue
    const domain = node.domain ?? ''
    const rule = domain === '' || domain === 'ai.onnx' || domain === FUSED_DOMAIN ? gradients[node.opType] : undefined
    if (!rule) throw new UserError(`autodiff: no gradient rule for ${domain ? `${domain}.` : ''}${node.opType} (node ${node.name || node.output[0]}) on the path from ${wrt.join(', ')} to ${of}`)
    const c: GradContext = { node, x: [...node.input], y: [...node.output], dy, g: dy[0] ?? e.zerosLike(node.output[0]), needs: node.input.map(name => active.has(name)), e }
    const grads = rule(c)
    node.input.forEach((name, i) => {
      if (!c.needs[i] || grads[i] === null) return
      if (grads[i] === undefined) throw new UserError(`autodiff: the ${node.opType} rule gives no gradient for input ${i} (${name}) of node ${node.name}`)
      contribute(name, grads[i]!)
    })
  }
  return { total, reached }
}

/**
 * Returns a model with the same inputs whose outputs are `of` and, for each `wrt` input X, `X_grad` (X's
 * shape and dtype): reverse mode over the nodes on the path from the `wrt` inputs to `of`. External-data
 * weights stay in their files; the result's external locations are relative to the same folder.
 */
export function differentiate(loaded: LoadedModel, options: DifferentiateOptions): LoadedModel {
  const p = plan(loaded, options)
  const opset = gradientOpset(p)
  let prefix = 'grad__'
  while ([...p.names].some(n => n.startsWith(prefix))) prefix = `_${prefix}`
  const constants = new Map<string, TensorProto>(p.graph.initializer.map(t => [t.name!, t as TensorProto]))
  for (const node of p.nodes) if (node.opType === 'Constant' && node.attribute[0]?.t) constants.set(node.output[0], node.attribute[0].t as TensorProto)
  const producers = new Map(p.nodes.flatMap(node => node.output.map(name => [name, node] as const)))
  const e = new Emitter(opset, p.infos, constants, prefix, producers)

  const { nodes, partOf } = rewriteForGradients(p.nodes, p.active, new Set(p.graph.output.map(o => o.name!)), e)
  const path = nodes.filter(node => onPath(node, p))
  const { total, reached } = reverseWalk(path, p.active, p.of, options.wrt, e)
  const gradOutputs = options.wrt.map(x => {
    const name = `${x}_grad`
    if (p.names.has(name)) throw new UserError(`the model already has a value named ${name}`)
    e.nodes.push(new onnx.NodeProto({ opType: 'Identity', name: `${prefix}${name}`, input: [total(x) ?? e.zerosLike(x)], output: [name] }))
    return new onnx.ValueInfoProto({ name, type: p.inputs.get(x)!.type })
  })
  return { model: assemble(p, p.nodes.map(n => reached.get(partOf(n))), gradOutputs, e, options), dir: loaded.dir }
}

/**
 * The forward nodes (in order, with the optional outputs rules asked for) and the gradient nodes (with the
 * forward recomputed in segments where asked), pruned to what the outputs need. `reached`: for each forward
 * node, where the walk reached it (recompute.ts).
 */
function assemble(p: Plan, reached: (Reached | undefined)[], gradOutputs: ValueInfoProto[], e: Emitter, options: DifferentiateOptions): ModelProto {
  const forward = p.nodes.map(node => {
    const outputs = e.forwardOutputs.get(node)
    return outputs ? onnx.NodeProto.fromObject({ ...onnx.NodeProto.toObject(node), output: outputs }) : node
  })
  const outputs = new Set([...p.outputs, ...gradOutputs].map(o => o.name!))
  const segments = options.segments ?? 1
  const backward = segments > 1 ? recomputeSegments({ forward, backward: e.nodes, reached, outputs, segments, e }) : e.nodes
  const needed = new Set(outputs)
  const kept: NodeProto[] = []
  for (const node of [...forward, ...backward].reverse()) {
    if (!node.output.some(name => needed.has(name))) continue
    kept.push(node)
    for (const name of node.input) if (name) needed.add(name)
    // graph attributes (If/Loop bodies) may read outer values
    for (const a of node.attribute ?? []) if (a.g) for (const inner of a.g.node ?? []) for (const name of inner.input ?? []) if (name) needed.add(name)
  }
  kept.reverse()
  const { model, graph } = p
  const raised = e.opset > p.opset
  return new onnx.ModelProto({
    ...model,
    // opset 16 came with IR version 8
    irVersion: raised ? Math.max(Number(model.irVersion ?? 0), 8) : model.irVersion,
    opsetImport: raised ? model.opsetImport.map(o => (!o.domain || o.domain === 'ai.onnx' ? { ...o, version: e.opset } : o)) : model.opsetImport,
    graph: new onnx.GraphProto({
      name: graph.name,
      node: kept,
      // external tensors are copied (they are small): writing the result rewrites their locations
      initializer: [
        ...(graph.initializer as TensorProto[]).filter(t => needed.has(t.name!)).map(t => (isExternal(t) ? onnx.TensorProto.fromObject(onnx.TensorProto.toObject(t)) : t)),
        ...e.initializers.filter(t => needed.has(t.name!)),
      ],
      input: options.dims ? graph.input.map(i => specialiseInput(i as ValueInfoProto, options.dims!)) : graph.input,
      output: [...p.outputs, ...gradOutputs],
      valueInfo: graph.valueInfo.filter(v => needed.has(v.name!)),
    }),
  })
}

export interface GradientFileSummary {
  model: string
  output: string
  of: string
  wrt: string[]
  /** nodes in the forward model, and in the written model (forward path + gradient) */
  nodes: { forward: number; gradient: number }
  /** false where `of` is known not to be a scalar (its gradient is then that of the sum of its elements) */
  scalar: boolean
}

/** Reads a model file, differentiates it and writes the gradient model (external weights shared, written atomically). */
export async function writeGradientModel(modelPath: string, outputPath: string, options: DifferentiateOptions): Promise<GradientFileSummary> {
  const loaded = await readModel(modelPath)
  const forwardNodes = graphOf(loaded.model).node.length
  const gradient = foldGraph(differentiate(foldGraph(loaded, options.dims), options))
  await writeModel(gradient, outputPath)
  const graph = graphOf(gradient.model)
  const of = graph.output[0].name!
  const ofShape = inferShapes(graphOf(loaded.model), options.dims).get(of)?.shape
  return {
    model: modelPath,
    output: outputPath,
    of,
    wrt: options.wrt,
    nodes: { forward: forwardNodes, gradient: graph.node.length },
    scalar: !ofShape || ofShape.every(d => d === 1 || d === undefined),
  }
}
