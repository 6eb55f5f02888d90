// A tiny SDXL-shaped UNet (random weights): the I/O contract of optimum's UNet export and the block structure
// of diffusers' UNet2DConditionModel with addition_embed_type "text_time", at a few dozen channels.
import { GraphBuilder } from '../../onnx/builder.js'
import { conv2d, downsample, groupNorm, linear, resnetBlock, seededNormal, silu, spatialTransformer, upsampleNearest2x, type Normal } from '../../onnx/layers.js'
import { scoped } from './naming.js'
import { TINY, type Generation } from './config.js'

const RESNET_CHILDREN = ['conv1', 'time_emb_proj', 'conv2', 'conv_shortcut']
const ATTENTION_CHILDREN = ['proj_in', ...['attn1', 'attn2'].flatMap(a => ['to_q', 'to_k', 'to_v', 'to_out.0'].map(l => `transformer_blocks.0.${a}.${l}`)), 'transformer_blocks.0.ff.net.0.proj', 'transformer_blocks.0.ff.net.2', 'proj_out']

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

export function tinyUnet(generation: Generation, seed = 1): GraphBuilder {
  const { channels, groups, heads, temb, timeProj, addTimeProj, contextDim, pooledDim, latentChannels } = TINY.unet
  const g = new GraphBuilder('unet', generation === 'optimum-1.23' ? 14 : 18)
  const rand: Normal = seededNormal(seed)
  const sample = g.input('sample', 'float32', ['batch_size', latentChannels, 'height', 'width'])
  const timestep = generation === 'optimum-1.23' ? g.input('timestep', 'int64', ['steps']) : g.input('timestep', 'float32', [])
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
  const transformer = (path: string, x: string, c: number) =>
    scoped(g, path, () => spatialTransformer(g, x, rand, c, { heads, context, contextDim, groups }), ATTENTION_CHILDREN)
  const [c0, c1] = channels

  // down: DownBlock2D (resnet, downsampler), CrossAttnDownBlock2D (resnet + transformer)
  let h = scoped(g, 'conv_in', () => conv2d(g, sample, rand, latentChannels, c0))
  const skips = [h]
  h = resnet('down_blocks.0.resnets.0', h, c0, c0)
  skips.push(h)
  h = scoped(g, 'down_blocks.0.downsamplers.0.conv', () => downsample(g, h, rand, c0))
  skips.push(h)
  h = transformer('down_blocks.1.attentions.0', resnet('down_blocks.1.resnets.0', h, c0, c1), c1)
  skips.push(h)
  // mid: resnet, transformer, resnet
  h = resnet('mid_block.resnets.1', transformer('mid_block.attentions.0', resnet('mid_block.resnets.0', h, c1, c1), c1), c1, c1)
  // up: CrossAttnUpBlock2D (2 × resnet + transformer on concatenated skips, upsampler), UpBlock2D (2 resnets)
  const skipChannels = [c0, c0, c0, c1]
  const up = (block: number, i: number, cout: number, attention: boolean) => {
    const cin = (i === 0 ? c1 : cout) + skipChannels[skips.length - 1]
    h = resnet(`up_blocks.${block}.resnets.${i}`, g.op('Concat', [h, skips.pop()!], { axis: 1 }), cin, cout)
    if (attention) h = transformer(`up_blocks.${block}.attentions.${i}`, h, cout)
  }
  up(0, 0, c1, true)
  up(0, 1, c1, true)
  h = scoped(g, 'up_blocks.0.upsamplers.0.conv', () => conv2d(g, upsampleNearest2x(g, h), rand, c1, c1))
  up(1, 0, c0, false)
  up(1, 1, c0, false)
  h = scoped(g, 'conv_out', () => conv2d(g, silu(g, groupNorm(g, h, rand, c0, groups)), rand, c0, latentChannels))
  g.outputAs(h, 'out_sample', 'float32', ['batch_size', latentChannels, 'height', 'width'])
  return g
}
