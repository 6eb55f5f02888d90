import { Flags } from '@oclif/core'
import { exitOnInterrupt, LookaheadCommand } from '../src/cli/base.js'
import { modelFlags, numberFlag, promptArg, samplingFlags } from '../src/cli/flags.js'
import { check } from '../src/errors.js'
import { previewFigure } from '../src/guidance/figure.js'
import { composeGrid, imageFromTensor, saveImage } from '../src/image/image.js'
import { defaultSize, resolveModels } from '../guides/jobs.js'

export default class Preview extends LookaheadCommand {
  static description = 'Teaching figure (the paper\'s fig. 2): at several steps, the naive x0 estimate beside the LCM preview beside the final image'

  static examples = ['<%= config.bin %> preview --world demo --at 2,5,10,20 -o preview.png']

  static args = { prompt: promptArg }

  static flags = {
    ...modelFlags,
    ...samplingFlags,
    at: Flags.string({ description: 'step indices to preview', default: '2,5,10,20' }),
    output: Flags.string({ char: 'o', description: 'output PNG (one row per step: x0, lcm, final)', required: true }),
  }

  async run() {
    const { args, flags } = await this.parse(Preview)
    exitOnInterrupt()
    const models = await resolveModels(flags)
    const side = flags.size ?? (await defaultSize(models))
    const at = flags.at.split(',').map(Number)
    for (const s of at) check(Number.isInteger(s) && s >= 0 && s < flags.steps, `--at ${flags.at}: each step must be an integer in 0…${flags.steps - 1}`)
    const spinner = this.spinner('sampling')
    const figure = await previewFigure({
      prompt: args.prompt, negative: flags.negative, steps: flags.steps, cfg: numberFlag(flags.cfg, 'cfg'), seed: flags.seed,
      size: { height: side, width: side }, models, session: { device: this.device(flags), threads: flags.threads }, at,
      onStep: (done, total) => { spinner.text = `sampling: step ${done}/${total}` },
    }).finally(() => spinner.stop())
    const final = imageFromTensor(figure.final.data, figure.final.dims)
    const image = (t: { data: Float32Array; dims: number[] }) => imageFromTensor(t.data, t.dims)
    await saveImage(composeGrid(figure.rows.map(row => [
      { image: image(row.previews.x0), label: `step ${row.step} (t=${row.t}) x0` },
      { image: image(row.previews.lcm), label: `step ${row.step} lcm` },
      { image: final, label: 'final' },
    ])), flags.output)
    this.note(`wrote ${flags.output}`)
    return { output: flags.output, steps: figure.rows.map(r => ({ step: r.step, t: r.t })) }
  }
}
