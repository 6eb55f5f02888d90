import { Flags } from '@oclif/core'
import { exitOnInterrupt, LookaheadCommand } from '../src/cli/base.js'
import { check } from '../src/errors.js'
import { DEFAULT_PROMPT, modelFlags, promptArg, settingFlags } from '../src/cli/flags.js'
import { checkImageOutput, writeImage } from '../src/cli/output.js'

export default class Preview extends LookaheadCommand {
  static description = 'Teaching figure (the paper\'s fig. 2): at several steps, the naive x0 estimate beside the LCM preview, each with its distance to the final image'

  static examples = ['<%= config.bin %> preview --world demo --at 2,5,10,20 --ref world:dev -o preview.png']

  static args = { prompt: promptArg }

  static flags = {
    ...modelFlags,
    ...settingFlags(['negative', 'steps', 'cfg', 'seed', 'size', 'at', 'ref'], { ref: 'an image shown beside the figure, e.g. the reference a guided run would use (world:NAME: a face of the demo world)' }),
    output: Flags.string({ char: 'o', description: 'output image, .png, .jpg or .webp (a row per step: x0, lcm; the reference and the final image once)' }),
  }

  async run() {
    const { args, flags } = await this.parse(Preview)
    exitOnInterrupt()
    check(flags.output, 'say where to write the figure: -o preview.png')
    checkImageOutput(flags.output)
    await this.runtime(flags)
    const { samplingFromFlags } = await import('../src/cli/job.js')
    const settings = await samplingFromFlags(['negative', 'seed', 'at', 'ref'], flags, args.prompt, message => this.note(message))
    for (const s of settings.at) check(s < settings.steps, `--at ${settings.at.join(',')}: step ${s} is outside 0…${settings.steps - 1} (there are ${settings.steps} steps)`)
    const { previewDistances, previewFigure, previewFigureImage } = await import('../src/guidance/figure.js')
    const { referenceImage } = await import('../guides/jobs.js')
    const reference = settings.ref ? await referenceImage(settings.ref, settings.models) : undefined
    const spinner = this.spinner('sampling')
    const figure = await previewFigure({
      ...settings, prompt: args.prompt ?? DEFAULT_PROMPT, size: { height: settings.size, width: settings.size },
      onStep: (done, total) => { spinner.text = `sampling: step ${done}/${total}` },
    }).finally(() => spinner.stop())
    const title = `seed ${settings.seed}, ${settings.steps} DDIM steps, cfg ${settings.cfg}: the x0 estimate and the LCM preview of x_t, and their pixel RMS distance to the final image`
    await writeImage(previewFigureImage(figure, { reference, title }), flags.output)
    const distances = previewDistances(figure)
    for (const d of distances) this.note(`step ${String(d.step).padStart(3)} (t=${d.t}): distance to the final image (pixel RMS) x0 ${d.x0.toFixed(3)}, lcm ${d.lcm.toFixed(3)}`)
    this.note(`wrote ${flags.output}`)
    // distances are pixel RMS on images in [-1,1]
    return { output: flags.output, seed: settings.seed, steps: distances.map(({ step, t, x0, lcm }) => ({ step, t, distanceToFinal: { x0, lcm } })) }
  }
}
