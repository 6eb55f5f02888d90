// Runs sdxl_fixture.py (beside this file) from TypeScript, for the tests and benches that use the torch-exported
// SDXL fixture, in the samples' Python (samples/python.ts: $PYTHON, else Debian's /usr/bin/python3).
import { execFile } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { cannotImport, python } from '../../python.js'

const run = promisify(execFile)
const script = join(dirname(fileURLToPath(import.meta.url)), 'sdxl_fixture.py')

export interface FixtureOptions {
  depth?: 'tiny' | 'real'
  width?: number
  opset?: 14 | 17
  threshold?: 100 | 1024
  /** also write reference.json: torch autograd's LCM-preview loss and gradient */
  reference?: boolean
}

/** Why the fixture cannot be made here (torch or onnx not importable), or undefined where it can. */
export const torchMissing = () => cannotImport(['torch', 'onnx'])

/** Writes the fixture's models folder to `out` (which must not exist); returns the script's summary line. */
export async function writeTorchFixture(out: string, options: FixtureOptions = {}): Promise<string> {
  const args = [script, out, '--depth', options.depth ?? 'real', '--width', String(options.width ?? 32),
    '--opset', String(options.opset ?? 14), '--threshold', String(options.threshold ?? 100), ...(options.reference ? ['--reference'] : [])]
  const { stdout } = await run(python, args, { maxBuffer: 1 << 26 })
  return stdout.trim().split('\n').pop() ?? ''
}
