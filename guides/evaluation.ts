// The evaluation held apart from the loss: identity by a recognizer none of the losses use, CLIP text
// alignment where a CLIP export is present, and in a demo world where the final latent lies.
import { readFile } from 'node:fs/promises'
import { UserError } from '../src/errors.js'
import type { ModelsFolder } from '../src/diffusion/models-folder.js'
import { resizeImage, type ImageTensor } from '../src/image/image.js'
import { imageLatent } from '../src/world/models.js'
import { parseWorld, placeLatent, type DemoWorld, type Placement } from '../src/world/world.js'
import type { AllGuideSettings } from './by-name.js'
import { clipTextScore, IdentityMetric, type IdentityScore } from './metric.js'

export interface Metrics {
  /** identity of the final image against the reference, by the held-apart recognizer */
  identity?: IdentityScore
  /** CLIP score of the final image against the prompt, where a CLIP export is present */
  clip?: number
  /** in a demo world: the final latent's nearest component and how typical it is */
  world?: Placement
  /** why a metric is missing from this image, by metric name (e.g. identity: no face found on the final image) */
  missing?: Record<string, string>
}

/** The evaluation held apart from the loss, prepared once for a reference and reused across images. */
export interface Evaluation {
  description: string[]
  /** in a demo world: where the reference itself lies (the identity a guided sample should land on) */
  referencePlacement?: Placement
  measure(image: ImageTensor, latents: Float32Array, prompt: string): Promise<Metrics>
}

/** The demo world of a models folder, or undefined where it is not one. */
export async function demoWorld(folder: ModelsFolder): Promise<DemoWorld | undefined> {
  const path = folder.path('world')
  if (folder.world?.kind !== 'demo') return undefined
  return parseWorld(await readFile(path, 'utf8'), path)
}

export async function prepareEvaluation(folder: ModelsFolder, reference: ImageTensor | undefined, settings: AllGuideSettings): Promise<Evaluation> {
  // a reference without a face (a CLIP or LPIPS target) has no identity to score
  const identity = reference ? await IdentityMetric.create(reference, { ...settings, lossNetwork: settings.idNetwork }).catch(noFace) : undefined
  const world = await demoWorld(folder)
  // the reference's place in a demo world: the component nearest its encoded latent
  const side = world?.codec.imageSize ?? 0
  const referencePlacement = world && reference ? placeLatent(world, await imageLatent(folder, world, resizeImage(reference, side, side).data)) : undefined
  const noIdentity = reference ? 'no face in the reference' : 'no reference image'
  return {
    description: [identity?.description ?? `identity metric: none (${noIdentity})`, ...(world ? ['demo world: nearest component, Mahalanobis distance'] : [])],
    referencePlacement,
    async measure(image, latents, prompt) {
      const metrics: Metrics = {}
      const missing: Record<string, string> = {}
      if (identity) {
        const score = await identity.measure(image)
        if (score) metrics.identity = score
        else missing.identity = 'no face found on the final image'
      } else missing.identity = noIdentity
      const clip = world ? undefined : await clipTextScore(folder, image, prompt)
      if (clip !== undefined) metrics.clip = clip
      if (world) metrics.world = placeLatent(world, latents)
      return { ...metrics, missing }
    },
  }
}

function noFace(error: unknown): undefined {
  if (error instanceof UserError && /no face/.test(error.message)) return undefined
  throw error
}
