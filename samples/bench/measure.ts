// One measurement in its own process, so its peak RSS (VmHWM) is its own: onnxruntime runs MODEL on random
// inputs RUNS times after one warm-up run and prints JSON {best_ms, baseline_kb, peak_kb, create_ms, create_cpu_ms}
// (create_cpu_ms: the process's CPU time in session creation, steadier than wall time on a shared machine).
// With --arena it runs once with onnxruntime's profiler on and prints {arena_peak_bytes} instead: the CPU arena's
// peak bytes in use during the run above those in use before it (the profile's mem_in_use_peak), onnxruntime's own
// count of the run's working memory (the profiler's events would distort the RSS, hence a process of its own).
// With --disable-prepacking the session does not pre-pack constant weights per node (onnxruntime's session option
// session.disable_prepacking), which the project's sessions do.
// Usage: tsx samples/bench/measure.ts MODEL RUNS THREADS [--arena] [--disable-prepacking] [dim=value ...]
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomFeeds } from '../../src/onnx/gradcheck.js'
import { ort, sessionOptions } from '../../src/onnx/session.js'

async function status(field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const text = await readFile('/proc/self/status', 'utf8')
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)![1])
}

const [model, runs, threads, ...rest] = process.argv.slice(2)
const arena = rest.includes('--arena')
const prepacking = !rest.includes('--disable-prepacking')
const dims = Object.fromEntries(rest.filter(d => !d.startsWith('--')).map(d => d.split('=')).map(([name, value]) => [name, Number(value)]))
const profileDir = arena ? await mkdtemp(join(tmpdir(), 'lookahead-measure-')) : undefined
const options = {
  ...sessionOptions('cpu', Number(threads)),
  ...(profileDir ? { enableProfiling: true, profileFilePrefix: join(profileDir, 'profile') } : {}),
  ...(prepacking ? {} : { extra: { session: { disable_prepacking: '1' } } }),
}
const cpu = process.cpuUsage()
const created = performance.now()
const session = await ort.InferenceSession.create(model, options)
const createMs = performance.now() - created
const createCpu = process.cpuUsage(cpu)
const feeds = randomFeeds(session, dims, 0)
if (profileDir) {
  await session.run(feeds)
  session.endProfiling()
  const events = JSON.parse(await readFile(join(profileDir, (await readdir(profileDir))[0]), 'utf8')) as { cat: string; args: Record<string, string> }[]
  const nodes = events.filter(e => e.cat === 'Node').map(e => e.args)
  const before = Number(nodes[0].mem_bytes_in_use) - Number(nodes[0].mem_in_use_delta)
  console.log(JSON.stringify({ arena_peak_bytes: Math.max(...nodes.map(a => Number(a.mem_in_use_peak))) - before }))
  await rm(profileDir, { recursive: true, force: true })
  process.exit(0)
}
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
console.log(JSON.stringify({ best_ms: Math.min(...times.slice(1)), baseline_kb: baseline, peak_kb: await status('VmHWM'), create_ms: createMs, create_cpu_ms: (createCpu.user + createCpu.system) / 1000 }))
