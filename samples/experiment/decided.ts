// When is a demo-world sample's identity decided? For each seed, unguided DDIM; at several steps, the identity
// of the world component nearest the naive x0 estimate, compared with the identity of the final latent. If they
// agree from step 0 on, no guide step can find an undecided sample to steer, whichever preview it looks through.
// Usage: tsx samples/experiment/decided.ts WORLD [SEEDS=0-31] [STEPS=0,1,2,5,10,20]
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { seedList } from '../../src/cli/flags.js'
import { conditioning } from '../../src/diffusion/conditioning.js'
import { ddimLoop, initialNoise, latentDims, loadSdxl, unetEpsModel } from '../../src/diffusion/pipeline.js'
import { naiveX0 } from '../../src/diffusion/schedulers.js'
import { parseWorld, placeLatent } from '../../src/world/world.js'

const [models, seeds = '0-31', steps = '0,1,2,5,10,20'] = process.argv.slice(2)
if (!models) throw new Error('usage: tsx samples/experiment/decided.ts WORLD [SEEDS] [STEPS]')
const at = steps.split(',').map(Number)
const world = parseWorld(await readFile(join(models, 'world.json'), 'utf8'), join(models, 'world.json'))
const sdxl = await loadSdxl(models)
const side = world.codec.imageSize
const cond = await conditioning({ prompt: '', cfg: 1, size: { height: side, width: side } }, sdxl.unet, sdxl.text)
const eps = unetEpsModel(sdxl.unet, cond, 1)
const dims = latentDims(sdxl.unet, { height: side, width: side })

const agree = new Map(at.map(s => [s, 0]))
const seedsList = seedList(seeds)
for (const seed of seedsList) {
  const early = new Map<number, string>()
  const final = await ddimLoop(initialNoise(seed, dims), 50, eps, {
    beforeStep: async ({ index, t, x }) => {
      if (at.includes(index)) early.set(index, placeLatent(world, naiveX0(x.data, await eps(x, t), t)).name)
    },
  })
  const identity = placeLatent(world, final.data).name
  for (const s of at) if (early.get(s) === identity) agree.set(s, agree.get(s)! + 1)
}
console.log('| step | x0 estimate\'s nearest identity = final identity |\n| --- | --- |')
for (const s of at) console.log(`| ${s} | ${agree.get(s)}/${seedsList.length} |`)
