import { LookaheadCommand } from '../src/cli/base.js'
import { runtimeInfo } from '../src/index.js'

export default class Info extends LookaheadCommand {
  static description = 'Show the onnxruntime version, the execution providers available here, and where models are looked for'

  async run() {
    await this.parse(Info)
    const info = runtimeInfo()
    if (!this.jsonEnabled()) {
      for (const [key, value] of Object.entries(info)) this.log(`${key.padEnd(12)} ${Array.isArray(value) ? value.join(', ') : value}`)
    }
    return info
  }
}
