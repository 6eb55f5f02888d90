// Animated images (WebP or GIF) from frames of equal size: sharp joins the frames into one animated image.
import { extname } from 'node:path'
import sharp from 'sharp'
import { check } from '../errors.js'
import { writeFileAtomic } from '../fsutil.js'
import { encodePng, type ImageTensor } from './image.js'

export const ANIMATION_FORMATS = ['webp', 'gif'] as const
export type AnimationFormat = (typeof ANIMATION_FORMATS)[number]

/** The format a path asks for by its extension (.webp or .gif); anything else is the user's error. */
export function animationFormat(path: string): AnimationFormat {
  const ext = extname(path).slice(1).toLowerCase() as AnimationFormat
  check(ANIMATION_FORMATS.includes(ext), `${path}: name a .webp or .gif file for an animation (the extension says the format)`)
  return ext
}

/** The frames as one looping animation; `delaysMs[i]` is how long frame i shows. */
export async function encodeAnimation(frames: ImageTensor[], format: AnimationFormat, delaysMs: number[]): Promise<Buffer> {
  check(frames.length > 0, 'an animation needs at least one frame')
  check(delaysMs.length === frames.length, `${frames.length} frames but ${delaysMs.length} delays`)
  const { width, height } = frames[0]
  for (const f of frames) check(f.width === width && f.height === height, `animation frames differ in size: ${f.width}×${f.height} and ${width}×${height}`)
  const joined = sharp(await Promise.all(frames.map(encodePng)), { join: { animated: true } })
  return (format === 'webp' ? joined.webp({ loop: 0, delay: delaysMs }) : joined.gif({ loop: 0, delay: delaysMs })).toBuffer()
}

/** Writes the animation in the format the path's extension names; readers see the old file or the whole new one. */
export async function saveAnimation(frames: ImageTensor[], path: string, delaysMs: number[]): Promise<void> {
  await writeFileAtomic(path, await encodeAnimation(frames, animationFormat(path), delaysMs))
}
