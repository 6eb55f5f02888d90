// torch.onnx-style names for the tiny models, so that code which finds layers by name (LoRA) sees what it
// sees in an optimum export: nodes are named by module scope ("/down_blocks.1/attentions.0/proj_in/MatMul"),
// Conv and Gemm weights keep their parameter names ("down_blocks.0.resnets.0.conv1.weight"), and the
// transposed weights of 3-D Linear layers are anonymous ("onnx::MatMul_123"), as torch's constant folding leaves them.
import type { GraphBuilder } from '../../onnx/builder.js'

/** "down_blocks.1.attentions.0.to_out.0" → "/down_blocks.1/attentions.0/to_out.0": indices stay on their list's name. */
export function scopeOf(modulePath: string): string {
  return '/' + modulePath.replace(/\.(?!\d+(\.|$))/g, '/')
}

/** Per graph, so that building the same model twice gives the same names. */
const anonymous = new WeakMap<GraphBuilder, number>()

/**
 * Runs `build` (which appends nodes to `g`) and names what it appended as module `path`. The i-th node that
 * carries a weight (Conv, Gemm or MatMul with an initializer) belongs to submodule `children[i]`; a bias Add
 * right after a MatMul belongs to the same submodule.
 */
export function scoped(g: GraphBuilder, path: string, build: () => string, children: string[] = []): string {
  const first = g.nodes.length
  const result = build()
  const initializers = new Map(g.initializers.map(t => [t.name, t]))
  const counts = new Map<string, number>()
  const moduleOf = new Map<string, string>() // value name → module path of the layer that produced it
  let weightIndex = 0
  for (const node of g.nodes.slice(first)) {
    const op = node.opType ?? ''
    const weight = initializers.get(node.input?.[1] ?? '')
    let module = path
    if (weight && ['Conv', 'Gemm', 'MatMul'].includes(op)) {
      module = children.length ? `${path}.${children[weightIndex++]}` : path
      const n = anonymous.get(g) ?? 0
      if (op === 'MatMul') anonymous.set(g, n + 1)
      weight.name = op === 'MatMul' ? `onnx::MatMul_${n}` : `${module}.weight`
      node.input![1] = weight.name
      const bias = initializers.get(node.input?.[2] ?? '')
      if (bias) node.input![2] = bias.name = `${module}.bias`
      moduleOf.set(node.output![0], module)
    } else if (op === 'Add' && weight && moduleOf.has(node.input![0])) {
      module = moduleOf.get(node.input![0])!
      node.input![1] = weight.name = `${module}.bias`
    }
    const scope = scopeOf(module)
    const n = counts.get(`${scope}/${op}`) ?? 0
    counts.set(`${scope}/${op}`, n + 1)
    node.name = `${scope}/${op}${n ? `_${n}` : ''}`
  }
  return result
}
