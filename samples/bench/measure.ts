// One measurement in its own process, so its peak RSS (VmHWM) is its own: onnxruntime runs MODEL on the bench
// inputs RUNS times after one warm-up run and prints JSON {best_ms, baseline_kb, peak_kb}.
// Usage: tsx samples/bench/measure.ts MODEL DIR SIZE RUNS THREADS
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { openSession, ort } from '../../src/onnx/session.js'

async function status(field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const text = await readFile('/proc/self/status', 'utf8')
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)![1])
}

async function floats(path: string): Promise<Float32Array> {
  const bytes = await readFile(path)
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
}

const [model, dir, size, runs, threads] = process.argv.slice(2)
// the project's own session settings
const session = await openSession(model, { threads: Number(threads) })
const feeds = {
  sample: new ort.Tensor('float32', await floats(join(dir, 'sample.bin')), [1, 4, Number(size), Number(size)]),
  encoder_hidden_states: new ort.Tensor('float32', await floats(join(dir, 'context.bin')), [1, 8, 32]),
}
const baseline = await status('VmRSS')
const times: number[] = []
for (let i = 0; i <= Number(runs); i++) {
  const start = performance.now()
  await session.run(feeds)
  times.push(performance.now() - start)
}
// the best run: on a shared machine the least disturbed one
console.log(JSON.stringify({ best_ms: Math.min(...times.slice(1)), baseline_kb: baseline, peak_kb: await status('VmHWM') }))
