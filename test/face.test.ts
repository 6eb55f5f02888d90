import { fixtureOrSkip, fixtures } from './fixtures.js'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { applyAffine, arcfaceTransform, ARCFACE_TEMPLATE, invertAffine, similarityTransform, warpAffine, type Affine } from '../guides/align.js'
import { detectFaces, type Face, type Point } from '../guides/face.js'
import { evaluateFragment } from '../guides/guide.js'
import { faceApiRecognizer } from '../guides/recognizers.js'
import { scrfdDetect } from '../guides/scrfd.js'
import { loadImage, resizeImage, type ImageTensor } from '../src/image/image.js'
import { GraphBuilder } from '../src/onnx/builder.js'
import { writeModel } from '../src/onnx/proto.js'
import { closeSessions } from '../src/onnx/session.js'

const faces = join(fixtures, 'faces')
const photos = ['obama.jpg', 'obama2.jpg', 'biden.jpg', 'astronaut.png']

/** A smooth random-looking test image drawn by code. */
function pattern(width: number, height: number): ImageTensor {
  const data = new Float32Array(3 * width * height)
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) data[(c * height + y) * width + x] = Math.sin(0.37 * x + 1.3 * c) * Math.cos(0.23 * y - c)
  return { data, width, height }
}

/** Bilinear sample with clamped coordinates, in plain JS: the reference for the warp graph. */
function sample(image: ImageTensor, c: number, [x, y]: Point): number {
  const cx = Math.min(Math.max(x, 0), image.width - 1)
  const cy = Math.min(Math.max(y, 0), image.height - 1)
  const x0 = Math.min(Math.floor(cx), image.width - 2)
  const y0 = Math.min(Math.floor(cy), image.height - 2)
  const fx = cx - x0
  const fy = cy - y0
  const at = (xx: number, yy: number) => image.data[(c * image.height + yy) * image.width + xx]
  return (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) + fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1))
}

describe('face alignment', () => {
  it('recovers a similarity transform from its points (Umeyama)', () => {
    const angle = 0.3
    const truth: Affine = [1.7 * Math.cos(angle), -1.7 * Math.sin(angle), 12, 1.7 * Math.sin(angle), 1.7 * Math.cos(angle), -5]
    const from = ARCFACE_TEMPLATE
    const to = from.map(p => applyAffine(truth, p))
    similarityTransform(from, to).forEach((v, i) => assert.ok(Math.abs(v - truth[i]) < 1e-9, `entry ${i}`))
    const back = invertAffine(truth)
    to.forEach((p, i) => applyAffine(back, p).forEach((v, k) => assert.ok(Math.abs(v - from[i][k]) < 1e-9)))
    // the template maps onto itself
    arcfaceTransform(ARCFACE_TEMPLATE).forEach((v, i) => assert.ok(Math.abs(v - [1, 0, 0, 0, 1, 0][i]) < 1e-9))
  })

  it('warps with bilinear sampling equal to a JS reference, rotated and scaled', async () => {
    const image = pattern(40, 30)
    const crop: Affine = invertAffine(similarityTransform([[5, 4], [30, 6]], [[0, 0], [19, 0]]))
    const [out] = await evaluateFragment(image, (g, x, size) => [warpAffine(g, x, size, g.constant(Float32Array.from(crop), [2, 3]), { height: 16, width: 20 })])
    let worst = 0
    for (let c = 0; c < 3; c++)
      for (let v = 0; v < 16; v++)
        for (let u = 0; u < 20; u++) worst = Math.max(worst, Math.abs(out[(c * 16 + v) * 20 + u] - sample(image, c, applyAffine(crop, [u, v]))))
    assert.ok(worst < 1e-5, `largest difference ${worst}`)
  })

  it('is the identity with the identity matrix', async () => {
    const image = pattern(9, 7)
    const [out] = await evaluateFragment(image, (g: GraphBuilder, x, size) => [warpAffine(g, x, size, g.constant([1, 0, 0, 0, 1, 0], [2, 3]), size)])
    out.forEach((v, i) => assert.ok(Math.abs(v - image.data[i]) < 1e-6))
  })
})

describe('face detection and recognition on real photos', function () {
  const found = new Map<string, { image: ImageTensor; faces: Face[] }>()
  before(async function () {
    fixtureOrSkip(this, 'faces')
    for (const photo of photos) {
      const image = await loadImage(join(faces, photo))
      found.set(photo, { image, faces: await detectFaces(image) })
    }
  })

  for (const photo of photos) {
    it(`finds exactly one face in ${photo}, with the eye points on the eyes`, () => {
      const { faces: detected } = found.get(photo)!
      assert.equal(detected.length, 1)
      const [{ box, points, landmarks }] = detected
      const [leftEye, rightEye, nose, mouthLeft, mouthRight] = points
      // image-left eye left of the image-right eye, both in the upper half of the box, nose and mouth below them
      assert.ok(leftEye[0] < rightEye[0])
      for (const eye of [leftEye, rightEye]) {
        assert.ok(eye[0] > box.x && eye[0] < box.x + box.width)
        assert.ok(eye[1] > box.y && eye[1] < box.y + 0.6 * box.height, `eye at ${eye} in box ${JSON.stringify(box)}`)
      }
      assert.ok(nose[1] > leftEye[1] && mouthLeft[1] > nose[1] && mouthRight[1] > nose[1])
      const eyeDistance = rightEye[0] - leftEye[0]
      assert.ok(eyeDistance > 0.25 * box.width && eyeDistance < 0.6 * box.width, `eye distance ${eyeDistance}`)
      // each eye centre lies inside the span of its six eye landmarks
      for (const [eye, from] of [[leftEye, 36], [rightEye, 42]] as const) {
        const xs = landmarks.slice(from, from + 6).map(p => p[0])
        assert.ok(eye[0] >= Math.min(...xs) && eye[0] <= Math.max(...xs))
      }
    })
  }

  it('finds the face in small frame-filling crops, as generated images are, with the eyes in the same place', async () => {
    for (const photo of photos) {
      const { image, faces: [face] } = found.get(photo)!
      const side = Math.round(1.2 * Math.max(face.box.width, face.box.height))
      const left = Math.max(0, Math.round(face.box.x + face.box.width / 2 - side / 2))
      const top = Math.max(0, Math.round(face.box.y + face.box.height / 2 - side / 2))
      const crop: ImageTensor = { width: side, height: side, data: new Float32Array(3 * side * side) }
      for (let c = 0; c < 3; c++)
        for (let y = 0; y < side; y++)
          for (let x = 0; x < side; x++) crop.data[(c * side + y) * side + x] = image.data[(c * image.height + Math.min(top + y, image.height - 1)) * image.width + Math.min(left + x, image.width - 1)]
      const eyes = (f: Face, size: number) => f.points.slice(0, 2).flat().map(v => v / size)
      const expected = eyes({ ...face, points: face.points.map(([x, y]): Point => [x - left, y - top]) }, side)
      for (const size of [64, 128]) {
        const small = await detectFaces(resizeImage(crop, size, size))
        assert.equal(small.length, 1, `${photo} at ${size}px`)
        eyes(small[0], size).forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 0.05, `${photo} at ${size}px: eye coordinate ${v} vs ${expected[i]}`))
      }
    }
  })

  it('scores the same person (obama, obama2) clearly closer than other people, with the face-api network', async () => {
    const recognizer = await faceApiRecognizer()
    const descriptor = async (photo: string) => {
      const { image, faces: [face] } = found.get(photo)!
      const crop = Float32Array.from(invertAffine(recognizer.cropTransform(face)))
      const side = recognizer.cropSize
      const [d] = await evaluateFragment(image, (g, x, size) => [recognizer.embed(g, warpAffine(g, x, size, g.constant(crop, [2, 3]), { height: side, width: side }))])
      return d
    }
    const d = Object.fromEntries(await Promise.all(photos.map(async p => [p, await descriptor(p)] as const)))
    const distance = (a: string, b: string) => Math.hypot(...d[a].map((v, i) => v - d[b][i]))
    const same = distance('obama.jpg', 'obama2.jpg')
    const others = [distance('obama.jpg', 'biden.jpg'), distance('obama.jpg', 'astronaut.png')]
    // face-api calls < 0.6 the same person; ../shared/reference/face-recognition-net.md measured 0.467 / 0.833 / 0.884
    assert.ok(same < 0.55, `obama–obama2 ${same}`)
    for (const other of others) assert.ok(other > 0.7 && other > same + 0.25, `obama–other ${other} vs same ${same}`)
    assert.ok(Math.abs(Math.hypot(...d['obama.jpg']) - 1.4) < 0.2, 'descriptor norm ≈ 1.4')
  })
})

/**
 * An SCRFD-shaped stand-in: input [1,3,H,W], nine outputs (scores, box distances, keypoints at strides 8,
 * 16, 32, two anchors per cell) holding planted detections; they depend on the input only through a zero.
 */
function scrfdStandIn(planted: { stride: number; index: number; score: number; box: number[]; keypoints: number[] }[]) {
  const g = new GraphBuilder('scrfd', 17)
  const input = g.input('input.1', 'float32', [1, 3, 'H', 'W'])
  const zero = g.op('Mul', [g.op('ReduceMean', [input], { axes: [0, 1, 2, 3], keepdims: 0 }), g.constant([0], [])])
  const outputs: [string, Float32Array, number][] = []
  for (const [kind, width] of [['score', 1], ['bbox', 4], ['kps', 10]] as const) {
    for (const stride of [8, 16, 32]) {
      const count = (640 / stride) ** 2 * 2
      const values = new Float32Array(count * width).fill(kind === 'score' ? 0.01 : 1)
      for (const p of planted.filter(p => p.stride === stride)) values.set(kind === 'score' ? [p.score] : kind === 'bbox' ? p.box : p.keypoints, p.index * width)
      outputs.push([`${kind}_${stride}`, values, width])
    }
  }
  for (const [name, values, width] of outputs) g.outputAs(g.op('Add', [g.constant(values, [values.length / width, width]), zero]), name, 'float32', [values.length / width, width])
  return g.build()
}

describe('SCRFD decoding (stand-in export)', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-scrfd-')) })
  after(async () => { await closeSessions(); await rm(dir, { recursive: true, force: true }) })

  it('letterboxes, decodes anchors, boxes and keypoints, and suppresses overlaps', async () => {
    // a 320×240 image is scaled by 2 into the 640×640 input; anchor (x 20, y 15) of stride 8 has its centre at (160, 120)
    const cell = (stride: number, x: number, y: number) => (y * (640 / stride) + x) * 2
    const keypoints = [-1, -1, 1, -1, 0, 0, -1, 1, 1, 1]
    const path = join(dir, 'scrfd.onnx')
    await writeModel({ model: scrfdStandIn([
      { stride: 8, index: cell(8, 20, 15), score: 0.9, box: [2, 3, 2, 3], keypoints },
      { stride: 8, index: cell(8, 20, 15) + 1, score: 0.8, box: [2, 3, 2.2, 3], keypoints }, // the same face again: suppressed
      { stride: 32, index: cell(32, 5, 10), score: 0.7, box: [1, 1, 1, 1], keypoints },
    ]), dir }, path)
    const found = await scrfdDetect(path, pattern(320, 240))
    assert.equal(found.length, 2)
    const [first, second] = found
    assert.ok(Math.abs(first.score - 0.9) < 1e-6)
    const near = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]) < 1e-4)
    assert.ok(near(Object.values(first.box), [72, 48, 16, 24]), JSON.stringify(first.box))
    assert.ok(near(first.points.flat(), [76, 56, 84, 56, 80, 60, 76, 64, 84, 64]), JSON.stringify(first.points))
    assert.ok(near(Object.values(second.box), [64, 144, 32, 32]), JSON.stringify(second.box))
    // detectFaces keeps SCRFD's boxes and five points and adds face-api's 68 landmarks in each box
    const faces = await detectFaces(pattern(320, 240), { scrfd: path })
    assert.deepEqual(faces.map(f => f.points), found.map(f => f.points))
    assert.equal(faces[0].landmarks.length, 68)
  })
})
