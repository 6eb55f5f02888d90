// Layer builders that emit ONNX ops the way torch.onnx exports diffusers / torchvision modules, with
// deterministic random weights. Tiny SDXL-, TAESD-, IResNet- and ViT-shaped networks are assembled from these.
// Activations are NCHW images or [B, T, C] token sequences; batch and spatial dims may be symbolic.
import { float, type GraphBuilder } from './builder.js'

/** mulberry32: a small seeded uniform generator in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A seeded standard normal generator (Box-Muller over mulberry32). */
export type Normal = () => number
export function seededNormal(seed: number): Normal {
  const uniform = mulberry32(seed)
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform())
}

/** An initializer of shape `dims` with values mean + std·N(0,1). */
export function randomWeight(g: GraphBuilder, rand: Normal, dims: number[], std: number, mean = 0, hint = 'weight'): string {
  const count = dims.reduce((a, b) => a * b, 1)
  return g.constant(Float32Array.from({ length: count }, () => mean + std * rand()), dims, 'float32', hint)
}

/** A float32 scalar constant. */
const scalar = (g: GraphBuilder, value: number) => g.constant([value], [], 'float32', 'scalar')

export interface ConvOptions {
  kernel?: number
  stride?: number
  /** symmetric padding; default kernel >> 1 ("same" for odd kernels) */
  pad?: number
  bias?: boolean
}

/** nn.Conv2d: one Conv node with weight [out, in, k, k] and bias [out] initializers. */
export function conv2d(g: GraphBuilder, x: string, rand: Normal, inChannels: number, outChannels: number, options: ConvOptions = {}): string {
  const { kernel = 3, stride = 1, pad = kernel >> 1, bias = true } = options
  const w = randomWeight(g, rand, [outChannels, inChannels, kernel, kernel], 1 / Math.sqrt(inChannels * kernel * kernel), 0, 'conv_weight')
  const inputs = bias ? [x, w, randomWeight(g, rand, [outChannels], 0.1, 0, 'conv_bias')] : [x, w]
  return g.op('Conv', inputs, { kernel_shape: [kernel, kernel], strides: [stride, stride], pads: [pad, pad, pad, pad], dilations: [1, 1], group: 1 })
}

/**
 * nn.Linear over the last axis: MatMul by the transposed weight [in, out] then Add(bias), as torch exports
 * it for inputs of rank > 2; `gemm: true` gives the single Gemm(transB=1) node torch emits for 2-D inputs.
 */
export function linear(g: GraphBuilder, x: string, rand: Normal, inFeatures: number, outFeatures: number, options: { bias?: boolean; gemm?: boolean } = {}): string {
  const { bias = true, gemm = false } = options
  const std = 1 / Math.sqrt(inFeatures)
  if (gemm) {
    const w = randomWeight(g, rand, [outFeatures, inFeatures], std, 0, 'gemm_weight')
    const inputs = bias ? [x, w, randomWeight(g, rand, [outFeatures], 0.1, 0, 'gemm_bias')] : [x, w]
    return g.op('Gemm', inputs, { transB: 1 })
  }
  const y = g.op('MatMul', [x, randomWeight(g, rand, [inFeatures, outFeatures], std, 0, 'linear_weight')])
  return bias ? g.op('Add', [y, randomWeight(g, rand, [outFeatures], 0.1, 0, 'linear_bias')]) : y
}

/**
 * nn.GroupNorm as torch.onnx exports it: Reshape [N, G, -1] → InstanceNormalization (scale 1, bias 0)
 * → Reshape back to Shape(x) → Mul(γ [C,1,1]) → Add(β [C,1,1]).
 */
export function groupNorm(g: GraphBuilder, x: string, rand: Normal, channels: number, groups = 32, epsilon = 1e-5): string {
  const grouped = g.op('Reshape', [x, g.ints([0, groups, -1])])
  const ones = g.constant(new Float32Array(groups).fill(1), [groups])
  const zeros = g.constant(new Float32Array(groups), [groups])
  const normed = g.op('InstanceNormalization', [grouped, ones, zeros], { epsilon: float(epsilon) })
  const back = g.op('Reshape', [normed, g.op('Shape', [x])])
  const gamma = randomWeight(g, rand, [channels, 1, 1], 0.1, 1, 'gn_gamma')
  const beta = randomWeight(g, rand, [channels, 1, 1], 0.1, 0, 'gn_beta')
  return g.op('Add', [g.op('Mul', [back, gamma]), beta])
}

/** SiLU as exported: x · Sigmoid(x). */
export function silu(g: GraphBuilder, x: string): string {
  return g.op('Mul', [x, g.op('Sigmoid', [x])])
}

/** nn.LayerNorm over the last axis: LayerNormalization at opset ≥ 17, else the ReduceMean/Pow/Sqrt decomposition torch emits. */
export function layerNorm(g: GraphBuilder, x: string, rand: Normal, dim: number, epsilon = 1e-5): string {
  const gamma = randomWeight(g, rand, [dim], 0.1, 1, 'ln_gamma')
  const beta = randomWeight(g, rand, [dim], 0.1, 0, 'ln_beta')
  if (g.opset >= 17) return g.op('LayerNormalization', [x, gamma, beta], { axis: -1, epsilon: float(epsilon) })
  const mean = g.op('ReduceMean', [x], { axes: [-1], keepdims: 1 })
  const centred = g.op('Sub', [x, mean])
  const variance = g.op('ReduceMean', [g.op('Pow', [centred, scalar(g, 2)])], { axes: [-1], keepdims: 1 })
  const std = g.op('Sqrt', [g.op('Add', [variance, scalar(g, epsilon)])])
  return g.op('Add', [g.op('Mul', [g.op('Div', [centred, std]), gamma]), beta])
}

/** GELU, exact, as exported before opset 20: x · 0.5 · (1 + Erf(x / √2)). */
export function gelu(g: GraphBuilder, x: string): string {
  const erf = g.op('Erf', [g.op('Div', [x, scalar(g, Math.SQRT2)])])
  return g.op('Mul', [g.op('Mul', [x, g.op('Add', [erf, scalar(g, 1)])]), scalar(g, 0.5)])
}

export interface AttentionOptions {
  heads: number
  /** cross-attention: keys and values from this [B, S, contextDim] value */
  context?: string
  contextDim?: number
}

/**
 * diffusers Attention (legacy processor export): q, k, v projections without bias, heads split with
 * Reshape [0, 0, H, D] + Transpose, MatMul → Mul(scale) → Softmax → MatMul, heads merged, output projection.
 */
export function attention(g: GraphBuilder, x: string, rand: Normal, dim: number, options: AttentionOptions): string {
  const { heads, context = x, contextDim = dim } = options
  const headDim = dim / heads
  const split = (value: string, perm: number[]) => g.op('Transpose', [g.op('Reshape', [value, g.ints([0, 0, heads, headDim])])], { perm })
  const q = split(linear(g, x, rand, dim, dim, { bias: false }), [0, 2, 1, 3])
  const kT = split(linear(g, context, rand, contextDim, dim, { bias: false }), [0, 2, 3, 1])
  const v = split(linear(g, context, rand, contextDim, dim, { bias: false }), [0, 2, 1, 3])
  const scores = g.op('Mul', [g.op('MatMul', [q, kT]), scalar(g, 1 / Math.sqrt(headDim))])
  const mixed = g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), v])
  const merged = g.op('Reshape', [g.op('Transpose', [mixed], { perm: [0, 2, 1, 3] }), g.ints([0, -1, dim])])
  return linear(g, merged, rand, dim, dim)
}

/**
 * diffusers GEGLU: proj to 2·inner, `chunk(2, -1)` exported as two Slices whose bounds come from a
 * Shape → Gather → Add → Div subgraph, then hidden · GELU(gate).
 */
export function geglu(g: GraphBuilder, x: string, rand: Normal, dim: number, inner: number): string {
  const projected = linear(g, x, rand, dim, 2 * inner)
  const last = g.op('Gather', [g.op('Shape', [projected]), g.constant([-1], [], 'int64')], { axis: 0 })
  const half = g.op('Div', [g.op('Add', [last, g.constant([1], [], 'int64')]), g.constant([2], [], 'int64')])
  const halfEnd = g.op('Unsqueeze', [half, g.ints([0])])
  const fullEnd = g.op('Unsqueeze', [g.op('Mul', [half, g.constant([2], [], 'int64')]), g.ints([0])])
  const hidden = g.op('Slice', [projected, g.ints([0]), halfEnd, g.ints([-1])])
  const gate = g.op('Slice', [projected, halfEnd, fullEnd, g.ints([-1])])
  return g.op('Mul', [hidden, gelu(g, gate)])
}

/** diffusers FeedForward with GEGLU: geglu(dim → 4·dim) then Linear back to dim. */
export function feedForward(g: GraphBuilder, x: string, rand: Normal, dim: number, mult = 4): string {
  return linear(g, geglu(g, x, rand, dim, dim * mult), rand, dim * mult, dim)
}

/** F.interpolate(scale_factor=2, mode='nearest'): Resize with scales [1, 1, 2, 2]. */
export function upsampleNearest2x(g: GraphBuilder, x: string): string {
  const scales = g.constant([1, 1, 2, 2], [4])
  return g.op('Resize', [x, '', scales], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' })
}

/** diffusers Downsample2D: a stride-2 3×3 Conv with padding 1. */
export function downsample(g: GraphBuilder, x: string, rand: Normal, channels: number): string {
  return conv2d(g, x, rand, channels, channels, { stride: 2 })
}

export interface ResnetOptions {
  groups?: number
  /** the time embedding [B, tembDim], added after the first conv (diffusers ResnetBlock2D) */
  temb?: string
  tembDim?: number
}

/** diffusers ResnetBlock2D: GN → SiLU → Conv → (+ Linear(SiLU(temb))) → GN → SiLU → Conv, plus a 1×1 shortcut when channels change. */
export function resnetBlock(g: GraphBuilder, x: string, rand: Normal, inChannels: number, outChannels: number, options: ResnetOptions = {}): string {
  const { groups = 32, temb, tembDim } = options
  let h = conv2d(g, silu(g, groupNorm(g, x, rand, inChannels, groups)), rand, inChannels, outChannels)
  if (temb) {
    if (tembDim === undefined) throw new Error('resnetBlock: temb needs tembDim')
    const projected = linear(g, silu(g, temb), rand, tembDim, outChannels, { gemm: true })
    h = g.op('Add', [h, g.op('Unsqueeze', [projected, g.ints([2, 3])])])
  }
  h = conv2d(g, silu(g, groupNorm(g, h, rand, outChannels, groups)), rand, outChannels, outChannels)
  const shortcut = inChannels === outChannels ? x : conv2d(g, x, rand, inChannels, outChannels, { kernel: 1 })
  return g.op('Add', [shortcut, h])
}

/** diffusers BasicTransformerBlock over [B, T, dim]: LN → self-attention, LN → cross-attention (when context), LN → GEGLU feed-forward, each residual. */
export function transformerBlock(g: GraphBuilder, x: string, rand: Normal, dim: number, options: AttentionOptions): string {
  let h = g.op('Add', [attention(g, layerNorm(g, x, rand, dim), rand, dim, { heads: options.heads }), x])
  if (options.context) h = g.op('Add', [attention(g, layerNorm(g, h, rand, dim), rand, dim, options), h])
  return g.op('Add', [feedForward(g, layerNorm(g, h, rand, dim), rand, dim), h])
}

/**
 * diffusers Transformer2DModel with use_linear_projection (SDXL): GN, [B,C,H,W] → [B,HW,C] via
 * Transpose + Reshape, Linear proj_in, transformer blocks, proj_out, reshape back using Shape(x), residual.
 */
export function spatialTransformer(g: GraphBuilder, x: string, rand: Normal, channels: number, options: AttentionOptions & { groups?: number; depth?: number }): string {
  const { groups = 32, depth = 1 } = options
  const tokens = g.op('Reshape', [g.op('Transpose', [groupNorm(g, x, rand, channels, groups, 1e-6)], { perm: [0, 2, 3, 1] }), g.ints([0, -1, channels])])
  let h = linear(g, tokens, rand, channels, channels)
  for (let i = 0; i < depth; i++) h = transformerBlock(g, h, rand, channels, options)
  h = linear(g, h, rand, channels, channels)
  const shape = g.op('Shape', [x])
  const dimsOf = (index: number) => g.op('Unsqueeze', [g.op('Gather', [shape, g.constant([index], [], 'int64')], { axis: 0 }), g.ints([0])])
  const nhwc = g.op('Concat', [dimsOf(0), dimsOf(2), dimsOf(3), g.ints([channels])], { axis: 0 })
  const back = g.op('Transpose', [g.op('Reshape', [h, nhwc])], { perm: [0, 3, 1, 2] })
  return g.op('Add', [back, x])
}

/** nn.BatchNorm2d in inference form: one BatchNormalization node with running statistics. */
export function batchNorm(g: GraphBuilder, x: string, rand: Normal, channels: number, epsilon = 1e-5): string {
  const scale = randomWeight(g, rand, [channels], 0.1, 1, 'bn_scale')
  const bias = randomWeight(g, rand, [channels], 0.1, 0, 'bn_bias')
  const mean = randomWeight(g, rand, [channels], 0.1, 0, 'bn_mean')
  const variance = g.constant(Float32Array.from({ length: channels }, () => 0.5 + Math.abs(rand()) * 0.5), [channels], 'float32', 'bn_var')
  return g.op('BatchNormalization', [x, scale, bias, mean, variance], { epsilon: float(epsilon) })
}

/** nn.PReLU(channels) on NCHW: slope [C, 1, 1]. */
export function prelu(g: GraphBuilder, x: string, rand: Normal, channels: number): string {
  return g.op('PRelu', [x, randomWeight(g, rand, [channels, 1, 1], 0.05, 0.25, 'prelu_slope')])
}

