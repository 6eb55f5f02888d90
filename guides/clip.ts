// CLIP guidance (transformers.js layout: onnx/vision_model.onnx → image_embeds, onnx/text_model.onnx →
// text_embeds): the preview is resized and centre-cropped to 224 and normalised inside the graph, and
// the loss is 1 − cos to the reference image's or the text's embedding (embeddings are not normalised
// by the export; we normalise).
import { LAYOUT, type ModelsFolder } from '../src/diffusion/models-folder.js'
import { ClipTokenizer } from '../src/diffusion/tokenizer.js'
import { UserError } from '../src/errors.js'
import type { GraphBuilder } from '../src/onnx/builder.js'
import { embedModel } from '../src/onnx/compose.js'
import { graphOf, readModel, type LoadedModel } from '../src/onnx/proto.js'
import { openSession, ort, type Device } from '../src/onnx/session.js'
import { resizeFragment } from './align.js'
import { cosineLoss, dataInputs, evaluateFragment, referenceImage, type Guide, type GuideReference, type GuideSettings, type Size } from './guide.js'

export const CLIP_SIZE = 224
const MEAN = [0.48145466, 0.4578275, 0.40821073]
const STD = [0.26862954, 0.26130258, 0.27577711]

/** [-1,1] image → CLIP pixel_values: resize the shorter side to 224, centre crop, normalise with CLIP's mean and std. */
export function clipPixels(g: GraphBuilder, image: string, size: Size): string {
  const crop = resizeFragment(g, image, size, { height: CLIP_SIZE, width: CLIP_SIZE }, 'cover')
  const scale = g.constant(STD.map(s => 0.5 / s), [1, 3, 1, 1], 'float32', 'clip_scale')
  const shift = g.constant(MEAN.map((m, c) => (0.5 - m) / STD[c]), [1, 3, 1, 1], 'float32', 'clip_shift')
  return g.op('Add', [g.op('Mul', [crop, scale]), shift])
}

function onlyOutput(model: LoadedModel, preferred: string, path: string): string {
  const outputs = graphOf(model.model).output.map(o => o.name ?? '')
  if (outputs.includes(preferred)) return preferred
  if (outputs.length === 1) return outputs[0]
  throw new UserError(`${path}: expected an output named ${preferred} (it has ${outputs.join(', ')})`)
}

/** CLIP's image embedding of the [-1,1] image, as a [1,D] value. */
export function clipImageEmbedding(g: GraphBuilder, vision: LoadedModel, path: string, image: string, size: Size): string {
  const [input] = dataInputs(vision)
  const outputs = embedModel(g, vision, { [input.name]: clipPixels(g, image, size) }, `${g.fresh('clip')}/`)
  return outputs[onlyOutput(vision, 'image_embeds', path)]
}

/** CLIP's text embedding, from the folder's CLIP text model and its tokenizer files. */
export async function clipTextEmbedding(folder: ModelsFolder, text: string, device?: Device): Promise<Float32Array> {
  const path = folder.need('clip_text', 'a CLIP text target')
  const tokenizer = await ClipTokenizer.fromFolder(folder.path('clip'))
  const session = await openSession(path, { device })
  const ids = tokenizer.ids(text)
  const feeds: Record<string, ort.Tensor> = {}
  for (const input of session.inputs) {
    const values = input.name === 'attention_mask' ? ids.map(() => 1) : ids
    feeds[input.name] = input.type === 'int32' ? new ort.Tensor('int32', Int32Array.from(values), [1, ids.length]) : new ort.Tensor('int64', BigInt64Array.from(values, BigInt), [1, ids.length])
  }
  const outputs = await session.run(feeds)
  const name = session.outputs.some(o => o.name === 'text_embeds') ? 'text_embeds' : session.outputs[0].name
  return outputs[name].data as Float32Array
}

export class ClipGuide implements Guide {
  readonly name = 'clip'
  description = 'clip (not prepared)'
  private vision?: LoadedModel
  private visionPath = ''
  private target?: Float32Array

  constructor(private readonly settings: GuideSettings = {}) {}

  async prepare(reference: GuideReference): Promise<void> {
    const { folder } = this.settings
    if (!folder) throw new UserError(`the clip guide needs --models DIR with ${LAYOUT.clip_vision}`)
    this.visionPath = folder.need('clip_vision', 'the clip guide')
    const vision = await readModel(this.visionPath)
    if (reference.text !== undefined) {
      this.target = await clipTextEmbedding(folder, reference.text, this.settings.device)
      this.description = `clip: 1 − cos to the text "${reference.text}"`
    } else {
      const image = await referenceImage(reference, this.name)
      ;[this.target] = await evaluateFragment(image, (g, x, size) => [clipImageEmbedding(g, vision, this.visionPath, x, size)])
      this.description = 'clip: 1 − cos to the reference image'
    }
    this.vision = vision
  }

  lossFragment(g: GraphBuilder, image: string, size: Size): string {
    if (!this.vision || !this.target) throw new Error('clip guide: prepare() first')
    return cosineLoss(g, clipImageEmbedding(g, this.vision, this.visionPath, image, size), this.target)
  }

  async feeds() {
    return {}
  }
}

