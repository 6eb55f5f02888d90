// Tiny CLIP text encoders with optimum's I/O: text_encoder (CLIPTextModel: last_hidden_state, pooler_output,
// hidden_states.0…L) and text_encoder_2 (CLIPTextModelWithProjection: text_embeds first), and their tokenizers.
import { GraphBuilder } from '../../onnx/builder.js'
import { gelu, layerNorm, linear, randomWeight, seededNormal, type Normal } from '../../onnx/layers.js'
import { CONTEXT_LENGTH, ClipTokenizer } from '../tokenizer.js'
import { TINY, type Generation } from './config.js'

/** A handful of merges over the byte alphabet: enough to exercise BPE, small enough for a tiny embedding table. */
const TINY_MERGES = ['t h', 'th e</w>', 'a n', 'i n', 'e r', 'o n</w>', 'a t', 'c a', 'ca t</w>', 'o f</w>', 'p h', 'o t', 'ph ot', 'phot o</w>']

export const tinyTokenizer = (padToken: string) => ClipTokenizer.fromMerges(TINY_MERGES, padToken)

/** CLIP attention: q, k, v and out projections with bias, causal mask added to the scores. */
function causalSelfAttention(g: GraphBuilder, x: string, rand: Normal, dim: number, heads: number): string {
  const headDim = dim / heads
  const split = (value: string, perm: number[]) => g.op('Transpose', [g.op('Reshape', [value, g.ints([0, 0, heads, headDim])])], { perm })
  const q = split(g.op('Mul', [linear(g, x, rand, dim, dim), g.constant(1 / Math.sqrt(headDim))]), [0, 2, 1, 3])
  const kT = split(linear(g, x, rand, dim, dim), [0, 2, 3, 1])
  const v = split(linear(g, x, rand, dim, dim), [0, 2, 1, 3])
  const n = CONTEXT_LENGTH
  const mask = g.constant(Float32Array.from({ length: n * n }, (_, i) => (i % n > Math.floor(i / n) ? -3.4028234663852886e38 : 0)), [1, 1, n, n])
  const scores = g.op('Add', [g.op('MatMul', [q, kT]), mask])
  const mixed = g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), v])
  return linear(g, g.op('Reshape', [g.op('Transpose', [mixed], { perm: [0, 2, 1, 3] }), g.ints([0, -1, dim])]), rand, dim, dim)
}

/** `which` 1: CLIP ViT-L-like (quick_gelu), 2: OpenCLIP bigG-like (gelu, projection → text_embeds). */
export function tinyTextEncoder(which: 1 | 2, generation: Generation, seed = which * 100): GraphBuilder {
  const config = which === 1 ? TINY.text1 : TINY.text2
  const { hidden, layers, heads } = config
  const g = new GraphBuilder(`text_encoder${which === 2 ? '_2' : ''}`, generation === 'optimum-1.23' ? 14 : 18)
  const rand = seededNormal(seed)
  // optimum ≤ 1.23 casts text_encoder's input_ids to int32 (CLIPTextOnnxConfig), never text_encoder_2's
  const idsType = generation === 'optimum-1.23' && which === 1 ? 'int32' : 'int64'
  const ids = g.input('input_ids', idsType, ['batch_size', 'sequence_length'])
  const vocab = tinyTokenizer('!').vocabSize
  const tokens = g.op('Gather', [randomWeight(g, rand, [vocab, hidden], 0.5, 0, 'token_embedding'), ids], { axis: 0 })
  let h = g.op('Add', [tokens, randomWeight(g, rand, [CONTEXT_LENGTH, hidden], 0.1, 0, 'position_embedding')])
  const hiddenStates = [h]
  for (let i = 0; i < layers; i++) {
    h = g.op('Add', [h, causalSelfAttention(g, layerNorm(g, h, rand, hidden), rand, hidden, heads)])
    const inner = linear(g, layerNorm(g, h, rand, hidden), rand, hidden, 4 * hidden)
    const activated = config.activation === 'gelu' ? gelu(g, inner) : g.op('Mul', [inner, g.op('Sigmoid', [g.op('Mul', [inner, g.constant(1.702)])])])
    h = g.op('Add', [h, linear(g, activated, rand, 4 * hidden, hidden)])
    hiddenStates.push(h)
  }
  const last = layerNorm(g, h, rand, hidden)
  // pooled = last_hidden_state[b, argmax(input_ids[b])]: the end token has the largest id
  const eos = g.op('ArgMax', [g.op('Cast', [ids], { to: 7 })], { axis: -1, keepdims: 1 })
  const index = g.op('Expand', [g.op('Unsqueeze', [eos, g.ints([2])]), g.op('Concat', [g.op('Shape', [eos]), g.ints([hidden])], { axis: 0 })])
  const pooled = g.op('Squeeze', [g.op('GatherElements', [last, index], { axis: 1 }), g.ints([1])])
  const seq = ['batch_size', 'sequence_length', hidden]
  if (which === 2) g.outputAs(g.op('MatMul', [pooled, randomWeight(g, rand, [hidden, TINY.text2.projection], 1 / Math.sqrt(hidden))]), 'text_embeds', 'float32', ['batch_size', TINY.text2.projection])
  g.outputAs(last, 'last_hidden_state', 'float32', seq)
  if (which === 1) g.outputAs(pooled, 'pooler_output', 'float32', ['batch_size', hidden])
  hiddenStates.forEach((state, i) => g.outputAs(state, `hidden_states.${i}`, 'float32', seq))
  return g
}
