// The identity guide: 1 − cos between the embedding of the preview's aligned face and the reference's.
// Faces are found (detector + landmarks) outside the gradient; the crop is warped inside it.
import { LAYOUT, type ModelsFolder } from '../src/diffusion/models-folder.js'
import type { ImageTensor } from '../src/image/image.js'
import { UserError } from '../src/errors.js'
import type { GraphBuilder } from '../src/onnx/builder.js'
import { ort } from '../src/onnx/session.js'
import { invertAffine, rescaleAffine, warpAffine, type Affine } from './align.js'
import { detectFaces, type DetectOptions, type Face } from './face.js'
import { cosineLoss, evaluateFragment, referenceImage, type Guide, type GuideReference, type GuideSettings, type Size } from './guide.js'
import { arcfaceRecognizer, faceApiRecognizer, type Recognizer } from './recognizers.js'

/** Which recognizer the id guide uses: ArcFace from the models folder, face-api's npm network, or ArcFace when present. */
export type IdNetwork = 'auto' | 'arcface' | 'faceapi'

export async function chooseRecognizer(network: IdNetwork, folder: ModelsFolder | undefined): Promise<Recognizer> {
  if (network === 'arcface' || (network === 'auto' && folder?.has('arcface'))) {
    if (!folder) throw new UserError(`the ArcFace id network needs --models DIR (with ${LAYOUT.arcface})`)
    return arcfaceRecognizer(folder)
  }
  return faceApiRecognizer()
}

/** SCRFD where the models folder has it (ModelsFolder's scrfd), else face-api's tiny detector. */
export async function detectOptions(folder: ModelsFolder | undefined): Promise<DetectOptions> {
  return folder?.has('scrfd') ? { scrfd: folder.path('scrfd') } : {}
}

/** The face to use in an image: the detector's best. */
export async function mainFace(image: ImageTensor, options: DetectOptions = {}): Promise<Face | undefined> {
  return (await detectFaces(image, options))[0]
}

/** Graph input of a face crop's crop → image matrix; one per guide kind, so combinations do not clash. */
const cropInput = (guide: string) => `${guide}_face_crop`

/**
 * Shared by the guides that look at the aligned face (id, perceptual): the reference's face, the crop
 * input, and the feeds that move the crop to the preview's face.
 */
export class FaceCrop {
  referenceFace!: Face
  referenceSize!: Size
  previewSize?: Size
  /** the detector the reference's face was found with, for the previews' faces too */
  private detect: DetectOptions = {}

  constructor(readonly guide: string, readonly recognizer: Recognizer, private readonly settings: GuideSettings) {}

  async locate(reference: GuideReference): Promise<ImageTensor> {
    const image = await referenceImage(reference, this.guide)
    this.detect = await detectOptions(this.settings.folder)
    const face = await mainFace(image, this.detect)
    const where = typeof reference.image === 'string' ? reference.image : 'the reference image'
    if (!face) throw new UserError(`no face found in ${where}: the ${this.guide} guide needs a reference with a clearly visible face`)
    this.referenceFace = face
    this.referenceSize = { width: image.width, height: image.height }
    return image
  }

  /** The crop of `image` as a value of g, taken at the matrix fed through the graph input. */
  crop(g: GraphBuilder, image: string, size: Size): string {
    this.previewSize = size
    const name = cropInput(this.guide)
    if (!g.inputs.some(i => i.name === name)) g.input(name, 'float32', [2, 3])
    const side = this.recognizer.cropSize
    return warpAffine(g, image, size, name, { height: side, width: side })
  }

  /** The reference crop as constants, for computing the reference's embedding or features. */
  referenceCrop(g: GraphBuilder, image: string, size: Size): string {
    const matrix = g.constant(Float32Array.from(invertAffine(this.recognizer.cropTransform(this.referenceFace))), [2, 3], 'float32', 'crop_matrix')
    const side = this.recognizer.cropSize
    return warpAffine(g, image, size, matrix, { height: side, width: side })
  }

  async feeds(preview?: ImageTensor): Promise<Record<string, ort.Tensor>> {
    const size = preview ?? this.previewSize
    if (!size) throw new Error(`${this.guide}: feeds() before lossFragment()`)
    let transform: Affine | undefined
    if (preview) {
      const face = await mainFace(preview, this.detect)
      if (face) transform = this.recognizer.cropTransform(face)
      else this.settings.warn?.(`${this.guide} guide: no face found on the preview; using the reference's face position`)
    }
    transform ??= rescaleAffine(this.recognizer.cropTransform(this.referenceFace), this.referenceSize, size)
    return { [cropInput(this.guide)]: new ort.Tensor('float32', Float32Array.from(invertAffine(transform)), [2, 3]) }
  }
}

export class IdentityGuide implements Guide {
  readonly name = 'id'
  description = 'identity (not prepared)'
  private face?: FaceCrop
  private target?: Float32Array

  constructor(private readonly settings: GuideSettings & { network?: IdNetwork } = {}) {}

  async prepare(reference: GuideReference): Promise<void> {
    const recognizer = await chooseRecognizer(this.settings.network ?? 'auto', this.settings.folder)
    const face = new FaceCrop(this.name, recognizer, this.settings)
    const image = await face.locate(reference)
    ;[this.target] = await evaluateFragment(image, (g, x, size) => [recognizer.embed(g, face.referenceCrop(g, x, size))])
    this.face = face
    this.description = `identity: 1 − cos of ${recognizer.description}`
  }

  lossFragment(g: GraphBuilder, image: string, size: Size): string {
    if (!this.face || !this.target) throw new Error('id guide: prepare() first')
    return cosineLoss(g, this.face.recognizer.embed(g, this.face.crop(g, image, size)), this.target)
  }

  feeds(preview?: ImageTensor) {
    if (!this.face) throw new Error('id guide: prepare() first')
    return this.face.feeds(preview)
  }
}
