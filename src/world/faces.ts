// Stylised faces drawn by code: the demo world's embedded default identities, so a fresh machine needs no images.
// Each face is a stack of anti-aliased shapes given by signed distance functions in coordinates u (right) and
// v (down), both in [-1,1]; coverage of a pixel = clamp(½ − distance / pixel size).

type RGB = readonly [number, number, number]
type HairStyle = 'short' | 'long' | 'bald' | 'bun' | 'curly' | 'sidepart' | 'buzz'

export interface FaceParameters {
  name: string
  skin: RGB
  hair: RGB
  style: HairStyle
  /** face half-width, half-height, superellipse exponent (2 = oval, larger = squarer) */
  face: readonly [number, number, number]
  /** eye half-spacing, height, half-width, half-height */
  eyes: readonly [number, number, number, number]
  iris: RGB
  /** brow tilt (positive: outer end lower), thickness */
  brows: readonly [number, number]
  /** mouth half-width, smile (positive: corners up), lip thickness */
  mouth: readonly [number, number, number]
  lips: RGB
  background: RGB
  shirt: RGB
  glasses?: boolean
  beard?: boolean
  moustache?: boolean
}

/** Twelve identities that differ in skin tone, face shape, hair, eyes, brows, mouth and accessories. */
export const DRAWN_FACES: readonly FaceParameters[] = [
  { name: 'ada', skin: [241, 200, 170], hair: [60, 35, 20], style: 'long', face: [0.5, 0.64, 2], eyes: [0.2, -0.02, 0.1, 0.055], iris: [60, 110, 170], brows: [0.02, 0.025], mouth: [0.15, 0.05, 0.03], lips: [190, 80, 90], background: [170, 200, 230], shirt: [200, 60, 60] },
  { name: 'ben', skin: [200, 150, 110], hair: [20, 15, 10], style: 'short', face: [0.56, 0.62, 2.6], eyes: [0.22, 0.0, 0.09, 0.045], iris: [70, 45, 25], brows: [-0.03, 0.04], mouth: [0.18, -0.01, 0.03], lips: [150, 90, 80], background: [220, 220, 190], shirt: [40, 70, 140], beard: true },
  { name: 'cleo', skin: [120, 80, 55], hair: [15, 10, 10], style: 'curly', face: [0.52, 0.62, 2.2], eyes: [0.21, -0.01, 0.1, 0.06], iris: [50, 30, 20], brows: [0.0, 0.03], mouth: [0.17, 0.07, 0.045], lips: [110, 50, 50], background: [240, 190, 120], shirt: [240, 230, 100] },
  { name: 'dev', skin: [170, 120, 85], hair: [30, 25, 25], style: 'sidepart', face: [0.5, 0.68, 2.3], eyes: [0.2, 0.0, 0.085, 0.04], iris: [60, 40, 30], brows: [0.03, 0.035], mouth: [0.14, 0.0, 0.03], lips: [140, 80, 70], background: [180, 230, 200], shirt: [90, 90, 90], glasses: true },
  { name: 'eva', skin: [250, 215, 190], hair: [230, 190, 110], style: 'bun', face: [0.47, 0.6, 2], eyes: [0.19, -0.03, 0.095, 0.06], iris: [80, 150, 120], brows: [0.02, 0.02], mouth: [0.13, 0.06, 0.035], lips: [210, 90, 110], background: [200, 170, 220], shirt: [60, 160, 150] },
  { name: 'finn', skin: [235, 185, 150], hair: [180, 70, 30], style: 'short', face: [0.53, 0.6, 2.1], eyes: [0.2, 0.02, 0.08, 0.05], iris: [70, 130, 60], brows: [0.0, 0.03], mouth: [0.2, 0.09, 0.03], lips: [200, 100, 90], background: [150, 190, 150], shirt: [230, 140, 40] },
  { name: 'gus', skin: [215, 170, 140], hair: [170, 170, 170], style: 'bald', face: [0.55, 0.66, 2.4], eyes: [0.21, 0.01, 0.08, 0.035], iris: [90, 100, 120], brows: [-0.04, 0.045], mouth: [0.16, -0.04, 0.025], lips: [160, 100, 95], background: [210, 200, 240], shirt: [120, 50, 90], moustache: true },
  { name: 'hana', skin: [238, 205, 160], hair: [10, 10, 20], style: 'long', face: [0.46, 0.62, 2], eyes: [0.2, 0.0, 0.1, 0.04], iris: [40, 25, 20], brows: [0.01, 0.025], mouth: [0.12, 0.03, 0.04], lips: [200, 60, 70], background: [250, 210, 210], shirt: [250, 250, 250] },
  { name: 'ike', skin: [115, 78, 58], hair: [10, 10, 10], style: 'buzz', face: [0.54, 0.66, 2.8], eyes: [0.22, 0.0, 0.09, 0.05], iris: [40, 25, 15], brows: [-0.02, 0.04], mouth: [0.19, 0.04, 0.05], lips: [90, 45, 45], background: [120, 170, 220], shirt: [200, 200, 60], beard: true },
  { name: 'jo', skin: [225, 175, 135], hair: [110, 70, 40], style: 'sidepart', face: [0.5, 0.6, 2.1], eyes: [0.19, -0.02, 0.09, 0.05], iris: [100, 70, 40], brows: [0.04, 0.03], mouth: [0.15, 0.08, 0.035], lips: [180, 90, 90], background: [230, 230, 230], shirt: [150, 40, 40] },
  { name: 'kai', skin: [190, 140, 100], hair: [240, 240, 235], style: 'curly', face: [0.5, 0.64, 2.3], eyes: [0.2, 0.01, 0.085, 0.045], iris: [60, 60, 70], brows: [0.0, 0.03], mouth: [0.16, 0.0, 0.035], lips: [150, 85, 75], background: [100, 120, 110], shirt: [70, 120, 200], glasses: true },
  { name: 'lin', skin: [245, 210, 175], hair: [50, 30, 25], style: 'bun', face: [0.49, 0.62, 2], eyes: [0.21, 0.0, 0.1, 0.035], iris: [45, 30, 25], brows: [-0.01, 0.02], mouth: [0.14, 0.1, 0.03], lips: [220, 110, 120], background: [190, 220, 170], shirt: [110, 60, 150] },
]

type Sdf = (u: number, v: number) => number

const ellipse = (cx: number, cy: number, rx: number, ry: number): Sdf => (u, v) =>
  (Math.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2) - 1) * Math.min(rx, ry)

const superellipse = (cx: number, cy: number, rx: number, ry: number, n: number): Sdf => (u, v) =>
  ((Math.abs((u - cx) / rx) ** n + Math.abs((v - cy) / ry) ** n) ** (1 / n) - 1) * Math.min(rx, ry)

/** Distance to a polyline, minus its half-thickness. */
const stroke = (points: readonly (readonly [number, number])[], radius: number): Sdf => (u, v) => {
  let best = Infinity
  for (let i = 1; i < points.length; i++) {
    const [ax, ay] = points[i - 1]
    const [bx, by] = points[i]
    const dx = bx - ax
    const dy = by - ay
    const h = Math.min(1, Math.max(0, ((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy)))
    best = Math.min(best, Math.hypot(u - ax - h * dx, v - ay - h * dy))
  }
  return best - radius
}

const union = (...parts: Sdf[]): Sdf => (u, v) => {
  let d = Infinity
  for (const f of parts) d = Math.min(d, f(u, v))
  return d
}
const intersect = (...parts: Sdf[]): Sdf => (u, v) => {
  let d = -Infinity
  for (const f of parts) d = Math.max(d, f(u, v))
  return d
}
const mirrored = (make: (side: 1 | -1) => Sdf): Sdf => union(make(-1), make(1))
const shade = (c: RGB, k: number): RGB => [c[0] * k, c[1] * k, c[2] * k]

/** Layers back to front: [shape, colour (0–255), opacity]. */
function layers(f: FaceParameters): [Sdf, RGB, number][] {
  const [rx, ry, n] = f.face
  const cy = 0.05
  const out: [Sdf, RGB, number][] = []
  const add = (shape: Sdf, colour: RGB, opacity = 1) => out.push([shape, colour, opacity])

  if (f.style === 'long') add(intersect(superellipse(0, cy + 0.15, rx + 0.14, ry + 0.25, 2.4), (_u, v) => v - 0.8), f.hair)
  if (f.style === 'curly') add(ellipse(0, cy - 0.12, rx + 0.24, ry + 0.12), f.hair)
  add(ellipse(0, 1.3, 0.9, 0.55), f.shirt)
  add(superellipse(0, 0.7, rx * 0.42, 0.3, 4), shade(f.skin, 0.85))
  add(mirrored(s => ellipse(s * rx, cy + 0.03, 0.08, 0.13)), shade(f.skin, 0.93))
  const face = superellipse(0, cy, rx, ry, n)
  add(face, f.skin)

  const hairTop: Record<HairStyle, Sdf | undefined> = {
    short: intersect(ellipse(0, cy - 0.05, rx + 0.05, ry + 0.06), (u, v) => v - (-0.3 + 0.5 * u * u)),
    long: intersect(ellipse(0, cy - 0.05, rx + 0.06, ry + 0.07), (u, v) => v - (-0.36 + 0.9 * u * u)),
    bald: intersect(ellipse(0, cy, rx + 0.03, ry * 0.75), (u, v) => Math.abs(u) < rx * 0.8 ? 1 : v + 0.05),
    bun: union(ellipse(0, cy - ry - 0.1, 0.17, 0.14), intersect(ellipse(0, cy - 0.04, rx + 0.04, ry + 0.05), (u, v) => v - (-0.38 + 0.7 * u * u))),
    curly: intersect(ellipse(0, cy - 0.08, rx + 0.12, ry + 0.1), (u, v) => v - (-0.32 + 0.4 * u * u)),
    sidepart: intersect(ellipse(0, cy - 0.05, rx + 0.05, ry + 0.06), (u, v) => v - (-0.36 + 0.12 * u + 0.6 * u * u)),
    buzz: intersect(face, (u, v) => v - (-0.4 + 0.4 * u * u)),
  }
  const top = hairTop[f.style]
  if (top) add(top, f.hair, f.style === 'buzz' ? 0.8 : 1)

  const [ex, ey, ew, eh] = f.eyes
  const eyeY = cy + ey
  add(mirrored(s => ellipse(s * ex, eyeY, ew, eh)), [250, 250, 250])
  add(mirrored(s => ellipse(s * ex, eyeY, eh * 0.85, eh * 0.85)), f.iris)
  add(mirrored(s => ellipse(s * ex, eyeY, eh * 0.4, eh * 0.4)), [15, 15, 20])
  const [tilt, thick] = f.brows
  const browY = eyeY - eh - 0.07
  add(mirrored(s => stroke([[s * (ex - ew), browY - tilt / 2], [s * (ex + ew * 1.1), browY + tilt / 2]], thick)), shade(f.hair, 0.7))

  add(stroke([[0.0, cy + 0.02], [0.025, cy + 0.17], [-0.02, cy + 0.2]], 0.018), shade(f.skin, 0.75))
  add(mirrored(s => ellipse(s * (ex + 0.02), cy + 0.2, 0.08, 0.05)), [230, 110, 110], 0.18)

  const [mw, smile, lip] = f.mouth
  const mouthY = cy + 0.33
  const curve = Array.from({ length: 9 }, (_, i) => {
    const x = -mw + (2 * mw * i) / 8
    return [x, mouthY - smile * (x / mw) ** 2] as const
  })
  if (f.beard) add(intersect(face, (_u, v) => mouthY - 0.08 - v, (u, v) => -stroke(curve, lip + 0.03)(u, v)), shade(f.hair, 0.9), 0.9)
  add(stroke(curve, lip), f.lips)
  if (f.moustache) add(stroke([[-mw * 1.1, mouthY - 0.02], [0, mouthY - 0.08], [mw * 1.1, mouthY - 0.02]], 0.03), shade(f.hair, 0.8))
  if (f.glasses) {
    const ring = (s: number): Sdf => (u, v) => Math.abs(Math.hypot(u - s * ex, v - eyeY) - ew * 1.35) - 0.014
    add(union(ring(-1), ring(1), stroke([[-ex + ew * 1.35, eyeY], [ex - ew * 1.35, eyeY]], 0.014)), [30, 30, 30])
  }
  return out
}

/** Draws one face as a [3,size,size] float32 image in [-1,1] (channel-major, like the decoders' output). */
export function drawFace(face: FaceParameters, size: number): Float32Array {
  const plane = size * size
  const rgb = new Float64Array(3 * plane)
  const pixel = 2 / size
  for (let y = 0; y < size; y++) {
    const v = ((y + 0.5) / size) * 2 - 1
    for (let x = 0; x < size; x++) {
      // the background brightens slightly towards the top
      const k = 1.05 - 0.1 * ((v + 1) / 2)
      for (let c = 0; c < 3; c++) rgb[c * plane + y * size + x] = Math.min(255, face.background[c] * k)
    }
  }
  for (const [shape, colour, opacity] of layers(face)) {
    for (let y = 0; y < size; y++) {
      const v = ((y + 0.5) / size) * 2 - 1
      for (let x = 0; x < size; x++) {
        const u = ((x + 0.5) / size) * 2 - 1
        const alpha = opacity * Math.min(1, Math.max(0, 0.5 - shape(u, v) / pixel))
        if (alpha === 0) continue
        const i = y * size + x
        for (let c = 0; c < 3; c++) rgb[c * plane + i] += alpha * (colour[c] - rgb[c * plane + i])
      }
    }
  }
  return Float32Array.from(rgb, value => value / 127.5 - 1)
}
