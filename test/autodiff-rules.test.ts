// Every gradient rule against central finite differences, on small random graphs with static and symbolic dims.
import assert from 'node:assert/strict'
import { differentiate } from '../src/onnx/autodiff.js'
import type { GradRule } from '../src/onnx/grad-context.js'
import { float, GraphBuilder } from '../src/onnx/builder.js'
import { gradcheck } from '../src/onnx/gradcheck.js'
import { gradients } from '../src/onnx/gradients.js'
import { seededNormal, randomWeight, type Normal } from '../src/onnx/layers.js'
import { encodeModel } from '../src/onnx/proto.js'
import { ort } from '../src/onnx/session.js'

interface Case {
  name: string
  inputs: Record<string, number[]>
  build: (g: GraphBuilder, x: Record<string, string>, rand: Normal) => string
  opsets?: number[]
  /** also check with every input dim symbolic */
  symbolic?: boolean
  /** finite-difference step: smaller for kinks (Relu-like ops), so fewer inputs straddle one */
  epsilon?: number
}

const positive = (g: GraphBuilder, x: string) => g.op('Add', [g.op('Exp', [x]), g.constant(0.5, [])])
const s = (g: GraphBuilder, v: number) => g.constant(v, [])

const cases: Case[] = [
  { name: 'Add, Sub, Mul, Div with broadcasting both ways', inputs: { a: [2, 3, 4], b: [3, 1] }, symbolic: true,
    build: (g, { a, b }) => g.op('Div', [g.op('Mul', [g.op('Sub', [g.op('Add', [a, b]), b]), b]), positive(g, b)]) },
  { name: 'Pow, Sqrt, Exp, Log, Reciprocal, Neg', inputs: { x: [3, 4] },
    build: (g, { x }) => g.op('Neg', [g.op('Reciprocal', [g.op('Add', [g.op('Log', [positive(g, x)]), g.op('Sqrt', [g.op('Pow', [positive(g, x), s(g, 3)])])])])]) },
  { name: 'Pow with the exponents 2 and 1', inputs: { x: [2, 3] }, symbolic: true,
    build: (g, { x }) => g.op('Mul', [g.op('Pow', [x, s(g, 2)]), g.op('Pow', [x, s(g, 1)])]) },
  { name: 'Pow with a broadcast exponent input', inputs: { x: [2, 3], p: [3] },
    build: (g, { x, p }) => g.op('Pow', [positive(g, x), g.op('Mul', [p, s(g, 0.5)])]) },
  { name: 'Sigmoid, Tanh, Erf, Softplus, Sin, Cos', inputs: { x: [2, 5] },
    build: (g, { x }) => g.op('Sum', [g.op('Sigmoid', [x]), g.op('Tanh', [x]), g.op('Erf', [x]), g.op('Softplus', [x]), g.op('Sin', [x]), g.op('Cos', [x])]) },
  { name: 'Relu, LeakyRelu, Abs, Clip', inputs: { x: [4, 6] },
    build: (g, { x }) => g.op('Sum', [g.op('Relu', [x]), g.op('LeakyRelu', [x], { alpha: float(0.1) }), g.op('Abs', [x]), g.op('Clip', [x, s(g, -0.5), s(g, 0.7)])]) },
  { name: 'Relu and Clip in float64 (masks by Greater and Where)', inputs: { x: [4, 6] },
    build: (g, { x }) => {
      const wide = g.op('Cast', [x], { to: 11 })
      const clipped = g.op('Clip', [wide, g.constant(-0.5, [], 'float64'), g.constant(0.7, [], 'float64')])
      return g.op('Cast', [g.op('Add', [g.op('Relu', [wide]), clipped])], { to: 1 })
    } },
  { name: 'PRelu with a per-channel slope', inputs: { x: [2, 3, 4, 4] }, symbolic: true, epsilon: 1e-4,
    build: (g, { x }, rand) => g.op('PRelu', [x, randomWeight(g, rand, [3, 1, 1], 0.1, 0.25)]) },
  { name: 'Gelu (opset 20 form)', inputs: { x: [3, 4] }, opsets: [20], build: (g, { x }) => g.op('Gelu', [x]) },
  { name: 'Max, Min, Mean, Where', inputs: { a: [3, 4], b: [4] },
    build: (g, { a, b }) => g.op('Add', [g.op('Mean', [g.op('Max', [a, b]), g.op('Min', [a, b])]), g.op('Where', [g.op('Greater', [a, s(g, 0)]), a, g.op('Mul', [b, s(g, 2)])])]) },
  { name: 'MatMul with a weight, with broadcast batch, and of two activations', inputs: { a: [2, 3, 4], b: [1, 4, 5], c: [5, 3] }, symbolic: true,
    build: (g, { a, b, c }, rand) => g.op('MatMul', [g.op('MatMul', [g.op('MatMul', [a, randomWeight(g, rand, [4, 4], 0.5)]), b]), c]) },
  { name: 'Linear layers on 3-D input: two beside each other, and a LoRA branch (down then up)', inputs: { x: [2, 3, 4] }, symbolic: true,
    build: (g, { x }, rand) => g.op('Add', [g.op('MatMul', [x, randomWeight(g, rand, [4, 5], 0.5)]), g.op('MatMul', [g.op('MatMul', [x, randomWeight(g, rand, [4, 2], 0.5)]), randomWeight(g, rand, [2, 5], 0.5)])]) },
  { name: 'MatMul of rank-4 attention operands', inputs: { q: [1, 2, 5, 3], k: [1, 2, 3, 6] }, symbolic: true,
    build: (g, { q, k }) => g.op('MatMul', [q, k]) },
  { name: 'attention core: Softmax read only by MatMul(·, V) (row sums from dO·O)', inputs: { q: [2, 5, 3], k: [2, 3, 4], v: [2, 4, 3] }, symbolic: true,
    build: (g, { q, k, v }) => g.op('MatMul', [g.op('Softmax', [g.op('MatMul', [q, k])], { axis: -1 }), v]) },
  { name: 'Gemm with transposes, alpha, beta and a broadcast C', inputs: { a: [4, 3], b: [5, 4], c: [4] },
    build: (g, { a, b, c }) => g.op('Gemm', [g.op('Gemm', [a, b], { transA: 1, transB: 1, alpha: float(0.7) }), b, c], { beta: float(1.5) }) },
  { name: 'Conv: stride 1 and 2 (even and odd sizes), groups, dilation', inputs: { x: [1, 4, 7, 8] }, symbolic: true,
    build: (g, { x }, rand) => {
      const a = g.op('Conv', [x, randomWeight(g, rand, [4, 4, 3, 3], 0.3)], { pads: [1, 1, 1, 1], strides: [2, 2] })
      const b = g.op('Conv', [x, randomWeight(g, rand, [4, 2, 3, 3], 0.3), randomWeight(g, rand, [4], 0.1)], { pads: [2, 2, 2, 2], dilations: [2, 2], group: 2 })
      const c = g.op('Conv', [b, randomWeight(g, rand, [2, 4, 3, 2], 0.3)], { strides: [2, 3] })
      return g.op('Add', [g.op('ReduceSum', [a], { keepdims: 0 }), g.op('ReduceSum', [g.op('Mul', [c, c])], { keepdims: 0 })])
    } },
  // strided: the input gradient as per-phase Convs interleaved (gradients.ts convAsConvs, ungrouped, from 16
  // channels of x); grouped ones and the 1×1 stride-2 shortcut (a kernel under its stride) stay ConvTransposes
  { name: 'Conv strided: square and unequal strides, asymmetric pads, grouped, 1×1 stride 2, 1-D', inputs: { x: [1, 16, 9, 8], t: [1, 16, 11] }, symbolic: true,
    build: (g, { x, t }, rand) => {
      const square = g.op('Conv', [x, randomWeight(g, rand, [6, 16, 3, 3], 0.15)], { pads: [1, 0, 2, 1], strides: [2, 2] })
      const unequal = g.op('Conv', [x, randomWeight(g, rand, [4, 16, 5, 4], 0.1)], { pads: [2, 1, 2, 2], strides: [3, 2] })
      const grouped = g.op('Conv', [x, randomWeight(g, rand, [4, 8, 3, 3], 0.2)], { pads: [1, 1, 1, 1], strides: [2, 2], group: 2 })
      const pointwise = g.op('Conv', [x, randomWeight(g, rand, [3, 16, 1, 1], 0.2)], { strides: [2, 2] })
      const line = g.op('Conv', [t, randomWeight(g, rand, [3, 16, 4], 0.2)], { pads: [1, 2], strides: [3] })
      const total = (v: string) => g.op('ReduceSum', [g.op('Mul', [v, g.op('Sin', [v])])], { keepdims: 0 })
      return g.op('Sum', [total(square), total(unequal), total(grouped), total(pointwise), total(line)])
    } },
  // strided depthwise: g spread out with zeros, then a stride-1 depthwise Conv (gradients.ts depthwiseSpread) for 5×5
  // kernels and small g; a channel multiplier and a 3×3 kernel on a larger g stay ConvTransposes
  { name: 'Conv strided depthwise: 5×5 stride 2, 3×3 strides 2 and 3 with asymmetric pads, multiplier 2, larger g', inputs: { x: [1, 4, 9, 8], t: [1, 4, 5, 6] }, symbolic: true,
    build: (g, { x, t }, rand) => {
      const wide = g.op('Conv', [x, randomWeight(g, rand, [4, 1, 5, 5], 0.2)], { pads: [2, 2, 2, 2], strides: [2, 2], group: 4 })
      const small = g.op('Conv', [t, randomWeight(g, rand, [4, 1, 3, 3], 0.3)], { pads: [1, 1, 1, 1], strides: [2, 2], group: 4 })
      const three = g.op('Conv', [t, randomWeight(g, rand, [4, 1, 3, 3], 0.3)], { pads: [1, 0, 2, 1], strides: [3, 3], group: 4 })
      const doubled = g.op('Conv', [t, randomWeight(g, rand, [8, 1, 3, 3], 0.3)], { pads: [1, 1, 1, 1], strides: [2, 2], group: 4 })
      const larger = g.op('Conv', [x, randomWeight(g, rand, [4, 1, 3, 3], 0.3)], { strides: [2, 1], group: 4 })
      const total = (v: string) => g.op('ReduceSum', [g.op('Mul', [v, g.op('Sin', [v])])], { keepdims: 0 })
      return g.op('Sum', [total(wide), total(small), total(three), total(doubled), total(larger)])
    } },
  // stride 1: the input gradient is a Conv with the kernel flipped (gradients.ts convAsConvs)
  { name: 'Conv at stride 1: depthwise, depthwise ×2, groups, asymmetric pads, auto_pad, 1-D, pads past the kernel', inputs: { x: [1, 6, 6, 7], t: [1, 4, 9] }, symbolic: true,
    build: (g, { x, t }, rand) => {
      const depthwise = g.op('Conv', [x, randomWeight(g, rand, [6, 1, 3, 3], 0.3)], { pads: [1, 0, 2, 1], group: 6 })
      const multiplied = g.op('Conv', [depthwise, randomWeight(g, rand, [12, 1, 3, 2], 0.3)], { pads: [2, 1, 2, 1], dilations: [2, 1], group: 6 })
      const grouped = g.op('Conv', [multiplied, randomWeight(g, rand, [6, 4, 3, 3], 0.3)], { auto_pad: 'SAME_UPPER', group: 3 })
      const wide = g.op('Conv', [grouped, randomWeight(g, rand, [6, 6, 1, 1], 0.3)], { pads: [1, 1, 1, 1] })
      const line = g.op('Conv', [t, randomWeight(g, rand, [2, 4, 4], 0.3)], { pads: [2, 1] })
      const total = (v: string) => g.op('ReduceSum', [g.op('Mul', [v, g.op('Sin', [v])])], { keepdims: 0 })
      return g.op('Add', [total(wide), total(line)])
    } },
  { name: 'ConvTranspose', inputs: { x: [1, 3, 4, 5] },
    build: (g, { x }, rand) => g.op('ConvTranspose', [x, randomWeight(g, rand, [3, 2, 3, 3], 0.3)], { strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 0] }) },
  { name: 'SiLU: x·sigmoid(x) in both operand orders, and a sigmoid read elsewhere too', inputs: { x: [2, 3, 4] }, symbolic: true,
    build: (g, { x }) => {
      const shared = g.op('Sigmoid', [x])
      const silus = g.op('Add', [g.op('Mul', [x, g.op('Sigmoid', [x])]), g.op('Mul', [g.op('Sigmoid', [x]), x])])
      return g.op('Add', [silus, g.op('Mul', [g.op('Mul', [x, shared]), shared])])
    } },
  { name: 'torch\'s GELU export, x·(erf(x/√2) + 1)·0.5, in both operand orders, and with its erf read elsewhere too', inputs: { x: [2, 3, 4] }, symbolic: true,
    build: (g, { x }) => {
      const gelu = (swapped: boolean) => {
        const a = g.op('Add', [g.op('Erf', [g.op('Div', [x, s(g, Math.SQRT2)])]), s(g, 1)])
        const m = g.op('Mul', swapped ? [a, x] : [x, a])
        return g.op('Mul', swapped ? [s(g, 0.5), m] : [m, s(g, 0.5)])
      }
      const erf = g.op('Erf', [g.op('Div', [x, s(g, Math.SQRT2)])])
      const shared = g.op('Mul', [g.op('Mul', [x, g.op('Add', [erf, s(g, 1)])]), s(g, 0.5)])
      return g.op('Add', [g.op('Add', [gelu(false), gelu(true)]), g.op('Mul', [shared, erf])])
    } },
  { name: 'Softmax and LogSoftmax', inputs: { x: [2, 3, 5] }, symbolic: true,
    build: (g, { x }) => g.op('Add', [g.op('Softmax', [x], { axis: -1 }), g.op('LogSoftmax', [x], { axis: 1 })]) },
  { name: 'ReduceSum, ReduceMean with and without keepdims (axes as attribute, then input)', inputs: { x: [2, 3, 4] }, opsets: [14, 18], symbolic: true,
    build: (g, { x }) => {
      const reduce = (op: string, axes: number[], keepdims: number) => g.opset >= 18 || op === 'ReduceSum' ? g.op(op, [x, g.ints(axes)], { keepdims }) : g.op(op, [x], { axes, keepdims })
      return g.op('Add', [g.op('Mul', [reduce('ReduceSum', [1], 0), reduce('ReduceMean', [-2], 0)]), g.op('ReduceSum', [g.op('Mul', [reduce('ReduceMean', [0, 2], 1), x])], { keepdims: 0 })])
    } },
  { name: 'ReduceL2, ReduceSumSquare, ReduceMax', inputs: { x: [3, 4] },
    build: (g, { x }) => g.op('Add', [g.op('Mul', [g.op('ReduceL2', [x], { axes: [1] }), g.op('ReduceSumSquare', [x], { axes: [1] })]), g.op('ReduceMax', [x], { axes: [1] })]) },
  { name: 'Reshape, Flatten, Squeeze, Unsqueeze, Transpose', inputs: { x: [2, 3, 4] }, symbolic: true,
    build: (g, { x }) => {
      const r = g.op('Reshape', [g.op('Transpose', [x], { perm: [2, 0, 1] }), g.ints([4, -1, 1])])
      const f = g.op('Flatten', [g.op('Squeeze', [r, g.ints([2])])], { axis: 1 })
      return g.op('Mul', [g.op('Unsqueeze', [f, g.ints([0])]), g.op('Transpose', [g.op('Unsqueeze', [f, g.ints([0])])])])
    } },
  { name: 'Concat and Split (sizes input)', inputs: { a: [2, 3], b: [2, 2] }, symbolic: true,
    build: (g, { a, b }) => {
      const [p, q] = g.node('Split', [g.op('Concat', [a, b, a], { axis: 1 }), g.ints([6, 2])], { axis: 1 }, 2)
      return g.op('Add', [g.op('ReduceSum', [g.op('Mul', [p, p])], { keepdims: 0 }), g.op('ReduceSum', [q], { keepdims: 0 })])
    } },
  { name: 'Split with num_outputs (opset 18), one output unused', inputs: { x: [4, 6] }, opsets: [18],
    build: (g, { x }) => g.node('Split', [x], { axis: 1, num_outputs: 3 }, 3)[1] },
  { name: 'Slice: static, negative, from a Shape subgraph, with steps', inputs: { x: [3, 8] }, symbolic: true,
    build: (g, { x }) => {
      const a = g.op('Slice', [x, g.ints([1, -6]), g.ints([3, 1000]), g.ints([0, 1])])
      const half = g.op('Unsqueeze', [g.op('Div', [g.op('Gather', [g.op('Shape', [x]), g.constant([1], [], 'int64')]), g.constant([2], [], 'int64')]), g.ints([0])])
      const b = g.op('Slice', [x, half, g.ints([1000]), g.ints([-1])])
      const c = g.op('Slice', [x, g.ints([7]), g.ints([0]), g.ints([1]), g.ints([-2])])
      return g.op('Add', [g.op('Add', [g.op('ReduceSum', [g.op('Mul', [a, a])], { keepdims: 0 }), g.op('ReduceSum', [g.op('Mul', [b, b])], { keepdims: 0 })]), g.op('ReduceSum', [g.op('Sin', [c])], { keepdims: 0 })])
    } },
  { name: 'Slices tiling a tensor (GEGLU halves, three parts, one unused) beside a slice along another axis', inputs: { x: [3, 8] }, symbolic: true,
    build: (g, { x }) => {
      const part = (start: number, end: number, axis = 1) => g.op('Slice', [x, g.ints([start]), g.ints([end]), g.ints([axis])])
      const [a, b, unused, rows] = [part(0, 3), part(3, 7), part(7, 8), part(1, 3, 0)]
      void unused
      const late = g.op('Sin', [a])
      return g.op('Add', [g.op('ReduceSum', [g.op('Mul', [b, b])], { keepdims: 0 }), g.op('Add', [g.op('ReduceSum', [late], { keepdims: 0 }), g.op('ReduceSum', [g.op('Exp', [rows])], { keepdims: 0 })])])
    } },
  { name: 'Gather: the class token, and indices with repeats; GatherElements', inputs: { x: [2, 4, 3] }, opsets: [13, 17],
    build: (g, { x }) => {
      const token = g.op('Gather', [x, g.constant([0], [], 'int64')], { axis: 1 })
      const last = g.op('Gather', [x, g.constant([-1], [], 'int64')], { axis: -2 })
      const picked = g.op('Gather', [x, g.constant([2, 0, 2], [3], 'int64')], { axis: 1 })
      const elements = g.op('GatherElements', [x, g.constant([0, 1, 1, 2, 0, 0], [2, 1, 3], 'int64')], { axis: 1 })
      return g.op('Add', [g.op('Add', [g.op('ReduceSum', [g.op('Mul', [token, last])], { keepdims: 0 }), g.op('ReduceSum', [g.op('Mul', [picked, picked])], { keepdims: 0 })]), g.op('ReduceSum', [g.op('Exp', [elements])], { keepdims: 0 })])
    } },
  { name: 'Expand, Pad, Cast', inputs: { x: [3, 1] },
    build: (g, { x }) => {
      const wide = g.op('Expand', [x, g.ints([2, 3, 4])])
      const padded = g.op('Pad', [wide, g.ints([0, 1, 2, 0, 0, 1])])
      return g.op('Cast', [g.op('Mul', [g.op('Cast', [padded], { to: 11 }), g.op('Cast', [padded], { to: 11 })])], { to: 1 })
    } },
  { name: 'InstanceNormalization (the GroupNorm export) and with scale and bias', inputs: { x: [2, 6, 3, 3] }, symbolic: true,
    build: (g, { x }, rand) => {
      const grouped = g.op('Reshape', [x, g.ints([0, 2, -1])])
      const plain = g.op('InstanceNormalization', [grouped, g.constant([1, 1], [2]), g.constant([0, 0], [2])])
      const affine = g.op('InstanceNormalization', [x, randomWeight(g, rand, [6], 0.2, 1), randomWeight(g, rand, [6], 0.2)])
      return g.op('Add', [g.op('Reshape', [plain, g.op('Shape', [x])]), g.op('Mul', [affine, affine])])
    } },
  { name: 'LayerNormalization (opset 17) over one and two axes', inputs: { x: [2, 3, 4] }, opsets: [17], symbolic: true,
    build: (g, { x }, rand) => g.op('Mul', [
      g.op('LayerNormalization', [x, randomWeight(g, rand, [4], 0.2, 1), randomWeight(g, rand, [4], 0.2)], { axis: -1 }),
      g.op('LayerNormalization', [x, randomWeight(g, rand, [3, 4], 0.2, 1)], { axis: 1, epsilon: float(1e-3) })]) },
  { name: 'GroupNormalization (opset 18)', inputs: { x: [2, 6, 2, 2] }, opsets: [18],
    build: (g, { x }, rand) => g.op('GroupNormalization', [x, randomWeight(g, rand, [3], 0.2, 1), randomWeight(g, rand, [3], 0.2)], { num_groups: 3 }) },
  { name: 'BatchNormalization (inference)', inputs: { x: [2, 3, 2, 2] },
    build: (g, { x }, rand) => g.op('BatchNormalization', [x, randomWeight(g, rand, [3], 0.2, 1), randomWeight(g, rand, [3], 0.2), randomWeight(g, rand, [3], 0.2), g.constant([0.5, 1, 2], [3])]) },
  // a smaller step: the sum of four resized copies is a large scalar, where the loss y·sin(y + 0.3) curves fast
  { name: 'Resize: nearest ×2 (scales, and sizes from Shape), bilinear up (half_pixel), bilinear down with sizes', inputs: { x: [1, 2, 4, 6] }, symbolic: true, epsilon: 1e-4,
    build: (g, { x }) => {
      const nearest = g.op('Resize', [x, '', g.constant([1, 1, 2, 2], [4])], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' })
      const up = g.op('Resize', [x, '', g.constant([1, 1, 1.5, 2], [4])], { mode: 'linear', coordinate_transformation_mode: 'half_pixel' })
      const down = g.op('Resize', [nearest, '', '', g.ints([1, 2, 3, 5])], { mode: 'linear', coordinate_transformation_mode: 'align_corners' })
      // nearest ×2 with sizes from a Shape subgraph, as exports with an explicit output size have it
      const shape = g.op('Shape', [x])
      const doubled = g.op('Concat', [g.op('Slice', [shape, g.ints([0]), g.ints([2])]), g.op('Mul', [g.op('Slice', [shape, g.ints([2]), g.ints([4])]), g.ints([2, 2])])], { axis: 0 })
      const sized = g.op('Resize', [x, '', '', doubled], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' })
      const sq = (v: string) => g.op('ReduceSum', [g.op('Mul', [v, g.op('Sin', [v])])], { keepdims: 0 })
      return g.op('Sum', [sq(nearest), sq(up), sq(down), sq(sized)])
    } },
  // before opset 16 the gradient model is raised to it (ScatterElements adds duplicates from 16 on)
  { name: 'MaxPool (overlapping windows), AveragePool, GlobalAveragePool', inputs: { x: [1, 2, 7, 6] }, opsets: [13, 14, 17, 18], symbolic: true,
    build: (g, { x }) => {
      const max = g.op('MaxPool', [x], { kernel_shape: [3, 3], strides: [2, 2] })
      const avg = g.op('AveragePool', [x], { kernel_shape: [3, 2], strides: [2, 2], pads: [1, 0, 1, 0] })
      const global = g.op('GlobalAveragePool', [g.op('Mul', [x, x])])
      const total = (v: string) => g.op('ReduceSum', [g.op('Mul', [v, g.op('Sin', [v])])], { keepdims: 0 })
      return g.op('Sum', [total(max), total(avg), total(global)])
    } },
  // torch and onnxruntime divide a ceil_mode window reaching past the pads by what it covers, not by the kernel size
  { name: 'AveragePool with ceil_mode, with and without count_include_pad, with pads', inputs: { x: [1, 2, 5, 7] }, opsets: [13, 14, 17, 18], symbolic: true,
    build: (g, { x }) => {
      const plain = g.op('AveragePool', [x], { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 })
      const counted = g.op('AveragePool', [x], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], ceil_mode: 1, count_include_pad: 1 })
      const inside = g.op('AveragePool', [x], { kernel_shape: [3, 2], strides: [2, 3], pads: [1, 0, 1, 1], ceil_mode: 1 })
      const floor = g.op('AveragePool', [x], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], count_include_pad: 1 })
      const total = (v: string) => g.op('ReduceSum', [g.op('Mul', [v, g.op('Sin', [v])])], { keepdims: 0 })
      return g.op('Sum', [total(plain), total(counted), total(inside), total(floor)])
    } },
  { name: 'GridSample, bilinear, zeros and border padding, with and without align_corners', inputs: { x: [1, 2, 5, 6] }, opsets: [16, 17],
    build: (g, { x }, rand) => {
      // a fixed warp reaching a little outside the image, as a face crop near the border does
      const grid = g.constant(Float32Array.from({ length: 4 * 3 * 2 }, () => rand() * 0.7), [1, 4, 3, 2])
      const zeros = g.op('GridSample', [x, grid], { mode: 'bilinear', padding_mode: 'zeros', align_corners: 0 })
      const border = g.op('GridSample', [x, g.op('Mul', [grid, g.constant(1.4, [])])], { mode: 'bilinear', padding_mode: 'border', align_corners: 1 })
      return g.op('Add', [zeros, border])
    } },
  { name: 'HardSigmoid (default and own α, β)', inputs: { x: [3, 8] }, opsets: [13, 14, 17, 18], symbolic: true, epsilon: 1e-4,
    build: (g, { x }) => {
      const wide = g.op('Mul', [x, s(g, 3)])
      return g.op('Add', [g.op('HardSigmoid', [wide]), g.op('HardSigmoid', [wide], { alpha: float(0.3), beta: float(0.4) })])
    } },
  { name: 'HardSwish', inputs: { x: [3, 8] }, opsets: [14, 17, 18], symbolic: true, epsilon: 1e-4, build: (g, { x }) => g.op('HardSwish', [g.op('Mul', [x, s(g, 3)])]) },
  { name: 'CumSum: plain, exclusive, reverse, both, along a negative axis', inputs: { x: [3, 5] }, opsets: [13, 14, 17, 18], symbolic: true,
    build: (g, { x }) => {
      const sum = (axis: number, exclusive: number, reverse: number) => g.op('CumSum', [x, g.constant([axis], [], 'int64')], { exclusive, reverse })
      return g.op('Sum', [sum(1, 0, 0), g.op('Sin', [sum(1, 1, 0)]), g.op('Exp', [sum(0, 0, 1)]), g.op('Mul', [sum(-1, 1, 1), x])])
    } },
  { name: 'Tile', inputs: { x: [2, 3, 1] }, opsets: [13, 14, 17, 18], symbolic: true,
    build: (g, { x }) => g.op('Tile', [x, g.ints([2, 1, 3])]) },
  { name: 'ReduceLogSumExp with and without keepdims', inputs: { x: [2, 3, 4] }, opsets: [13, 14, 17, 18], symbolic: true,
    build: (g, { x }) => {
      const lse = (axes: number[], keepdims: number) => g.opset >= 18 ? g.op('ReduceLogSumExp', [x, g.ints(axes)], { keepdims }) : g.op('ReduceLogSumExp', [x], { axes, keepdims })
      const total = (v: string) => g.op('ReduceSum', [g.op('Mul', [v, g.op('Sin', [v])])], { keepdims: 0 })
      return g.op('Sum', [total(lse([1], 0)), total(lse([-1, 1], 0)), total(g.op('Mul', [lse([2], 1), x]))])
    } },
  { name: 'SoftmaxCrossEntropyLoss: mean with weights and ignore_index, sum, per element with log_prob', inputs: { s: [3, 4], t: [2, 3, 2, 2] }, opsets: [13, 14, 17, 18], symbolic: true,
    build: (g, { s: scores, t: spatial }, rand) => {
      const labels = g.constant([0, 3, 1], [3], 'int64')
      const weighted = g.node('SoftmaxCrossEntropyLoss', [scores, labels, randomWeight(g, rand, [4], 0.3, 1)], { ignore_index: 3 }, 1)[0]
      const summed = g.node('SoftmaxCrossEntropyLoss', [scores, g.constant([2, 0, 1], [3], 'int32')], { reduction: 'sum' }, 1)[0]
      const [perPixel, logProb] = g.node('SoftmaxCrossEntropyLoss', [spatial, g.constant([0, 2, 1, 1, 2, 0, 0, 1], [2, 2, 2], 'int64')], { reduction: 'none' }, 2)
      const meanSpatial = g.node('SoftmaxCrossEntropyLoss', [spatial, g.constant([0, 2, 1, 1, 2, 0, 0, 1], [2, 2, 2], 'int64')], { ignore_index: 1 }, 1)[0]
      const total = (v: string) => g.op('ReduceSum', [v], { keepdims: 0 })
      return g.op('Sum', [weighted, g.op('Mul', [summed, s(g, 0.5)]), total(g.op('Sin', [perPixel])), total(g.op('Mul', [logProb, logProb])), meanSpatial])
    } },
  { name: 'Pad in reflect and edge modes', inputs: { x: [1, 2, 4, 5] }, opsets: [13, 14, 17, 18], symbolic: true,
    build: (g, { x }) => {
      const reflect = g.op('Pad', [x, g.ints([0, 0, 2, 1, 0, 0, 3, 3])], { mode: 'reflect' })
      const edge = g.op('Pad', [x, g.ints([0, 1, 1, 2, 0, 0, 3, 0])], { mode: 'edge' })
      const total = (v: string) => g.op('ReduceSum', [g.op('Mul', [v, g.op('Sin', [v])])], { keepdims: 0 })
      return g.op('Add', [total(reflect), total(edge)])
    } },
  { name: 'Pad in reflect and edge modes along chosen axes (opset 18)', inputs: { x: [1, 2, 4, 5] }, opsets: [18], symbolic: true,
    build: (g, { x }) => g.op('Add', [
      g.op('ReduceSum', [g.op('Exp', [g.op('Pad', [x, g.ints([1, 3, 2, 0]), '', g.ints([-1, 2])], { mode: 'reflect' })])], { keepdims: 0 }),
      g.op('ReduceSum', [g.op('Exp', [g.op('Pad', [x, g.ints([2, 1]), '', g.ints([3])], { mode: 'edge' })])], { keepdims: 0 })]) },
  // a grid made from the input, as a spatial transformer or a flow warp computes it
  { name: 'GridSample w.r.t. image and grid, bilinear, zeros and border padding, with and without align_corners', inputs: { x: [1, 2, 4, 5], flow: [1, 3, 4, 2] }, opsets: [16, 17, 18], symbolic: true, epsilon: 1e-4,
    build: (g, { x, flow }) => {
      const grid = g.op('Tanh', [g.op('Mul', [flow, s(g, 0.8)])])
      const zeros = g.op('GridSample', [x, grid], { mode: 'bilinear', padding_mode: 'zeros', align_corners: 0 })
      const border = g.op('GridSample', [x, g.op('Mul', [grid, s(g, 1.3)])], { mode: 'bilinear', padding_mode: 'border', align_corners: 1 })
      return g.op('Add', [zeros, border])
    } },
  // a MatMul after each: its rule needs the rank that shape inference gives them
  { name: 'DepthToSpace (DCR and CRD: pixel_shuffle) and SpaceToDepth', inputs: { x: [1, 8, 2, 3] }, opsets: [13, 14, 17, 18], symbolic: true,
    build: (g, { x }, rand) => {
      const dcr = g.op('DepthToSpace', [x], { blocksize: 2, mode: 'DCR' })
      const crd = g.op('DepthToSpace', [x], { blocksize: 2, mode: 'CRD' })
      const back = g.op('SpaceToDepth', [g.op('Sin', [crd])], { blocksize: 2 })
      const total = (v: string, width: number) => g.op('ReduceSum', [g.op('MatMul', [v, randomWeight(g, rand, [width, 2], 0.5)])], { keepdims: 0 })
      return g.op('Sum', [total(dcr, 6), total(crd, 6), total(back, 3)])
    } },
  { name: 'TopK values flowing on (largest and smallest, k from a constant)', inputs: { x: [2, 3, 6] }, opsets: [13, 14, 17, 18], symbolic: true,
    build: (g, { x }, rand) => {
      const [largest] = g.node('TopK', [x, g.ints([3])], { axis: -1 }, 2)
      const [smallest] = g.node('TopK', [x, g.ints([2])], { axis: 1, largest: 0 }, 2)
      const total = (v: string, shape: number[]) => g.op('ReduceSum', [g.op('MatMul', [v, randomWeight(g, rand, shape, 0.5)])], { keepdims: 0 })
      return g.op('Add', [total(largest, [3, 2]), total(smallest, [6, 2])])
    } },
  { name: 'Einsum (attention as einsum, and a batched contraction with ellipsis)', inputs: { q: [2, 3, 4], k: [2, 5, 4], w: [4, 4] },
    build: (g, { q, k, w }) => g.op('Mul', [g.op('Einsum', [q, k], { equation: 'bik,bjk->bij' }), g.op('Unsqueeze', [g.op('ReduceSum', [g.op('Einsum', [k, w], { equation: '...k,kl->...l' }), g.ints([2])], { keepdims: 0 }), g.ints([1])])]) },
  { name: 'fan-out: one value read by many nodes', inputs: { x: [3, 3] }, symbolic: true,
    build: (g, { x }) => { const y = g.op('Sigmoid', [x]); return g.op('Add', [g.op('Mul', [y, x]), g.op('MatMul', [y, g.op('Mul', [x, y])])]) } },
]

async function check(c: Case, opset: number, symbolic: boolean) {
  const g = new GraphBuilder('case', opset)
  const rand = seededNormal(11)
  const dims: Record<string, number> = {}
  const inputs = Object.fromEntries(Object.entries(c.inputs).map(([name, shape]) => {
    const declared = symbolic ? shape.map((d, i) => ((dims[`${name}_${i}`] = d), `${name}_${i}`)) : shape
    return [name, g.input(name, 'float32', declared)]
  }))
  const y = c.build(g, inputs, rand)
  // a random, non-linear scalar loss so no rule sees a degenerate gradient
  g.outputAs(g.op('ReduceSum', [g.op('Mul', [y, g.op('Sin', [g.op('Add', [y, s(g, 0.3)])])])], { keepdims: 0 }), 'loss', 'float32', [])
  const model = g.build()
  const wrt = Object.keys(c.inputs)
  const gradient = differentiate({ model, dir: '.' }, { wrt, of: 'loss' })
  const result = await gradcheck(encodeModel(model), encodeModel(gradient.model), { wrt, of: 'loss', dims, directions: 3, epsilon: c.epsilon })
  assert.ok(result.worst < 1e-2, `worst relative error ${result.worst}: ${JSON.stringify(result.inputs)}`)
}

describe('gradient rules vs finite differences', () => {
  for (const c of cases) {
    for (const opset of c.opsets ?? [17]) {
      it(`${c.name} (opset ${opset})`, () => check(c, opset, false))
      if (c.symbolic) it(`${c.name} (opset ${opset}, symbolic dims)`, () => check(c, opset, true))
    }
  }
})

describe('the gradient checker', () => {
  /** gradcheck's worst error for sum(op(x)·sin(op(x) + 0.3)) with the rule for `op` replaced by `rule`. */
  async function worstWith(op: string, rule: GradRule, build: (g: GraphBuilder, x: string) => string, shape: number[]) {
    const saved = gradients[op]
    gradients[op] = rule
    try {
      const g = new GraphBuilder('wrong', 17)
      const y = build(g, g.input('x', 'float32', shape))
      g.outputAs(g.op('ReduceSum', [g.op('Mul', [y, g.op('Sin', [g.op('Add', [y, s(g, 0.3)])])])], { keepdims: 0 }), 'loss', 'float32', [])
      const model = g.build()
      const gradient = differentiate({ model, dir: '.' }, { wrt: ['x'], of: 'loss' })
      return (await gradcheck(encodeModel(model), encodeModel(gradient.model), { wrt: ['x'], of: 'loss' })).worst
    } finally {
      gradients[op] = saved
    }
  }

  it('fails a rule with the wrong sign', async () => {
    const worst = await worstWith('Sin', c => [c.e.op('Mul', [c.g, c.e.op('Neg', [c.e.op('Cos', [c.x[0]])])])], (g, x) => g.op('Sin', [x]), [3, 4])
    assert.ok(worst > 0.5, `worst relative error ${worst}`)
  })

  it('fails an AveragePool rule that divides a ceil_mode window by the full kernel size', async () => {
    const fullKernel: GradRule = c => {
      const { e } = c
      const perChannel = e.op('Reshape', [e.op('Div', [c.g, e.scalar(4, c.x[0])]), e.ints([-1, 1, 0, 0])])
      const spread = e.op('ConvTranspose', [perChannel, e.typed([1, 1, 1, 1], 1, [1, 1, 2, 2])], { strides: [2, 2], output_padding: [1, 1] })
      return [e.op('Reshape', [e.op('Slice', [spread, e.ints([0, 0]), e.ints([5, 5]), e.ints([2, 3])]), e.shape(c.x[0])])]
    }
    const worst = await worstWith('AveragePool', fullKernel, (g, x) => g.op('AveragePool', [x], { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 }), [1, 2, 5, 5])
    assert.ok(worst > 0.05, `worst relative error ${worst}`)
  })

  it('fails an ErfGelu rule without its density term (so torch\'s GELU export is differentiated as one fused node)', async () => {
    const gelu = (g: GraphBuilder, x: string) => g.op('Mul', [g.op('Mul', [x, g.op('Add', [g.op('Erf', [g.op('Div', [x, s(g, Math.SQRT2)])]), s(g, 1)])]), s(g, 0.5)])
    const worst = await worstWith('ErfGelu', c => [c.e.op('Mul', [c.e.op('Mul', [c.g, c.y[1]]), c.e.scalar(0.5, c.x[0])])], gelu, [3, 4])
    assert.ok(worst > 0.05, `worst relative error ${worst}`)
  })

  it('fails a SiLU rule without its sigmoid-slope term (so x·sigmoid(x) is differentiated as one fused node)', async () => {
    const worst = await worstWith('SiLU', c => [c.e.op('Mul', [c.g, c.y[1]])], (g, x) => g.op('Mul', [x, g.op('Sigmoid', [x])]), [3, 4])
    assert.ok(worst > 0.05, `worst relative error ${worst}`)
  })
})

describe('gradients at ties', () => {
  /** x_grad of sum(w · op(x)) for a given x, w random: the gradient routed by the rule at tied elements. */
  async function gradientAt(opset: number, x: number[], shape: number[], build: (g: GraphBuilder, x: string) => string): Promise<{ dx: number[]; dy: number[] }> {
    const g = new GraphBuilder('ties', opset)
    const y = build(g, g.input('x', 'float32', shape))
    const w = g.input('w', 'float32', [])
    g.outputAs(y, 'y', 'float32')
    g.outputAs(g.op('ReduceSum', [g.op('Mul', [y, g.op('Add', [w, g.op('Cos', [y])])])], { keepdims: 0 }), 'loss', 'float32', [])
    const gradient = differentiate({ model: g.build(), dir: '.' }, { wrt: ['x'], of: 'loss', keep: ['y'] })
    const session = await ort.InferenceSession.create(encodeModel(gradient.model))
    const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from(x), shape), w: new ort.Tensor('float32', Float32Array.from([2]), []) })
    await session.release()
    const ys = Array.from(out.y.data as Float32Array)
    return { dx: Array.from(out.x_grad.data as Float32Array), dy: ys.map(v => 2 + Math.cos(v) - v * Math.sin(v)) }
  }
  const close = (actual: number[], expected: number[]) => actual.forEach((a, i) => assert.ok(Math.abs(a - expected[i]) < 1e-5, `${actual} vs ${expected}`))

  it('Relu and Clip pass the gradient exactly where y is strictly inside its bounds, one float beside a bound included', async () => {
    const f = (v: number) => Math.fround(v)
    const beside = (v: number, up: boolean) => {
      const bits = new Int32Array(new Float32Array([v]).buffer)
      bits[0] += (v >= 0) === up ? 1 : -1
      return new Float32Array(bits.buffer)[0]
    }
    const xs = [0, -0, 2 ** -126, -(2 ** -126), 1e30, -1e30, -4, beside(-4, true), beside(-4, false), f(6.1), beside(f(6.1), false), beside(f(6.1), true), 1, 3]
    const inside = (low: number, high: number) => xs.map(x => (x > low && x < high ? 1 : 0))
    // dx / dy: the mask, up to float32 rounding of dy
    const mask = ({ dx, dy }: { dx: number[]; dy: number[] }) => dx.map((d, i) => Math.round((1000 * d) / dy[i]) / 1000 + 0)
    const relu = await gradientAt(17, xs, [xs.length], (g, x) => g.op('Relu', [x]))
    assert.deepEqual(mask(relu), inside(0, Infinity))
    const clip = await gradientAt(17, xs, [xs.length], (g, x) => g.op('Clip', [x, s(g, -4), s(g, f(6.1))]))
    assert.deepEqual(mask(clip), inside(-4, f(6.1)))
    const below = await gradientAt(17, xs, [xs.length], (g, x) => g.op('Clip', [x, '', s(g, 1)]))
    assert.deepEqual(mask(below), inside(-Infinity, 1))
  })

  it('HardSwish has torch\'s slope at ±3 and one float beside them', async () => {
    const beside = (v: number) => {
      const bits = new Int32Array(new Float32Array([v]).buffer)
      bits[0] += 1
      return new Float32Array(bits.buffer)[0]
    }
    const xs = [-4, beside(-3), -3, -1.5, 0, 2, 3, beside(3), 5]
    // torch's hardswish_backward: 0 below −3, x/3 + ½ up to 3, 1 above
    const slopes = xs.map(x => (x < -3 ? 0 : x <= 3 ? x / 3 + 0.5 : 1))
    const { dx, dy } = await gradientAt(17, xs, [1, xs.length], (g, x) => g.op('HardSwish', [x]))
    close(dx, dy.map((d, i) => d * slopes[i]))
  })

  for (const opset of [13, 14, 17, 18]) {
    it(`Max and Min split the gradient between tied inputs (opset ${opset})`, async () => {
      const half = (g: GraphBuilder) => g.constant([0.5, 0.5, 0.5, 0.5], [4])
      const max = await gradientAt(opset, [0.5, 1, 0, 0.5], [4], (g, x) => g.op('Max', [x, half(g)]))
      close(max.dx, [max.dy[0] / 2, max.dy[1], 0, max.dy[3] / 2])
      const min = await gradientAt(opset, [0.5, 1, 0, 0.5], [4], (g, x) => g.op('Min', [x, half(g), x]))
      // three inputs: x counts twice where it ties with itself and with ½
      close(min.dx, [(2 * min.dy[0]) / 3, 0, min.dy[2], (2 * min.dy[3]) / 3])
    })
    it(`ReduceMax and ReduceMin split the gradient between tied elements (opset ${opset})`, async () => {
      const reduce = (op: string) => (g: GraphBuilder, x: string) => (opset >= 18 ? g.op(op, [x, g.ints([1])], { keepdims: 0 }) : g.op(op, [x], { axes: [1], keepdims: 0 }))
      const max = await gradientAt(opset, [1, 3, 3, 2, 0, 1], [2, 3], reduce('ReduceMax'))
      close(max.dx, [0, max.dy[0] / 2, max.dy[0] / 2, max.dy[1], 0, 0])
      const min = await gradientAt(opset, [1, 1, 1, 2, 0, 1], [2, 3], reduce('ReduceMin'))
      close(min.dx, [min.dy[0] / 3, min.dy[0] / 3, min.dy[0] / 3, 0, min.dy[1], 0])
    })
    it(`piecewise constant and integer-valued ops pass no gradient (opset ${opset})`, async () => {
      const { dx, dy } = await gradientAt(opset, [0.3, -1.7, 2.2, 0.9, -0.4, 1.5], [2, 3], (g, x) => {
        const float = (v: string) => g.op('Cast', [v], { to: 1 })
        const scalar = (v: string) => g.op('ReduceSum', [float(v)], { keepdims: 0 })
        const steps = g.op('Sum', [g.op('Floor', [x]), g.op('Ceil', [x]), g.op('Round', [x]), g.op('Sign', [x]), float(g.op('Greater', [x, s(g, 0)])), float(g.op('Equal', [x, s(g, 0.3)]))])
        const indices = g.op('Add', [float(g.op('ArgMax', [x], { axis: 1, keepdims: 1 })), float(g.op('ArgMin', [x], { axis: 0, keepdims: 1 }))])
        return g.op('Sum', [x, steps, indices, scalar(g.op('NonZero', [x])), scalar(g.op('Shape', [x])), scalar(g.op('Size', [x]))])
      })
      close(dx, dy)
    })
  }
  for (const opset of [13, 17]) {
    it(`MaxPool routes each window's gradient to its first maximum, as torch does (opset ${opset})`, async () => {
      // every 2×2 window of a constant image ties
      const { dx, dy } = await gradientAt(opset, Array(9).fill(0.5), [1, 1, 3, 3], (g, x) => g.op('MaxPool', [x], { kernel_shape: [2, 2], strides: [1, 1] }))
      close(dx, [dy[0], dy[1], 0, dy[2], dy[3], 0, 0, 0, 0])
    })
  }
})
