// LoRA applied to an ONNX UNet at load time, without a second copy of its weights: each adapted Conv, Gemm or
// MatMul gets a low-rank branch beside it, y = W·x + s·(α/r)·up·(down·x), with s the model input `lora_scale`.
// The base weights stay in their external data file (hard-linked beside the new model, never read).
//
// Key names. A LoRA file names layers by their diffusers module path, in one of three spellings:
//   kohya (A1111):  lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight / .lora_up.weight / .alpha
//   diffusers:      unet.down_blocks.1.attentions.0.proj_in.lora.down.weight / .lora.up.weight
//   peft:           [unet.]down_blocks.1.attentions.0.proj_in.lora_A.weight / .lora_B.weight
// An optimum (torch.onnx) export keeps the module path in two places: Conv and Gemm weights keep their parameter
// names ("down_blocks.0.resnets.0.conv1.weight"); 3-D Linear layers become MatMul nodes whose weights are
// anonymous ("onnx::MatMul_123", transposed by constant folding) but whose node names carry the module scope
// ("/down_blocks.1/attentions.0/proj_in/MatMul"). Both are reduced to the kohya spelling (dots and slashes → "_")
// and matched; a matched pair must also fit the weight's shape. torch.onnx also keeps one initializer per set of
// equal tensors and feeds the other layers an Identity of it (_jit_pass_onnx_deduplicate_initializers, eval
// exports), so a weight input may be such an Identity's output: it still carries the layer's own name, which is
// what names the module. Checked against a torch 1.13 export of an SDXL-shaped module tree, all LoRA spellings
// (samples/export/check_lora_naming.py); keys it cannot place are reported, never guessed.
import { createHash } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { basename, join, resolve } from 'node:path'
import { cacheRoot } from '../cache.js'
import { cachedFolder } from '../fsutil.js'
import { UserError } from '../errors.js'
import { attribute, tensor, valueInfo, type AttrValue } from '../onnx/builder.js'
import { DataType, dims, externalDataFiles, graphOf, onnx, readModel, toNumber, writeModel, writeModelWithExternalData, type AttributeProto, type LoadedModel, type NodeProto, type TensorProto } from '../onnx/proto.js'
import { floatToHalf, floatValues, readSafetensors, type NamedTensor } from './safetensors.js'

export const LORA_SCALE = 'lora_scale'

export interface LoraLayer {
  down: NamedTensor
  up: NamedTensor
  /** the kohya alpha; the branch is scaled by alpha / rank (1 when absent) */
  alpha?: number
}

/** The layer (kohya spelling) and part a key names, or null when it is not a UNet LoRA weight (text encoders…). */
export function loraKey(key: string): { module: string; role: 'down' | 'up' | 'alpha' } | null {
  if (/^(lora_te|text_encoder|te_)/.test(key)) return null
  const kohya = /^lora_unet_(.+)\.(lora_down\.weight|lora_up\.weight|alpha)$/.exec(key)
  const named = /^(?:base_model\.model\.)?(?:unet\.)?(.+?)\.(lora\.down|lora\.up|lora_A|lora_B|lora_down|lora_up)\.weight$/.exec(key)
  const match = kohya ?? named
  if (!match) return null
  return { module: flat(match[1]), role: match[2] === 'alpha' ? 'alpha' : /down|A/.test(match[2]) ? 'down' : 'up' }
}

/** The layers of a LoRA file; keys that are not UNet LoRA weights, and incomplete layers, are listed in `ignored`. */
export function parseLora(tensors: Map<string, NamedTensor>): { layers: Map<string, LoraLayer>; ignored: string[] } {
  const parts = new Map<string, Partial<LoraLayer>>()
  const ignored: string[] = []
  for (const [key, value] of tensors) {
    const parsed = loraKey(key)
    if (!parsed) {
      ignored.push(key)
      continue
    }
    const part = parts.get(parsed.module) ?? {}
    if (parsed.role === 'alpha') part.alpha = floatValues(value)[0]
    else part[parsed.role] = value
    parts.set(parsed.module, part)
  }
  const layers = new Map<string, LoraLayer>()
  for (const [module, part] of parts) {
    if (part.down && part.up) layers.set(module, part as LoraLayer)
    else ignored.push(`${module} (no ${part.down ? 'up' : 'down'} weight)`)
  }
  return { layers, ignored }
}

/** The kohya spelling of a module path: "down_blocks.1/attentions.0" → "down_blocks_1_attentions_0". */
const flat = (path: string) => path.replace(/^\/+/, '').replace(/[./]/g, '_')

export interface LoraTarget {
  node: NodeProto
  /** the module path, from the weight's parameter name or the node's scope */
  module: string
  weight: TensorProto
}

/**
 * Conv, Gemm and MatMul nodes whose weight (input 1) is an initializer, or an Identity of one (a deduplicated
 * weight), keyed by the kohya spelling of their module.
 */
export function loraTargets(model: LoadedModel['model']): Map<string, LoraTarget> {
  const graph = graphOf(model)
  // each initializer under every name it is read by: its own, and the outputs of Identity nodes of it
  const weights = new Map(graph.initializer.map(t => [t.name, t as TensorProto]))
  for (const node of graph.node as NodeProto[]) {
    const source = weights.get(node.input[0] ?? '')
    if (node.opType === 'Identity' && source) weights.set(node.output[0], source)
  }
  const targets = new Map<string, LoraTarget>()
  for (const node of graph.node as NodeProto[]) {
    const name = node.input[1] ?? ''
    const weight = weights.get(name)
    if (!weight || !['Conv', 'Gemm', 'MatMul'].includes(node.opType ?? '')) continue
    const module = name.endsWith('.weight')
      ? name.slice(0, -'.weight'.length)
      : (node.name ?? '').replace(/^\//, '').split('/').slice(0, -1).join('.')
    if (module) targets.set(flat(module), { node, module, weight })
  }
  return targets
}

export interface LoraReport {
  /** module paths that got a branch */
  applied: string[]
  /** LoRA layers no node matched (kohya spelling) and keys that are not UNet LoRA weights */
  unmatched: string[]
  /** layers whose names matched but whose shapes do not fit the weight */
  mismatched: string[]
}

const attr = (node: NodeProto, name: string) => node.attribute.find(a => a.name === name)

/**
 * Adds the LoRA branches to `unet` (mutated) and a float32 scalar input `lora_scale`. The branch weights become
 * initializers in the file's dtype and layout; Cast and Transpose nodes bring them to the layer's (onnxruntime
 * folds these constants when it loads the model). Pass the model to writeLoraUnet to store them externally.
 */
export function addLoraBranches(unet: LoadedModel, layers: Map<string, LoraLayer>): LoraReport {
  const graph = graphOf(unet.model)
  const targets = loraTargets(unet.model)
  const report: LoraReport = { applied: [], unmatched: [], mismatched: [] }
  if (!graph.input.some(i => i.name === LORA_SCALE)) graph.input.push(valueInfo(LORA_SCALE, 'float32', []))
  const after = new Map<NodeProto, NodeProto[]>() // each branch goes right after its layer, keeping the order valid
  const initializers: TensorProto[] = []
  for (const [key, layer] of layers) {
    const target = targets.get(key)
    if (!target) {
      report.unmatched.push(key)
      continue
    }
    const branch = loraBranch(target, layer, initializers)
    if (typeof branch === 'string') {
      report.mismatched.push(`${target.module}: ${branch}`)
      continue
    }
    const output = target.node.output[0]
    target.node.output[0] = `${output}/lora_base`
    after.set(target.node, [...branch, node('Add', [`${output}/lora_base`, `${target.module}/lora_out`], [output])])
    report.applied.push(target.module)
  }
  graph.node = (graph.node as NodeProto[]).flatMap(n => [n, ...(after.get(n) ?? [])])
  graph.initializer.push(...initializers)
  return report
}

function node(opType: string, input: string[], output: string[], attributes: Record<string, AttrValue> = {}): NodeProto {
  return new onnx.NodeProto({
    opType, input, output, name: `${output[0]}/${opType}`,
    attribute: Object.entries(attributes).map(([key, value]) => attribute(key, value)),
  })
}

/** The branch nodes for one layer (ending in `${module}/lora_out`), or why its shapes do not fit. */
function loraBranch({ node: base, module, weight }: LoraTarget, layer: LoraLayer, initializers: TensorProto[]): NodeProto[] | string {
  const w = dims(weight)
  const [rank, downIn, ...downKernel] = layer.down.shape
  const [upOut, upRank, ...upKernel] = layer.up.shape
  const misfit = `weight [${w}] vs lora_down [${layer.down.shape}], lora_up [${layer.up.shape}]`
  if (upRank !== rank || upKernel.some(d => d !== 1)) return misfit
  const at = (suffix: string) => `${module}/lora_${suffix}`
  const nodes: NodeProto[] = []
  // weights: stored as in the file, cast to the layer's float type
  const type = weight.dataType === DataType.FLOAT16 ? DataType.FLOAT16 : DataType.FLOAT
  const constant = (name: string, t: NamedTensor, shape: number[]) => {
    const stored = t.dtype === 'F16' ? DataType.FLOAT16 : DataType.FLOAT
    initializers.push(new onnx.TensorProto({ name: at(name), dataType: stored, dims: shape, rawData: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) }))
    if (stored === type) return at(name)
    nodes.push(node('Cast', [at(name)], [at(`${name}_cast`)], { to: type }))
    return at(`${name}_cast`)
  }
  // y += lora_scale · (α/r) · up(down(x))
  const factor = (layer.alpha ?? rank) / rank
  initializers.push(tensor(at('alpha'), type === DataType.FLOAT16 ? 'float16' : 'float32', [], type === DataType.FLOAT16 ? [floatToHalf(factor)] : [factor]))
  const scale = type === DataType.FLOAT16 ? [node('Cast', [LORA_SCALE], [at('scale_input')], { to: type })] : []
  const scaled = (upOutput: string) => [
    ...scale,
    node('Mul', [scale.length ? at('scale_input') : LORA_SCALE, at('alpha')], [at('scale')]),
    node('Mul', [upOutput, at('scale')], [at('out')]),
  ]
  const x = base.input[0]
  if (base.opType === 'Conv') {
    const group = toNumber(attr(base, 'group')?.i ?? 1)
    const [out, inChannels, kh, kw] = w
    const kernel = downKernel.length ? downKernel : [1, 1]
    if (group !== 1 || upOut !== out || downIn !== inChannels || kernel[0] !== kh || kernel[1] !== kw) return misfit
    const down = constant('down', layer.down, [rank, inChannels, kh, kw])
    const up = constant('up', layer.up, [out, rank, 1, 1])
    const kept = Object.fromEntries((base.attribute as AttributeProto[])
      .filter(a => ['strides', 'pads', 'dilations', 'kernel_shape'].includes(a.name ?? ''))
      .map(a => [a.name ?? '', a.ints.map(toNumber)]))
    return [...nodes, node('Conv', [x, down], [at('down_out')], kept), node('Conv', [at('down_out'), up], [at('up_out')]), ...scaled(at('up_out'))]
  }
  // MatMul: weight [in, out]; Gemm: [out, in] when transB = 1. The branch is x·downᵀ·upᵀ either way.
  const transB = base.opType === 'Gemm' && toNumber(attr(base, 'transB')?.i ?? 0) === 1
  if (base.opType === 'Gemm' && (toNumber(attr(base, 'transA')?.i ?? 0) !== 0 || (attr(base, 'alpha')?.f ?? 1) !== 1)) return 'Gemm with transA or alpha ≠ 1'
  const [inFeatures, outFeatures] = transB ? [w[1], w[0]] : w
  if (w.length !== 2 || downIn !== inFeatures || upOut !== outFeatures || downKernel.some(d => d !== 1)) return misfit
  const downT = node('Transpose', [constant('down', layer.down, [rank, inFeatures])], [at('down_t')], { perm: [1, 0] })
  const upT = node('Transpose', [constant('up', layer.up, [outFeatures, rank])], [at('up_t')], { perm: [1, 0] })
  return [...nodes, downT, upT, node('MatMul', [x, at('down_t')], [at('down_out')]), node('MatMul', [at('down_out'), at('up_t')], [at('up_out')]), ...scaled(at('up_out'))]
}

/**
 * Writes the UNet with LoRA branches to `out`: the branch weights go to `${out}_data`, the base weights stay in
 * the UNet's own external file (hard-linked beside `out`). Returns what was applied.
 */
export async function writeLoraUnet(unetPath: string, loraPath: string, out: string): Promise<LoraReport> {
  const unet = await readModel(unetPath)
  const { layers, ignored } = parseLora(await readSafetensors(loraPath))
  const report = addLoraBranches(unet, layers)
  report.unmatched.push(...ignored)
  if (report.applied.length === 0) throw new UserError(`no layer of ${loraPath} matches a layer of ${unetPath} (first unmatched: ${report.unmatched.slice(0, 3).join(', ')})`)
  const baseFiles = externalDataFiles(unet).map(file => basename(file))
  if (baseFiles.includes(`${basename(out)}_data`)) throw new UserError(`${out}: choose another file name than the UNet's (its data file ${basename(out)}_data would clash)`)
  await writeModel(unet, out) // links the base weights' file beside `out` and points the model at it
  await writeModelWithExternalData(unet.model, out) // the branch weights go to `${out}_data`
  return report
}

/**
 * Where the LoRA'd UNet of (unet, lora) is cached: keyed by both files' paths, sizes and modification times.
 * `building` is called before it is built (not when it is found in the cache).
 */
export async function cachedLoraUnet(unetPath: string, loraPath: string, cacheDir = cacheRoot(), building?: () => void): Promise<{ path: string; report?: LoraReport }> {
  const hash = createHash('sha256')
  for (const file of [unetPath, loraPath]) {
    const info = await stat(file)
    hash.update(`${resolve(file)}|${info.size}|${info.mtimeMs}\n`)
  }
  const dir = join(cacheDir, `lora-unet-${hash.digest('hex').slice(0, 16)}`)
  const file = basename(loraPath).replace(/\.safetensors$/, '') + '.onnx'
  const path = join(dir, file)
  if (await stat(path).then(() => true, () => false)) return { path }
  // written in a temporary folder and renamed: an interrupted write never leaves a broken entry
  building?.()
  let report: LoraReport | undefined
  await cachedFolder(dir, async tmp => { report = await writeLoraUnet(unetPath, loraPath, join(tmp, file)) })
  return { path, report }
}
