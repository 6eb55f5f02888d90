// What a gradient rule works with (gradients.ts holds the rules, autodiff.ts the walk): the context of one
// forward node, and the Emitter that appends gradient nodes and knows the forward graph's static shapes.
import { UserError } from '../errors.js'
import { dtypeOf, GraphBuilder, tensor, type AttrValue } from './builder.js'
import { DataType, inlineTensorValues, isExternal, type AttributeProto, type NodeProto, type TensorProto } from './proto.js'
import { broadcastShapes, floatTypes, type Info } from './shapes.js'

const COMPARISONS = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Not'])
/** Emitted ops whose result has the broadcast shape of their inputs. */
const ELEMENTWISE = new Set([...COMPARISONS, 'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Mean', 'Where', 'Neg', 'Abs', 'Sign', 'Exp', 'Log',
  'Sqrt', 'Reciprocal', 'Sin', 'Cos', 'Tanh', 'Sigmoid', 'Erf', 'Floor', 'Relu', 'Cast'])

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
}

/**
 * A rule returns the gradient of each input: undefined where none is needed, null where it is zero (Floor,
 * comparisons). A gradient may have the shape of the broadcast result: the walk sums it down to its input's.
 */
export type GradRule = (c: GradContext) => (string | undefined | null)[]

/** Appends gradient nodes and constants with fresh names; knows the forward graph's static shapes. */
export class Emitter extends GraphBuilder {
  private readonly cache = new Map<string, string>()
  /** forward nodes' outputs, optional ones added where rules asked for them */
  readonly forwardOutputs = new Map<NodeProto, string[]>()

  constructor(
    opset: number,
    readonly infos: Map<string, Info>,
    /** inline initializers and Constant node values of the forward graph */
    readonly constants: Map<string, TensorProto>,
    prefix: string,
    /** the forward node making each value, to say where shape inference lost a shape */
    private readonly producers = new Map<string, NodeProto>(),
  ) {
    super('gradient', opset, prefix)
  }

  /** Records the shape of elementwise results, so the walk knows which gradients to sum down (unbroadcast). */
  override node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, outputs = 1, domain = ''): string[] {
    const names = super.node(op, inputs, attrs, outputs, domain)
    const given = inputs.filter(Boolean)
    if (ELEMENTWISE.has(op) && given.every(v => this.infos.has(v))) {
      const shapes = given.map(v => this.info(v).shape)
      // inputs that broadcast to anything (scalar constants) leave the other input's shape object as it is
      const shaping = shapes.filter(s => !s || !s.every(d => d === 1) || s.length === Math.max(...shapes.map(t => t?.length ?? 0)))
      const dtype = COMPARISONS.has(op) ? DataType.BOOL : op === 'Cast' ? (attrs.to as number) : this.info(op === 'Where' ? given[1] : given[0]).dtype
      this.infos.set(names[0], { dtype, shape: broadcastShapes(shaping.length ? shaping : shapes) })
    }
    return names
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

  /** Known integer values of a value (constants and folded shape subgraphs), or undefined. */
  known(value: string | undefined): number[] | undefined {
    const v = value ? this.info(value).value : undefined
    return v && v.every(d => typeof d === 'number') ? (v as number[]) : undefined
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

  /** The rank of a value, or a UserError naming the node that needed it and why the rank is unknown. */
  needRank(value: string, node: NodeProto): number {
    const rank = this.rank(value)
    if (rank === undefined) throw new UserError(`autodiff: cannot infer the rank of ${value} (input of ${node.opType} node ${node.name}): ${this.whyUnknown(value, v => this.rank(v) !== undefined)}`)
    return rank
  }

  /** The static dims of a value, or a UserError naming the node that needed them and why they are unknown. */
  needDims(value: string, node: NodeProto, what: string): number[] {
    const shape = this.info(value).shape
    if (shape?.every(d => typeof d === 'number')) return shape as number[]
    throw new UserError(`autodiff: ${node.opType} node ${node.name} needs the dims of ${value} (${what}): ${this.whyUnknown(value, v => !!this.info(v).shape?.every(d => typeof d === 'number'))}`)
  }

  /**
   * Advice on a value whose shape is not `known`: follows the unknown shapes up to the node where inference
   * lost them. Symbolic dims there (or at a graph input): give them values; else that op's shape rule is missing.
   */
  private whyUnknown(value: string, known: (value: string) => boolean): string {
    let node = this.producers.get(value)
    for (let up = node; up; up = this.producers.get(up.input.find(v => v && !known(v) && this.producers.has(v)) ?? '')) node = up
    const symbolic = (v: string) => [...(this.info(v).shape ?? []), ...(this.info(v).value ?? [])].some(d => typeof d === 'string')
    if (!node) return symbolic(value) ? `${value} has symbolic dims: give them values (--dim name=value)` : `${value} has no declared shape`
    if (node.input.some(v => v && symbolic(v))) return `shape inference lost it at ${node.opType} node ${node.name}, whose inputs have symbolic dims: give them values (--dim name=value)`
    return `shape inference does not cover ${node.opType} node ${node.name} (its inputs' shapes are known)`
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
