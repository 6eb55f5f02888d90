// The programmatic API: scripts import the toolkit from the package root.
export { UserError, check } from './errors.js'
export { cachedFolder, writeFileAtomic } from './fsutil.js'
export { cacheRoot, listCache, cleanCache, type CacheEntry } from './cache.js'
export { cachedSession, type CacheSettings } from './derived.js'
export { runtimeInfo } from './runtime-info.js'
export { SETTINGS, GUIDE_NAMES, parseLossSpec, defaultOf, type Setting, type SettingKey, type WorldKind, type GuideName } from './cli/settings.js'

// ONNX: model I/O, graph building, composition, autodiff, sessions
export * from './onnx/proto.js'
export * from './onnx/builder.js'
export * from './onnx/compose.js'
export * from './onnx/session.js'
export { differentiate, type DifferentiateOptions } from './onnx/autodiff.js'
export { gradcheck, type GradCheckOptions, type GradCheckResult } from './onnx/gradcheck.js'
export { inferShapes } from './onnx/shapes.js'
export * as layers from './onnx/layers.js'

// images
export * from './image/image.js'
export * from './image/animation.js'
// pictures: the compare report page, per-iteration previews
export * from './report/report.js'
export * from './report/iterations.js'
export * from './report/stats.js'
export * from './report/chart.js'

// SDXL on onnxruntime
export * from './diffusion/tokenizer.js'
export * from './diffusion/schedulers.js'
export * from './diffusion/conditioning.js'
export * from './diffusion/pipeline.js'
export * from './diffusion/decoders.js'
export * from './diffusion/lora.js'
export * from './diffusion/safetensors.js'
export * from './diffusion/models-folder.js'
export { writeTinyModels, GENERATIONS, type Generation } from './diffusion/tiny/index.js'

// the lookahead guidance engine
export * from './guidance/guide.js'
export * from './guidance/preview.js'
export * from './guidance/previews.js'
export * from './guidance/best-of.js'
export * from './guidance/update.js'
export * from './guidance/engine.js'
export * from './guidance/estimate.js'
export * from './guidance/memory.js'
export * from './guidance/figure.js'

// the demo world
export * from './world/world.js'
export * from './world/models.js'
export * from './world/mixture.js'
export * from './world/codec.js'

