import { Flags } from '@oclif/core'
import { LookaheadCommand, exitOnInterrupt } from '../src/cli/base.js'
import { modelFlags, numberFlag, promptArg, samplingFlags } from '../src/cli/flags.js'
import { generate } from '../src/diffusion/pipeline.js'
import { imageFromTensor, saveImage } from '../src/image/image.js'
import { defaultSize, resolveModels } from '../guides/jobs.js'

export default class Generate extends LookaheadCommand {
  static description = 'Generate an image with SDXL (DDIM, classifier-free guidance) from an ONNX models folder, deterministic for a seed'

  static examples = [
    '<%= config.bin %> generate "a photo of an astronaut riding a horse" --models models/sdxl -o astronaut.png',
    '<%= config.bin %> generate "a portrait" --negative "blurry" --steps 30 --cfg 7 --seed 3 -o portrait.png --json',
  ]

  static args = { prompt: promptArg }

  static flags = {
    ...modelFlags,
    ...samplingFlags,
    decoder: Flags.string({ description: 'latent decoder (default: vae when the folder has vae_decoder, else taesd)', options: ['vae', 'taesd'] }),
    output: Flags.string({ char: 'o', description: 'PNG file to write', required: true }),
  }

  async run() {
    const { args, flags } = await this.parse(Generate)
    exitOnInterrupt()
    const cfg = numberFlag(flags.cfg, 'cfg', { min: 0 })
    const models = await resolveModels(flags)
    const side = flags.size ?? (await defaultSize(models))
    const spinner = this.spinner(`loading models from ${models}`)
    const start = performance.now()
    const result = await generate({
      prompt: args.prompt,
      negative: flags.negative,
      steps: flags.steps,
      cfg,
      seed: flags.seed,
      size: { width: side, height: side },
      models,
      decoder: flags.decoder as 'vae' | 'taesd' | undefined,
      session: { device: this.device(flags), threads: flags.threads },
      onStep: (done, total) => { spinner.text = `DDIM step ${done}/${total}` },
    }).finally(() => spinner.stop())
    await saveImage(imageFromTensor(result.image.data, result.image.dims), flags.output)
    const seconds = (performance.now() - start) / 1000
    this.note(`wrote ${flags.output} (${side}x${side}, ${flags.steps} steps, cfg ${cfg}, seed ${flags.seed}, ${result.decoder} decoder, ${seconds.toFixed(1)} s)`)
    return { output: flags.output, prompt: args.prompt, negative: flags.negative ?? null, steps: flags.steps, cfg, seed: flags.seed, size: side, decoder: result.decoder, models, seconds }
  }
}
