// The models folder (`--models DIR`, default $LOOKAHEAD_MODELS): `ModelsFolder` owns its layout (where each export,
// guide network and tokenizer lives, LAYOUT: the only place that says so), world.json, the decoder files and
// defaults, the LCM UNet (a fused export, or LCM-LoRA applied to the base
// UNet: an explicit, announced step) and the checks (`check`), which name every piece that is missing or does not
// fit (names, dtypes, shapes, truncated weights) and how to produce it.
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { UserError } from '../errors.js'
import { dtypeOf } from '../onnx/builder.js'
import { externalDataProblems, graphOf, readModel, toNumber, type LoadedModel } from '../onnx/proto.js'
import { cachedLoraUnet, loraKey, loraTargets } from './lora.js'
import { safetensorsShapes } from './safetensors.js'
import { readDecoderFile, taesdOutputRange, type DecoderKind } from './decoders.js'
import { cachedTaesd } from './taesd.js'
import { ClipTokenizer } from './tokenizer.js'

export interface WorldInfo {
  kind: string
  /** false: no text encoders; the pipeline feeds zero text conditioning */
  text?: boolean
  /** the image side the world is made for (generate's default --size) */
  imageSize?: number
  [key: string]: unknown
}

/** Where each piece lives in a models folder: declared here once, asked for by name (ModelsFolder.path). */
export const LAYOUT = {
  unet: join('unet', 'model.onnx'),
  text_encoder: join('text_encoder', 'model.onnx'),
  text_encoder_2: join('text_encoder_2', 'model.onnx'),
  tokenizer: 'tokenizer',
  tokenizer_2: 'tokenizer_2',
  vae_decoder: join('vae_decoder', 'model.onnx'),
  taesdxl_decoder: join('taesdxl_decoder', 'model.onnx'),
  /** TAESDXL's published weights, in place of its ONNX export (built into a graph by taesd.ts) */
  taesdxl_weights: 'taesdxl_decoder.safetensors',
  lcm_unet: join('lcm_unet', 'model.onnx'),
  lcm_lora: join('lcm_lora', 'pytorch_lora_weights.safetensors'),
  /** a demo world's image → latent encoder (src/world/models.ts), as SDXL's vae_encoder */
  vae_encoder: join('vae_encoder', 'model.onnx'),
  arcface: join('guides', 'arcface', 'model.onnx'),
  scrfd: join('guides', 'scrfd', 'model.onnx'),
  lpips_alex: join('guides', 'lpips_alex', 'model.onnx'),
  lpips_vgg: join('guides', 'lpips_vgg', 'model.onnx'),
  /** a transformers.js CLIP export: its tokenizer files here, its models in onnx/ */
  clip: join('guides', 'clip'),
  clip_vision: join('guides', 'clip', 'onnx', 'vision_model.onnx'),
  clip_text: join('guides', 'clip', 'onnx', 'text_model.onnx'),
  world: 'world.json',
} as const
export type PieceName = keyof typeof LAYOUT

/** SDXL's two text encoders and their tokenizers, in encoding order. */
const TEXT_ENCODERS = [{ encoder: 'text_encoder', tokenizer: 'tokenizer' }, { encoder: 'text_encoder_2', tokenizer: 'tokenizer_2' }] as const satisfies { encoder: PieceName; tokenizer: PieceName }[]

/** Where each decoder may be, first found first: its ONNX export, or TAESDXL's published weights. */
const DECODER_PIECES: Record<DecoderKind, PieceName[]> = { vae: ['vae_decoder'], taesd: ['taesdxl_decoder', 'taesdxl_weights'] }

/** A models folder, opened once: its layout, world.json, decoder defaults, the LCM UNet, and the checks. */
export class ModelsFolder {
  private constructor(readonly dir: string, readonly world: WorldInfo | null) {}

  /** The folder from --models, else $LOOKAHEAD_MODELS. */
  static open(flag?: string): Promise<ModelsFolder> {
    return ModelsFolder.at(modelsDir(flag))
  }

  /** The folder at `dir`, with its world.json read. */
  static async at(dir: string): Promise<ModelsFolder> {
    return new ModelsFolder(resolve(dir), await readWorld(dir))
  }

  /** A folder a run opened already (a command opens it once and passes it on), or one opened from its path (scripts). */
  static async of(models: string | ModelsFolder): Promise<ModelsFolder> {
    return typeof models === 'string' ? ModelsFolder.at(models) : models
  }

  path(piece: PieceName): string {
    return join(this.dir, LAYOUT[piece])
  }

  has(piece: PieceName): boolean {
    return existsSync(this.path(piece))
  }

  /** SDXL's two text encoders' model files and their tokenizers' folders, in encoding order. */
  textEncoders(): { encoder: string; tokenizer: string }[] {
    return TEXT_ENCODERS.map(({ encoder, tokenizer }) => ({ encoder: this.path(encoder), tokenizer: this.path(tokenizer) }))
  }

  /** The piece's path; where it is absent, a UserError naming the file, what needs it and how to make it. */
  need(piece: PieceName, neededFor: string): string {
    const path = this.path(piece)
    if (!existsSync(path)) throw new UserError(`no ${LAYOUT[piece]} in ${this.dir} (${neededFor} needs it): ${howToMake(piece)}`)
    return path
  }

  /** The decoder's file in the folder (its ONNX export, or TAESDXL's .safetensors weights), if it has one. */
  decoderFile(kind: DecoderKind): string | undefined {
    return DECODER_PIECES[kind].map(piece => this.path(piece)).find(path => existsSync(path))
  }

  /** The decoder inside previews: the one asked for, else TAESDXL where the folder has it, else the VAE. */
  previewDecoder(asked?: DecoderKind): DecoderKind {
    return asked ?? (this.decoderFile('taesd') ? 'taesd' : 'vae')
  }

  /** The decoder for final images: the one asked for, else the VAE where the folder has it, else TAESDXL. */
  finalDecoder(asked?: DecoderKind): DecoderKind {
    return asked ?? (this.decoderFile('vae') ? 'vae' : 'taesd')
  }

  /** The decoder's ONNX file: the export, or the graph built from its .safetensors weights (cached, see taesd.ts). */
  async decoderPath(kind: DecoderKind): Promise<string> {
    const file = this.decoderFile(kind)
    if (!file) throw new UserError(`${this.dir} has no ${kind} decoder: expected ${DECODER_PIECES[kind].map(p => LAYOUT[p]).join(' or ')} (see \`lookahead models\`)`)
    return file.endsWith('.safetensors') ? cachedTaesd(file, 'decoder') : file
  }

  /**
   * The LCM UNet's path: lcm_unet/, else the UNet with lcm_lora/ applied — built once into the cache (say so with
   * `progress`: it reads the UNet's whole graph) and reused while neither file changes.
   */
  async lcmUnet(progress?: (line: string) => void): Promise<string> {
    if (this.has('lcm_unet')) return this.path('lcm_unet')
    if (!this.has('lcm_lora')) throw new UserError(`${this.dir} has neither ${LAYOUT.lcm_unet} nor ${LAYOUT.lcm_lora}: see \`lookahead models\` for how to make one`)
    const built = await cachedLoraUnet(this.path('unet'), this.path('lcm_lora'), undefined, () => progress?.(`applying ${LAYOUT.lcm_lora} to ${LAYOUT.unet} (once: the LoRA'd UNet is cached)`))
    return built.path
  }

  /** Every piece checked (see checkFolder). */
  check(): Promise<PieceReport[]> {
    return checkFolder(this)
  }
}

/** The folder from --models, else $LOOKAHEAD_MODELS. */
export function modelsDir(flag?: string): string {
  const dir = flag ?? process.env.LOOKAHEAD_MODELS
  if (!dir) throw new UserError('no models folder: pass --models DIR or set LOOKAHEAD_MODELS (see `lookahead models`)')
  if (!existsSync(dir)) throw new UserError(`models folder ${dir} does not exist`)
  return resolve(dir)
}

export async function readWorld(dir: string): Promise<WorldInfo | null> {
  const path = join(dir, LAYOUT.world)
  if (!existsSync(path)) return null
  try {
    return JSON.parse(await readFile(path, 'utf8')) as WorldInfo
  } catch {
    throw new UserError(`${path} is not valid JSON`)
  }
}

// --- checking a folder ---

type Dims = (number | string)[]
interface IoSpec { name: string; types: string[]; dims: Dims }
/** '*' matches any dimension; a dims of [] with a rank-free flag is not needed: every spec gives its rank */
const io = (name: string, types: string[], dims: Dims): IoSpec => ({ name, types, dims })
const FLOAT = ['float32', 'float16']
const IDS = ['int32', 'int64']

const EXPORT_SDXL = 'python samples/export/sdxl_optimum.py OUT  (optimum-cli export onnx --model stabilityai/stable-diffusion-xl-base-1.0)'
const UNET_IO = {
  inputs: [io('sample', FLOAT, ['*', 4, '*', '*']), io('encoder_hidden_states', FLOAT, ['*', '*', '*']), io('text_embeds', FLOAT, ['*', '*']), io('time_ids', FLOAT, ['*', 6])],
  outputs: [io('out_sample', FLOAT, ['*', 4, '*', '*'])],
}
const DECODER_IO = { inputs: [io('latent_sample', FLOAT, ['*', 4, '*', '*'])], outputs: [io('sample', FLOAT, ['*', 3, '*', '*'])] }

interface Piece {
  name: string
  /** where it lives (LAYOUT) */
  piece: PieceName
  /** needed for `generate` (else: only for guidance or LCM previews) */
  required: boolean
  howTo: string
  /** where the piece may be in more than one form: the file present, if any (else its path) */
  find?: (folder: ModelsFolder) => string | undefined
  /** problems with the file, beyond its presence */
  check?: (folder: ModelsFolder, path: string) => Promise<string[]>
}

export interface PieceReport {
  piece: string
  path: string
  status: 'ok' | 'missing' | 'mismatch' | 'optional'
  problems: string[]
  notes: string[]
  howTo?: string
}

function describe(spec: IoSpec): string {
  return `${spec.name} ${spec.types.join('|')} [${spec.dims.join(',')}]`
}

/** Names, dtypes and shapes of a model's graph inputs and outputs against the specs. */
function checkIo(model: LoadedModel, expected: { inputs: IoSpec[]; outputs: IoSpec[] }): string[] {
  const graph = graphOf(model.model)
  const initializers = new Set(graph.initializer.map(t => t.name))
  const actual = (values: typeof graph.input) =>
    new Map(values.filter(v => !initializers.has(v.name ?? '')).map(v => {
      const tensor = v.type?.tensorType
      const dims = (tensor?.shape?.dim ?? []).map(d => (d.dimParam ? d.dimParam : d.dimValue !== undefined && d.dimValue !== null ? toNumber(d.dimValue) : '?'))
      return [v.name ?? '', { type: dtypeOf[tensor?.elemType ?? 0] ?? `type ${tensor?.elemType}`, dims }]
    }))
  const problems: string[] = []
  for (const [kind, specs, values] of [['input', expected.inputs, actual(graph.input)], ['output', expected.outputs, actual(graph.output)]] as const) {
    for (const spec of specs) {
      const found = values.get(spec.name)
      if (!found) {
        problems.push(`no ${kind} ${spec.name} (has ${[...values.keys()].join(', ') || 'none'}); expected ${describe(spec)}`)
        continue
      }
      if (!spec.types.includes(found.type)) problems.push(`${kind} ${spec.name} is ${found.type}; expected ${spec.types.join(' or ')}`)
      const fits = found.dims.length === spec.dims.length && spec.dims.every((d, i) => d === '*' || typeof found.dims[i] === 'string' || found.dims[i] === d)
      if (!fits) problems.push(`${kind} ${spec.name} has shape [${found.dims.join(',')}]; expected [${spec.dims.join(',')}]`)
    }
  }
  return problems
}

const onnxCheck = (expected: { inputs: IoSpec[]; outputs: IoSpec[] }, extra?: (model: LoadedModel) => string[]) =>
  async (_folder: ModelsFolder, path: string) => {
    const model = await readModel(path)
    return [...(await externalDataProblems(model)), ...checkIo(model, expected), ...(extra?.(model) ?? [])]
  }

function timestepProblems(model: LoadedModel): string[] {
  const input = graphOf(model.model).input.find(i => i.name === 'timestep')
  const tensor = input?.type?.tensorType
  if (!tensor) return ['no input timestep (expected int64 [steps] from optimum ≤ 1.23, or a float32 scalar from optimum-onnx)']
  const type = dtypeOf[tensor.elemType ?? 0]
  const rank = tensor.shape?.dim?.length ?? 0
  return ['int64', 'float32', 'float16'].includes(type) && rank <= 1 ? [] : [`input timestep is ${type} of rank ${rank}; expected int64 [steps] or a float scalar`]
}

function textEncoderCheck(withProjection: boolean) {
  return onnxCheck({ inputs: [io('input_ids', IDS, ['*', '*'])], outputs: withProjection ? [io('text_embeds', FLOAT, ['*', '*'])] : [] }, model => {
    const hidden = graphOf(model.model).output.filter(o => /^hidden_states\.\d+$/.test(o.name ?? ''))
    return hidden.length >= 2 ? [] : ['no hidden_states.N outputs: export with optimum, which sets output_hidden_states for SDXL']
  })
}

async function tokenizerCheck(_folder: ModelsFolder, path: string): Promise<string[]> {
  await ClipTokenizer.fromFolder(path)
  return []
}

/** Reads only the file's header: the check never loads the LoRA's weights. */
async function loraCheck(folder: ModelsFolder, path: string): Promise<string[]> {
  if (!folder.has('unet')) return [`needs ${LAYOUT.unet} to be applied to`]
  const keys = [...(await safetensorsShapes(path)).keys()]
  const modules = new Set(keys.map(loraKey).filter(k => k !== null).map(k => k!.module))
  const targets = loraTargets((await readModel(folder.path('unet'))).model)
  const unmatched = [...modules].filter(module => !targets.has(module))
  const problems = modules.size === 0 ? ['no UNet LoRA weights in it'] : []
  if (unmatched.length > 0) problems.push(`${unmatched.length} of ${modules.size} LoRA layers match no UNet layer, e.g. ${unmatched.slice(0, 3).join(', ')}`)
  const ignored = keys.filter(k => !loraKey(k)).length
  return [...problems, ...(ignored ? [`${ignored} keys that are not UNet LoRA weights are ignored`] : [])]
}

const GUIDE_NETWORKS = 'see README, "Guide networks"'
const PIECES: Piece[] = [
  { name: 'unet', piece: 'unet', required: true, howTo: EXPORT_SDXL, check: onnxCheck(UNET_IO, timestepProblems) },
  { name: 'text_encoder', piece: 'text_encoder', required: true, howTo: EXPORT_SDXL, check: textEncoderCheck(false) },
  { name: 'text_encoder_2', piece: 'text_encoder_2', required: true, howTo: EXPORT_SDXL, check: textEncoderCheck(true) },
  { name: 'tokenizer', piece: 'tokenizer', required: true, howTo: `${EXPORT_SDXL} (writes tokenizer/vocab.json and merges.txt)`, check: tokenizerCheck },
  { name: 'tokenizer_2', piece: 'tokenizer_2', required: true, howTo: `${EXPORT_SDXL} (writes tokenizer_2/)`, check: tokenizerCheck },
  {
    name: 'vae_decoder', piece: 'vae_decoder', required: false, howTo: EXPORT_SDXL,
    check: onnxCheck(DECODER_IO, model => {
      const input = graphOf(model.model).input.find(i => i.name === 'latent_sample')
      return dtypeOf[input?.type?.tensorType?.elemType ?? 1] === 'float16' ? ["it is fp16: SDXL's VAE overflows in fp16; export it in fp32 (or madebyollin/sdxl-vae-fp16-fix)"] : []
    }),
  },
  {
    name: 'taesdxl_decoder', piece: 'taesdxl_decoder', required: false,
    howTo: `put ${LAYOUT.taesdxl_weights} (madebyollin/taesd, or diffusers' madebyollin/taesdxl weights) in OUT, or python samples/export/taesdxl_decoder.py OUT/${LAYOUT.taesdxl_decoder}`,
    find: folder => folder.decoderFile('taesd'),
    check: async (_folder, path) => checkIo(await readDecoderFile(path), DECODER_IO),
  },
  {
    name: 'lcm_unet', piece: 'lcm_unet', required: false,
    howTo: 'python samples/export/lcm_unet.py OUT/lcm_unet  (SDXL UNet with latent-consistency/lcm-lora-sdxl fused), or put the LoRA in lcm_lora/',
    check: onnxCheck(UNET_IO, timestepProblems),
  },
  {
    name: 'lcm_lora', piece: 'lcm_lora', required: false,
    howTo: 'download pytorch_lora_weights.safetensors of latent-consistency/lcm-lora-sdxl into lcm_lora/ (applied to unet at load time)',
    check: loraCheck,
  },
  { name: 'guides/arcface', piece: 'arcface', required: false, howTo: `${GUIDE_NETWORKS} (insightface buffalo_l w600k_r50.onnx, as ${LAYOUT.arcface})` },
  { name: 'guides/scrfd', piece: 'scrfd', required: false, howTo: `${GUIDE_NETWORKS} (insightface buffalo_l det_10g.onnx, as ${LAYOUT.scrfd}; without it faces are found by face-api's detector)` },
  {
    name: 'guides/lpips', piece: 'lpips_alex', required: false, howTo: `${GUIDE_NETWORKS} (LPIPS alex or vgg as ${LAYOUT.lpips_alex} or ${LAYOUT.lpips_vgg})`,
    find: folder => (['lpips_vgg', 'lpips_alex'] as const).map(p => folder.path(p)).find(existsSync),
  },
  { name: 'guides/clip', piece: 'clip_vision', required: false, howTo: `${GUIDE_NETWORKS} (a transformers.js CLIP export: ${LAYOUT.clip_vision}, ${LAYOUT.clip_text} and its tokenizer files in ${LAYOUT.clip})` },
]

/** How to make a piece, as `lookahead models` says it (the pieces it does not list are parts of ones it does). */
function howToMake(piece: PieceName): string {
  const part: Partial<Record<PieceName, PieceName>> = { taesdxl_weights: 'taesdxl_decoder', lpips_vgg: 'lpips_alex', clip: 'clip_vision', clip_text: 'clip_vision' }
  const listed = PIECES.find(p => p.piece === (part[piece] ?? piece))
  return listed ? listed.howTo : 'see `lookahead models`'
}

/** The pieces (and world.json) a folder already holds: `models --write-tiny` refuses to overwrite them without --force. */
export function heldPieces(dir: string): string[] {
  return [...PIECES.map(p => LAYOUT[p.piece]), LAYOUT.world].filter(path => existsSync(join(dir, path)))
}

/** Checks every piece of the models folder at `dir` (see checkFolder). */
export async function checkModels(dir: string): Promise<PieceReport[]> {
  return checkFolder(await ModelsFolder.at(dir))
}

/** Checks every piece of a models folder; text pieces are skipped where world.json says "text": false. */
async function checkFolder(folder: ModelsFolder): Promise<PieceReport[]> {
  const world = folder.world
  const reports: PieceReport[] = []
  for (const piece of PIECES) {
    const path = piece.find?.(folder) ?? folder.path(piece.piece)
    const textPiece = /^(text_encoder|tokenizer)/.test(piece.name)
    const required = piece.required && !(textPiece && world?.text === false)
    if (!existsSync(path)) {
      const status = required ? 'missing' : 'optional'
      const notes = textPiece && world?.text === false ? ['not needed: world.json says "text": false'] : []
      const otherLcm = ({ lcm_unet: 'lcm_lora', lcm_lora: 'lcm_unet' } as const)[piece.name]
      if (otherLcm && folder.has(otherLcm)) notes.push(`not needed: ${LAYOUT[otherLcm]} gives the LCM UNet`)
      reports.push({ piece: piece.name, path, status, problems: [], notes, howTo: notes.length ? undefined : piece.howTo })
      continue
    }
    let problems: string[]
    try {
      problems = piece.check ? await piece.check(folder, path) : []
    } catch (error) {
      problems = [(error as Error).message]
    }
    const range = piece.name === 'taesdxl_decoder' && problems.length === 0 ? taesdOutputRange((await readDecoderFile(path)).model) : undefined
    const notes = range ? [range === '[-1,1]' ? 'outputs [-1,1] (as diffusers DecoderTiny)' : 'outputs [0,1] (raw taesd.py Decoder): mapped to [-1,1]'] : []
    reports.push({ piece: piece.name, path, status: problems.length ? 'mismatch' : 'ok', problems, notes, howTo: problems.length ? piece.howTo : undefined })
  }
  reports.push(...(await crossChecks(folder, reports)))
  return reports
}

/** The UNet's conditioning sizes against the text encoders' (D₁ + D₂ = encoder_hidden_states, P = text_embeds). */
async function crossChecks(folder: ModelsFolder, reports: PieceReport[]): Promise<PieceReport[]> {
  const ok = (name: string) => reports.find(r => r.piece === name)?.status === 'ok'
  if (!['unet', 'text_encoder', 'text_encoder_2'].every(ok)) return []
  const lastDim = async (piece: PieceName, name: string, outputs: boolean) => {
    const graph = graphOf((await readModel(folder.path(piece))).model)
    const value = (outputs ? graph.output : graph.input).find(v => v.name === name)
    const dims = value?.type?.tensorType?.shape?.dim ?? []
    const last = dims[dims.length - 1]
    return last?.dimValue !== undefined && last?.dimValue !== null ? toNumber(last.dimValue) : undefined
  }
  const [context, pooled] = [await lastDim('unet', 'encoder_hidden_states', false), await lastDim('unet', 'text_embeds', false)]
  const hidden1 = await lastDim('text_encoder', 'last_hidden_state', true)
  const hidden2 = await lastDim('text_encoder_2', 'last_hidden_state', true)
  const projection = await lastDim('text_encoder_2', 'text_embeds', true)
  const problems: string[] = []
  if (context !== undefined && hidden1 !== undefined && hidden2 !== undefined && context !== hidden1 + hidden2) {
    problems.push(`unet encoder_hidden_states has ${context} channels but the text encoders give ${hidden1} + ${hidden2}`)
  }
  if (pooled !== undefined && projection !== undefined && pooled !== projection) problems.push(`unet text_embeds has ${pooled} channels but text_encoder_2 gives ${projection}`)
  return [{ piece: 'unet ↔ text encoders', path: folder.dir, status: problems.length ? 'mismatch' : 'ok', problems, notes: [], howTo: problems.length ? 'export all three from the same SDXL checkpoint' : undefined }]
}
