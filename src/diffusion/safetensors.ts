// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?}, then the raw little-endian data.
// Written here because no maintained npm package reads it in Node (the format is ~30 lines).
import { open, readFile } from 'node:fs/promises'
import { UserError } from '../errors.js'
import { writeFileAtomic } from '../fsutil.js'

/** A tensor as stored: float32 values, or float16 as their raw IEEE half bits (bfloat16 is widened to F32). */
export type NamedTensor =
  | { dtype: 'F32'; shape: number[]; data: Float32Array }
  | { dtype: 'F16'; shape: number[]; data: Uint16Array }

export const f32 = (shape: number[], data: Float32Array): NamedTensor => ({ dtype: 'F32', shape, data })

/** The values as float32. */
export function floatValues(t: NamedTensor): Float32Array {
  return t.dtype === 'F32' ? t.data : Float32Array.from(t.data, halfToFloat)
}

/** The tensor stored as float16. */
export function toHalf(t: NamedTensor): NamedTensor {
  return t.dtype === 'F16' ? t : { dtype: 'F16', shape: t.shape, data: Uint16Array.from(t.data, floatToHalf) }
}

/** IEEE half → float. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const exponent = (h >> 10) & 0x1f
  const fraction = h & 0x3ff
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024)
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024)
}

// one float32's bits, reused (this runs once per weight)
const scratch = new Float32Array(1)
const scratchBits = new Uint32Array(scratch.buffer)

/** float → IEEE half, rounding to nearest even. */
export function floatToHalf(value: number): number {
  scratch[0] = value
  const bits = scratchBits[0]
  const sign = (bits >>> 16) & 0x8000
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15
  const mantissa = bits & 0x7fffff
  if (((bits >>> 23) & 0xff) === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0)
  if (exponent >= 0x1f) return sign | 0x7c00
  if (exponent <= 0) return sign | roundHalfEven(Math.abs(scratch[0]) / 2 ** -24) // subnormal: multiples of 2^-24
  const half = sign | (exponent << 10) | (mantissa >> 13)
  const rest = mantissa & 0x1fff
  return half + (rest > 0x1000 || (rest === 0x1000 && half & 1) ? 1 : 0)
}

function roundHalfEven(x: number): number {
  const r = Math.round(x)
  return x % 1 === 0.5 && r % 2 ? r - 1 : r
}

/** Copies (so the typed array is aligned) and decodes one tensor's bytes. */
const readers: Record<string, (bytes: Buffer, shape: number[]) => NamedTensor> = {
  F32: (b, shape) => ({ dtype: 'F32', shape, data: new Float32Array(Uint8Array.from(b).buffer) }),
  F16: (b, shape) => ({ dtype: 'F16', shape, data: new Uint16Array(Uint8Array.from(b).buffer) }),
  // bfloat16 is the top half of a float32's bits
  BF16: (b, shape) => ({ dtype: 'F32', shape, data: new Float32Array(Uint32Array.from(new Uint16Array(Uint8Array.from(b).buffer), bits => bits << 16).buffer) }),
}

/** Every tensor of a .safetensors file (F32, F16 kept as they are; BF16 widened to F32). */
export async function readSafetensors(path: string): Promise<Map<string, NamedTensor>> {
  const bytes = await readFile(path).catch(() => {
    throw new UserError(`cannot read ${path}`)
  })
  const headerLength = bytes.length >= 8 ? Number(bytes.readBigUInt64LE(0)) : -1
  if (headerLength < 2 || 8 + headerLength > bytes.length) throw new UserError(`${path} is not a safetensors file (bad header length)`)
  const header = parseHeader(bytes.subarray(8, 8 + headerLength), path)
  const tensors = new Map<string, NamedTensor>()
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue
    const read = readers[info.dtype]
    if (!read) throw new UserError(`${path}: tensor ${name} has dtype ${info.dtype}; F32, F16 and BF16 are supported`)
    const [begin, end] = info.data_offsets
    tensors.set(name, read(bytes.subarray(8 + headerLength + begin, 8 + headerLength + end), info.shape))
  }
  return tensors
}

/** Writes tensors as a .safetensors file, each in its own dtype. */
export async function writeSafetensors(path: string, tensors: Map<string, NamedTensor>): Promise<void> {
  const header: Record<string, unknown> = {}
  const chunks: Buffer[] = []
  let offset = 0
  for (const [name, { dtype, shape, data }] of tensors) {
    const chunk = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    header[name] = { dtype, shape, data_offsets: [offset, offset + chunk.length] }
    chunks.push(chunk)
    offset += chunk.length
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8')
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(BigInt(json.length))
  await writeFileAtomic(path, Buffer.concat([length, json, ...chunks]))
}

/** The tensor names and shapes of a .safetensors file, from its header alone (no weights read). */
export async function safetensorsShapes(path: string): Promise<Map<string, number[]>> {
  const handle = await open(path, 'r').catch(() => {
    throw new UserError(`cannot read ${path}`)
  })
  try {
    const prefix = Buffer.alloc(8)
    const { bytesRead } = await handle.read(prefix, 0, 8, 0)
    const length = bytesRead === 8 ? Number(prefix.readBigUInt64LE(0)) : -1
    const { size } = await handle.stat()
    if (length < 2 || 8 + length > size) throw new UserError(`${path} is not a safetensors file (bad header length)`)
    const json = Buffer.alloc(length)
    await handle.read(json, 0, length, 8)
    const header = parseHeader(json, path)
    return new Map(Object.entries(header).filter(([name]) => name !== '__metadata__').map(([name, info]) => [name, info.shape]))
  } finally {
    await handle.close()
  }
}

type Header = Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>

function parseHeader(json: Buffer, path: string): Header {
  try {
    return JSON.parse(json.toString('utf8'))
  } catch {
    throw new UserError(`${path} is not a safetensors file (its header is not JSON)`)
  }
}
