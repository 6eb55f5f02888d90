// Progress on stderr. A spinner (ora) only where stderr is a terminal that reports its width: with 0 columns
// ora counts infinitely many lines to clear and never yields (no output limit, no Ctrl-C). Elsewhere plain
// lines, at most one per LINE_INTERVAL_MS, so a log shows a long run advancing without flooding.
import type { Ora } from 'ora'

export type ProgressMode = 'spinner' | 'lines' | 'silent'

export const LINE_INTERVAL_MS = 2000

/** How progress is shown on this stderr. */
export function progressMode(stream: { isTTY?: boolean; columns?: number } = process.stderr): ProgressMode {
  return stream.isTTY && (stream.columns ?? 0) > 0 ? 'spinner' : 'lines'
}

export class Progress {
  private spinner?: Ora
  private current: string
  private printedAt = -Infinity
  private printed?: string
  private readonly mode: ProgressMode

  constructor(text: string, mode: ProgressMode = progressMode(), private readonly write = (line: string) => { process.stderr.write(line) }, private readonly now = () => performance.now()) {
    this.mode = mode
    this.current = text
    if (mode === 'spinner') {
      // ora is loaded only when a spinner is shown (it costs a quarter of a second at start-up)
      import('ora').then(({ default: ora }) => {
        if (this.current === STOPPED) return
        this.spinner = ora({ text: this.current, stream: process.stderr, discardStdin: false }).start()
      })
    } else this.line()
  }

  set text(text: string) {
    this.current = text
    if (this.spinner) this.spinner.text = text
    else this.line()
  }

  get text(): string {
    return this.current
  }

  /** Prints `message` on its own line without breaking the spinner. */
  interject(message: string): void {
    this.spinner?.clear()
    this.write(`${message}\n`)
    this.spinner?.render()
  }

  stop(): void {
    this.spinner?.stop()
    this.current = STOPPED
  }

  private line(): void {
    if (this.mode !== 'lines' || this.current === this.printed || this.now() - this.printedAt < LINE_INTERVAL_MS) return
    this.write(`${this.current}\n`)
    this.printed = this.current
    this.printedAt = this.now()
  }
}

const STOPPED = '\0stopped'
