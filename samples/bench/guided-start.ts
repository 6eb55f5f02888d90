// What a guided run does before its first gradient pass, step by step as lookahead() does it (the sampling UNet
// and text encoders, the conditioning, the preview's models, the preview's gradient model from the cache or built
// into it): CPU and wall ms of each, on the first run (a cache miss) and on later ones (hits; every session
// closed between runs, as in a new process). The LCM preview at 64², CFG 1, a pixel loss. CPU time is the number to
// compare on a shared machine.
// Usage: npx tsx samples/bench/guided-start.ts --models DIR [--runs 3] [--threads 1]
//   the cache is a new temporary folder ($LOOKAHEAD_CACHE is set to it: the LoRA'd UNet is built there too)
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { conditioning } from '../../src/diffusion/conditioning.js'
import { latentDims, loadSdxl } from '../../src/diffusion/pipeline.js'
import { gradientSession, previewModels, previewShape } from '../../src/guidance/engine.js'
import { pixelGuide } from '../../src/guidance/guide.js'
import { closeSessions } from '../../src/onnx/session.js'
import { option } from '../args.js'

const models = option('models')
if (!models) throw new Error('usage: npx tsx samples/bench/guided-start.ts --models DIR [--runs 3] [--threads 1]')
const runs = Number(option('runs', '3'))
const threads = Number(option('threads', '1'))
const cache = await mkdtemp(join(tmpdir(), 'lookahead-start-bench-'))
process.env.LOOKAHEAD_CACHE = cache

type Phases = Record<string, { cpuMs: number; wallMs: number }>

/** The steps lookahead() takes before its first gradient pass, each timed. */
async function beforeFirstPass(): Promise<Phases> {
  const phases: Phases = {}
  let [cpu, wall] = [process.cpuUsage(), performance.now()]
  const done = (name: string) => {
    const used = process.cpuUsage(cpu)
    phases[name] = { cpuMs: Math.round((used.user + used.system) / 1000), wallMs: Math.round(performance.now() - wall) }
    ;[cpu, wall] = [process.cpuUsage(), performance.now()]
  }
  const size = { height: 64, width: 64 }
  const sdxl = await loadSdxl(models!, { threads }, { cfg: 1, size, cacheDir: cache })
  await conditioning({ prompt: 'a photo', cfg: 1, size }, sdxl.unet, sdxl.text)
  done('unet and text encoders')
  const parts = await previewModels(models!, 'lcm')
  done('preview models')
  await gradientSession(parts, pixelGuide(), previewShape(1, latentDims(sdxl.unet, size)), { cacheDir: cache, session: { threads } })
  done('gradient session')
  await closeSessions()
  return phases
}

const total = (p: Phases) => Object.values(p).reduce((sum, { cpuMs }) => sum + cpuMs, 0)

try {
  const miss = await beforeFirstPass()
  const hits: Phases[] = []
  for (let run = 0; run < runs; run++) hits.push(await beforeFirstPass())
  const median = [...hits].sort((a, b) => total(a) - total(b))[Math.floor(hits.length / 2)]
  console.log(JSON.stringify({ models, threads, missCpuMs: total(miss), hitCpuMs: hits.map(total), medianHit: median }))
} finally {
  await rm(cache, { recursive: true, force: true })
}
