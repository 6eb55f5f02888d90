// Samplers as short pure functions, following diffusers' scheduling_ddim.py and scheduling_lcm.py
// (@58eb52c) with SDXL's scheduler config. Equation numbers refer to Song et al. 2021 (DDIM).

/** SDXL's scheduler_config.json: scaled_linear 0.00085–0.012, 1000 steps, "leading" spacing, steps_offset 1. */
export const SDXL_SCHEDULE = { betaStart: 0.00085, betaEnd: 0.012, trainSteps: 1000, stepsOffset: 1 }
export type Schedule = typeof SDXL_SCHEDULE

/**
 * ᾱ_t = Π_{s≤t} (1 − β_s) with β = linspace(√β_start, √β_end, T)² ("scaled_linear"), rounded to float32 at
 * each step as torch does, so values match diffusers' float32 tensor.
 */
export function alphasCumprod(schedule: Schedule = SDXL_SCHEDULE): Float64Array {
  const { betaStart, betaEnd, trainSteps } = schedule
  const [from, to] = [Math.fround(Math.sqrt(betaStart)), Math.fround(Math.sqrt(betaEnd))]
  const result = new Float64Array(trainSteps)
  let product = 1
  for (let t = 0; t < trainSteps; t++) {
    const root = Math.fround(from + ((to - from) * t) / (trainSteps - 1))
    product = Math.fround(product * Math.fround(1 - Math.fround(root * root)))
    result[t] = product
  }
  return result
}

const SDXL_ALPHAS = alphasCumprod()

/** ᾱ_t for an integer train timestep; t < 0 is the step after the last, ᾱ[0] (set_alpha_to_one = false). */
export function alphaBar(t: number, alphas: Float64Array = SDXL_ALPHAS): number {
  return t >= 0 ? alphas[t] : alphas[0]
}

/** "leading" spacing: t_i = (N−1−i)·⌊T/N⌋ + steps_offset, i = 0…N−1 (981, 961, …, 1 for N = 50). */
export function ddimTimesteps(steps: number, schedule: Schedule = SDXL_SCHEDULE): number[] {
  const ratio = Math.floor(schedule.trainSteps / steps)
  return Array.from({ length: steps }, (_, i) => (steps - 1 - i) * ratio + schedule.stepsOffset)
}

/** The timestep DDIM steps to from t: t − ⌊T/N⌋ (negative after the last step). */
export function previousTimestep(t: number, steps: number, schedule: Schedule = SDXL_SCHEDULE): number {
  return t - Math.floor(schedule.trainSteps / steps)
}

/**
 * A one-step clean-latent estimate written as x̂₀ = a·x_t + b·ε, so that it can be applied to arrays here
 * or built into a graph by the guidance engine.
 */
export interface Linear { a: number; b: number }

/** The naive (DDPM) estimate, eq. 9: x̂₀ = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t. */
export function naiveX0Coefficients(t: number): Linear {
  const alpha = alphaBar(t)
  return { a: 1 / Math.sqrt(alpha), b: -Math.sqrt(1 - alpha) / Math.sqrt(alpha) }
}

/** LCM's boundary scalings (scheduling_lcm.py): s = 10·t, c_skip = σ²/(s²+σ²), c_out = s/√(s²+σ²), σ_data = 0.5. */
export function lcmScalings(t: number, timestepScaling = 10): { cSkip: number; cOut: number } {
  const s = t * timestepScaling
  const sigma2 = 0.25
  return { cSkip: sigma2 / (s * s + sigma2), cOut: s / Math.sqrt(s * s + sigma2) }
}

/** The single-step LCM preview from any t: c_out·x̂₀ + c_skip·x_t, with x̂₀ from the LCM UNet's ε. */
export function lcmPreviewCoefficients(t: number): Linear {
  const { cSkip, cOut } = lcmScalings(t)
  const naive = naiveX0Coefficients(t)
  return { a: cOut * naive.a + cSkip, b: cOut * naive.b }
}

/** a·x + b·ε, elementwise. */
export function combine({ a, b }: Linear, x: Float32Array, eps: Float32Array): Float32Array {
  return x.map((value, i) => a * value + b * eps[i])
}

export const naiveX0 = (x: Float32Array, eps: Float32Array, t: number) => combine(naiveX0Coefficients(t), x, eps)
export const lcmPreview = (x: Float32Array, eps: Float32Array, t: number) => combine(lcmPreviewCoefficients(t), x, eps)

/**
 * One deterministic DDIM step (eta = 0, no clipping), eq. 12: x_{t'} = √ᾱ_{t'}·x̂₀ + √(1−ᾱ_{t'})·ε.
 * Written as a·x_t + b·ε with x̂₀ from eq. 9.
 */
export function ddimStepCoefficients(t: number, tPrev: number): Linear {
  const [alpha, alphaPrev] = [alphaBar(t), alphaBar(tPrev)]
  const a = Math.sqrt(alphaPrev / alpha)
  return { a, b: Math.sqrt(1 - alphaPrev) - a * Math.sqrt(1 - alpha) }
}

export const ddimStep = (x: Float32Array, eps: Float32Array, t: number, tPrev: number) => combine(ddimStepCoefficients(t, tPrev), x, eps)

/** Classifier-free guidance: ε = ε_uncond + g·(ε_text − ε_uncond). */
export function guide(uncond: Float32Array, text: Float32Array, scale: number): Float32Array {
  return uncond.map((u, i) => u + scale * (text[i] - u))
}

/**
 * Re-noising from timestep s back to a noisier t > s, the forward process q(x_t | x_s):
 * x_t = √(ᾱ_t/ᾱ_s)·x_s + √(1 − ᾱ_t/ᾱ_s)·ξ, ξ ~ N(0, I) (Universal Guidance's self-recurrence, Bansal et al. 2023).
 */
export function renoise(x: Float32Array, noise: Float32Array, s: number, t: number): Float32Array {
  const ratio = alphaBar(t) / alphaBar(s)
  return combine({ a: Math.sqrt(ratio), b: Math.sqrt(1 - ratio) }, x, noise)
}
