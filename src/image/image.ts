// Images as float tensors: [1,3,H,W] RGB in [-1,1], the range the decoders output and the guides read.
import sharp from 'sharp'
import { UserError } from '../errors.js'
import { writeFileAtomic } from '../fsutil.js'
import { GLYPH_HEIGHT, GLYPH_WIDTH, glyphPixel } from './font.js'

/** An RGB image as a [1,3,height,width] float32 tensor with values in [-1,1]. */
export interface ImageTensor {
  data: Float32Array
  width: number
  height: number
}

/** How an image is fitted to a requested size: crop to fill it, letterbox inside it, or stretch. */
export type Fit = 'cover' | 'contain' | 'fill'

export interface LoadOptions {
  /** a square side, or width and height */
  size?: number | { width: number; height: number }
  fit?: Fit
}

/** Loads any image sharp reads (PNG, JPEG, WebP, TIFF, GIF, AVIF, SVG…); alpha is composed over white. */
export async function loadImage(path: string, options: LoadOptions = {}): Promise<ImageTensor> {
  let pipeline = sharp(path, { failOn: 'error' }).rotate().flatten({ background: '#ffffff' }).toColourspace('srgb')
  if (options.size !== undefined) {
    const { width, height } = typeof options.size === 'number' ? { width: options.size, height: options.size } : options.size
    pipeline = pipeline.resize(width, height, { fit: options.fit ?? 'cover', background: '#000000' })
  }
  try {
    const { data, info } = await pipeline.removeAlpha().raw().toBuffer({ resolveWithObject: true })
    return imageFromPixels(data, info.width, info.height, info.channels)
  } catch (error) {
    throw new UserError(`cannot read image ${path}: ${(error as Error).message.split('\n')[0]}`)
  }
}

/** An image from interleaved 8-bit pixels (HWC, `channels` per pixel; 1 = grey, 3+ = RGB first). */
export function imageFromPixels(pixels: Uint8Array, width: number, height: number, channels: number): ImageTensor {
  const plane = width * height
  const data = new Float32Array(3 * plane)
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) data[c * plane + i] = pixels[i * channels + (channels === 1 ? 0 : c)] / 127.5 - 1
  }
  return { data, width, height }
}

/** Interleaved RGB bytes (HWC), values clipped to [-1,1] and rounded. Non-finite values become black. */
export function imageToPixels(image: ImageTensor): Uint8Array {
  const plane = image.width * image.height
  const pixels = new Uint8Array(3 * plane)
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = image.data[c * plane + i]
      pixels[i * 3 + c] = Number.isFinite(v) ? Math.round((Math.min(1, Math.max(-1, v)) + 1) * 127.5) : 0
    }
  }
  return pixels
}

export function encodePng(image: ImageTensor): Promise<Buffer> {
  return sharp(imageToPixels(image), { raw: { width: image.width, height: image.height, channels: 3 } }).png().toBuffer()
}

/** Writes the image as PNG; readers see the old file or the whole new one. */
export async function saveImage(image: ImageTensor, path: string): Promise<void> {
  await writeFileAtomic(path, await encodePng(image))
}

/** A [1,3,H,W] tensor's values as an image (e.g. a decoder's output). */
export function imageFromTensor(data: Float32Array, dims: readonly number[]): ImageTensor {
  if (dims.length !== 4 || dims[0] !== 1 || dims[1] !== 3) throw new Error(`expected a [1,3,H,W] image tensor, got [${dims}]`)
  return { data, width: dims[3], height: dims[2] }
}

export interface GridCell {
  image: ImageTensor
  /** text under the image; '\n' starts a new line */
  label?: string
}

export interface GridOptions {
  /** pixels between cells */
  gap?: number
  /** integer magnification of the 8×14 label font; by default it grows with the cell width */
  labelScale?: number
  /** text above the grid (e.g. the settings), wrapped at spaces to the grid's width; '\n' starts a new line */
  title?: string
  /** lines of label reserved under each cell; default: as many as the longest label has (frames of an animation need the same) */
  labelLines?: number
}

/**
 * Lays rows of images out on a white canvas under an optional title, each image with its label underneath
 * (bitmap font, so the result needs no system fonts). Cells are as large as the largest image; smaller images
 * sit top-left; an undefined cell is left blank (e.g. a reference shown once, in the first row).
 */
export function composeGrid(rows: (GridCell | undefined)[][], options: GridOptions = {}): ImageTensor {
  const cells = rows.flat().filter((c): c is GridCell => c !== undefined)
  if (cells.length === 0) throw new UserError('a grid needs at least one image')
  const gap = options.gap ?? 4
  const cellWidth = Math.max(...cells.map(c => c.image.width))
  const cellHeight = Math.max(...cells.map(c => c.image.height))
  const scale = options.labelScale ?? Math.max(1, Math.floor(cellWidth / 256))
  const lineHeight = GLYPH_HEIGHT * scale
  const labelLines = options.labelLines ?? Math.max(0, ...cells.map(c => (c.label ? c.label.split('\n').length : 0)))
  const labelHeight = labelLines > 0 ? labelLines * lineHeight + 2 * gap : 0
  const columns = Math.max(...rows.map(r => r.length))
  const width = columns * cellWidth + (columns + 1) * gap
  const title = options.title ? wrapText(options.title, Math.floor((width - 2 * gap) / (GLYPH_WIDTH * scale))) : []
  const titleHeight = title.length > 0 ? title.length * lineHeight + gap : 0
  const height = titleHeight + rows.length * (cellHeight + labelHeight) + (rows.length + 1) * gap
  const canvas: ImageTensor = { data: new Float32Array(3 * width * height).fill(1), width, height }
  title.forEach((line, i) => drawText(canvas, line, gap, gap + i * lineHeight, scale, width - 2 * gap))
  rows.forEach((row, r) =>
    row.forEach((cell, c) => {
      if (!cell) return
      const x = gap + c * (cellWidth + gap)
      const y = titleHeight + gap + r * (cellHeight + labelHeight + gap)
      paste(canvas, cell.image, x, y)
      cell.label?.split('\n').slice(0, labelLines).forEach((line, i) => drawText(canvas, line, x, y + cellHeight + gap + i * lineHeight, scale, cellWidth))
    }),
  )
  return canvas
}

/** Lines of at most `width` characters, broken at spaces where possible (a longer word is cut). */
export function wrapText(text: string, width: number): string[] {
  const fit = Math.max(1, width)
  return text.split('\n').flatMap(paragraph => {
    const lines: string[] = []
    let line = ''
    for (let word of paragraph.split(' ')) {
      while (word.length > fit) {
        if (line) lines.push(line)
        lines.push(word.slice(0, fit))
        word = word.slice(fit)
        line = ''
      }
      if (!line) line = word
      else if (line.length + 1 + word.length <= fit) line += ` ${word}`
      else {
        lines.push(line)
        line = word
      }
    }
    lines.push(line)
    return lines
  })
}

function paste(canvas: ImageTensor, image: ImageTensor, left: number, top: number): void {
  const to = canvas.width * canvas.height
  const from = image.width * image.height
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < image.height; y++) {
      const row = image.data.subarray(c * from + y * image.width, c * from + (y + 1) * image.width)
      canvas.data.set(row, c * to + (top + y) * canvas.width + left)
    }
  }
}

/** Black text; characters that would pass `maxWidth` are left out. */
function drawText(canvas: ImageTensor, text: string, left: number, top: number, scale: number, maxWidth: number): void {
  const plane = canvas.width * canvas.height
  const fits = Math.floor(maxWidth / (GLYPH_WIDTH * scale))
  ;[...text.slice(0, fits)].forEach((ch, i) => {
    for (let gy = 0; gy < GLYPH_HEIGHT * scale; gy++) {
      for (let gx = 0; gx < GLYPH_WIDTH * scale; gx++) {
        if (!glyphPixel(ch, Math.floor(gx / scale), Math.floor(gy / scale))) continue
        const at = (top + gy) * canvas.width + left + i * GLYPH_WIDTH * scale + gx
        for (let c = 0; c < 3; c++) canvas.data[c * plane + at] = -1
      }
    }
  })
}

/** Weights of a 1-D linear resampling from `from` to `to` samples, widened when shrinking (antialiased, as PIL). */
function resampleWeights(from: number, to: number): { start: number; weights: number[] }[] {
  const scale = from / to
  const support = Math.max(1, scale)
  return Array.from({ length: to }, (_, i) => {
    const centre = (i + 0.5) * scale - 0.5
    const start = Math.max(0, Math.ceil(centre - support))
    const end = Math.min(from - 1, Math.floor(centre + support))
    const raw = Array.from({ length: end - start + 1 }, (_, k) => Math.max(0, 1 - Math.abs(start + k - centre) / support))
    const total = raw.reduce((a, b) => a + b, 0)
    return { start, weights: raw.map(w => w / total) }
  })
}

/** The image resized to width × height (linear filter, antialiased when shrinking); synchronous, in JS. */
export function resizeImage(image: ImageTensor, width: number, height: number): ImageTensor {
  if (image.width === width && image.height === height) return image
  const wx = resampleWeights(image.width, width)
  const wy = resampleWeights(image.height, height)
  const rows = new Float32Array(3 * image.height * width)
  const data = new Float32Array(3 * height * width)
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < image.height; y++) {
      const src = (c * image.height + y) * image.width
      wx.forEach(({ start, weights }, x) => {
        rows[(c * image.height + y) * width + x] = weights.reduce((s, w, k) => s + w * image.data[src + start + k], 0)
      })
    }
    wy.forEach(({ start, weights }, y) => {
      for (let x = 0; x < width; x++) {
        data[(c * height + y) * width + x] = weights.reduce((s, w, k) => s + w * rows[(c * image.height + start + k) * width + x], 0)
      }
    })
  }
  return { data, width, height }
}

/** The image cropped about its centre to the aspect of width × height, then resized to it (as sharp's 'cover'). */
export function coverImage(image: ImageTensor, width: number, height: number): ImageTensor {
  const scale = Math.max(width / image.width, height / image.height)
  const [cropWidth, cropHeight] = [Math.min(image.width, Math.round(width / scale)), Math.min(image.height, Math.round(height / scale))]
  const [left, top] = [Math.floor((image.width - cropWidth) / 2), Math.floor((image.height - cropHeight) / 2)]
  const plane = cropWidth * cropHeight
  const data = new Float32Array(3 * plane)
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < cropHeight; y++) {
      const from = c * image.width * image.height + (top + y) * image.width + left
      data.set(image.data.subarray(from, from + cropWidth), c * plane + y * cropWidth)
    }
  }
  return resizeImage({ data, width: cropWidth, height: cropHeight }, width, height)
}
