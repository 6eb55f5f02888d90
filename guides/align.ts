// Face alignment: the transform is found outside the gradient (landmarks → similarity matrix, in JS), the
// warp is taken inside it (bilinear sampling with Gather), so the aligned crop is differentiable w.r.t. the image.
import type { GraphBuilder } from '../src/onnx/builder.js'
import type { Box } from './facenet/detector.js'
import type { Point } from './face.js'
import type { Size } from './guide.js'

/** A 2×3 affine matrix [a, b, c, d, e, f]: (x, y) → (a·x + b·y + c, d·x + e·y + f). */
export type Affine = [number, number, number, number, number, number]

/** insightface's ArcFace template for 112×112 crops (utils/face_align.py): eyes, nose, mouth corners. */
export const ARCFACE_TEMPLATE: Point[] = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
]

/**
 * The least-squares similarity transform (rotation, uniform scale, translation) taking `from` to `to`
 * (Umeyama 1991, as skimage's SimilarityTransform.estimate, which insightface uses).
 */
export function similarityTransform(from: Point[], to: Point[]): Affine {
  const n = from.length
  const mean = (ps: Point[]) => [ps.reduce((s, p) => s + p[0], 0) / n, ps.reduce((s, p) => s + p[1], 0) / n]
  const [mx, my] = mean(from)
  const [nx, ny] = mean(to)
  // In 2-D a similarity is x' = a·x − b·y + tx, y' = b·x + a·y + ty; least squares on centred points
  let num_a = 0
  let num_b = 0
  let den = 0
  for (let i = 0; i < n; i++) {
    const x = from[i][0] - mx
    const y = from[i][1] - my
    const u = to[i][0] - nx
    const v = to[i][1] - ny
    num_a += x * u + y * v
    num_b += x * v - y * u
    den += x * x + y * y
  }
  const a = num_a / den
  const b = num_b / den
  return [a, -b, nx - a * mx + b * my, b, a, ny - b * mx - a * my]
}

export function invertAffine([a, b, c, d, e, f]: Affine): Affine {
  const det = a * e - b * d
  return [e / det, -b / det, (b * f - c * e) / det, -d / det, a / det, (c * d - a * f) / det]
}

export function applyAffine([a, b, c, d, e, f]: Affine, [x, y]: Point): Point {
  return [a * x + b * y + c, d * x + e * y + f]
}

/** Image → crop transform of insightface's norm_crop: five points onto the ArcFace template scaled to `size`. */
export function arcfaceTransform(points: Point[], size = 112): Affine {
  return similarityTransform(points, ARCFACE_TEMPLATE.map(([x, y]): Point => [(x * size) / 112, (y * size) / 112]))
}

/**
 * Image → crop transform of face-api's recognition crop: the landmarks' bounding box grown by 20% of its size
 * (10% a side), made square about its centre, scaled to `size`.
 */
export function faceApiTransform(landmarks: Point[], size: number): Affine {
  const xs = landmarks.map(p => p[0])
  const ys = landmarks.map(p => p[1])
  const box: Box = { x: Math.min(...xs), y: Math.min(...ys), width: Math.max(...xs) - Math.min(...xs), height: Math.max(...ys) - Math.min(...ys) }
  const side = 1.2 * Math.max(box.width, box.height)
  const scale = size / side
  const cx = box.x + box.width / 2
  const cy = box.y + box.height / 2
  return [scale, 0, size / 2 - scale * cx, 0, scale, size / 2 - scale * cy]
}

/** A transform between two image sizes (the same content stretched). */
export function rescaleAffine(m: Affine, from: { width: number; height: number }, to: { width: number; height: number }): Affine {
  const sx = from.width / to.width
  const sy = from.height / to.height
  // crop ← old image ← new image: compose with (x, y) → (sx·x, sy·y)
  return [m[0] * sx, m[1] * sy, m[2], m[3] * sx, m[4] * sy, m[5]]
}

/**
 * Appends a bilinear warp: output pixel (u, v) of the `out` crop samples `image` ([1,3,H,W]) at
 * matrix · (u, v, 1), pixel centres at integer coordinates (cv2.warpAffine's convention), coordinates
 * clamped to the image (edge pixels repeat). `matrix` is a [2,3] crop → image value. The sampling
 * positions and weights depend only on the matrix; the image enters through Gather and Mul, so the
 * crop is differentiable w.r.t. the image and not w.r.t. the matrix.
 */
export function warpAffine(g: GraphBuilder, image: string, size: Size, matrix: string, out: Size): string {
  const { height: H, width: W } = size
  const P = out.height * out.width
  const grid = new Float32Array(P * 3)
  for (let v = 0; v < out.height; v++) for (let u = 0; u < out.width; u++) grid.set([u, v, 1], (v * out.width + u) * 3)
  const positions = g.op('MatMul', [g.constant(grid, [P, 3], 'float32', 'warp_grid'), g.op('Transpose', [matrix], { perm: [1, 0] })])
  const scalar = (v: number) => g.constant([v], [], 'float32', 'warp_scalar')
  const axis = (column: number, extent: number) => {
    const s = g.op('Clip', [g.op('Gather', [positions, g.constant([column], [], 'int64', 'warp_axis')], { axis: 1 }), scalar(0), scalar(extent - 1)])
    const low = g.op('Min', [g.op('Floor', [s]), scalar(Math.max(extent - 2, 0))])
    const frac = g.op('Sub', [s, low])
    return { low, frac, rest: g.op('Sub', [scalar(1), frac]) }
  }
  const x = axis(0, W)
  const y = axis(1, H)
  const row0 = g.op('Mul', [y.low, scalar(W)])
  const row1 = g.op('Add', [row0, scalar(H > 1 ? W : 0)])
  const right = scalar(W > 1 ? 1 : 0)
  const corners = [
    [row0, x.low, y.rest, x.rest],
    [row0, g.op('Add', [x.low, right]), y.rest, x.frac],
    [row1, x.low, y.frac, x.rest],
    [row1, g.op('Add', [x.low, right]), y.frac, x.frac],
  ]
  const index = g.op('Cast', [g.op('Concat', corners.map(([r, c]) => g.op('Add', [r, c])), { axis: 0 })], { to: 7 })
  const weights = g.op('Reshape', [g.op('Concat', corners.map(([, , wy, wx]) => g.op('Mul', [wy, wx])), { axis: 0 }), g.ints([1, 1, 4, P])])
  const flat = g.op('Reshape', [image, g.ints([1, 3, H * W])])
  const picked = g.op('Reshape', [g.op('Gather', [flat, index], { axis: 2 }), g.ints([1, 3, 4, P])])
  const mixed = g.op('ReduceSum', [g.op('Mul', [picked, weights]), g.ints([2])], { keepdims: 0 })
  return g.op('Reshape', [mixed, g.ints([1, 3, out.height, out.width])])
}

/**
 * Resizes `image` to `to` inside the graph, differentiably: an average pool first where it shrinks by 2× or
 * more (against aliasing), then bilinear sampling. 'cover' scales the shorter side and centre-crops (CLIP's
 * preprocessing); 'stretch' maps the whole image.
 */
export function resizeFragment(g: GraphBuilder, image: string, size: Size, to: Size, fit: 'cover' | 'stretch'): string {
  const pool = Math.max(1, Math.floor(Math.min(size.height / to.height, size.width / to.width)))
  let x = image
  let from = size
  if (pool >= 2) {
    x = g.op('AveragePool', [image], { kernel_shape: [pool, pool], strides: [pool, pool] })
    from = { height: Math.floor(size.height / pool), width: Math.floor(size.width / pool) }
  }
  const sx = fit === 'cover' ? Math.min(from.width / to.width, from.height / to.height) : from.width / to.width
  const sy = fit === 'cover' ? sx : from.height / to.height
  // output pixel centre u + ½ lands at (u + ½)·s + offset in the source, pixel centres at integers
  const ox = (from.width - to.width * sx) / 2 + 0.5 * sx - 0.5
  const oy = (from.height - to.height * sy) / 2 + 0.5 * sy - 0.5
  const matrix: Affine = [sx, 0, ox, 0, sy, oy]
  return warpAffine(g, x, from, g.constant(Float32Array.from(matrix), [2, 3], 'float32', 'resize_matrix'), to)
}
