import { Args, Flags } from '@oclif/core'
import { LookaheadCommand } from '../src/cli/base.js'
import { checkFileOutput } from '../src/cli/output.js'
import { UserError } from '../src/errors.js'

export default class Grad extends LookaheadCommand {
  static description =
    'Differentiate an ONNX model: write a model with the same inputs that outputs OUTPUT and, for each --wrt input X, ' +
    'X_grad (the gradient of OUTPUT, summed if it is not a scalar). Standard ONNX ops only: runs on stock onnxruntime.'

  static examples = [
    '<%= config.bin %> grad loss.onnx --wrt image -o loss_grad.onnx',
    '<%= config.bin %> grad unet_loss.onnx --wrt sample --of loss -o grad.onnx --check --dim batch=1 --dim height=16 --dim width=16',
    '<%= config.bin %> grad unet_loss.onnx --wrt sample --of loss -o grad.onnx --recompute 4',
  ]

  static args = { model: Args.string({ description: 'the forward ONNX model', required: true }) }

  static flags = {
    wrt: Flags.string({ description: 'a float graph input to differentiate with respect to (repeatable)', required: true, multiple: true }),
    of: Flags.string({ description: 'the output to differentiate (default: the only output)' }),
    output: Flags.string({ char: 'o', description: 'where to write the gradient model', required: true }),
    check: Flags.boolean({ description: 'compare with central finite differences on random inputs and print the worst relative error' }),
    dim: Flags.string({ description: 'a size for a symbolic dim, name=value (repeatable): the model is specialised to it and folded (static shapes); for --check, unset ones are 1 for batch-like names, else 8', multiple: true }),
    directions: Flags.integer({ description: 'random directions per input for --check', default: 3, min: 1 }),
    recompute: Flags.integer({ description: 'hold less: recompute the forward in this many segments during the backward (1: keep all)', default: 1, min: 1 }),
  }

  async run() {
    const { args, flags } = await this.parse(Grad)
    const dims = parseDims(flags.dim ?? [])
    checkFileOutput(flags.output)
    const { device, threads } = await this.runtime(flags)
    // the progress line before the engine loads (a fifth of a second)
    const spinner = this.spinner(`differentiating ${args.model}`)
    const { writeGradientModel } = await import('../src/onnx/autodiff.js')
    const summary = await writeGradientModel(args.model, flags.output, { wrt: flags.wrt, of: flags.of, segments: flags.recompute, dims }).finally(() => spinner.stop())
    if (!summary.scalar) this.warning(`${summary.of} is not a scalar: the gradients are those of the sum of its elements`)
    this.note(`wrote ${summary.output}: ${summary.of} and ${summary.wrt.map(x => `${x}_grad`).join(', ')} (${summary.nodes.forward} forward nodes → ${summary.nodes.gradient} nodes)`)
    if (!flags.check) return summary
    const checking = this.spinner('checking against finite differences')
    const { gradcheck } = await import('../src/onnx/gradcheck.js')
    const check = await gradcheck(args.model, flags.output, { wrt: flags.wrt, of: summary.of, dims, directions: flags.directions, device, threads })
      .finally(() => checking.stop())
    if (!this.jsonEnabled()) {
      for (const input of check.inputs) this.log(`${input.name} [${input.shape.join(', ')}]: relative errors ${input.relativeErrors.map(e => e.toExponential(2)).join(', ')}`)
      this.log(`worst relative error ${check.worst.toExponential(2)}`)
    }
    return { ...summary, check }
  }
}

function parseDims(entries: string[]): Record<string, number> {
  const dims: Record<string, number> = {}
  for (const entry of entries) {
    const match = /^([^=]+)=(\d+)$/.exec(entry)
    if (!match) throw new UserError(`--dim ${entry}: expected name=value, e.g. --dim batch=1`)
    dims[match[1]] = Number(match[2])
  }
  return dims
}
