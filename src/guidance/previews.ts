// The previews the lookahead can guide through, as one table: the ε model each runs, its CFG, its one-step
// estimate x̂₀ = a·x_t + b·ε (its graph fragment, built by preview.ts), whether it may take several steps, and
// the UNet evaluations it costs. The engine, the figure, the cost estimate and the CLI iterate over it. Nothing
// heavy is imported here: the CLI's settings table derives the method names from it.
import { check } from '../errors.js'
import { lcmPreviewCoefficients, naiveX0Coefficients, type Linear } from '../diffusion/schedulers.js'

/** One way to preview the clean latent from x_t inside the lookahead's graph. */
export interface PreviewStrategy {
  /** what grids and tables call it */
  label: string
  /** the ε model it runs: the LCM-LoRA-fused UNet, or the base UNet the sampler runs */
  unet: 'lcm' | 'base'
  /** its CFG inside the preview where --preview-cfg does not say, from the sampler's */
  defaultCfg: (samplerCfg: number) => number
  /** x̂₀ = a·x_t + b·ε at timestep t (schedulers.ts) */
  coefficients: (t: number) => Linear
  /** whether it may take several steps inside the preview (--preview-steps) */
  multiStep: boolean
}

/**
 * The previews. Their graph fragment is the same form, `steps` times (preview.ts, buildPreviewGraph): ε from the strategy's UNet,
 * x̂₀ = a·x_t + b·ε, and between steps the forward process back to the next timestep. Their cost per iteration
 * is previewUnetCalls.
 */
export const PREVIEWS: Record<'x0' | 'lcm', PreviewStrategy> = {
  /** the naive DDPM estimate (eq. 9), blurry at early steps; with the sampler's CFG, as a guided sampler would */
  x0: { label: 'x0', unet: 'base', defaultCfg: cfg => cfg, coefficients: naiveX0Coefficients, multiStep: false },
  /** the paper's LCM lookahead: c_out·x̂₀ + c_skip·x_t from the LCM-LoRA UNet's ε, without CFG */
  lcm: { label: 'lcm', unet: 'lcm', defaultCfg: () => 1, coefficients: lcmPreviewCoefficients, multiStep: true },
}

export type PreviewKind = keyof typeof PREVIEWS
export const PREVIEW_KINDS = Object.keys(PREVIEWS) as PreviewKind[]

/** UNet evaluations of one preview forward (a CFG pass counts as 2); its gradient pass costs about 3× this. */
export const previewUnetCalls = (steps: number, cfg: number) => steps * (cfg > 1 ? 2 : 1)

/** The steps a preview takes for --preview-steps N: N if it is multi-step (lcm), else its one. */
export function previewStepsOf(kind: PreviewKind, steps = 1): number {
  check(Number.isInteger(steps) && steps >= 1, `--preview-steps ${steps}: expected a positive integer`)
  return PREVIEWS[kind].multiStep ? steps : 1
}

/**
 * The timesteps of an N-step preview from t: evenly spaced, t_i = round(t·(N − i)/N), as LCM's few-step
 * sampling visits t, then lower timesteps (Luo et al. 2023, alg. 1).
 */
export const previewTimesteps = (t: number, steps: number) => Array.from({ length: steps }, (_, i) => Math.round((t * (steps - i)) / steps))

