// Finding faces: face-api's tiny face detector (or the user's SCRFD), then face-api's 68-point landmark net on each
// box, rebuilt as ONNX graphs from the npm package's weights (no user download). Gives the five points ArcFace uses.
import sharp from 'sharp'
import { imageToPixels, type ImageTensor } from '../src/image/image.js'
import { encodeModel } from '../src/onnx/proto.js'
import { createInferenceSession, ort } from '../src/onnx/session.js'
import { decodeDetections, detectorModel, DETECTOR_SIZE, type Box, type Detection } from './facenet/detector.js'
import { LANDMARK_SIZE, landmarkModel } from './facenet/landmarks.js'
import { scrfdDetect } from './scrfd.js'

export type Point = [number, number]

export interface Face {
  /** the detector's box, in image pixels */
  box: Box
  score: number
  /** the 68 iBUG landmarks, in image pixels */
  landmarks: Point[]
  /** left eye, right eye, nose tip, left and right mouth corner (as seen in the image): ArcFace's order */
  points: Point[]
}

let sessions: Promise<{ detector: ort.InferenceSession; landmarks: ort.InferenceSession }> | undefined

function faceSessions() {
  sessions ??= (async () => ({
    detector: await createInferenceSession(encodeModel(await detectorModel())),
    landmarks: await createInferenceSession(encodeModel(await landmarkModel())),
  }))()
  return sessions
}

/** Pixels of `region` of the image, centred in a black square and resized to `size`, as a [1,3,size,size] tensor in 0..255 (face-api's toBatchTensor). */
async function squareCrop(image: ImageTensor, region: Box, size: number): Promise<ort.Tensor> {
  // sharp resizes before it extends, so the padding is done by resizing with fit 'contain'
  const { data } = await sharp(imageToPixels(image), { raw: { width: image.width, height: image.height, channels: 3 } })
    .extract({ left: region.x, top: region.y, width: region.width, height: region.height })
    .resize(size, size, { kernel: 'linear', fit: 'contain', position: 'centre', background: '#000000' })
    .raw()
    .toBuffer({ resolveWithObject: true })
  return planar(data, size)
}

/** Interleaved RGB bytes of a size×size image as a [1,3,size,size] float tensor in 0..255. */
function planar(pixels: Uint8Array, size: number): ort.Tensor {
  const plane = size * size
  const values = new Float32Array(3 * plane)
  for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) values[c * plane + i] = pixels[i * 3 + c]
  return new ort.Tensor('float32', values, [1, 3, size, size])
}

/** The integer box inside the image that covers `box`. */
function clip(box: Box, image: ImageTensor): Box {
  const x = Math.max(0, Math.floor(box.x))
  const y = Math.max(0, Math.floor(box.y))
  const right = Math.min(image.width, Math.ceil(box.x + box.width))
  const bottom = Math.min(image.height, Math.ceil(box.y + box.height))
  return { x, y, width: Math.max(1, right - x), height: Math.max(1, bottom - y) }
}

const mean = (points: Point[]): Point => [points.reduce((s, p) => s + p[0], 0) / points.length, points.reduce((s, p) => s + p[1], 0) / points.length]

/** The five ArcFace points from the 68 iBUG landmarks: eye centres (36–41, 42–47), nose tip (30), mouth corners (48, 54). */
export function fivePoints(landmarks: Point[]): Point[] {
  return [mean(landmarks.slice(36, 42)), mean(landmarks.slice(42, 48)), landmarks[30], landmarks[48], landmarks[54]]
}

export interface DetectOptions {
  /** an insightface SCRFD export to find boxes and the five points with, instead of face-api's tiny detector */
  scrfd?: string
}

/** The 68 landmarks in a box: face-api's landmark net on the box, squared about its centre, at 112×112. */
async function landmarksIn(image: ImageTensor, box: Box): Promise<Point[]> {
  const { landmarks } = await faceSessions()
  const region = clip(box, image)
  const { landmarks: out } = await landmarks.run({ face: await squareCrop(image, region, LANDMARK_SIZE) })
  const side = Math.max(region.width, region.height)
  const padX = Math.floor((side - region.width) / 2)
  const padY = Math.floor((side - region.height) / 2)
  const xy = out.data as Float32Array
  return Array.from({ length: 68 }, (_, i): Point => [region.x + xy[2 * i] * side - padX, region.y + xy[2 * i + 1] * side - padY])
}

/**
 * Every face in the image, best first: boxes from face-api's tiny detector (or SCRFD when given), the 68
 * landmarks from face-api's landmark net, and the five points from the landmarks (or SCRFD's keypoints).
 */
export function detectFaces(image: ImageTensor, options: DetectOptions = {}): Promise<Face[]> {
  // one detection per image: the reference is looked at by the guide and by each metric
  const byDetector = detected.get(image) ?? new Map<string, Promise<Face[]>>()
  detected.set(image, byDetector)
  const key = options.scrfd ?? 'tiny'
  let faces = byDetector.get(key)
  if (!faces) {
    faces = detect(image, options)
    byDetector.set(key, faces)
    faces.catch(() => byDetector.delete(key))
  }
  return faces
}

const detected = new WeakMap<ImageTensor, Map<string, Promise<Face[]>>>()

async function detect(image: ImageTensor, options: DetectOptions): Promise<Face[]> {
  const detections: (Detection & { points?: Point[] })[] = options.scrfd ? await scrfdDetect(options.scrfd, image) : await tinyDetect(image)
  const faces: Face[] = []
  for (const { box, score, points } of detections) {
    const landmarks = await landmarksIn(image, box)
    faces.push({ box, score, landmarks, points: points ?? fivePoints(landmarks) })
  }
  return faces
}

/**
 * face-api's tiny detector: the image top-left in a square, as face-api feeds it. It misses faces that fill
 * the frame (small generated images often are such crops), so where it finds none it looks again with the
 * image shrunk to the middle of a larger grey square.
 */
async function tinyDetect(image: ImageTensor): Promise<Detection[]> {
  const { detector } = await faceSessions()
  for (const margin of [1, 1.5, 2.5]) {
    const scale = DETECTOR_SIZE / (margin * Math.max(image.width, image.height))
    const width = Math.max(1, Math.round(image.width * scale))
    const height = Math.max(1, Math.round(image.height * scale))
    const left = margin === 1 ? 0 : Math.floor((DETECTOR_SIZE - width) / 2)
    const top = margin === 1 ? 0 : Math.floor((DETECTOR_SIZE - height) / 2)
    // sharp resizes before it extends: the image scaled, then placed in the square
    const background = margin === 1 ? '#000000' : '#808080'
    const { data } = await sharp(imageToPixels(image), { raw: { width: image.width, height: image.height, channels: 3 } })
      .resize(width, height, { fit: 'fill', kernel: 'linear' })
      .extend({ left, top, right: DETECTOR_SIZE - width - left, bottom: DETECTOR_SIZE - height - top, background })
      .raw()
      .toBuffer({ resolveWithObject: true })
    const { grid } = await detector.run({ image: planar(data, DETECTOR_SIZE) })
    const found = decodeDetections(grid.data as Float32Array, grid.dims[2])
    if (found.length > 0) {
      return found.map(({ score, box }) => ({ score, box: { x: (box.x - left) / scale, y: (box.y - top) / scale, width: box.width / scale, height: box.height / scale } }))
    }
  }
  return []
}
