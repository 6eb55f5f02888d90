// Flags that `generate`, `guide`, `compare` and `preview` share, and their parsing.
import { Args, Flags } from '@oclif/core'
import type { GuideJob } from '../../guides/jobs.js'
import { check } from '../errors.js'
import type { Device } from '../onnx/session.js'
import { ModelsFolder } from '../diffusion/models-folder.js'

export const promptArg = Args.string({ description: 'the text prompt (a demo world ignores it)', default: 'a portrait photo of a person' })

export const modelFlags = {
  models: Flags.string({ description: 'models folder (optimum SDXL export + extras; default $LOOKAHEAD_MODELS)', exclusive: ['world'] }),
  world: Flags.string({ description: 'use an embedded world instead of a models folder: "demo" (built on first use)', exclusive: ['models'] }),
}

export const samplingFlags = {
  negative: Flags.string({ description: 'negative prompt (default: zero negative embeddings, as diffusers)' }),
  steps: Flags.integer({ description: 'DDIM steps', default: 50, min: 1, max: 1000 }),
  cfg: Flags.string({ description: 'classifier-free guidance scale (≤ 1: off)', default: '5' }),
  seed: Flags.integer({ description: 'noise seed', default: 0, min: 0 }),
  size: Flags.integer({ description: 'image side in pixels, a multiple of 32 (default: 1024, or the world\'s size)' }),
}

export const guidanceFlags = {
  loss: Flags.string({ description: 'guide network(s), weighted: id, lpips, clip, perceptual, e.g. id=1,clip=0.5', default: 'id' }),
  ref: Flags.string({ description: 'reference image for the loss' }),
  'ref-text': Flags.string({ description: 'reference text for a clip loss' }),
  'guide-step': Flags.integer({ description: 'DDIM step index where the latent is guided', default: 10, min: 0, exclusive: ['guide-steps'] }),
  'guide-steps': Flags.string({ description: 'several guide steps, e.g. 8,10,12', exclusive: ['guide-step'] }),
  iters: Flags.integer({ description: 'update iterations K at each guide step', default: 10, min: 0 }),
  recur: Flags.integer({ description: 'self-recurrence: rounds of (K updates, a DDIM step, re-noise back) per guide step', default: 1, min: 1 }),
  lr: Flags.string({ description: 'step size, per latent element in units of the gradient\'s RMS (default: 0.05; 0.01 in a demo world, whose gradients live in a small subspace)' }),
  optimizer: Flags.string({ description: 'update rule', options: ['sgd', 'adam'], default: 'sgd' }),
  clip: Flags.string({ description: 'clip each element of a step to ±CLIP (0: off)', default: '0' }),
  'no-normalize': Flags.boolean({ description: 'use the raw gradient instead of dividing it by its RMS' }),
  renormalize: Flags.boolean({ description: 'keep the latent\'s norm across each update (DOODL)' }),
  'guide-size': Flags.integer({ description: 'guide at a lower resolution: the preview\'s image side, a multiple of 32 (less memory; e.g. 768 for a 1024 image)', min: 32 }),
  recompute: Flags.integer({ description: 'less memory: recompute the gradient pass\'s forward in this many segments during its backward (about one more UNet evaluation per iteration; 1: off)', default: 1, min: 1 }),
  'preview-cfg': Flags.string({ description: 'CFG inside the preview (default: the sampler\'s for x0, none for lcm)' }),
  'preview-decoder': Flags.string({ description: 'decoder inside the preview (default: TAESDXL where present)', options: ['taesd', 'vae'] }),
  'id-network': Flags.string({ description: 'identity network for --loss id', options: ['auto', 'arcface', 'faceapi'], default: 'auto' }),
}

/** A finite number from a string flag. */
export function numberFlag(value: string, flag: string, { min = -Infinity, positive = false } = {}): number {
  const n = Number(value)
  check(value.trim() !== '' && Number.isFinite(n), `--${flag} ${value}: expected a number`)
  check(n >= min && (!positive || n > 0), `--${flag} ${value}: expected a ${positive ? 'positive ' : ''}number${min > -Infinity ? ` ≥ ${min}` : ''}`)
  return n
}

/** '8,10,12' → [8, 10, 12], each a step index below `steps`. */
export function stepList(value: string | undefined, single: number, steps: number): number[] {
  const list = value === undefined ? [single] : value.split(',').map(s => Number(s.trim()))
  for (const s of list) check(Number.isInteger(s) && s >= 0 && s < steps, `guide step ${s} is outside 0…${steps - 1} (there are ${steps} steps)`)
  return [...new Set(list)].sort((a, b) => a - b)
}

/** '0-15' or '0,3,7' → seeds. */
export function seedList(value: string): number[] {
  const seeds = value.split(',').flatMap(part => {
    const range = /^(\d+)-(\d+)$/.exec(part.trim())
    if (range) {
      const [from, to] = [Number(range[1]), Number(range[2])]
      check(from <= to, `--seeds ${value}: ${part} is an empty range`)
      return Array.from({ length: to - from + 1 }, (_, i) => from + i)
    }
    check(/^\d+$/.test(part.trim()), `--seeds ${value}: write seeds like 0-15 or 0,3,7`)
    return [Number(part)]
  })
  return [...new Set(seeds)]
}

type GuidanceFlagValues = {
  negative?: string; steps: number; cfg: string; seed: number; size?: number; threads: number
  loss: string; ref?: string; 'ref-text'?: string; 'guide-step': number; 'guide-steps'?: string; iters: number; recur: number
  lr?: string; optimizer: string; clip: string; 'no-normalize': boolean; renormalize: boolean
  'preview-cfg'?: string; 'preview-decoder'?: string; 'id-network': string; 'guide-size'?: number; recompute: number
}

/** The default step size: 0.05 for SDXL; 0.01 in a demo world (a step normalised over the whole latent is
 * ~√(4096/r) ≈ 19× larger per data dimension there, and larger steps leave the data distribution). */
async function defaultLr(models: string): Promise<number> {
  return (await ModelsFolder.at(models)).world?.kind === 'demo' ? 0.01 : 0.05
}

/** A guidance job from the shared flags (preview 'none' until the command sets it). */
export async function jobFromFlags(prompt: string, flags: GuidanceFlagValues, models: string, device: Device): Promise<GuideJob> {
  return {
    prompt,
    negative: flags.negative,
    steps: flags.steps,
    cfg: numberFlag(flags.cfg, 'cfg'),
    seed: flags.seed,
    size: flags.size,
    models,
    session: { device, threads: flags.threads },
    loss: flags.loss,
    ref: flags.ref,
    refText: flags['ref-text'],
    preview: 'none',
    guideSteps: stepList(flags['guide-steps'], flags['guide-step'], flags.steps),
    iters: flags.iters,
    recur: flags.recur,
    update: {
      optimizer: flags.optimizer as 'sgd' | 'adam',
      lr: flags.lr === undefined ? await defaultLr(models) : numberFlag(flags.lr, 'lr', { positive: true }),
      clip: numberFlag(flags.clip, 'clip', { min: 0 }),
      normalize: !flags['no-normalize'],
      renormalize: flags.renormalize,
    },
    previewCfg: flags['preview-cfg'] === undefined ? undefined : numberFlag(flags['preview-cfg'], 'preview-cfg'),
    previewDecoder: flags['preview-decoder'] as GuideJob['previewDecoder'],
    guideSize: flags['guide-size'],
    recompute: flags.recompute,
    idNetwork: flags['id-network'] as GuideJob['idNetwork'],
  }
}
