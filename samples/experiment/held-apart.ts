// The identity metric rescored on a comparison's saved final images, with the face taken at the reference's
// face position wherever the detector finds none (IdentityMetric's fallback 'reference', as the id guide does):
// the demo world's final images are face crops framed as the reference is, but too blurred for face-api's tiny
// detector (score ≤ 0.5) to find the face in most of them. Writes held-apart.jsonl beside each folder's
// runs.jsonl (seed, method, similarity, distance, loss: the loss network's, detected); collect.ts uses it.
// Usage: tsx samples/experiment/held-apart.ts REFERENCE RUNS_DIR
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { COMPARISON_FILES, runImage, type RunRecord } from '../../guides/compare.js'
import { IdentityMetric } from '../../guides/metric.js'
import { loadImage } from '../../src/image/image.js'

const [referencePath, dir] = process.argv.slice(2)
if (!dir) throw new Error('usage: tsx samples/experiment/held-apart.ts REFERENCE RUNS_DIR')
const metric = await IdentityMetric.create(await loadImage(referencePath), { lossNetwork: 'faceapi' })
for (const name of readdirSync(dir).filter(n => existsSync(join(dir, n, COMPARISON_FILES.summary))).sort()) {
  const out = join(dir, name, 'held-apart.jsonl')
  if (existsSync(out)) continue
  const runs = readFileSync(join(dir, name, COMPARISON_FILES.runs), 'utf8').split('\n').filter(l => l.trim()).map(l => JSON.parse(l) as RunRecord)
  const lines: string[] = []
  for (const { seed, method } of runs) {
    const score = await metric.measure(await loadImage(runImage(join(dir, name), seed, method)), 'reference')
    lines.push(JSON.stringify({ seed, method, ...score }))
  }
  writeFileSync(out, `${lines.join('\n')}\n`)
  console.log(`${name}: ${runs.length} images rescored`)
}
