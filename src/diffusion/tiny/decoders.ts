// Tiny decoders with the exports' I/O: vae_decoder (diffusers AutoencoderKL.decode: latent_sample → sample,
// GroupNorm/SiLU resnets, a mid attention, nearest ×2 upsampling) and taesdxl_decoder (diffusers DecoderTiny:
// tanh clamp, ReLU blocks, output mapped to [-1,1] by ·2 − 1).
import { GraphBuilder } from '../../onnx/builder.js'
import { conv2d, groupNorm, resnetBlock, seededNormal, silu, spatialTransformer, upsampleNearest2x, type Normal } from '../../onnx/layers.js'
import { TINY, type Generation } from './config.js'

const opsetOf = (generation: Generation) => (generation === 'optimum-1.23' ? 14 : 18)

function decoderGraph(name: string, generation: Generation): { g: GraphBuilder; latent: string } {
  const g = new GraphBuilder(name, opsetOf(generation))
  const latent = g.input('latent_sample', 'float32', ['batch_size', 4, 'height_latent', 'width_latent'])
  return { g, latent }
}

const outputImage = (g: GraphBuilder, value: string) => g.outputAs(value, 'sample', 'float32', ['batch_size', 3, 'height', 'width'])

export function tinyVaeDecoder(generation: Generation, seed = 300): GraphBuilder {
  const { channels: c, groups } = TINY.vae
  const { g, latent } = decoderGraph('vae_decoder', generation)
  const rand = seededNormal(seed)
  let h = conv2d(g, conv2d(g, latent, rand, 4, 4, { kernel: 1 }), rand, 4, c) // post_quant_conv, conv_in
  h = resnetBlock(g, spatialTransformer(g, resnetBlock(g, h, rand, c, c, { groups }), rand, c, { heads: 1, groups }), rand, c, c, { groups })
  for (let i = 0; i < 3; i++) h = conv2d(g, upsampleNearest2x(g, resnetBlock(g, h, rand, c, c, { groups })), rand, c, c)
  outputImage(g, conv2d(g, silu(g, groupNorm(g, h, rand, c, groups)), rand, c, 3))
  return g
}

/** AutoencoderTinyBlock: conv-ReLU-conv-ReLU-conv, plus the input, then ReLU. */
export function tinyBlock(g: GraphBuilder, x: string, rand: Normal, c: number): string {
  const relu = (v: string) => g.op('Relu', [v])
  const h = conv2d(g, relu(conv2d(g, relu(conv2d(g, x, rand, c, c)), rand, c, c)), rand, c, c)
  return relu(g.op('Add', [h, x]))
}

export function tinyTaesdDecoder(generation: Generation, seed = 400): GraphBuilder {
  const { channels: c } = TINY.taesd
  const { g, latent } = decoderGraph('taesdxl_decoder', generation)
  const rand = seededNormal(seed)
  const three = g.constant(3)
  let h = g.op('Mul', [g.op('Tanh', [g.op('Div', [latent, three])]), three])
  h = g.op('Relu', [conv2d(g, h, rand, 4, c)])
  for (let i = 0; i < 3; i++) h = conv2d(g, upsampleNearest2x(g, tinyBlock(g, h, rand, c)), rand, c, c, { bias: false })
  const raw = conv2d(g, tinyBlock(g, h, rand, c), rand, c, 3)
  outputImage(g, g.op('Sub', [g.op('Mul', [raw, g.constant(2)]), g.constant(1)]))
  return g
}
