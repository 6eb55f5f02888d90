// CLIP's byte-level BPE tokenizer, as openai/CLIP's simple_tokenizer.py (the reference both SDXL text encoders
// were trained with), read from a diffusers tokenizer folder (vocab.json + merges.txt) or from OpenAI's
// bpe_simple_vocab_16e6.txt.gz. Written here because the JS tokenizer libraries need a tokenizer.json, which
// diffusers/optimum folders do not have, and none reproduces CLIP's ftfy + html clean-up.
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { decodeHTML, decodeHTMLStrict } from 'entities'
import { UserError } from '../errors.js'
import { writeFileAtomic } from '../fsutil.js'

export const CONTEXT_LENGTH = 77
const BOS = '<|startoftext|>'
const EOS = '<|endoftext|>'

const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)
/** GPT-2's reversible map from UTF-8 bytes to printable characters. */
function bytesToUnicode(): string[] {
  const table: string[] = []
  let extra = 0
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable(b) ? b : 256 + extra++)
  return table
}
const BYTE_CHARS = bytesToUnicode()
/** The byte characters in the order of OpenAI's vocabulary: the printable bytes first, then the others. */
const BYTE_VOCAB = [...BYTE_CHARS.filter((_, b) => printable(b)), ...BYTE_CHARS.filter((_, b) => !printable(b))]

// --- ftfy.fix_text, the parts that are deterministic table look-ups (not its mojibake detection) ---
const LIGATURES: Record<string, string> = {
  'Ĳ': 'IJ', 'ĳ': 'ij', 'ŉ': 'ʼn', 'Ǳ': 'DZ', 'ǲ': 'Dz', 'ǳ': 'dz', 'Ǆ': 'DŽ', 'ǅ': 'Dž', 'ǆ': 'dž', 'Ǉ': 'LJ', 'ǈ': 'Lj',
  'ǉ': 'lj', 'Ǌ': 'NJ', 'ǋ': 'Nj', 'ǌ': 'nj', 'ﬀ': 'ff', 'ﬁ': 'fi', 'ﬂ': 'fl', 'ﬃ': 'ffi', 'ﬄ': 'ffl', 'ﬅ': 'ſt', 'ﬆ': 'st',
}
const LIGATURE_CHARS = new RegExp(`[${Object.keys(LIGATURES).join('')}]`, 'g')
// Windows-1252 for bytes 0x80–0x9f, undefined ones kept ("sloppy"); Node's TextDecoder reads this label as Latin-1
const WINDOWS_1252_C1 = '€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8dŽ\x8f\x90‘’“”•–—˜™š›œ\x9džŸ'

/** One pass of ftfy's fixers in ftfy's order; `unescape` is false once a line holding '<' was seen. */
function ftfyPass(text: string, unescape: boolean): string {
  if (unescape) text = text.replace(/&#?[0-9A-Za-z]{1,24};/g, unescapeEntity)
  return text
    .replace(/[\x80-\x9f]/g, c => WINDOWS_1252_C1[c.charCodeAt(0) - 0x80]) // fix_c1_controls
    .replace(LIGATURE_CHARS, c => LIGATURES[c]) // fix_latin_ligatures
    .replace(/[\u3000\uff01-\uffef]/g, c => (c === '\u3000' ? ' ' : c.normalize('NFKC'))) // fix_character_width
    .replace(/[\u201c-\u201f]/g, '"').replace(/[\u02bc\u2018-\u201b]/g, "'") // uncurl_quotes
    .replace(/\r\n|[\r\u2028\u2029\x85]/g, '\n') // fix_line_breaks
    .replace(/\p{Surrogate}/gu, '\ufffd') // fix_surrogates (paired ones are already code points in JS)
    .replace(/\x1b\[[\d;]*[a-zA-Z]/g, '') // remove_terminal_escapes
    .replace(/[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g, '') // remove_control_chars
    .normalize('NFC')
}

/** ftfy's unescape_html: only entities that end in ';', plus upper-cased lower-case names (P&EACUTE;REZ). */
function unescapeEntity(entity: string): string {
  const decoded = decodeHTMLStrict(entity)
  // a numeric reference is kept when html.unescape would leave a ';' (it decoded only a part, or it is &#59;)
  if (entity.startsWith('&#')) return decoded.includes(';') ? entity : decoded
  if (decoded !== entity || entity !== entity.toUpperCase() || decodeHTML(entity) !== entity) return decoded
  const fromLower = decodeHTMLStrict(entity.toLowerCase())
  return fromLower === entity.toLowerCase() ? entity : fromLower.toUpperCase()
}

/** ftfy.fix_text: line by line, each line fixed until nothing changes. */
function fixText(text: string): string {
  let unescape = true
  return (text.match(/[^\n]*\n|[^\n]+$/g) ?? []).map(line => {
    if (line.includes('<')) unescape = false
    for (let previous = ''; previous !== line;) [previous, line] = [line, ftfyPass(line, unescape)]
    return line
  }).join('')
}

// Python's str.strip() and the regex module's \s (Unicode White_Space), which JS's \s and trim() are not.
const strip = (text: string) => text.replace(/^[\p{White_Space}\x1c-\x1f]+|[\p{White_Space}\x1c-\x1f]+$/gu, '')

/** simple_tokenizer's basic_clean + whitespace_clean + lower(). */
export function cleanText(text: string): string {
  const cleaned = strip(decodeHTML(decodeHTML(fixText(text))))
  return strip(cleaned.replace(/\p{White_Space}+/gu, ' ')).toLowerCase()
}

const WORDS = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\p{White_Space}\p{L}\p{N}]+/giu

export class ClipTokenizer {
  private readonly merges: string[]
  private readonly ranks = new Map<string, number>()
  private readonly cache = new Map<string, string[]>([[BOS, [BOS]], [EOS, [EOS]]])
  readonly bos: number
  readonly eos: number
  readonly pad: number

  /** `merges` as "a b" lines; `padToken` fills the ids after the end token (CLIP-L: "<|endoftext|>", bigG: "!"). */
  constructor(private readonly vocab: Map<string, number>, merges: string[], readonly padToken: string = EOS) {
    this.merges = merges
    merges.forEach((merge, rank) => this.ranks.set(merge, rank))
    this.bos = this.id(BOS)
    this.eos = this.id(EOS)
    this.pad = this.id(padToken)
  }

  private id(token: string): number {
    const id = this.vocab.get(token)
    if (id === undefined) throw new UserError(`the tokenizer vocabulary has no token ${JSON.stringify(token)}`)
    return id
  }

  /** A diffusers/transformers CLIPTokenizer folder: vocab.json, merges.txt, and the pad token if it says one. */
  static async fromFolder(dir: string): Promise<ClipTokenizer> {
    const read = async (name: string) => {
      try {
        return await readFile(join(dir, name), 'utf8')
      } catch {
        throw new UserError(`${join(dir, name)} is missing: a tokenizer folder needs vocab.json and merges.txt (as diffusers saves CLIPTokenizer)`)
      }
    }
    let vocab: Record<string, number>
    try {
      vocab = JSON.parse(await read('vocab.json'))
    } catch (error) {
      if (error instanceof UserError) throw error
      throw new UserError(`${join(dir, 'vocab.json')} is not valid JSON`)
    }
    const merges = (await read('merges.txt')).split('\n').filter(line => line && !line.startsWith('#version'))
    const padToken = await padTokenOf(dir)
    try {
      return new ClipTokenizer(new Map(Object.entries(vocab)), merges, padToken)
    } catch (error) {
      throw new UserError(`${dir}: ${(error as Error).message}`)
    }
  }

  /** OpenAI's bpe_simple_vocab_16e6.txt.gz: its first 48894 merges. */
  static async fromOpenAIBpe(path: string, padToken: string = EOS): Promise<ClipTokenizer> {
    const lines = gunzipSync(await readFile(path)).toString('utf8').split('\n')
    return ClipTokenizer.fromMerges(lines.slice(1, 49152 - 256 - 2 + 1), padToken)
  }

  /** The vocabulary built from merges as simple_tokenizer does: bytes, bytes + "</w>", merges, start, end. */
  static fromMerges(merges: string[], padToken: string = EOS): ClipTokenizer {
    const tokens = [...BYTE_VOCAB, ...BYTE_VOCAB.map(c => `${c}</w>`), ...merges.map(m => m.split(' ').join('')), BOS, EOS]
    return new ClipTokenizer(new Map(tokens.map((t, i) => [t, i])), merges, padToken)
  }

  /** Rows an embedding table needs: the largest id + 1. */
  get vocabSize(): number {
    let max = 0
    for (const id of this.vocab.values()) max = Math.max(max, id)
    return max + 1
  }

  /** Writes the folder as diffusers saves a CLIPTokenizer (the files `fromFolder` reads). */
  async saveFolder(dir: string): Promise<void> {
    await writeFileAtomic(join(dir, 'vocab.json'), JSON.stringify(Object.fromEntries(this.vocab)))
    await writeFileAtomic(join(dir, 'merges.txt'), ['#version: 0.2', ...this.merges].join('\n') + '\n')
    const specials = { bos_token: BOS, eos_token: EOS, unk_token: EOS, pad_token: this.padToken }
    await writeFileAtomic(join(dir, 'special_tokens_map.json'), JSON.stringify(specials, null, 2))
  }

  /** BPE of one pre-token (already mapped to byte characters); the last symbol carries the `</w>` end mark. */
  private bpe(token: string): string[] {
    const cached = this.cache.get(token)
    if (cached) return cached
    const chars = [...token]
    let word = [...chars.slice(0, -1), `${chars[chars.length - 1]}</w>`]
    while (word.length > 1) {
      let best = -1
      let bestRank = Infinity
      for (let i = 0; i < word.length - 1; i++) {
        const rank = this.ranks.get(`${word[i]} ${word[i + 1]}`)
        if (rank !== undefined && rank < bestRank) [best, bestRank] = [i, rank]
      }
      if (best < 0) break
      const [first, second] = [word[best], word[best + 1]]
      const merged: string[] = []
      for (let i = 0; i < word.length; i++) {
        if (word[i] === first && word[i + 1] === second && i < word.length - 1) merged.push(first + second), i++
        else merged.push(word[i])
      }
      word = merged
    }
    this.cache.set(token, word)
    return word
  }

  /** Token ids of a text, without start/end tokens (simple_tokenizer.encode). */
  encode(text: string): number[] {
    const ids: number[] = []
    for (const [word] of cleanText(text).matchAll(WORDS)) {
      const chars = Array.from(new TextEncoder().encode(word), b => BYTE_CHARS[b]).join('')
      for (const piece of this.bpe(chars)) ids.push(this.id(piece))
    }
    return ids
  }

  /** The encoder's input: start token, the text's ids cut to fit, end token, then padding, `length` in all. */
  ids(text: string, length = CONTEXT_LENGTH): number[] {
    const body = this.encode(text).slice(0, length - 2)
    return [this.bos, ...body, this.eos, ...Array(length - body.length - 2).fill(this.pad)]
  }
}

/** The pad token a tokenizer folder declares (special_tokens_map.json or tokenizer_config.json). */
async function padTokenOf(dir: string): Promise<string> {
  for (const name of ['special_tokens_map.json', 'tokenizer_config.json']) {
    const path = join(dir, name)
    if (!existsSync(path)) continue
    let pad
    try {
      pad = JSON.parse(await readFile(path, 'utf8')).pad_token
    } catch {
      throw new UserError(`${path} is not valid JSON`)
    }
    if (typeof pad === 'string') return pad
    if (pad && typeof pad.content === 'string') return pad.content
  }
  // diffusers' SDXL tokenizer_2 pads with "!"; CLIP-L's tokenizer with the end token
  return basename(dir) === 'tokenizer_2' ? '!' : EOS
}
