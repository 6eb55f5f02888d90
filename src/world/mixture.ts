// The demo world's exact diffusion math in float64: a mixture of Gaussians in the r-dimensional principal
// subspace of the world's latents. With y = x_t/√ᾱ_t, σ² = (1−ᾱ_t)/ᾱ_t and p = Uᵀ(y − μ):
//   responsibilities  w_k = softmax_k(−½ Σ_i (p_i − m_ki)² / (s_i + σ²))
//   posterior mean    E[p₀ | p] = Σ_k w_k (m_k + s/(s+σ²)·(p − m_k)),   x̂₀ = μ + U·E[p₀ | p]
//   probability flow  dp/dσ = (p − E[p₀ | p, σ]) / σ,  solved by DPM-Solver++(2M) on a geometric σ grid.
// The ONNX graphs (unet.ts) compute the same in float32; these functions are the reference they are tested against.

/** What the math needs of a world: the subspace and the components in it. */
export interface Mixture {
  /** latent dimension D = 4·n·n */
  dimension: number
  rank: number
  /** μ, [D] */
  mean: Float64Array
  /** U, [D, r] row-major, orthonormal columns */
  basis: Float64Array
  /** component variances s = c·λ, [r] */
  variances: Float64Array
  /** component centres m_k = Uᵀ(z_k − μ), [K, r] row-major */
  coords: Float64Array
}

export const componentCount = (m: Mixture) => m.coords.length / m.rank

/** p = Uᵀ(latent − μ) and the norm of what lies off the subspace. */
export function project(m: Mixture, latent: ArrayLike<number>): { coords: Float64Array; offSubspace: number } {
  const { dimension: d, rank: r, mean, basis } = m
  const coords = new Float64Array(r)
  for (let i = 0; i < d; i++) for (let j = 0; j < r; j++) coords[j] += basis[i * r + j] * (latent[i] - mean[i])
  let residual = 0
  for (let i = 0; i < d; i++) {
    let inside = 0
    for (let j = 0; j < r; j++) inside += basis[i * r + j] * coords[j]
    residual += (latent[i] - mean[i] - inside) ** 2
  }
  return { coords, offSubspace: Math.sqrt(residual) }
}

/** μ + U·p: the latent at subspace coordinates p. */
export function lift(m: Mixture, coords: ArrayLike<number>): Float64Array {
  const { dimension: d, rank: r, basis } = m
  const latent = Float64Array.from(m.mean)
  for (let i = 0; i < d; i++) for (let j = 0; j < r; j++) latent[i] += basis[i * r + j] * coords[j]
  return latent
}

/** Responsibilities w_k of the components for coordinates p seen at noise level σ² (log-sum-exp). */
export function responsibilities(m: Mixture, p: ArrayLike<number>, sigma2: number): Float64Array {
  const { rank: r, variances: s, coords } = m
  const k = componentCount(m)
  const logits = new Float64Array(k)
  for (let c = 0; c < k; c++) {
    let sum = 0
    for (let i = 0; i < r; i++) sum += (p[i] - coords[c * r + i]) ** 2 / (s[i] + sigma2)
    logits[c] = -0.5 * sum
  }
  const top = Math.max(...logits)
  let total = 0
  for (let c = 0; c < k; c++) total += (logits[c] = Math.exp(logits[c] - top))
  return logits.map(w => w / total)
}

/** E[p₀ | p]: the responsibility-weighted per-component Wiener filters. */
export function posteriorMean(m: Mixture, p: ArrayLike<number>, sigma2: number): Float64Array {
  const { rank: r, variances: s, coords } = m
  const w = responsibilities(m, p, sigma2)
  const mean = new Float64Array(r)
  for (let c = 0; c < w.length; c++) for (let i = 0; i < r; i++) mean[i] += w[c] * coords[c * r + i]
  return mean.map((e, i) => {
    const gain = s[i] / (s[i] + sigma2)
    return gain * p[i] + (1 - gain) * e
  })
}

/**
 * The probability-flow endpoint from p at noise level σ: `steps` steps on the geometric grid
 * σ_j = σ·(σ_min/σ)^{j/steps}, then one final denoise at σ_min. Each step is exponential-Euler,
 * p ← D̃ + (σ_{j+1}/σ_j)(p − D̃): with order 1, D̃ = D_j (DDIM); with order 2, D̃ = 1.5·D_j − 0.5·D_{j−1}
 * (DPM-Solver++(2M) on a grid uniform in log σ; the first step is DDIM), one denoiser call per step either way.
 */
export function flowEndpoint(m: Mixture, p: ArrayLike<number>, sigma: number, steps: number, sigmaMin: number, order: 1 | 2 = 2): Float64Array {
  const ratio = (sigmaMin / sigma) ** (1 / steps)
  let current = Float64Array.from(p)
  let previous: Float64Array | undefined
  for (let j = 0; j < steps; j++) {
    const level = sigma * ratio ** j
    const denoised = posteriorMean(m, current, level * level)
    const target = order === 2 && previous ? denoised.map((d, i) => 1.5 * d - 0.5 * previous![i]) : denoised
    current = target.map((d, i) => d + ratio * (current[i] - d))
    previous = denoised
  }
  return posteriorMean(m, current, sigmaMin * sigmaMin)
}

/** The component nearest to coordinates p in Mahalanobis distance under the component covariance diag(s). */
export function nearestComponent(m: Mixture, p: ArrayLike<number>): { component: number; mahalanobis: number } {
  const { rank: r, variances: s, coords } = m
  let best = { component: -1, mahalanobis: Infinity }
  for (let c = 0; c < componentCount(m); c++) {
    let sum = 0
    for (let i = 0; i < r; i++) sum += (p[i] - coords[c * r + i]) ** 2 / s[i]
    if (Math.sqrt(sum) < best.mahalanobis) best = { component: c, mahalanobis: Math.sqrt(sum) }
  }
  return best
}

/**
 * The q-quantile of the χ distribution with r degrees of freedom: the Mahalanobis radius that a sample of one
 * r-dimensional Gaussian component exceeds with probability 1−q. Bisection on P(r/2, x/2) by its series.
 */
export function chiQuantile(r: number, q: number): number {
  const a = r / 2
  const logGammaA1 = logGammaHalfInteger(a + 1)
  const cdf = (x: number) => {
    // P(a, z) = z^a e^{−z} / Γ(a+1) · Σ_n z^n / ((a+1)…(a+n))
    const z = x / 2
    let term = 1
    let sum = 1
    for (let n = 1; n < 1000 && term > 1e-17 * sum; n++) sum += (term *= z / (a + n))
    return Math.exp(a * Math.log(z) - z - logGammaA1) * sum
  }
  let lo = 0
  let hi = r + 100 * Math.sqrt(r) + 100
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2
    if (cdf(mid) < q) lo = mid
    else hi = mid
  }
  return Math.sqrt((lo + hi) / 2)
}

/** log Γ(x) for x a positive multiple of ½, by Γ(x+1) = x·Γ(x) from Γ(1) = 1 or Γ(½) = √π. */
function logGammaHalfInteger(x: number): number {
  let value = Number.isInteger(x) ? 0 : 0.5 * Math.log(Math.PI)
  for (let y = Number.isInteger(x) ? 1 : 0.5; y < x; y++) value += Math.log(y)
  return value
}
