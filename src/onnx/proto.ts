// ONNX ModelProto I/O through the `onnx-proto` package (protobufjs, generated from onnx.proto).
// External-data tensors stay where they are: we read and rewrite only the graph, never the weights.
import { link, mkdir, readFile, realpath, stat, symlink } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join, parse, relative, resolve, sep } from 'node:path'
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

/**
 * Every tensor stored in the model: initializers and the values of Constant nodes (exporters put weights in
 * either, and both may live in external data), including those of subgraphs (If/Loop bodies).
 */
export function* allTensors(graph: GraphProto): Generator<TensorProto> {
  yield* graph.initializer as TensorProto[]
  for (const node of graph.node) {
    for (const attribute of node.attribute ?? []) {
      if (attribute.t) yield attribute.t as TensorProto
      yield* (attribute.tensors ?? []) as TensorProto[]
      if (attribute.g) yield* allTensors(attribute.g as GraphProto)
      for (const g of attribute.graphs ?? []) yield* allTensors(g as GraphProto)
    }
  }
}

/** Where an external tensor's bytes are: its file (absolute), offset and length (undefined: to the end of the file). */
export interface ExternalSpan { file: string; offset: number; length?: number }

export function externalSpan(tensor: TensorProto, dir: string): ExternalSpan {
  const location = externalField(tensor, 'location')
  if (!location) throw new UserError(`tensor ${tensor.name} has external data without a location`)
  const length = externalField(tensor, 'length')
  return { file: resolve(dir, location), offset: Number(externalField(tensor, 'offset') ?? 0), length: length === undefined ? undefined : Number(length) }
}

/** The external data files a model refers to, as absolute paths. */
export function externalDataFiles({ model, dir }: LoadedModel): string[] {
  const files = new Set<string>()
  for (const tensor of allTensors(graphOf(model))) if (isExternal(tensor)) files.add(externalSpan(tensor, dir).file)
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
  for (const tensor of allTensors(graphOf(model))) {
    if (!isExternal(tensor)) continue
    const source = externalSpan(tensor, dir).file
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

/** How a data file is placed beside a derived model: a hard link, else (across file systems) a symlink. Tests replace it. */
export const fileLinks = { link, symlink }

async function placeBeside(source: string, outDir: string): Promise<string> {
  const rel = relative(outDir, source)
  if (!rel.startsWith('..') && !isAbsolute(rel)) return rel
  const original = await stat(source).catch(() => undefined)
  if (!original) throw new UserError(`external data file ${source} is missing`)
  // a symlinked data file (a Hugging Face cache) is linked at its real path: a link to the symlink would be one too
  const real = await realpath(source)
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
      await fileLinks.link(real, target)
    } catch {
      await fileLinks.symlink(real, target)
    }
    return placed
  }
}

/**
 * The model with every external location made relative to one folder that holds all its data files once symlinks
 * are resolved (their deepest common folder), for onnxruntime 1.30, which refuses data whose real path leaves the
 * model's folder: weights symlinked from a Hugging Face cache's blobs, or linked into a cache on another file
 * system. onnxruntime opens it from its bytes with that folder (see session.ts). Mutates `model`.
 */
export async function relocateExternalData({ model, dir }: LoadedModel): Promise<{ model: ModelProto; folder: string }> {
  const real = new Map<string, string>()
  for (const file of externalDataFiles({ model, dir })) {
    real.set(file, await realpath(file).catch(() => { throw new UserError(`external data file ${file} is missing`) }))
  }
  let common: string[] | undefined
  for (const file of real.values()) {
    const parts = dirname(file).split(sep)
    let same = 0
    while (common && same < common.length && common[same] === parts[same]) same++
    common = common ? common.slice(0, same) : parts
  }
  const folder = common ? common.join(sep) || sep : dir
  for (const tensor of allTensors(graphOf(model))) {
    if (!isExternal(tensor)) continue
    const location = relative(folder, real.get(externalSpan(tensor, dir).file)!)
    for (const entry of tensor.externalData) if (entry.key === 'location') entry.value = location
  }
  return { model, folder }
}

const BYTES_PER_ELEMENT: Partial<Record<number, number>> = {
  [DataType.FLOAT]: 4, [DataType.DOUBLE]: 8, [DataType.FLOAT16]: 2, [DataType.BFLOAT16]: 2, [DataType.INT64]: 8, [DataType.INT32]: 4,
  [DataType.INT16]: 2, [DataType.UINT16]: 2, [DataType.INT8]: 1, [DataType.UINT8]: 1, [DataType.BOOL]: 1,
}

/**
 * What is wrong with a model's external data, one line per file: missing, or shorter than its tensors'
 * offset + length (a truncated download) — with the size it should have.
 */
export async function externalDataProblems({ model, dir }: LoadedModel): Promise<string[]> {
  const needed = new Map<string, number>()
  for (const tensor of allTensors(graphOf(model))) {
    if (!isExternal(tensor)) continue
    const { file, offset, length } = externalSpan(tensor, dir)
    const bytes = length ?? tensor.dims.map(toNumber).reduce((a, b) => a * b, 1) * (BYTES_PER_ELEMENT[tensor.dataType] ?? 0)
    needed.set(file, Math.max(needed.get(file) ?? 0, offset + bytes))
  }
  const problems: string[] = []
  for (const [file, bytes] of needed) {
    const size = (await stat(file).catch(() => undefined))?.size
    if (size === undefined) problems.push(`external data file ${file} is missing`)
    else if (size < bytes) problems.push(`external data file ${file} is ${size} bytes; its tensors need ${bytes} (truncated?)`)
  }
  return problems
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
 * Writes `model` as optimum does for large models: every tensor (initializer or Constant value, as onnx.save's
 * convert_attribute) of at least `threshold` bytes goes into one `<name>.onnx_data` file beside it
 * (`model.onnx` + `model.onnx_data`). Mutates `model`.
 */
export async function writeModelWithExternalData(model: ModelProto, path: string, threshold = 100): Promise<void> {
  const dataName = `${basename(path)}_data`
  const chunks: Uint8Array[] = []
  let offset = 0
  for (const tensor of allTensors(graphOf(model))) {
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
