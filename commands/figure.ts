import { Flags } from '@oclif/core'
import chalk from 'chalk'
import { exitOnInterrupt, LookaheadCommand } from '../src/cli/base.js'
import { check } from '../src/errors.js'
import { jobFlags, modelFlags, promptArg, seedList, settingFlags, settingsFromFlags } from '../src/cli/flags.js'
import { checkImageOutput, writeImage } from '../src/cli/output.js'
import { JOB_SETTINGS } from '../src/cli/settings.js'

/** Every job setting but the preview: the figure has a column per --previews method (and a row per --losses loss). */
const SETTINGS = JOB_SETTINGS.filter(key => key !== 'preview')

export default class Figure extends LookaheadCommand {
  static description = 'The paper\'s fig. 5: a row per loss, the reference, then the image each preview guides to (one seed or a few), labelled, under a title with the settings'

  static examples = [
    '<%= config.bin %> figure --world demo --ref world:dev --seed 3 -o fig5.png',
    '<%= config.bin %> figure --models sdxl/ --ref face.jpg --losses id,lpips --previews x0,lcm --seeds 0,1 -o fig5.png',
  ]

  static args = { prompt: promptArg }

  static flags = {
    ...modelFlags,
    ...jobFlags(['loss', 'preview']),
    ...settingFlags(['losses', 'previews']),
    seeds: Flags.string({ description: 'a few seeds side by side instead of one --seed, e.g. 0,3', exclusive: ['seed'] }),
    output: Flags.string({ char: 'o', description: 'output image: .png, .jpg or .webp' }),
  }

  async run() {
    const { args, flags } = await this.parse(Figure)
    exitOnInterrupt()
    check(flags.output, 'say where to write the figure: -o fig5.png')
    checkImageOutput(flags.output)
    const { losses, previews, seed } = settingsFromFlags(['losses', 'previews', 'seed'], flags, 'sdxl')
    const seeds = flags.seeds === undefined ? [seed] : seedList(flags.seeds)
    await this.runtime(flags)
    const { jobFromFlags } = await import('../src/cli/job.js')
    const { lossFigure } = await import('../guides/figure.js')
    const { jobSettings } = await import('../guides/jobs.js')
    // warnings name the run they come from (each guide is prepared once and warns from every run)
    let current = ''
    // the job is checked with every loss at once (e.g. that they have the reference they need)
    const planned = await jobFromFlags(args.prompt, SETTINGS, { ...flags, loss: losses.join(',') }, {
      warn: message => spinner.interject(`${chalk.yellow('warning:')} ${current}${message}`),
      note: message => this.note(message),
    }, previews)
    const job = await planned.ready()
    // progress begins once every check has passed
    const spinner = this.spinner('preparing')
    job.note = message => { if (!this.jsonEnabled()) spinner.interject(message) }
    const figure = await lossFigure(job, {
      losses, methods: previews, seeds,
      onRun: (done, total, what) => {
        current = `${what}: `
        spinner.text = `run ${done + 1}/${total}: ${what}`
      },
    }).finally(() => spinner.stop())
    await writeImage(figure.image, flags.output)
    this.note(`${chalk.green('wrote')} ${flags.output}`)
    const { loss: _loss, seed: _seed, ...settings } = jobSettings(job) // the rows and columns say them
    return {
      output: flags.output, settings: { ...settings, seeds, losses, previews }, skipped: figure.skipped,
      runs: figure.runs.map(({ loss, method, seed, result }) => ({ loss, method, seed, metrics: result.metrics, iterations: result.iterations, finalLoss: result.finalLoss })),
    }
  }
}
