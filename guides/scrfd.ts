// insightface's SCRFD detector (det_10g.onnx of buffalo_l / antelopev2), when the user supplies it as
// DIR/guides/scrfd/model.onnx. Decoding as insightface model_zoo/scrfd.py: 9 outputs (3 strides × scores,
// box distances, 5 keypoints), 2 anchors per cell, letterboxed RGB input, (x − 127.5)/128.
import sharp from 'sharp'
import { UserError } from '../src/errors.js'
import { imageToPixels, type ImageTensor } from '../src/image/image.js'
import { openSession, ort } from '../src/onnx/session.js'
import { nonMaxSuppression, type Detection } from './facenet/detector.js'
import type { Point } from './face.js'

const SIZE = 640
const STRIDES = [8, 16, 32]
const ANCHORS_PER_CELL = 2
const SCORE_THRESHOLD = 0.5
const IOU_THRESHOLD = 0.4

export interface ScrfdFace extends Detection {
  points: Point[]
}

/** The image fitted into SIZE×SIZE at the top-left (aspect kept, zero padding), normalised; and the scale used. */
async function letterbox(image: ImageTensor): Promise<{ input: ort.Tensor; scale: number }> {
  const scale = Math.min(SIZE / image.width, SIZE / image.height)
  const width = Math.max(1, Math.round(image.width * scale))
  const height = Math.max(1, Math.round(image.height * scale))
  const { data } = await sharp(imageToPixels(image), { raw: { width: image.width, height: image.height, channels: 3 } })
    .resize(width, height, { fit: 'fill', kernel: 'linear' })
    .raw()
    .toBuffer({ resolveWithObject: true })
  const plane = SIZE * SIZE
  const input = new Float32Array(3 * plane) // zero padding, as insightface (its zeros are not normalised)
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      for (let c = 0; c < 3; c++) input[c * plane + y * SIZE + x] = (data[(y * width + x) * 3 + c] - 127.5) / 128
  return { input: new ort.Tensor('float32', input, [1, 3, SIZE, SIZE]), scale: height / image.height }
}

/** Decodes SCRFD's outputs (image coordinates = input coordinates / scale). */
export function decodeScrfd(outputs: Float32Array[], scale: number): ScrfdFace[] {
  const found: ScrfdFace[] = []
  STRIDES.forEach((stride, level) => {
    const [scores, boxes, keypoints] = [outputs[level], outputs[level + 3], outputs[level + 6]]
    const cells = Math.ceil(SIZE / stride)
    for (let i = 0; i < scores.length; i++) {
      if (scores[i] < SCORE_THRESHOLD) continue
      const cell = Math.floor(i / ANCHORS_PER_CELL)
      const cx = (cell % cells) * stride
      const cy = Math.floor(cell / cells) * stride
      const [l, t, r, b] = Array.from(boxes.subarray(4 * i, 4 * i + 4), d => d * stride)
      const points = Array.from({ length: 5 }, (_, k): Point => [(cx + keypoints[10 * i + 2 * k] * stride) / scale, (cy + keypoints[10 * i + 2 * k + 1] * stride) / scale])
      found.push({ score: scores[i], box: { x: (cx - l) / scale, y: (cy - t) / scale, width: (l + r) / scale, height: (t + b) / scale }, points })
    }
  })
  return nonMaxSuppression(found, IOU_THRESHOLD) as ScrfdFace[]
}

/** Faces with their five keypoints (ArcFace's order), best first. */
export async function scrfdDetect(path: string, image: ImageTensor): Promise<ScrfdFace[]> {
  const session = await openSession(path)
  if (session.outputs.length !== 9) throw new UserError(`${path}: expected SCRFD's 9 outputs (scores, boxes and keypoints at 3 strides), found ${session.outputs.length}`)
  const { input, scale } = await letterbox(image)
  const result = await session.run({ [session.inputs[0].name]: input })
  // batched exports have rank-3 outputs [1, N, k]: the data is the same
  return decodeScrfd(session.outputs.map(o => result[o.name].data as Float32Array), scale)
}
