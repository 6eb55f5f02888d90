// The oclif flags, derived from the settings table (src/cli/settings.ts), and the flags that are not settings.
import { Args, Flags, type Interfaces } from '@oclif/core'
import { defaultHelp, flagName, readFlags, SETTINGS, type Setting, type SettingKey, type SettingValues, type WorldKind } from './settings.js'

export const promptArg = Args.string({ description: 'the text prompt (a demo world has no text and ignores it)' })
export const DEFAULT_PROMPT = 'a portrait photo of a person'

export const modelFlags = {
  models: Flags.string({ description: 'models folder (optimum SDXL export + extras; default $LOOKAHEAD_MODELS)', exclusive: ['world'] }),
  world: Flags.string({ description: 'use an embedded world instead of a models folder: "demo" (built on first use)', exclusive: ['models'] }),
}

// oclif's flag types are invariant in their value; these flags hold text or a switch
type SettingFlag = Interfaces.Flag<any> // eslint-disable-line @typescript-eslint/no-explicit-any

/** One oclif flag per setting. Values stay text: the table reads and checks them (one clear line each). */
export function settingFlags<K extends SettingKey>(keys: readonly K[], help: Partial<Record<K, string>> = {}): Record<string, SettingFlag> {
  return Object.fromEntries(keys.map(key => {
    const s = SETTINGS[key] as Setting<unknown>
    const d = defaultHelp(key)
    const description = `${help[key] ?? s.help}${s.options ? ` (${s.options.join(', ')})` : ''}${d ? ` [default: ${d}]` : ''}`
    const flag = s.kind === 'switch'
      ? Flags.boolean({ description, allowNo: s.negatable ?? false })
      : Flags.string({ description, char: s.char, aliases: s.aliases })
    return [flagName(key), flag]
  }))
}

/** The settings `keys` from parsed oclif flags (named in kebab-case), defaults from `world`. */
export function settingsFromFlags<K extends SettingKey>(keys: readonly K[], flags: Record<string, unknown>, world: WorldKind): SettingValues<K> {
  const given = Object.fromEntries(keys.map(key => [key, flags[flagName(key)] as string | boolean | undefined]))
  return readFlags(keys, given as Partial<Record<K, string | boolean>>, world)
}

/** '0-15' or '0,3,7' → seeds, as --seeds reads them. */
export const seedList = (text: string): number[] => SETTINGS.seeds.read(text, 'seeds')
