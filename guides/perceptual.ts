// A perceptual guide in the spirit of LPIPS on the face-api recognition net's early feature maps (stem,
// 32- and 64-channel stages) of the aligned face: each map unit-normalised over channels, squared
// difference to the reference's, summed over channels, averaged over space, summed over layers (LPIPS
// with all linear weights 1). Sensitive to blur, unlike the identity embedding.
import type { ImageTensor } from '../src/image/image.js'
import type { GraphBuilder } from '../src/onnx/builder.js'
import type { Feature } from './facenet/ops.js'
import { evaluateFragment, type Guide, type GuideReference, type GuideSettings, type Size } from './guide.js'
import { FaceCrop } from './id.js'
import { faceApiRecognizer } from './recognizers.js'

/** f / √(Σ_c f² + ε), per pixel (LPIPS's normalize_tensor). */
export function unitChannels(g: GraphBuilder, x: string): string {
  const energy = g.op('ReduceSum', [g.op('Mul', [x, x]), g.ints([1])], { keepdims: 1 })
  return g.op('Div', [x, g.op('Sqrt', [g.op('Add', [energy, g.constant([1e-10], [], 'float32', 'eps')])])])
}

/** Σ_layers mean_space Σ_channels (unit(f) − target)², a scalar. */
export function featureDistance(g: GraphBuilder, features: string[], targets: { values: Float32Array; dims: number[] }[]): string {
  const terms = features.map((f, i) => {
    const diff = g.op('Sub', [unitChannels(g, f), g.constant(targets[i].values, targets[i].dims, 'float32', 'target_features')])
    const perPixel = g.op('ReduceSum', [g.op('Mul', [diff, diff]), g.ints([1])], { keepdims: 0 })
    return g.op('ReduceMean', [perPixel], { axes: [0, 1, 2], keepdims: 0 })
  })
  return terms.length === 1 ? terms[0] : g.op('Sum', terms)
}

const dimsOf = (f: Feature) => [1, f.channels, f.height, f.width]

export class PerceptualGuide implements Guide {
  readonly name = 'perceptual'
  readonly description = 'perceptual: LPIPS-style distance on face-api ResNet early features of the aligned face'
  private face?: FaceCrop
  private targets?: { values: Float32Array; dims: number[] }[]
  private stages?: Awaited<ReturnType<typeof faceApiRecognizer>>['stages']

  constructor(private readonly settings: GuideSettings = {}) {}

  async prepare(reference: GuideReference): Promise<void> {
    const recognizer = await faceApiRecognizer()
    const face = new FaceCrop(this.name, recognizer, this.settings)
    const image = await face.locate(reference)
    let dims: number[][] = []
    const values = await evaluateFragment(image, (g, x, size) => {
      const stages = recognizer.stages(g, face.referenceCrop(g, x, size))
      dims = stages.map(dimsOf)
      return stages.map(s => unitChannels(g, s.name))
    })
    this.targets = values.map((v, i) => ({ values: v, dims: dims[i] }))
    this.face = face
    this.stages = recognizer.stages
  }

  lossFragment(g: GraphBuilder, image: string, size: Size): string {
    if (!this.face || !this.targets || !this.stages) throw new Error('perceptual guide: prepare() first')
    const stages = this.stages(g, this.face.crop(g, image, size))
    return featureDistance(g, stages.map(s => s.name), this.targets)
  }

  feeds(preview?: ImageTensor) {
    if (!this.face) throw new Error('perceptual guide: prepare() first')
    return this.face.feeds(preview)
  }
}
