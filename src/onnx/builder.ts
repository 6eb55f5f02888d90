// A small graph builder: models written in code (tests, fixture models, guide preprocessing, loss heads).
import { AttributeType, DataType, onnx, type AttributeProto, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from './proto.js'

export type DType = 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'bool' | 'uint8'
export type Dim = number | string

export const dataTypeOf: Record<DType, number> = {
  float32: DataType.FLOAT,
  float16: DataType.FLOAT16,
  float64: DataType.DOUBLE,
  int64: DataType.INT64,
  int32: DataType.INT32,
  bool: DataType.BOOL,
  uint8: DataType.UINT8,
}

export const dtypeOf: Record<number, DType> = Object.fromEntries(
  Object.entries(dataTypeOf).map(([name, code]) => [code, name as DType]),
)

/** A float attribute: plain numbers are taken as ints when they are integers, so mark floats explicitly. */
export class FloatAttr {
  constructor(readonly values: number | number[]) {}
}
export const float = (values: number | number[]) => new FloatAttr(values)

export type AttrValue = number | number[] | string | FloatAttr | TensorProto | GraphProto

export function attribute(name: string, value: AttrValue): AttributeProto {
  const a = new onnx.AttributeProto({ name })
  if (value instanceof FloatAttr) {
    if (Array.isArray(value.values)) Object.assign(a, { type: AttributeType.FLOATS, floats: value.values })
    else Object.assign(a, { type: AttributeType.FLOAT, f: value.values })
  } else if (typeof value === 'number') {
    if (Number.isInteger(value)) Object.assign(a, { type: AttributeType.INT, i: value })
    else Object.assign(a, { type: AttributeType.FLOAT, f: value })
  } else if (Array.isArray(value)) {
    if (value.every(Number.isInteger)) Object.assign(a, { type: AttributeType.INTS, ints: value })
    else Object.assign(a, { type: AttributeType.FLOATS, floats: value })
  } else if (typeof value === 'string') {
    Object.assign(a, { type: AttributeType.STRING, s: new TextEncoder().encode(value) })
  } else if (value instanceof onnx.GraphProto) {
    Object.assign(a, { type: AttributeType.GRAPH, g: value })
  } else {
    Object.assign(a, { type: AttributeType.TENSOR, t: value })
  }
  return a
}

export function valueInfo(name: string, dtype: DType, shape?: Dim[]): ValueInfoProto {
  const dims = shape?.map(d => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }))
  return new onnx.ValueInfoProto({
    name,
    type: { tensorType: { elemType: dataTypeOf[dtype], shape: dims ? { dim: dims } : undefined } },
  })
}

export type Values = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Uint16Array | number[]

/** A TensorProto holding `values` inline as raw little-endian bytes. */
export function tensor(name: string, dtype: DType, dims: number[], values: Values): TensorProto {
  const typed = toTyped(dtype, values)
  const count = dims.reduce((a, b) => a * b, 1)
  if (typed.length !== count) throw new Error(`tensor ${name}: ${typed.length} values for shape [${dims}]`)
  return new onnx.TensorProto({
    name,
    dataType: dataTypeOf[dtype],
    dims,
    rawData: new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength),
  })
}

function toTyped(dtype: DType, values: Values): Exclude<Values, number[]> {
  if (!Array.isArray(values)) return values
  switch (dtype) {
    case 'float32': return Float32Array.from(values)
    case 'float64': return Float64Array.from(values)
    case 'int64': return BigInt64Array.from(values, v => BigInt(v))
    case 'int32': return Int32Array.from(values)
    case 'float16': return Uint16Array.from(values)
    default: return Uint8Array.from(values)
  }
}

/**
 * Builds a graph node by node. Names are made unique with a counter, so fragments can be
 * composed without clashes; `op` returns the (first) output name for chaining.
 */
export class GraphBuilder {
  readonly nodes: NodeProto[] = []
  readonly initializers: TensorProto[] = []
  readonly inputs: ValueInfoProto[] = []
  readonly outputs: ValueInfoProto[] = []
  private counter = 0

  constructor(readonly name = 'graph', readonly opset = 17, readonly prefix = '') {}

  fresh(hint: string): string {
    return `${this.prefix}${hint}_${this.counter++}`
  }

  input(name: string, dtype: DType, shape: Dim[]): string {
    this.inputs.push(valueInfo(name, dtype, shape))
    return name
  }

  output(name: string, dtype: DType = 'float32', shape?: Dim[]): string {
    this.outputs.push(valueInfo(name, dtype, shape))
    return name
  }

  /** An initializer; float32 unless said otherwise. */
  constant(values: Values | number, dims?: number[], dtype: DType = 'float32', hint = 'const'): string {
    const array = typeof values === 'number' ? [values] : values
    const name = this.fresh(hint)
    this.initializers.push(tensor(name, dtype, dims ?? (typeof values === 'number' ? [] : [array.length]), array))
    return name
  }

  /** A 1-D int64 initializer (shapes, axes, starts, ends). */
  ints(values: number[]): string {
    return this.constant(values, [values.length], 'int64', 'ints')
  }

  /** Adds a node with `outputs` outputs and returns their names. */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, outputs = 1, domain = ''): string[] {
    const names = Array.from({ length: outputs }, () => this.fresh(op.toLowerCase()))
    this.nodes.push(
      new onnx.NodeProto({
        opType: op,
        domain,
        name: this.fresh(`${op}_node`),
        input: inputs,
        output: names,
        attribute: Object.entries(attrs).map(([key, value]) => attribute(key, value)),
      }),
    )
    return names
  }

  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.node(op, inputs, attrs)[0]
  }

  /** Renames an existing value to a graph output name with an Identity node. */
  outputAs(value: string, name: string, dtype: DType = 'float32', shape?: Dim[]): string {
    this.nodes.push(new onnx.NodeProto({ opType: 'Identity', name: this.fresh('Identity_node'), input: [value], output: [name] }))
    return this.output(name, dtype, shape)
  }

  build(): ModelProto {
    for (const node of this.nodes) this.toOpset(node)
    return new onnx.ModelProto({
      irVersion: 8,
      producerName: 'lcm-lookahead',
      opsetImport: [{ domain: '', version: this.opset }],
      graph: new onnx.GraphProto({
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      }),
    })
  }

  /**
   * Brings a node written for another opset to this builder's opset where the signature changed in between,
   * so fragments and embedded models (opset 14 exports next to opset 18 ones) compose into one graph.
   */
  private toOpset(node: NodeProto): void {
    const op = node.opType ?? ''
    const moved = (this.opset >= 13 && axesToInputAt13.has(op)) || (this.opset >= 18 && axesToInputAt18.has(op))
    if (moved) this.attributeToInput(node, op === 'Split' ? 'split' : 'axes')
    if (this.opset >= 18 && op === 'Split' && !node.input?.[1] && !node.attribute?.some(a => a.name === 'num_outputs')) {
      node.attribute = [...(node.attribute ?? []), attribute('num_outputs', node.output!.length)]
    }
  }

  /** Moves an ints attribute to the node's second input (as opset 13/18 want it), where the node has it. */
  private attributeToInput(node: NodeProto, name: string): void {
    const found = node.attribute?.find(a => a.name === name)
    if (!found) return
    node.attribute = node.attribute!.filter(a => a !== found)
    node.input = [node.input![0], this.ints((found.ints ?? []).map(i => Number(i)))]
  }
}

/** Ops whose `axes` (Split: `split`) moved from an attribute to an input at opset 13. */
const axesToInputAt13 = new Set(['ReduceSum', 'Squeeze', 'Unsqueeze', 'Split'])

/** Reduce ops whose `axes` moved from an attribute to an input at opset 18. */
const axesToInputAt18 = new Set([
  'ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2',
  'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare',
])
