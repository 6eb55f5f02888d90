// The lookahead gradient pass's memory for the real SDXL UNet, estimated without its 10 GB export: an
// SDXL-shaped UNet (diffusers UNet2DConditionModel with SDXL's config, optimum's I/O) and a TAESD-shaped
// decoder (diffusers DecoderTiny) are built from layers.ts into a temporary models folder, the UNet's weights
// as external data in a sparse file (sizes only, no disk used), and the project's own estimator (dryRun) is
// run on them at 1024² (sampler at CFG 5), at --guide-size 768 and 512, with --recompute 2, 4 and 8, and with the
// x0 preview under CFG (~2½ minutes, ~400 MB). The folder has no text encoders: their weights are not counted.
// Usage: npx tsx samples/bench/sdxl-shape.ts [--opset 14|18] [--keep | --models DIR]
import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { GraphBuilder, type DType, type Values } from '../../src/onnx/builder.js'
import { conv2d, upsampleNearest2x, type Normal } from '../../src/onnx/layers.js'
import { DataType, encodeModel, onnx, writeModel } from '../../src/onnx/proto.js'
import { sdxlShapedUnet, TINY, type UnetShape } from '../../src/diffusion/tiny/index.js'
import { tinyBlock } from '../../src/diffusion/tiny/decoders.js'
import type { LookaheadSettings } from '../../src/guidance/engine.js'
import { dryRun } from '../../src/guidance/memory.js'

/** Weights are never read here: zeros, so that building costs no random numbers. */
const zeros: Normal = () => 0

/** onnx's save_as_external_data default: smaller tensors stay inline. */
const EXTERNAL_THRESHOLD_BYTES = 1024

/**
 * A GraphBuilder whose float32 initializers of ≥ 1 KiB become external-data TensorProtos (dims, offset and
 * length in `location`, no bytes), as optimum writes the SDXL UNet; `externalBytes` is the data file's size.
 */
export class ExternalWeightsBuilder extends GraphBuilder {
  externalBytes = 0

  constructor(name: string, opset: number, readonly location = 'weights.bin') {
    super(name, opset)
  }

  override constant(values: Values | number, dims?: number[], dtype: DType = 'float32', hint = 'const'): string {
    const count = typeof values === 'number' ? 1 : values.length
    const length = count * 4
    if (dtype !== 'float32' || length < EXTERNAL_THRESHOLD_BYTES) return super.constant(values, dims, dtype, hint)
    const name = this.fresh(hint)
    this.initializers.push(new onnx.TensorProto({
      name,
      dataType: DataType.FLOAT,
      dims: dims ?? [count],
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: this.location },
        { key: 'offset', value: String(this.externalBytes) },
        { key: 'length', value: String(length) },
      ],
    }))
    this.externalBytes += length
    return name
  }
}

/** stabilityai/stable-diffusion-xl-base-1.0 unet/config.json */
export const SDXL_UNET: UnetShape = {
  channels: [320, 640, 1280],
  depths: [0, 2, 10],
  heads: [5, 10, 20],
  layersPerBlock: 2,
  groups: 32,
  contextDim: 2048,
  pooledDim: 1280,
  addTimeProj: 256,
  latentChannels: 4,
}

/**
 * SDXL's UNet (depths, heads, layers per block) at a quarter of its width, to run for real (143 M parameters):
 * 16 groups, as 32 do not divide 80 channels; the tiny text encoders' context and pooled sizes.
 */
export const QUARTER_SDXL_UNET: UnetShape = {
  ...SDXL_UNET, channels: SDXL_UNET.channels.map(c => c / 4), groups: 16, contextDim: TINY.unet.contextDim, pooledDim: TINY.unet.pooledDim,
}

/** The UNet of `shape` (src/diffusion/tiny/unet.ts) with its weights as empty external data: sizes only. */
export const sparseSdxlUnet = (shape: UnetShape = SDXL_UNET, opset = 18) => sdxlShapedUnet(new ExternalWeightsBuilder('unet', opset), shape, zeros)

/**
 * diffusers AutoencoderTiny's DecoderTiny (TAESDXL): tanh clamp, conv + ReLU, stages of AutoencoderTinyBlocks
 * (3, 3, 3, 1 at 64 channels) with a nearest ×2 upsampling and a bias-free conv after each but the last, a
 * final conv to RGB, and x·2 − 1 to [-1,1]. Weights are inline zeros (1.2 M parameters).
 */
export function taesdShapedDecoder(opset = 18, channels = 64, blocks = [3, 3, 3, 1]): GraphBuilder {
  const g = new GraphBuilder('taesdxl_decoder', opset)
  const rand = zeros
  const latent = g.input('latent_sample', 'float32', ['batch_size', 4, 'height_latent', 'width_latent'])
  const three = g.constant(3)
  let h = g.op('Mul', [g.op('Tanh', [g.op('Div', [latent, three])]), three])
  h = g.op('Relu', [conv2d(g, h, rand, 4, channels)])
  blocks.forEach((count, stage) => {
    for (let i = 0; i < count; i++) h = tinyBlock(g, h, rand, channels)
    if (stage < blocks.length - 1) h = conv2d(g, upsampleNearest2x(g, h), rand, channels, channels, { bias: false })
  })
  const raw = conv2d(g, h, rand, channels, 3)
  g.outputAs(g.op('Sub', [g.op('Mul', [raw, g.constant(2)]), g.constant(1)]), 'sample', 'float32', ['batch_size', 3, 'height', 'width'])
  return g
}

/**
 * Learned parameters: float initializers made by layers.ts' randomWeight (named by their hint: conv_weight,
 * gn_gamma…), not the constants (const_N, scalar_N: norm scales of 1, Resize scales, frequencies).
 */
export function parameterCount(g: GraphBuilder): number {
  return g.initializers
    .filter(t => t.dataType === DataType.FLOAT && !/^(const|scalar)_\d+$/.test(t.name))
    .reduce((sum, t) => sum + t.dims.reduce<number>((a, d) => a * Number(d), 1), 0)
}

/**
 * Writes a models folder: unet/model.onnx + unet/weights.bin (sparse), lcm_unet/model.onnx (the same graph,
 * the weights hard-linked beside it) and taesdxl_decoder/model.onnx.
 */
export async function writeShapedModels(dir: string, unet: ExternalWeightsBuilder, decoder: GraphBuilder): Promise<void> {
  const unetDir = join(dir, 'unet')
  await mkdir(unetDir, { recursive: true })
  await writeFile(join(unetDir, unet.location), '')
  await truncate(join(unetDir, unet.location), unet.externalBytes)
  const model = unet.build()
  await writeFile(join(unetDir, 'model.onnx'), encodeModel(model))
  await writeModel({ model, dir: unetDir }, join(dir, 'lcm_unet', 'model.onnx'))
  await mkdir(join(dir, 'taesdxl_decoder'), { recursive: true })
  await writeFile(join(dir, 'taesdxl_decoder', 'model.onnx'), encodeModel(decoder.build()))
}

interface Row {
  setting: string
  weightsGb: number
  peakGb: number
  lowerBoundGb: number
  savedGb: number
  upperBoundGb: number
  unknown: number
  othersGb: number
  totalGb: number
}

const GB = 1e9

/** The estimate `lookahead guide --dry-run` prints, for one setting. */
async function estimate(models: string, setting: string, preview: 'lcm' | 'x0', { guideSize, recompute }: { guideSize?: number; recompute?: number } = {}): Promise<Row> {
  // the defaults: the sampler at CFG 5, the LCM preview without CFG, the x0 preview with the sampler's
  const settings: LookaheadSettings = {
    prompt: '', steps: 50, cfg: 5, seed: 0, size: { height: 1024, width: 1024 }, models,
    preview, previewCfg: preview === 'lcm' ? 1 : undefined, guideSteps: [10], iters: 10, guideSize, recompute,
  }
  const { memory, sessions, peakBytes } = await dryRun(settings)
  return {
    setting,
    weightsGb: memory.weights / GB,
    peakGb: memory.peak / GB,
    lowerBoundGb: memory.lowerBound / GB,
    savedGb: memory.saved / GB,
    upperBoundGb: memory.upperBound / GB,
    unknown: memory.unknown,
    othersGb: (sessions.weights + sessions.samplingActivations) / GB,
    totalGb: peakBytes / GB,
  }
}

/** Builds the SDXL-shaped models into a temporary folder; returns it. */
async function buildModels(opset: number): Promise<string> {
  const started = performance.now()
  const unet = sparseSdxlUnet(SDXL_UNET, opset)
  const decoder = taesdShapedDecoder(opset)
  console.log(`SDXL-shaped UNet (opset ${opset}): ${unet.nodes.length} nodes, ${unet.initializers.length} initializers, ` +
    `${parameterCount(unet).toLocaleString('en')} parameters (${(unet.externalBytes / GB).toFixed(2)} GB external); ` +
    `TAESD-shaped decoder: ${decoder.nodes.length} nodes, ${parameterCount(decoder).toLocaleString('en')} parameters; ` +
    `built in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  const models = await mkdtemp(join(tmpdir(), 'sdxl-shape-'))
  await writeShapedModels(models, unet, decoder)
  return models
}

async function main(): Promise<void> {
  const args = process.argv.slice(2)
  const option = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined)
  // --models DIR: estimate an existing folder (one kept with --keep, or a real export) instead of building one
  const given = option('--models')
  const models = given ?? await buildModels(Number(option('--opset') ?? 18))
  try {
    const started = performance.now()
    const rows = [
      await estimate(models, 'lcm, 1024²', 'lcm'),
      await estimate(models, 'lcm, 1024², --guide-size 768', 'lcm', { guideSize: 768 }),
      await estimate(models, 'lcm, 1024², --guide-size 512', 'lcm', { guideSize: 512 }),
      await estimate(models, 'lcm, 1024², --recompute 2', 'lcm', { recompute: 2 }),
      await estimate(models, 'lcm, 1024², --recompute 4', 'lcm', { recompute: 4 }),
      await estimate(models, 'lcm, 1024², --recompute 8', 'lcm', { recompute: 8 }),
      await estimate(models, 'x0, CFG 5, 1024²', 'x0'),
      await estimate(models, 'x0, CFG 5, 1024², --recompute 4', 'x0', { recompute: 4 }),
    ]
    console.log(`models folder: ${models}${given || args.includes('--keep') ? ' (kept)' : ''}`)
    console.table(rows.map(r => ({
      setting: r.setting,
      'weights GB': r.weightsGb.toFixed(2),
      'activations at the peak GB': r.peakGb.toFixed(2),
      'freed at last reader GB': r.lowerBoundGb.toFixed(2),
      'saved for backward GB': r.savedGb.toFixed(2),
      'upper bound GB': r.upperBoundGb.toFixed(2),
      unknown: r.unknown,
      'other sessions GB': r.othersGb.toFixed(2),
      'in all GB': r.totalGb.toFixed(2),
    })))
    console.log(`estimates in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  } finally {
    if (!given && !args.includes('--keep')) await rm(models, { recursive: true, force: true })
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main()
