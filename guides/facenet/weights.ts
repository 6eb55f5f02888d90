// Weights in tfjs's format, as @vladmandic/face-api and @vladmandic/human ship them (MIT): a manifest plus .bin
// files, tensors laid end to end in manifest order, many of them quantised (uint8: value = q·scale + min;
// float16). face-api's network structures live in its code; guides/facenet/*.ts rebuild them as ONNX graphs.
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { UserError } from '../../src/errors.js'

export interface Weight {
  shape: number[]
  values: Float32Array
}

interface ManifestEntry {
  name: string
  shape: number[]
  dtype: string
  quantization?: { dtype: string; scale?: number; min?: number }
}

/** A tfjs weights manifest: groups of tensors stored in the files `paths`. */
export type WeightsManifest = { paths: string[]; weights: ManifestEntry[] }[]

/** The folder of face-api's model files inside node_modules. */
export function faceApiModelDir(): string {
  const pkg = createRequire(import.meta.url).resolve('@vladmandic/face-api/package.json')
  return join(dirname(pkg), 'model')
}

const loaded = new Map<string, Promise<Map<string, Weight>>>()

/** Every tensor of a face-api model (e.g. 'face_recognition_model'), dequantised to float32, by name. */
export function faceApiWeights(model: string): Promise<Map<string, Weight>> {
  let weights = loaded.get(model)
  if (!weights) {
    weights = readWeights(model)
    loaded.set(model, weights)
  }
  return weights
}

async function readWeights(model: string): Promise<Map<string, Weight>> {
  const dir = faceApiModelDir()
  let groups: WeightsManifest
  try {
    groups = JSON.parse(await readFile(join(dir, `${model}-weights_manifest.json`), 'utf8'))
  } catch {
    throw new UserError(`face-api model ${model} is missing from ${dir}: reinstall the npm dependencies (npm ci)`)
  }
  return readManifestWeights(groups, dir)
}

/** IEEE half → float. */
function halfToFloat(h: number): number {
  const exponent = (h >> 10) & 0x1f
  const fraction = h & 0x3ff
  const sign = h & 0x8000 ? -1 : 1
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024)
  if (exponent === 31) return fraction ? NaN : sign * Infinity
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024)
}

/** Every tensor of a manifest whose files lie in `dir`, as float32 (int32 tensors converted too), by name. */
export async function readManifestWeights(groups: WeightsManifest, dir: string): Promise<Map<string, Weight>> {
  const weights = new Map<string, Weight>()
  for (const group of groups) {
    const bytes = Buffer.concat(await Promise.all(group.paths.map(p => readFile(join(dir, p)))))
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    let offset = 0
    for (const entry of group.weights) {
      const count = entry.shape.reduce((a, b) => a * b, 1)
      const values = new Float32Array(count)
      const stored = entry.quantization?.dtype ?? entry.dtype
      const q = entry.quantization
      for (let i = 0; i < count; i++) {
        switch (stored) {
          case 'uint8': values[i] = view.getUint8(offset + i) * (q?.scale ?? 1) + (q?.min ?? 0); break
          case 'float16': values[i] = halfToFloat(view.getUint16(offset + 2 * i, true)); break
          case 'float32': values[i] = view.getFloat32(offset + 4 * i, true); break
          case 'int32': values[i] = view.getInt32(offset + 4 * i, true); break
          default: throw new Error(`${entry.name}: stored as ${stored}, which is not supported`)
        }
      }
      offset += count * { uint8: 1, float16: 2, float32: 4, int32: 4 }[stored as 'uint8']
      weights.set(entry.name, { shape: entry.shape, values })
    }
    if (offset !== bytes.length) throw new Error(`${dir}: manifest covers ${offset} of ${bytes.length} bytes`)
  }
  return weights
}

/** tfjs filters are HWIO ([kh, kw, in, out]); ONNX Conv wants OIHW. */
export function hwioToOihw({ shape, values }: Weight): Weight {
  const [kh, kw, cin, cout] = shape
  const out = new Float32Array(values.length)
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < cin; i++)
        for (let o = 0; o < cout; o++) out[((o * cin + i) * kh + y) * kw + x] = values[((y * kw + x) * cin + i) * cout + o]
  return { shape: [cout, cin, kh, kw], values: out }
}

/** tfjs depthwise filters are [kh, kw, in, 1]; as an ONNX grouped Conv (group = in) they are [in, 1, kh, kw]. */
export function depthwiseToOihw({ shape, values }: Weight): Weight {
  const [kh, kw, cin] = shape
  return hwioToOihw({ shape: [kh, kw, 1, cin], values })
}
