// LPIPS (v0.1, alex or vgg trunk, linear heads) from the user's export: distance of the preview to the
// reference image. Contract of the export: two image inputs [1,3,H,W] in [-1,1], one output with the distance.
import { LAYOUT } from '../src/diffusion/models-folder.js'
import { UserError } from '../src/errors.js'
import { resizeImage, type ImageTensor } from '../src/image/image.js'
import type { GraphBuilder } from '../src/onnx/builder.js'
import { embedModel } from '../src/onnx/compose.js'
import { readModel, type LoadedModel } from '../src/onnx/proto.js'
import { resizeFragment } from './align.js'
import { dataInputs, referenceImage, type Guide, type GuideReference, type GuideSettings, type Size } from './guide.js'

export type LpipsNet = 'alex' | 'vgg'

export class LpipsGuide implements Guide {
  readonly name = 'lpips'
  description = 'lpips (not prepared)'
  private model?: LoadedModel
  private reference?: ImageTensor

  constructor(private readonly settings: GuideSettings & { net?: LpipsNet } = {}) {}

  async prepare(reference: GuideReference): Promise<void> {
    const { folder } = this.settings
    if (!folder) throw new UserError(`the lpips guide needs --models DIR with ${LAYOUT.lpips_vgg} or ${LAYOUT.lpips_alex}`)
    const net = this.settings.net ?? (folder.has('lpips_vgg') ? 'vgg' : 'alex')
    const path = folder.need(`lpips_${net}`, 'the lpips guide')
    this.model = await readModel(path)
    if (dataInputs(this.model).length !== 2) throw new UserError(`${path}: expected two image inputs (an LPIPS export)`)
    this.reference = await referenceImage(reference, this.name)
    this.description = `lpips (${net}, ${path}) to the reference image`
  }

  lossFragment(g: GraphBuilder, image: string, size: Size): string {
    if (!this.model || !this.reference) throw new Error('lpips guide: prepare() first')
    const [first, second] = dataInputs(this.model)
    const at = first.size ?? size
    const preview = first.size ? resizeFragment(g, image, size, at, 'stretch') : image
    const ref = resizeImage(this.reference, at.width, at.height)
    const target = g.constant(ref.data, [1, 3, at.height, at.width], 'float32', 'lpips_reference')
    const outputs = Object.values(embedModel(g, this.model, { [first.name]: preview, [second.name]: target }, `${g.fresh('lpips')}/`))
    return g.op('Reshape', [outputs[0], g.ints([])])
  }

  async feeds() {
    return {}
  }
}
