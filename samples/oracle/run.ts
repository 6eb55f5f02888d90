// `npm run oracle`: our autodiff against torch autograd on torchvision's architectures and common exporter
// patterns (torch_cases.py), at opsets 13, 14 and 17. Prints, per case and opset: match / refused (why) /
// MISMATCH (rel. error), the max relative error, and (forward+gradient)/forward CPU time on one thread in
// onnxruntime (ours) beside torch's (forward+backward)/forward, and ours over torch's absolute; then the counts and medians.
// Options: --cases a,b (default all), --opsets 13,14,17, --repeats N (default 7; 0: no timing),
// --dir DIR (keep the exports there; reused where DIR/manifest.json exists), --profile (per op type,
// onnxruntime's node times of each gradient graph), --python PATH.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { caseFeeds, checkCase, exportCases, manifestExists, median, FLOOR_FACTOR, OPSETS, profileByOp, readManifest, torchPython, TOLERANCE, type Row } from './oracle.js'
import { option } from '../args.js'

const cases = option('cases', '').split(',').filter(Boolean)
const opsets = option('opsets', OPSETS.join(',')).split(',').map(Number)
const repeats = Number(option('repeats', '7'))
const profile = process.argv.includes('--profile')

const python = await torchPython(option('python', process.env.PYTHON ?? '/usr/bin/python3'))
if (!python) {
  console.error('torch and torchvision are not importable; install Debian\'s python3-torch and python3-torchvision or pass --python')
  process.exit(1)
}
const kept = option('dir', '')
const dir = kept || await mkdtemp(join(tmpdir(), 'lookahead-oracle-'))
try {
  const manifest = kept && manifestExists(kept) ? (await readManifest(kept)).filter(c => cases.length === 0 || cases.includes(c.name)) : await exportCases(python, dir, cases, opsets, repeats)
  const ratio = (r?: number) => (r === undefined ? '' : `${r.toFixed(2)}×`)
  console.log(`our autodiff vs torch autograd (float64); rel. error: max |difference| / max |torch's|, ours and float32 torch's; match: ours ≤ ${TOLERANCE}, or ≤ ${FLOOR_FACTOR}× float32 torch's`)
  console.log('time: (forward+gradient)/forward, CPU time, 1 thread, median; ours in onnxruntime, torch\'s autograd; vs torch: our forward+gradient / torch\'s forward+backward\n')
  console.log(`${'case'.padEnd(20)} opset  ${'status'.padEnd(9)} ${'ours'.padStart(8)} ${'torch32'.padStart(8)}  ${'ours'.padStart(7)}  ${'torch'.padStart(7)}  ${'vs torch'.padStart(8)}`)
  const rows: Row[] = []
  for (const entry of manifest) {
    for (const opset of opsets) {
      const row = await checkCase(dir, entry, opset, repeats)
      rows.push(row)
      const error = (e?: number) => (e === undefined ? '' : e.toExponential(1)).padStart(8)
      console.log(`${row.name.padEnd(20)} ${String(opset).padStart(5)}  ${row.status.padEnd(9)} ${error(row.error)} ${error(row.torchError)}  ${ratio(row.ours).padStart(7)}  ${ratio(row.torch).padStart(7)}  ${ratio(row.versusTorch).padStart(8)}${row.reason ? `  ${row.reason}` : ''}`)
      if (profile && row.status === 'match') {
        const ops = await profileByOp(join(dir, entry.opsets![opset].model!.replace(/\.onnx$/, '.grad.onnx')), await caseFeeds(dir, entry), Math.max(repeats, 3))
        const total = ops.reduce((sum, [, ms]) => sum + ms, 0)
        console.log(`    gradient graph, ${total.toFixed(2)} ms of kernels per run: ${ops.slice(0, 8).map(([op, ms]) => `${op} ${((100 * ms) / total).toFixed(0)}%`).join(', ')}`)
      }
    }
  }
  const count = (status: string) => rows.filter(r => r.status === status)
  console.log(`\n${rows.length} case×opset: ${['match', 'refused', 'MISMATCH', 'ERROR', 'no export'].map(s => `${count(s).length} ${s}`).join(', ')}`)
  for (const status of ['refused', 'MISMATCH', 'ERROR']) {
    const names = [...new Set(count(status).map(r => `${r.name}@${r.opset}`))]
    if (names.length) console.log(`  ${status}: ${names.join(' ')}`)
  }
  const timed = rows.filter(r => r.status === 'match' && r.kind === 'architecture' && r.ours !== undefined)
  if (timed.length) {
    const above = timed.filter(r => r.ours! > r.torch!)
    console.log(`matching architectures (${timed.length} case×opset): median (forward+gradient)/forward ours ${ratio(median(timed.map(r => r.ours!)))}, torch ${ratio(median(timed.map(r => r.torch!)))}; our forward+gradient / torch's forward+backward ${ratio(median(timed.map(r => r.versusTorch!)))}; above torch's: ${above.length}${above.length ? ` (${above.map(r => `${r.name}@${r.opset} ${ratio(r.ours)} vs ${ratio(r.torch)}`).join(', ')})` : ''}`)
  }
} finally {
  if (!kept) await rm(dir, { recursive: true, force: true })
}
