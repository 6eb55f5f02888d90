// SDXL-shaped UNets: the I/O contract of optimum's UNet export and the block structure of diffusers'
// UNet2DConditionModel with addition_embed_type "text_time", for any UnetShape: the tiny models' (TINY.unet, a few
// dozen channels), scaled-down SDXLs with real random weights (the guidance bench), and SDXL's own with empty
// weights (samples/bench/sdxl-shape.ts). Layers carry torch-style names (naming.ts), so LoRA finds them.
import { GraphBuilder } from '../../onnx/builder.js'
import { conv2d, downsample, groupNorm, linear, resnetBlock, seededNormal, silu, spatialTransformer, upsampleNearest2x, type Normal } from '../../onnx/layers.js'
import { scoped } from './naming.js'
import { TINY, type Generation, type UnetShape } from './config.js'

const RESNET_CHILDREN = ['conv1', 'time_emb_proj', 'conv2', 'conv_shortcut']
const TRANSFORMER_BLOCK_CHILDREN = [...['attn1', 'attn2'].flatMap(a => ['to_q', 'to_k', 'to_v', 'to_out.0'].map(l => `${a}.${l}`)), 'ff.net.0.proj', 'ff.net.2']
/** Transformer2DModel's layers in graph order, for `depth` transformer blocks. */
const transformerChildren = (depth: number) =>
  ['proj_in', ...Array.from({ length: depth }, (_, i) => TRANSFORMER_BLOCK_CHILDREN.map(l => `transformer_blocks.${i}.${l}`)).flat(), 'proj_out']

/**
 * diffusers get_timestep_embedding(flip_sin_to_cos=True, shift 0): [cos(t·f), sin(t·f)], f_i = 10000^(−i/half).
 * `t` is a float [N] value; the result is [N, dim].
 */
export function timestepEmbedding(g: GraphBuilder, t: string, dim: number): string {
  const half = dim / 2
  const freqs = g.constant(Float32Array.from({ length: half }, (_, i) => Math.exp((-Math.log(10000) * i) / half)), [1, half])
  const args = g.op('Mul', [g.op('Unsqueeze', [t, g.ints([1])]), freqs])
  return g.op('Concat', [g.op('Cos', [args]), g.op('Sin', [args])], { axis: -1 })
}

/**
 * Builds into `g` (whose opset sets the timestep input: < 18 int64 [steps], else float32 scalar) the UNet of
 * `shape` with weights drawn from `rand`: sample [B,4,h,w], timestep, encoder_hidden_states [B,S,contextDim],
 * text_embeds [B,pooledDim], time_ids [B,6] → out_sample.
 */
export function sdxlShapedUnet<G extends GraphBuilder>(g: G, shape: UnetShape, rand: Normal): G {
  const { channels, depths, heads, layersPerBlock, groups, contextDim, pooledDim, addTimeProj, latentChannels } = shape
  const timeProj = channels[0]
  const temb = shape.timeEmbedding ?? 4 * channels[0]
  const sample = g.input('sample', 'float32', ['batch_size', latentChannels, 'height', 'width'])
  const timestep = g.opset < 18 ? g.input('timestep', 'int64', ['steps']) : g.input('timestep', 'float32', [])
  const context = g.input('encoder_hidden_states', 'float32', ['batch_size', 'sequence_length', contextDim])
  const textEmbeds = g.input('text_embeds', 'float32', ['batch_size', pooledDim])
  const timeIds = g.input('time_ids', 'float32', ['batch_size', 6])

  // timesteps.expand(sample.shape[0]), then the sinusoidal projection and time_embedding MLP
  const batch = g.op('Unsqueeze', [g.op('Gather', [g.op('Shape', [sample]), g.constant([0], [], 'int64')], { axis: 0 }), g.ints([0])])
  const t = g.op('Expand', [g.op('Cast', [timestep], { to: 1 }), batch])
  const mlp = (path: string, x: string, inDim: number) =>
    scoped(g, path, () => linear(g, silu(g, linear(g, x, rand, inDim, temb, { gemm: true })), rand, temb, temb, { gemm: true }), ['linear_1', 'linear_2'])
  const timeEmb = mlp('time_embedding', timestepEmbedding(g, t, timeProj), timeProj)
  // add_time_proj(time_ids.flatten()).reshape(B, −1), concatenated after text_embeds, then add_embedding
  const idsEmb = timestepEmbedding(g, g.op('Reshape', [timeIds, g.ints([-1])]), addTimeProj)
  const addInput = g.op('Concat', [textEmbeds, g.op('Reshape', [idsEmb, g.op('Concat', [batch, g.ints([-1])], { axis: 0 })])], { axis: -1 })
  const emb = g.op('Add', [timeEmb, mlp('add_embedding', addInput, pooledDim + 6 * addTimeProj)])

  const resnet = (path: string, x: string, cin: number, cout: number) =>
    scoped(g, path, () => resnetBlock(g, x, rand, cin, cout, { groups, temb: emb, tembDim: temb }), RESNET_CHILDREN)
  const transformer = (path: string, x: string, level: number) =>
    scoped(g, path, () => spatialTransformer(g, x, rand, channels[level], { heads: heads[level], context, contextDim, groups, depth: depths[level] }), transformerChildren(depths[level]))
  const last = channels.length - 1

  // down blocks: layersPerBlock × (resnet [+ transformer]), then a stride-2 conv except in the last
  let h = scoped(g, 'conv_in', () => conv2d(g, sample, rand, latentChannels, channels[0]))
  const skips = [{ value: h, channels: channels[0] }]
  let previous = channels[0]
  for (let level = 0; level <= last; level++) {
    const block = `down_blocks.${level}`
    for (let i = 0; i < layersPerBlock; i++) {
      h = resnet(`${block}.resnets.${i}`, h, i === 0 ? previous : channels[level], channels[level])
      if (depths[level] > 0) h = transformer(`${block}.attentions.${i}`, h, level)
      skips.push({ value: h, channels: channels[level] })
    }
    if (level < last) {
      h = scoped(g, `${block}.downsamplers.0.conv`, () => downsample(g, h, rand, channels[level]))
      skips.push({ value: h, channels: channels[level] })
    }
    previous = channels[level]
  }
  // mid: resnet, transformer, resnet
  h = resnet('mid_block.resnets.1', transformer('mid_block.attentions.0', resnet('mid_block.resnets.0', h, channels[last], channels[last]), last), channels[last], channels[last])
  // up blocks: layersPerBlock + 1 × (resnet on the concatenated skip [+ transformer]), then an upsampler except in the last
  for (let level = last; level >= 0; level--) {
    const block = `up_blocks.${last - level}`
    for (let i = 0; i <= layersPerBlock; i++) {
      const skip = skips.pop()!
      h = resnet(`${block}.resnets.${i}`, g.op('Concat', [h, skip.value], { axis: 1 }), (i === 0 ? previous : channels[level]) + skip.channels, channels[level])
      if (depths[level] > 0) h = transformer(`${block}.attentions.${i}`, h, level)
    }
    if (level > 0) h = scoped(g, `${block}.upsamplers.0.conv`, () => conv2d(g, upsampleNearest2x(g, h), rand, channels[level], channels[level]))
    previous = channels[level]
  }
  h = scoped(g, 'conv_out', () => conv2d(g, silu(g, groupNorm(g, h, rand, channels[0], groups)), rand, channels[0], latentChannels))
  g.outputAs(h, 'out_sample', 'float32', ['batch_size', latentChannels, 'height', 'width'])
  return g
}

/** The tiny models' UNet, or one of another shape with the same I/O (a bigger one for the guidance bench). */
export const tinyUnet = (generation: Generation, shape: UnetShape = TINY.unet, seed = 1) =>
  sdxlShapedUnet(new GraphBuilder('unet', generation === 'optimum-1.23' ? 14 : 18), shape, seededNormal(seed))
