// From a command's parsed flags to a checked job (loaded only when a command runs: it pulls in the engine).
import { checkSampling, locateModels, planGuideJob, type JobCallbacks, type PlannedJob } from '../../guides/jobs.js'
import { settingsFromFlags } from './flags.js'
import type { Method, SettingKey } from './settings.js'

/**
 * The job of a guiding command: its settings `keys` read from the flags, the rest at their defaults, checked
 * once; call ready() after the command's own checks (it builds the demo world on first use).
 */
export async function jobFromFlags(prompt: string | undefined, keys: readonly SettingKey[], flags: Record<string, unknown>, callbacks: JobCallbacks, methods?: readonly Method[]): Promise<PlannedJob> {
  const models = { models: flags.models as string | undefined, world: flags.world as string | undefined }
  const location = await locateModels(models)
  return planGuideJob({ ...settingsFromFlags(keys, flags, location.world.kind), ...models, prompt, methods, ...callbacks }, location)
}

/**
 * The sampling settings `keys` of generate and preview, read from the flags and checked against the models
 * folder, with the folder opened (a demo world is built here on first use, after the checks).
 */
export async function samplingFromFlags<K extends SettingKey>(keys: readonly K[], flags: Record<string, unknown>, prompt: string | undefined, note: (message: string) => void) {
  const location = await locateModels({ models: flags.models as string | undefined, world: flags.world as string | undefined })
  const settings = settingsFromFlags([...keys, 'steps', 'size', 'cfg', 'device', 'threads'] as const, flags, location.world.kind)
  checkSampling(settings, location.world)
  if (!location.world.text && prompt !== undefined) note('this world has no text: the prompt is ignored')
  return { ...settings, models: await location.ready(), session: { device: settings.device, threads: settings.threads } }
}
