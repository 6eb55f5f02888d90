// How a gradient moves the noisy latent: normalisation, clipping, SGD or Adam, optional norm preservation.
// A zero or non-finite gradient is never applied (no division by a zero norm, never a NaN latent).

export type Optimizer = 'sgd' | 'adam'

export interface UpdateSettings {
  optimizer: Optimizer
  /** step size; with `normalize` on, in units of the latent's per-element RMS */
  lr: number
  /** divide the gradient by its RMS so lr is independent of the loss scale */
  normalize: boolean
  /** clip each element of the (normalised) step to ±clip; 0: off */
  clip: number
  /** rescale the updated latent to the norm it had before the update (DOODL's re-normalisation) */
  renormalize: boolean
}

export const defaultUpdate: UpdateSettings = { optimizer: 'sgd', lr: 0.05, normalize: true, clip: 0, renormalize: false }

export type Skip = 'zero' | 'non-finite'

/** Why a gradient cannot be used, or undefined when it can. */
export function unusable(grad: Float32Array): Skip | undefined {
  let sum = 0
  for (const g of grad) {
    if (!Number.isFinite(g)) return 'non-finite'
    sum += g * g
  }
  return sum === 0 ? 'zero' : undefined
}

const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0))

/**
 * A stateful updater for one latent (Adam keeps moments across iterations). `step` returns the new latent,
 * or undefined when the gradient is unusable (the caller warns and keeps the latent).
 */
export function makeUpdater(settings: UpdateSettings) {
  let m: Float32Array | undefined
  let v: Float32Array | undefined
  let count = 0
  const [beta1, beta2, eps] = [0.9, 0.999, 1e-8]

  return (latent: Float32Array, grad: Float32Array): { latent: Float32Array } | { skipped: Skip } => {
    const skip = unusable(grad)
    if (skip) return { skipped: skip }
    const n = grad.length
    let direction = grad
    if (settings.optimizer === 'adam') {
      // Kingma & Ba 2015, Algorithm 1
      m ??= new Float32Array(n)
      v ??= new Float32Array(n)
      count++
      direction = new Float32Array(n)
      for (let i = 0; i < n; i++) {
        m[i] = beta1 * m[i] + (1 - beta1) * grad[i]
        v[i] = beta2 * v[i] + (1 - beta2) * grad[i] * grad[i]
        const mHat = m[i] / (1 - beta1 ** count)
        const vHat = v[i] / (1 - beta2 ** count)
        direction[i] = mHat / (Math.sqrt(vHat) + eps)
      }
    }
    const scale = settings.normalize ? Math.sqrt(n) / norm(direction) : 1
    const next = new Float32Array(n)
    for (let i = 0; i < n; i++) {
      let step = settings.lr * scale * direction[i]
      if (settings.clip > 0) step = Math.max(-settings.clip, Math.min(settings.clip, step))
      next[i] = latent[i] - step
    }
    if (settings.renormalize) {
      const ratio = norm(latent) / norm(next)
      for (let i = 0; i < n; i++) next[i] *= ratio
    }
    return { latent: next }
  }
}
