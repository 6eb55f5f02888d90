// Our ONNX rebuilds of the npm face networks against the originals: the tfjs implementations bundled in the
// same packages (face-api.esm.js; Human's tfjs.esm.js), run on the same inputs in a worker thread (the browser
// bundles need `process` hidden while they load, which is safe only in a thread of their own).
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { detectorModel } from '../guides/facenet/detector.js'
import { faceresModel, faceresNet } from '../guides/facenet/faceres.js'
import { landmarkModel } from '../guides/facenet/landmarks.js'
import { recognitionNet, recognitionWeights } from '../guides/facenet/recognition.js'
import { faceApiModelDir } from '../guides/facenet/weights.js'
import { GraphBuilder } from '../src/onnx/builder.js'
import { encodeModel, type ModelProto } from '../src/onnx/proto.js'
import { ort } from '../src/onnx/session.js'

/** Runs one network in tfjs: loads the bundle with `process` hidden, registers a minimal platform, runs on the CPU backend. */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const { readFileSync } = require('node:fs')
const { join } = require('node:path')
async function load(url) {
  const saved = globalThis.process
  Object.defineProperty(globalThis, 'process', { value: undefined, configurable: true, writable: true })
  try { return await import(url) } finally { Object.defineProperty(globalThis, 'process', { value: saved, configurable: true, writable: true }) }
}
;(async () => {
  const { bundle, kind, dir, model, net, input, shape } = workerData
  const mod = await load(bundle)
  const tf = kind === 'faceapi' ? mod.tf : mod
  tf.setPlatform('worker', {
    fetch, now: () => performance.now(), encode: s => new TextEncoder().encode(s), decode: (b, e) => new TextDecoder(e).decode(b),
    isTypedArray: a => ArrayBuffer.isView(a) && !(a instanceof DataView), setTimeoutCustom: (f, d) => setTimeout(f, d),
  })
  await tf.setBackend('cpu')
  await tf.ready()
  const x = tf.tensor4d(Float32Array.from(input), shape)
  let out
  if (kind === 'faceapi') {
    const manifest = JSON.parse(readFileSync(join(dir, model + '-weights_manifest.json'), 'utf8'))
    const bin = readFileSync(join(dir, model + '.bin'))
    // face-api asks its environment whether an input is a canvas: give it one where nothing is
    class None {}
    mod.env.setEnv({ Canvas: None, CanvasRenderingContext2D: None, Image: None, ImageData: None, Video: None, createCanvasElement: () => ({}), createImageElement: () => ({}), createVideoElement: () => ({}), fetch, readFile: async () => '' })
    const network = new mod[net]()
    network.loadFromWeightMap(tf.io.decodeWeights(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength), manifest[0].weights))
    out = net === 'TinyFaceDetector' ? await network.forward(x, shape[1]) : await network.forward(x)
  } else {
    const json = JSON.parse(readFileSync(join(dir, 'faceres.json'), 'utf8'))
    const bin = readFileSync(join(dir, 'faceres.bin'))
    const graph = await tf.loadGraphModel(tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: json.weightsManifest[0].weights, weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength) }))
    out = graph.execute(x, 'global_pooling/Mean')
  }
  parentPort.postMessage({ data: Array.from(await out.data()), shape: out.shape })
})().catch(error => parentPort.postMessage({ error: String(error && error.stack || error) }))
`

interface Task { bundle: string; kind: 'faceapi' | 'faceres'; dir: string; model?: string; net?: string; input: Float32Array; shape: number[] }

function tfjs(task: Task): Promise<{ data: number[]; shape: number[] }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER, { eval: true, workerData: { ...task, input: Array.from(task.input) } })
    worker.once('message', message => {
      void worker.terminate()
      if (message.error) reject(new Error(message.error))
      else resolve(message)
    })
    worker.once('error', reject)
  })
}

/** A smooth colour image drawn by code, values 0..255, in NHWC and NCHW. */
function image(size: number) {
  const nhwc = new Float32Array(3 * size * size)
  const nchw = new Float32Array(3 * size * size)
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++) {
        const v = 127.5 + 120 * Math.sin((0.05 * x * (c + 1) * 224) / size + (0.03 * y * 224) / size) * Math.cos(0.02 * (x - y) + c)
        nhwc[(y * size + x) * 3 + c] = v
        nchw[(c * size + y) * size + x] = v
      }
  return { nhwc, nchw }
}

async function runOnnx(model: ModelProto, input: Float32Array, size: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(encodeModel(model))
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', input, [1, 3, size, size]) }
  const out = await session.run(feeds)
  await session.release()
  return out[session.outputNames[0]].data as Float32Array
}

/** A model from a fragment builder: `x` [1,3,size,size] → the fragment's output. */
function fragmentModel(size: number, build: (g: GraphBuilder, x: string) => string): ModelProto {
  const g = new GraphBuilder('reference')
  g.outputAs(build(g, g.input('x', 'float32', [1, 3, size, size])), 'y')
  return g.build()
}

function assertClose(ours: ArrayLike<number>, theirs: ArrayLike<number>, what: string) {
  assert.equal(ours.length, theirs.length, `${what}: lengths`)
  let worst = 0
  let scale = 0
  for (let i = 0; i < ours.length; i++) {
    worst = Math.max(worst, Math.abs(ours[i] - theirs[i]))
    scale = Math.max(scale, Math.abs(theirs[i]))
  }
  if (process.env.VERBOSE) console.log(`      ${what}: largest difference ${worst.toExponential(2)}, largest value ${scale.toFixed(3)}`)
  assert.ok(worst <= 1e-4 * scale, `${what}: largest difference ${worst} (largest value ${scale})`)
}

describe('face networks rebuilt in ONNX equal the tfjs originals', function () {
  const faceApiBundle = pathToFileURL(join(faceApiModelDir(), '..', 'dist', 'face-api.esm.js')).href
  const humanDir = join(dirname(createRequire(import.meta.url).resolve('@vladmandic/human')), '..')

  it('face-api recognition net (descriptor)', async () => {
    const { nhwc, nchw } = image(150)
    const weights = await recognitionWeights()
    const ours = await runOnnx(fragmentModel(150, (g, x) => recognitionNet(g, x, weights)), nchw, 150)
    const theirs = await tfjs({ bundle: faceApiBundle, kind: 'faceapi', dir: faceApiModelDir(), model: 'face_recognition_model', net: 'FaceRecognitionNet', input: nhwc, shape: [1, 150, 150, 3] })
    assertClose(ours, theirs.data, 'descriptor')
  })

  it('face-api tiny face detector (raw grid)', async () => {
    const { nhwc, nchw } = image(416)
    const ours = await runOnnx(await detectorModel(), nchw, 416)
    const theirs = await tfjs({ bundle: faceApiBundle, kind: 'faceapi', dir: faceApiModelDir(), model: 'tiny_face_detector_model', net: 'TinyFaceDetector', input: nhwc, shape: [1, 416, 416, 3] })
    // tfjs gives NHWC [1,13,13,25], we give NCHW [1,25,13,13]
    const [, h, w, c] = theirs.shape
    const transposed = Array.from({ length: c * h * w }, (_, i) => theirs.data[(Math.floor(i / w) % h) * w * c + (i % w) * c + Math.floor(i / (h * w))])
    assertClose(ours, transposed, 'grid')
  })

  it('face-api 68-point landmark net', async () => {
    const { nhwc, nchw } = image(112)
    const ours = await runOnnx(await landmarkModel(), nchw, 112)
    const theirs = await tfjs({ bundle: faceApiBundle, kind: 'faceapi', dir: faceApiModelDir(), model: 'face_landmark_68_model', net: 'FaceLandmark68Net', input: nhwc, shape: [1, 112, 112, 3] })
    assertClose(ours, theirs.data, 'landmarks')
  })

  it("Human's FaceRes (1024-d descriptor)", async () => {
    const { nhwc, nchw } = image(224)
    const model = await faceresModel()
    const ours = await runOnnx(fragmentModel(224, (g, x) => faceresNet(g, x, model)), nchw, 224)
    const theirs = await tfjs({ bundle: pathToFileURL(join(humanDir, 'dist', 'tfjs.esm.js')).href, kind: 'faceres', dir: join(humanDir, 'models'), input: nhwc, shape: [1, 224, 224, 3] })
    assertClose(ours, theirs.data, 'descriptor')
  })
})
