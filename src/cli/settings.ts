// Every setting of the guidance jobs, declared once: its flag (the kebab-case of its JSON name), its default
// (per world where the demo world differs from an SDXL models folder), how its text is read and checked, and
// its help. The oclif flags, the defaults helper of the API, and the one validation pass at parse time are all
// derived from this table. Nothing heavy is imported here: `lookahead --help` loads it.
import { check, UserError } from '../errors.js'
import { PREVIEW_KINDS } from '../guidance/previews.js'

/** The two kinds of models folder, whose defaults differ: an SDXL export, or a demo world (no text, small). */
export type WorldKind = 'sdxl' | 'demo'

/** What the parse needs to know of the models folder before any model is read. */
export interface WorldContext {
  kind: WorldKind
  /** the image side a demo world is made for (its models work at this size only) */
  size?: number
  /** false: the folder has no text encoders (the prompt is ignored) */
  text: boolean
}

export interface Setting<T> {
  help: string
  /** the value when the flag is not given: one for both worlds, or per world; absent: unset */
  default?: T | PerWorld<T>
  /** a flag's text → its value; a UserError naming the flag when it cannot be read or is out of range */
  read(text: string, flag: string): T
  /** the same range check for a value given by the API */
  validate(value: T, flag: string): void
  /** the options, for help and for oclif's own check */
  options?: readonly string[]
  /** a switch (no value); `negatable`: --no-FLAG turns it off */
  kind?: 'text' | 'switch'
  negatable?: boolean
  char?: 'o'
  /** other spellings of the flag (e.g. --guide-step for --guide-steps) */
  aliases?: string[]
}

export interface PerWorld<T> {
  sdxl: T
  demo: T
}

const isPerWorld = <T>(d: T | PerWorld<T>): d is PerWorld<T> => typeof d === 'object' && d !== null && !Array.isArray(d) && 'sdxl' in d && 'demo' in d

/** A setting from a reader that checks what it reads (validate re-runs the range check on a typed value). */
function setting<T, E extends Partial<Setting<T>> = object>(help: string, read: (text: string, flag: string) => T, validate: (value: T, flag: string) => void, extra?: E): Setting<T> & E {
  return { help, read: (text, flag) => { const v = read(text, flag); validate(v, flag); return v }, validate, ...extra } as Setting<T> & E
}

const show = (flag: string, value: unknown) => `--${flag} ${Array.isArray(value) ? value.join(',') : String(value)}`

function integer<E extends Partial<Setting<number>> = object>(help: string, { min = -Infinity, max = Infinity, ...extra }: { min?: number; max?: number } & E = {} as E): Setting<number> & E {
  const range = `an integer${min > -Infinity ? ` ≥ ${min}` : ''}${max < Infinity ? ` and ≤ ${max}` : ''}`
  return setting(help, (text, flag) => {
    check(/^\s*[-+]?\d+\s*$/.test(text), `${show(flag, text)}: expected ${range}`)
    return Number(text)
  }, (v, flag) => check(Number.isInteger(v) && v >= min && v <= max, `${show(flag, v)}: expected ${range}`), extra as E)
}

function number<E extends Partial<Setting<number>> = object>(help: string, { min = -Infinity, positive = false, ...extra }: { min?: number; positive?: boolean } & E = {} as E): Setting<number> & E {
  const range = `a ${positive ? 'positive ' : ''}number${min > -Infinity ? ` ≥ ${min}` : ''}`
  return setting(help, (text, flag) => {
    const n = Number(text)
    check(text.trim() !== '' && Number.isFinite(n), `${show(flag, text)}: expected ${range}`)
    return n
  }, (v, flag) => check(Number.isFinite(v) && v >= min && (!positive || v > 0), `${show(flag, v)}: expected ${range}`), extra as E)
}

function text<E extends Partial<Setting<string>> = object>(help: string, extra?: E): Setting<string> & E {
  return setting(help, t => t, (v, flag) => check(typeof v === 'string', `--${flag}: expected a text`), extra)
}

function choice<T extends string, E extends Partial<Setting<T>> = object>(help: string, options: readonly T[], extra?: E): Setting<T> & E {
  return setting(help, t => t.trim() as T, (v, flag) => check(options.includes(v), `${show(flag, v)}: expected one of ${options.join(', ')}`), { options, ...extra } as E)
}

function toggle<E extends Partial<Setting<boolean>>>(help: string, extra: E): Setting<boolean> & E {
  return setting(help, t => t === 'true', (v, flag) => check(typeof v === 'boolean', `--${flag}: expected true or false`), { kind: 'switch', ...extra } as E)
}

/** A comma-separated list whose items `item` reads; empty items, an empty list and repeats are refused. */
function list<T, E extends Partial<Setting<T[]>> = object>(help: string, item: (part: string, flag: string, whole: string) => T[], validateItem: (v: T, flag: string) => void, extra?: E): Setting<T[]> & E {
  return setting(help, (whole, flag) => {
    const parts = whole.split(',').map(p => p.trim())
    check(whole.trim() !== '' && parts.every(p => p !== ''), `${show(flag, JSON.stringify(whole))}: expected a comma-separated list without empty items`)
    return parts.flatMap(p => item(p, flag, whole))
  }, (values, flag) => {
    check(Array.isArray(values) && values.length > 0, `--${flag}: expected at least one value`)
    for (const v of values) validateItem(v, flag)
    const twice = values.find((v, i) => values.indexOf(v) !== i)
    check(twice === undefined, `${show(flag, values)}: ${String(twice)} is named twice`)
  }, extra)
}

const nonNegativeIntegers = <E extends Partial<Setting<number[]>>>(help: string, extra?: E) => list(help, (part, flag, whole) => {
  check(/^\d+$/.test(part), `${show(flag, whole)}: ${part} is not a non-negative integer`)
  return [Number(part)]
}, (v, flag) => check(Number.isInteger(v) && v >= 0, `--${flag}: ${v} is not a non-negative integer`), extra)

const DURATION_UNITS: Record<string, number> = { m: 60e3, h: 3600e3, d: 86400e3 }

/** '30m', '12h', '7d' → milliseconds. */
function duration(help: string): Setting<number> {
  return setting(help, (text, flag) => {
    const match = /^\s*(\d+(?:\.\d+)?)\s*([mhd])\s*$/.exec(text)
    check(match, `${show(flag, text)}: expected a duration like 30m, 12h or 7d`)
    return Number(match[1]) * DURATION_UNITS[match[2]]
  }, (v, flag) => check(Number.isFinite(v) && v >= 0, `${show(flag, v)}: expected a duration ≥ 0`))
}

/** The guide networks `--loss` names (guides/index.ts makes one guide per name). */
export const GUIDE_NAMES = ['id', 'lpips', 'clip', 'perceptual'] as const
export type GuideName = (typeof GUIDE_NAMES)[number]

/**
 * The methods a run can take: the previews it can guide through (src/guidance/previews.ts); 'none' samples
 * without guidance (the baseline); 'best' keeps the best of N unguided samples by the guide's loss on the final
 * image, N chosen so that they cost what the lcm run costs (the baseline at equal compute).
 */
export const METHODS = ['none', ...PREVIEW_KINDS, 'best'] as const
export type Method = (typeof METHODS)[number]

/** One term of a `--loss` spec. */
export interface LossTerm {
  name: GuideName
  weight: number
}

/** Parses 'id=1,clip=0.5' (a bare name has weight 1). */
export function parseLossSpec(spec: string): LossTerm[] {
  const terms = spec.split(',').map(s => s.trim()).filter(Boolean).map(part => {
    const match = /^([a-z0-9_-]+)(?:=([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?))?$/i.exec(part)
    if (!match) throw new UserError(`--loss: cannot read "${part}" (write NAME or NAME=WEIGHT, e.g. id=1,clip=0.5)`)
    const name = match[1].toLowerCase() as GuideName
    if (!GUIDE_NAMES.includes(name)) throw new UserError(`--loss: unknown guide "${name}" (known: ${GUIDE_NAMES.join(', ')})`)
    const weight = match[2] === undefined ? 1 : Number(match[2])
    if (!Number.isFinite(weight) || weight <= 0) throw new UserError(`--loss: the weight of ${name} must be a positive number`)
    return { name, weight }
  })
  if (terms.length === 0) throw new UserError('--loss is empty (e.g. --loss id or --loss id=1,clip=0.5)')
  const names = terms.map(t => t.name)
  const twice = names.find((n, i) => names.indexOf(n) !== i)
  if (twice) throw new UserError(`--loss names ${twice} twice`)
  return terms
}

/** '0-15' or '0,3,7' → seeds. */
function seedItems(part: string, flag: string, whole: string): number[] {
  const range = /^(\d+)-(\d+)$/.exec(part)
  if (range) {
    const [from, to] = [Number(range[1]), Number(range[2])]
    check(from <= to, `${show(flag, whole)}: ${part} is an empty range`)
    return Array.from({ length: to - from + 1 }, (_, i) => from + i)
  }
  check(/^\d+$/.test(part), `${show(flag, whole)}: write seeds like 0-15 or 0,3,7`)
  return [Number(part)]
}

/**
 * The table, in two parts: the settings of a guidance job, then the commands' own. A key is the setting's JSON
 * name (in --json output and in the API's job); its flag is the key in kebab-case. A new job setting is one
 * entry here (guide and compare take every job setting). Cross-setting checks (a guide step below --steps, a
 * size the world can run) are in guides/jobs.ts checkJob.
 */
export const JOB_TABLE = {
  // sampling
  negative: text('negative prompt (default: zero negative embeddings, as diffusers)'),
  steps: integer('DDIM steps', { min: 1, max: 1000, default: 50 }),
  cfg: number('classifier-free guidance scale (≤ 1: off; a demo world has no text, so 1)', { min: 0, default: { sdxl: 5, demo: 1 } }),
  seed: integer('noise seed', { min: 0, default: 0 }),
  size: integer('image side in pixels, a multiple of 32 (a demo world: its own size only)', { min: 32, default: { sdxl: 1024, demo: 256 } }),
  // guidance
  loss: setting('guide network(s), weighted: id, lpips, clip, perceptual, e.g. id=1,clip=0.5', (t: string) => t, v => { parseLossSpec(v) }, { default: 'id' }),
  ref: text('reference image for the loss (world:NAME: a face of the demo world)'),
  refText: text('reference text for a clip loss (instead of --ref)'),
  preview: choice('the lookahead preview the loss sees; none: no guidance (baseline)', METHODS, { default: 'lcm' }),
  guideSteps: nonNegativeIntegers('DDIM step indices where the latent is guided, e.g. 10 or 8,10,12', { default: [10], aliases: ['guide-step'] }),
  iters: integer('update iterations K at each guide step', { min: 0, default: 10 }),
  recur: integer('self-recurrence: rounds of (K updates, a DDIM step, re-noise back) per guide step', { min: 1, default: 1 }),
  lr: number('step size, per latent element in units of the gradient\'s RMS (a demo world\'s gradients live in a small subspace: smaller)', { positive: true, default: { sdxl: 0.05, demo: 0.01 } }),
  optimizer: choice('update rule', ['sgd', 'adam'] as const, { default: 'sgd' }),
  clip: number('clip each element of a step to ±CLIP (0: off)', { min: 0, default: 0 }),
  normalize: toggle('divide the gradient by its RMS (--no-normalize: the raw gradient)', { default: true, negatable: true }),
  renormalize: toggle('keep the latent\'s norm across each update (DOODL)', { default: false }),
  guideSize: integer('guide at a lower resolution: the preview\'s image side, a multiple of 32 (less memory; e.g. 768 for a 1024 image)', { min: 32 }),
  recompute: integer('less memory: recompute the gradient pass\'s forward in this many segments during its backward (about one more UNet evaluation per iteration; 1: off)', { min: 1, default: 1 }),
  previewCfg: number('CFG inside the preview (default: the sampler\'s for x0, none for lcm)', { min: 0 }),
  previewSteps: integer('LCM steps inside the lcm preview (one copy of the UNet\'s weights for all; the paper: 1)', { min: 1, default: 1 }),
  previewDecoder: choice('decoder inside the preview (default: TAESDXL where present)', ['taesd', 'vae'] as const),
  idNetwork: choice('identity network for --loss id', ['auto', 'arcface', 'faceapi'] as const, { default: 'auto' }),
  // the runtime
  device: choice('onnxruntime execution provider', ['cpu', 'cuda'] as const, { default: 'cpu' }),
  threads: integer('intra-op threads (0: onnxruntime decides)', { min: 0, default: 0 }),
}

const COMMAND_TABLE = {
  seeds: list('seeds: a range 0-15 or a list 0,3,7', seedItems, (v, flag) => check(Number.isInteger(v) && v >= 0, `--${flag}: ${v} is not a seed`), { default: [0, 1, 2, 3, 4, 5, 6, 7] }),
  previews: list(`methods to compare, from ${METHODS.join(', ')}`, (part: string, flag: string): Method[] => {
    check((METHODS as readonly string[]).includes(part), `--${flag}: unknown method ${part} (use ${METHODS.join(', ')})`)
    return [part as Method]
  }, (v: Method, flag) => check(METHODS.includes(v), `--${flag}: unknown method ${v} (use ${METHODS.join(', ')})`), { default: [...METHODS] as Method[] }),
  at: nonNegativeIntegers('step indices to preview', { default: [2, 5, 10, 20] }),
  losses: list('losses, a row of the figure each (those whose networks the models folder lacks are left out, with the reason)', (part: string, flag: string): GuideName[] => {
    check((GUIDE_NAMES as readonly string[]).includes(part), `--${flag}: unknown loss ${part} (use ${GUIDE_NAMES.join(', ')})`)
    return [part as GuideName]
  }, (v: GuideName, flag) => check(GUIDE_NAMES.includes(v), `--${flag}: unknown loss ${v} (use ${GUIDE_NAMES.join(', ')})`), { default: ['id', 'perceptual', 'lpips', 'clip'] as GuideName[] }),
  decoder: choice('latent decoder (default: vae when the folder has vae_decoder, else taesd)', ['vae', 'taesd'] as const),
  gridRows: integer('seeds shown in the grid image', { min: 1, default: 8 }),
  olderThan: duration('only entries not used for this long, e.g. 30m, 12h, 7d'),
  memoryLimit: number('GPU memory in GB the gradient pass must fit, for --dry-run\'s advice', { positive: true, default: 80 }),
}

export const SETTINGS = { ...JOB_TABLE, ...COMMAND_TABLE }
export type SettingKey = keyof typeof SETTINGS
export type JobSettingKey = keyof typeof JOB_TABLE
/** The settings of a guidance job (guide takes them all; compare all but the seed and the preview). */
export const JOB_SETTINGS = Object.keys(JOB_TABLE) as JobSettingKey[]
type ValueOf<S> = S extends Setting<infer T> ? T : never
/** A setting's value: always present where it has a default, else optional. */
export type SettingValues<K extends SettingKey> = { [k in K as (typeof SETTINGS)[k] extends { default: unknown } ? k : never]: ValueOf<(typeof SETTINGS)[k]> } & {
  [k in K as (typeof SETTINGS)[k] extends { default: unknown } ? never : k]?: ValueOf<(typeof SETTINGS)[k]>
}

/** 'guideSteps' → 'guide-steps'. */
export const flagName = (key: string) => key.replace(/[A-Z]/g, c => `-${c.toLowerCase()}`)

/** A setting's default in a world, or undefined. */
export function defaultOf<K extends SettingKey>(key: K, world: WorldKind): ValueOf<(typeof SETTINGS)[K]> | undefined {
  const d = (SETTINGS[key] as Setting<unknown>).default
  return (d === undefined ? undefined : isPerWorld(d) ? d[world] : d) as ValueOf<(typeof SETTINGS)[K]> | undefined
}

/** The default as help text: "10", or "0.05; a demo world: 0.01". */
export function defaultHelp(key: SettingKey): string | undefined {
  const d = (SETTINGS[key] as Setting<unknown>).default
  if (d === undefined || d === false) return undefined
  const text = (v: unknown) => (Array.isArray(v) ? v.join(',') : String(v))
  return isPerWorld(d) ? `${text(d.sdxl)}; a demo world: ${text(d.demo)}` : text(d)
}

/** The values of `keys` from flag texts (switches: booleans); a flag not given takes its default in `world`. */
export function readFlags<K extends SettingKey>(keys: readonly K[], flags: Partial<Record<K, string | boolean>>, world: WorldKind): SettingValues<K> {
  const values: Record<string, unknown> = {}
  for (const key of keys) {
    const given = flags[key]
    const s = SETTINGS[key] as Setting<unknown>
    values[key] = given === undefined ? defaultOf(key, world) : typeof given === 'boolean' ? given : s.read(given, flagName(key))
  }
  return values as SettingValues<K>
}

/** The values of `keys` as the API gives them (typed), each checked; one not given takes its default in `world`. */
export function withDefaults<K extends SettingKey>(keys: readonly K[], given: Partial<Record<K, unknown>>, world: WorldKind): SettingValues<K> {
  const values: Record<string, unknown> = {}
  for (const key of keys) {
    const value = given[key]
    if (value !== undefined) (SETTINGS[key] as Setting<unknown>).validate(value, flagName(key))
    values[key] = value ?? defaultOf(key, world)
  }
  return values as SettingValues<K>
}
