import { Flags } from '@oclif/core'
import { LookaheadCommand, exitOnInterrupt } from '../src/cli/base.js'
import { check } from '../src/errors.js'
import { DEFAULT_PROMPT, modelFlags, promptArg, settingFlags } from '../src/cli/flags.js'
import { checkImageOutput, writeImage } from '../src/cli/output.js'

export default class Generate extends LookaheadCommand {
  static description = 'Generate an image with SDXL (DDIM, classifier-free guidance) from an ONNX models folder, deterministic for a seed'

  static examples = [
    '<%= config.bin %> generate "a photo of an astronaut riding a horse" --models models/sdxl -o astronaut.png',
    '<%= config.bin %> generate "a portrait" --negative "blurry" --steps 30 --cfg 7 --seed 3 -o portrait.jpg --json',
  ]

  static args = { prompt: promptArg }

  static flags = {
    ...modelFlags,
    ...settingFlags(['negative', 'steps', 'cfg', 'seed', 'size', 'decoder']),
    output: Flags.string({ char: 'o', description: 'output image: .png, .jpg or .webp' }),
  }

  async run() {
    const { args, flags } = await this.parse(Generate)
    exitOnInterrupt()
    check(flags.output, 'say where to write the image: -o out.png')
    checkImageOutput(flags.output)
    await this.runtime(flags)
    const { samplingFromFlags } = await import('../src/cli/job.js')
    const settings = await samplingFromFlags(['negative', 'seed', 'decoder'], flags, args.prompt, message => this.note(message))
    const { generate } = await import('../src/diffusion/pipeline.js')
    const { imageFromTensor } = await import('../src/image/image.js')
    const spinner = this.spinner(`loading models from ${settings.models.dir}`)
    const start = performance.now()
    const prompt = args.prompt ?? DEFAULT_PROMPT
    const result = await generate({
      ...settings,
      prompt,
      size: { width: settings.size, height: settings.size },
      onStep: (done, total) => { spinner.text = `DDIM step ${done}/${total}` },
    }).finally(() => spinner.stop())
    await writeImage(imageFromTensor(result.image.data, result.image.dims), flags.output)
    const seconds = (performance.now() - start) / 1000
    const { steps, cfg, seed, size, negative, models } = settings
    this.note(`wrote ${flags.output} (${size}x${size}, ${steps} steps, cfg ${cfg}, seed ${seed}, ${result.decoder} decoder, ${seconds.toFixed(1)} s)`)
    return { output: flags.output, prompt, negative: negative ?? null, steps, cfg, seed, size, decoder: result.decoder, models: models.dir, seconds }
  }
}
