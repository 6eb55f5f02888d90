// One gradient rule per ONNX op (tinygrad gradient.py style): each maps the gradient flowing into a node's
// outputs (c.g, c.dy) to its inputs' gradients, emitting standard ONNX ops only. Gradients are never taken
// w.r.t. weights; a rule asked for one throws a UserError naming the node.
import { UserError } from '../errors.js'
import type { Emitter, GradContext, GradRule } from './grad-context.js'
import { dtypeOf, float, tensor, type AttrValue } from './builder.js'
import { DataType, type AttributeProto, type NodeProto } from './proto.js'
import { attrOf, axesOf, dimRatio, floatAttr, intAttr, intsAttr, stringAttr, type Dim, type Info } from './shapes.js'

const INT_MAX = 2 ** 62
/** The fewest channels of x for which a strided Conv's dx is taken as per-phase Convs (npm run oracle). */
const MIN_PHASE_CHANNELS = 16

function refuse(c: GradContext, what: string): never {
  throw new UserError(`autodiff: ${c.node.opType} node ${c.node.name} would need a gradient w.r.t. ${what}, which is not supported`)
}

/** Gradients only for the inputs listed; the others must not need one (weights, exponents, masks). */
function only(c: GradContext, indices: number[], what: string): void {
  c.needs.forEach((need, i) => { if (need && !indices.includes(i)) refuse(c, `its ${what} (input ${i})`) })
}

const normalise = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis)

/** Records the static shape of an emitted value (for later broadcast decisions), with the type of `like`. */
function shaped(e: Emitter, value: string, like: string, shape: Dim[] | undefined): string {
  e.infos.set(value, { dtype: e.dtype(like), shape })
  return value
}

const swapLast = (rank: number) => [...Array(rank - 2).keys(), rank - 1, rank - 2]

/** The elementwise rule g · f(x, y). */
const chain = (factor: (e: Emitter, x: string, y: string) => string): GradRule => c => [c.e.op('Mul', [c.g, factor(c.e, c.x[0], c.y[0])])]

/**
 * (1/σ)(ĝ − mean ĝ − x̂·mean(ĝ·x̂)) over `axes`: the input gradient of a normalisation of x with gradient ĝ
 * on x̂, σ = √(var + ε). Statistics from the forward where it has them; given x̂ alone (the output of
 * torch's GroupNorm export), 1/σ comes from one pass: m = mean(x̂·x) = var/σ, so 1/σ solves
 * ε/σ² + m/σ = 1, i.e. 1/σ = 2 / (m + √(m² + 4ε)); else both are recomputed from x.
 */
function normalisationBackward(e: Emitter, gHat: string, x: string, axes: number[], epsilon: number, forward?: { normalised: string; inverseStd?: string }): string {
  let inverseStd: string, normalised: string
  if (forward?.inverseStd) {
    normalised = forward.normalised
    inverseStd = forward.inverseStd
  } else if (forward) {
    const m = e.reduceMean(e.op('Mul', [forward.normalised, x]), axes)
    inverseStd = e.op('Div', [e.scalar(2, x), e.op('Add', [m, e.op('Sqrt', [e.op('Add', [e.op('Mul', [m, m]), e.scalar(4 * epsilon, x)])])])])
    normalised = forward.normalised
  } else {
    const centred = e.op('Sub', [x, e.reduceMean(x, axes)])
    const variance = e.reduceMean(e.op('Mul', [centred, centred]), axes)
    inverseStd = e.op('Reciprocal', [e.op('Sqrt', [e.op('Add', [variance, e.scalar(epsilon, x)])])])
    normalised = e.op('Mul', [centred, inverseStd])
  }
  const projection = e.op('Mul', [normalised, e.reduceMean(e.op('Mul', [gHat, normalised]), axes)])
  return e.op('Mul', [e.op('Sub', [e.op('Sub', [gHat, e.reduceMean(gHat, axes)]), projection]), inverseStd])
}

/** g reshaped so it broadcasts against the reduced input: the reduced axes put back when keepdims=0. */
function unreduce(c: GradContext, g: string): string {
  const axes = axesOf(c.node, c.e.infos)
  if (axes === 'dynamic') throw new UserError(`autodiff: ${c.node.opType} node ${c.node.name} has axes computed at run time`)
  if (intAttr(c.node, 'keepdims', 1) === 1 || !axes || axes.length === 0) return g
  // negative axes count from the end of the unsqueezed result, which has the input's rank
  return c.e.op('Unsqueeze', [g, c.e.ints(axes)])
}

/** Whether a Reduce node is the identity (empty axes with noop_with_empty_axes). */
const reduceIsIdentity = (c: GradContext) => {
  const axes = axesOf(c.node, c.e.infos)
  return intAttr(c.node, 'noop_with_empty_axes', 0) === 1 && (axes === undefined || (Array.isArray(axes) && axes.length === 0))
}

/**
 * Max/Min of several inputs: g split evenly between the inputs equal to the result (as torch and tinygrad
 * do at ties), each share shaped like the broadcast result.
 */
function tiedExtremes(c: GradContext): string[] {
  const { e } = c
  if (c.x.length === 1) return [c.g]
  const hits = c.x.map(x => e.op('Cast', [e.op('Equal', [x, c.y[0]])], { to: e.dtype(c.y[0]) }))
  const share = e.op('Div', [c.g, e.op('Sum', hits)])
  return hits.map(hit => e.op('Mul', [share, hit]))
}

/** ReduceMax/ReduceMin: g split evenly between the elements equal to the result (torch's amax). */
function tiedReduction(c: GradContext): string {
  const { e } = c
  if (reduceIsIdentity(c)) return c.g
  const x = c.x[0]
  const hit = e.op('Cast', [e.op('Equal', [x, unreduce(c, c.y[0])])], { to: e.dtype(x) })
  const axes = axesOf(c.node, e.infos)
  const count = Array.isArray(axes) && axes.length ? e.reduceSum(hit, axes, true) : e.op('ReduceSum', [hit], { keepdims: 1 })
  return e.op('Mul', [e.op('Div', [unreduce(c, c.g), count]), hit])
}

/** 1 / (elements reduced), as a scalar of x's dtype: static where the dims are known. */
function reducedFraction(e: Emitter, x: string, y: string): string {
  const sx = e.info(x).shape, sy = e.info(y).shape
  const count = (s?: Dim[]) => (s && s.every(d => typeof d === 'number') ? (s as number[]).reduce((a, b) => a * b, 1) : undefined)
  const nx = count(sx), ny = count(sy)
  if (nx !== undefined && ny !== undefined) return e.scalar(ny / nx, x)
  const size = (v: string) => e.op('Cast', [e.op('Size', [v])], { to: e.dtype(x) })
  return e.op('Div', [size(y), size(x)])
}

/** A 1-D zero tensor of x's dtype with x's element count. */
function flatZeros(e: Emitter, x: string): string {
  const count = e.op('Reshape', [e.op('Size', [x]), e.ints([1])])
  return e.op('ConstantOfShape', [count], { value: tensor('zero', dtypeName(e.dtype(x)), [1], [0]) })
}

const dtypeName = (dtype: number) => dtypeOf[dtype] ?? 'float32'

/**
 * The gradient of a gather-like op (Slice with steps, Gather, GatherElements, reflect and edge Pad): apply
 * the same selection to a tensor of flat indices of x, then scatter-add g into zeros at those indices.
 */
function scatterBack(c: GradContext, select: (indices: string) => string, duplicates: boolean): string {
  const { e } = c
  const x = c.x[0]
  const flat = e.op('Reshape', [e.op('Range', [e.typed(0, DataType.INT64), e.op('Size', [x]), e.typed(1, DataType.INT64)]), e.shape(x)])
  const picked = e.op('Reshape', [select(flat), e.ints([-1])])
  const attrs: Record<string, AttrValue> = duplicates ? { axis: 0, reduction: 'add' } : { axis: 0 }
  const scattered = e.op('ScatterElements', [flatZeros(e, x), picked, e.op('Reshape', [c.g, e.ints([-1])])], attrs)
  return e.op('Reshape', [scattered, e.shape(x)])
}

/**
 * Pads g back to x's shape for a step-1 slice of x: statically where bounds and dims are known, else
 * from Shape(x) with the bounds clamped as Slice clamps them.
 */
function padBack(c: GradContext, g: string, starts: string, ends: string, axes: number[]): string {
  const { e } = c
  const x = c.x[0]
  const rank = e.needRank(x, c.node)
  const norm = axes.map(a => normalise(a, rank))
  const s = e.known(starts), en = e.known(ends), dims = e.info(x).shape
  const clamp = (v: number, dim: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim)
  if (s && en && dims && norm.every(a => typeof dims[a] === 'number')) {
    const pads = Array(2 * rank).fill(0)
    norm.forEach((a, j) => {
      const dim = dims[a] as number
      pads[a] = clamp(s[j], dim)
      pads[a + rank] = dim - Math.max(clamp(en[j], dim), pads[a])
    })
    return pads.every(p => p === 0) ? g : e.op('Pad', [g, e.ints(pads)])
  }
  const dimsOf = e.op('Gather', [e.cached('Shape', [x]), e.ints(norm)], { axis: 0 })
  const bound = (value: string) => {
    const v = e.op('Cast', [value], { to: DataType.INT64 })
    const wrapped = e.op('Where', [e.op('Less', [v, e.typed(0, DataType.INT64)]), e.op('Add', [v, dimsOf]), v])
    return e.op('Min', [e.op('Max', [wrapped, e.typed(0, DataType.INT64)]), dimsOf])
  }
  const begin = bound(starts)
  const after = e.op('Sub', [dimsOf, e.op('Max', [bound(ends), begin])])
  const piece = (values: string, axis: number) => {
    const j = norm.indexOf(axis)
    return j < 0 ? e.ints([0]) : e.op('Gather', [values, e.ints([j])], { axis: 0 })
  }
  const pads = e.op('Concat', [...Array.from({ length: rank }, (_, a) => piece(begin, a)), ...Array.from({ length: rank }, (_, a) => piece(after, a))], { axis: 0 })
  return e.op('Pad', [g, pads])
}

/** Explicit begin/end pads of a Conv, resolving auto_pad from static dims. */
function convPads(c: GradContext, spatial: number, kernel: number[], strides: number[], dilations: number[]): number[] {
  const autoPad = stringAttr(c.node, 'auto_pad', 'NOTSET')
  if (autoPad === 'NOTSET') return intsAttr(c.node, 'pads') ?? Array(2 * spatial).fill(0)
  if (autoPad === 'VALID') return Array(2 * spatial).fill(0)
  // at stride 1 the pads do not depend on the input's size
  const dims = strides.every(s => s === 1) ? kernel.map(() => 1) : c.e.needDims(c.x[0], c.node, `auto_pad ${autoPad}`).slice(2)
  const pads = Array(2 * spatial).fill(0)
  dims.forEach((d, i) => {
    const total = Math.max((Math.ceil(d / strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - d, 0)
    const small = Math.floor(total / 2)
    pads[i] = autoPad === 'SAME_UPPER' ? small : total - small
    pads[i + spatial] = total - pads[i]
  })
  return pads
}

/**
 * The Conv weight [O, I/group, k…] as the weight of its adjoint Conv, [I, O/group, k…]: in and out channels
 * swapped within each group. Constant: onnxruntime folds it (and the Slices below) when the session loads.
 */
function swappedWeight(e: Emitter, w: string, [outputs, inputsPerGroup]: number[], group: number, kernel: number[]): string {
  const axes = kernel.map((_, i) => i + 2)
  // depthwise (one input and one output channel per group): nothing to swap
  if (inputsPerGroup === 1 && outputs === group) return w
  if (group === 1) return e.op('Transpose', [w], { perm: [1, 0, ...axes] })
  return e.op('Reshape', [e.op('Transpose', [e.op('Reshape', [w, e.ints([group, outputs / group, inputsPerGroup, ...kernel])])], { perm: [0, 2, 1, ...axes.map(a => a + 1)] }), e.ints([group * inputsPerGroup, outputs / group, ...kernel])])
}

/**
 * dX of a Conv as Convs of g, never a ConvTranspose: onnxruntime's ConvTranspose runs one GEMM per group and
 * a col2im (the strided convs' gradients were 20–60% of ResNets' gradient time, npm run oracle), its Conv
 * has direct depthwise and blocked kernels.
 * - stride 1: one Conv with the kernel flipped, padded by the kernel's span less the forward pads.
 * - stride s (dilation 1): polyphase. Along an axis, dx[s·m + r] = Σ_t g[m + c − t]·w[s·t + κ] with
 *   κ = (r + p) mod s, c = ⌊(r + p)/s⌋ (p the begin pad): for each phase r, a stride-1 Conv of g with the taps
 *   κ, κ+s, … flipped, begin pad T−1−c (T taps), ⌈X/s⌉ outputs; the phases (zero where a phase has no taps)
 *   interleaved and cut to x's size. The Convs together cost what the forward Conv costs; faster than
 *   ConvTranspose for ungrouped Convs from 16 channels of x and a kernel at least the stride.
 * Undefined where neither applies (pads wider than the span, dilated strides, unknown shapes).
 */
function convAsConvs(c: GradContext, kernel: number[], group: number): string | undefined {
  const { e } = c
  const w = c.x[1]
  const shape = e.info(w).shape
  const spatial = kernel.length
  const strides = intsAttr(c.node, 'strides') ?? Array(spatial).fill(1)
  const dilations = intsAttr(c.node, 'dilations') ?? Array(spatial).fill(1)
  if (!shape || !shape.every(d => typeof d === 'number')) return undefined
  const pads = convPads(c, spatial, kernel, strides, dilations)
  const axes = kernel.map((_, i) => i + 2)
  const swapped = swappedWeight(e, w, shape as number[], group, kernel)
  if (strides.every(s => s === 1)) {
    const flippedPads = pads.map((p, i) => dilations[i % spatial] * (kernel[i % spatial] - 1) - p)
    if (flippedPads.some(p => p < 0)) return undefined
    const flipped = e.op('Slice', [swapped, e.ints(axes.map(() => -1)), e.ints(axes.map(() => -INT_MAX)), e.ints(axes), e.ints(axes.map(() => -1))])
    return e.op('Conv', [c.g, flipped], { pads: flippedPads, dilations, group, kernel_shape: kernel })
  }
  const xDims = e.info(c.x[0]).shape?.slice(2), gDims = e.info(c.y[0]).shape?.slice(2)
  const channels = shape[1] as number
  // measured (npm run oracle): onnxruntime pads a Conv's outputs to its channel block (16), so a 3-channel dx
  // (a stem) costs 5× its work; a kernel under its stride leaves phases empty (1×1 stride-2 shortcuts), where
  // ConvTranspose's one GEMM is faster; grouped phases were slower (RegNet, ResNeXt), depthwise even
  if (group !== 1 || channels < MIN_PHASE_CHANNELS || kernel.some((k, i) => k < strides[i]) || dilations.some(d => d !== 1) || !xDims?.every(d => typeof d === 'number') || !gDims?.every(d => typeof d === 'number')) return undefined
  // per axis and phase: the first tap κ, the tap count T and the Conv's pads
  const phasesOf = (a: number) => Array.from({ length: strides[a] }, (_, r) => {
    const s = strides[a], k = kernel[a], p = pads[a]
    const first = (r + p) % s, taps = Math.ceil((k - first) / s)
    const begin = taps - 1 - Math.floor((r + p) / s)
    return { first, taps, begin, end: Math.ceil((xDims[a] as number) / s) + taps - 1 - (gDims[a] as number) - begin }
  })
  const perAxis = kernel.map((_, a) => phasesOf(a))
  if (perAxis.some(phases => phases.some(ph => ph.begin < 0 || ph.end < 0))) return undefined
  // every combination of one phase per axis, the first axis slowest
  const combinations = perAxis.reduce<(typeof perAxis)[0][]>((all, phases) => all.flatMap(done => phases.map(ph => [...done, ph])), [[]])
  const convs = combinations.map(phase => {
    // the phase's taps, last first
    const taps = e.op('Slice', [swapped, e.ints(phase.map((ph, a) => ph.first + (ph.taps - 1) * strides[a])), e.ints(phase.map(ph => (ph.first === 0 ? -INT_MAX : ph.first - 1))), e.ints(axes), e.ints(strides.map(s => -s))])
    return e.op('Conv', [c.g, taps], { pads: [...phase.map(ph => ph.begin), ...phase.map(ph => ph.end)], group, kernel_shape: phase.map(ph => ph.taps) })
  })
  const counts = strides.map((s, a) => Math.ceil((xDims[a] as number) / s))
  // [N, s₁…sₙ, C, M₁…Mₙ] → [N, C, M₁, s₁, …, Mₙ, sₙ] → [N, C, M₁s₁, …], cut to x's size; in 2-D with equal
  // strides DepthToSpace does it (the same order of phases), faster than onnxruntime's 6-D Transpose
  const phases = e.op('Concat', convs, { axis: 1 })
  const perm = [0, spatial + 1, ...axes.flatMap((_, i) => [spatial + 2 + i, 1 + i])]
  const interleaved = spatial === 2 && strides[0] === strides[1] ? e.op('DepthToSpace', [phases], { blocksize: strides[0], mode: 'DCR' })
    : e.op('Reshape', [e.op('Transpose', [e.op('Reshape', [phases, e.ints([0, ...strides, channels, ...counts])])], { perm }), e.ints([0, channels, ...counts.map((m, i) => m * strides[i])])])
  const exact = counts.every((m, i) => m * strides[i] === xDims[i])
  return exact ? interleaved : e.op('Slice', [interleaved, e.ints(axes.map(() => 0)), e.ints(xDims as number[]), e.ints(axes)])
}

/**
 * dX of a strided 2-D depthwise Conv (equal strides s, undilated) as a stride-1 depthwise Conv of g spread out
 * with zeros: g concatenated with s² − 1 zero copies along channels, DepthToSpace puts g at every s-th position
 * (u[s·i] = g[i]), and dx[m] = Σ_t u[m + p − t]·w[t] is the flipped kernel's Conv of u with begin pad k − 1 − p.
 * onnxruntime runs a depthwise ConvTranspose as one small GEMM and col2im per channel; timed alone (1 thread, 16–336
 * channels), the spread form is faster where that per-channel overhead dominates: 5×5 kernels (0.3–0.8× its time,
 * once 1.1×), smaller ones with g of at most 16 positions (3×3 at 4×4: 0.85–0.9×); slower beyond (1.5–1.7× at 8×8).
 * Undefined elsewhere.
 */
function depthwiseSpread(c: GradContext, kernel: number[], group: number): string | undefined {
  const { e } = c
  const w = c.x[1]
  const strides = intsAttr(c.node, 'strides') ?? [1, 1]
  const dilations = intsAttr(c.node, 'dilations') ?? [1, 1]
  const xDims = e.info(c.x[0]).shape, gDims = e.info(c.y[0]).shape, wDims = e.info(w).shape
  if (kernel.length !== 2 || strides[0] !== strides[1] || strides[0] < 2 || dilations.some(d => d !== 1)) return undefined
  if (!xDims?.every(d => typeof d === 'number') || !gDims?.every(d => typeof d === 'number') || wDims?.[0] !== group || wDims[1] !== 1 || xDims[1] !== group) return undefined
  const [batch, channels, ...spatial] = xDims as number[], [, , ...gSpatial] = gDims as number[]
  const s = strides[0]
  if (!(kernel[0] * kernel[1] >= 25 || gSpatial[0] * gSpatial[1] <= 16)) return undefined
  const pads = convPads(c, 2, kernel, strides, dilations)
  const begin = kernel.map((k, a) => k - 1 - pads[a]), end = spatial.map((x, a) => x - s * gSpatial[a] + pads[a])
  if ([...begin, ...end].some(p => p < 0)) return undefined
  const zeros = e.op('ConstantOfShape', [e.ints([batch, (s * s - 1) * channels, ...gSpatial])], { value: tensor('zero', dtypeName(e.dtype(w)), [1], [0]) })
  const spread = e.op('DepthToSpace', [e.op('Concat', [c.g, zeros], { axis: 1 })], { blocksize: s, mode: 'DCR' })
  const flipped = e.op('Slice', [w, e.ints([-1, -1]), e.ints([-INT_MAX, -INT_MAX]), e.ints([2, 3]), e.ints([-1, -1])])
  return e.op('Conv', [spread, flipped], { group, pads: [...begin, ...end], kernel_shape: kernel })
}

/**
 * ConvTranspose(g, w) inverting the geometry of c.node (a Conv or a pool):
 * output padding restores the sizes the stride floored; with symbolic sizes, the largest output padding and
 * a Slice back to x's spatial size.
 */
function transposedConv(c: GradContext, g: string, w: string, kernel: number[], group: number): string {
  const { e } = c
  const x = c.x[0]
  const rank = e.needRank(x, c.node)
  const spatial = rank - 2
  const strides = intsAttr(c.node, 'strides') ?? Array(spatial).fill(1)
  const dilations = intsAttr(c.node, 'dilations') ?? Array(spatial).fill(1)
  const pads = convPads(c, spatial, kernel, strides, dilations)
  const dims = [...(e.info(x).shape ?? []).slice(2), ...(e.info(c.y[0]).shape ?? []).slice(2)]
  const staticDims = dims.length === 2 * spatial && dims.every(d => typeof d === 'number')
  // the part of x the windows did not reach (negative: ceil_mode windows reached past x)
  const missed = strides.map((s, i) => {
    if (!staticDims) return s - 1
    const span = dilations[i] * (kernel[i] - 1) + 1
    return (dims[i] as number) - (s * ((dims[i + spatial] as number) - 1) + span - pads[i] - pads[i + spatial])
  })
  const outputPadding = missed.map((m, i) => (m >= 0 && m < strides[i] ? m : strides[i] - 1))
  const dx = e.op('ConvTranspose', [g, w], { strides, pads, dilations, group, kernel_shape: kernel, output_padding: outputPadding })
  const exact = staticDims ? missed.every((m, i) => m >= 0 && m < strides[i]) : strides.every(s => s === 1) && intAttr(c.node, 'ceil_mode', 0) === 0
  if (exact) return dx
  const ends = e.op('Slice', [e.cached('Shape', [x]), e.ints([2]), e.ints([rank])])
  return e.op('Slice', [dx, e.ints(Array(spatial).fill(0)), ends, e.ints([...Array(spatial).keys()].map(i => i + 2))])
}

/**
 * What an AveragePool divides each window by, shaped [1, 1, ...y's spatial dims]: the window's positions inside x,
 * plus those in the pads with count_include_pad. A ceil_mode window reaching past the pads counts only what it
 * covers (as torch and onnxruntime divide): a strided sum over ones padded with 1 (counted pads) or 0, then
 * with stride − 1 zeros at the end so the floor-mode sum reaches the ceil-mode windows, cut to y's size.
 */
function windowSizes(c: GradContext, kernel: number[], strides: number[], dilations: number[], pads: number[], countPads: boolean, ceil: boolean): string {
  const { e } = c
  const [x, y] = [c.x[0], c.y[0]]
  const rank = kernel.length + 2
  const spatial = (v: string) => {
    const dims = e.info(v).shape?.slice(2)
    return dims && dims.every(d => typeof d === 'number') ? e.ints(dims as number[]) : e.op('Slice', [e.cached('Shape', [v]), e.ints([2]), e.ints([rank])])
  }
  const zeros = Array(kernel.length).fill(0)
  const one = tensor('one', dtypeName(e.dtype(x)), [1], [1])
  const inside = e.op('ConstantOfShape', [e.op('Concat', [e.ints([1, 1]), spatial(x)], { axis: 0 })], { value: one })
  let counted = e.op('Pad', [inside, e.ints([0, 0, ...pads.slice(0, kernel.length), 0, 0, ...pads.slice(kernel.length)]), e.scalar(countPads ? 1 : 0, x)])
  if (ceil) counted = e.op('Pad', [counted, e.ints([0, 0, ...zeros, 0, 0, ...strides.map(s => s - 1)])])
  const kernelOnes = e.typed(Array(kernel.reduce((a, b) => a * b, 1)).fill(1), e.dtype(x), [1, 1, ...kernel])
  const sums = e.op('Conv', [counted, kernelOnes], { strides, dilations })
  return ceil ? e.op('Slice', [sums, e.ints(zeros), spatial(y), e.ints(kernel.map((_, i) => i + 2))]) : sums
}

/** Separable resize as a matrix along one axis: resize an identity the same way and read off [in, out]. */
function resizeMatrix(c: GradContext, axis: 2 | 3): string {
  const { e, node } = c
  const [x, roi, scales, sizes] = c.x
  const n = e.op('Gather', [e.cached('Shape', [x]), e.ints([axis])], { axis: 0 })
  const eye = e.op('EyeLike', [e.op('ConstantOfShape', [e.op('Concat', [n, n], { axis: 0 })], { value: tensor('zero', dtypeName(e.dtype(x)), [1], [0]) })])
  const one = e.ints([1])
  const layout = axis === 2 ? [n, one, n, one] : [n, one, one, n]
  const basis = e.op('Reshape', [eye, e.op('Concat', layout, { axis: 0 })])
  const attrs = (node.attribute ?? []).filter(a => a.name !== 'axes') as AttributeProto[]
  let resized: string
  if (sizes) {
    const out = e.op('Gather', [sizes, e.ints([axis])], { axis: 0 })
    resized = e.nodeWith('Resize', [basis, roi ?? '', '', e.op('Concat', axis === 2 ? [n, one, out, one] : [n, one, one, out], { axis: 0 })], attrs)[0]
  } else {
    const factor = e.op('Gather', [scales, e.ints([axis])], { axis: 0 })
    const unit = e.typed([1], DataType.FLOAT)
    resized = e.nodeWith('Resize', [basis, roi ?? '', e.op('Concat', axis === 2 ? [unit, unit, factor, unit] : [unit, unit, unit, factor], { axis: 0 })], attrs)[0]
  }
  return e.op('Reshape', [resized, e.op('Concat', [n, e.ints([-1])], { axis: 0 })])
}

/**
 * g·p·xᵖ⁻¹, the gradient of xᵖ; for a known scalar p of 1 or 2 (LPIPS's squares) without a Pow, which onnxruntime
 * runs as a generic pow per element (Pow(x, 1) was 14% of AlexNet-LPIPS's gradient graph, npm run oracle -- --profile).
 */
function powerGradient(e: Emitter, g: string, x: string, p: string): string {
  const exponent = e.floatValues(p)
  const scalar = exponent?.length === 1 ? exponent[0] : undefined
  if (scalar === 1) return g
  if (scalar === 2) return e.op('Mul', [g, e.op('Add', [x, x])])
  return e.op('Mul', [g, e.op('Mul', [p, e.op('Pow', [x, e.op('Sub', [p, e.scalar(1, p)])])])])
}

/**
 * 1 where y is above (or below) a known bound b, else 0, as HardSigmoid(y) = clamp(α·(y − b), 0, 1) with α a power
 * of two large enough that the nearest float to b beyond it gives ≥ 1 (y − b is exact there, Sterbenz): a float
 * mask that onnxruntime keeps in its blocked NCHWc layout, with a Mul, where Greater and Where each cost a reorder
 * out of and back into it around every ReLU after a Conv. Exact for every float y except, for b = 0, subnormals
 * below 2⁻¹²⁷ (the mask is α·y there). Undefined where b is unknown or too large or small for such an α.
 */
function insideMask(e: Emitter, y: string, b: number | undefined, side: 'above' | 'below'): string | undefined {
  if (b === undefined || !Number.isFinite(b) || e.dtype(y) !== DataType.FLOAT) return undefined
  // ulp(b) = 2^(⌊log2 |b|⌋ − 23); α·ulp(b) ≥ 2 and α·|b| < 2¹²⁷ keep α·(y − b) finite and past 1 one float away
  const exponent = b === 0 ? 127 : 24 - Math.floor(Math.log2(Math.abs(b)))
  if (exponent > 127 || (b !== 0 && exponent + Math.log2(Math.abs(b)) >= 127)) return undefined
  const alpha = 2 ** exponent
  return side === 'above'
    ? e.op('HardSigmoid', [y], { alpha: float(alpha), beta: float(-alpha * b) })
    : e.op('HardSigmoid', [y], { alpha: float(-alpha), beta: float(alpha * b) })
}

/**
 * Y = A·B (Y is c.y[0], its gradient c.g): dA = dY·Bᵀ, dB = Aᵀ·dY, shaped with Y's batch dims (the walk sums broadcast
 * ones). A 2-D B (a Linear's weight) is read by a Gemm with transB, dY flattened to 2-D and the result reshaped
 * (views): a Transpose of a weight would be constant-folded by onnxruntime at every load, into a second copy of it.
 * Where dY is such a reshaped Gemm (LoRA's up then down), fold.ts reads the Gemm in 2-D without the Reshape and Flatten.
 */
function matMulBackward(c: GradContext, a: string, b: string, needs: boolean[]): (string | undefined)[] {
  const { e } = c
  const ra = e.needRank(a, c.node), rb = e.needRank(b, c.node)
  if (ra < 2 || rb < 2) throw new UserError(`autodiff: MatMul node ${c.node.name} has a 1-D operand, which is not supported`)
  const batch = e.info(c.y[0]).shape?.slice(0, -2)
  const transposed = (v: string, rank: number) => e.op('Transpose', [v], { perm: swapLast(rank) })
  const withBatch = (v: string) => batch && [...batch, ...(e.info(v).shape ?? [undefined, undefined]).slice(-2)]
  const gTimesBT = () => {
    if (rb > 2) return e.op('MatMul', [c.g, transposed(b, rb)])
    if (ra === 2) return e.op('Gemm', [c.g, b], { transB: 1 })
    return e.op('Reshape', [e.op('Gemm', [e.cached('Flatten', [c.g], { axis: ra - 1 }), b], { transB: 1 }), e.shape(a)])
  }
  return [
    needs[0] ? shaped(e, gTimesBT(), a, withBatch(a)) : undefined,
    needs[1] ? shaped(e, e.op('MatMul', [transposed(a, ra), c.g]), b, withBatch(b)) : undefined,
  ]
}

/** A Gather's index where it is one known scalar (the class token), else undefined. */
function oneIndex(node: NodeProto, infos: Map<string, Info>): number | undefined {
  const info = infos.get(node.input[1])
  return info?.shape?.length === 0 && info.value?.length === 1 && typeof info.value[0] === 'number' ? info.value[0] : undefined
}

/** Whether a pool's windows share positions (kernel span beyond the stride on some axis). */
function windowsOverlap(node: NodeProto): boolean {
  const kernel = intsAttr(node, 'kernel_shape') ?? []
  const strides = intsAttr(node, 'strides') ?? kernel.map(() => 1)
  const dilations = intsAttr(node, 'dilations') ?? kernel.map(() => 1)
  return kernel.some((k, i) => (k - 1) * dilations[i] + 1 > strides[i])
}

/**
 * The opset a rule's gradient needs, where it is later than 13: ScatterElements adds up duplicate indices
 * (overlapping pool windows, repeated gathers, pad copies) from opset 16 on. autodiff.ts raises the gradient model's opset to it where no op in the model changed
 * meaning in between.
 */
export const opsetNeeded: Record<string, (node: NodeProto, infos: Map<string, Info>) => number> = {
  MaxPool: node => (windowsOverlap(node) ? 16 : 13),
  Gather: (node, infos) => (oneIndex(node, infos) === undefined ? 16 : 13),
  GatherElements: () => 16,
  Pad: node => (['reflect', 'edge'].includes(stringAttr(node, 'mode', 'constant')) ? 16 : 13),
}

export const gradients: Record<string, GradRule> = {
  Identity: c => [c.g],
  Dropout: c => [c.g],
  Cast: c => [c.e.op('Cast', [c.g], { to: c.e.dtype(c.x[0]) })],
  CastLike: c => [c.e.op('Cast', [c.g], { to: c.e.dtype(c.x[0]) })],
  Neg: c => [c.e.op('Neg', [c.g])],
  Abs: chain((e, x) => e.op('Sign', [x])),
  Relu: c => {
    const mask = insideMask(c.e, c.y[0], 0, 'above')
    return [mask ? c.e.op('Mul', [c.g, mask]) : c.e.op('Where', [c.e.op('Greater', [c.y[0], c.e.scalar(0, c.x[0])]), c.g, c.e.scalar(0, c.x[0])])]
  },
  LeakyRelu: c => [c.e.op('Where', [c.e.op('Greater', [c.x[0], c.e.scalar(0, c.x[0])]), c.g, c.e.op('Mul', [c.g, c.e.scalar(floatAttr(c.node, 'alpha', 0.01), c.x[0])])])],
  PRelu: c => {
    only(c, [0], 'slope')
    return [c.e.op('Where', [c.e.op('Greater', [c.x[0], c.e.scalar(0, c.x[0])]), c.g, c.e.op('Mul', [c.g, c.x[1]])])]
  },
  Sigmoid: chain((e, _, y) => e.op('Mul', [y, e.op('Sub', [e.scalar(1, y), y])])),
  Tanh: chain((e, _, y) => e.op('Sub', [e.scalar(1, y), e.op('Mul', [y, y])])),
  Exp: chain((_, __, y) => y),
  Log: c => [c.e.op('Div', [c.g, c.x[0]])],
  Sqrt: c => [c.e.op('Div', [c.e.op('Mul', [c.g, c.e.scalar(0.5, c.x[0])]), c.y[0]])],
  Reciprocal: c => [c.e.op('Neg', [c.e.op('Mul', [c.g, c.e.op('Mul', [c.y[0], c.y[0]])])])],
  Sin: chain((e, x) => e.op('Cos', [x])),
  Cos: chain((e, x) => e.op('Neg', [e.op('Sin', [x])])),
  Erf: chain((e, x) => e.op('Mul', [e.scalar(2 / Math.sqrt(Math.PI), x), e.op('Exp', [e.op('Neg', [e.op('Mul', [x, x])])])])),
  Softplus: chain((e, x) => e.op('Sigmoid', [x])),
  // exact GELU: Φ(x) + x·φ(x)
  Gelu: c => {
    if (stringAttr(c.node, 'approximate', 'none') !== 'none') refuse(c, 'its input with approximate=tanh')
    return chain((e, x) => {
      const cdf = e.op('Mul', [e.scalar(0.5, x), e.op('Add', [e.scalar(1, x), e.op('Erf', [e.op('Mul', [x, e.scalar(Math.SQRT1_2, x)])])])])
      const pdf = e.op('Mul', [e.scalar(1 / Math.sqrt(2 * Math.PI), x), e.op('Exp', [e.op('Mul', [e.op('Mul', [x, x]), e.scalar(-0.5, x)])])])
      return e.op('Add', [cdf, e.op('Mul', [x, pdf])])
    })(c)
  },
  // hard sigmoid: α·g where 0 < αx + β < 1 (y strictly inside its clamp)
  HardSigmoid: c => {
    const { e } = c
    const y = c.y[0]
    const inside = e.op('And', [e.op('Greater', [y, e.scalar(0, y)]), e.op('Less', [y, e.scalar(1, y)])])
    return [e.op('Where', [inside, e.op('Mul', [c.g, e.scalar(floatAttr(c.node, 'alpha', 0.2), y)]), e.scalar(0, y)])]
  },
  // x·relu6(x + 3)/6: 0 below −3, g·(x/3 + ½) up to 3, g above (torch's hardswish_backward)
  HardSwish: c => {
    const { e } = c
    const x = c.x[0]
    const ramp = e.op('Mul', [c.g, e.op('Add', [e.op('Mul', [x, e.scalar(1 / 3, x)]), e.scalar(0.5, x)])])
    return [e.op('Where', [e.op('Less', [x, e.scalar(-3, x)]), e.scalar(0, x), e.op('Where', [e.op('LessOrEqual', [x, e.scalar(3, x)]), ramp, c.g])])]
  },
  // piecewise constant (and shape-only) ops: a zero gradient
  Floor: () => [null],
  Ceil: () => [null],
  Round: () => [null],
  Sign: () => [null],
  EyeLike: () => [null],
  RandomNormalLike: () => [null],
  RandomUniformLike: () => [null],
  Clip: c => {
    only(c, [0], 'bounds')
    const [x, low, high] = c.x
    // read from y, so x has no other reader and onnxruntime can fuse the Conv before a ReLU6 into it;
    // strict, as torch's hardtanh backward: y is at a bound for every x past it
    const y = c.y[0]
    const scalarOf = (value: string) => {
      const values = c.e.floatValues(value)
      return values?.length === 1 ? values[0] : undefined
    }
    // HardSigmoid masks where each given bound is a known scalar
    const masks = [low ? insideMask(c.e, y, scalarOf(low), 'above') : '', high ? insideMask(c.e, y, scalarOf(high), 'below') : '']
    if (masks.every(m => m !== undefined)) {
      const given = masks.filter(Boolean) as string[]
      return [given.length ? c.e.op('Mul', [c.g, given.length === 2 ? c.e.op('Mul', given) : given[0]]) : c.g]
    }
    const inside = [low && c.e.op('Greater', [y, low]), high && c.e.op('Less', [y, high])].filter(Boolean) as string[]
    const mask = inside.length === 2 ? c.e.op('And', inside) : inside[0]
    return [mask ? c.e.op('Where', [mask, c.g, c.e.scalar(0, x)]) : c.g]
  },

  // broadcasting arithmetic: each operand's gradient summed over the axes it was broadcast along
  Add: c => [c.g, c.g],
  Sub: c => [c.g, c.needs[1] ? c.e.op('Neg', [c.g]) : undefined],
  Mul: c => [c.needs[0] ? c.e.op('Mul', [c.g, c.x[1]]) : undefined, c.needs[1] ? c.e.op('Mul', [c.g, c.x[0]]) : undefined],
  Div: c => [
    c.needs[0] ? c.e.op('Div', [c.g, c.x[1]]) : undefined,
    c.needs[1] ? c.e.op('Neg', [c.e.op('Div', [c.e.op('Mul', [c.g, c.y[0]]), c.x[1]])]) : undefined,
  ],
  Pow: c => {
    const { e } = c
    const [x, p] = c.x
    return [
      c.needs[0] ? powerGradient(e, c.g, x, p) : undefined,
      c.needs[1] ? e.op('Mul', [c.g, e.op('Mul', [c.y[0], e.op('Log', [x])])]) : undefined,
    ]
  },
  Sum: c => c.x.map(() => c.g),
  Mean: c => c.x.map(x => c.e.op('Mul', [c.g, c.e.scalar(1 / c.x.length, x)])),
  Max: c => tiedExtremes(c),
  Min: c => tiedExtremes(c),
  Where: c => [
    undefined,
    c.needs[1] ? c.e.op('Where', [c.x[0], c.g, c.e.scalar(0, c.x[1])]) : undefined,
    c.needs[2] ? c.e.op('Where', [c.x[0], c.e.scalar(0, c.x[2]), c.g]) : undefined,
  ],
  Expand: c => [c.g],
  // g as [r₀, d₀, r₁, d₁, …] (repeats beside x's dims), summed over the repeats
  Tile: c => {
    only(c, [0], 'its repeats')
    const { e } = c
    const [x, repeats] = c.x
    const rank = e.needRank(x, c.node)
    const column = (v: string) => e.op('Unsqueeze', [v, e.ints([1])])
    const interleaved = e.op('Reshape', [e.op('Concat', [column(repeats), column(e.shape(x))], { axis: 1 }), e.ints([-1])])
    return [e.reduceSum(e.op('Reshape', [c.g, interleaved]), [...Array(rank).keys()].map(i => 2 * i), false)]
  },

  MatMul: c => matMulBackward(c, c.x[0], c.x[1], c.needs),
  // Y = α·op(A)·op(B) + β·C
  Gemm: c => {
    const { e } = c
    const [a, b, cc] = c.x
    const alpha = floatAttr(c.node, 'alpha', 1), beta = floatAttr(c.node, 'beta', 1)
    const tA = intAttr(c.node, 'transA', 0), tB = intAttr(c.node, 'transB', 0)
    const gemm = (p: string, q: string, transA: number, transB: number) => e.op('Gemm', [p, q], { transA, transB, alpha: float(alpha) })
    const dA = !c.needs[0] ? undefined : tA ? gemm(b, c.g, tB, 1) : gemm(c.g, b, 0, tB ? 0 : 1)
    const dB = !c.needs[1] ? undefined : tB ? gemm(c.g, a, 1, tA) : gemm(a, c.g, tA ? 0 : 1, 0)
    const dC = cc && c.needs[2] ? (beta === 1 ? c.g : e.op('Mul', [c.g, e.scalar(beta, cc)])) : undefined
    return [dA, dB, dC]
  },
  // dX: the adjoint Conv(s) of g (faster in onnxruntime), a strided depthwise one's spread g, else ConvTranspose(dY, W) with the forward conv's geometry
  Conv: c => {
    only(c, [0], 'weights')
    const kernel = intsAttr(c.node, 'kernel_shape') ?? (c.e.info(c.x[1]).shape?.slice(2) as number[])
    const group = intAttr(c.node, 'group', 1)
    return [convAsConvs(c, kernel, group) ?? depthwiseSpread(c, kernel, group) ?? transposedConv(c, c.g, c.x[1], kernel, group)]
  },
  // the transposed conv of g / (each window's divisor) with a ones kernel, one channel at a time
  AveragePool: c => {
    const { e } = c
    const x = c.x[0]
    const rank = e.needRank(x, c.node)
    const kernel = intsAttr(c.node, 'kernel_shape')!
    const strides = intsAttr(c.node, 'strides') ?? kernel.map(() => 1)
    const dilations = intsAttr(c.node, 'dilations') ?? kernel.map(() => 1)
    const pads = convPads(c, rank - 2, kernel, strides, dilations)
    const ceil = intAttr(c.node, 'ceil_mode', 0) === 1
    const countPads = intAttr(c.node, 'count_include_pad', 0) === 1
    const divisor = ceil || (!countPads && pads.some(p => p > 0))
      ? windowSizes(c, kernel, strides, dilations, pads, countPads, ceil)
      : e.scalar(kernel.reduce((a, b) => a * b, 1), x)
    const perChannel = e.op('Reshape', [e.op('Div', [c.g, divisor]), e.ints([-1, 1, ...Array(rank - 2).fill(0)])])
    const ones = e.typed(Array(kernel.reduce((a, b) => a * b, 1)).fill(1), e.dtype(x), [1, 1, ...kernel])
    const spread = transposedConv(c, perChannel, ones, kernel, 1)
    return [e.op('Reshape', [spread, e.shape(x)])]
  },
  ConvTranspose: c => {
    only(c, [0], 'weights')
    if (intsAttr(c.node, 'output_shape') || stringAttr(c.node, 'auto_pad', 'NOTSET') !== 'NOTSET') refuse(c, 'its input with output_shape or auto_pad')
    const spatial = c.e.needRank(c.x[0], c.node) - 2
    const attrs = {
      strides: intsAttr(c.node, 'strides') ?? Array(spatial).fill(1),
      pads: intsAttr(c.node, 'pads') ?? Array(2 * spatial).fill(0),
      dilations: intsAttr(c.node, 'dilations') ?? Array(spatial).fill(1),
      group: intAttr(c.node, 'group', 1),
    }
    return [c.e.op('Conv', [c.g, c.x[1]], attrs)]
  },

  // softmax: y·(g − Σ y·g)
  Softmax: c => {
    const { e } = c
    const y = c.y[0]
    const axis = intAttr(c.node, 'axis', -1)
    return [e.op('Mul', [e.op('Sub', [c.g, e.reduceSum(e.op('Mul', [y, c.g]), [axis], true)]), y])]
  },
  /**
   * The fused O = softmax(S)·V (grad-rewrites.ts), P the probabilities: the row sums Σ_j P·dP, dP = dO·Vᵀ,
   * equal Σ_d dO·O (a sum over the head dim, as FlashAttention's backward computes them), and dP − rowsums
   * comes out of one matmul of augmented operands, [dO, −rowsums]·[V, 1]ᵀ: no full-size Sub, one full-size
   * temporary fewer. dV = Pᵀ·dO as for any MatMul.
   */
  AttentionCore: c => {
    const { e } = c
    const [, v] = c.x
    const [o, p] = c.y
    const rank = e.needRank(v, c.node)
    const dV = matMulBackward(c, p, v, [false, c.needs[1]])[1]
    const rowSums = e.reduceSum(e.op('Mul', [c.g, o]), [-1], true)
    const onesShape = e.op('Concat', [e.op('Slice', [e.cached('Shape', [v]), e.ints([0]), e.ints([-1])]), e.ints([1])], { axis: 0 })
    const ones = e.op('ConstantOfShape', [onesShape], { value: tensor('one', dtypeName(e.dtype(v)), [1], [1]) })
    const vAugmented = e.op('Transpose', [e.op('Concat', [v, ones], { axis: -1 })], { perm: swapLast(rank) })
    const dS = c.needs[0] ? e.op('Mul', [e.op('MatMul', [e.op('Concat', [c.g, e.op('Neg', [rowSums])], { axis: -1 }), vAugmented]), p]) : undefined
    return [dS, dV]
  },
  // the fused y = x·s, s = sigmoid(x) (grad-rewrites.ts): dy/dx = s + x·s·(1 − s) = s + y·(1 − s), four passes
  SiLU: c => {
    const { e } = c
    const [y, s] = c.y
    return [e.op('Mul', [c.g, e.op('Add', [s, e.op('Mul', [y, e.op('Sub', [e.scalar(1, s), s])])])])]
  },
  // the fused y = ½·x·(erf(u) + 1), u = x/√2 (grad-rewrites.ts): dy/dx = ½·((erf(u) + 1) + u·(2/√π)·exp(−u²)),
  // the constant 2/√π inside the exponent
  ErfGelu: c => {
    const { e } = c
    const [, a, u] = c.y
    const slope = e.op('Exp', [e.op('Sub', [e.scalar(Math.log(2 / Math.sqrt(Math.PI)), u), e.op('Mul', [u, u])])])
    return [e.op('Mul', [e.op('Mul', [c.g, e.op('Add', [a, e.op('Mul', [u, slope])])]), e.scalar(0.5, u)])]
  },
  LogSoftmax: c => {
    const { e } = c
    const axis = intAttr(c.node, 'axis', -1)
    return [e.op('Sub', [c.g, e.op('Mul', [e.op('Exp', [c.y[0]]), e.reduceSum(c.g, [axis], true)])])]
  },

  /**
   * loss_i = −w_i·log p_i[label_i], w_i = weights[label_i] (1 without weights, 0 at ignore_index), summed,
   * averaged over Σ w_i, or per element: d/d scores = coefficient_i·(p − onehot(label)), plus the log_prob
   * output's own LogSoftmax backward where it flows on.
   */
  SoftmaxCrossEntropyLoss: c => {
    only(c, [0], 'its labels or weights')
    const { e } = c
    const [scores, labels, weights] = c.x
    const dtype = e.dtype(scores)
    const rank = e.needRank(scores, c.node)
    const logProb = e.forwardOutput(c.node, 1)
    const probabilities = e.op('Exp', [logProb])
    const parts: string[] = []
    if (c.dy[0]) {
      const target = e.op('Cast', [labels], { to: DataType.INT64 })
      const classes = e.op('Range', [e.typed(0, DataType.INT64), e.op('Gather', [e.cached('Shape', [scores]), e.typed(1, DataType.INT64)], { axis: 0 }), e.typed(1, DataType.INT64)])
      const oneHot = e.op('Cast', [e.op('Equal', [e.op('Unsqueeze', [target, e.ints([1])]), e.op('Reshape', [classes, e.ints([1, -1, ...Array(rank - 2).fill(1)])])])], { to: dtype })
      const ignored = attrOf(c.node, 'ignore_index') ? intAttr(c.node, 'ignore_index', 0) : undefined
      const kept = ignored === undefined ? undefined : e.op('Not', [e.op('Equal', [target, e.typed(ignored, DataType.INT64)])])
      let weight = weights ? e.op('Gather', [weights, kept ? e.op('Where', [kept, target, e.typed(0, DataType.INT64)]) : target], { axis: 0 }) : undefined
      if (kept) weight = weight ? e.op('Where', [kept, weight, e.scalar(0, scores)]) : e.op('Cast', [kept], { to: dtype })
      const reduction = stringAttr(c.node, 'reduction', 'mean')
      let coefficient = weight ? e.op('Mul', [c.g, weight]) : c.g
      if (reduction === 'mean') coefficient = e.op('Div', [coefficient, weight ? e.op('ReduceSum', [weight], { keepdims: 0 }) : e.op('Cast', [e.op('Size', [labels])], { to: dtype })])
      if (weight || reduction === 'none') coefficient = e.op('Unsqueeze', [coefficient, e.ints([1])])
      parts.push(e.op('Mul', [coefficient, e.op('Sub', [probabilities, oneHot])]))
    }
    if (c.dy[1]) parts.push(e.op('Sub', [c.dy[1], e.op('Mul', [probabilities, e.reduceSum(c.dy[1], [1], true)])]))
    return [parts.length === 1 ? parts[0] : e.op('Add', parts)]
  },

  ReduceSum: c => [reduceIsIdentity(c) ? c.g : c.e.op('Expand', [unreduce(c, c.g), c.e.shape(c.x[0])])],
  ReduceMean: c => [reduceIsIdentity(c) ? c.g : c.e.op('Expand', [c.e.op('Mul', [unreduce(c, c.g), reducedFraction(c.e, c.x[0], c.y[0])]), c.e.shape(c.x[0])])],
  ReduceSumSquare: c => [c.e.op('Mul', [unreduce(c, c.g), c.e.op('Mul', [c.x[0], c.e.scalar(2, c.x[0])])])],
  ReduceL2: c => [c.e.op('Mul', [c.e.op('Div', [unreduce(c, c.g), unreduce(c, c.y[0])]), c.x[0]])],
  ReduceMax: c => [tiedReduction(c)],
  ReduceMin: c => [tiedReduction(c)],
  // log Σ exp x: g·exp(x − y), the softmax over the reduced axes
  ReduceLogSumExp: c => [reduceIsIdentity(c) ? c.g : c.e.op('Mul', [unreduce(c, c.g), c.e.op('Exp', [c.e.op('Sub', [c.x[0], unreduce(c, c.y[0])])])])],
  // the adjoint of a running sum runs the other way (exclusive stays exclusive)
  CumSum: c => {
    only(c, [0], 'its axis')
    return [c.e.op('CumSum', [c.g, c.x[1]], { exclusive: intAttr(c.node, 'exclusive', 0), reverse: 1 - intAttr(c.node, 'reverse', 0) })]
  },
  GlobalAveragePool: c => [c.e.op('Expand', [c.e.op('Mul', [c.g, reducedFraction(c.e, c.x[0], c.y[0])]), c.e.shape(c.x[0])])],

  // pure data movement
  Reshape: c => [c.e.op('Reshape', [c.g, c.e.shape(c.x[0])])],
  Flatten: c => [c.e.op('Reshape', [c.g, c.e.shape(c.x[0])])],
  Squeeze: c => [c.e.op('Reshape', [c.g, c.e.shape(c.x[0])])],
  Unsqueeze: c => [c.e.op('Reshape', [c.g, c.e.shape(c.x[0])])],
  Transpose: c => {
    const perm = intsAttr(c.node, 'perm')
    if (!perm) return [c.e.op('Transpose', [c.g])]
    const inverse = Array<number>(perm.length)
    perm.forEach((p, i) => (inverse[p] = i))
    return [c.e.op('Transpose', [c.g], { perm: inverse })]
  },
  Concat: c => {
    const { e } = c
    const axis = intAttr(c.node, 'axis', 0)
    const sizes = c.x.map(x => {
      const shape = e.info(x).shape
      return shape?.[normalise(axis, shape.length)]
    })
    const split = sizes.every(d => typeof d === 'number')
      ? e.ints(sizes as number[])
      : e.op('Concat', c.x.map(x => e.op('Gather', [e.cached('Shape', [x]), e.ints([axis])], { axis: 0 })), { axis: 0 })
    return e.node('Split', [c.g, split], { axis }, c.x.length)
  },
  // pixel_shuffle: SpaceToDepth undoes DCR; CRD's g, as [N, C', H, b, W, b], goes back by transposing
  DepthToSpace: c => {
    const { e } = c
    const b = intAttr(c.node, 'blocksize', 1)
    if (stringAttr(c.node, 'mode', 'DCR') === 'DCR') return [e.op('SpaceToDepth', [c.g], { blocksize: b })]
    const width = e.op('Gather', [e.shape(c.x[0]), e.ints([3])], { axis: 0 })
    const blocks = e.op('Reshape', [c.g, e.op('Concat', [e.ints([0, 0, -1, b]), width, e.ints([b])], { axis: 0 })])
    return [e.op('Reshape', [e.op('Transpose', [blocks], { perm: [0, 1, 3, 5, 2, 4] }), e.shape(c.x[0])])]
  },
  SpaceToDepth: c => [c.e.op('DepthToSpace', [c.g], { blocksize: intAttr(c.node, 'blocksize', 1), mode: 'DCR' })],
  // the values' gradient put back where they came from (indices along the axis are distinct)
  TopK: c => {
    only(c, [0], 'k')
    const { e } = c
    const indices = e.forwardOutput(c.node, 1)
    return [e.op('ScatterElements', [e.zerosLike(c.x[0]), indices, c.g], { axis: intAttr(c.node, 'axis', -1) }), undefined]
  },
  Split: c => [c.e.op('Concat', c.y.map((y, i) => c.dy[i] ?? c.e.zerosLike(y)), { axis: intAttr(c.node, 'axis', 0) })],
  Slice: c => {
    only(c, [0], 'its bounds')
    const { e } = c
    const [, starts, ends, axesInput, stepsInput] = c.x
    const steps = stepsInput ? e.known(stepsInput) : undefined
    // without an axes input the bounds cover the first axes, one per element
    const count = e.info(starts).shape?.[0]
    const axes = axesInput ? e.known(axesInput) : typeof count === 'number' ? [...Array(count).keys()] : undefined
    if (axes && (!stepsInput || steps?.every(step => step === 1))) return [padBack(c, c.g, starts, ends, axes)]
    return [scatterBack(c, flat => e.op('Slice', [flat, ...c.x.slice(1)]), false)]
  },
  Gather: c => {
    only(c, [0], 'its indices')
    const { e } = c
    const axis = intAttr(c.node, 'axis', 0)
    const index = oneIndex(c.node, e.infos)
    if (index !== undefined) {
      // one index (the class token): put the axis back and pad around it
      const rank = e.needRank(c.x[0], c.node)
      const i = index
      const end = i === -1 ? INT_MAX : i + 1
      return [padBack(c, e.op('Unsqueeze', [c.g, e.ints([axis])]), e.ints([i]), e.ints([end]), [normalise(axis, rank)])]
    }
    return [scatterBack(c, flat => e.op('Gather', [flat, c.x[1]], { axis }), true)]
  },
  GatherElements: c => {
    only(c, [0], 'its indices')
    return [scatterBack(c, flat => c.e.op('GatherElements', [flat, c.x[1]], { axis: intAttr(c.node, 'axis', 0) }), true)]
  },
  Pad: c => {
    only(c, [0], 'its pads or value')
    const mode = stringAttr(c.node, 'mode', 'constant')
    // reflect and edge pads copy elements of x: the same Pad of x's flat indices says where g goes
    if (mode === 'reflect' || mode === 'edge') return [scatterBack(c, flat => c.e.nodeWith('Pad', [flat, c.x[1], '', ...c.x.slice(3)], c.node.attribute as AttributeProto[])[0], true)]
    if (mode !== 'constant') refuse(c, `its input in ${mode} mode`)
    const { e } = c
    const [x, pads, , axesInput] = c.x
    const rank = e.needRank(x, c.node)
    const count = axesInput ? e.known(axesInput)?.length : rank
    if (count === undefined) throw new UserError(`autodiff: Pad node ${c.node.name} has axes computed at run time`)
    const begin = e.op('Slice', [pads, e.ints([0]), e.ints([count])])
    const dims = axesInput ? e.op('Gather', [e.cached('Shape', [x]), axesInput], { axis: 0 }) : e.cached('Shape', [x])
    return [e.op('Slice', [c.g, begin, e.op('Add', [begin, dims]), ...(axesInput ? [axesInput] : [])])]
  },

  // normalisations: recompute the statistics, then the usual backward formula
  InstanceNormalization: c => {
    only(c, [0], 'scale or bias')
    const { e } = c
    const [x, scale, bias] = c.x
    const rank = e.needRank(x, c.node)
    const axes = [...Array(rank - 2).keys()].map(i => i + 2)
    const epsilon = floatAttr(c.node, 'epsilon', 1e-5)
    // torch's GroupNorm export has scale 1 and bias 0: then y is x̂ itself
    const identity = e.isConstant(scale, 1) && e.isConstant(bias, 0)
    const gHat = identity ? c.g : e.op('Mul', [c.g, e.op('Reshape', [scale, e.ints([-1, ...Array(rank - 2).fill(1)])])])
    return [normalisationBackward(e, gHat, x, axes, epsilon, identity ? { normalised: c.y[0] } : undefined)]
  },
  // the statistics come from the forward node's optional outputs (computed in stash_type, float32 by default)
  LayerNormalization: c => {
    only(c, [0], 'scale or bias')
    if (c.dy[1] || c.dy[2]) refuse(c, 'its mean or inverse std outputs')
    const { e } = c
    const x = c.x[0]
    const axis = intAttr(c.node, 'axis', -1)
    const rank = axis < 0 ? -axis : e.needRank(x, c.node) - axis
    const axes = [...Array(rank).keys()].map(i => axis + i)
    const statistic = (index: number) => {
      const value = e.forwardOutput(c.node, index)
      return intAttr(c.node, 'stash_type', 1) === 1 && e.dtype(x) !== DataType.FLOAT ? e.op('Cast', [value], { to: e.dtype(x) }) : value
    }
    const inverseStd = statistic(2)
    const normalised = e.op('Mul', [e.op('Sub', [x, statistic(1)]), inverseStd])
    return [normalisationBackward(e, e.op('Mul', [c.g, c.x[1]]), x, axes, 0, { normalised, inverseStd })]
  },
  GroupNormalization: c => {
    only(c, [0], 'scale or bias')
    const { e } = c
    const [x, scale] = c.x
    const rank = e.needRank(x, c.node)
    const groups = intAttr(c.node, 'num_groups', 1)
    const grouped = (v: string) => e.op('Reshape', [v, e.ints([0, groups, -1])])
    // opset 18 scales per group, opset 21 per channel
    const gHat = e.opset >= 21
      ? grouped(e.op('Mul', [c.g, e.op('Reshape', [scale, e.ints([-1, ...Array(rank - 2).fill(1)])])]))
      : e.op('Mul', [grouped(c.g), e.op('Reshape', [scale, e.ints([-1, 1])])])
    const dx = normalisationBackward(e, gHat, grouped(x), [2], floatAttr(c.node, 'epsilon', 1e-5))
    return [e.op('Reshape', [dx, e.shape(x)])]
  },
  // inference form: y = (x − mean)·scale/√(var + ε) + bias
  BatchNormalization: c => {
    only(c, [0], 'scale, bias or statistics')
    if (intAttr(c.node, 'training_mode', 0) === 1) refuse(c, 'its input in training mode')
    const { e } = c
    const [x, scale, , , variance] = c.x
    const rank = e.needRank(x, c.node)
    const factor = e.op('Div', [scale, e.op('Sqrt', [e.op('Add', [variance, e.scalar(floatAttr(c.node, 'epsilon', 1e-5), x)])])])
    return [e.op('Mul', [c.g, e.op('Reshape', [factor, e.ints([-1, ...Array(rank - 2).fill(1)])])])]
  },

  // nearest ×s (asymmetric, floor): sum each s×s block; any other resize: the transposed per-axis matrices
  Resize: c => {
    only(c, [0], 'roi, scales or sizes')
    const { e } = c
    const x = c.x[0]
    if (e.needRank(x, c.node) !== 4 || intsAttr(c.node, 'axes')) refuse(c, 'its input (only NCHW resizes without axes are supported)')
    const scales = e.floatValues(c.x[2])
    // sizes from a Shape subgraph (2·h, 2·w) give factors even where h and w are symbolic
    const sizes = e.info(c.x[3] ?? '').value
    const dims = e.info(x).shape!
    const ratios = sizes?.map((s, i) => dimRatio(s, dims[i]))
    const factors = scales ?? (ratios?.every(r => r !== undefined) ? (ratios as number[]) : undefined)
    if (factors && (factors[0] !== 1 || factors[1] !== 1)) refuse(c, 'its input (batch or channel resizing)')
    const nearestBlocks = stringAttr(c.node, 'mode', 'nearest') === 'nearest' && stringAttr(c.node, 'coordinate_transformation_mode', 'half_pixel') === 'asymmetric' &&
      stringAttr(c.node, 'nearest_mode', 'round_prefer_floor') === 'floor' && factors && factors.every(f => Number.isInteger(f) && f >= 1)
    if (nearestBlocks) {
      const [sh, sw] = factors!.slice(2)
      if (sh === 1 && sw === 1) return [c.g]
      const pooled = e.op('AveragePool', [c.g], { kernel_shape: [sh, sw], strides: [sh, sw] })
      return [e.op('Mul', [pooled, e.scalar(sh * sw, x)])]
    }
    let g = c.g
    if (!factors || factors[2] !== 1) g = e.op('MatMul', [resizeMatrix(c, 2), g])
    if (!factors || factors[3] !== 1) g = e.op('MatMul', [g, e.op('Transpose', [resizeMatrix(c, 3)], { perm: [1, 0] })])
    return [g]
  },
  // max pooling: g scatter-added to the argmax positions, the forward's Indices output (ties: the first
  // maximum in the window, as onnxruntime's Indices and torch's backward pick it)
  MaxPool: c => {
    const { e } = c
    const x = c.x[0]
    const indices = e.forwardOutput(c.node, 1)
    const scattered = e.op('ScatterElements', [flatZeros(e, x), e.op('Reshape', [indices, e.ints([-1])]), e.op('Reshape', [c.g, e.ints([-1])])],
      windowsOverlap(c.node) ? { axis: 0, reduction: 'add' } : { axis: 0 })
    return [e.op('Reshape', [scattered, e.shape(x)])]
  },

  // bilinear GridSample (the face-alignment warp, spatial transformers): the image's gradient scatter-adds
  // g·(corner weight) into the four corners of each sample; the grid's is g times the slope between the
  // corners, summed over channels, times the position's slope in the grid coordinate (0 where border clamps)
  GridSample: c => {
    const mode = stringAttr(c.node, 'mode', 'bilinear'), padding = stringAttr(c.node, 'padding_mode', 'zeros')
    if (!['bilinear', 'linear'].includes(mode) || !['zeros', 'border'].includes(padding)) refuse(c, `its inputs with mode ${mode} and padding_mode ${padding}`)
    const { e } = c
    const [x, grid] = c.x
    const alignCorners = intAttr(c.node, 'align_corners', 0) === 1
    const dtype = e.dtype(x)
    const f = (v: number) => e.scalar(v, x)
    const shape = e.cached('Shape', [x])
    const dim = (i: number) => e.op('Cast', [e.op('Gather', [shape, e.ints([i])], { axis: 0 })], { to: dtype })
    const flatGrid = e.op('Reshape', [grid, e.ints([0, 1, -1, 2])])
    const coordinate = (axis: 0 | 1, size: string) => {
      const g = e.op('Squeeze', [e.op('Slice', [flatGrid, e.ints([axis]), e.ints([axis + 1]), e.ints([3])]), e.ints([3])])
      const unit = e.op('Div', [e.op('Add', [g, f(1)]), f(2)])
      const last = e.op('Sub', [size, f(1)])
      const position = alignCorners ? e.op('Mul', [unit, last]) : e.op('Sub', [e.op('Mul', [unit, size]), f(0.5)])
      // d position / d grid, 0 where border padding clamps it (torch's clip_coordinates_set_grad)
      const slope = e.op('Mul', [alignCorners ? last : size, f(0.5)])
      if (padding !== 'border') return { position, slope }
      const inside = e.op('And', [e.op('Greater', [position, f(0)]), e.op('Less', [position, last])])
      return { position: e.op('Max', [e.op('Min', [position, last]), f(0)]), slope: e.op('Where', [inside, slope, f(0)]) }
    }
    const [width, height] = [dim(3), dim(2)]
    const [along, down] = [coordinate(0, width), coordinate(1, height)]
    const [x0, y0] = [e.op('Floor', [along.position]), e.op('Floor', [down.position])]
    const [fx, fy] = [e.op('Sub', [along.position, x0]), e.op('Sub', [down.position, y0])]
    const [gx, gy] = [e.op('Sub', [f(1), fx]), e.op('Sub', [f(1), fy])]
    const corners = [[0, 0], [1, 0], [0, 1], [1, 1]].map(([dx, dy]) => {
      const cx = dx ? e.op('Add', [x0, f(1)]) : x0, cy = dy ? e.op('Add', [y0, f(1)]) : y0
      const inside = e.op('And', [
        e.op('And', [e.op('GreaterOrEqual', [cx, f(0)]), e.op('LessOrEqual', [cx, e.op('Sub', [width, f(1)])])]),
        e.op('And', [e.op('GreaterOrEqual', [cy, f(0)]), e.op('LessOrEqual', [cy, e.op('Sub', [height, f(1)])])]),
      ])
      const weight = e.op('Mul', [dx ? fx : gx, dy ? fy : gy])
      const index = e.op('Cast', [e.op('Where', [inside, e.op('Add', [e.op('Mul', [cy, width]), cx]), f(0)])], { to: DataType.INT64 })
      return { index, inside, weight: e.op('Where', [inside, weight, f(0)]) }
    })
    const updates = e.op('Reshape', [c.g, e.ints([0, 0, -1])])
    const spread = (v: string) => e.op('Expand', [v, e.op('Shape', [updates])])
    let dx: string | undefined, dGrid: string | undefined
    if (c.needs[0]) {
      const indices = e.op('Concat', corners.map(k => spread(k.index)), { axis: 2 })
      const values = e.op('Concat', corners.map(k => e.op('Mul', [updates, k.weight])), { axis: 2 })
      const area = e.op('Mul', [e.op('Gather', [shape, e.ints([2])], { axis: 0 }), e.op('Gather', [shape, e.ints([3])], { axis: 0 })])
      const zeros = e.op('ConstantOfShape', [e.op('Concat', [e.op('Slice', [shape, e.ints([0]), e.ints([2])]), area], { axis: 0 })], { value: tensor('zero', dtypeName(dtype), [1], [0]) })
      dx = e.op('Reshape', [e.op('ScatterElements', [zeros, indices, values], { axis: 2, reduction: 'add' }), shape])
    }
    if (c.needs[1]) {
      const flatX = e.op('Reshape', [x, e.ints([0, 0, -1])])
      const [v00, v10, v01, v11] = corners.map(k => e.op('Where', [k.inside, e.op('GatherElements', [flatX, spread(k.index)], { axis: 2 }), f(0)]))
      // the sample's slope along one axis: the two differences across it, weighted along the other
      const across = (a: string, b: string, wa: string, c2: string, d: string, wc: string) => e.op('Add', [e.op('Mul', [e.op('Sub', [b, a]), wa]), e.op('Mul', [e.op('Sub', [d, c2]), wc])])
      // Σ_channels g·(d sample / d position) · (d position / d grid), as [N, 1, samples, 1]
      const component = (values: string, slope: string) => e.op('Unsqueeze', [e.op('Mul', [e.reduceSum(e.op('Mul', [updates, values]), [1], true), slope]), e.ints([3])])
      const dAlong = component(across(v00, v10, gy, v01, v11, fy), along.slope)
      const dDown = component(across(v00, v01, gx, v10, v11, fx), down.slope)
      dGrid = e.op('Reshape', [e.op('Concat', [dAlong, dDown], { axis: 3 }), e.shape(grid)])
    }
    return [dx, dGrid]
  },

  // Einsum: the gradient of operand i is the einsum of the output gradient with the other operands
  Einsum: c => {
    const { e } = c
    const equation = stringAttr(c.node, 'equation', '').replace(/\s/g, '')
    const [lhs, given] = equation.split('->')
    const terms = lhs.split(',')
    const rhs = given ?? implicitOutput(terms)
    return terms.map((term, i) => {
      if (!c.needs[i]) return undefined
      const letters = term.replace('...', '')
      const elsewhere = [...terms.filter((_, j) => j !== i), rhs].join('')
      if (new Set(letters).size !== letters.length || [...letters].some(l => !elsewhere.includes(l))) refuse(c, `operand ${i} of "${equation}" (repeated or summed-away indices)`)
      const others = terms.map((t, j) => [t, c.x[j]] as const).filter((_, j) => j !== i)
      // ellipsis dims the operand lacks are summed over afterwards (onnxruntime wants the ellipsis kept)
      const ellipsis = !term.includes('...') && rhs.includes('...')
      const gradient = e.op('Einsum', [c.g, ...others.map(([, name]) => name)], { equation: `${[rhs, ...others.map(([t]) => t)].join(',')}->${ellipsis ? '...' : ''}${term}` })
      return term.includes('...') || ellipsis ? e.unbroadcast(gradient, c.x[i], gradient) : gradient
    })
  },
}

/** Einsum's implicit output: the letters used once, alphabetically, after any ellipsis. */
function implicitOutput(terms: string[]): string {
  const counts = new Map<string, number>()
  for (const l of terms.join('').replace(/\.\.\./g, '')) counts.set(l, (counts.get(l) ?? 0) + 1)
  const once = [...counts].filter(([, n]) => n === 1).map(([l]) => l).sort().join('')
  return terms.some(t => t.includes('...')) ? `...${once}` : once
}
