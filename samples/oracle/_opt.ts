import { readManifest, caseFeeds, medianCpuMs } from './oracle.js'
import { ort, sessionOptions } from '../../src/onnx/session.js'
import { join } from 'node:path'
const [dir, ...names] = process.argv.slice(2)
for (const c of (await readManifest(dir)).filter(c => names.includes(c.name))) {
  const model = join(dir, c.opsets!['17'].model!)
  const feeds = await caseFeeds(dir, c)
  const out: string[] = []
  for (const level of ['all', 'extended'] as const) {
    const o = { ...sessionOptions('cpu', 1), graphOptimizationLevel: level }
    const f = await ort.InferenceSession.create(model, o), g = await ort.InferenceSession.create(model.replace('.onnx', '.grad.onnx'), o)
    const [tf, tg] = [await medianCpuMs(f, feeds, 7), await medianCpuMs(g, feeds, 7)]
    out.push(`${level}: fwd ${tf.toFixed(2)} grad ${tg.toFixed(2)} (${(tg / tf).toFixed(2)}×)`)
  }
  console.log(c.name, out.join('  '))
}
