// Sizes of the tiny SDXL-shaped models: the real models' structure at a few dozen channels.

/**
 * Which optimum export the tiny models imitate: up to optimum 1.23 (the official hub export): opset 14, int64
 * [B] timestep, int32 input_ids for text_encoder; optimum ≥ 1.24 / optimum-onnx: opset 18, float32 scalar
 * timestep, int64 input_ids everywhere.
 */
export type Generation = 'optimum-1.23' | 'optimum-onnx'
export const GENERATIONS: Generation[] = ['optimum-1.23', 'optimum-onnx']

const TEXT_1 = { hidden: 32, layers: 3, heads: 2, activation: 'quick_gelu' as const }
const TEXT_2 = { hidden: 48, layers: 3, heads: 2, activation: 'gelu' as const, projection: 32 }

export const TINY = {
  text1: TEXT_1,
  text2: TEXT_2,
  unet: {
    channels: [32, 64],
    groups: 8,
    heads: 2,
    temb: 64,
    timeProj: 32,
    addTimeProj: 8,
    contextDim: TEXT_1.hidden + TEXT_2.hidden,
    pooledDim: TEXT_2.projection,
    latentChannels: 4,
  },
  vae: { channels: 16, groups: 8 },
  taesd: { channels: 16 },
  /** the image side the tiny world generates by default */
  size: 64,
}
