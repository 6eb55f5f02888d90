// The Python that the project's torch and onnx scripts run in (samples, benches, tests; never the CLI): $PYTHON,
// else Debian's /usr/bin/python3, where python3-torch, python3-torchvision and python3-onnx install.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

export const python = process.env.PYTHON || '/usr/bin/python3'

/**
 * Why `interpreter` cannot import `modules`, in one line for a skip message (what to install, or $PYTHON), or
 * undefined where it can.
 */
export async function cannotImport(modules: string[], interpreter = python): Promise<string | undefined> {
  try {
    await promisify(execFile)(interpreter, ['-c', `import ${modules.join(', ')}`])
    return undefined
  } catch {
    const names = (prefix: string) => modules.map(m => `${prefix}${m}`).join(' and ')
    return `${interpreter} cannot import ${names('')} (install Debian's ${names('python3-')}, or set PYTHON)`
  }
}
