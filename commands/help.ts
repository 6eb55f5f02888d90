import { Args } from '@oclif/core'
import { LookaheadCommand } from '../src/cli/base.js'

export default class Help extends LookaheadCommand {
  static description = 'Show the commands, or the help of one (the same as `lookahead COMMAND --help`)'

  static examples = ['<%= config.bin %> help', '<%= config.bin %> help guide', '<%= config.bin %> help world build']

  static strict = false

  static args = { command: Args.string({ description: 'the command (a topic\'s command as "world build")' }) }

  async run() {
    const { argv } = await this.parse(Help)
    const { loadHelpClass } = await import('@oclif/core')
    const HelpClass = await loadHelpClass(this.config)
    await new HelpClass(this.config).showHelp(argv as string[])
  }
}
