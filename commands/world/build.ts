import { Flags } from '@oclif/core'
import { LookaheadCommand } from '../../src/cli/base.js'
import { checkFolderOutput } from '../../src/cli/output.js'
import { check } from '../../src/errors.js'

export default class WorldBuild extends LookaheadCommand {
  static description =
    'Build the demo world: a models folder whose UNet is the exact denoiser of a Gaussian mixture over face latents, ' +
    'whose LCM UNet is its probability-flow endpoint, and whose codec is fixed and linear (no downloads) or, with --codec taesd, the real TAESDXL encoder and decoder'

  static examples = [
    '<%= config.bin %> world build -o models/demo',
    '<%= config.bin %> world build --world-images photos/ --crop-faces -o models/photos',
    '<%= config.bin %> world build --codec taesd --taesd taesd/ -o models/demo-taesd',
  ]

  static flags = {
    output: Flags.string({ char: 'o', description: 'models folder to write (unet, lcm_unet, vae_decoder, taesdxl_decoder, vae_encoder, world.json)', required: true }),
    'world-images': Flags.string({ description: 'build from the face images in this folder (default: the drawn faces)' }),
    'crop-faces': Flags.boolean({ description: 'crop each --world-images image to a square about its face (face-api detector); default: centre crop', dependsOn: ['world-images'] }),
    'every-face': Flags.boolean({ description: 'with --crop-faces: every face found is an identity (group photos)', dependsOn: ['crop-faces'] }),
    size: Flags.integer({ description: 'image side in pixels, a multiple of 32 as guide and generate need (default: the drawn world\'s)', min: 32 }),
    rank: Flags.integer({ description: 'dimension of the principal subspace (default: the smallest ≥ images − 1 keeping 90% of the variance)', min: 1 }),
    spread: Flags.string({ description: 'c: each component\'s covariance is c·Σ_pca (default: the drawn world\'s)' }),
    codec: Flags.string({ description: 'the latent codec: linear (fixed, no weights) or taesd (the real TAESDXL encoder and decoder: SDXL latents)', options: ['linear', 'taesd'], default: 'linear' }),
    taesd: Flags.string({ description: 'with --codec taesd: a folder with taesdxl_encoder/decoder.safetensors, or one of those files' }),
  }

  async run() {
    const { flags } = await this.parse(WorldBuild)
    const { DEFAULT_WORLD_SETTINGS } = await import('../../src/world/world.js')
    const spread = flags.spread === undefined ? DEFAULT_WORLD_SETTINGS.spread : Number(flags.spread)
    check(spread > 0, `--spread must be a positive number (got ${flags.spread})`)
    check(flags.codec !== 'taesd' || flags.taesd, '--codec taesd needs --taesd DIR_OR_FILE (TAESDXL\'s encoder and decoder weights)')
    check(flags.codec === 'taesd' || !flags.taesd, '--taesd goes with --codec taesd')
    const size = flags.size ?? DEFAULT_WORLD_SETTINGS.size
    check(size % 32 === 0, `--size ${size}: expected a multiple of 32 (guide and generate work at multiples of 32)`)
    checkFolderOutput(flags.output)
    const { detectFaces } = await import('../../guides/face.js')
    const { buildWorldFolder, readTaesd } = await import('../../src/world/models.js')
    const taesd = flags.taesd ? await readTaesd(flags.taesd) : undefined
    const spinner = this.spinner('building the demo world')
    const start = performance.now()
    const { world, files } = await buildWorldFolder(flags.output, {
      images: flags['world-images'],
      findFaces: flags['crop-faces'] ? async image => (await detectFaces(image)).map(face => face.box) : undefined,
      everyFace: flags['every-face'],
      taesd,
      settings: { size, rank: flags.rank, spread },
    }).finally(() => spinner.stop())
    const result = {
      folder: flags.output,
      files,
      identities: world.identities,
      components: world.components.length,
      rank: world.rank,
      codec: world.codecKind,
      explainedVariance: world.explainedVariance,
      seconds: (performance.now() - start) / 1000,
    }
    this.note(`wrote ${flags.output}: ${world.identities.length} identities, ${result.components} components, ` +
      `rank ${world.rank} (${(100 * world.explainedVariance).toFixed(1)}% of the variance), ${world.codecKind} codec, ${result.seconds.toFixed(1)} s`)
    return result
  }
}
