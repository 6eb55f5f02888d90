// Reverse-mode autodiff over ONNX graphs, emitting standard ONNX ops only, so the gradient model runs on
// stock onnxruntime (CPU and CUDA). Gradients are taken w.r.t. chosen graph inputs, never weights; the walk
// is pruned to the path from those inputs to one output; the per-op rules live in gradients.ts.
import { UserError } from '../errors.js'
import { dtypeOf, GraphBuilder, tensor, type AttrValue } from './builder.js'
import { gradients } from './gradients.js'
import { DataType, graphOf, inlineTensorValues, isExternal, onnx, readModel, writeModel, type AttributeProto, type LoadedModel, type NodeProto, type TensorProto, type ValueInfoProto } from './proto.js'
import { foldGraph } from './fold.js'
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

/** What a gradient rule sees: the forward node, its values, the gradients flowing into its outputs, and an emitter. */
export interface GradContext {
  node: NodeProto
  /** input names ('' for an omitted optional input) */
  x: string[]
  /** output names */
  y: string[]
  /** gradient of each output; undefined where none flows back */
  dy: (string | undefined)[]
  /** the gradient of output 0 */
  g: string
  /** whether input i needs a gradient */
  needs: boolean[]
  e: Emitter
  /** the forward nodes reading a value */
  readers: (value: string) => NodeProto[]
  /** the total gradient of a value whose readers are all finished, if any flows */
  gradientOf: (value: string) => string | undefined
  /** where a node stands in the reverse walk: its rule still to run, run, or off the path (no rule runs) */
  state: (node: NodeProto) => 'pending' | 'done' | 'off'
}

/**
 * A rule returns the gradient of each input: undefined where none is needed, null where another node's rule
 * already contributed it (slices that partition one tensor give one Concat).
 */
export type GradRule = (c: GradContext) => (string | undefined | null)[]

/** Appends gradient nodes and constants with fresh names; knows the forward graph's static shapes. */
export class Emitter extends GraphBuilder {
  private readonly cache = new Map<string, string>()
  /** forward nodes whose input gradients another rule has already emitted */
  readonly covered = new Set<NodeProto>()
  /** forward nodes' outputs, optional ones added where rules asked for them */
  readonly forwardOutputs = new Map<NodeProto, string[]>()

  constructor(
    opset: number,
    readonly infos: Map<string, Info>,
    /** inline initializers and Constant node values of the forward graph */
    readonly constants: Map<string, TensorProto>,
    prefix: string,
  ) {
    super('gradient', opset, prefix)
  }

  /** A node with attributes copied from a forward node. */
  nodeWith(op: string, inputs: string[], attributes: AttributeProto[], outputs = 1): string[] {
    const names = this.node(op, inputs, {}, outputs)
    this.nodes[this.nodes.length - 1].attribute = attributes
    return names
  }

  /**
   * Output `index` of a forward node, added to the node where the model does not compute it (LayerNormalization's
   * mean and inverse std, MaxPool's indices): the backward reuses what the forward computes anyway.
   */
  forwardOutput(node: NodeProto, index: number): string {
    const outputs = this.forwardOutputs.get(node) ?? [...node.output]
    this.forwardOutputs.set(node, outputs)
    while (outputs.length <= index) outputs.push('')
    if (!outputs[index]) outputs[index] = this.fresh(`${node.opType.toLowerCase()}_output${index}`)
    return outputs[index]
  }

  /** The values of a float constant (initializer or Constant node) stored in the model, else undefined. */
  floatValues(name?: string): number[] | undefined {
    const t = name ? this.constants.get(name) : undefined
    if (!t || isExternal(t) || !floatTypes.has(t.dataType ?? -1) || t.dataType === DataType.FLOAT16) return undefined
    return Array.from(inlineTensorValues(t), Number)
  }

  /** Whether a value is a stored constant with every element equal to `value`. */
  isConstant(name: string | undefined, value: number): boolean {
    return this.floatValues(name)?.every(v => v === value) ?? false
  }

  /** Emits `op` once per distinct inputs/attributes (Shape(x), constant subgraphs). */
  cached(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    const key = `${op}|${inputs.join(',')}|${JSON.stringify(attrs)}`
    let name = this.cache.get(key)
    if (!name) this.cache.set(key, (name = this.op(op, inputs, attrs)))
    return name
  }

  info(value: string): Info {
    return this.infos.get(value) ?? {}
  }

  rank(value: string): number | undefined {
    return this.info(value).shape?.length
  }

  /** The rank of a value, or a UserError naming the node that needed it. */
  needRank(value: string, node: NodeProto): number {
    const rank = this.rank(value)
    if (rank === undefined) throw new UserError(`autodiff: cannot infer the rank of ${value} (input of ${node.opType} node ${node.name}); give the symbolic dims values (--dim name=value)`)
    return rank
  }

  dtype(value: string): number {
    return this.info(value).dtype ?? DataType.FLOAT
  }

  /** A constant tensor (scalar by default) of the given ONNX data type, shared between uses. */
  typed(value: number | number[], dtype: number, dims?: number[]): string {
    const values = typeof value === 'number' ? [value] : value
    const shape = dims ?? (typeof value === 'number' ? [] : [values.length])
    const key = `const|${dtype}|${shape}|${values.join(',')}`
    let name = this.cache.get(key)
    if (!name) {
      name = this.fresh('const')
      const typed = dtype === DataType.FLOAT16 ? Uint16Array.from(values, toHalf) : values
      this.initializers.push(tensor(name, dtypeOf[dtype] ?? 'float32', shape, typed))
      this.infos.set(name, { dtype, shape })
      this.cache.set(key, name)
    }
    return name
  }

  /** A 1-D int64 constant (axes, pads, shapes), shared between uses. */
  override ints(values: number[]): string {
    const key = `ints|${values.join(',')}`
    let name = this.cache.get(key)
    if (!name) {
      name = this.fresh('ints')
      this.initializers.push(tensor(name, 'int64', [values.length], values))
      this.infos.set(name, { dtype: DataType.INT64, shape: [values.length], value: values })
      this.cache.set(key, name)
    }
    return name
  }

  /** A scalar of the same float dtype as `like`. */
  scalar(value: number, like: string): string {
    return this.typed(value, this.dtype(like))
  }

  shape(value: string): string {
    const known = this.info(value).shape
    if (known && known.every(d => typeof d === 'number')) return this.ints(known as number[])
    return this.cached('Shape', [value])
  }

  /** Gradient values have their forward value's shape and dtype: record that for later static decisions. */
  like(gradient: string, forward: string): string {
    if (!this.infos.has(gradient)) this.infos.set(gradient, { dtype: this.info(forward).dtype, shape: this.info(forward).shape })
    return gradient
  }

  reduceSum(x: string, axes: number[], keepdims: boolean): string {
    return this.op('ReduceSum', [x, this.ints(axes)], { keepdims: keepdims ? 1 : 0 })
  }

  reduceMean(x: string, axes: number[], keepdims = true): string {
    if (this.opset >= 18) return this.op('ReduceMean', [x, this.ints(axes)], { keepdims: keepdims ? 1 : 0 })
    return this.op('ReduceMean', [x], { axes, keepdims: keepdims ? 1 : 0 })
  }

  zerosLike(value: string): string {
    return this.op('ConstantOfShape', [this.shape(value)], { value: tensor('zero', dtypeOf[this.dtype(value)] ?? 'float32', [1], [0]) })
  }

  /**
   * Sums `g` (shaped like the broadcast result `y`) down to the shape of operand `x`. Static axes where the
   * shapes decide them; else a Shape-based subgraph (ReduceSum over the axes where x's padded shape is 1).
   */
  unbroadcast(g: string, x: string, y: string): string {
    const sx = this.info(x).shape, sy = this.info(y).shape
    if (sx && sx === sy) return g
    if (sx && sy && sx.length <= sy.length) {
      const lead = sy.length - sx.length
      const axes: number[] = []
      let decided = true
      sy.forEach((dy, i) => {
        if (i < lead) return axes.push(i)
        const dx = sx[i - lead]
        if (dx === 1) { if (dy !== 1) axes.push(i) }
        else if (typeof dx === 'number' || dy === 1 || (dx !== undefined && dx === dy)) { /* same size */ }
        else decided = false
      })
      if (decided) {
        if (axes.length === 0) return g
        const summed = this.reduceSum(g, axes, true)
        return this.like(lead > 0 ? this.op('Squeeze', [summed, this.ints(axes.slice(0, lead))]) : summed, x)
      }
    }
    const shapeX = this.shape(x)
    const shapeG = this.cached('Shape', [g])
    const missing = this.op('Sub', [this.cached('Shape', [shapeG]), this.cached('Shape', [shapeX])])
    const ones = this.op('ConstantOfShape', [missing], { value: tensor('one', 'int64', [1], [1]) })
    const padded = this.op('Concat', [ones, shapeX], { axis: 0 })
    const axes = this.op('Reshape', [this.op('NonZero', [this.op('Equal', [padded, this.typed(1, DataType.INT64)])]), this.ints([-1])])
    const summed = this.op('ReduceSum', [g, axes], { keepdims: 1, noop_with_empty_axes: 1 })
    return this.like(this.op('Reshape', [summed, shapeX]), x)
  }
}

/** float32 → IEEE half bits (round to nearest even), for constants in fp16 graphs. */
function toHalf(value: number): number {
  const f32 = new Float32Array([value])
  const bits = new Uint32Array(f32.buffer)[0]
  const sign = (bits >>> 16) & 0x8000
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15
  const mantissa = bits & 0x7fffff
  if (exponent >= 31) return sign | 0x7c00 | (((bits >>> 23) & 0xff) === 0xff && mantissa ? 0x200 : 0)
  if (exponent <= 0) {
    if (exponent < -10) return sign
    const m = (mantissa | 0x800000) >> (1 - exponent)
    return sign | ((m + 0x1000 + ((m >> 13) & 1) - 1) >> 13)
  }
  const rounded = mantissa + 0xfff + ((mantissa >> 13) & 1)
  return rounded & 0x800000 ? sign | ((exponent + 1) << 10) : sign | (exponent << 10) | (rounded >> 13)
}

/** An input's declaration with the given symbolic dims fixed. */
function specialise(input: ValueInfoProto, dims: Record<string, number>): ValueInfoProto {
  const copy = onnx.ValueInfoProto.fromObject(onnx.ValueInfoProto.toObject(input))
  const shape = copy.type?.tensorType?.shape
  if (shape?.dim) shape.dim = shape.dim.map(d => (d.dimParam && dims[d.dimParam] !== undefined ? new onnx.TensorShapeProto.Dimension({ dimValue: dims[d.dimParam] }) : d))
  return copy
}

/** Nodes in topological order (exporters sort them, composed graphs might not). */
function topologicalOrder(nodes: NodeProto[], available: Set<string>): NodeProto[] {
  const ready = new Set(available)
  const pending = [...nodes]
  const order: NodeProto[] = []
  while (pending.length) {
    const before = order.length
    for (let i = 0; i < pending.length;) {
      const node = pending[i]
      if (node.input.every(name => !name || ready.has(name))) {
        order.push(node)
        node.output.forEach(name => ready.add(name))
        pending.splice(i, 1)
      } else i++
    }
    if (order.length === before) {
      const node = pending[0]
      throw new UserError(`autodiff: node ${node.name} (${node.opType}) reads ${node.input.find(n => n && !ready.has(n))}, which nothing produces`)
    }
  }
  return order
}

/**
 * Returns a model with the same inputs whose outputs are `of` and, for each `wrt` input X, `X_grad` (X's
 * shape and dtype): reverse mode over the nodes on the path from the `wrt` inputs to `of`. External-data
 * weights stay in their files; the result's external locations are relative to the same folder.
 */
export function differentiate(loaded: LoadedModel, options: DifferentiateOptions): LoadedModel {
  const model = loaded.model
  const graph = graphOf(model)
  const opset = model.opsetImport.find(o => !o.domain || o.domain === 'ai.onnx')?.version
  const version = typeof opset === 'number' ? opset : Number(opset ?? 0)
  if (version < 13) throw new UserError(`autodiff needs opset 13 or later; this model uses opset ${version} (re-export it with a newer opset)`)
  const of = options.of ?? (graph.output.length === 1 ? graph.output[0].name! : undefined)
  if (!of) throw new UserError(`the model has ${graph.output.length} outputs (${graph.output.map(o => o.name).join(', ')}); say which one to differentiate (--of)`)
  const output = graph.output.find(o => o.name === of)
  if (!output) throw new UserError(`the model has no output named ${of} (it has ${graph.output.map(o => o.name).join(', ')})`)
  if (options.wrt.length === 0) throw new UserError('say which inputs to differentiate with respect to (--wrt)')
  const keptOutputs = (options.keep ?? []).map(name => {
    const found = graph.output.find(o => o.name === name)
    if (!found) throw new UserError(`the model has no output named ${name} to keep (it has ${graph.output.map(o => o.name).join(', ')})`)
    return found
  })
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

  // active: float values that depend on a wrt input
  const active = new Set(options.wrt)
  for (const node of nodes) {
    if (!node.input.some(name => active.has(name))) continue
    for (const name of node.output) if (name && floatTypes.has(infos.get(name)?.dtype ?? -1)) active.add(name)
  }
  if (!active.has(of)) throw new UserError(`output ${of} does not depend on ${options.wrt.join(', ')} through float values`)
  // relevant: values from which `of` can be reached
  const relevant = new Set([of])
  for (const node of [...nodes].reverse()) {
    if (node.output.some(name => relevant.has(name))) for (const name of node.input) if (name) relevant.add(name)
  }
  const path = nodes.filter(node => node.input.some(name => active.has(name)) && node.output.some(name => relevant.has(name) && active.has(name)))

  const names = new Set([...available, ...nodes.flatMap(n => [...n.output, n.name ?? ''])])
  let prefix = 'grad__'
  while ([...names].some(n => n.startsWith(prefix))) prefix = `_${prefix}`
  const constants = new Map<string, TensorProto>(graph.initializer.map(t => [t.name!, t as TensorProto]))
  for (const node of nodes) if (node.opType === 'Constant' && node.attribute[0]?.t) constants.set(node.output[0], node.attribute[0].t as TensorProto)
  const e = new Emitter(version, infos, constants, prefix)

  const readers = new Map<string, NodeProto[]>()
  for (const node of nodes) for (const name of new Set(node.input)) if (name) readers.set(name, [...(readers.get(name) ?? []), node])
  const contributions = new Map<string, string[]>()
  const contribute = (value: string, gradient: string) => {
    const list = contributions.get(value)
    if (list) list.push(gradient)
    else contributions.set(value, [gradient])
  }
  /** The total gradient of a value: its contributions summed (fan-out). */
  const total = (value: string): string | undefined => {
    const list = contributions.get(value)
    if (!list || list.length === 0) return undefined
    if (list.length > 1) list.splice(0, list.length, e.like(e.op(list.length === 2 ? 'Add' : 'Sum', [...list]), value))
    return list[0]
  }

  const ofInfo = infos.get(of)!
  const seed = ofInfo.shape && ofInfo.shape.every(d => d === 1)
    ? e.typed(1, ofInfo.dtype!, ofInfo.shape as number[])
    : e.op('Expand', [e.scalar(1, of), e.shape(of)])
  contribute(of, e.like(seed, of))

  const onPath = new Set(path)
  const done = new Set<NodeProto>()
  const reached = new Map<NodeProto, Reached>()
  for (const node of [...path].reverse()) {
    done.add(node)
    const at = e.nodes.length
    const dy = node.output.map(name => (active.has(name) ? total(name) : undefined))
    reached.set(node, { at, gradient: dy.find(d => d !== undefined) })
    if (dy.every(d => d === undefined)) continue
    const rule = (node.domain ?? '') === '' || node.domain === 'ai.onnx' ? gradients[node.opType] : undefined
    if (!rule) throw new UserError(`autodiff: no gradient rule for ${node.domain ? `${node.domain}.` : ''}${node.opType} (node ${node.name || node.output[0]}) on the path from ${options.wrt.join(', ')} to ${of}`)
    const context: GradContext = {
      node, x: [...node.input], y: [...node.output], dy, g: dy[0] ?? e.zerosLike(node.output[0]), needs: node.input.map(name => active.has(name)), e,
      readers: value => readers.get(value) ?? [],
      gradientOf: total,
      state: other => (!onPath.has(other) ? 'off' : done.has(other) ? 'done' : 'pending'),
    }
    const grads = rule(context)
    node.input.forEach((name, i) => {
      if (!context.needs[i]) return
      const gradient = grads[i]
      if (gradient === undefined) throw new UserError(`autodiff: the ${node.opType} rule gives no gradient for input ${i} (${name}) of node ${node.name}`)
      if (gradient !== null) contribute(name, e.like(gradient, name))
    })
  }

  const gradOutputs = options.wrt.map(x => {
    const name = `${x}_grad`
    if (names.has(name)) throw new UserError(`the model already has a value named ${name}`)
    e.nodes.push(new onnx.NodeProto({ opType: 'Identity', name: `${prefix}${name}`, input: [total(x) ?? e.zerosLike(x)], output: [name] }))
    return new onnx.ValueInfoProto({ name, type: inputs.get(x)!.type })
  })

  // keep only what the new outputs need; the forward nodes come first, in order
  const withOutputs = (node: NodeProto) => {
    const outputs = e.forwardOutputs.get(node)
    return outputs ? onnx.NodeProto.fromObject({ ...onnx.NodeProto.toObject(node), output: outputs }) : node
  }
  const forward = nodes.map(withOutputs)
  const outputs = new Set([of, ...keptOutputs.map(o => o.name!), ...gradOutputs.map(o => o.name!)])
  const backward = segments > 1 ? recomputeSegments({ forward, backward: e.nodes, reached: nodes.map(n => reached.get(n)), outputs, segments, e }) : e.nodes
  const allNodes = [...forward, ...backward]
  const needed = new Set(outputs)
  const kept: NodeProto[] = []
  for (const node of [...allNodes].reverse()) {
    if (!node.output.some(name => needed.has(name))) continue
    kept.push(node)
    for (const name of node.input) if (name) needed.add(name)
    // graph attributes (If/Loop bodies) may read outer values
    for (const a of node.attribute ?? []) if (a.g) for (const inner of a.g.node ?? []) for (const name of inner.input ?? []) if (name) needed.add(name)
  }
  kept.reverse()
  const result = new onnx.ModelProto({
    ...model,
    opsetImport: model.opsetImport,
    graph: new onnx.GraphProto({
      name: graph.name,
      node: kept,
      // external tensors are copied (they are small): writing the result rewrites their locations
      initializer: [
        ...(graph.initializer as TensorProto[]).filter(t => needed.has(t.name!)).map(t => (isExternal(t) ? onnx.TensorProto.fromObject(onnx.TensorProto.toObject(t)) : t)),
        ...e.initializers.filter(t => needed.has(t.name!)),
      ],
      input: options.dims ? graph.input.map(i => specialise(i as ValueInfoProto, options.dims!)) : graph.input,
      output: [output, ...keptOutputs, ...gradOutputs],
      valueInfo: graph.valueInfo.filter(v => needed.has(v.name!)),
    }),
  })
  return { model: result, dir: loaded.dir }
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
