// `npm run bench:layouts`: the cost of opening a model whose weights are symlinks (the Hugging Face cache layout;
// a derived model in a cache on another file system). onnxruntime refuses those by path, so openSession loads them
// from the graph's bytes with the data's real folder (session.ts); this compares that with opening a plain folder
// by path: session creation time, and RSS after creation and after one run, each in a process of its own.
// Usage: npx tsx samples/bench/layouts.ts [--mb 512]
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, rename, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { GraphBuilder } from '../../src/onnx/builder.js'
import { writeModelWithExternalData } from '../../src/onnx/proto.js'
import { openSession, ort } from '../../src/onnx/session.js'

const SIDE = 2048
const MB = 2 ** 20

/** A chain of [SIDE, SIDE] MatMuls holding about `mb` MiB of weights in external data. */
function weightedChain(mb: number) {
  const g = new GraphBuilder('chain', 17)
  let x = g.input('x', 'float32', [1, SIDE])
  for (let i = 0; i < Math.max(1, Math.round((mb * MB) / (SIDE * SIDE * 4))); i++) {
    x = g.op('Tanh', [g.op('MatMul', [x, g.constant(Float32Array.from({ length: SIDE * SIDE }, (_, j) => Math.sin(i + j) / SIDE), [SIDE, SIDE])])])
  }
  g.outputAs(x, 'y', 'float32', [1, SIDE])
  return g.build()
}

if (process.argv[2] === '--child') {
  const began = performance.now()
  const session = await openSession(process.argv[3], { threads: 1 })
  const createMs = performance.now() - began
  const afterCreate = process.memoryUsage().rss
  await session.run({ x: new ort.Tensor('float32', new Float32Array(SIDE).fill(0.5), [1, SIDE]) })
  console.log(JSON.stringify({ createMs, afterCreate, afterRun: process.memoryUsage().rss }))
} else {
  const i = process.argv.indexOf('--mb')
  const mb = i >= 0 ? Number(process.argv[i + 1]) : 512
  const dir = await mkdtemp(join(tmpdir(), 'lookahead-layouts-'))
  try {
    const plain = join(dir, 'plain', 'model.onnx')
    await writeModelWithExternalData(weightedChain(mb), plain)
    const linked = join(dir, 'hub', 'snapshots', 'main', 'model.onnx')
    await writeModelWithExternalData(weightedChain(mb), linked)
    await mkdir(join(dir, 'hub', 'blobs'), { recursive: true })
    await rename(`${linked}_data`, join(dir, 'hub', 'blobs', 'sha256'))
    await symlink(join(dir, 'hub', 'blobs', 'sha256'), `${linked}_data`)
    console.log(`${mb} MiB of weights; best of 3 fresh processes each`)
    for (const [label, path] of [['plain folder (by path)', plain], ['symlinked weights (from bytes)', linked]]) {
      const runs: { createMs: number; afterCreate: number; afterRun: number }[] = []
      for (let r = 0; r < 3; r++) {
        const { stdout } = await promisify(execFile)(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--child', path])
        runs.push(JSON.parse(stdout) as { createMs: number; afterCreate: number; afterRun: number })
      }
      const best = (key: 'createMs' | 'afterCreate' | 'afterRun') => Math.min(...runs.map(r => r[key]))
      console.log(`${label.padEnd(32)} create ${best('createMs').toFixed(0).padStart(6)} ms   RSS after create ${(best('afterCreate') / MB).toFixed(0).padStart(5)} MiB   after a run ${(best('afterRun') / MB).toFixed(0).padStart(5)} MiB`)
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}
