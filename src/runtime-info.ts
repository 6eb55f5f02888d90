// What `lookahead info` shows: only the runtime and the folders, so that it loads onnxruntime and not the engine.
import { cacheRoot } from './cache.js'
import { cudaInstalled, ort } from './onnx/session.js'

/** What this installation can run on. */
export function runtimeInfo() {
  return {
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    providers: ['cpu', ...(cudaInstalled() ? ['cuda'] : [])],
    models: process.env.LOOKAHEAD_MODELS || '(not set: pass --models DIR or set LOOKAHEAD_MODELS)',
    cache: cacheRoot(),
  }
}
