// `npm run bench`: a small UNet-shaped network (diffusers-style blocks, built in PyTorch and exported with
// torch.onnx so both sides run identical weights) at two sizes. For each: onnxruntime forward vs
// forward+gradient (our autodiff), and PyTorch forward vs forward+backward (autograd w.r.t. the sample),
// time (best of RUNS: the machine may be shared) and peak memory (VmHWM of a child process per measurement), printed as ratios;
// and our gradient with its forward recomputed in RECOMPUTE segments (--recompute), against the one that keeps it,
// each beside the memory estimator's prediction (estimate.ts: onnxruntime's planner modelled on the graph).
// Options: --threads N (default 1, the same for both), --runs N (default 7), --python PATH.
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { activationPeak } from '../../src/guidance/estimate.js'
import { writeGradientModel } from '../../src/onnx/autodiff.js'
import { graphOf, readModel } from '../../src/onnx/proto.js'
import { ort } from '../../src/onnx/session.js'
import { option } from '../args.js'

const run = promisify(execFile)
const here = dirname(fileURLToPath(import.meta.url))
const repo = resolve(here, '../..')
const threads = option('threads', '1')
const runs = option('runs', '7')
const python = option('python', process.env.PYTHON ?? '/usr/bin/python3')
const SIZES = [{ channels: 32, size: 32 }, { channels: 64, size: 64 }]
const RECOMPUTE = 4

interface Measurement { best_ms: number; baseline_kb: number; peak_kb: number }

async function json(command: string, args: string[]): Promise<Measurement> {
  // BLAS and OpenMP pools sized like onnxruntime's intra-op pool
  const env = { ...process.env, OMP_NUM_THREADS: threads, OPENBLAS_NUM_THREADS: threads, MKL_NUM_THREADS: threads }
  const { stdout } = await run(command, args, { cwd: repo, env, maxBuffer: 1 << 24 })
  return JSON.parse(stdout.trim().split('\n').pop()!)
}

const ortMeasure = (model: string) => json(process.execPath, ['--import', 'tsx', join(here, 'measure.ts'), model, runs, threads])
const torchMeasure = (mode: string, channels: number, size: number) =>
  json(python, [join(here, 'torch_unet.py'), 'measure', '--channels', String(channels), '--size', String(size), '--mode', mode, '--runs', runs, '--threads', threads])

async function floats(path: string): Promise<Float32Array> {
  const bytes = await readFile(path)
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
}

/** max |ours − torch| / max |torch| for d loss / d sample on the same inputs. */
async function agreement(dir: string, size: number): Promise<number> {
  const session = await ort.InferenceSession.create(join(dir, 'grad.onnx'))
  const out = await session.run({
    sample: new ort.Tensor('float32', await floats(join(dir, 'sample.bin')), [1, 4, size, size]),
    encoder_hidden_states: new ort.Tensor('float32', await floats(join(dir, 'context.bin')), [1, 8, 32]),
  })
  await session.release()
  const ours = out.sample_grad.data as Float32Array
  const reference = await floats(join(dir, 'grad.bin'))
  let difference = 0, scale = 0
  reference.forEach((r, i) => { difference = Math.max(difference, Math.abs(ours[i] - r)); scale = Math.max(scale, Math.abs(r)) })
  return difference / scale
}

const mb = (kb: number) => `${(kb / 1024).toFixed(0)} MB`
/** The estimator's activation peak of a model file, in kB like the measurements. */
const estimatedKb = async (model: string) => activationPeak(graphOf((await readModel(model)).model)).peak / 1024
const working = (m: Measurement) => m.peak_kb - m.baseline_kb

async function main() {
  try {
    await run(python, ['-c', 'import torch'])
  } catch {
    console.error(`PyTorch is not importable with ${python}; install Debian's python3-torch or pass --python`)
    process.exit(1)
  }
  const root = await mkdtemp(join(tmpdir(), 'lookahead-bench-'))
  console.log(`threads ${threads}, best of ${runs} runs; memory: peak RSS of a process per measurement, and the peak above the RSS after loading ("working")\n`)
  try {
    for (const { channels, size } of SIZES) {
      const dir = join(root, `c${channels}-s${size}`)
      await run('mkdir', ['-p', dir])
      await run(python, [join(here, 'torch_unet.py'), 'export', '--channels', String(channels), '--size', String(size), '--dir', dir], { cwd: repo })
      const start = performance.now()
      const summary = await writeGradientModel(join(dir, 'model.onnx'), join(dir, 'grad.onnx'), { wrt: ['sample'] })
      const differentiateMs = performance.now() - start
      await writeGradientModel(join(dir, 'model.onnx'), join(dir, 'grad-recompute.onnx'), { wrt: ['sample'], segments: RECOMPUTE })
      const error = await agreement(dir, size)
      const ortForward = await ortMeasure(join(dir, 'model.onnx'))
      const ortGradient = await ortMeasure(join(dir, 'grad.onnx'))
      const ortRecomputed = await ortMeasure(join(dir, 'grad-recompute.onnx'))
      const torchForward = await torchMeasure('forward', channels, size)
      const torchBackward = await torchMeasure('backward', channels, size)
      console.log(`UNet-shaped, ${channels} channels, latent ${size}×${size} (${summary.nodes.forward} exported nodes → ${summary.nodes.gradient} with the gradient, differentiated in ${differentiateMs.toFixed(0)} ms; gradient vs torch autograd: max rel. difference ${error.toExponential(1)})`)
      const row = (name: string, m: Measurement) => console.log(`  ${name.padEnd(30)} ${m.best_ms.toFixed(1).padStart(9)} ms   peak ${mb(m.peak_kb).padStart(8)}   working ${mb(working(m)).padStart(8)}`)
      row('onnxruntime forward', ortForward)
      row('onnxruntime forward+gradient', ortGradient)
      row(`  recomputed in ${RECOMPUTE} segments`, ortRecomputed)
      row('PyTorch forward', torchForward)
      row('PyTorch forward+backward', torchBackward)
      console.log(`  gradient step / our forward:          time ${(ortGradient.best_ms / ortForward.best_ms).toFixed(2)}×  (goal ≤ 3)`)
      const [keptKb, recomputedKb] = [await estimatedKb(join(dir, 'grad.onnx')), await estimatedKb(join(dir, 'grad-recompute.onnx'))]
      console.log(`  estimated activations (planner model) vs measured working memory: kept ${mb(keptKb)} vs ${mb(working(ortGradient))}, recomputed ${mb(recomputedKb)} vs ${mb(working(ortRecomputed))}`)
      console.log(`  recomputed / kept gradient step:     time ${(ortRecomputed.best_ms / ortGradient.best_ms).toFixed(2)}×  working memory ${(working(ortRecomputed) / working(ortGradient)).toFixed(2)}×  (${(ortRecomputed.best_ms / ortForward.best_ms).toFixed(2)}× our forward)`)
      console.log(`  gradient step / PyTorch fwd+bwd:      time ${(ortGradient.best_ms / torchBackward.best_ms).toFixed(2)}×  working memory ${(working(ortGradient) / working(torchBackward)).toFixed(2)}×  peak ${(ortGradient.peak_kb / torchBackward.peak_kb).toFixed(2)}×  (goal ≤ 1)\n`)
    }
  } finally {
    await rm(root, { recursive: true, force: true })
  }
}

await main()
