// `npm run bench:maxpool`: four ways to take MaxPool's gradient with overlapping windows before opset 16
// (no ScatterElements add reduction), each timed in onnxruntime (1 thread, best of RUNS) as forward pool +
// gradient, on the pools of torchvision's networks:
// - scatter:  the model raised to opset 16, the pool's Indices output, ScatterElements(reduction=add)
// - one-hot:  the Indices turned into each output's offset in its window, one-hot over the k² offsets, times
//             g, summed back by a ConvTranspose whose kernel is the identity over offsets
// - shifted:  for each of the k² offsets, the strided slice of x that the offset reads, g where it equals y
//             (the first such offset only: torch's first max), put back in place by interleaving zeros
// - compared: the pool of y alone (onnxruntime's blocked kernel), the k² offsets taken out of x by one grouped
//             Conv, compared with y, g split between ties (so it differs from the others at ties) and put back
//             by a one-hot ConvTranspose; as the MaxPool rule inside the oracle's nets it was slower (GoogLeNet 3.60→5.39×)
// - separable: max pools along W then along H (the first maximum in row-major order is the first row holding
//             it, then its first column); each 1-D pass sends g to its window's first offset equal to the output
//             by strided slices, interleaving the stride's phases back
// - phases:   x's s² phase planes by SpaceToDepth, so each of the k² offsets is a contiguous slice; g to the first
//             offset equal to y, planes put back by DepthToSpace
// Each gradient is checked against the scatter one. Options: --runs N (default 20), --profile (onnxruntime's node
// times of each form by op type, median over the runs).
import { GraphBuilder, tensor } from '../../src/onnx/builder.js'
import { encodeModel } from '../../src/onnx/proto.js'
import { ort, sessionOptions } from '../../src/onnx/session.js'
import { seededNormal } from '../../src/onnx/layers.js'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { option } from '../args.js'
import { profileByOp } from '../oracle/oracle.js'

const runs = Number(option('runs', '20'))
const profile = process.argv.includes('--profile')

interface Pool { name: string; channels: number; size: number; kernel: number; stride: number; pad: number; ceil: boolean }
const POOLS: Pool[] = [
  { name: 'ResNet / DenseNet / ShuffleNet stem', channels: 64, size: 112, kernel: 3, stride: 2, pad: 1, ceil: false },
  { name: 'AlexNet (LPIPS)', channels: 64, size: 55, kernel: 3, stride: 2, pad: 0, ceil: false },
  { name: 'SqueezeNet / GoogLeNet (ceil_mode)', channels: 96, size: 109, kernel: 3, stride: 2, pad: 0, ceil: true },
]

const outSize = (p: Pool) => (p.ceil ? Math.ceil : Math.floor)((p.size + 2 * p.pad - p.kernel) / p.stride) + 1
const poolAttrs = (p: Pool) => ({ kernel_shape: [p.kernel, p.kernel], strides: [p.stride, p.stride], pads: [p.pad, p.pad, p.pad, p.pad], ceil_mode: p.ceil ? 1 : 0 })

type Variant = (g: GraphBuilder, x: string, dy: string, p: Pool) => string

const scatter: Variant = (g, x, dy, p) => {
  const [, indices] = g.node('MaxPool', [x], poolAttrs(p), 2)
  const zeros = g.op('ConstantOfShape', [g.ints([p.channels * p.size * p.size])], { value: tensor('zero', 'float32', [1], [0]) })
  const scattered = g.op('ScatterElements', [zeros, g.op('Reshape', [indices, g.ints([-1])]), g.op('Reshape', [dy, g.ints([-1])])], { axis: 0, reduction: 'add' })
  return g.op('Reshape', [scattered, g.ints([1, p.channels, p.size, p.size])])
}

const oneHot: Variant = (g, x, dy, p) => {
  const [, indices] = g.node('MaxPool', [x], poolAttrs(p), 2)
  const o = outSize(p), k = p.kernel, K = k * k
  const int = (v: number) => g.constant([v], [], 'int64')
  const within = g.op('Mod', [indices, int(p.size * p.size)])
  const row = g.op('Sub', [g.op('Div', [within, int(p.size)]), g.constant(Array.from({ length: o }, (_, i) => i * p.stride - p.pad), [o, 1], 'int64')])
  const col = g.op('Sub', [g.op('Mod', [within, int(p.size)]), g.constant(Array.from({ length: o }, (_, i) => i * p.stride - p.pad), [1, o], 'int64')])
  const offset = g.op('Add', [g.op('Mul', [row, int(k)]), col])
  const hot = g.op('Equal', [g.op('Unsqueeze', [offset, g.ints([2])]), g.constant(Array.from({ length: K }, (_, i) => i), [1, 1, K, 1, 1], 'int64')])
  const spread = g.op('Where', [hot, g.op('Unsqueeze', [dy, g.ints([2])]), g.constant(0, [])])
  const eye = g.constant(Array.from({ length: K * K }, (_, i) => (Math.floor(i / K) === i % K ? 1 : 0)), [K, 1, k, k])
  const missed = p.size + 2 * p.pad - (p.stride * (o - 1) + k)
  const back = g.op('ConvTranspose', [g.op('Reshape', [spread, g.ints([p.channels, K, o, o])]), eye],
    { strides: [p.stride, p.stride], pads: [p.pad, p.pad, p.pad, p.pad], output_padding: missed >= 0 ? [missed, missed] : [0, 0] })
  const sized = missed >= 0 ? back : g.op('Slice', [back, g.ints([0, 0]), g.ints([p.size, p.size]), g.ints([2, 3])])
  return g.op('Reshape', [sized, g.ints([1, p.channels, p.size, p.size])])
}

const shifted: Variant = (g, x, dy, p) => {
  const y = g.op('MaxPool', [x], poolAttrs(p))
  const o = outSize(p), k = p.kernel, s = p.stride
  const span = s * o + k // room for every shifted, interleaved copy
  const padded = g.op('Pad', [x, g.ints([0, 0, p.pad, p.pad, 0, 0, span - p.size - p.pad, span - p.size - p.pad]), g.constant(-Infinity, [])])
  let taken: string | undefined
  const parts: string[] = []
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) {
    const seen = g.op('Slice', [padded, g.ints([i, j]), g.ints([i + s * (o - 1) + 1, j + s * (o - 1) + 1]), g.ints([2, 3]), g.ints([s, s])])
    const hit = g.op('Equal', [seen, y])
    const first = taken ? g.op('And', [hit, g.op('Not', [taken])]) : hit
    taken = taken ? g.op('Or', [taken, hit]) : hit
    const part = g.op('Where', [first, dy, g.constant(0, [])])
    const interleaved = g.op('Reshape', [g.op('Pad', [g.op('Unsqueeze', [part, g.ints([3, 5])]), g.ints([0, 0, 0, 0, 0, 0, 0, 0, 0, s - 1, 0, s - 1])]), g.ints([1, p.channels, s * o, s * o])])
    parts.push(g.op('Pad', [interleaved, g.ints([0, 0, i, j, 0, 0, span - s * o - i, span - s * o - j])]))
  }
  return g.op('Slice', [g.op('Sum', parts), g.ints([p.pad, p.pad]), g.ints([p.pad + p.size, p.pad + p.size]), g.ints([2, 3])])
}

// the k² window offsets of x at once (a grouped Conv with one-hot kernels over x padded with −FLT_MAX, one
// channel per offset), compared with y; g split between the tied offsets and put back by a one-hot ConvTranspose
const compared: Variant = (g, x, dy, p) => {
  const y = g.op('MaxPool', [x], poolAttrs(p))
  const o = outSize(p), k = p.kernel, K = k * k, s = p.stride, C = p.channels
  const reach = s * (o - 1) + k
  const eye = g.constant(Array.from({ length: C * K * K }, (_, i) => (Math.floor(i / K) % K === i % K ? 1 : 0)), [C * K, 1, k, k])
  const padded = g.op('Pad', [x, g.ints([0, 0, p.pad, p.pad, 0, 0, reach - p.size - p.pad, reach - p.size - p.pad]), g.constant(-3.4e38, [])])
  const offsets = g.op('Reshape', [g.op('Conv', [padded, eye], { strides: [s, s], group: C }), g.ints([C, K, o, o])])
  const hits = g.op('Cast', [g.op('Equal', [offsets, g.op('Reshape', [y, g.ints([-1, 1, o, o])])])], { to: 1 })
  const share = g.op('Div', [g.op('Reshape', [dy, g.ints([-1, 1, o, o])]), g.op('ReduceSum', [hits, g.ints([1])], { keepdims: 1 })])
  const spread = g.constant(Array.from({ length: K * K }, (_, i) => (Math.floor(i / K) === i % K ? 1 : 0)), [K, 1, k, k])
  const back = g.op('ConvTranspose', [g.op('Mul', [hits, share]), spread], { strides: [s, s] })
  const cut = g.op('Pad', [back, g.ints([0, 0, -p.pad, -p.pad, 0, 0, p.size + p.pad - reach, p.size + p.pad - reach])])
  return g.op('Reshape', [cut, g.ints([1, p.channels, p.size, p.size])])
}

// max is separable: the 2-D pool is a pool along W then one along H, and the first maximum in row-major order is
// the first row holding the maximum, then its first column, so each 1-D pass sends g to its first maximum.
// Along one axis, window j reads padded position s·j + t; offset t = q·s + p lands on phase p at index j + q.
const separable: Variant = (g, x, dy, p) => {
  const o = outSize(p), k = p.kernel, s = p.stride, C = p.channels
  const rows = g.op('MaxPool', [x], { kernel_shape: [1, k], strides: [1, s], pads: [0, p.pad, 0, p.pad], ceil_mode: p.ceil ? 1 : 0 })
  const y = g.op('MaxPool', [x], poolAttrs(p))
  const Q = Math.ceil(k / s), phaseLength = o + Q - 1
  // v: the pass's input (n long on axis), u: its output, gu: u's gradient; returns v's gradient
  const pass = (v: string, u: string, gu: string, axis: number, n: number, otherDims: number[]) => {
    // Pad's pads for `before` and `after` elements on `axis` only
    const padsOn = (before: number, after: number) => g.ints([0, 1, 2, 3].map(i => (i === axis ? before : 0)).concat([0, 1, 2, 3].map(i => (i === axis ? after : 0))))
    const padded = g.op('Pad', [v, padsOn(p.pad, Math.max(s * phaseLength - n - p.pad, 0)), g.constant(-Infinity, [])])
    const parts: string[] = []
    let rest = gu
    for (let t = 0; t < k; t++) {
      if (t === k - 1) { parts.push(rest); break }
      const seen = g.op('Slice', [padded, g.ints([t]), g.ints([t + s * (o - 1) + 1]), g.ints([axis]), g.ints([s])])
      const part = g.op('Where', [g.op('Equal', [seen, u]), rest, g.constant(0, [])])
      parts.push(part)
      rest = g.op('Sub', [rest, part])
    }
    const phases = Array.from({ length: s }, (_, ph) => {
      // k > s here (overlapping windows), so every phase receives at least one offset
      const shifted = parts.flatMap((part, t) => (t % s !== ph ? [] : [Q === 1 ? part : g.op('Pad', [part, padsOn(Math.floor(t / s), Q - 1 - Math.floor(t / s))])]))
      return g.op('Unsqueeze', [shifted.length === 1 ? shifted[0] : g.op('Sum', shifted), g.ints([axis + 1])])
    })
    const dims = axis === 3 ? [1, C, ...otherDims, s * phaseLength] : [1, C, s * phaseLength, ...otherDims]
    const whole = g.op('Reshape', [g.op('Concat', phases, { axis: axis + 1 }), g.ints(dims)])
    return g.op('Slice', [whole, g.ints([p.pad]), g.ints([p.pad + n]), g.ints([axis])])
  }
  const dRows = pass(rows, y, dy, 2, p.size, [o])
  return pass(x, rows, dRows, 3, p.size, [p.size])
}

// the s² phase planes of x (SpaceToDepth): window (i, j)'s offset (q·s + a, r·s + b) reads plane (a, b) at
// (i + q, j + r), a contiguous slice; g goes to the first offset (row-major) equal to y, planes interleaved back by DepthToSpace
const phases: Variant = (g, x, dy, p) => {
  const o = outSize(p), k = p.kernel, s = p.stride, C = p.channels
  const y = g.op('MaxPool', [x], poolAttrs(p))
  const Q = Math.ceil(k / s), L = o + Q - 1, end = s * L - p.size - p.pad
  const padded = g.op('Pad', [x, g.ints([0, 0, p.pad, p.pad, 0, 0, end, end]), g.constant(-Infinity, [])])
  const planes = g.op('Reshape', [g.op('SpaceToDepth', [padded], { blocksize: s }), g.ints([1, s * s, C, L, L])])
  const u = g.op('Unsqueeze', [y, g.ints([1])])
  let rest = g.op('Unsqueeze', [dy, g.ints([1])])
  const byPlane: string[][] = Array.from({ length: s * s }, () => [])
  for (let th = 0; th < k; th++) for (let tw = 0; tw < k; tw++) {
    const [qh, a, qw, b] = [Math.floor(th / s), th % s, Math.floor(tw / s), tw % s]
    let part = rest
    if (th < k - 1 || tw < k - 1) {
      const seen = g.op('Slice', [planes, g.ints([a * s + b, qh, qw]), g.ints([a * s + b + 1, qh + o, qw + o]), g.ints([1, 3, 4])])
      part = g.op('Where', [g.op('Equal', [seen, u]), rest, g.constant(0, [])])
      rest = g.op('Sub', [rest, part])
    }
    byPlane[a * s + b].push(g.op('Pad', [part, g.ints([0, 0, 0, qh, qw, 0, 0, 0, Q - 1 - qh, Q - 1 - qw])]))
  }
  const summed = byPlane.map(parts => (parts.length === 1 ? parts[0] : g.op('Sum', parts)))
  const whole = g.op('DepthToSpace', [g.op('Reshape', [g.op('Concat', summed, { axis: 1 }), g.ints([1, s * s * C, L, L])])], { blocksize: s, mode: 'DCR' })
  return g.op('Slice', [whole, g.ints([p.pad, p.pad]), g.ints([p.pad + p.size, p.pad + p.size]), g.ints([2, 3])])
}

const VARIANTS: Record<string, { opset: number; build: Variant }> = { scatter: { opset: 16, build: scatter }, 'one-hot': { opset: 13, build: oneHot }, shifted: { opset: 13, build: shifted }, compared: { opset: 13, build: compared }, separable: { opset: 13, build: separable }, phases: { opset: 13, build: phases } }

async function time(model: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<{ ms: number; dx: Float32Array }> {
  const session = await ort.InferenceSession.create(model, sessionOptions('cpu', 1))
  let best = Infinity
  let dx: Float32Array | undefined
  for (let i = 0; i <= runs; i++) {
    const start = performance.now()
    const out = await session.run(feeds)
    if (i > 0) best = Math.min(best, performance.now() - start)
    dx = out.dx.data as Float32Array
  }
  await session.release()
  return { ms: best, dx: dx! }
}

async function profileOf(model: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<[string, number][]> {
  const folder = await mkdtemp(join(tmpdir(), 'maxpool-bench-'))
  try {
    await writeFile(join(folder, 'model.onnx'), model)
    return await profileByOp(join(folder, 'model.onnx'), feeds, runs)
  } finally {
    await rm(folder, { recursive: true, force: true })
  }
}

for (const p of POOLS) {
  const rand = seededNormal(3)
  const o = outSize(p)
  // rounded inputs: ties in the windows, as after a ReLU
  const feeds = {
    x: new ort.Tensor('float32', Float32Array.from({ length: p.channels * p.size * p.size }, () => Math.max(0, Math.round(rand() * 4) / 4)), [1, p.channels, p.size, p.size]),
    dy: new ort.Tensor('float32', Float32Array.from({ length: p.channels * o * o }, rand), [1, p.channels, o, o]),
  }
  console.log(`${p.name}: ${p.channels}×${p.size}², ${p.kernel}×${p.kernel} stride ${p.stride} pad ${p.pad}${p.ceil ? ' ceil_mode' : ''}`)
  let reference: Float32Array | undefined
  for (const [name, { opset, build }] of Object.entries(VARIANTS)) {
    const g = new GraphBuilder(name, opset)
    const dx = build(g, g.input('x', 'float32', [1, p.channels, p.size, p.size]), g.input('dy', 'float32', [1, p.channels, o, o]), p)
    g.outputAs(dx, 'dx', 'float32', [1, p.channels, p.size, p.size])
    const model = encodeModel(g.build())
    const { ms, dx: values } = await time(model, feeds)
    reference ??= values
    const difference = values.reduce((worst, v, i) => Math.max(worst, Math.abs(v - reference![i])), 0)
    console.log(`  ${name.padEnd(8)} ${ms.toFixed(2).padStart(7)} ms   max |dx − scatter's| ${difference.toExponential(1)}`)
    if (profile) console.log(`           ${(await profileOf(model, feeds)).map(([op, opMs]) => `${op} ${opMs.toFixed(2)}`).join(', ')} ms`)
  }
}
