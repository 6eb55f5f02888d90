// A complete tiny models folder (the layout `--models` points at), generated from code with random weights.
import { join } from 'node:path'
import { writeFileAtomic } from '../../fsutil.js'
import { dims, writeModelWithExternalData, type ModelProto } from '../../onnx/proto.js'
import { seededNormal } from '../../onnx/layers.js'
import { loraTargets } from '../lora.js'
import { LAYOUT } from '../models-folder.js'
import { f32, toHalf, writeSafetensors, type NamedTensor } from '../safetensors.js'
import { TINY, type Generation, type UnetShape } from './config.js'
import { tinyTaesdDecoder, tinyVaeDecoder } from './decoders.js'
import { tinyTextEncoder, tinyTokenizer } from './text.js'
import { tinyUnet } from './unet.js'

export { GENERATIONS, TINY, type Generation, type UnetShape } from './config.js'
export { tinyTaesdDecoder, tinyVaeDecoder } from './decoders.js'
export { tinyTextEncoder, tinyTokenizer } from './text.js'
export { sdxlShapedUnet, tinyUnet } from './unet.js'

/** The layers latent-consistency/lcm-lora-sdxl adapts (train_lcm_distill_lora_sdxl.py's target modules). */
const LCM_LORA_TARGETS = /(to_q|to_k|to_v|to_out\.0|proj_in|proj_out|ff\.net\.0\.proj|ff\.net\.2|conv1|conv2|conv_shortcut|downsamplers\.0\.conv|upsamplers\.0\.conv|time_emb_proj)$/

/**
 * A random LoRA for a UNet in kohya's key spelling (lora_unet_…, lora_down, lora_up, alpha), on the layers
 * LCM-LoRA adapts, with rank `rank` and alpha = rank / 2 so that the α/r factor is exercised.
 */
export function tinyLora(unet: ModelProto, rank = 4, seed = 500): Map<string, NamedTensor> {
  const rand = seededNormal(seed)
  const random = (shape: number[], std: number) => f32(shape, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => std * rand()))
  const tensors = new Map<string, NamedTensor>()
  for (const [key, { node, module, weight }] of loraTargets(unet)) {
    if (!LCM_LORA_TARGETS.test(module)) continue
    const w = dims(weight)
    const conv = node.opType === 'Conv'
    const [inFeatures, outFeatures] = conv ? [w[1], w[0]] : node.opType === 'Gemm' ? [w[1], w[0]] : [w[0], w[1]]
    tensors.set(`lora_unet_${key}.lora_down.weight`, random(conv ? [rank, inFeatures, w[2], w[3]] : [rank, inFeatures], 0.3))
    tensors.set(`lora_unet_${key}.lora_up.weight`, random(conv ? [outFeatures, rank, 1, 1] : [outFeatures, rank], 0.3))
    tensors.set(`lora_unet_${key}.alpha`, f32([], Float32Array.of(rank / 2)))
  }
  return tensors
}

/**
 * Writes a tiny models folder: unet (model.onnx + model.onnx_data, as optimum writes it), text_encoder,
 * text_encoder_2, tokenizer, tokenizer_2, vae_decoder, taesdxl_decoder, lcm_lora and world.json. `unet`: another
 * UNet shape instead of TINY.unet (the guidance bench's bigger UNet), with the tiny text encoders' contextDim and pooledDim.
 */
export async function writeTinyModels(dir: string, options: { generation?: Generation; unet?: UnetShape } = {}): Promise<void> {
  const generation = options.generation ?? 'optimum-onnx'
  const unet = tinyUnet(generation, options.unet).build()
  // stored in float16, as latent-consistency/lcm-lora-sdxl is
  const lora = new Map([...tinyLora(unet)].map(([key, t]) => [key, toHalf(t)]))
  await writeSafetensors(join(dir, LAYOUT.lcm_lora), lora)
  await writeModelWithExternalData(unet, join(dir, LAYOUT.unet))
  await writeModelWithExternalData(tinyTextEncoder(1, generation).build(), join(dir, LAYOUT.text_encoder))
  await writeModelWithExternalData(tinyTextEncoder(2, generation).build(), join(dir, LAYOUT.text_encoder_2))
  await writeModelWithExternalData(tinyVaeDecoder(generation).build(), join(dir, LAYOUT.vae_decoder))
  await writeModelWithExternalData(tinyTaesdDecoder(generation).build(), join(dir, LAYOUT.taesdxl_decoder))
  await tinyTokenizer('<|endoftext|>').saveFolder(join(dir, LAYOUT.tokenizer))
  await tinyTokenizer('!').saveFolder(join(dir, LAYOUT.tokenizer_2))
  const world = { kind: 'tiny', generation, text: true, imageSize: TINY.size, note: 'random weights: shapes and plumbing only' }
  await writeFileAtomic(join(dir, LAYOUT.world), JSON.stringify(world, null, 2) + '\n')
}
