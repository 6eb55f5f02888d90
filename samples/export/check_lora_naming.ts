// Second half of the dev check in check_lora_naming.py (run that first): applies each LoRA spelling it wrote to its
// torch.onnx export with lora.ts, runs the result on onnxruntime at each lora_scale, and compares with torch's
// fused-weight output. Exits non-zero when a layer is left unmatched or the outputs differ.
//   npx tsx samples/export/check_lora_naming.ts OUT
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LORA_SCALE, writeLoraUnet } from '../../src/diffusion/lora.js'
import { closeSessions, openSession, ort } from '../../src/onnx/session.js'

interface Expected {
  inputs: Record<string, { type: 'int64' | 'float32'; dims: number[]; data: number[] }>
  base: number[]
  fused: Record<string, number[]>
  layers: string[]
  torch: string
  opset: number
}

const out = process.argv[2]
if (!out) {
  console.error('usage: npx tsx samples/export/check_lora_naming.ts OUT   (OUT written by check_lora_naming.py)')
  process.exit(2)
}
const expected = JSON.parse(await readFile(join(out, 'expected.json'), 'utf8')) as Expected
const feeds = Object.fromEntries(Object.entries(expected.inputs).map(([name, { type, dims, data }]) =>
  [name, type === 'int64' ? new ort.Tensor('int64', BigInt64Array.from(data, BigInt), dims) : new ort.Tensor('float32', Float32Array.from(data), dims)]))
const maxDifference = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0)
const unet = join(out, 'unet', 'model.onnx')
let failed = false
console.log(`torch ${expected.torch}, opset ${expected.opset}: ${expected.layers.length} LoRA layers`)
for (const spelling of ['kohya', 'diffusers', 'peft']) {
  const path = join(out, spelling, 'model.onnx')
  const report = await writeLoraUnet(unet, join(out, `lora-${spelling}.safetensors`), path)
  const session = await openSession(path)
  const run = async (scale: number) => (await session.run({ ...feeds, [LORA_SCALE]: new ort.Tensor('float32', Float32Array.of(scale), []) })).out_sample.data as Float32Array
  const base = maxDifference(await run(0), expected.base)
  const fused = Object.entries(expected.fused).map(([scale, values]) => [scale, values, maxDifference(values, expected.base)] as const)
  const differences = await Promise.all(fused.map(async ([scale, values]) => maxDifference(await run(Number(scale)), values)))
  console.log(`${spelling}: ${report.applied.length}/${expected.layers.length} layers matched, ${report.unmatched.length} unmatched, ${report.mismatched.length} mismatched`)
  for (const line of [...report.unmatched.map(u => `unmatched ${u}`), ...report.mismatched.map(m => `mismatched ${m}`)]) console.log(`  ${line}`)
  console.log(`  max |onnx − torch|: base (lora_scale 0) ${base.toExponential(2)}; ${fused.map(([scale, , change], i) => `lora_scale ${scale} ${differences[i].toExponential(2)} (the LoRA moves the output by ${change.toFixed(3)})`).join('; ')}`)
  failed ||= report.applied.length !== expected.layers.length || [base, ...differences].some(d => d > 1e-4)
}
await closeSessions()
process.exit(failed ? 1 : 0)
