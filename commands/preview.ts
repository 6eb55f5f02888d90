import { Flags } from '@oclif/core'
import { exitOnInterrupt, LookaheadCommand } from '../src/cli/base.js'
import { check } from '../src/errors.js'
import { DEFAULT_PROMPT, modelFlags, promptArg, settingFlags } from '../src/cli/flags.js'
import { checkImageOutput, writeImage } from '../src/cli/output.js'

export default class Preview extends LookaheadCommand {
  static description = 'Teaching figure (the paper\'s fig. 2): at several steps, the naive x0 estimate beside the LCM preview beside the final image'

  static examples = ['<%= config.bin %> preview --world demo --at 2,5,10,20 -o preview.png']

  static args = { prompt: promptArg }

  static flags = {
    ...modelFlags,
    ...settingFlags(['negative', 'steps', 'cfg', 'seed', 'size', 'at']),
    output: Flags.string({ char: 'o', description: 'output image, .png, .jpg or .webp (one row per step: x0, lcm, final)' }),
  }

  async run() {
    const { args, flags } = await this.parse(Preview)
    exitOnInterrupt()
    check(flags.output, 'say where to write the figure: -o preview.png')
    checkImageOutput(flags.output)
    await this.runtime(flags)
    const { samplingFromFlags } = await import('../src/cli/job.js')
    const settings = await samplingFromFlags(['negative', 'seed', 'at'], flags, args.prompt, message => this.note(message))
    for (const s of settings.at) check(s < settings.steps, `--at ${settings.at.join(',')}: step ${s} is outside 0…${settings.steps - 1} (there are ${settings.steps} steps)`)
    const { previewFigure } = await import('../src/guidance/figure.js')
    const { composeGrid, imageFromTensor } = await import('../src/image/image.js')
    const spinner = this.spinner('sampling')
    const figure = await previewFigure({
      ...settings, prompt: args.prompt ?? DEFAULT_PROMPT, size: { height: settings.size, width: settings.size },
      onStep: (done, total) => { spinner.text = `sampling: step ${done}/${total}` },
    }).finally(() => spinner.stop())
    const final = imageFromTensor(figure.final.data, figure.final.dims)
    const image = (t: { data: Float32Array; dims: number[] }) => imageFromTensor(t.data, t.dims)
    await writeImage(composeGrid(figure.rows.map(row => [
      { image: image(row.previews.x0), label: `step ${row.step} (t=${row.t}) x0` },
      { image: image(row.previews.lcm), label: `step ${row.step} lcm` },
      { image: final, label: 'final' },
    ])), flags.output)
    this.note(`wrote ${flags.output}`)
    return { output: flags.output, steps: figure.rows.map(r => ({ step: r.step, t: r.t })) }
  }
}
