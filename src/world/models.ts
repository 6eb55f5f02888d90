// The demo world as ONNX models with the SDXL contracts, so the real pipeline, the autodiff and the guides run it:
//   unet        ε of the exact posterior mean:  ε = (x_t − √ᾱ_t·x̂₀)/√(1−ᾱ_t)
//   lcm_unet    ε whose one-step x0 estimate is the probability-flow endpoint (the world's "LCM"), mixture.ts flowEndpoint
//   vae_decoder latents/0.13025 → image;  taesdxl_decoder  latents → image;  vae_encoder  image → latent_parameters
// through the world's codec: the fixed linear one (codec.ts), or the real TAESDXL (`world build --codec taesd`).
// Everything depending on the timestep alone (ᾱ_t by Gather from a table, σ grids) is off the sample's gradient path.
import { existsSync } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { check, UserError } from '../errors.js'
import { LAYOUT, type ModelsFolder, type PieceName } from '../diffusion/models-folder.js'
import { alphasCumprod } from '../diffusion/schedulers.js'
import { TAESD_IO, taesdModel } from '../diffusion/taesd.js'
import { cacheRoot } from '../cache.js'
import { writeFileAtomic } from '../fsutil.js'
import { GraphBuilder } from '../onnx/builder.js'
import { embedModel } from '../onnx/compose.js'
import { DataType, encodeModel, onnx, readModel, type LoadedModel, type ModelProto } from '../onnx/proto.js'
import { ort, sessionOptions } from '../onnx/session.js'
import { LATENT_CHANNELS, LATENT_FACTOR, VAE_SCALING, decoderFragment, encodeImage, encoderFragment, transpose } from './codec.js'
import { componentCount } from './mixture.js'
import {
  DEFAULT_WORLD_SETTINGS, WORLD_VERSION, buildWorld, componentImages, drawnFaces, folderFaces, latentShape, worldFromLatents, worldJson,
  type CodecKind, type DemoWorld, type FaceFinder, type WorldSettings,
} from './world.js'

const OPSET = 17
export type UnetKind = 'exact' | 'lcm'

/** A UNet with the SDXL export's inputs (optimum ≥ 1.24: float32 scalar timestep) and output out_sample. */
export function unetModel(world: DemoWorld, kind: UnetKind): ModelProto {
  const g = new GraphBuilder(`demo_world_${kind}_unet`, OPSET)
  const [, n] = latentShape(world)
  const shape = ['batch', LATENT_CHANNELS, n, n]
  const sample = g.input('sample', 'float32', shape)
  const timestep = g.input('timestep', 'float32', [])
  // Text conditioning is accepted and ignored: the world has no text.
  g.input('encoder_hidden_states', 'float32', ['batch', 77, 2048])
  g.input('text_embeds', 'float32', ['batch', 1280])
  g.input('time_ids', 'float32', ['batch', 6])

  const { dimension: d, rank: r } = world
  const k = componentCount(world)
  const c = (values: ArrayLike<number>, dims: number[], hint: string) => g.constant(Float32Array.from(values), dims, 'float32', hint)
  const scalar = (value: number) => g.constant(value, [], 'float32', 'scalar')
  const table = alphasCumprod()
  const alphaBar = g.op('Gather', [c(table, [table.length], 'alphas_cumprod'), g.op('Cast', [timestep], { to: DataType.INT64 })])
  const oneMinus = g.op('Sub', [scalar(1), alphaBar])
  const sqrtAlpha = g.op('Sqrt', [alphaBar])
  const sigma2 = g.op('Div', [oneMinus, alphaBar])

  // p = Uᵀ(x_t/√ᾱ − μ)
  const flat = g.op('Reshape', [sample, g.ints([-1, d])])
  const muU = new Float64Array(r)
  for (let i = 0; i < d; i++) for (let j = 0; j < r; j++) muU[j] += world.mean[i] * world.basis[i * r + j]
  let p = g.op('Sub', [g.op('MatMul', [g.op('Div', [flat, sqrtAlpha]), c(world.basis, [d, r], 'basis')]), c(muU, [r], 'mean_coords')])

  const s = c(world.variances, [r], 'component_variances')
  const centres = c(world.coords, [k, r], 'centres')
  const centresT = c(transpose(world.coords, k, r), [r, k], 'centres_t')
  const halfSquares = c(transpose(world.coords.map(v => -0.5 * v * v), k, r), [r, k], 'centres_sq_t')
  /**
   * E[p₀ | p] = gain⊙p + (1−gain)⊙E_w[m] with w = softmax(p⊙(1/v)·mᵀ − ½(1/v)·m²), v = s + σ²
   * (the ‖p‖²/v term is the same for every component and cancels in the softmax).
   */
  const denoise = (p: string, { inverseVar, bias, gain, rest }: Record<'inverseVar' | 'bias' | 'gain' | 'rest', string>) => {
    const logits = g.op('Add', [g.op('MatMul', [g.op('Mul', [p, inverseVar]), centresT]), bias])
    const expected = g.op('MatMul', [g.op('Softmax', [logits], { axis: -1 }), centres])
    return g.op('Add', [g.op('Mul', [gain, p]), g.op('Mul', [rest, expected])])
  }
  /** Per noise level σ² (any leading shape): 1/(s+σ²), the logit bias, the Wiener gain s/(s+σ²) and 1 − gain. */
  const levelTables = (sigma2s: string) => {
    const inverseVar = g.op('Div', [scalar(1), g.op('Add', [sigma2s, s])])
    const gain = g.op('Mul', [s, inverseVar])
    return { inverseVar, bias: g.op('MatMul', [inverseVar, halfSquares]), gain, rest: g.op('Sub', [scalar(1), gain]) }
  }

  if (kind === 'exact') {
    p = denoise(p, levelTables(sigma2))
  } else {
    // mixture.ts flowEndpoint (order 2) as a graph: σ_j² = σ_t²·(σ_min²/σ_t²)^{j/steps}, j = 0…steps, one table row
    // per level; step j: p ← ρ·p + (1−ρ)·(1.5·D_j − 0.5·D_{j−1}) with ρ = σ_{j+1}/σ_j (D_j alone for j = 0);
    // the last level is the final denoise.
    const steps = world.settings.lcmSteps
    const logSigma2 = g.op('Log', [sigma2])
    const logRange = g.op('Sub', [scalar(2 * Math.log(world.settings.sigmaMin)), logSigma2])
    const fractions = c(Array.from({ length: steps + 1 }, (_, j) => j / steps), [steps + 1, 1], 'grid')
    const tables = levelTables(g.op('Exp', [g.op('Add', [logSigma2, g.op('Mul', [fractions, logRange])])]))
    const rows = (table: string) => g.node('Split', [table, g.ints(Array(steps + 1).fill(1))], { axis: 0 }, steps + 1)
    const split = { inverseVar: rows(tables.inverseVar), bias: rows(tables.bias), gain: rows(tables.gain), rest: rows(tables.rest) }
    const ratio = g.op('Exp', [g.op('Mul', [logRange, scalar(0.5 / steps)])])
    const keep = g.op('Sub', [scalar(1), ratio])
    const [weightNow, weightBefore] = [g.op('Mul', [keep, scalar(1.5)]), g.op('Mul', [keep, scalar(0.5)])]
    let previous: string | undefined
    for (let j = 0; j <= steps; j++) {
      const denoised = denoise(p, { inverseVar: split.inverseVar[j], bias: split.bias[j], gain: split.gain[j], rest: split.rest[j] })
      if (j === steps) p = denoised
      else if (previous === undefined) p = g.op('Add', [g.op('Mul', [ratio, p]), g.op('Mul', [keep, denoised])])
      else p = g.op('Sub', [g.op('Add', [g.op('Mul', [ratio, p]), g.op('Mul', [weightNow, denoised])]), g.op('Mul', [weightBefore, previous])])
      previous = denoised
    }
  }

  // x̂₀ = μ + U·p;  ε = (x_t − √ᾱ·x̂₀)/√(1−ᾱ)
  const x0 = g.op('Add', [g.op('MatMul', [p, c(transpose(world.basis, d, r), [r, d], 'basis_t')]), c(world.mean, [d], 'mean')])
  const eps = g.op('Div', [g.op('Sub', [flat, g.op('Mul', [sqrtAlpha, x0])]), g.op('Sqrt', [oneMinus])])
  g.outputAs(g.op('Reshape', [eps, g.ints([-1, LATENT_CHANNELS, n, n])]), 'out_sample', 'float32', shape)
  return g.build()
}

/** How a world's images become UNet-space latents and back, as graph fragments (images in [-1,1]). */
export interface CodecGraphs {
  kind: CodecKind
  /** image [B,3,S,S] → latent [B,4,S/8,S/8] */
  encode(g: GraphBuilder, image: string): string
  /** latent [B,4,S/8,S/8] → image [B,3,S,S] */
  decode(g: GraphBuilder, latent: string): string
}

/** The fixed linear codec (codec.ts): no weights, dependency-free. */
export const linearCodec = (world: DemoWorld): CodecGraphs => ({
  kind: 'linear',
  encode: (g, image) => encoderFragment(g, world.codec, image),
  decode: (g, latent) => decoderFragment(g, world.codec, latent),
})

/** The TAESDXL encoder and decoder, as taesd.ts builds them from their .safetensors (RGB in [0,1] on their side). */
export interface TaesdParts {
  encoder: LoadedModel
  decoder: LoadedModel
  /** the weight files, for world.json */
  files: string[]
}

/**
 * TAESDXL from a folder holding taesdxl_encoder.safetensors and taesdxl_decoder.safetensors, or from one file:
 * named …encoder… or …decoder… with its other part beside it, else one diffusers AutoencoderTiny file with both.
 */
export async function readTaesd(path: string): Promise<TaesdParts> {
  const info = await stat(path).catch(() => {
    throw new UserError(`--taesd ${path}: no such file or folder`)
  })
  const name = basename(path)
  const [encoder, decoder] = info.isDirectory()
    ? [join(path, 'taesdxl_encoder.safetensors'), join(path, 'taesdxl_decoder.safetensors')]
    : /encoder/.test(name) ? [path, join(dirname(path), name.replace('encoder', 'decoder'))]
    : /decoder/.test(name) ? [join(dirname(path), name.replace('decoder', 'encoder')), path]
    : [path, path]
  for (const file of new Set([encoder, decoder])) check(existsSync(file), `--taesd ${path}: ${file} is missing (the world needs TAESDXL's encoder and decoder)`)
  return { encoder: await taesdModel(encoder, 'encoder'), decoder: await taesdModel(decoder, 'decoder'), files: [...new Set([encoder, decoder])] }
}

/** The real TAESDXL as the world's codec: the world's latents are SDXL latents, its decoder the network the paper uses. */
export const taesdCodec = (taesd: TaesdParts): CodecGraphs => ({
  kind: 'taesd',
  encode: (g, image) => {
    const unit = g.op('Mul', [g.op('Add', [image, g.constant(1, [])]), g.constant(0.5, [])])
    return embedModel(g, taesd.encoder, { [TAESD_IO.encoder.input]: unit }, 'taesd_encoder/')[TAESD_IO.encoder.output]
  },
  decode: (g, latent) => {
    const unit = embedModel(g, taesd.decoder, { [TAESD_IO.decoder.input]: latent }, 'taesd_decoder/')[TAESD_IO.decoder.output]
    return g.op('Sub', [g.op('Mul', [unit, g.constant(2, [])]), g.constant(1, [])])
  },
})

/** The decoders: vae_decoder takes latents/0.13025 as SDXL's does, taesdxl_decoder the UNet-space latents; both give [-1,1]. */
export function decoderModel(world: DemoWorld, input: 'vae' | 'taesd', codec = linearCodec(world)): ModelProto {
  const g = new GraphBuilder(`demo_world_${input}_decoder`, OPSET)
  const [, n] = latentShape(world)
  const size = world.codec.imageSize
  let latent = g.input('latent_sample', 'float32', ['batch', LATENT_CHANNELS, n, n])
  if (input === 'vae') latent = g.op('Mul', [latent, g.constant(VAE_SCALING, [])])
  g.outputAs(codec.decode(g, latent), 'sample', 'float32', ['batch', 3, size, size])
  const model = g.build()
  model.metadataProps = [new onnx.StringStringEntryProto({ key: 'output_range', value: '[-1,1]' })]
  return model
}

/** vae_encoder as SDXL's: latent_parameters = [mean, logvar] with mean = latents/0.13025 and a tiny variance. */
export function encoderModel(size: number, codec: CodecGraphs): ModelProto {
  const g = new GraphBuilder('demo_world_vae_encoder', OPSET)
  const n = size / LATENT_FACTOR
  const image = g.input('sample', 'float32', ['batch', 3, size, size])
  const mean = g.op('Div', [codec.encode(g, image), g.constant(VAE_SCALING, [])])
  // logvar = −30, the lower clamp of diffusers' DiagonalGaussianDistribution: sampling gives the mean.
  const logvar = g.op('Sub', [g.op('Mul', [mean, g.constant(0, [])]), g.constant(30, [])])
  g.outputAs(g.op('Concat', [mean, logvar], { axis: 1 }), 'latent_parameters', 'float32', ['batch', 2 * LATENT_CHANNELS, n, n])
  return g.build()
}

/** UNet-space latents of images [3,S,S] through a vae_encoder model (mean·0.13025), in float64. */
export async function encodeImages(encoder: ModelProto, images: Float32Array[], size: number): Promise<Float64Array[]> {
  const session = await ort.InferenceSession.create(encodeModel(encoder), sessionOptions('cpu', 0))
  const plane = LATENT_CHANNELS * (size / LATENT_FACTOR) ** 2
  const latents: Float64Array[] = []
  for (const image of images) {
    const { latent_parameters: out } = await session.run({ sample: new ort.Tensor('float32', image, [1, 3, size, size]) })
    latents.push(Float64Array.from((out.data as Float32Array).subarray(0, plane), v => v * VAE_SCALING))
  }
  await session.release()
  return latents
}

/** The pieces of a demo-world models folder (where each lives: the models folder's LAYOUT). */
export const WORLD_PIECES = ['unet', 'lcm_unet', 'vae_decoder', 'taesdxl_decoder', 'vae_encoder', 'world'] as const satisfies readonly PieceName[]
export type WorldPiece = (typeof WORLD_PIECES)[number]

/** A face image [3,S,S]'s latent in a world: the linear codec in float64, or TAESDXL through the folder's vae_encoder. */
export async function imageLatent(folder: ModelsFolder, world: DemoWorld, image: Float32Array): Promise<Float64Array> {
  if (world.codecKind === 'linear') return encodeImage(world.codec, image)
  const [latent] = await encodeImages((await readModel(folder.path('vae_encoder'))).model, [image], world.codec.imageSize)
  return latent
}

/** Writes the world's models folder with its codec's decoders and encoder; each file is written atomically. */
export async function writeWorld(world: DemoWorld, dir: string, codec = linearCodec(world)): Promise<Record<WorldPiece, string>> {
  const contents: Record<WorldPiece, Uint8Array | string> = {
    unet: encodeModel(unetModel(world, 'exact')),
    lcm_unet: encodeModel(unetModel(world, 'lcm')),
    vae_decoder: encodeModel(decoderModel(world, 'vae', codec)),
    taesdxl_decoder: encodeModel(decoderModel(world, 'taesd', codec)),
    vae_encoder: encodeModel(encoderModel(world.codec.imageSize, codec)),
    world: `${JSON.stringify(worldJson(world), null, 1)}\n`,
  }
  const paths = {} as Record<WorldPiece, string>
  for (const piece of WORLD_PIECES) {
    paths[piece] = join(dir, LAYOUT[piece])
    await writeFileAtomic(paths[piece], contents[piece])
  }
  return paths
}

export interface WorldFolderOptions {
  /** a folder of face images; default: the drawn faces */
  images?: string
  /** crop each image about the best face this finds (default: centre crop) */
  findFaces?: FaceFinder
  /** with findFaces: every face found is an identity (group photos) */
  everyFace?: boolean
  /** the real TAESDXL as the codec (default: the linear codec) */
  taesd?: TaesdParts
  settings?: Partial<WorldSettings>
}

/** Builds a demo world (from `images` or the drawn faces) and writes its models folder to `dir`. */
export async function buildWorldFolder(dir: string, options: WorldFolderOptions = {}) {
  const settings = { ...DEFAULT_WORLD_SETTINGS, ...options.settings }
  const faces = options.images ? await folderFaces(options.images, settings.size, options.findFaces, options.everyFace) : drawnFaces(settings.size)
  const source = options.images ?? 'drawn'
  if (!options.taesd) {
    const world = buildWorld(faces, settings, source)
    return { world, files: await writeWorld(world, dir) }
  }
  // the components' latents through the same vae_encoder the folder gets, so a reference is placed as they are
  const codec = taesdCodec(options.taesd)
  const { components, images } = componentImages(faces, settings)
  const latents = await encodeImages(encoderModel(settings.size, codec), images, settings.size)
  const world = worldFromLatents(faces, components, latents, settings, source, 'taesd')
  return { world, files: await writeWorld(world, dir, codec) }
}

/**
 * The default demo world in `dir`, built there first when it is missing or was written by another version
 * of this code (the embedded default: `--world demo` needs nothing but the project).
 */
export async function ensureDefaultWorld(dir: string): Promise<string> {
  const current = await readFile(join(dir, LAYOUT.world), 'utf8').then(text => JSON.parse(text), () => undefined)
  const complete = WORLD_PIECES.every(piece => existsSync(join(dir, LAYOUT[piece])))
  if (!complete || current?.version !== WORLD_VERSION || current?.source !== 'drawn') await buildWorldFolder(dir)
  return dir
}

/** Where `--world demo` keeps the default world. */
export const defaultWorldCache = () => join(cacheRoot(), 'demo-world')
