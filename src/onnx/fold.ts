// Specialise and fold: with the symbolic input dims given, every value that does not depend on the float inputs'
// values (torch's shape arithmetic: Shape → Gather → Unsqueeze → Concat → Reshape, `timesteps.expand(batch)` as
// Expand(t, Where(Equal(s, -1), ConstantOfShape(..), s)), Constant nodes) becomes an initializer; dead terms
// (baddbmm's `Mul(ConstantOfShape(..), 0)` added to the scores) and no-op Casts and Identities disappear. The result
// has static shapes, so the autodiff emits no dynamic un-broadcasts and onnxruntime plans it quickly.
import { DataType, dims as tensorDims, graphOf, inlineTensorValues, isExternal, onnx, toNumber, type AttributeProto, type GraphProto, type LoadedModel, type NodeProto, type TensorProto, type ValueInfoProto } from './proto.js'
import { attrOf, broadcastShapes, inferShapes, intAttr, intsAttr, type Info } from './shapes.js'

/** A value known while folding: its elements (small tensors), or one element repeated (`fill`, any size). */
interface Known {
  dtype: number
  shape: number[]
  values?: number[]
  fill?: number
}

/** Elements computed and stored at most: shape arithmetic and small tables; larger values stay nodes (or fills). */
const MAX_ELEMENTS = 4096
const MAX_PASSES = 8

const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1)
const isFloat = (dtype: number) => dtype === DataType.FLOAT || dtype === DataType.DOUBLE
const isInteger = (dtype: number) => dtype === DataType.INT64 || dtype === DataType.INT32 || dtype === DataType.INT8 || dtype === DataType.UINT8 || dtype === DataType.BOOL
const foldable = (dtype: number) => isFloat(dtype) || isInteger(dtype)
/** Rounds to the dtype as onnxruntime would store the result. */
const round = (dtype: number, v: number) => (dtype === DataType.FLOAT ? Math.fround(v) : dtype === DataType.BOOL ? Number(v !== 0) : isInteger(dtype) ? Math.trunc(v) : v)

function known(dtype: number, shape: number[], element: (i: number) => number): Known {
  const n = count(shape)
  return { dtype, shape, values: Array.from({ length: n }, (_, i) => round(dtype, element(i))) }
}
const elementOf = (k: Known) => (k.values ? (i: number) => k.values![i] : () => k.fill!)
/** The one element a value repeats, where it does (a fill, or a single element). */
const uniform = (k: Known) => k.fill ?? (k.values?.length === 1 ? k.values[0] : undefined)
const isZero = (k?: Known) => k !== undefined && (k.fill === 0 || (k.values !== undefined && k.values.every(v => v === 0)))
const isOne = (k?: Known) => k !== undefined && (k.fill === 1 || (k.values !== undefined && k.values.every(v => v === 1)))

function fromTensor(t: TensorProto): Known | undefined {
  const shape = tensorDims(t)
  if (isExternal(t) || !foldable(t.dataType) || count(shape) > MAX_ELEMENTS) return undefined
  return { dtype: t.dataType, shape, values: Array.from(inlineTensorValues(t), Number) }
}

/** The flat index into `shape` (broadcast from the right) of output element `i` of `out`. */
function broadcastIndex(i: number, out: number[], shape: number[]): number {
  let index = 0, stride = 1, rest = i
  const offset = out.length - shape.length
  const coords = out.map(() => 0)
  for (let d = out.length - 1; d >= 0; d--) { coords[d] = rest % out[d]; rest = Math.floor(rest / out[d]) }
  for (let d = shape.length - 1; d >= 0; d--) {
    index += (shape[d] === 1 ? 0 : coords[d + offset]) * stride
    stride *= shape[d]
  }
  return index
}

/** An elementwise op over broadcast inputs: a fill where every input is one, else the elements (when few). */
function elementwise(ins: Known[], dtype: number, f: (...xs: number[]) => number): Known | undefined {
  const shape = broadcastShapes(ins.map(k => k.shape)) as number[] | undefined
  if (!shape) return undefined
  if (ins.every(k => uniform(k) !== undefined) && count(shape) > MAX_ELEMENTS) return { dtype, shape, fill: round(dtype, f(...ins.map(k => uniform(k)!))) }
  if (count(shape) > MAX_ELEMENTS || ins.some(k => k.values === undefined && count(k.shape) > MAX_ELEMENTS)) return undefined
  const at = ins.map(elementOf)
  return known(dtype, shape, i => f(...ins.map((k, j) => at[j](broadcastIndex(i, shape, k.shape)))))
}

const strides = (shape: number[]) => shape.map((_, d) => count(shape.slice(d + 1)))
const coordsOf = (i: number, shape: number[]) => strides(shape).map((s, d) => Math.floor(i / s) % shape[d])
const normalise = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis)

/** Elements of `x` (with values) picked by a per-output-coordinate map to input coordinates. */
function gatherElements(x: Known, shape: number[], source: (coords: number[]) => number[]): Known | undefined {
  if (count(shape) > MAX_ELEMENTS) return undefined
  if (x.values === undefined) return { dtype: x.dtype, shape, fill: x.fill }
  const s = strides(x.shape)
  return known(x.dtype, shape, i => x.values![source(coordsOf(i, shape)).reduce((a, c, d) => a + c * s[d], 0)])
}

const reshaped = (x: Known, shape: number[]): Known => ({ ...x, shape })

/** What a node's outputs are, given what is known of its inputs; undefined where it stays a node. */
type Rule = (node: NodeProto, ins: (Known | undefined)[], infos: Map<string, Info>) => (Known | undefined)[] | undefined

const numeric = (shape?: (number | string | undefined)[]) => (shape && shape.every(d => typeof d === 'number') ? (shape as number[]) : undefined)
const all = (ins: (Known | undefined)[]): ins is Known[] => ins.every(k => k !== undefined)
const ints = (k?: Known) => (k?.values ? k.values : k && k.fill !== undefined ? Array(count(k.shape)).fill(k.fill) : undefined)

const binary = (f: (a: number, b: number) => number, compare = false): Rule => (_, ins) => (all(ins) ? [elementwise(ins, compare ? DataType.BOOL : ins[0].dtype, f)] : undefined)
const unary = (f: (a: number) => number): Rule => (_, [x]) => (x && isFloat(x.dtype) ? [elementwise([x], x.dtype, f)] : undefined)

const rules: Record<string, Rule> = {
  Shape: (node, _, infos) => {
    const shape = numeric(infos.get(node.input[0])?.shape)
    if (!shape) return undefined
    const end = attrOf(node, 'end') ? Math.min(normalise(intAttr(node, 'end', 0), shape.length), shape.length) : shape.length
    const values = shape.slice(normalise(intAttr(node, 'start', 0), shape.length), end)
    return [{ dtype: DataType.INT64, shape: [values.length], values }]
  },
  Size: (node, _, infos) => {
    const shape = numeric(infos.get(node.input[0])?.shape)
    return shape ? [{ dtype: DataType.INT64, shape: [], values: [count(shape)] }] : undefined
  },
  Constant: node => {
    const a = node.attribute[0]
    if (a.t) return [fromTensor(a.t as TensorProto)]
    if (a.name === 'value_int') return [{ dtype: DataType.INT64, shape: [], values: [toNumber(a.i)] }]
    if (a.name === 'value_ints') return [{ dtype: DataType.INT64, shape: [a.ints!.length], values: a.ints!.map(toNumber) }]
    if (a.name === 'value_float') return [{ dtype: DataType.FLOAT, shape: [], values: [a.f ?? 0] }]
    if (a.name === 'value_floats') return [{ dtype: DataType.FLOAT, shape: [a.floats!.length], values: [...a.floats!] }]
    return undefined
  },
  ConstantOfShape: (node, [s]) => {
    const shape = ints(s)
    if (!shape) return undefined
    const t = attrOf(node, 'value')?.t as TensorProto | undefined
    const fill = t ? fromTensor(t)?.values?.[0] : 0
    if (fill === undefined) return undefined
    return [{ dtype: t?.dataType ?? DataType.FLOAT, shape, fill }]
  },
  Cast: (node, [x]) => {
    const to = intAttr(node, 'to', DataType.FLOAT)
    if (!x || !foldable(to)) return undefined
    return [x.values ? known(to, x.shape, i => x.values![i]) : { dtype: to, shape: x.shape, fill: round(to, x.fill!) }]
  },
  Identity: (_, [x]) => (x ? [x] : undefined),
  Gather: (node, [data, indices]) => {
    if (!data || !indices?.values) return undefined
    const axis = normalise(intAttr(node, 'axis', 0), data.shape.length)
    const shape = [...data.shape.slice(0, axis), ...indices.shape, ...data.shape.slice(axis + 1)]
    const r = indices.shape.length
    const at = strides(indices.shape)
    return [gatherElements(data, shape, c => [...c.slice(0, axis), normalise(indices.values![c.slice(axis, axis + r).reduce((a, v, k) => a + v * at[k], 0)], data.shape[axis]), ...c.slice(axis + r)])]
  },
  Unsqueeze: (node, [x, axesInput]) => {
    const axes = intsAttr(node, 'axes') ?? ints(axesInput)
    if (!x || !axes) return undefined
    const rank = x.shape.length + axes.length
    const set = new Set(axes.map(a => normalise(a, rank)))
    const rest = [...x.shape]
    return [reshaped(x, Array.from({ length: rank }, (_, i) => (set.has(i) ? 1 : rest.shift()!)))]
  },
  Squeeze: (node, [x, axesInput]) => {
    const axes = intsAttr(node, 'axes') ?? ints(axesInput)
    if (!x || (node.input[1] && !axes)) return undefined
    const set = axes ? new Set(axes.map(a => normalise(a, x.shape.length))) : undefined
    return [reshaped(x, x.shape.filter((d, i) => (set ? !set.has(i) : d !== 1)))]
  },
  Concat: (node, ins) => {
    if (!all(ins)) return undefined
    const axis = normalise(intAttr(node, 'axis', 0), ins[0].shape.length)
    const offsets = ins.map((_, j) => ins.slice(0, j).reduce((a, k) => a + k.shape[axis], 0))
    const shape = ins[0].shape.map((d, i) => (i === axis ? offsets[offsets.length - 1] + ins[ins.length - 1].shape[axis] : d))
    if (count(shape) > MAX_ELEMENTS) return undefined
    return [known(ins[0].dtype, shape, i => {
      const c = coordsOf(i, shape)
      const j = offsets.filter(o => o <= c[axis]).length - 1
      const k = ins[j]
      c[axis] -= offsets[j]
      return elementOf(k)(c.reduce((a, v, d) => a + v * strides(k.shape)[d], 0))
    })]
  },
  Slice: (node, [x, starts, ends, axesIn, stepsIn]) => {
    const [s, e] = [ints(starts), ints(ends)]
    if (!x || !s || !e || (node.input[3] && !axesIn) || (node.input[4] && !stepsIn)) return undefined
    const axes = (ints(axesIn) ?? s.map((_, i) => i)).map(a => normalise(a, x.shape.length))
    const steps = ints(stepsIn) ?? s.map(() => 1)
    const first = x.shape.map(() => 0), step = x.shape.map(() => 1), shape = [...x.shape]
    axes.forEach((axis, j) => {
      const dim = x.shape[axis], st = steps[j]
      const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v < 0 ? v + dim : v, lo), hi)
      const [b, end] = st > 0 ? [clamp(s[j], 0, dim), clamp(e[j], 0, dim)] : [clamp(s[j], -1, dim - 1), clamp(e[j], -1, dim - 1)]
      first[axis] = b; step[axis] = st
      shape[axis] = Math.max(0, Math.ceil((end - b) / st))
    })
    return [gatherElements(x, shape, c => c.map((v, d) => first[d] + v * step[d]))]
  },
  // torch's F.pad reverses its pads with Reshape → Slice → Transpose (Swin's window pads)
  Transpose: (node, [x]) => {
    if (!x) return undefined
    const perm = permOf(node, x.shape.length)
    const shape = perm.map(p => x.shape[p])
    return [x.values === undefined ? { ...x, shape } : gatherElements(x, shape, c => perm.reduce((source, p, i) => { source[p] = c[i]; return source }, [...c]))]
  },
  Reshape: (node, [x, target]) => {
    const t = ints(target)
    if (!x || !t) return undefined
    const allowZero = intAttr(node, 'allowzero', 0) === 1
    const shape = t.map((d, i) => (d === 0 && !allowZero ? x.shape[i] : d))
    const inferred = shape.indexOf(-1)
    if (inferred >= 0) shape[inferred] = count(x.shape) / -count(shape)
    return [reshaped(x, shape)]
  },
  Expand: (_, [x, target]) => {
    const t = ints(target)
    if (!x || !t) return undefined
    const shape = broadcastShapes([x.shape, t]) as number[]
    return [x.values === undefined ? { ...x, shape } : gatherElements(x, shape, c => c.slice(shape.length - x.shape.length).map((v, d) => (x.shape[d] === 1 ? 0 : v)))]
  },
  Range: (_, [start, limit, delta]) => {
    if (!start?.values || !limit?.values || !delta?.values) return undefined
    const n = Math.max(Math.ceil((limit.values[0] - start.values[0]) / delta.values[0]), 0)
    return n > MAX_ELEMENTS ? undefined : [known(start.dtype, [n], i => start.values![0] + i * delta.values![0])]
  },
  Where: (_, ins) => (all(ins) ? [elementwise(ins, ins[1].dtype, (c, a, b) => (c ? a : b))] : undefined),
  Add: binary((a, b) => a + b),
  Sub: binary((a, b) => a - b),
  Mul: binary((a, b) => a * b),
  Div: (node, ins, infos) => binary(all(ins) && isInteger(ins[0].dtype) ? (a, b) => Math.trunc(a / b) : (a, b) => a / b)(node, ins, infos),
  Pow: binary((a, b) => a ** b),
  Mod: binary((a, b) => a - b * Math.floor(a / b)),
  Max: binary(Math.max),
  Min: binary(Math.min),
  Equal: binary((a, b) => Number(a === b), true),
  Less: binary((a, b) => Number(a < b), true),
  Greater: binary((a, b) => Number(a > b), true),
  LessOrEqual: binary((a, b) => Number(a <= b), true),
  GreaterOrEqual: binary((a, b) => Number(a >= b), true),
  And: binary((a, b) => Number(a && b), true),
  Or: binary((a, b) => Number(a || b), true),
  Not: (_, [x]) => (x ? [elementwise([x], DataType.BOOL, a => Number(!a))] : undefined),
  Neg: (_, [x]) => (x ? [elementwise([x], x.dtype, a => -a)] : undefined),
  Abs: (_, [x]) => (x ? [elementwise([x], x.dtype, Math.abs)] : undefined),
  Sqrt: unary(Math.sqrt),
  Reciprocal: unary(a => 1 / a),
  Exp: unary(Math.exp),
  Log: unary(Math.log),
  Sin: unary(Math.sin),
  Cos: unary(Math.cos),
  Floor: unary(Math.floor),
  Ceil: unary(Math.ceil),
}

/**
 * Dead terms and no-ops, where an input is unknown: x·0 is a zero fill of the output's shape (x is a finite
 * activation), x + 0, x − 0, x·1 and x/1 are x where the constant does not broadcast x larger, and a Cast to the
 * type x has, an Identity or an inference Dropout is x. Returns the index of the input the output equals, or the
 * zero fill.
 */
function deadTerm(node: NodeProto, ins: (Known | undefined)[], infos: Map<string, Info>): number | Known | undefined {
  const info = (i: number) => infos.get(node.input[i])
  const out = infos.get(node.output[0])
  const sameShape = (i: number) => numeric(info(i)?.shape) !== undefined && JSON.stringify(info(i)!.shape) === JSON.stringify(out?.shape)
  switch (node.opType) {
    case 'Identity': return 0
    case 'Dropout': return node.output.length === 1 || !node.output[1] ? 0 : undefined
    case 'Cast': return info(0)?.dtype === intAttr(node, 'to', -1) ? 0 : undefined
    case 'Mul': {
      // x·0 is 0 only where x is known (finite): a computed x may be Inf or NaN, and recompute.ts's 0 × (an
      // element of the gradient) is what orders its copies after the backward, which must stay
      const zero = ins.findIndex(isZero)
      const shape = numeric(out?.shape)
      if (zero >= 0 && ins[1 - zero] !== undefined && shape && out?.dtype !== undefined && isFloat(out.dtype)) return { dtype: out.dtype, shape, fill: 0 }
      const one = ins.findIndex(isOne)
      return one >= 0 && sameShape(1 - one) ? 1 - one : undefined
    }
    case 'Add': {
      const zero = ins.findIndex(isZero)
      return zero >= 0 && sameShape(1 - zero) ? 1 - zero : undefined
    }
    case 'Sub': return isZero(ins[1]) && sameShape(0) ? 0 : undefined
    case 'Div': return isOne(ins[1]) && sameShape(0) ? 0 : undefined
  }
  return undefined
}

/** Ops whose repeated evaluation may differ: never merged with an identical node. */
const unrepeatable = (op: string) => op.startsWith('Random') || op === 'Multinomial' || op === 'Bernoulli' || op === 'Dropout'
/** Ops that keep the elements in order and change only the shape (a Transpose where it moves only size-1 dims). */
const VIEWS = new Set(['Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Transpose'])
/** Elementwise ops that commute with a view of all their non-scalar inputs. */
const ELEMENTWISE = new Set(['Add', 'Sub', 'Mul', 'Div', 'Sum'])
const sameShape = (a: number[], b: number[]) => a.length === b.length && a.every((d, i) => d === b[i])
const permOf = (node: NodeProto, rank: number) => intsAttr(node, 'perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i)

/**
 * Peepholes on the nodes that stay, where shapes are static (they follow the gradients' patterns: a MatMul's
 * input gradient is a Gemm on the flattened dY reshaped back, attention heads are split and merged by
 * Reshape → Transpose → Reshape):
 * - a view of a view is one Reshape of the first one's input, or that input itself where the shape comes back (the
 *   next MatMul's Flatten of the reshaped Gemm); a view to the shape it had is its input;
 * - Transpose∘Transpose is one Transpose, or none;
 * - an elementwise op on views of same-shaped values (and scalars) is the op on those values, viewed once, where
 *   that removes a view (the gradients of q, k, v and of a LoRA branch summed in 2-D before one Reshape);
 * - a view of x·s (s a scalar; any elementwise op on one value and scalars) that alone reads it is view(x)·s, so
 *   that view(x) is the one the other readers of x have (the LoRA branch's scaled dY flattened beside the base's);
 * - Add(Gemm(a, b), x) with x of the Gemm's shape is Gemm(a, b, x), where nothing else reads the Gemm; a Sum of
 *   such Gemms and one more value is a chain of them;
 * - a node identical to one before it (op, inputs, attributes) is that node.
 * Each rewrite that makes a node read a value marks it `touched`: its count of readers from the start of the pass
 * is then stale, and the rewrites that need a single reader wait for the next pass (except where a sunk op takes
 * over the only reader of a source: a Gemm summed in 2-D still takes C in the same pass).
 */
class Peepholes {
  /** value → the value it is a view of (the first non-view value up the chain) */
  private readonly views = new Map<string, string>()
  private readonly transposes = new Map<string, { source: string; perm: number[] }>()
  /** kept Gemms without C, by output */
  private readonly gemms = new Map<string, NodeProto>()
  /** kept elementwise nodes, by output */
  private readonly elementwise = new Map<string, NodeProto>()
  /** kept nodes by their first input (a name already hashed), for merging identical ones */
  private readonly readersOf = new Map<string, NodeProto[]>()
  private readonly touched = new Set<string>()
  rewrites = 0

  constructor(
    private readonly infos: Map<string, Info>,
    private readonly values: Map<string, Known>,
    private readonly alias: Map<string, string>,
    /** each value's count of readers in the graph at the start of the pass (being an output counts as one) */
    private readonly readers: Map<string, number>,
    private readonly names: Set<string>,
  ) {}

  private shape(name: string) { return numeric(this.infos.get(name)?.shape) }

  /** Whether `name` has one value, broadcast into a result of `rank` without growing it. */
  private scalar(name: string, rank: number) {
    const shape = this.shape(name)
    return shape !== undefined && count(shape) === 1 && shape.length <= rank
  }

  /** Whether `name` is read only by the node at hand, as the graph stood at the start of the pass. */
  private readOnce(name: string) { return this.readers.get(name) === 1 && !this.touched.has(name) }

  private fresh(base: string) {
    let name = base
    for (let i = 1; this.names.has(name); i++) name = `${base}_${i}`
    this.names.add(name)
    return name
  }

  private read(name: string) { this.touched.add(name); return name }

  private aliasTo(output: string, value: string): NodeProto[] {
    this.alias.set(output, this.read(value))
    this.rewrites++
    return []
  }

  /** An int64 initializer holding `shape` (one per shape, so Reshapes to the same shape can be merged). */
  private target(shape: number[]): string {
    const base = `fold__shape_${shape.join('x')}`
    const existing = this.values.get(base)
    if (existing?.values && sameShape(existing.values, shape) && existing.dtype === DataType.INT64) return base
    const name = this.fresh(base)
    this.values.set(name, { dtype: DataType.INT64, shape: [shape.length], values: shape })
    return name
  }

  private reshape(input: string, shape: number[], output: string, name: string): NodeProto {
    return new onnx.NodeProto({ opType: 'Reshape', name, input: [this.read(input), this.target(shape)], output: [output] })
  }

  /** Whether `node` only changes the shape of its input, both shapes static (no empty dims: 0 in a target copies). */
  private isView(node: NodeProto): boolean {
    if (!VIEWS.has(node.opType) || node.output.length !== 1) return false
    const [x, y] = [this.shape(node.input[0]), this.shape(node.output[0])]
    if (!x || !y || x.includes(0)) return false
    if (node.opType !== 'Transpose') return true
    const moved = permOf(node, x.length).filter(p => x[p] !== 1)
    return moved.every((p, i) => i === 0 || moved[i - 1] < p)
  }

  /** The nodes to keep in place of `node` (its inputs renamed): none where its outputs became aliases. */
  rewrite(node: NodeProto): NodeProto[] {
    const view = this.isView(node)
    const op = view ? this.hoistable(node) : undefined
    if (op) return this.hoist(node, op)
    const rewritten = view ? this.view(node) : node.opType === 'Transpose' ? this.transpose(node) : ELEMENTWISE.has(node.opType) ? this.sink(node) : [node]
    return this.keep(rewritten)
  }

  /** Nodes made in place of one, in order: each reads what the ones before it were merged into. */
  private keep(nodes: NodeProto[]): NodeProto[] {
    const kept: NodeProto[] = []
    for (const node of nodes) {
      node.input = node.input.map(name => this.alias.get(name) ?? name)
      for (const fused of this.fuseGemm(node)) if (this.merge(fused)) kept.push(fused)
    }
    return kept
  }

  /** The elementwise op on one value and scalars that a view alone reads, if so. */
  private hoistable(node: NodeProto): NodeProto | undefined {
    const op = this.elementwise.get(node.input[0])
    const rank = this.shape(node.output[0])!.length
    const scalars = op?.input.slice(1).every(name => this.scalar(name, rank))
    return op && scalars && sameShape(this.shape(op.input[0]) ?? [], this.shape(node.input[0])!) && this.readOnce(node.input[0]) ? op : undefined
  }

  private view(node: NodeProto): NodeProto[] {
    const [input, output] = [node.input[0], node.output[0]]
    const shape = this.shape(output)!
    const source = this.views.get(input) ?? input
    if (sameShape(this.shape(source)!, shape)) return this.aliasTo(output, source)
    this.views.set(output, source)
    if (source === input && node.opType !== 'Transpose') return [node]
    this.rewrites++
    return [this.reshape(source, shape, output, node.name ?? '')]
  }

  /** view(op(x, scalars)) → op(view(x), scalars), view(x) rewritten as any view (and merged with an identical one). */
  private hoist(node: NodeProto, op: NodeProto): NodeProto[] {
    const x = op.input[0]
    const viewed = this.fresh(`${node.output[0]}__hoisted`)
    this.infos.set(viewed, { dtype: this.infos.get(x)?.dtype, shape: this.shape(node.output[0]) })
    this.rewrites++
    const view = this.rewrite(new onnx.NodeProto({ ...node, input: [this.read(x), ...node.input.slice(1)], output: [viewed] }))
    const hoisted = new onnx.NodeProto({ ...op, input: [this.read(viewed), ...op.input.slice(1)], output: node.output })
    return [...view, ...this.keep([hoisted])]
  }

  private transpose(node: NodeProto): NodeProto[] {
    const [input, output] = [node.input[0], node.output[0]]
    const rank = this.shape(input)?.length
    if (rank === undefined) return [node]
    const inner = this.transposes.get(input)
    const outer = permOf(node, rank)
    const perm = inner ? outer.map(p => inner.perm[p]) : outer
    const source = inner?.source ?? input
    if (perm.every((p, i) => p === i)) return this.aliasTo(output, source)
    this.transposes.set(output, { source, perm })
    if (!inner) return [node]
    this.rewrites++
    return [new onnx.NodeProto({ opType: 'Transpose', name: node.name, input: [this.read(source)], output: [output], attribute: [{ name: 'perm', type: onnx.AttributeProto.AttributeType.INTS, ints: perm }] })]
  }

  /** op(view(x), view(y), scalar) → view(op(x, y, scalar)), where a view then goes (read only here). */
  private sink(node: NodeProto): NodeProto[] {
    const viewed = node.input.filter(name => this.views.has(name))
    if (viewed.length === 0 || node.output.length !== 1) return [node]
    const output = node.output[0]
    const shape = this.shape(output)
    if (!shape) return [node]
    const sourceShape = this.shape(this.views.get(viewed[0])!)!
    const fits = node.input.every(name => (this.views.has(name) ? sameShape(this.shape(name)!, shape) && sameShape(this.shape(this.views.get(name)!)!, sourceShape) : this.scalar(name, sourceShape.length)))
    if (!fits || !viewed.some(name => this.readOnce(name))) return [node]
    // a source read only by a view read only here is read only by the op: a Gemm there may still take C
    const solo = viewed.filter(name => this.readOnce(name) && this.readOnce(this.views.get(name)!)).map(name => this.views.get(name)!)
    const unviewed = this.fresh(`${output}__unviewed`)
    this.infos.set(unviewed, { dtype: this.infos.get(output)?.dtype, shape: sourceShape })
    this.views.set(output, unviewed)
    this.rewrites++
    const op = new onnx.NodeProto({ ...node, input: node.input.map(name => this.read(this.views.get(name) ?? name)), output: [unviewed] })
    solo.forEach(name => this.touched.delete(name))
    return [op, this.reshape(unviewed, shape, output, `${node.name ?? ''}__view`)]
  }

  private fuseGemm(node: NodeProto): NodeProto[] {
    if (!(node.opType === 'Add' || node.opType === 'Sum') || node.input.length < 2) return [node]
    const shape = this.shape(node.output[0])
    if (!shape || node.input.some(name => !sameShape(this.shape(name) ?? [], shape))) return [node]
    const fusible = node.input.filter(name => this.gemms.has(name) && this.readOnce(name))
    const rest = node.input.filter(name => !fusible.includes(name))
    if (fusible.length === 0 || rest.length > 1) return [node]
    // C of the first Gemm: the one other value, else the first Gemm itself
    const first = rest[0] ?? fusible.shift()!
    this.rewrites++
    const outputs = fusible.map((_, i) => (i === fusible.length - 1 ? node.output[0] : this.fresh(`${node.output[0]}__sum${i + 1}`)))
    outputs.slice(0, -1).forEach(name => this.infos.set(name, { dtype: this.infos.get(node.output[0])?.dtype, shape }))
    return fusible.map((name, i) => {
      const gemm = this.gemms.get(name)!
      return new onnx.NodeProto({
        ...gemm,
        input: [...gemm.input.map(u => this.read(u)), this.read(i === 0 ? first : outputs[i - 1])],
        output: [outputs[i]],
        attribute: [...gemm.attribute.filter(a => a.name !== 'beta'), { name: 'beta', type: onnx.AttributeProto.AttributeType.FLOAT, f: 1 }],
      })
    })
  }

  /** Whether the node is kept: not where an identical one was (its outputs are then that one's). */
  private merge(node: NodeProto): boolean {
    const first = node.input[0] ?? ''
    const same = this.readersOf.get(first) ?? this.readersOf.set(first, []).get(first)!
    const attributes = (n: NodeProto) => JSON.stringify(n.attribute.map(a => onnx.AttributeProto.toObject(a as AttributeProto, { longs: String, bytes: String })))
    const identical = (n: NodeProto) => n.opType === node.opType && n.input.length === node.input.length && n.input.every((name, i) => name === node.input[i]) &&
      n.output.length === node.output.length && n.output.every((name, i) => (name === '') === (node.output[i] === '')) && attributes(n) === attributes(node)
    const earlier = unrepeatable(node.opType) ? undefined : same.find(identical)
    if (!earlier) {
      same.push(node)
      if (node.opType === 'Gemm' && node.input.length === 2) this.gemms.set(node.output[0], node)
      if (ELEMENTWISE.has(node.opType) && node.output.length === 1) this.elementwise.set(node.output[0], node)
      return true
    }
    node.output.forEach((name, i) => name && this.alias.set(name, this.read(earlier.output[i])))
    this.rewrites++
    return false
  }
}

/** An input's declared shape with the given symbolic dims set to numbers. */
export function specialiseInput(input: ValueInfoProto, dims: Record<string, number>): ValueInfoProto {
  const copy = onnx.ValueInfoProto.fromObject(onnx.ValueInfoProto.toObject(input))
  const shape = copy.type?.tensorType?.shape
  if (shape?.dim) shape.dim = shape.dim.map(d => (d.dimParam && dims[d.dimParam] !== undefined ? new onnx.TensorShapeProto.Dimension({ dimValue: dims[d.dimParam] }) : d))
  return copy
}

/** A known value as an initializer, or (a large fill) as a ConstantOfShape node. */
function materialise(name: string, k: Known): { initializers: TensorProto[]; nodes: NodeProto[] } {
  const tensor = (tensorName: string, dtype: number, shape: number[], values: number[]) => {
    const t = new onnx.TensorProto({ name: tensorName, dataType: dtype, dims: shape })
    if (dtype === DataType.INT64) t.rawData = new Uint8Array(BigInt64Array.from(values, v => BigInt(Math.max(Math.min(v, 2 ** 63 - 1024), -(2 ** 63)))).buffer)
    else if (dtype === DataType.FLOAT) t.rawData = new Uint8Array(Float32Array.from(values).buffer)
    else if (dtype === DataType.DOUBLE) t.rawData = new Uint8Array(Float64Array.from(values).buffer)
    else if (dtype === DataType.INT32) t.rawData = new Uint8Array(Int32Array.from(values).buffer)
    else t.rawData = dtype === DataType.INT8 ? new Uint8Array(Int8Array.from(values).buffer) : Uint8Array.from(values)
    return t
  }
  if (k.values || count(k.shape) <= MAX_ELEMENTS) return { initializers: [tensor(name, k.dtype, k.shape, ints(k)!)], nodes: [] }
  const shape = tensor(`${name}__shape`, DataType.INT64, [k.shape.length], k.shape)
  const node = new onnx.NodeProto({ opType: 'ConstantOfShape', name: `${name}__fill`, input: [shape.name], output: [name], attribute: [{ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: tensor('value', k.dtype, [1], [k.fill!]) }] })
  return { initializers: [shape], nodes: [node] }
}

/** Every value a node's subgraphs (If/Loop bodies) read from the enclosing graph: they must stay as named. */
function subgraphReads(node: NodeProto): string[] {
  const reads: string[] = []
  const visit = (g: GraphProto) => {
    for (const n of g.node) { reads.push(...(n.input ?? [])); for (const a of n.attribute ?? []) [a.g, ...(a.graphs ?? [])].forEach(s => s && visit(s as GraphProto)) }
  }
  for (const a of node.attribute) [a.g, ...(a.graphs ?? [])].forEach(s => s && visit(s as GraphProto))
  return reads
}

/** One pass: fold what the current shapes allow, rewrite (Peepholes), then prune to the outputs. */
function foldPass(graph: GraphProto, dims: Record<string, number>): { graph: GraphProto; rewrites: number } {
  const infos = inferShapes(graph, dims)
  const values = new Map<string, Known>()
  for (const t of graph.initializer as TensorProto[]) {
    const k = fromTensor(t)
    if (k) values.set(t.name, k)
  }
  const alias = new Map<string, string>()
  const renamed = (name: string) => alias.get(name) ?? name
  const kept: NodeProto[] = []
  const moved: TensorProto[] = []
  const pinned = new Set((graph.node as NodeProto[]).flatMap(subgraphReads))
  const readers = new Map<string, number>()
  const addReader = (name: string) => readers.set(name, (readers.get(name) ?? 0) + 1)
  for (const node of graph.node as NodeProto[]) node.input.forEach(addReader)
  graph.output.forEach(o => addReader(o.name ?? ''))
  const names = new Set<string>(graph.input.map(i => i.name ?? ''))
  for (const t of graph.initializer) names.add(t.name ?? '')
  for (const node of graph.node as NodeProto[]) node.output.forEach(name => names.add(name))
  const peepholes = new Peepholes(infos, values, alias, readers, names)
  for (const original of graph.node as NodeProto[]) {
    const node = new onnx.NodeProto({ ...original, input: original.input.map(renamed) })
    const ins = node.input.map(name => (name ? values.get(name) : undefined))
    const plain = (node.domain ?? '') === '' && subgraphReads(node).length === 0 && !node.output.some(name => pinned.has(name))
    const outs = plain ? rules[node.opType]?.(node, ins, infos) : undefined
    if (outs && outs.length >= node.output.filter(Boolean).length && outs.every(k => k !== undefined)) {
      node.output.forEach((name, i) => name && values.set(name, outs[i]!))
      continue
    }
    // a Constant too large (or external) to fold is an initializer all the same: its weights stay where they are
    if (node.opType === 'Constant' && node.attribute[0]?.t) {
      moved.push(new onnx.TensorProto({ ...node.attribute[0].t, name: node.output[0] }))
      continue
    }
    const dead = plain ? deadTerm(node, ins, infos) : undefined
    if (typeof dead === 'number') alias.set(node.output[0], node.input[dead])
    else if (dead) values.set(node.output[0], dead)
    else kept.push(...(plain ? peepholes.rewrite(node) : [node]))
  }
  // prune from the outputs; known values still read become initializers, outputs that are aliases Identities
  const needed = new Set<string>()
  const outputs: NodeProto[] = []
  for (const o of graph.output) {
    const name = o.name ?? ''
    if (alias.has(name) || values.has(name)) outputs.push(new onnx.NodeProto({ opType: 'Identity', name: `${name}__folded`, input: [renamed(name) === name ? `${name}__value` : renamed(name)], output: [name] }))
    if (values.has(name)) values.set(`${name}__value`, values.get(name)!)
  }
  const nodes: NodeProto[] = []
  for (const node of [...kept, ...outputs].reverse()) {
    if (!node.output.some(name => needed.has(name) || graph.output.some(o => o.name === name))) continue
    nodes.push(node)
    for (const name of node.input) if (name) needed.add(renamed(name))
    for (const name of subgraphReads(node)) needed.add(name)
  }
  nodes.reverse()
  const produced = new Set(nodes.flatMap(n => n.output))
  // external tensors are copied: writeModel rewrites their locations, and the source model must keep its own
  const initializers = [...(graph.initializer as TensorProto[]), ...moved].filter(t => needed.has(t.name) && !produced.has(t.name))
    .map(t => (isExternal(t) ? onnx.TensorProto.fromObject(onnx.TensorProto.toObject(t)) : t))
  const have = new Set(initializers.map(t => t.name))
  for (const name of needed) {
    const k = values.get(name)
    if (!k || have.has(name)) continue
    const made = materialise(name, k)
    initializers.push(...made.initializers)
    nodes.unshift(...made.nodes)
    made.nodes.forEach(n => produced.add(n.output[0]))
  }
  const folded = new onnx.GraphProto({
    ...graph,
    node: nodes,
    initializer: initializers,
    valueInfo: graph.valueInfo.filter(v => produced.has(v.name ?? '')),
  })
  return { graph: folded, rewrites: peepholes.rewrites }
}

/**
 * The model specialised to `dims` (values for its inputs' symbolic dims, by name) and folded: repeated passes,
 * since a folded value makes more shapes known (the Where fixes the time embedding's batch, which fixes every
 * Shape after it), until one changes nothing. External weights stay in their files (relative to the same folder).
 */
export function foldGraph(loaded: LoadedModel, dims: Record<string, number> = {}): LoadedModel {
  const source = graphOf(loaded.model)
  let graph = new onnx.GraphProto({
    ...source,
    input: source.input.map(i => specialiseInput(i as ValueInfoProto, dims)),
    output: source.output.map(o => specialiseInput(o as ValueInfoProto, dims)),
  })
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    const before = graph.node.length
    const folded = foldPass(graph, dims)
    graph = folded.graph
    if (graph.node.length === before && folded.rewrites === 0) break
  }
  return { model: new onnx.ModelProto({ ...loaded.model, graph }), dir: loaded.dir }
}

/** Node counts by op type (for reports and benches). */
export function opCounts(model: LoadedModel['model']): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const node of graphOf(model).node) counts[node.opType ?? ''] = (counts[node.opType ?? ''] ?? 0) + 1
  return counts
}

