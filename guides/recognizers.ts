// Face recognizers behind the id guide and the identity metric: an aligned crop in, an embedding out.
// face-api's ResNet and Human's FaceRes (npm weights, always available), and the user's insightface ArcFace export.
import type { ModelsFolder } from '../src/diffusion/models-folder.js'
import { UserError } from '../src/errors.js'
import type { GraphBuilder } from '../src/onnx/builder.js'
import { embedModel } from '../src/onnx/compose.js'
import { graphOf, readModel, type LoadedModel } from '../src/onnx/proto.js'
import { arcfaceTransform, faceApiTransform, type Affine } from './align.js'
import type { Face } from './face.js'
import { FACERES_SIZE, faceresModel, faceresNet } from './facenet/faceres.js'
import type { Feature } from './facenet/ops.js'
import { RECOGNITION_SIZE, recognitionNet, recognitionStages, recognitionWeights } from './facenet/recognition.js'

export interface Recognizer {
  /** e.g. 'face-api ResNet-34 (face-api crop)' */
  description: string
  cropSize: number
  /** image → crop transform for a detected face */
  cropTransform(face: Face): Affine
  /** appends the network: `crop` is [1,3,cropSize,cropSize] RGB in [-1,1]; returns the [1,D] embedding */
  embed(g: GraphBuilder, crop: string): string
}

/** [-1,1] → 0..255 */
export function toPixelRange(g: GraphBuilder, x: string): string {
  return g.op('Add', [g.op('Mul', [x, g.constant([127.5], [], 'float32', 'scale255')]), g.constant([127.5], [], 'float32', 'shift255')])
}

/** face-api's recognition ResNet, with face-api's crop (landmark box + 20%, square, 150×150). */
export async function faceApiRecognizer(): Promise<Recognizer & { stages(g: GraphBuilder, crop: string): Feature[] }> {
  const weights = await recognitionWeights()
  return {
    description: 'face-api ResNet-34 descriptor (face-api crop, 150×150)',
    cropSize: RECOGNITION_SIZE,
    cropTransform: face => faceApiTransform(face.landmarks, RECOGNITION_SIZE),
    embed: (g, crop) => recognitionNet(g, toPixelRange(g, crop), weights),
    stages: (g, crop) => recognitionStages(g, toPixelRange(g, crop), weights),
  }
}

/** Human's FaceRes (HSE MobileNet, VGGFace2), on the 5-point ArcFace alignment scaled to 224×224. */
export async function faceresRecognizer(): Promise<Recognizer> {
  const model = await faceresModel()
  return {
    description: "Human's FaceRes descriptor (HSE MobileNet; 5-point ArcFace alignment, 224×224)",
    cropSize: FACERES_SIZE,
    cropTransform: face => arcfaceTransform(face.points, FACERES_SIZE),
    embed: (g, crop) => faceresNet(g, toPixelRange(g, crop), model),
  }
}

/**
 * The user's insightface ArcFace export (w600k_r50 / glintr100): RGB 112×112, (x − 127.5)/127.5 — which is the
 * [-1,1] crop itself — unless the graph starts with its own Sub/Mul (mxnet conversions), which take 0..255.
 */
export async function arcfaceRecognizer(folder: ModelsFolder): Promise<Recognizer> {
  const path = folder.need('arcface', 'the ArcFace id network')
  const model: LoadedModel = await readModel(path)
  const graph = graphOf(model.model)
  const initializers = new Set(graph.initializer.map(t => t.name))
  const inputs = graph.input.filter(i => !initializers.has(i.name ?? ''))
  if (inputs.length !== 1 || graph.output.length !== 1) throw new UserError(`${path}: expected one input and one output (an insightface ArcFace export)`)
  const takesPixels = graph.node.slice(0, 8).some(n => n.opType === 'Sub' || n.opType === 'Mul')
  return {
    description: `ArcFace ${path} (5-point alignment, 112×112)`,
    cropSize: 112,
    cropTransform: face => arcfaceTransform(face.points, 112),
    embed(g, crop) {
      const feed = takesPixels ? toPixelRange(g, crop) : crop
      const outputs = embedModel(g, model, { [inputs[0].name ?? '']: feed }, `${g.fresh('arcface')}/`)
      return outputs[graph.output[0].name ?? '']
    },
  }
}
