// The contract between the engine and a guide network. The engine never knows which guide it runs.
import type { ImageTensor } from '../image/image.js'
import type { GraphBuilder } from '../onnx/builder.js'
import type { ort } from '../onnx/session.js'

/** What a guide compares against: an image (a path or a loaded tensor) or a text. */
export interface GuideReference {
  image?: string | ImageTensor
  text?: string
}

export interface Size {
  height: number
  width: number
}

export interface Guide {
  /** 'id', 'lpips', 'clip', 'perceptual', or a combination such as 'id=1,clip=0.5' */
  name: string
  /** one line for people: which network, which loss */
  description: string
  /** Turns the reference into constants (embedding, feature maps). */
  prepare(reference: GuideReference): Promise<void>
  /**
   * Appends to `g` the nodes mapping `image` ([1,3,H,W] float32 in [-1,1]) to a scalar float32 loss and
   * returns the loss value's name. Weights become initializers of g or stay in their external files.
   * Differentiable w.r.t. `image`. Call after prepare().
   */
  lossFragment(g: GraphBuilder, image: string, size: Size): string
  /**
   * Values for graph inputs the fragment declared (the id guide's face alignment matrix), found on the
   * current preview outside the gradient; with no preview yet, the defaults taken from the reference.
   * The engine merges them into its feeds before each run. Guides without such inputs return {}.
   */
  feeds(preview?: ImageTensor): Promise<Record<string, ort.Tensor>>
}

/**
 * A loss that needs no network: the mean squared difference of the image to `target` ([3,H,W] values in
 * [-1,1], at the preview's size), or without a target the image's mean square. For tests, benchmarks of the
 * engine's own cost, and memory estimates, where the guide network would only blur the measurement.
 */
export function pixelGuide(target?: Float32Array): Guide {
  return {
    name: 'pixel',
    description: target ? 'mean squared pixel difference to a target' : 'mean square of the image',
    async prepare() {},
    async feeds() { return {} },
    lossFragment(g, image, size) {
      const diff = target ? g.op('Sub', [image, g.constant(target, [1, 3, size.height, size.width])]) : image
      return g.op('ReduceMean', [g.op('Mul', [diff, diff])], { keepdims: 0 })
    },
  }
}
