// face-api's tiny face detector (a Tiny-YOLOv2 with depthwise-separable convs, 5 anchors) rebuilt as ONNX.
// Structure and decoding: face-api src/tinyFaceDetector and src/tinyYolov2.
import { GraphBuilder } from '../../src/onnx/builder.js'
import { normaliseRgb, pool, separableConv, tfConv, unary, type Feature } from './ops.js'
import { faceApiWeights } from './weights.js'

export const DETECTOR_SIZE = 416
const MEAN_RGB: [number, number, number] = [117.001, 114.697, 97.404]
const ANCHORS = [[1.603231, 2.094468], [6.041143, 7.080126], [2.882459, 3.518061], [4.266906, 5.178857], [9.041765, 10.66308]]
const SCORE_THRESHOLD = 0.5
const IOU_THRESHOLD = 0.4

/** The detector as a model: `image` [1,3,416,416] RGB 0..255 → `grid` [1,25,13,13] (5 anchors × x, y, w, h, score). */
export async function detectorModel() {
  const w = await faceApiWeights('tiny_face_detector_model')
  const g = new GraphBuilder('tiny_face_detector')
  const image = g.input('image', 'float32', [1, 3, DETECTOR_SIZE, DETECTOR_SIZE])
  const leaky = (x: Feature): Feature => ({ ...x, name: g.op('LeakyRelu', [x.name], { alpha: 0.1 }) })
  let x: Feature = { name: normaliseRgb(g, image, MEAN_RGB), channels: 3, height: DETECTOR_SIZE, width: DETECTOR_SIZE }
  x = leaky(tfConv(g, x, w.get('conv0/filters')!, w.get('conv0/bias')!, 1, 'valid'))
  for (let i = 1; i <= 5; i++) {
    x = pool(g, 'MaxPool', x, 2, 2, 'same')
    x = leaky(separableConv(g, x, w.get(`conv${i}/depthwise_filter`)!, w.get(`conv${i}/pointwise_filter`)!, w.get(`conv${i}/bias`)!, 1, 'same'))
  }
  x = pool(g, 'MaxPool', x, 2, 1, 'same')
  x = tfConv(g, x, w.get('conv8/filters')!, w.get('conv8/bias')!, 1, 'valid')
  g.outputAs(unary(g, 'Identity', x).name, 'grid', 'float32', [1, 25, x.height, x.width])
  return g.build()
}

export interface Box {
  x: number
  y: number
  width: number
  height: number
}

export interface Detection {
  box: Box
  score: number
}

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v))

/** Boxes in pixels of the detector's 416×416 input, after non-maximum suppression. */
export function decodeDetections(grid: Float32Array, cells: number): Detection[] {
  const found: Detection[] = []
  const at = (anchor: number, k: number, row: number, col: number) => grid[((anchor * 5 + k) * cells + row) * cells + col]
  const cell = DETECTOR_SIZE / cells
  for (let row = 0; row < cells; row++) {
    for (let col = 0; col < cells; col++) {
      ANCHORS.forEach(([ax, ay], anchor) => {
        const score = sigmoid(at(anchor, 4, row, col))
        if (score <= SCORE_THRESHOLD) return
        const cx = (col + sigmoid(at(anchor, 0, row, col))) * cell
        const cy = (row + sigmoid(at(anchor, 1, row, col))) * cell
        const width = Math.exp(at(anchor, 2, row, col)) * ax * cell
        const height = Math.exp(at(anchor, 3, row, col)) * ay * cell
        found.push({ score, box: { x: cx - width / 2, y: cy - height / 2, width, height } })
      })
    }
  }
  return nonMaxSuppression(found, IOU_THRESHOLD)
}

function iou(a: Box, b: Box): number {
  const w = Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x)
  const h = Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y)
  if (w <= 0 || h <= 0) return 0
  return (w * h) / (a.width * a.height + b.width * b.height - w * h)
}

/** Greedy NMS, best score first. */
export function nonMaxSuppression(detections: Detection[], threshold: number): Detection[] {
  const kept: Detection[] = []
  for (const d of [...detections].sort((a, b) => b.score - a.score)) if (kept.every(k => iou(k.box, d.box) <= threshold)) kept.push(d)
  return kept
}
