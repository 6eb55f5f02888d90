// Sizes of the tiny SDXL-shaped models: the real models' structure at a few dozen channels.

/**
 * Which optimum export the tiny models imitate: up to optimum 1.23 (the official hub export): opset 14, int64
 * [B] timestep, int32 input_ids for text_encoder; optimum ≥ 1.24 / optimum-onnx: opset 18, float32 scalar
 * timestep, int64 input_ids everywhere.
 */
export type Generation = 'optimum-1.23' | 'optimum-onnx'
export const GENERATIONS: Generation[] = ['optimum-1.23', 'optimum-onnx']

/** diffusers UNet2DConditionModel's config, the parts that set the graph's structure (see unet.ts). */
export interface UnetShape {
  /** block_out_channels */
  channels: number[]
  /** transformer_layers_per_block; 0: a block without attention (DownBlock2D / UpBlock2D) */
  depths: number[]
  /** attention heads per level (SDXL's attention_head_dim [5, 10, 20], i.e. 64 channels per head) */
  heads: number[]
  layersPerBlock: number
  groups: number
  /** cross_attention_dim */
  contextDim: number
  /** projection_class_embeddings_input_dim = pooledDim + 6·addTimeProj */
  pooledDim: number
  addTimeProj: number
  latentChannels: number
  /** time_embed_dim; diffusers' default (and SDXL's) is 4·channels[0] */
  timeEmbedding?: number
}

const TEXT_1 = { hidden: 32, layers: 3, heads: 2, activation: 'quick_gelu' as const }
const TEXT_2 = { hidden: 48, layers: 3, heads: 2, activation: 'gelu' as const, projection: 32 }

export const TINY = {
  text1: TEXT_1,
  text2: TEXT_2,
  /** SDXL's blocks (DownBlock2D, CrossAttnDownBlock2D; mid; CrossAttnUpBlock2D, UpBlock2D) with one layer per block */
  unet: {
    channels: [32, 64],
    depths: [0, 1],
    heads: [2, 2],
    layersPerBlock: 1,
    groups: 8,
    contextDim: TEXT_1.hidden + TEXT_2.hidden,
    pooledDim: TEXT_2.projection,
    addTimeProj: 8,
    latentChannels: 4,
    timeEmbedding: 64,
  } satisfies UnetShape,
  vae: { channels: 16, groups: 8 },
  taesd: { channels: 16 },
  /** the image side the tiny world generates by default */
  size: 64,
}
