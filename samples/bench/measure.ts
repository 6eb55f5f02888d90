// One measurement in its own process, so its peak RSS (VmHWM) is its own: onnxruntime runs MODEL on random
// inputs RUNS times after one warm-up run and prints JSON {best_ms, baseline_kb, peak_kb, create_ms}.
// Usage: tsx samples/bench/measure.ts MODEL RUNS THREADS [dim=value ...]
import { readFile, writeFile } from 'node:fs/promises'
import { randomFeeds } from '../../src/onnx/gradcheck.js'
import { ort, sessionOptions } from '../../src/onnx/session.js'

async function status(field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const text = await readFile('/proc/self/status', 'utf8')
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)![1])
}

const [model, runs, threads, ...dimArgs] = process.argv.slice(2)
const dims = Object.fromEntries(dimArgs.map(d => d.split('=')).map(([name, value]) => [name, Number(value)]))
const created = performance.now()
const session = await ort.InferenceSession.create(model, sessionOptions('cpu', Number(threads)))
const createMs = performance.now() - created
const feeds = randomFeeds(session, dims, 0)
// resets VmHWM, so the peak is the runs' and not the session's creation (which can be higher for big graphs)
await writeFile('/proc/self/clear_refs', '5')
const baseline = await status('VmRSS')
const times: number[] = []
for (let i = 0; i <= Number(runs); i++) {
  const start = performance.now()
  await session.run(feeds)
  times.push(performance.now() - start)
}
// the best run: on a shared machine the least disturbed one
console.log(JSON.stringify({ best_ms: Math.min(...times.slice(1)), baseline_kb: baseline, peak_kb: await status('VmHWM'), create_ms: createMs }))
