// SDXL text conditioning as diffusers' StableDiffusionXLPipeline builds it (encode_prompt, _get_add_time_ids):
// the penultimate hidden states of both encoders concatenated, the pooled text_embeds of encoder 2, time ids,
// zeros for a missing negative prompt, and the CFG batch [negative, positive]. Input dtypes and ranks come from
// each session, because the optimum export generations differ.
import { UserError } from '../errors.js'
import { ort, openSession, type Session, type SessionSettings, type ValueSpec } from '../onnx/session.js'
import { LORA_SCALE } from './lora.js'
import type { ModelsFolder } from './models-folder.js'
import { floatToHalf, halfToFloat } from './safetensors.js'
import { CONTEXT_LENGTH, ClipTokenizer } from './tokenizer.js'

/** A float tensor in JS: row-major values and their shape. */
export interface Tensor {
  data: Float32Array
  dims: number[]
}

/** An ort tensor of the type and rank a session input declares, from plain numbers. */
export function inputTensor(spec: ValueSpec, values: ArrayLike<number>, dims: number[]): ort.Tensor {
  switch (spec.type) {
    case 'float32': return new ort.Tensor('float32', Float32Array.from(values), dims)
    case 'float16': return new ort.Tensor('float16', Uint16Array.from(values, floatToHalf), dims)
    case 'int64': return new ort.Tensor('int64', BigInt64Array.from(values, v => BigInt(Math.round(v))), dims)
    case 'int32': return new ort.Tensor('int32', Int32Array.from(values, Math.round), dims)
    default: throw new UserError(`input ${spec.name} has type ${spec.type}; expected float32, float16, int64 or int32`)
  }
}

/** An output as float32 (fp16 exports give float16). */
export function outputTensor(tensor: ort.Tensor): Tensor {
  const data = tensor.type === 'float16' ? Float32Array.from(tensor.data as Uint16Array, halfToFloat) : Float32Array.from(tensor.data as Float32Array)
  return { data, dims: [...tensor.dims] }
}

export interface TextEncoders {
  tokenizers: [ClipTokenizer, ClipTokenizer]
  encoders: [Session, Session]
}

export async function loadTextEncoders(folder: ModelsFolder, settings: SessionSettings = {}): Promise<TextEncoders> {
  const tokenizers = await Promise.all(folder.textEncoders().map(({ tokenizer }) => ClipTokenizer.fromFolder(tokenizer)))
  const encoders = await Promise.all(folder.textEncoders().map(({ encoder }) => openSession(encoder, settings)))
  return { tokenizers: tokenizers as [ClipTokenizer, ClipTokenizer], encoders: encoders as [Session, Session] }
}

/** hidden_states[-2] of an optimum text encoder export: `hidden_states.{L-1}` for L layers (11 and 31 for SDXL). */
export function penultimateHiddenState(encoder: Session): string {
  const layers = encoder.outputs.map(o => /^hidden_states\.(\d+)$/.exec(o.name)).filter(m => m).map(m => Number(m![1]))
  if (layers.length < 2) throw new UserError(`${encoder.path} has no hidden_states.N outputs: export it with optimum (SDXL exports set output_hidden_states)`)
  return `hidden_states.${Math.max(...layers) - 1}`
}

/** One prompt's embeddings: [1, 77, D₁+D₂] and the pooled [1, P]. */
export interface PromptEmbeddings {
  hidden: Tensor
  pooled: Tensor
}

export async function encodePrompt(text: string, { tokenizers, encoders }: TextEncoders): Promise<PromptEmbeddings> {
  const hidden: Tensor[] = []
  let pooled: Tensor | undefined
  for (const [i, encoder] of encoders.entries()) {
    const spec = encoder.input('input_ids')
    const output = penultimateHiddenState(encoder)
    const names = i === 1 ? [output, 'text_embeds'] : [output]
    const result = await encoder.run({ input_ids: inputTensor(spec, tokenizers[i].ids(text), [1, CONTEXT_LENGTH]) }, names)
    hidden.push(outputTensor(result[output]))
    if (i === 1) pooled = outputTensor(result.text_embeds)
  }
  return { hidden: concatLastAxis(hidden[0], hidden[1]), pooled: pooled! }
}

function concatLastAxis(a: Tensor, b: Tensor): Tensor {
  const [da, db] = [a.dims[a.dims.length - 1], b.dims[b.dims.length - 1]]
  const rows = a.data.length / da
  const data = new Float32Array(rows * (da + db))
  for (let r = 0; r < rows; r++) {
    data.set(a.data.subarray(r * da, (r + 1) * da), r * (da + db))
    data.set(b.data.subarray(r * db, (r + 1) * db), r * (da + db) + da)
  }
  return { data, dims: [...a.dims.slice(0, -1), da + db] }
}

/** Zero embeddings of the sizes the UNet declares (a missing negative prompt, or a world without text). */
export function zeroEmbeddings(unet: Session): PromptEmbeddings {
  const size = (name: string, axis: number, fallback: number) => {
    const d = unet.input(name).shape[axis]
    return typeof d === 'number' ? d : fallback
  }
  const hiddenDims = [1, size('encoder_hidden_states', 1, CONTEXT_LENGTH), size('encoder_hidden_states', 2, 2048)]
  const pooledDims = [1, size('text_embeds', 1, 1280)]
  return { hidden: { data: new Float32Array(hiddenDims.reduce((a, b) => a * b)), dims: hiddenDims }, pooled: { data: new Float32Array(pooledDims[1]), dims: pooledDims } }
}

/** add_time_ids: original size, crop top-left, target size = (H, W), (0, 0), (H, W). */
export const timeIds = (height: number, width: number) => [height, width, 0, 0, height, width]

/** The UNet's conditioning inputs for a batch: [negative, positive] with CFG, [positive] without. */
export interface Conditioning {
  encoderHiddenStates: Tensor
  textEmbeds: Tensor
  timeIds: Tensor
}

export function stackBatch(prompts: PromptEmbeddings[], size: { height: number; width: number }): Conditioning {
  const stack = (parts: Tensor[]): Tensor => {
    const data = new Float32Array(parts.reduce((n, p) => n + p.data.length, 0))
    parts.reduce((offset, p) => (data.set(p.data, offset), offset + p.data.length), 0)
    return { data, dims: [parts.length, ...parts[0].dims.slice(1)] }
  }
  const ids = prompts.map(() => ({ data: Float32Array.from(timeIds(size.height, size.width)), dims: [1, 6] }))
  return { encoderHiddenStates: stack(prompts.map(p => p.hidden)), textEmbeds: stack(prompts.map(p => p.pooled)), timeIds: stack(ids) }
}

export interface PromptSettings {
  prompt: string
  /** undefined: zero negative embeddings (force_zeros_for_empty_prompt); a string, even "", is encoded */
  negative?: string
  /** classifier-free guidance is on when cfg > 1 */
  cfg: number
  size: { height: number; width: number }
}

/**
 * The conditioning diffusers' SDXL pipeline gives the UNet. `text` null means a world without text encoders:
 * the prompt is ignored and zeros of the UNet's declared shapes are fed.
 */
export async function conditioning(settings: PromptSettings, unet: Session, text: TextEncoders | null): Promise<Conditioning> {
  const positive = text ? await encodePrompt(settings.prompt, text) : zeroEmbeddings(unet)
  if (settings.cfg <= 1) return stackBatch([positive], settings.size)
  const negative = text && settings.negative !== undefined ? await encodePrompt(settings.negative, text) : zeroEmbeddings(unet)
  return stackBatch([negative, positive], settings.size)
}

/** The UNet's feeds for latents `sample` [B,4,h,w] at timestep t, reading dtypes and ranks from the session. */
export function unetFeeds(unet: Session, sample: Tensor, t: number, cond: Conditioning, loraScale = 1): Record<string, ort.Tensor> {
  return { sample: inputTensor(unet.input('sample'), sample.data, sample.dims), ...conditioningFeeds(unet, t, cond, loraScale) }
}

/**
 * The feeds for every UNet input but `sample`, for the UNet or for a model built around it (the guidance
 * engine's preview and gradient models keep the UNet's input names).
 */
export function conditioningFeeds(unet: Session, t: number, cond: Conditioning, loraScale = 1): Record<string, ort.Tensor> {
  const timestep = unet.input('timestep')
  // optimum ≤ 1.23: int64 [steps], fed as [1] like diffusers' ONNX pipelines; optimum-onnx: a float scalar
  const timestepDims = timestep.shape.length === 0 ? [] : [1]
  const float = (name: string, value: Tensor) => inputTensor(unet.input(name), value.data, value.dims)
  const feeds: Record<string, ort.Tensor> = {
    timestep: inputTensor(timestep, [t], timestepDims),
    encoder_hidden_states: float('encoder_hidden_states', cond.encoderHiddenStates),
    text_embeds: float('text_embeds', cond.textEmbeds),
    time_ids: float('time_ids', cond.timeIds),
  }
  // a UNet with LoRA branches (lora.ts) takes their scale as an input
  const scale = unet.inputs.find(i => i.name === LORA_SCALE)
  if (scale) feeds[LORA_SCALE] = inputTensor(scale, [loraScale], [])
  return feeds
}
