// The models folder (`--models DIR`, default $LOOKAHEAD_MODELS): where each export lives, world.json, the LCM
// UNet (a fused export, or LCM-LoRA applied to the base UNet), and `checkModels`, which names every piece that
// is missing or does not fit (names, dtypes, shapes) and how to produce it.
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { UserError } from '../errors.js'
import { dtypeOf } from '../onnx/builder.js'
import { graphOf, readModel, toNumber, type LoadedModel } from '../onnx/proto.js'
import { cachedLoraUnet, loraKey, loraTargets } from './lora.js'
import { safetensorsShapes } from './safetensors.js'
import { DECODER_FILES, decoderFile, readDecoderFile, taesdOutputRange } from './decoders.js'
import { ClipTokenizer } from './tokenizer.js'

export interface WorldInfo {
  kind: string
  /** false: no text encoders; the pipeline feeds zero text conditioning */
  text?: boolean
  /** the image side the world is made for (generate's default --size) */
  imageSize?: number
  [key: string]: unknown
}

/** The folder from --models, else $LOOKAHEAD_MODELS. */
export function modelsDir(flag?: string): string {
  const dir = flag ?? process.env.LOOKAHEAD_MODELS
  if (!dir) throw new UserError('no models folder: pass --models DIR or set LOOKAHEAD_MODELS (see `lookahead models`)')
  if (!existsSync(dir)) throw new UserError(`models folder ${dir} does not exist`)
  return resolve(dir)
}

export async function readWorld(dir: string): Promise<WorldInfo | null> {
  const path = join(dir, 'world.json')
  if (!existsSync(path)) return null
  try {
    return JSON.parse(await readFile(path, 'utf8')) as WorldInfo
  } catch {
    throw new UserError(`${path} is not valid JSON`)
  }
}

export const LCM_UNET = join('lcm_unet', 'model.onnx')
export const LCM_LORA = join('lcm_lora', 'pytorch_lora_weights.safetensors')

/** The LCM UNet: DIR/lcm_unet/model.onnx, else DIR/unet with DIR/lcm_lora applied (cached; see lora.ts). */
export async function lcmUnetPath(dir: string): Promise<string> {
  if (existsSync(join(dir, LCM_UNET))) return join(dir, LCM_UNET)
  if (existsSync(join(dir, LCM_LORA))) return (await cachedLoraUnet(join(dir, 'unet', 'model.onnx'), join(dir, LCM_LORA))).path
  throw new UserError(`${dir} has neither ${LCM_UNET} nor ${LCM_LORA}: see \`lookahead models\` for how to make one`)
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
  path: string
  /** needed for `generate` (else: only for guidance or LCM previews) */
  required: boolean
  howTo: string
  /** where the piece may be in more than one form: the file present, if any (else `path`) */
  find?: (dir: string) => string | undefined
  /** problems with the file, beyond its presence */
  check?: (dir: string, path: string) => Promise<string[]>
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
  async (_dir: string, path: string) => {
    const model = await readModel(path)
    return [...checkIo(model, expected), ...(extra?.(model) ?? [])]
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

async function tokenizerCheck(_dir: string, path: string): Promise<string[]> {
  await ClipTokenizer.fromFolder(path)
  return []
}

/** Reads only the file's header: the check never loads the LoRA's weights. */
async function loraCheck(dir: string, path: string): Promise<string[]> {
  const unetPath = join(dir, 'unet', 'model.onnx')
  if (!existsSync(unetPath)) return ['needs unet/model.onnx to be applied to']
  const keys = [...(await safetensorsShapes(path)).keys()]
  const modules = new Set(keys.map(loraKey).filter(k => k !== null).map(k => k!.module))
  const targets = loraTargets((await readModel(unetPath)).model)
  const unmatched = [...modules].filter(module => !targets.has(module))
  const problems = modules.size === 0 ? ['no UNet LoRA weights in it'] : []
  if (unmatched.length > 0) problems.push(`${unmatched.length} of ${modules.size} LoRA layers match no UNet layer, e.g. ${unmatched.slice(0, 3).join(', ')}`)
  const ignored = keys.filter(k => !loraKey(k)).length
  return [...problems, ...(ignored ? [`${ignored} keys that are not UNet LoRA weights are ignored`] : [])]
}

const PIECES: Piece[] = [
  { name: 'unet', path: join('unet', 'model.onnx'), required: true, howTo: EXPORT_SDXL, check: onnxCheck(UNET_IO, timestepProblems) },
  { name: 'text_encoder', path: join('text_encoder', 'model.onnx'), required: true, howTo: EXPORT_SDXL, check: textEncoderCheck(false) },
  { name: 'text_encoder_2', path: join('text_encoder_2', 'model.onnx'), required: true, howTo: EXPORT_SDXL, check: textEncoderCheck(true) },
  { name: 'tokenizer', path: 'tokenizer', required: true, howTo: `${EXPORT_SDXL} (writes tokenizer/vocab.json and merges.txt)`, check: tokenizerCheck },
  { name: 'tokenizer_2', path: 'tokenizer_2', required: true, howTo: `${EXPORT_SDXL} (writes tokenizer_2/)`, check: tokenizerCheck },
  {
    name: 'vae_decoder', path: join('vae_decoder', 'model.onnx'), required: false, howTo: EXPORT_SDXL,
    check: onnxCheck(DECODER_IO, model => {
      const input = graphOf(model.model).input.find(i => i.name === 'latent_sample')
      return dtypeOf[input?.type?.tensorType?.elemType ?? 1] === 'float16' ? ["it is fp16: SDXL's VAE overflows in fp16; export it in fp32 (or madebyollin/sdxl-vae-fp16-fix)"] : []
    }),
  },
  {
    name: 'taesdxl_decoder', path: DECODER_FILES.taesd[0], required: false,
    howTo: 'put taesdxl_decoder.safetensors (madebyollin/taesd, or diffusers\' madebyollin/taesdxl weights) in OUT, or python samples/export/taesdxl_decoder.py OUT/taesdxl_decoder/model.onnx',
    find: dir => decoderFile(dir, 'taesd'),
    check: async (_dir, path) => checkIo(await readDecoderFile(path), DECODER_IO),
  },
  {
    name: 'lcm_unet', path: LCM_UNET, required: false,
    howTo: 'python samples/export/lcm_unet.py OUT/lcm_unet  (SDXL UNet with latent-consistency/lcm-lora-sdxl fused), or put the LoRA in lcm_lora/',
    check: onnxCheck(UNET_IO, timestepProblems),
  },
  {
    name: 'lcm_lora', path: LCM_LORA, required: false,
    howTo: 'download pytorch_lora_weights.safetensors of latent-consistency/lcm-lora-sdxl into lcm_lora/ (applied to unet at load time)',
    check: loraCheck,
  },
  { name: 'guides/arcface', path: join('guides', 'arcface', 'model.onnx'), required: false, howTo: 'see README, "Guide networks" (insightface buffalo_l w600k_r50.onnx, as guides/arcface/model.onnx)' },
  { name: 'guides/lpips', path: join('guides', 'lpips_alex', 'model.onnx'), required: false, howTo: 'see README, "Guide networks" (LPIPS alex or vgg as guides/lpips_alex|lpips_vgg/model.onnx)' },
  { name: 'guides/clip', path: join('guides', 'clip', 'onnx', 'vision_model.onnx'), required: false, howTo: 'see README, "Guide networks" (a transformers.js CLIP export: guides/clip/onnx/vision_model.onnx, text_model.onnx)' },
]

/** Checks every piece of a models folder; text pieces are skipped where world.json says "text": false. */
export async function checkModels(dir: string): Promise<PieceReport[]> {
  const world = await readWorld(dir)
  const reports: PieceReport[] = []
  for (const piece of PIECES) {
    const path = piece.find?.(dir) ?? join(dir, piece.path)
    const textPiece = /^(text_encoder|tokenizer)/.test(piece.name)
    const required = piece.required && !(textPiece && world?.text === false)
    let present = existsSync(path)
    // LPIPS may be either network
    if (!present && piece.name === 'guides/lpips') present = existsSync(join(dir, 'guides', 'lpips_vgg', 'model.onnx'))
    if (!present) {
      const status = required ? 'missing' : 'optional'
      const notes = textPiece && world?.text === false ? ['not needed: world.json says "text": false'] : []
      const otherLcm = { lcm_unet: LCM_LORA, lcm_lora: LCM_UNET }[piece.name]
      if (otherLcm && existsSync(join(dir, otherLcm))) notes.push(`not needed: ${otherLcm} gives the LCM UNet`)
      reports.push({ piece: piece.name, path, status, problems: [], notes, howTo: notes.length ? undefined : piece.howTo })
      continue
    }
    let problems: string[]
    try {
      problems = piece.check ? await piece.check(dir, path) : []
    } catch (error) {
      problems = [(error as Error).message]
    }
    const range = piece.name === 'taesdxl_decoder' && problems.length === 0 ? taesdOutputRange((await readDecoderFile(path)).model) : undefined
    const notes = range ? [range === '[-1,1]' ? 'outputs [-1,1] (as diffusers DecoderTiny)' : 'outputs [0,1] (raw taesd.py Decoder): mapped to [-1,1]'] : []
    reports.push({ piece: piece.name, path, status: problems.length ? 'mismatch' : 'ok', problems, notes, howTo: problems.length ? piece.howTo : undefined })
  }
  reports.push(...(await crossChecks(dir, reports)))
  return reports
}

/** The UNet's conditioning sizes against the text encoders' (D₁ + D₂ = encoder_hidden_states, P = text_embeds). */
async function crossChecks(dir: string, reports: PieceReport[]): Promise<PieceReport[]> {
  const ok = (name: string) => reports.find(r => r.piece === name)?.status === 'ok'
  if (!['unet', 'text_encoder', 'text_encoder_2'].every(ok)) return []
  const lastDim = async (path: string, name: string, outputs: boolean) => {
    const graph = graphOf((await readModel(join(dir, path))).model)
    const value = (outputs ? graph.output : graph.input).find(v => v.name === name)
    const dims = value?.type?.tensorType?.shape?.dim ?? []
    const last = dims[dims.length - 1]
    return last?.dimValue !== undefined && last?.dimValue !== null ? toNumber(last.dimValue) : undefined
  }
  const unetPath = join('unet', 'model.onnx')
  const [context, pooled] = [await lastDim(unetPath, 'encoder_hidden_states', false), await lastDim(unetPath, 'text_embeds', false)]
  const hidden1 = await lastDim(join('text_encoder', 'model.onnx'), 'last_hidden_state', true)
  const hidden2 = await lastDim(join('text_encoder_2', 'model.onnx'), 'last_hidden_state', true)
  const projection = await lastDim(join('text_encoder_2', 'model.onnx'), 'text_embeds', true)
  const problems: string[] = []
  if (context !== undefined && hidden1 !== undefined && hidden2 !== undefined && context !== hidden1 + hidden2) {
    problems.push(`unet encoder_hidden_states has ${context} channels but the text encoders give ${hidden1} + ${hidden2}`)
  }
  if (pooled !== undefined && projection !== undefined && pooled !== projection) problems.push(`unet text_embeds has ${pooled} channels but text_encoder_2 gives ${projection}`)
  return [{ piece: 'unet ↔ text encoders', path: dir, status: problems.length ? 'mismatch' : 'ok', problems, notes: [], howTo: problems.length ? 'export all three from the same SDXL checkpoint' : undefined }]
}
