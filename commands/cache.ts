import { Args } from '@oclif/core'
import { LookaheadCommand } from '../src/cli/base.js'
import { settingFlags, settingsFromFlags } from '../src/cli/flags.js'

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`
const age = (ms: number) => (ms < 3600e3 ? `${Math.round(ms / 60e3)} min` : ms < 86400e3 ? `${(ms / 3600e3).toFixed(1)} h` : `${(ms / 86400e3).toFixed(1)} days`)

export default class Cache extends LookaheadCommand {
  static description = 'List the cache of derived models (gradient models, previews, LoRA\'d UNets, the demo world) with sizes and ages, or clean it (everything, or --older-than); its folder is $LOOKAHEAD_CACHE or ~/.cache/lcm-lookahead'

  static examples = ['<%= config.bin %> cache', '<%= config.bin %> cache clean --older-than 7d', '<%= config.bin %> cache clean']

  static args = { action: Args.string({ description: 'list (default) or clean', options: ['list', 'clean'], default: 'list' }) }

  static flags = settingFlags(['olderThan'])

  async run() {
    const { args, flags } = await this.parse(Cache)
    const { olderThan } = settingsFromFlags(['olderThan'], flags, 'sdxl')
    const { cacheRoot, cleanCache, listCache } = await import('../src/cache.js')
    const root = cacheRoot()
    const now = Date.now()
    const entries = args.action === 'clean' ? await cleanCache(root, olderThan, now) : (await listCache(root)).filter(e => olderThan === undefined || now - e.modified.getTime() > olderThan)
    const bytes = entries.reduce((s, e) => s + e.bytes, 0)
    if (!this.jsonEnabled()) {
      for (const e of entries) this.log(`${mb(e.bytes).padStart(10)}  ${age(now - e.modified.getTime()).padStart(10)}  ${e.name}${e.unfinished ? ' (unfinished build)' : ''}`)
      this.log(`${args.action === 'clean' ? 'removed' : 'cache'} ${root}: ${entries.length} entries, ${mb(bytes)}`)
    }
    return { folder: root, action: args.action, bytes, entries: entries.map(e => ({ ...e, modified: e.modified.toISOString() })) }
  }
}
