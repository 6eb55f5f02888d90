// `lookahead`'s start-up: the median time to the first output byte (stdout or stderr) and to the exit, of bare node
// and of the built CLI's --version, --help, COMMAND --help, info and one real command (grad on a three-node model),
// interleaved run by run so that a shared machine's load falls on all alike. Build first (`npm run build`: tsc
// and the help table; after a bare tsc the help goes through oclif, as this then shows).
// Usage: npx tsx samples/bench/startup.ts [--runs 15]
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { GraphBuilder } from '../../src/onnx/builder.js'
import { writeModel } from '../../src/onnx/proto.js'

const i = process.argv.indexOf('--runs')
const runs = i >= 0 ? Number(process.argv[i + 1]) : 15
const bin = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'run.js')
const work = await mkdtemp(join(tmpdir(), 'lookahead-startup-'))

/** Milliseconds to the first output and to the exit of one run. */
function once(argv: string[]): Promise<{ first: number; exit: number }> {
  return new Promise((resolve, reject) => {
    const start = performance.now()
    let first = NaN
    const child = spawn(process.execPath, argv, { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] })
    const mark = () => { if (Number.isNaN(first)) first = performance.now() - start }
    child.stdout.on('data', mark)
    child.stderr.on('data', mark)
    child.on('error', reject)
    child.on('close', () => resolve({ first, exit: performance.now() - start }))
  })
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

try {
  const g = new GraphBuilder('tiny', 17)
  const x = g.input('x', 'float32', [2, 3])
  g.outputAs(g.op('ReduceSum', [g.op('Mul', [g.op('Tanh', [x]), x])], { keepdims: 0 }), 'y', 'float32', [])
  await writeModel({ model: g.build(), dir: work }, join(work, 'tiny.onnx'))
  const cases: [string, string[]][] = [
    ['node -e 0', ['-e', 'process.stdout.write(".")']],
    ['--version', [bin, '--version']],
    ['--help', [bin, '--help']],
    ['guide --help', [bin, 'guide', '--help']],
    ['grad --help', [bin, 'grad', '--help']],
    ['help world build', [bin, 'help', 'world', 'build']],
    ['info', [bin, 'info']],
    ['grad tiny.onnx', [bin, 'grad', 'tiny.onnx', '--wrt', 'x', '-o', 'tiny_grad.onnx']],
  ]
  const times = cases.map(() => ({ first: [] as number[], exit: [] as number[] }))
  for (let run = 0; run < runs; run++) {
    for (const [c, [, argv]] of cases.entries()) {
      const t = await once(argv)
      times[c].first.push(t.first)
      times[c].exit.push(t.exit)
    }
  }
  const bare = median(times[0].exit)
  console.log(`median of ${runs} interleaved runs (ms)`)
  console.log(`${'command'.padEnd(18)} ${'first output'.padStart(12)} ${'exit'.padStart(6)} ${'over node'.padStart(10)}`)
  for (const [c, [label]] of cases.entries()) {
    const exit = median(times[c].exit)
    console.log(`${label.padEnd(18)} ${median(times[c].first).toFixed(0).padStart(12)} ${exit.toFixed(0).padStart(6)} ${(exit - bare).toFixed(0).padStart(10)}`)
  }
} finally {
  await rm(work, { recursive: true, force: true })
}
