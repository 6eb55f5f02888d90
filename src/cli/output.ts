// Output paths, checked before any work: not a folder where a file is wanted, no file where a folder is
// needed, and an image format the extension names (written as that format).
import { existsSync, statSync } from 'node:fs'
import { dirname, extname, resolve } from 'node:path'
import { check } from '../errors.js'
import type { ImageTensor } from '../image/image.js'

/** The image formats an output's extension may name, as sharp writes them. */
export const IMAGE_FORMATS = { '.png': 'png', '.jpg': 'jpeg', '.jpeg': 'jpeg', '.webp': 'webp' } as const
export type ImageFormat = (typeof IMAGE_FORMATS)[keyof typeof IMAGE_FORMATS]

/** The first existing ancestor of `path` that is not a folder, if any. */
function fileAncestor(path: string): string | undefined {
  for (let dir = dirname(resolve(path)); dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(dir)) return statSync(dir).isDirectory() ? undefined : dir
  }
  return undefined
}

/** An image file to write: its format from the extension; refused if it is a folder or under a file. */
export function checkImageOutput(path: string, flag = '-o'): ImageFormat {
  check(!(existsSync(path) && statSync(path).isDirectory()), `${flag} ${path} is a folder: name an image file, e.g. ${path.replace(/\/$/, '')}/out.png`)
  const blocked = fileAncestor(path)
  check(blocked === undefined, `${flag} ${path}: ${blocked} is a file, not a folder`)
  const format = IMAGE_FORMATS[extname(path).toLowerCase() as keyof typeof IMAGE_FORMATS]
  check(format, `${flag} ${path}: name a .png, .jpg or .webp file (the extension says the format)`)
  return format
}

/** A folder to write into: refused if it is a file or under one. */
export function checkFolderOutput(path: string, flag = '-o'): void {
  check(!(existsSync(path) && !statSync(path).isDirectory()), `${flag} ${path} is a file: name a folder`)
  const blocked = fileAncestor(path)
  check(blocked === undefined, `${flag} ${path}: ${blocked} is a file, not a folder`)
}

/** Any file to write (e.g. an ONNX model): refused if it is a folder or under a file. */
export function checkFileOutput(path: string, flag = '-o'): void {
  check(!(existsSync(path) && statSync(path).isDirectory()), `${flag} ${path} is a folder: name a file`)
  const blocked = fileAncestor(path)
  check(blocked === undefined, `${flag} ${path}: ${blocked} is a file, not a folder`)
}

/** Writes an image in the format its extension names (checked by checkImageOutput); temp file, then rename. */
export async function writeImage(image: ImageTensor, path: string): Promise<void> {
  const format = checkImageOutput(path)
  const [{ default: sharp }, { imageToPixels }, { writeFileAtomic }] = await Promise.all([import('sharp'), import('../image/image.js'), import('../fsutil.js')])
  const bytes = await sharp(imageToPixels(image), { raw: { width: image.width, height: image.height, channels: 3 } }).toFormat(format).toBuffer()
  await writeFileAtomic(path, bytes)
}
