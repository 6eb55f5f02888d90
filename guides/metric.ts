// Evaluation metrics held apart from the loss. The paper scores identity with a network other than its loss
// network; ours is Human's FaceRes (an HSE MobileNet trained on VGGFace2, npm weights): another architecture,
// training set and objective than both loss recognizers (face-api's dlib ResNet, insightface's ArcFace), on
// its own alignment (5-point similarity at 224) and with faces detected afresh on every scored image. Beside
// it, the loss network's own score, so that a gap between the two can show guidance fooling its loss network.
// Plus CLIP text alignment where a CLIP export is present.
import type { ModelsFolder } from '../src/diffusion/models-folder.js'
import { UserError } from '../src/errors.js'
import type { ImageTensor } from '../src/image/image.js'
import { readModel } from '../src/onnx/proto.js'
import { ort } from '../src/onnx/session.js'
import { invertAffine, rescaleAffine, warpAffine, type Affine } from './align.js'
import { clipImageEmbedding, clipTextEmbedding } from './clip.js'
import type { DetectOptions, Face } from './face.js'
import { compileFragment, evaluateFragment, type CompiledFragment, type GuideSettings, type Size } from './guide.js'
import { chooseRecognizer, detectOptions, mainFace, type IdNetwork } from './id.js'
import { faceresRecognizer, type Recognizer } from './recognizers.js'

export interface Similarity {
  /** cosine similarity of the two embeddings */
  similarity: number
  /** Euclidean distance of the two embeddings as the network gives them (face-api calls < 0.6 the same person for its ResNet) */
  distance: number
}

/** The held-apart score, and the loss network's own where it was asked for. */
export interface IdentityScore extends Similarity {
  loss?: Similarity
  /** false where no face was detected and the face was taken at the reference's position (measure's `fallback`) */
  detected?: boolean
}

/**
 * Where measure finds the face: only by detection (no score without one), or where the detector finds none, at
 * the reference's face position rescaled to the image — as the id guide does, so that images cropped as the
 * reference is (a demo world's faces) are scored where their face is even when the detector misses it.
 */
export type FaceFallback = 'none' | 'reference'

/** One recognizer's comparison of images with the reference; one session per image size, kept. */
class FaceScorer {
  private readonly compiled = new Map<string, Promise<CompiledFragment>>()
  private reference!: { embedding: Float32Array; transform: Affine; size: Size }

  private constructor(readonly recognizer: Recognizer) {}

  static async create(recognizer: Recognizer, reference: ImageTensor, face: Face): Promise<FaceScorer> {
    const scorer = new FaceScorer(recognizer)
    const transform = recognizer.cropTransform(face)
    scorer.reference = { embedding: await scorer.embedding(reference, transform), transform, size: { width: reference.width, height: reference.height } }
    return scorer
  }

  /** The embedding of the face at `transform` (image → crop) in `image`. */
  private async embedding(image: ImageTensor, transform: Affine): Promise<Float32Array> {
    const key = `${image.width}x${image.height}`
    let fragment = this.compiled.get(key)
    if (!fragment) {
      const side = this.recognizer.cropSize
      fragment = compileFragment(image, (g, x, size) => {
        const crop = warpAffine(g, x, size, g.input('crop_matrix', 'float32', [2, 3]), { height: side, width: side })
        return [this.recognizer.embed(g, crop)]
      })
      this.compiled.set(key, fragment)
    }
    const matrix = new ort.Tensor('float32', Float32Array.from(invertAffine(transform)), [2, 3])
    const [embedding] = await (await fragment).run(image, { crop_matrix: matrix })
    return embedding
  }

  /** The score of `face` in `image`; without a face, of the reference's face position rescaled to the image. */
  async score(image: ImageTensor, face: Face | undefined): Promise<Similarity> {
    const transform = face ? this.recognizer.cropTransform(face) : rescaleAffine(this.reference.transform, this.reference.size, image)
    const e = await this.embedding(image, transform)
    const r = this.reference.embedding
    const dot = e.reduce((s, v, i) => s + v * r[i], 0)
    return { similarity: dot / (Math.hypot(...e) * Math.hypot(...r)), distance: Math.hypot(...e.map((v, i) => v - r[i])) }
  }
}

export class IdentityMetric {
  private constructor(
    readonly description: string,
    private readonly detect: DetectOptions,
    private readonly heldApart: FaceScorer,
    private readonly loss?: FaceScorer,
  ) {}

  /** The held-apart metric; with `lossNetwork`, also the score of that id network (as the id guide resolves it). */
  static async create(reference: ImageTensor, settings: GuideSettings & { lossNetwork?: IdNetwork } = {}): Promise<IdentityMetric> {
    const detect = await detectOptions(settings.folder)
    const face = await mainFace(reference, detect)
    if (!face) throw new UserError('no face found in the reference image for the identity metric')
    const heldApart = await FaceScorer.create(await faceresRecognizer(), reference, face)
    const loss = settings.lossNetwork ? await FaceScorer.create(await chooseRecognizer(settings.lossNetwork, settings.folder), reference, face) : undefined
    const description = `identity metric: ${heldApart.recognizer.description}${loss ? `; loss network: ${loss.recognizer.description}` : ''}`
    return new IdentityMetric(description, detect, heldApart, loss)
  }

  /** The scores of `image` against the reference; undefined when no face is found in it and fallback is 'none'. */
  async measure(image: ImageTensor, fallback: FaceFallback = 'none'): Promise<IdentityScore | undefined> {
    const face = await mainFace(image, this.detect)
    if (!face && fallback === 'none') return undefined
    const score: IdentityScore = await this.heldApart.score(image, face)
    if (this.loss) score.loss = await this.loss.score(image, face)
    if (fallback !== 'none') score.detected = face !== undefined
    return score
  }
}

/** CLIP score: 100 · cos(image, text), or undefined when the models folder has no CLIP export. */
export async function clipTextScore(folder: ModelsFolder | undefined, image: ImageTensor, text: string): Promise<number | undefined> {
  if (!folder?.has('clip_vision') || !folder.has('clip_text')) return undefined
  const visionPath = folder.path('clip_vision')
  const vision = await readModel(visionPath)
  const [imageEmbedding] = await evaluateFragment(image, (g, x, size) => [clipImageEmbedding(g, vision, visionPath, x, size)])
  const textEmbedding = await clipTextEmbedding(folder, text)
  const dot = imageEmbedding.reduce((s, v, i) => s + v * textEmbedding[i], 0)
  return (100 * dot) / (Math.hypot(...imageEmbedding) * Math.hypot(...textEmbedding))
}
