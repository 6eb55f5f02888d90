// The demo world's latent codec: a fixed linear map instead of a VAE.
// encode: average pooling by 8, then a 3→4 channel matrix A.
// decode: A's pseudo-inverse, then bilinear upsampling with a small correction (B⁻¹ below), chosen so that
// encode(decode(z)) = z exactly for every latent in A's range (where all the world's data lies).
import { Matrix, inverse, pseudoInverse } from 'ml-matrix'
import type { GraphBuilder } from '../onnx/builder.js'

export const LATENT_FACTOR = 8
export const LATENT_CHANNELS = 4
/** SDXL's VAE scaling factor: vae_decoder takes latents / 0.13025, as the real export does. */
export const VAE_SCALING = 0.13025

/** The channel map A (latent channel × RGB): a luma-like row, two colour-difference rows and a mixed one. */
export const CHANNEL_MATRIX: readonly (readonly number[])[] = [
  [0.7, 0.9, 0.4],
  [1.0, -0.2, -0.8],
  [-0.3, 0.8, -0.5],
  [0.4, -0.6, 0.7],
]

export interface Codec {
  imageSize: number
  latentSize: number
  /** [4,3] row-major */
  channels: Float64Array
  /** A⁺, [3,4] row-major */
  channelsInverse: Float64Array
  /** pooling along one axis, [latentSize, imageSize] row-major */
  pool: Float64Array
  /** corrected bilinear upsampling along one axis, [imageSize, latentSize] row-major; pool · upsample = I */
  upsample: Float64Array
}

export function makeCodec(imageSize: number): Codec {
  const n = imageSize / LATENT_FACTOR
  const pool = new Matrix(n, imageSize)
  for (let i = 0; i < n; i++) for (let k = 0; k < LATENT_FACTOR; k++) pool.set(i, i * LATENT_FACTOR + k, 1 / LATENT_FACTOR)
  const bilinear = bilinearMatrix(n, imageSize)
  // pool · bilinear is a slight blur B (≈ I + Δ²/8); upsampling with bilinear · B⁻¹ makes pooling its exact inverse.
  const upsample = bilinear.mmul(inverse(pool.mmul(bilinear)))
  const a = new Matrix(CHANNEL_MATRIX.map(row => [...row]))
  return {
    imageSize,
    latentSize: n,
    channels: Float64Array.from(a.to1DArray()),
    channelsInverse: Float64Array.from(pseudoInverse(a).to1DArray()),
    pool: Float64Array.from(pool.to1DArray()),
    upsample: Float64Array.from(upsample.to1DArray()),
  }
}

/** Linear interpolation from n samples to `size` (half-pixel centres, clamped at the edges, as ONNX Resize). */
function bilinearMatrix(n: number, size: number): Matrix {
  const m = new Matrix(size, n)
  for (let i = 0; i < size; i++) {
    const x = Math.min(n - 1, Math.max(0, (i + 0.5) / LATENT_FACTOR - 0.5))
    const x0 = Math.floor(x)
    const x1 = Math.min(x0 + 1, n - 1)
    m.set(i, x0, m.get(i, x0) + (1 - (x - x0)))
    m.set(i, x1, m.get(i, x1) + (x - x0))
  }
  return m
}

/** Encodes one image [3,S,S] (values in [-1,1]) to a latent [4,n,n], in float64. */
export function encodeImage(codec: Codec, image: ArrayLike<number>): Float64Array {
  const { imageSize: s, latentSize: n, channels } = codec
  const pooled = new Float64Array(3 * n * n)
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < s; y++) {
      for (let x = 0; x < s; x++) {
        pooled[(c * n + Math.floor(y / LATENT_FACTOR)) * n + Math.floor(x / LATENT_FACTOR)] += image[(c * s + y) * s + x]
      }
    }
  }
  const area = LATENT_FACTOR * LATENT_FACTOR
  const latent = new Float64Array(LATENT_CHANNELS * n * n)
  for (let l = 0; l < LATENT_CHANNELS; l++) {
    for (let i = 0; i < n * n; i++) {
      let sum = 0
      for (let c = 0; c < 3; c++) sum += channels[l * 3 + c] * pooled[c * n * n + i]
      latent[l * n * n + i] = sum / area
    }
  }
  return latent
}

/** Appends the encoder: image [B,3,S,S] → UNet-space latent [B,4,n,n]. */
export function encoderFragment(g: GraphBuilder, codec: Codec, image: string): string {
  const { imageSize: s, latentSize: n } = codec
  const rows = g.op('MatMul', [g.constant(Float32Array.from(codec.pool), [n, s], 'float32', 'pool'), image])
  const pooled = g.op('MatMul', [rows, g.constant(Float32Array.from(transpose(codec.pool, n, s)), [s, n], 'float32', 'pool_t')])
  const flat = g.op('Reshape', [pooled, g.ints([-1, 3, n * n])])
  const mixed = g.op('MatMul', [g.constant(Float32Array.from(codec.channels), [LATENT_CHANNELS, 3], 'float32', 'channels'), flat])
  return g.op('Reshape', [mixed, g.ints([-1, LATENT_CHANNELS, n, n])])
}

/** Appends the decoder: UNet-space latent [B,4,n,n] → image [B,3,S,S]. */
export function decoderFragment(g: GraphBuilder, codec: Codec, latent: string): string {
  const { imageSize: s, latentSize: n } = codec
  const flat = g.op('Reshape', [latent, g.ints([-1, LATENT_CHANNELS, n * n])])
  const rgb = g.op('MatMul', [g.constant(Float32Array.from(codec.channelsInverse), [3, LATENT_CHANNELS], 'float32', 'channels_inv'), flat])
  const small = g.op('Reshape', [rgb, g.ints([-1, 3, n, n])])
  const rows = g.op('MatMul', [g.constant(Float32Array.from(codec.upsample), [s, n], 'float32', 'upsample'), small])
  return g.op('MatMul', [rows, g.constant(Float32Array.from(transpose(codec.upsample, s, n)), [n, s], 'float32', 'upsample_t')])
}

/** The transpose of a row-major [rows, cols] matrix. */
export function transpose(values: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols)
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = values[i * cols + j]
  return out
}
