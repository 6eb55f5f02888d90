import { Args, Flags } from '@oclif/core'
import chalk from 'chalk'
import { fileURLToPath } from 'node:url'
import { LookaheadCommand } from '../src/cli/base.js'
import { check } from '../src/errors.js'
import { GENERATIONS, type Generation } from '../src/diffusion/tiny/config.js'

export default class Models extends LookaheadCommand {
  static description =
    'Check a models folder (SDXL export, LCM UNet or LCM-LoRA, decoders, guide networks): what is present, what is ' +
    'missing or mismatched (names, dtypes, shapes), and how to produce each missing piece. Exits 1 when generate cannot run.'

  static examples = [
    '<%= config.bin %> models models/sdxl',
    'LOOKAHEAD_MODELS=models/sdxl <%= config.bin %> models --json',
    '<%= config.bin %> models /tmp/tiny --write-tiny',
  ]

  static args = { dir: Args.string({ description: 'models folder (default: --models, then $LOOKAHEAD_MODELS)' }) }

  static flags = {
    models: Flags.string({ description: 'models folder (default: $LOOKAHEAD_MODELS)' }),
    'write-tiny': Flags.boolean({ description: 'first write tiny SDXL-shaped models with random weights into the folder (for trying the commands)' }),
    generation: Flags.string({ description: 'with --write-tiny: which optimum export to imitate', options: GENERATIONS, default: 'optimum-onnx' }),
  }

  async run() {
    const { args, flags } = await this.parse(Models)
    const { checkModels, modelsDir } = await import('../src/diffusion/models-folder.js')
    const { writeTinyModels } = await import('../src/diffusion/tiny/index.js')
    const target = args.dir ?? flags.models
    if (flags['write-tiny']) {
      check(target, '--write-tiny needs a folder: lookahead models DIR --write-tiny')
      await writeTinyModels(target, { generation: flags.generation as Generation })
      this.note(`wrote tiny models (${flags.generation}) to ${target}`)
    }
    const dir = modelsDir(target)
    const pieces = await checkModels(dir)
    const ok = !pieces.some(p => p.status === 'missing' || p.status === 'mismatch')
    if (!this.jsonEnabled()) {
      const mark = { ok: chalk.green('ok'), missing: chalk.red('missing'), mismatch: chalk.red('mismatch'), optional: chalk.dim('absent') }
      this.log(`models folder ${dir}`)
      for (const p of pieces) {
        this.log(`  ${p.piece.padEnd(22)} ${mark[p.status]}`)
        for (const problem of p.problems) this.log(`      ${chalk.red('•')} ${problem}`)
        for (const note of p.notes) this.log(`      ${note}`)
        if (p.howTo && p.status !== 'ok') this.log(`      ${chalk.dim(`make it: ${p.howTo}`)}`)
      }
      // the python scripts ship in the package (package.json "files"): name where they are for an npm install
      if (pieces.some(p => p.howTo?.includes('samples/export/') && p.status !== 'ok')) this.log(chalk.dim(`the samples/export/ scripts are in ${fileURLToPath(new URL('../../samples/export/', import.meta.url))} (Python with torch, diffusers, optimum; see its README.md)`))
      this.log(ok ? chalk.green('generate can run with this folder') : chalk.red('generate cannot run with this folder: see above'))
    }
    if (!ok) process.exitCode = 1
    return { dir, ok, pieces }
  }
}
