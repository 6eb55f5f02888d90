import { LookaheadCommand } from '../src/cli/base.js'

export default class Info extends LookaheadCommand {
  static description = 'Show the onnxruntime version, the execution providers available here, where models are looked for, and the cache folder; with --device cuda, exit 1 where CUDA cannot run'

  async run() {
    const { flags } = await this.parse(Info)
    const { runtimeInfo } = await import('../src/runtime-info.js')
    const info = runtimeInfo()
    if (!this.jsonEnabled()) {
      for (const [key, value] of Object.entries(info)) this.log(`${key.padEnd(12)} ${Array.isArray(value) ? value.join(', ') : value}`)
    }
    // after the listing, so it shows what is there; then the same one-line error as any command
    await this.runtime(flags)
    return info
  }
}
