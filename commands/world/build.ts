import { Flags } from '@oclif/core'
import { LookaheadCommand } from '../../src/cli/base.js'
import { checkFolderOutput } from '../../src/cli/output.js'
import { check } from '../../src/errors.js'

export default class WorldBuild extends LookaheadCommand {
  static description =
    'Build the demo world: a models folder whose UNet is the exact denoiser of a Gaussian mixture over face latents, ' +
    'whose LCM UNet is its probability-flow endpoint, and whose decoders are a fixed linear codec (no downloads)'

  static examples = [
    '<%= config.bin %> world build -o models/demo',
    '<%= config.bin %> world build --world-images photos/ --crop-faces -o models/photos',
  ]

  static flags = {
    output: Flags.string({ char: 'o', description: 'models folder to write (unet, lcm_unet, vae_decoder, taesdxl_decoder, vae_encoder, world.json)', required: true }),
    'world-images': Flags.string({ description: 'build from the face images in this folder (default: the drawn faces)' }),
    'crop-faces': Flags.boolean({ description: 'crop each --world-images image to a square about its face (face-api detector); default: centre crop', dependsOn: ['world-images'] }),
    size: Flags.integer({ description: 'image side in pixels, a multiple of 32 as guide and generate need (default: the drawn world\'s)', min: 32 }),
    rank: Flags.integer({ description: 'dimension of the principal subspace (default: the smallest ≥ images − 1 keeping 90% of the variance)', min: 1 }),
    spread: Flags.string({ description: 'c: each component\'s covariance is c·Σ_pca (default: the drawn world\'s)' }),
  }

  async run() {
    const { flags } = await this.parse(WorldBuild)
    const { DEFAULT_WORLD_SETTINGS } = await import('../../src/world/world.js')
    const spread = flags.spread === undefined ? DEFAULT_WORLD_SETTINGS.spread : Number(flags.spread)
    check(spread > 0, `--spread must be a positive number (got ${flags.spread})`)
    const size = flags.size ?? DEFAULT_WORLD_SETTINGS.size
    check(size % 32 === 0, `--size ${size}: expected a multiple of 32 (guide and generate work at multiples of 32)`)
    checkFolderOutput(flags.output)
    const { detectFaces } = await import('../../guides/face.js')
    const { buildWorldFolder } = await import('../../src/world/models.js')
    const spinner = this.spinner('building the demo world')
    const start = performance.now()
    const { world, files } = await buildWorldFolder(flags.output, {
      images: flags['world-images'],
      findFace: flags['crop-faces'] ? async image => (await detectFaces(image))[0]?.box : undefined,
      settings: { size, rank: flags.rank, spread },
    }).finally(() => spinner.stop())
    const result = {
      folder: flags.output,
      files,
      identities: world.identities,
      components: world.components.length,
      rank: world.rank,
      explainedVariance: world.explainedVariance,
      seconds: (performance.now() - start) / 1000,
    }
    this.note(`wrote ${flags.output}: ${world.identities.length} identities, ${result.components} components, ` +
      `rank ${world.rank} (${(100 * world.explainedVariance).toFixed(1)}% of the variance), ${result.seconds.toFixed(1)} s`)
    return result
  }
}
