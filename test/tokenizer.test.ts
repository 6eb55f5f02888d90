import { fixtureOrSkip, fixtures } from './fixtures.js'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClipTokenizer } from '../src/diffusion/tokenizer.js'

const bpePath = join(fixtures, 'tokenizer', 'bpe_simple_vocab_16e6.txt.gz')

// [prompt, ids] computed by the reference: openai/CLIP clip/simple_tokenizer.py @d05afc4 (SimpleTokenizer.encode,
// ids without start/end tokens) with ftfy @74dd045 (rspeer/python-ftfy), Debian python3-regex, on this vocabulary.
// The last prompt is the one before it twice (137 tokens): it checks truncation to 77.
const GOLDEN: [string, number[]][] = [
  ["a photo of an astronaut riding a horse on mars", [320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496]],
  ["", []],
  ["Hello, World!!! (masterpiece:1.2), [best quality] -- 8k; it's 'great' & \"fine\"... #tag @user $5.00 100% C++/C# a_b", [3306, 267, 1002, 995, 263, 12066, 281, 272, 269, 273, 2361, 314, 949, 3027, 316, 2432, 279, 330, 282, 585, 568, 262, 830, 262, 261, 257, 3797, 9049, 258, 3640, 287, 7031, 259, 276, 269, 271, 271, 272, 271, 271, 260, 322, 47298, 270, 322, 258, 320, 318, 321]],
  ["I'LL WE'VE she's THEY'RE don't \u017f'\u017f 'd", [328, 1342, 649, 1200, 1043, 568, 889, 982, 847, 713, 129, 379, 6, 129, 379, 1896]],
  ["caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u6771\u4eac\u30bf\u30ef\u30fc \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u039f\u0394\u039f\u03a3 \u03a3 \u0130stanbul stra\u00dfe", [15304, 1097, 35689, 563, 29106, 7054, 4166, 23176, 10352, 807, 7255, 332, 48338, 21078, 105, 34941, 2429, 107, 30391, 138, 113, 138, 119, 138, 119, 138, 115, 138, 121, 138, 117, 138, 118, 138, 361, 138, 123, 138, 112, 138, 123, 139, 480, 139, 481, 328, 16384, 11231, 1894, 127, 253, 324]],
  ["\ud83d\udc31\ud83d\ude80 \ud83d\udc69\u200d\ud83d\udc69\u200d\ud83d\udc67 \ud83c\udff3\ufe0f\u200d\ud83c\udf08 e\u0301 \u00c5", [35710, 13542, 26304, 26304, 964, 356, 32610, 4166, 127, 354]],
  ["\ufb01ne \ufb02u\ufb03e\ufb06 \u201ccurly\u201d \u2018quotes\u2019 \uff26\uff35\uff2c\uff2c\u3000\uff57\uff49\uff44\uff54\uff48 \uff76\uff80\uff76\uff85", [3797, 3698, 19961, 1509, 257, 20795, 257, 262, 5808, 262, 1476, 23571, 37367, 34941, 37367, 2429, 488]],
  ["fish &amp; chips &lt;3 &eacute; P&EACUTE;REZ &#8364; &#x41; &copy &notit; &amp;amp; &#59;", [2759, 261, 8855, 283, 274, 4166, 43167, 15192, 6309, 320, 5811, 126, 361, 585, 282, 261, 282]],
  ["a <b> tag &amp; more", [320, 283, 321, 285, 3640, 261, 750]],
  ["  tabs\tand\nnewlines\r\n\u00a0nbsp\u3000ideo\u0085nel \u2028sep  ", [29163, 537, 1218, 3418, 6459, 4393, 1909, 334, 959, 2693, 10434]],
  ["bell\u0007 \ufeffbom esc\u001b[31mred\u001b[0m zero\u200bwidth \u0080\u0093c1", [3718, 19469, 3330, 736, 5848, 9844, 23571, 34919, 257, 322, 272]],
  ["<|startoftext|>hi<|endoftext|> <|ENDOFTEXT|>", [49406, 1883, 49407, 49407]],
  ["1234567 3.14159 \u00bd \u216b \u0663 \u2460", [272, 273, 274, 275, 276, 277, 278, 274, 269, 272, 275, 272, 276, 280, 33613, 158, 227, 375, 149, 352, 158, 239, 510]],
  ["portrait of a woman, highly detailed, photorealistic, 8k uhd, dslr, soft lighting, high quality, film grain, Fujifilm XT3, by greg rutkowski and alphonse mucha, trending on artstation, sharp focus, intricate, elegant, cinematic lighting, octane render, unreal engine 5, volumetric fog, golden hour", [5352, 539, 320, 2308, 267, 5302, 12609, 267, 1153, 16157, 267, 279, 330, 84, 4414, 267, 33740, 267, 3773, 5799, 267, 1400, 3027, 267, 1860, 12109, 267, 24765, 1052, 274, 267, 638, 7943, 14973, 17649, 537, 37865, 611, 42191, 267, 6087, 525, 1486, 2631, 267, 8157, 4353, 267, 29616, 267, 11124, 267, 25602, 5799, 267, 43040, 13024, 267, 15636, 5857, 276, 267, 3563, 19950, 9417, 267, 3878, 2232]],
  ["portrait of a woman, highly detailed, photorealistic, 8k uhd, dslr, soft lighting, high quality, film grain, Fujifilm XT3, by greg rutkowski and alphonse mucha, trending on artstation, sharp focus, intricate, elegant, cinematic lighting, octane render, unreal engine 5, volumetric fog, golden hour, portrait of a woman, highly detailed, photorealistic, 8k uhd, dslr, soft lighting, high quality, film grain, Fujifilm XT3, by greg rutkowski and alphonse mucha, trending on artstation, sharp focus, intricate, elegant, cinematic lighting, octane render, unreal engine 5, volumetric fog, golden hour", [5352, 539, 320, 2308, 267, 5302, 12609, 267, 1153, 16157, 267, 279, 330, 84, 4414, 267, 33740, 267, 3773, 5799, 267, 1400, 3027, 267, 1860, 12109, 267, 24765, 1052, 274, 267, 638, 7943, 14973, 17649, 537, 37865, 611, 42191, 267, 6087, 525, 1486, 2631, 267, 8157, 4353, 267, 29616, 267, 11124, 267, 25602, 5799, 267, 43040, 13024, 267, 15636, 5857, 276, 267, 3563, 19950, 9417, 267, 3878, 2232, 267, 5352, 539, 320, 2308, 267, 5302, 12609, 267, 1153, 16157, 267, 279, 330, 84, 4414, 267, 33740, 267, 3773, 5799, 267, 1400, 3027, 267, 1860, 12109, 267, 24765, 1052, 274, 267, 638, 7943, 14973, 17649, 537, 37865, 611, 42191, 267, 6087, 525, 1486, 2631, 267, 8157, 4353, 267, 29616, 267, 11124, 267, 25602, 5799, 267, 43040, 13024, 267, 15636, 5857, 276, 267, 3563, 19950, 9417, 267, 3878, 2232]],
]

describe('CLIP tokenizer', () => {
  let tokenizer: ClipTokenizer
  before(async function () {
    fixtureOrSkip(this, 'tokenizer/bpe_simple_vocab_16e6.txt.gz')
    tokenizer = await ClipTokenizer.fromOpenAIBpe(bpePath)
  })

  it('gives the reference ids on plain, punctuated, unicode, html-escaped and control-character prompts', () => {
    for (const [prompt, ids] of GOLDEN) assert.deepEqual(tokenizer.encode(prompt), ids, JSON.stringify(prompt))
  })

  it('frames ids with start and end tokens, truncates long prompts to 77, and pads', () => {
    const [long, longIds] = GOLDEN[GOLDEN.length - 1]
    assert.ok(longIds.length > 75)
    assert.deepEqual(tokenizer.ids(long), [49406, ...longIds.slice(0, 75), 49407])
    const [short, shortIds] = GOLDEN[0]
    const ids = tokenizer.ids(short)
    assert.equal(ids.length, 77)
    assert.deepEqual(ids.slice(0, shortIds.length + 2), [49406, ...shortIds, 49407])
    assert.ok(ids.slice(shortIds.length + 2).every(id => id === 49407))
    assert.deepEqual(tokenizer.ids(''), [49406, 49407, ...Array(75).fill(49407)])
  })

  it('reads a diffusers tokenizer folder (vocab.json, merges.txt) with the same ids; tokenizer_2 pads with "!"', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lookahead-tok-'))
    try {
      await tokenizer.saveFolder(join(dir, 'tokenizer'))
      const fromFolder = await ClipTokenizer.fromFolder(join(dir, 'tokenizer'))
      for (const [prompt, ids] of GOLDEN) assert.deepEqual(fromFolder.encode(prompt), ids)
      // tokenizer_2 as diffusers saves it declares pad_token "!" (id 0), which OpenAI's clip.tokenize also pads with
      const bigG = await ClipTokenizer.fromOpenAIBpe(bpePath, '!')
      await bigG.saveFolder(join(dir, 'tokenizer_2'))
      const ids2 = (await ClipTokenizer.fromFolder(join(dir, 'tokenizer_2'))).ids(GOLDEN[0][0])
      assert.deepEqual(ids2.slice(GOLDEN[0][1].length + 1), [49407, ...Array(76 - GOLDEN[0][1].length - 1).fill(0)])
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
