// The lookahead at work, for teaching: the decoded preview the loss saw at every iteration, saved as PNGs with
// an index (`guide --save-iterations DIR`) and joined into a labelled animation (`guide --animate FILE.webp`).
import { join } from 'node:path'
import { writeFileAtomic } from '../fsutil.js'
import { animationFormat, saveAnimation } from '../image/animation.js'
import { composeGrid, resizeImage, saveImage, type ImageTensor } from '../image/image.js'

/** One iteration as the engine's per-iteration hook hands it out. */
export interface IterationFrame {
  step: number
  t: number
  iter: number
  /** the self-recurrence round (0 without it) */
  round: number
  /** the loss of `preview`, before this iteration's update */
  loss: number
  skipped?: string
  /** milliseconds the iteration took (gradient pass and update) */
  ms: number
  /** the decoded preview the loss was taken on */
  preview: ImageTensor
}

export interface RecorderOptions {
  /** folder for one PNG per iteration, final.png, reference.png and index.json */
  dir?: string
  /** an animated .webp or .gif of the previews, each frame labelled with step, iteration and loss */
  animation?: string
  /** shown beside each frame of the animation */
  reference?: ImageTensor
  /** iterations per guide step (K), for "iteration 3/10" */
  iters: number
  /** self-recurrence rounds per guide step (R); with more than one, names and labels say the round */
  recur?: number
  /** a line over every frame (e.g. the method and loss) */
  title?: string
}

/** How long a frame shows: each iteration, then the final image. */
const FRAME_MS = 400
const FINAL_MS = 2500
/** Animation frames hold images of at most this side (a 1024² preview is shrunk), to keep the file small. */
const FRAME_SIDE = 512

/** An iteration in index.json: the frame's numbers and the file its preview is in. */
export type IndexEntry = Omit<IterationFrame, 'preview'> & { file: string }

export interface RecordedIterations {
  iterations: IndexEntry[]
  /** the files written: the index (with --save-iterations) and the animation */
  index?: string
  animation?: string
}

const fit = (image: ImageTensor): ImageTensor => {
  const scale = Math.min(1, FRAME_SIDE / Math.max(image.width, image.height))
  return scale === 1 ? image : resizeImage(image, Math.round(image.width * scale), Math.round(image.height * scale))
}

/** File name of an iteration's preview: step, round (with self-recurrence) and iteration, zero-padded so they sort. */
const frameFile = (f: IterationFrame, recurring: boolean) =>
  `step${String(f.step).padStart(3, '0')}${recurring ? `-round${f.round}` : ''}-iter${String(f.iter).padStart(3, '0')}.png`

/**
 * Collects the previews of one guided run. `add` is synchronous (the engine's hook does not wait) and queues
 * each PNG; `finish` waits for them and writes the final image, the index and the animation.
 */
export class IterationRecorder {
  private readonly entries: IndexEntry[] = []
  private readonly frames: ImageTensor[] = []
  private writes: Promise<void> = Promise.resolve()
  /** the first failed write, raised by `finish` (a rejection nobody awaits yet would end the process) */
  private failed?: unknown
  private readonly reference?: ImageTensor

  constructor(private readonly options: RecorderOptions) {
    // a wrong extension fails before the run, not after it
    if (options.animation) animationFormat(options.animation)
    this.reference = options.reference && fit(options.reference)
  }

  add(frame: IterationFrame): void {
    const { preview, ...entry } = frame
    const recurring = (this.options.recur ?? 1) > 1
    const file = frameFile(frame, recurring)
    this.entries.push({ file, ...entry, ms: Math.round(frame.ms * 10) / 10 })
    const dir = this.options.dir
    if (dir) this.writes = this.writes.then(() => saveImage(preview, join(dir, file))).catch(error => { this.failed ??= error })
    if (this.options.animation) {
      const when = recurring ? ` round ${frame.round}` : `, t=${frame.t}`
      const label = `step ${frame.step}${when}, iteration ${frame.iter + 1}/${this.options.iters}\nloss ${frame.loss.toFixed(4)}${frame.skipped ? ` (${frame.skipped}: skipped)` : ''}`
      this.frames.push(this.frame(fit(preview), label))
    }
  }

  private frame(image: ImageTensor, label: string): ImageTensor {
    const cells = [...(this.reference ? [{ image: this.reference, label: 'reference' }] : []), { image, label }]
    return composeGrid([cells], { title: this.options.title, labelLines: 2 })
  }

  /** Writes what was asked for; `timings` go into the index as they are. */
  async finish(final: ImageTensor, timings: Record<string, number> = {}): Promise<RecordedIterations> {
    await this.writes
    if (this.failed) throw this.failed
    const { dir, animation } = this.options
    const result: RecordedIterations = { iterations: this.entries }
    if (dir) {
      await saveImage(final, join(dir, 'final.png'))
      if (this.options.reference) await saveImage(this.options.reference, join(dir, 'reference.png'))
      result.index = join(dir, 'index.json')
      const index = { iterations: this.entries, final: 'final.png', reference: this.options.reference ? 'reference.png' : undefined, timings }
      await writeFileAtomic(result.index, `${JSON.stringify(index, null, 1)}\n`)
    }
    if (animation) {
      const frames = [...this.frames, this.frame(fit(final), 'final image\nafter plain DDIM to the end')]
      await saveAnimation(frames, animation, [...this.frames.map(() => FRAME_MS), FINAL_MS])
      result.animation = animation
    }
    return result
  }
}
