// ONNX ModelProto I/O through the `onnx-proto` package (protobufjs, generated from onnx.proto).
// External-data tensors stay where they are: we read and rewrite only the graph, never the weights.
import { link, mkdir, readFile, stat, symlink } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join, parse, relative, resolve } from 'node:path'
import onnxProto from 'onnx-proto'
import { UserError } from '../errors.js'
import { writeFileAtomic } from '../fsutil.js'

export const onnx = onnxProto.onnx
export type ModelProto = onnxProto.onnx.ModelProto
export type GraphProto = onnxProto.onnx.GraphProto
export type NodeProto = onnxProto.onnx.NodeProto
export type TensorProto = onnxProto.onnx.TensorProto
export type ValueInfoProto = onnxProto.onnx.ValueInfoProto
export type AttributeProto = onnxProto.onnx.AttributeProto
export const DataType = onnx.TensorProto.DataType
export const AttributeType = onnx.AttributeProto.AttributeType

/** protobufjs gives int64 fields as Long objects (or numbers); we want plain numbers. */
export function toNumber(value: number | { toNumber(): number } | null | undefined): number {
  if (value === null || value === undefined) return 0
  return typeof value === 'number' ? value : value.toNumber()
}

/** A model plus the folder its external data paths are relative to. */
export interface LoadedModel {
  model: ModelProto
  dir: string
}

export function decodeModel(bytes: Uint8Array): ModelProto {
  return onnx.ModelProto.decode(bytes)
}

export function encodeModel(model: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish()
}

export async function readModel(path: string): Promise<LoadedModel> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch {
    throw new UserError(`cannot read model file ${path}`)
  }
  try {
    return { model: decodeModel(bytes), dir: dirname(resolve(path)) }
  } catch (error) {
    throw new UserError(`${path} is not an ONNX model (${(error as Error).message})`)
  }
}

export function isExternal(tensor: TensorProto): boolean {
  return tensor.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL
}

function externalField(tensor: TensorProto, key: string): string | undefined {
  return tensor.externalData.find(entry => entry.key === key)?.value ?? undefined
}

/** Every initializer in the model, including those of subgraphs (If/Loop bodies). */
function* allInitializers(graph: GraphProto): Generator<TensorProto> {
  yield* graph.initializer as TensorProto[]
  for (const node of graph.node) {
    for (const attribute of node.attribute ?? []) {
      if (attribute.g) yield* allInitializers(attribute.g as GraphProto)
      for (const g of attribute.graphs ?? []) yield* allInitializers(g as GraphProto)
    }
  }
}

/** The external data files a model refers to, as absolute paths. */
export function externalDataFiles({ model, dir }: LoadedModel): string[] {
  const files = new Set<string>()
  for (const tensor of allInitializers(model.graph as GraphProto)) {
    if (!isExternal(tensor)) continue
    const location = externalField(tensor, 'location')
    if (!location) throw new UserError(`tensor ${tensor.name} has external data without a location`)
    files.add(resolve(dir, location))
  }
  return [...files]
}

/**
 * Writes `model` to `path` atomically. External-data locations are rewritten relative to the new folder;
 * where the data file lies outside that folder it is hard-linked (or, across file systems, symlinked)
 * beside the new model, because onnxruntime refuses locations that leave the model's folder.
 * The locations are changed in `model` itself: the returned LoadedModel is the model as written.
 */
export async function writeModel(loaded: LoadedModel, path: string): Promise<LoadedModel> {
  // from plain JS the first argument is easily a bare ModelProto: say what is wanted
  if (typeof loaded !== 'object' || loaded === null || !('model' in loaded) || typeof loaded.dir !== 'string' || typeof path !== 'string') {
    throw new TypeError('writeModel(loaded, path): loaded is { model: ModelProto, dir: string } as readModel returns it (dir: the folder its external data is relative to), path a file name')
  }
  const { model, dir } = loaded
  const outDir = dirname(resolve(path))
  const placed = new Map<string, string>()
  for (const tensor of allInitializers(model.graph as GraphProto)) {
    if (!isExternal(tensor)) continue
    const source = resolve(dir, externalField(tensor, 'location') ?? '')
    let location = placed.get(source)
    if (location === undefined) {
      location = await placeBeside(source, outDir)
      placed.set(source, location)
    }
    for (const entry of tensor.externalData) if (entry.key === 'location') entry.value = location
  }
  await writeFileAtomic(path, encodeModel(model))
  return { model, dir: outDir }
}

async function placeBeside(source: string, outDir: string): Promise<string> {
  const rel = relative(outDir, source)
  if (!rel.startsWith('..') && !isAbsolute(rel)) return rel
  const original = await stat(source).catch(() => undefined)
  if (!original) throw new UserError(`external data file ${source} is missing`)
  await mkdir(outDir, { recursive: true })
  // composed models hold several files of one name (unet/model.onnx_data, decoder/model.onnx_data): number them
  const { name, ext } = parse(source)
  for (let n = 0; ; n++) {
    const placed = n === 0 ? basename(source) : `${name}.${n}${ext}`
    const target = join(outDir, placed)
    const existing = await stat(target).catch(() => undefined)
    if (existing) {
      if (existing.ino === original.ino && existing.dev === original.dev) return placed
      continue
    }
    try {
      await link(source, target)
    } catch {
      await symlink(source, target)
    }
    return placed
  }
}

const typedArrayOf: Partial<Record<number, (buffer: ArrayBuffer) => ArrayLike<number | bigint>>> = {
  [DataType.FLOAT]: b => new Float32Array(b),
  [DataType.DOUBLE]: b => new Float64Array(b),
  [DataType.INT64]: b => new BigInt64Array(b),
  [DataType.INT32]: b => new Int32Array(b),
  [DataType.UINT8]: b => new Uint8Array(b),
  [DataType.INT8]: b => new Int8Array(b),
  [DataType.BOOL]: b => new Uint8Array(b),
  [DataType.FLOAT16]: b => new Uint16Array(b),
}

/** Copies raw little-endian bytes into a fresh, aligned ArrayBuffer. */
function aligned(bytes: Uint8Array): ArrayBuffer {
  const buffer = new ArrayBuffer(bytes.byteLength)
  new Uint8Array(buffer).set(bytes)
  return buffer
}

/** The values of a tensor stored inside the model. */
export function inlineTensorValues(tensor: TensorProto): ArrayLike<number | bigint> {
  const make = typedArrayOf[tensor.dataType]
  if (!make) throw new UserError(`tensor ${tensor.name}: data type ${tensor.dataType} is not supported`)
  if (isExternal(tensor)) throw new Error(`tensor ${tensor.name} lives in external data`)
  if (tensor.rawData && tensor.rawData.length > 0) return make(aligned(tensor.rawData))
  switch (tensor.dataType) {
    case DataType.FLOAT: return Float32Array.from(tensor.floatData)
    case DataType.DOUBLE: return Float64Array.from(tensor.doubleData)
    case DataType.INT64: return BigInt64Array.from(tensor.int64Data, v => BigInt(toNumber(v)))
    case DataType.FLOAT16: return Uint16Array.from(tensor.int32Data)
    default: return Int32Array.from(tensor.int32Data) // int32, and the small types widened to int32
  }
}

export function dims(tensor: TensorProto): number[] {
  return tensor.dims.map(toNumber)
}

/**
 * Writes `model` as optimum does for large models: every initializer of at least `threshold` bytes goes
 * into one `<name>.onnx_data` file beside it (`model.onnx` + `model.onnx_data`). Mutates `model`.
 */
export async function writeModelWithExternalData(model: ModelProto, path: string, threshold = 100): Promise<void> {
  const dataName = `${basename(path)}_data`
  const chunks: Uint8Array[] = []
  let offset = 0
  for (const tensor of allInitializers(model.graph as GraphProto)) {
    if (isExternal(tensor) || !tensor.rawData || tensor.rawData.length < threshold) continue
    chunks.push(tensor.rawData)
    tensor.externalData = [
      new onnx.StringStringEntryProto({ key: 'location', value: dataName }),
      new onnx.StringStringEntryProto({ key: 'offset', value: String(offset) }),
      new onnx.StringStringEntryProto({ key: 'length', value: String(tensor.rawData.length) }),
    ]
    tensor.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL
    tensor.rawData = new Uint8Array(0)
    offset += chunks[chunks.length - 1].length
  }
  const data = new Uint8Array(offset)
  let at = 0
  for (const chunk of chunks) {
    data.set(chunk, at)
    at += chunk.length
  }
  await writeFileAtomic(join(dirname(path), dataName), data)
  await writeFileAtomic(path, encodeModel(model))
}

/** The model's main graph, typed with its repeated fields present (protobufjs fills them on decode). */
export function graphOf(model: ModelProto): GraphProto {
  if (!model.graph) throw new UserError('the ONNX model has no graph')
  return model.graph as GraphProto
}
