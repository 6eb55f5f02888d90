// The guide contract, weighted combinations (`--loss id=1,clip=0.5`), and the graph pieces guides share.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ModelsFolder } from '../src/diffusion/models-folder.js'
import { UserError } from '../src/errors.js'
import { loadImage, type ImageTensor } from '../src/image/image.js'
import { GraphBuilder } from '../src/onnx/builder.js'
import { graphOf, toNumber, writeModel, type LoadedModel } from '../src/onnx/proto.js'
import { createInferenceSession, ort, type Device } from '../src/onnx/session.js'
import type { Guide, GuideReference, Size } from '../src/guidance/guide.js'

export type { Guide, GuideReference, Size } from '../src/guidance/guide.js'

export interface GuideSettings {
  /** the models folder (`--models`), opened once by the job; guide networks live in DIR/guides/ */
  folder?: ModelsFolder
  device?: Device
  /** called with a one-line message when a guide falls back (e.g. no face found on a preview) */
  warn?: (message: string) => void
}

/** Reads a reference image from a path (UserError naming it when unreadable) or passes a tensor through. */
export async function referenceImage(reference: GuideReference, guide: string): Promise<ImageTensor> {
  if (!reference.image) throw new UserError(`the ${guide} guide needs a reference image (--ref IMAGE)`)
  return typeof reference.image === 'string' ? loadImage(reference.image) : reference.image
}

export { parseLossSpec, type LossTerm } from '../src/cli/settings.js'

/** Σ weight·loss over the guides; each guide prepares with the same reference. */
export function combineGuides(terms: { guide: Guide; weight: number }[]): Guide {
  if (terms.length === 1 && terms[0].weight === 1) return terms[0].guide
  return {
    name: terms.map(t => `${t.guide.name}=${t.weight}`).join(','),
    // read when asked: each guide describes its network only once prepared
    get description() { return terms.map(t => `${t.weight}·(${t.guide.description})`).join(' + ') },
    async prepare(reference) {
      for (const { guide } of terms) await guide.prepare(reference)
    },
    lossFragment(g, image, size) {
      const weighted = terms.map(({ guide, weight }) => g.op('Mul', [guide.lossFragment(g, image, size), g.constant([weight], [], 'float32', 'loss_weight')]))
      return weighted.length === 1 ? weighted[0] : g.op('Sum', weighted)
    },
    async feeds(preview) {
      return Object.assign({}, ...(await Promise.all(terms.map(t => t.guide.feeds(preview)))))
    },
  }
}

/** 1 − cos(embedding, target): `embedding` is a [1, D] value, `target` a constant vector. */
export function cosineLoss(g: GraphBuilder, embedding: string, target: Float32Array): string {
  const norm = Math.hypot(...target)
  const unit = g.constant(target.map(v => v / norm), [1, target.length], 'float32', 'target_embedding')
  const dot = g.op('ReduceSum', [g.op('Mul', [embedding, unit]), g.ints([1])], { keepdims: 0 })
  const length = g.op('Sqrt', [g.op('Add', [g.op('ReduceSum', [g.op('Mul', [embedding, embedding]), g.ints([1])], { keepdims: 0 }), g.constant([1e-12], [], 'float32', 'eps')])])
  const cos = g.op('Reshape', [g.op('Div', [dot, length]), g.ints([])])
  return g.op('Sub', [g.constant([1], [], 'float32', 'one'), cos])
}

/** A fragment compiled into a session of its own: run it on images of the size it was built for. */
export interface CompiledFragment {
  run(image: ImageTensor, feeds?: Record<string, ort.Tensor>): Promise<Float32Array[]>
  release(): Promise<void>
}

/**
 * Builds a model whose input `image` is [1,3,H,W] and whose outputs are the values `build` returns, and opens
 * it. For reference embeddings and feature maps, and metrics run outside any bigger graph.
 */
export async function compileFragment(size: Size, build: (g: GraphBuilder, image: string, size: Size) => string[]): Promise<CompiledFragment> {
  const g = new GraphBuilder('fragment')
  const input = g.input('image', 'float32', [1, 3, size.height, size.width])
  const outputs = build(g, input, size).map((value, i) => g.outputAs(value, `out_${i}`))
  // through a file, so that embedded models' external data (absolute locations) is linked beside it
  const dir = await mkdtemp(join(tmpdir(), 'lookahead-fragment-'))
  try {
    const path = join(dir, 'fragment.onnx')
    await writeModel({ model: g.build(), dir }, path)
    const session = await createInferenceSession(path)
    return {
      async run(image, feeds = {}) {
        const result = await session.run({ image: new ort.Tensor('float32', image.data, [1, 3, image.height, image.width]), ...feeds })
        return outputs.map(name => result[name].data as Float32Array)
      },
      release: () => session.release(),
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** Builds, runs once on `image` and releases a fragment (see compileFragment). */
export async function evaluateFragment(
  image: ImageTensor,
  build: (g: GraphBuilder, image: string, size: Size) => string[],
  feeds: Record<string, ort.Tensor> = {},
): Promise<Float32Array[]> {
  const fragment = await compileFragment(image, build)
  try {
    return await fragment.run(image, feeds)
  } finally {
    await fragment.release()
  }
}

/** The graph's non-initializer inputs with their static spatial size where it has one. */
export function dataInputs(model: LoadedModel): { name: string; size?: Size }[] {
  const graph = graphOf(model.model)
  const initializers = new Set(graph.initializer.map(t => t.name))
  return graph.input
    .filter(i => !initializers.has(i.name ?? ''))
    .map(i => {
      const dims = i.type?.tensorType?.shape?.dim ?? []
      const [h, w] = dims.slice(2).map(d => (d.dimValue !== undefined && d.dimValue !== null && toNumber(d.dimValue) > 0 ? toNumber(d.dimValue) : undefined))
      return { name: i.name ?? '', size: h && w ? { height: h, width: w } : undefined }
    })
}
