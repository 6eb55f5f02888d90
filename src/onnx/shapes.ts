// Static shape, dtype and small-integer-value inference over an ONNX graph, just enough for the autodiff to
// know ranks, broadcast axes and shape-subgraph constants. Dims are numbers, symbolic expressions (strings:
// equal strings are equal at run time) or undefined (unknown); the autodiff falls back to Shape-based
// subgraphs where something is unknown.
import { dtypeOf } from './builder.js'
import { DataType, dims as tensorDims, inlineTensorValues, isExternal, toNumber, type AttributeProto, type GraphProto, type NodeProto, type TensorProto, type ValueInfoProto } from './proto.js'

export type Dim = number | string | undefined
export interface Info {
  dtype?: number
  /** undefined: unknown rank */
  shape?: Dim[]
  /** the elements of a small integer tensor (shape subgraphs), flattened */
  value?: Dim[]
}

const SMALL = 64
const isInt = (dtype?: number) => dtype === DataType.INT64 || dtype === DataType.INT32

/** A product of symbols: coefficient × atoms (dim names or parenthesised expressions), kept sorted. */
interface Monomial { coefficient: number; atoms: string[] }

function splitTopLevel(expression: string): string[] {
  const parts: string[] = []
  let depth = 0, start = 0
  for (let i = 0; i < expression.length; i++) {
    const ch = expression[i]
    if (ch === '(') depth++
    else if (ch === ')') depth--
    else if (ch === '*' && depth === 0) { parts.push(expression.slice(start, i)); start = i + 1 }
  }
  parts.push(expression.slice(start))
  return parts
}

function monomial(d: number | string): Monomial {
  if (typeof d === 'number') return { coefficient: d, atoms: [] }
  let coefficient = 1
  const atoms: string[] = []
  for (const part of splitTopLevel(d)) {
    if (/^-?\d+$/.test(part)) coefficient *= Number(part)
    else atoms.push(part)
  }
  return { coefficient, atoms: atoms.sort() }
}

function fromMonomial({ coefficient, atoms }: Monomial): Dim {
  if (atoms.length === 0) return coefficient
  return (coefficient === 1 ? atoms : [String(coefficient), ...atoms]).join('*')
}

/** Arithmetic on dims: numbers fold, products of symbols stay canonical (so equal sizes compare equal), unknowns stay unknown. */
function arith(a: Dim, b: Dim, op: '+' | '-' | '*' | '/'): Dim {
  if (typeof a === 'number' && typeof b === 'number') {
    switch (op) {
      case '+': return a + b
      case '-': return a - b
      case '*': return a * b
      case '/': return Math.trunc(a / b)
    }
  }
  if (a === undefined || b === undefined) return undefined
  if (op === '*') {
    const [x, y] = [monomial(a), monomial(b)]
    return fromMonomial({ coefficient: x.coefficient * y.coefficient, atoms: [...x.atoms, ...y.atoms].sort() })
  }
  if (op === '/') {
    const [x, y] = [monomial(a), monomial(b)]
    const atoms = [...x.atoms]
    for (const atom of y.atoms) {
      const i = atoms.indexOf(atom)
      if (i < 0) return `(${a}/${b})`
      atoms.splice(i, 1)
    }
    if (x.coefficient % y.coefficient !== 0) return `(${a}/${b})`
    return fromMonomial({ coefficient: x.coefficient / y.coefficient, atoms })
  }
  if (b === 0) return a
  return `(${a}${op}${b})`
}

/** a / b as a number where it is one (equal symbols cancel), else undefined. */
export function dimRatio(a: Dim, b: Dim): number | undefined {
  if (a === undefined || b === undefined) return undefined
  if (typeof a === 'number' && typeof b === 'number') return a / b
  const [x, y] = [monomial(a), monomial(b)]
  const same = x.atoms.length === y.atoms.length && x.atoms.every((atom, i) => atom === y.atoms[i])
  return same ? x.coefficient / y.coefficient : undefined
}

export function attrOf(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attribute?.find(a => a.name === name) as AttributeProto | undefined
}
export function intAttr(node: NodeProto, name: string, fallback: number): number {
  const a = attrOf(node, name)
  return a ? toNumber(a.i) : fallback
}
export function intsAttr(node: NodeProto, name: string): number[] | undefined {
  const a = attrOf(node, name)
  return a ? a.ints.map(toNumber) : undefined
}
export function floatAttr(node: NodeProto, name: string, fallback: number): number {
  const a = attrOf(node, name)
  return a ? a.f : fallback
}
export function stringAttr(node: NodeProto, name: string, fallback: string): string {
  const a = attrOf(node, name)
  return a ? new TextDecoder().decode(a.s) : fallback
}

function tensorInfo(tensor: TensorProto): Info {
  const shape = tensorDims(tensor)
  const count = shape.reduce((a, b) => a * b, 1)
  const info: Info = { dtype: tensor.dataType, shape }
  // small integer tensors (shape subgraphs) and small float ones (Resize scales)
  const small = isInt(tensor.dataType) || tensor.dataType === DataType.FLOAT || tensor.dataType === DataType.DOUBLE
  if (small && count <= SMALL && !isExternal(tensor)) info.value = Array.from(inlineTensorValues(tensor), Number)
  return info
}

function valueInfoOf(value: ValueInfoProto, overrides: Record<string, number>): Info {
  const type = value.type?.tensorType
  if (!type) return {}
  const shape = type.shape?.dim?.map(d => (d.dimParam ? overrides[d.dimParam] ?? d.dimParam : d.dimValue !== null && d.dimValue !== undefined ? toNumber(d.dimValue) : undefined))
  return { dtype: type.elemType ?? undefined, shape }
}

/** numpy broadcasting of shapes; unknown where it cannot be decided. */
export function broadcastShapes(shapes: (Dim[] | undefined)[]): Dim[] | undefined {
  if (shapes.some(s => s === undefined)) return undefined
  // the same shape object: values of one shape (unary ops share their input's), even where dims are unknown
  if (shapes.every(s => s === shapes[0])) return shapes[0]
  const rank = Math.max(...shapes.map(s => s!.length))
  return Array.from({ length: rank }, (_, i) => {
    const dims = shapes.filter(s => s!.length - rank + i >= 0).map(s => s![s!.length - rank + i]).filter(d => d !== 1)
    if (dims.length === 0) return 1
    const number = dims.find(d => typeof d === 'number')
    if (number !== undefined) return number
    // one symbol throughout (a symbol may be 1 at run time, so an unknown beside it decides nothing)
    return dims.every(d => d === dims[0]) ? dims[0] : undefined
  })
}

const normalise = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis)

/** A conv/pool output dim: floor((in + pads − dilation·(k − 1) − 1) / stride) + 1, or ceil. */
function pooledDim(input: Dim, kernel: number, stride: number, padSum: number, dilation: number, ceil = false): Dim {
  const span = dilation * (kernel - 1) + 1
  if (stride === 1 && padSum === span - 1) return input
  if (typeof input !== 'number') return input === undefined ? undefined : `pool(${input},${kernel},${stride},${padSum},${dilation},${ceil ? 1 : 0})`
  const round = ceil ? Math.ceil : Math.floor
  return round((input + padSum - span) / stride) + 1
}

/** Reads the axes of a Reduce/Squeeze/Unsqueeze node: attribute before the opset where they became an input. */
export function axesOf(node: NodeProto, infos: Map<string, Info>, inputIndex = 1): number[] | undefined | 'dynamic' {
  const attr = intsAttr(node, 'axes')
  if (attr) return attr
  const name = node.input[inputIndex]
  if (!name) return undefined
  const value = infos.get(name)?.value
  if (!value || value.some(v => typeof v !== 'number')) return 'dynamic'
  return value as number[]
}

type ShapeRule = (node: NodeProto, ins: Info[], infos: Map<string, Info>) => Info[]

const same: ShapeRule = (_, ins) => [{ dtype: ins[0]?.dtype, shape: ins[0]?.shape }]
const broadcast: ShapeRule = (node, ins) => {
  const shape = broadcastShapes(ins.map(i => i.shape))
  const compare = ['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor'].includes(node.opType)
  const dtype = compare ? DataType.BOOL : node.opType === 'Where' ? ins[1].dtype : ins[0].dtype
  const info: Info = { dtype, shape }
  // integer arithmetic on shape values (the Shape → Gather → Add → Div subgraphs)
  const [a, b] = ins
  const ops: Record<string, '+' | '-' | '*' | '/'> = { Add: '+', Sub: '-', Mul: '*', Div: '/' }
  if (ops[node.opType] && isInt(dtype) && a.value && b.value && shape && shape.length <= 1) {
    const n = Math.max(a.value.length, b.value.length)
    if (a.value.length === n || a.value.length === 1) if (b.value.length === n || b.value.length === 1) {
      info.value = Array.from({ length: n }, (_, i) => arith(a.value![a.value!.length === 1 ? 0 : i], b.value![b.value!.length === 1 ? 0 : i], ops[node.opType]))
    }
  }
  return [info]
}

function sliceBounds(dim: Dim, start: number, end: number, step: number): Dim {
  if (typeof dim !== 'number') {
    if (step === 1 && start === 0 && end >= 2 ** 31 - 1) return dim
    return undefined
  }
  const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi)
  let s = start < 0 ? start + dim : start
  let e = end < 0 ? end + dim : end
  if (step > 0) {
    s = clamp(s, 0, dim); e = clamp(e, 0, dim)
    return Math.max(0, Math.ceil((e - s) / step))
  }
  s = clamp(s, -1, dim - 1); e = clamp(e, -1, dim - 1)
  return Math.max(0, Math.ceil((e - s) / step))
}

const rules: Record<string, ShapeRule> = {
  Shape: (node, [x]) => {
    if (!x.shape) return [{ dtype: DataType.INT64, shape: [undefined] }]
    const rank = x.shape.length
    const start = normalise(intAttr(node, 'start', 0), rank)
    const endAttr = attrOf(node, 'end')
    const end = endAttr ? Math.min(normalise(toNumber(endAttr.i), rank), rank) : rank
    const value = x.shape.slice(start, end)
    return [{ dtype: DataType.INT64, shape: [value.length], value }]
  },
  Size: (_, [x]) => [{ dtype: DataType.INT64, shape: [], value: [x.shape?.reduce<Dim>((a, b) => arith(a, b, '*'), 1)] }],
  Constant: node => {
    const a = node.attribute[0]
    if (a.t) return [tensorInfo(a.t as TensorProto)]
    if (a.name === 'value_int') return [{ dtype: DataType.INT64, shape: [], value: [toNumber(a.i)] }]
    if (a.name === 'value_ints') return [{ dtype: DataType.INT64, shape: [a.ints!.length], value: a.ints!.map(toNumber) }]
    if (a.name === 'value_float') return [{ dtype: DataType.FLOAT, shape: [] }]
    if (a.name === 'value_floats') return [{ dtype: DataType.FLOAT, shape: [a.floats!.length] }]
    return [{}]
  },
  ConstantOfShape: (node, [s]) => {
    const t = attrOf(node, 'value')?.t
    const dtype = t?.dataType ?? DataType.FLOAT
    const shape = s.value ?? (typeof s.shape?.[0] === 'number' ? Array(s.shape[0]).fill(undefined) : undefined)
    const info: Info = { dtype, shape }
    if (isInt(dtype) && shape && shape.length <= 1 && shape.every(d => typeof d === 'number') && (shape[0] ?? 1) as number <= SMALL) {
      const fill = Number(inlineTensorValues(t as TensorProto)[0])
      info.value = Array((shape[0] ?? 1) as number).fill(fill)
    }
    return [info]
  },
  Cast: (node, [x]) => [{ dtype: intAttr(node, 'to', DataType.FLOAT), shape: x.shape, value: isInt(intAttr(node, 'to', 0)) ? x.value : undefined }],
  CastLike: (_, [x, like]) => [{ dtype: like.dtype, shape: x.shape }],
  Identity: (_, [x]) => [x],
  Gather: (node, [data, indices]) => {
    if (!data.shape || !indices.shape) return [{ dtype: data.dtype }]
    const axis = normalise(intAttr(node, 'axis', 0), data.shape.length)
    const shape = [...data.shape.slice(0, axis), ...indices.shape, ...data.shape.slice(axis + 1)]
    const info: Info = { dtype: data.dtype, shape }
    if (data.value && indices.value && data.shape.length === 1) {
      info.value = indices.value.map(i => (typeof i === 'number' ? data.value![normalise(i, data.value!.length)] : undefined))
    }
    return [info]
  },
  Unsqueeze: (node, [x], infos) => {
    const axes = axesOf(node, infos)
    if (!x.shape || !Array.isArray(axes)) return [{ dtype: x.dtype }]
    const rank = x.shape.length + axes.length
    const set = new Set(axes.map(a => normalise(a, rank)))
    const rest = [...x.shape]
    const shape = Array.from({ length: rank }, (_, i) => (set.has(i) ? 1 : rest.shift()))
    return [{ dtype: x.dtype, shape, value: x.value }]
  },
  Squeeze: (node, [x], infos) => {
    const axes = axesOf(node, infos)
    if (!x.shape || axes === 'dynamic') return [{ dtype: x.dtype }]
    const set = axes ? new Set(axes.map(a => normalise(a, x.shape!.length))) : undefined
    if (!set && x.shape.some(d => d === undefined || typeof d === 'string')) return [{ dtype: x.dtype }]
    return [{ dtype: x.dtype, shape: x.shape.filter((d, i) => (set ? !set.has(i) : d !== 1)), value: x.value }]
  },
  Concat: (node, ins) => {
    const known = ins.filter(i => i.shape)
    if (known.length !== ins.length) return [{ dtype: ins[0].dtype, shape: known[0] ? known[0].shape!.map(() => undefined) : undefined }]
    const rank = ins[0].shape!.length
    const axis = normalise(intAttr(node, 'axis', 0), rank)
    const shape = ins[0].shape!.map((d, i) => (i === axis ? ins.map(x => x.shape![i]).reduce((a, b) => arith(a, b, '+')) : ins.map(x => x.shape![i]).find(v => v !== undefined)))
    const info: Info = { dtype: ins[0].dtype, shape }
    if (rank <= 1 && ins.every(i => i.value)) info.value = ins.flatMap(i => i.value!)
    return [info]
  },
  Slice: (node, [x, starts, ends, axesInfo, steps]) => {
    if (!x.shape) return [{ dtype: x.dtype }]
    const rank = x.shape.length
    const s = starts?.value, e = ends?.value
    const axes = axesInfo?.value ?? s?.map((_, i) => i)
    const st = steps?.value ?? s?.map(() => 1)
    if (!s || !e || !axes || !st || [...s, ...e, ...axes, ...st].some(v => typeof v !== 'number')) {
      // the sliced axes are unknown; when the axes are known, the others are kept
      if (axes && axes.every(a => typeof a === 'number')) {
        const cut = new Set((axes as number[]).map(a => normalise(a, rank)))
        return [{ dtype: x.dtype, shape: x.shape.map((d, i) => (cut.has(i) ? undefined : d)) }]
      }
      return [{ dtype: x.dtype, shape: x.shape.map(() => undefined) }]
    }
    const shape = [...x.shape]
    axes.forEach((a, j) => {
      const axis = normalise(a as number, rank)
      shape[axis] = sliceBounds(x.shape![axis], s[j] as number, e[j] as number, st[j] as number)
    })
    const info: Info = { dtype: x.dtype, shape }
    if (x.value && rank === 1 && typeof shape[0] === 'number') {
      const n = x.value.length
      const step = st[0] as number
      let start = s[0] as number; if (start < 0) start += n; start = Math.min(Math.max(start, 0), n)
      info.value = Array.from({ length: shape[0] }, (_, i) => x.value![start + i * step])
    }
    return [info]
  },
  Reshape: (node, [x, shapeInfo]) => {
    const target = shapeInfo.value
    if (!target) return [{ dtype: x.dtype, shape: typeof shapeInfo.shape?.[0] === 'number' ? Array(shapeInfo.shape[0]).fill(undefined) : undefined }]
    const allowZero = intAttr(node, 'allowzero', 0) === 1
    const shape: Dim[] = target.map((d, i) => (d === 0 && !allowZero ? x.shape?.[i] : d === -1 ? undefined : d))
    const inferred = target.indexOf(-1)
    if (inferred >= 0 && x.shape) {
      const total = x.shape.reduce<Dim>((a, b) => arith(a, b, '*'), 1)
      const rest = shape.filter((_, i) => i !== inferred).reduce<Dim>((a, b) => arith(a, b, '*'), 1)
      shape[inferred] = typeof total === 'number' && typeof rest === 'number' ? total / rest : undefined
      // the [B, C, H, W] → [B, HW, C] reshape after a transpose: keep a symbolic product
      if (shape[inferred] === undefined) shape[inferred] = arith(total, rest, '/')
    }
    return [{ dtype: x.dtype, shape, value: x.value }]
  },
  Flatten: (node, [x]) => {
    if (!x.shape) return [{ dtype: x.dtype, shape: [undefined, undefined] }]
    const axis = normalise(intAttr(node, 'axis', 1), x.shape.length)
    const prod = (d: Dim[]) => d.reduce<Dim>((a, b) => arith(a, b, '*'), 1)
    return [{ dtype: x.dtype, shape: [prod(x.shape.slice(0, axis)), prod(x.shape.slice(axis))] }]
  },
  Expand: (_, [x, s]) => {
    const target = s.value ?? (typeof s.shape?.[0] === 'number' ? Array(s.shape[0]).fill(undefined) : undefined)
    return [{ dtype: x.dtype, shape: broadcastShapes([x.shape, target]) }]
  },
  Transpose: (node, [x]) => {
    if (!x.shape) return [{ dtype: x.dtype }]
    const perm = intsAttr(node, 'perm') ?? x.shape.map((_, i) => x.shape!.length - 1 - i)
    return [{ dtype: x.dtype, shape: perm.map(p => x.shape![p]) }]
  },
  MatMul: (_, [a, b]) => {
    if (!a.shape || !b.shape) return [{ dtype: a.dtype }]
    const sa = a.shape.length === 1 ? [1, a.shape[0]] : a.shape
    const sb = b.shape.length === 1 ? [b.shape[0], 1] : b.shape
    const batch = broadcastShapes([sa.slice(0, -2), sb.slice(0, -2)])
    const shape = [...(batch ?? []), ...(a.shape.length === 1 ? [] : [sa[sa.length - 2]]), ...(b.shape.length === 1 ? [] : [sb[sb.length - 1]])]
    return [{ dtype: a.dtype, shape: batch ? shape : undefined }]
  },
  Gemm: (node, [a, b]) => [{
    dtype: a.dtype,
    shape: [a.shape?.[intAttr(node, 'transA', 0) ? 1 : 0], b.shape?.[intAttr(node, 'transB', 0) ? 0 : 1]],
  }],
  Conv: (node, [x, w]) => {
    if (!x.shape) return [{ dtype: x.dtype }]
    const spatial = x.shape.length - 2
    const kernel = intsAttr(node, 'kernel_shape') ?? (w.shape?.slice(2) as number[])
    const strides = intsAttr(node, 'strides') ?? Array(spatial).fill(1)
    const dilations = intsAttr(node, 'dilations') ?? Array(spatial).fill(1)
    const pads = intsAttr(node, 'pads') ?? Array(2 * spatial).fill(0)
    const autoPad = stringAttr(node, 'auto_pad', 'NOTSET')
    const dims = x.shape.slice(2).map((d, i) =>
      autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER' ? (strides[i] === 1 ? d : undefined) : pooledDim(d, kernel?.[i] ?? 1, strides[i], pads[i] + pads[i + spatial], dilations[i]))
    return [{ dtype: x.dtype, shape: [x.shape[0], w.shape?.[0], ...dims] }]
  },
  ConvTranspose: (node, [x, w]) => {
    if (!x.shape) return [{ dtype: x.dtype }]
    const spatial = x.shape.length - 2
    const group = intAttr(node, 'group', 1)
    const outputShape = intsAttr(node, 'output_shape')
    const kernel = intsAttr(node, 'kernel_shape') ?? (w.shape?.slice(2) as number[])
    const strides = intsAttr(node, 'strides') ?? Array(spatial).fill(1)
    const dilations = intsAttr(node, 'dilations') ?? Array(spatial).fill(1)
    const pads = intsAttr(node, 'pads') ?? Array(2 * spatial).fill(0)
    const outPad = intsAttr(node, 'output_padding') ?? Array(spatial).fill(0)
    const dims = outputShape ?? x.shape.slice(2).map((d, i) =>
      typeof d === 'number' ? strides[i] * (d - 1) + outPad[i] + dilations[i] * ((kernel?.[i] ?? 1) - 1) + 1 - pads[i] - pads[i + spatial] : undefined)
    const channels = typeof w.shape?.[1] === 'number' ? w.shape[1] * group : undefined
    return [{ dtype: x.dtype, shape: [x.shape[0], channels, ...dims] }]
  },
  MaxPool: (node, [x]) => {
    if (!x.shape) return [{ dtype: x.dtype }, { dtype: DataType.INT64 }]
    const spatial = x.shape.length - 2
    const kernel = intsAttr(node, 'kernel_shape')!
    const strides = intsAttr(node, 'strides') ?? Array(spatial).fill(1)
    const dilations = intsAttr(node, 'dilations') ?? Array(spatial).fill(1)
    const pads = intsAttr(node, 'pads') ?? Array(2 * spatial).fill(0)
    const ceil = intAttr(node, 'ceil_mode', 0) === 1
    const shape = [x.shape[0], x.shape[1], ...x.shape.slice(2).map((d, i) => pooledDim(d, kernel[i], strides[i], pads[i] + pads[i + spatial], dilations[i], ceil))]
    return [{ dtype: x.dtype, shape }, { dtype: DataType.INT64, shape }]
  },
  GlobalAveragePool: (_, [x]) => [{ dtype: x.dtype, shape: x.shape?.map((d, i) => (i < 2 ? d : 1)) }],
  Resize: (_, [x, , scales, sizes]) => {
    if (!x.shape) return [{ dtype: x.dtype }]
    if (sizes?.value) return [{ dtype: x.dtype, shape: sizes.value }]
    const s = scales?.value
    if (s) return [{ dtype: x.dtype, shape: x.shape.map((d, i) => (typeof d === 'number' ? Math.floor(d * (s[i] as number)) : Number.isInteger(s[i]) ? arith(d, s[i], '*') : undefined)) }]
    return [{ dtype: x.dtype, shape: x.shape.map(() => undefined) }]
  },
  Split: (node, [x, splitInfo]) => {
    const count = node.output.length
    if (!x.shape) return Array(count).fill({ dtype: x.dtype })
    const axis = normalise(intAttr(node, 'axis', 0), x.shape.length)
    const sizes = intsAttr(node, 'split') ?? splitInfo?.value ?? (typeof x.shape[axis] === 'number' ? Array(count).fill(Math.ceil((x.shape[axis] as number) / count)) : undefined)
    return Array.from({ length: count }, (_, i) => ({ dtype: x.dtype, shape: x.shape!.map((d, j) => (j === axis ? sizes?.[i] : d)) }))
  },
  Einsum: (node, ins) => {
    const equation = stringAttr(node, 'equation', '').replace(/\s/g, '')
    const [lhs, rhs] = equation.split('->')
    if (rhs === undefined || rhs.includes('...') || lhs.includes('...')) return [{ dtype: ins[0].dtype }]
    const letters = new Map<string, Dim>()
    lhs.split(',').forEach((term, j) => [...term].forEach((c, k) => { if (letters.get(c) === undefined) letters.set(c, ins[j].shape?.[k]) }))
    return [{ dtype: ins[0].dtype, shape: [...rhs].map(c => letters.get(c)) }]
  },
  Pad: (_, [x, pads]) => {
    if (!x.shape) return [{ dtype: x.dtype }]
    const p = pads?.value
    const rank = x.shape.length
    return [{ dtype: x.dtype, shape: x.shape.map((d, i) => (p ? arith(arith(d, p[i], '+'), p[i + rank], '+') : undefined)) }]
  },
  Range: (_, [start]) => [{ dtype: start.dtype, shape: [undefined] }],
  NonZero: (_, [x]) => [{ dtype: DataType.INT64, shape: [x.shape?.length, undefined] }],
  GridSample: (_, [x, grid]) => [{ dtype: x.dtype, shape: [x.shape?.[0], x.shape?.[1], grid.shape?.[1], grid.shape?.[2]] }],
  // pixel_shuffle / pixel_unshuffle (either DepthToSpace mode moves the same number of elements)
  DepthToSpace: (node, [x]) => {
    const b = intAttr(node, 'blocksize', 1)
    return [{ dtype: x.dtype, shape: x.shape && [x.shape[0], arith(x.shape[1], b * b, '/'), arith(x.shape[2], b, '*'), arith(x.shape[3], b, '*')] }]
  },
  SpaceToDepth: (node, [x]) => {
    const b = intAttr(node, 'blocksize', 1)
    return [{ dtype: x.dtype, shape: x.shape && [x.shape[0], arith(x.shape[1], b * b, '*'), arith(x.shape[2], b, '/'), arith(x.shape[3], b, '/')] }]
  },
  // values and indices: x's shape with k along the axis (k from a constant or a folded shape value)
  TopK: (node, [x, k]) => {
    const shape = x.shape && [...x.shape]
    if (shape) shape[normalise(intAttr(node, 'axis', -1), shape.length)] = k.value?.[0]
    return [{ dtype: x.dtype, shape }, { dtype: DataType.INT64, shape }]
  },
  LayerNormalization: (node, [x]) => [{ dtype: x.dtype, shape: x.shape }, { dtype: x.dtype }, { dtype: x.dtype }],
}

const unaryOps = ['Relu', 'Sigmoid', 'Tanh', 'Exp', 'Log', 'Sqrt', 'Erf', 'Neg', 'Abs', 'Reciprocal', 'Sin', 'Cos', 'Floor', 'Ceil', 'Round', 'Sign',
  'Softmax', 'LogSoftmax', 'LeakyRelu', 'Elu', 'Gelu', 'Softplus', 'HardSigmoid', 'HardSwish', 'Mish', 'Dropout', 'InstanceNormalization',
  'BatchNormalization', 'GroupNormalization', 'LpNormalization', 'Clip', 'Selu', 'Celu', 'Trilu', 'CumSum', 'EyeLike', 'Tile', 'IsNaN', 'IsInf', 'Not']
for (const op of unaryOps) rules[op] ??= same
for (const op of ['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Where', 'Max', 'Min', 'Sum', 'Mean', 'Mod', 'PRelu']) rules[op] = broadcast
rules.IsNaN = rules.IsInf = rules.Not = (_, [x]) => [{ dtype: DataType.BOOL, shape: x.shape }]
rules.Tile = (_, [x]) => [{ dtype: x.dtype, shape: x.shape?.map(() => undefined) }]

const reduce: ShapeRule = (node, [x], infos) => {
  const keep = intAttr(node, 'keepdims', 1) === 1
  const axes = node.opType.startsWith('Arg') ? [intAttr(node, 'axis', 0)] : axesOf(node, infos)
  const dtype = node.opType.startsWith('Arg') ? DataType.INT64 : x.dtype
  if (!x.shape || axes === 'dynamic') return [{ dtype }]
  const rank = x.shape.length
  const noop = intAttr(node, 'noop_with_empty_axes', 0) === 1
  if ((!axes || axes.length === 0) && noop) return [{ dtype, shape: x.shape }]
  const set = new Set(axes && axes.length ? axes.map(a => normalise(a, rank)) : x.shape.map((_, i) => i))
  return [{ dtype, shape: keep ? x.shape.map((d, i) => (set.has(i) ? 1 : d)) : x.shape.filter((_, i) => !set.has(i)) }]
}
for (const op of ['ReduceSum', 'ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL2', 'ReduceL1', 'ReduceSumSquare', 'ReduceLogSumExp', 'ArgMax', 'ArgMin']) rules[op] = reduce
rules.AveragePool = (node, ins, infos) => rules.MaxPool(node, ins, infos).slice(0, 1)
rules.GlobalMaxPool = rules.GlobalAveragePool

/**
 * Infers every value's dtype, shape and (for small integer tensors) value. `overrides` fixes symbolic dims
 * of the graph inputs by name. Values the graph declares in value_info fill what inference leaves unknown.
 */
export function inferShapes(graph: GraphProto, overrides: Record<string, number> = {}): Map<string, Info> {
  const infos = new Map<string, Info>()
  for (const v of graph.valueInfo ?? []) infos.set(v.name!, valueInfoOf(v as ValueInfoProto, overrides))
  for (const t of graph.initializer) infos.set(t.name!, tensorInfo(t as TensorProto))
  for (const v of graph.input) if (!infos.has(v.name!) || !graph.initializer.some(t => t.name === v.name)) infos.set(v.name!, valueInfoOf(v as ValueInfoProto, overrides))
  for (const node of graph.node as NodeProto[]) {
    const ins = node.input.map(name => (name ? infos.get(name) ?? {} : {}))
    const rule = rules[node.opType] as ShapeRule | undefined
    let outs: Info[] = []
    try {
      outs = rule && (node.domain ?? '') === '' ? rule(node, ins, infos) : []
    } catch {
      outs = []
    }
    node.output.forEach((name, i) => {
      if (!name) return
      const inferred = outs[i] ?? {}
      const declared = infos.get(name)
      infos.set(name, {
        dtype: inferred.dtype ?? declared?.dtype ?? ins[0]?.dtype,
        shape: inferred.shape ?? declared?.shape,
        value: inferred.value,
      })
    })
  }
  return infos
}

export const floatTypes = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16])

const FLOAT_BYTES: Partial<Record<number, number>> = { [DataType.FLOAT]: 4, [DataType.FLOAT16]: 2, [DataType.DOUBLE]: 8, [DataType.BFLOAT16]: 2 }

/** Bytes of a float value (0 for other types: shapes, indices); undefined where a dim is not known. */
export function floatBytes(info: Info | undefined): number | undefined {
  const size = info?.dtype === undefined ? undefined : FLOAT_BYTES[info.dtype]
  if (size === undefined) return 0
  if (!info?.shape || info.shape.some(d => typeof d !== 'number')) return undefined
  return size * (info.shape as number[]).reduce((a, b) => a * b, 1)
}
export const dtypeName = (dtype?: number) => (dtype === undefined ? 'unknown' : dtypeOf[dtype] ?? `type ${dtype}`)
