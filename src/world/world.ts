// Building the demo world from a set of face images: components (each image, its mirror image, small shifts),
// their latents under the fixed codec, and the set's own principal subspace with the shared covariance c·Σ_pca.
import { readdir } from 'node:fs/promises'
import { extname, join, parse } from 'node:path'
import { EVD, Matrix } from 'ml-matrix'
import sharp from 'sharp'
import { UserError, check } from '../errors.js'
import { imageFromPixels, imageToPixels, loadImage, type ImageTensor } from '../image/image.js'
import { LATENT_CHANNELS, LATENT_FACTOR, encodeImage, makeCodec, type Codec } from './codec.js'
import { DRAWN_FACES, drawFace } from './faces.js'
import { chiQuantile, lift, nearestComponent, project, type Mixture } from './mixture.js'

export interface WorldSettings {
  /** image side in pixels (a multiple of 8); latents are side/8 square */
  size: number
  /** subspace rank r; default: the smallest r ≥ identities − 1 that keeps ≥ 90% of the components' variance */
  rank?: number
  /** c: component covariance = c·Σ_pca */
  spread: number
  /** the shift components' offset in pixels (±shift horizontally and vertically) */
  shift: number
  /** steps of the LCM graph's probability-flow solve (DPM-Solver++(2M)), and the σ it stops at before its final denoise */
  lcmSteps: number
  sigmaMin: number
}

export const DEFAULT_WORLD_SETTINGS: WorldSettings = { size: 256, spread: 0.1, shift: 6, lcmSteps: 200, sigmaMin: 1e-3 }

export interface Component {
  identity: number
  flip: boolean
  /** [dx, dy] in pixels */
  shift: [number, number]
}

/** Bumped whenever the world's construction changes, so that saved worlds are rebuilt. */
export const WORLD_VERSION = 1

export interface DemoWorld extends Mixture {
  /** 'drawn' for the embedded faces, else the image folder it was built from */
  source: string
  settings: WorldSettings & { rank: number }
  /** identity names (file names without extension, or the drawn faces' names) */
  identities: string[]
  components: Component[]
  /** Σ_pca's eigenvalues λ in the subspace (s = c·λ) */
  pcaVariances: Float64Array
  /** the fraction of the components' variance inside the subspace */
  explainedVariance: number
  /** the image and latent sizes, and the linear codec's maps */
  codec: Codec
  /** 'linear': the fixed linear codec; 'taesd': the real TAESDXL encoder and decoder (SDXL's latent space) */
  codecKind: CodecKind
}

export type CodecKind = 'linear' | 'taesd'

export interface FaceImage {
  name: string
  /** [3,size,size] in [-1,1] */
  pixels: Float32Array
}

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.gif', '.avif']

/** The embedded default: the drawn faces. */
export function drawnFaces(size: number): FaceImage[] {
  return DRAWN_FACES.map(face => ({ name: face.name, pixels: drawFace(face, size) }))
}

/** A face's box in image pixels, as a face detector gives it. */
export interface FaceBox {
  x: number
  y: number
  width: number
  height: number
}

/** Finds the faces in an image, best first (the guides' detector, passed in by the command: src/ does not import guides/). */
export type FaceFinder = (image: ImageTensor) => Promise<FaceBox[]>

/** How much larger than the face box the square crop is, so that hair, chin and some background are in it. */
const FACE_MARGIN = 1.8

/**
 * Every image in `dir` (sorted by name) as a square of `size` pixels: centre-cropped, or, with `findFaces`,
 * cropped to a square about its best face; with `everyFace` too, each face of the image is one identity
 * (named FILE-1, FILE-2… from left to right): group photos give many identities of like framing and light.
 */
export async function folderFaces(dir: string, size: number, findFaces?: FaceFinder, everyFace = false): Promise<FaceImage[]> {
  const names = await readdir(dir).catch(() => {
    throw new UserError(`cannot read the image folder ${dir}`)
  })
  const files = names.filter(name => IMAGE_EXTENSIONS.includes(extname(name).toLowerCase())).sort()
  const faces: FaceImage[] = []
  for (const file of files) {
    const path = join(dir, file)
    if (!findFaces) {
      faces.push({ name: parse(file).name, pixels: (await loadImage(path, { size, fit: 'cover' })).data })
      continue
    }
    const whole = await loadImage(path)
    const boxes = await findFaces(whole)
    check(boxes.length > 0, `no face found in ${path}: remove it or crop it by hand`)
    const chosen = everyFace ? [...boxes].sort((a, b) => a.x - b.x) : boxes.slice(0, 1)
    for (const [i, box] of chosen.entries()) {
      const name = everyFace && chosen.length > 1 ? `${parse(file).name}-${i + 1}` : parse(file).name
      faces.push({ name, pixels: (await faceCrop(whole, box, size)).data })
    }
  }
  check(faces.length >= 2, `${dir} gives ${faces.length} face(s); the demo world needs at least 2 (${IMAGE_EXTENSIONS.join(' ')})`)
  return faces
}

/** The square FACE_MARGIN times the box's larger side, centred a little above the box's centre, clipped to the image. */
export function faceSquare(box: FaceBox, image: { width: number; height: number }): FaceBox {
  const side = Math.min(image.width, image.height, Math.round(FACE_MARGIN * Math.max(box.width, box.height)))
  const centreX = box.x + box.width / 2
  const centreY = box.y + 0.4 * box.height
  const x = Math.round(Math.min(image.width - side, Math.max(0, centreX - side / 2)))
  const y = Math.round(Math.min(image.height - side, Math.max(0, centreY - side / 2)))
  return { x, y, width: side, height: side }
}

/** The face's square (faceSquare) of an image, resized to `size`: as the world's faces are cropped. */
export const faceCrop = (image: ImageTensor, box: FaceBox, size: number) => cropSquare(image, faceSquare(box, image), size)

async function cropSquare(image: ImageTensor, region: FaceBox, size: number): Promise<ImageTensor> {
  const { data, info } = await sharp(imageToPixels(image), { raw: { width: image.width, height: image.height, channels: 3 } })
    .extract({ left: region.x, top: region.y, width: region.width, height: region.height })
    .resize(size, size)
    .raw()
    .toBuffer({ resolveWithObject: true })
  return imageFromPixels(data, info.width, info.height, info.channels)
}

/** An image mirrored left-right and/or moved by [dx, dy] pixels (edges repeated). */
export function transformImage(pixels: Float32Array, size: number, flip: boolean, [dx, dy]: [number, number]): Float32Array {
  const out = new Float32Array(pixels.length)
  const clamp = (i: number) => Math.min(size - 1, Math.max(0, i))
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const sx = clamp(x - dx)
        out[(c * size + y) * size + x] = pixels[(c * size + clamp(y - dy)) * size + (flip ? size - 1 - sx : sx)]
      }
    }
  }
  return out
}

/** The components of a face set (each face, its mirror image, and shifts) and their images, before encoding. */
export function componentImages(faces: FaceImage[], settings: WorldSettings): { components: Component[]; images: Float32Array[] } {
  const { size, shift } = settings
  check(size % LATENT_FACTOR === 0 && size >= 4 * LATENT_FACTOR, `the world's image size must be a multiple of 8 and at least 32 (got ${size})`)
  check(faces.length >= 2, `the demo world needs at least 2 images (got ${faces.length})`)
  const offsets: [number, number][] = [[0, 0], [-shift, 0], [shift, 0], [0, -shift], [0, shift]]
  const components: Component[] = []
  const images: Float32Array[] = []
  faces.forEach((face, identity) => {
    for (const flip of [false, true]) {
      for (const offset of shift > 0 ? offsets : offsets.slice(0, 1)) {
        components.push({ identity, flip, shift: offset })
        images.push(transformImage(face.pixels, size, flip, offset))
      }
    }
  })
  return { components, images }
}

/** The world of the drawn faces or a face set, with the fixed linear codec. */
export function buildWorld(faces: FaceImage[], settings: WorldSettings = DEFAULT_WORLD_SETTINGS, source = 'drawn'): DemoWorld {
  const { components, images } = componentImages(faces, settings)
  const codec = makeCodec(settings.size)
  return worldFromLatents(faces, components, images.map(image => encodeImage(codec, image)), settings, source, 'linear')
}

/** The mixture over the components' latents (from either codec), in their principal subspace. */
export function worldFromLatents(faces: FaceImage[], components: Component[], latents: Float64Array[], settings: WorldSettings, source: string, codecKind: CodecKind): DemoWorld {
  if (settings.rank !== undefined) {
    check(Number.isInteger(settings.rank) && settings.rank >= 1 && settings.rank < components.length, `the subspace rank must be an integer in 1..${components.length - 1} (got ${settings.rank})`)
  }
  const pca = principalSubspace(latents, settings.rank ?? { atLeast: faces.length - 1, explained: DEFAULT_EXPLAINED })
  const rank = pca.variances.length
  const mixture: Mixture = {
    dimension: latents[0].length,
    rank,
    mean: pca.mean,
    basis: pca.basis,
    variances: pca.variances.map(l => settings.spread * l),
    coords: pca.coords,
  }
  return {
    ...mixture,
    source,
    settings: { ...settings, rank },
    identities: faces.map(f => f.name),
    components,
    pcaVariances: pca.variances,
    explainedVariance: pca.explained,
    codec: makeCodec(settings.size),
    codecKind,
  }
}

/** The default rank keeps at least this fraction of the components' variance. */
const DEFAULT_EXPLAINED = 0.9

/**
 * The top-`rank` principal subspace of the latents (equal weights), from the eigenvectors of their Gram matrix;
 * `rank` is given, or the smallest one ≥ `atLeast` that explains the fraction `explained` of the variance.
 * Each basis vector's sign is fixed (its largest entry positive) so that builds are reproducible.
 */
function principalSubspace(latents: Float64Array[], choice: number | { atLeast: number; explained: number }) {
  const k = latents.length
  const d = latents[0].length
  const mean = new Float64Array(d)
  for (const z of latents) for (let i = 0; i < d; i++) mean[i] += z[i] / k
  const centred = latents.map(z => z.map((v, i) => v - mean[i]))
  const gram = new Matrix(k, k)
  for (let a = 0; a < k; a++) {
    for (let b = a; b < k; b++) {
      let dot = 0
      for (let i = 0; i < d; i++) dot += centred[a][i] * centred[b][i]
      gram.set(a, b, dot / k)
      gram.set(b, a, dot / k)
    }
  }
  const evd = new EVD(gram, { assumeSymmetric: true })
  const order = evd.realEigenvalues.map((value, index) => ({ value, index })).sort((x, y) => y.value - x.value)
  const total = order.reduce((sum, e) => sum + Math.max(0, e.value), 0)
  let rank = typeof choice === 'number' ? choice : Math.max(1, choice.atLeast)
  if (typeof choice !== 'number') {
    const kept = (r: number) => order.slice(0, r).reduce((sum, e) => sum + e.value, 0) / total
    while (rank < k - 1 && kept(rank) < choice.explained) rank++
  }
  const top = order.slice(0, rank)
  check(top[rank - 1].value > 1e-12 * total, `the images span fewer than ${rank} dimensions: lower --rank`)
  const basis = new Float64Array(d * rank)
  top.forEach(({ value, index }, j) => {
    const v = evd.eigenvectorMatrix.getColumn(index)
    const column = new Float64Array(d)
    for (let a = 0; a < k; a++) for (let i = 0; i < d; i++) column[i] += centred[a][i] * v[a]
    const norm = Math.sqrt(k * value)
    let largest = 0
    for (let i = 0; i < d; i++) if (Math.abs(column[i]) > Math.abs(column[largest])) largest = i
    const sign = Math.sign(column[largest]) / norm
    for (let i = 0; i < d; i++) basis[i * rank + j] = column[i] * sign
  })
  const coords = new Float64Array(k * rank)
  for (let a = 0; a < k; a++) {
    for (let j = 0; j < rank; j++) {
      let dot = 0
      for (let i = 0; i < d; i++) dot += basis[i * rank + j] * centred[a][i]
      coords[a * rank + j] = dot
    }
  }
  return { mean, basis, coords, variances: Float64Array.from(top, e => e.value), explained: top.reduce((s, e) => s + e.value, 0) / total }
}

/** Where a (final) latent lies in the world: its nearest component and identity, and how typical it is. */
export interface Placement {
  component: number
  identity: number
  name: string
  /** Mahalanobis distance to that component in the subspace, under its covariance c·Σ_pca */
  mahalanobis: number
  /** whether that distance is within the 99.9% radius of one component (`world.json` mahalanobis999) */
  typical: boolean
  /** Euclidean norm of the latent's part off the subspace (the world's data has none) */
  offSubspace: number
}

export function placeLatent(world: DemoWorld, latent: ArrayLike<number>): Placement {
  check(latent.length === world.dimension, `a demo-world latent has ${world.dimension} values (got ${latent.length})`)
  const { coords, offSubspace } = project(world, latent)
  const { component, mahalanobis } = nearestComponent(world, coords)
  const identity = world.components[component].identity
  return { component, identity, name: world.identities[identity], mahalanobis, typical: mahalanobis <= mahalanobisLimit(world), offSubspace }
}

/** The 99.9% Mahalanobis radius of one component (χ quantile with r degrees of freedom). */
export const mahalanobisLimit = (world: DemoWorld) => chiQuantile(world.rank, 0.999)

/** The latent of component k's centre (in the subspace), [4,n,n]. */
export const componentLatent = (world: DemoWorld, k: number) =>
  lift(world, world.coords.subarray(k * world.rank, (k + 1) * world.rank))

export const latentShape = (world: DemoWorld) => [LATENT_CHANNELS, world.codec.latentSize, world.codec.latentSize]

// world.json: small values as JSON numbers, μ and U as base64 float64 (little-endian).
const toBase64 = (values: Float64Array) => Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64')
function fromBase64(text: string, length: number, what: string): Float64Array {
  const bytes = Buffer.from(text, 'base64')
  check(bytes.length === length * 8, `world.json: ${what} should hold ${length} float64 values`)
  const out = new Float64Array(length)
  new Uint8Array(out.buffer).set(bytes)
  return out
}

export function worldJson(world: DemoWorld): object {
  return {
    kind: 'demo',
    text: false,
    version: WORLD_VERSION,
    source: world.source,
    imageSize: world.codec.imageSize,
    latentShape: latentShape(world),
    codec: world.codecKind,
    settings: world.settings,
    identities: world.identities,
    components: world.components,
    subspace: {
      rank: world.rank,
      explainedVariance: world.explainedVariance,
      pcaVariances: [...world.pcaVariances],
      componentVariances: [...world.variances],
      mahalanobis999: mahalanobisLimit(world),
      componentCoords: [...world.coords],
      mean: toBase64(world.mean),
      basis: toBase64(world.basis),
      encoding: 'mean [D] and basis [D, rank] (row-major) as base64 little-endian float64; D = 4·n·n',
    },
  }
}

/** Reads a demo world back from its world.json text. */
export function parseWorld(text: string, source: string): DemoWorld {
  let json: any
  try {
    json = JSON.parse(text)
  } catch (error) {
    throw new UserError(`${source} is not valid JSON: ${(error as Error).message}`)
  }
  check(json?.kind === 'demo' && json.version === WORLD_VERSION && json.subspace, `${source} is not a demo world (version ${WORLD_VERSION}) description: rebuild it with \`lookahead world build\``)
  const { rank } = json.subspace
  const dimension = json.latentShape.reduce((a: number, b: number) => a * b, 1)
  return {
    dimension,
    rank,
    mean: fromBase64(json.subspace.mean, dimension, 'subspace.mean'),
    basis: fromBase64(json.subspace.basis, dimension * rank, 'subspace.basis'),
    variances: Float64Array.from(json.subspace.componentVariances),
    coords: Float64Array.from(json.subspace.componentCoords),
    source: json.source,
    settings: json.settings,
    identities: json.identities,
    components: json.components,
    pcaVariances: Float64Array.from(json.subspace.pcaVariances),
    explainedVariance: json.subspace.explainedVariance,
    codec: makeCodec(json.imageSize),
    codecKind: json.codec ?? 'linear',
  }
}
