// What every `lookahead` command shares: --json, --device, --threads, progress on stderr, and one-line errors
// (as JSON on stdout under --json), with the exit code they state. Nothing heavy is imported here.
import { Command } from '@oclif/core'
import chalk from 'chalk'
import { UserError } from '../errors.js'
import { settingFlags, settingsFromFlags } from './flags.js'
import { Progress } from './progress.js'

export abstract class LookaheadCommand extends Command {
  static enableJsonFlag = true

  static baseFlags = settingFlags(['device', 'threads'])

  /** Progress on stderr: a spinner on a terminal, plain lines otherwise, nothing under --json. */
  spinner(text: string): Progress {
    return new Progress(text, this.jsonEnabled() ? 'silent' : undefined)
  }

  /** Prints a line on stderr unless --json is on. */
  note(message: string): void {
    if (!this.jsonEnabled()) process.stderr.write(`${message}\n`)
  }

  warning(message: string): void {
    process.stderr.write(`${chalk.yellow('warning:')} ${message}\n`)
  }

  /** --device and --threads; --device cuda where its provider is not installed fails here, before any work. */
  async runtime(flags: Record<string, unknown>) {
    const runtime = settingsFromFlags(['device', 'threads'], flags, 'sdxl')
    if (runtime.device === 'cuda') {
      const { CUDA_HELP, cudaInstalled } = await import('../onnx/session.js')
      if (!cudaInstalled()) throw new UserError(CUDA_HELP)
    }
    return runtime
  }

  protected async catch(error: Error & { oclif?: { exit?: number } }): Promise<unknown> {
    // oclif's own exits (--help, --version, this.exit) pass through
    if (error.name === 'ExitError' || error.constructor?.name === 'ExitError') return super.catch(error)
    const known = error instanceof UserError || error.oclif !== undefined
    const exit = error instanceof UserError ? 1 : (error.oclif?.exit ?? 1)
    const message = known ? error.message.split('\n')[0].trim() : `internal error: ${error.message.split('\n')[0]} (run with DEBUG=1 for the stack)`
    if (process.env.DEBUG && error.stack) process.stderr.write(`${error.stack}\n`)
    if (this.argv.includes('--json')) process.stdout.write(`${JSON.stringify({ error: { message, exit } })}\n`)
    else process.stderr.write(`${chalk.red('error:')} ${message}\n`)
    return this.exit(exit)
  }
}

/**
 * Ctrl-C or SIGTERM: stop at once with exit code 130 (143 for SIGTERM), saying what was kept; partial
 * outputs are never renamed into place.
 */
export function exitOnInterrupt(kept = 'nothing was written'): void {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.once(signal, () => {
      process.stderr.write(`\n${chalk.yellow('interrupted')}: ${kept}\n`)
      process.exit(code)
    })
  }
}
