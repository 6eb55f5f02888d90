// What every `lookahead` command shares: --json, --device, --threads, and one-line errors.
import { Command, Flags } from '@oclif/core'
import chalk from 'chalk'
import ora, { type Ora } from 'ora'
import { UserError } from '../errors.js'
import { CUDA_HELP, cudaInstalled, devices, type Device } from '../onnx/session.js'

export abstract class LookaheadCommand extends Command {
  static enableJsonFlag = true

  static baseFlags = {
    device: Flags.string({ description: 'onnxruntime execution provider', options: devices, default: 'cpu' }),
    threads: Flags.integer({ description: 'intra-op threads (0: onnxruntime decides)', default: 0, min: 0 }),
  }

  /** A spinner on stderr, silent under --json so stdout stays machine-readable. */
  spinner(text: string): Ora {
    return ora({ text, stream: process.stderr, isSilent: this.jsonEnabled() || !process.stderr.isTTY }).start()
  }

  /** Prints a line on stderr unless --json is on. */
  note(message: string): void {
    if (!this.jsonEnabled()) process.stderr.write(`${message}\n`)
  }

  warning(message: string): void {
    process.stderr.write(`${chalk.yellow('warning:')} ${message}\n`)
  }

  /** The device flag; asking for CUDA where its provider is not installed fails here, before any work. */
  device(flags: { device: string }): Device {
    if (flags.device === 'cuda' && !cudaInstalled()) throw new UserError(CUDA_HELP)
    return flags.device as Device
  }

  protected async catch(error: Error & { exitCode?: number; oclif?: { exit: number } }): Promise<unknown> {
    if (error instanceof UserError) {
      process.stderr.write(`${chalk.red('error:')} ${error.message}\n`)
      this.exit(1)
    }
    return super.catch(error)
  }
}

/** Ctrl-C: stop cleanly with exit code 130 (partial outputs are never renamed into place). */
export function exitOnInterrupt(): void {
  process.once('SIGINT', () => {
    process.stderr.write(`\n${chalk.yellow('interrupted')}: nothing was written\n`)
    process.exit(130)
  })
}
