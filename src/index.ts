// The programmatic API: scripts import the toolkit from the package root.
import { cudaInstalled, ort } from './onnx/session.js'

export { UserError } from './errors.js'
export * from './onnx/builder.js'
export * from './onnx/proto.js'
export * from './onnx/session.js'

/** What this installation can run on. */
export function runtimeInfo() {
  return {
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    providers: ['cpu', ...(cudaInstalled() ? ['cuda'] : [])],
    models: process.env.LOOKAHEAD_MODELS ?? '(not set: pass --models DIR or set LOOKAHEAD_MODELS)',
  }
}
