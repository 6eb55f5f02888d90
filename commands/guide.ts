import { Flags } from '@oclif/core'
import chalk from 'chalk'
import { exitOnInterrupt, LookaheadCommand } from '../src/cli/base.js'
import { check } from '../src/errors.js'
import { jobFlags, modelFlags, promptArg, settingFlags, settingsFromFlags } from '../src/cli/flags.js'
import { checkFileOutput, checkFolderOutput, checkImageOutput, writeImage } from '../src/cli/output.js'
import { JOB_SETTINGS } from '../src/cli/settings.js'
import type { GuideJob } from '../guides/jobs.js'

export default class Guide extends LookaheadCommand {
  static description = 'Generate an image guided by an image-space loss through a lookahead preview (LCM, or the naive x0 estimate)'

  static examples = [
    '<%= config.bin %> guide --world demo --loss id --ref world:dev -o out.png',
    '<%= config.bin %> guide "an astronaut" --models sdxl/ --loss id --ref face.jpg --preview lcm --guide-steps 10 --iters 10 -o out.png',
  ]

  static args = { prompt: promptArg }

  static flags = {
    ...modelFlags,
    ...jobFlags(),
    ...settingFlags(['memoryLimit']),
    output: Flags.string({ char: 'o', description: 'output image: .png, .jpg or .webp (not needed with --dry-run)' }),
    'save-iterations': Flags.string({ description: 'folder for the decoded preview the loss saw at every iteration (PNGs), the final image, the reference and index.json (guide step, iteration, loss, time)' }),
    animate: Flags.string({ description: 'an animated .webp or .gif of the preview over the iterations, each frame labelled with guide step, iteration and loss, then the final image' }),
    'dry-run': Flags.boolean({ description: 'print the cost (UNet evaluations, gradient passes, peak memory of the gradient pass) and stop' }),
  }

  async run() {
    const { args, flags } = await this.parse(Guide)
    exitOnInterrupt()
    const { memoryLimit } = settingsFromFlags(['memoryLimit'], flags, 'sdxl')
    if (!flags['dry-run']) {
      check(flags.output, 'say where to write the image: -o out.png')
      checkImageOutput(flags.output)
    }
    const pictures = flags['save-iterations'] !== undefined || flags.animate !== undefined
    if (pictures) {
      const { preview, iters } = settingsFromFlags(['preview', 'iters'], flags, 'sdxl') // the same in every world
      check(preview !== 'none' && iters > 0, '--save-iterations and --animate show the preview over the iterations: they need --preview x0 or lcm and --iters ≥ 1')
    }
    if (flags['save-iterations']) checkFolderOutput(flags['save-iterations'], '--save-iterations')
    if (flags.animate) {
      checkFileOutput(flags.animate, '--animate')
      const { animationFormat } = await import('../src/image/animation.js')
      animationFormat(flags.animate)
    }
    await this.runtime(flags)
    const { jobFromFlags } = await import('../src/cli/job.js')
    const planned = await jobFromFlags(args.prompt, JOB_SETTINGS, flags, {
      onStep: (done, total) => { spinner.text = `sampling: step ${done}/${total}` },
      onIteration: it => { spinner.text = `guiding at step ${it.step}: iteration ${it.iter + 1}/${job.iters}, loss ${it.loss.toFixed(4)}` },
      warn: message => spinner.interject(`${chalk.yellow('warning:')} seed ${job.seed}, ${job.preview}: ${message}`),
      note: message => this.note(message),
    })
    const job = await planned.ready()
    // progress begins once every check has passed
    const spinner = this.spinner('preparing')
    job.note = message => { if (!this.jsonEnabled()) spinner.interject(message) }
    if (flags['dry-run']) {
      spinner.stop()
      return this.dryRun(job, memoryLimit)
    }
    // on a GPU, say before running what the gradient pass will need
    if (job.device === 'cuda') await this.dryRun(job, memoryLimit)
    const { runGuideJob, jobSettings, referenceImage } = await import('../guides/jobs.js')
    const { IterationRecorder } = await import('../src/report/iterations.js')
    const recorder = pictures ? new IterationRecorder({
      dir: flags['save-iterations'], animation: flags.animate, iters: job.iters, recur: job.recur, title: `${job.preview} preview, ${job.loss} loss, seed ${job.seed}`,
      reference: job.ref ? await referenceImage(job.ref, job.folder) : undefined,
    }) : undefined
    if (recorder) job.onPreview = (iteration, preview, ms) => recorder.add({ ...iteration, ms, preview })
    const result = await runGuideJob(job).finally(() => spinner.stop())
    await writeImage(result.image, flags.output!)
    const recorded = await recorder?.finish(result.image, result.timings)

    const losses = result.iterations.map(i => i.loss)
    if (losses.length > 0) this.note(`loss ${losses[0].toFixed(4)} → ${result.finalLoss!.toFixed(4)} (before the first of ${losses.length} updates → after the last; ${result.guide})`)
    const { identity, world, clip, missing } = result.metrics
    if (identity) {
      const byLossNet = identity.loss ? `; by the loss's network: distance ${identity.loss.distance.toFixed(3)}` : ''
      this.note(`identity to the reference (held-apart metric): cosine ${identity.similarity.toFixed(3)}, distance ${identity.distance.toFixed(3)}${byLossNet}`)
    } else if (missing?.identity) this.note(`identity to the reference (held-apart metric): none (${missing.identity})`)
    if (world) this.note(`demo world: nearest identity ${world.name}, Mahalanobis ${world.mahalanobis.toFixed(2)}${world.typical ? '' : chalk.yellow(' (off the data distribution)')}`)
    if (clip !== undefined) this.note(`CLIP score to the prompt: ${clip.toFixed(2)}`)
    this.note(`${chalk.green('wrote')} ${flags.output}`)
    if (recorded?.index) this.note(`${chalk.green('wrote')} ${recorded.iterations.length} previews, final.png and ${recorded.index}`)
    if (recorded?.animation) this.note(`${chalk.green('wrote')} ${recorded.animation} (${recorded.iterations.length + 1} frames)`)
    if (result.bestOf) this.note(`best of ${result.bestOf.n}: kept seed ${result.bestOf.candidates[result.bestOf.chosen].seed} (guide losses ${result.bestOf.candidates.map(c => c.loss.toFixed(4)).join(', ')})`)
    const { iterations, finalLoss, metrics, timings, unetEvaluations, bestOf, guide } = result
    return { output: flags.output, settings: jobSettings(job), iterations, finalLoss, metrics, timings, unetEvaluations, bestOf, guide, ...(recorded ? { pictures: { index: recorded.index, animation: recorded.animation } } : {}) }
  }

  /** Prints the run's cost and the gradient pass's memory estimate, with advice past `limitGb`. */
  private async dryRun(job: GuideJob, limitGb: number) {
    const { dryRunJob, fitMemoryJob } = await import('../guides/jobs.js')
    const cost = await dryRunJob(job)
    if (cost.bestOf) this.note(`best of ${cost.bestOf} unguided samples (as many as cost what the lcm run costs), kept by the guide's loss on the final image`)
    const gb = (bytes: number) => (bytes >= 1e8 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(2)} MB`)
    this.note(`latent ${cost.latentShape.join('×')}: sampling ${cost.samplingEvaluations} UNet evaluations, guidance ${cost.guidanceEvaluations} more (${cost.gradientPasses} gradient passes): ${cost.ratio.toFixed(2)}× an unguided image`)
    const { weights: held, samplingActivations } = cost.sessions
    if (cost.gradientPasses > 0) {
      const { weights, peak, lowerBound, upperBound, unknown } = cost.memory
      const recomputed = job.recompute > 1 ? `, its forward recomputed in ${job.recompute} segments` : ''
      this.note(`gradient pass${recomputed}: weights ${gb(weights)} + activations ≈ ${gb(peak)} at their peak ` +
        `(buffers as onnxruntime's planner holds them; ${gb(lowerBound)} if each value were freed at its last reader, ${gb(upperBound)} if none were; ` +
        `UNet and decoder with a stand-in loss: the guide network, kernel workspaces and arena overhead add to it)` +
        (unknown > 0 ? `; ${unknown} values of unknown size not counted` : ''))
    }
    this.note(`other sessions (sampling UNet, text encoders, final decoder): weights ${gb(held)} + the sampling UNet's activations ≈ ${gb(samplingActivations)}; in all ≈ ${gb(cost.peakBytes)}`)
    if (cost.gradientPasses > 0 && cost.peakBytes > limitGb * 1e9) {
      const fit = await fitMemoryJob(job, limitGb * 1e9)
      const flags = fit && [`--recompute ${fit.recompute}`, ...(fit.guideSize ? [`--guide-size ${fit.guideSize}`] : [])].join(' ')
      this.warning(`this exceeds ${limitGb} GB: ` + (fit
        ? `${flags} fits (${gb(fit.cost.peakBytes)}; guidance ${fit.cost.guidanceEvaluations.toFixed(0)} UNet evaluations instead of ${cost.guidanceEvaluations.toFixed(0)})`
        : job.world === 'demo' ? 'no recomputation fits (a demo world runs at its own size only)' : 'no recomputation or --guide-size down to 512 fits; try an fp16 UNet export or --preview-decoder taesd'))
    }
    return cost
  }
}
