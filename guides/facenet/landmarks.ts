// face-api's 68-point landmark network (FaceFeatureExtractor: four dense blocks of depthwise-separable convs,
// then a fully connected layer), rebuilt as ONNX. Structure: face-api src/faceFeatureExtractor, src/faceLandmarkNet.
import { GraphBuilder } from '../../src/onnx/builder.js'
import { add, normaliseRgb, pool, separableConv, tfConv, unary, type Feature } from './ops.js'
import { faceApiWeights, type Weight } from './weights.js'

export const LANDMARK_SIZE = 112
const MEAN_RGB: [number, number, number] = [122.782, 117.001, 104.298]

/** The landmark net as a model: `face` [1,3,112,112] RGB 0..255 → `landmarks` [1,136] (x, y pairs in 0..1 of the input). */
export async function landmarkModel() {
  const w = await faceApiWeights('face_landmark_68_model')
  const get = (name: string): Weight => w.get(name)!
  const g = new GraphBuilder('face_landmark_68')
  const face = g.input('face', 'float32', [1, 3, LANDMARK_SIZE, LANDMARK_SIZE])
  const relu = (x: Feature) => unary(g, 'Relu', x)
  const sep = (x: Feature, p: string, stride: number) =>
    separableConv(g, x, get(`${p}/depthwise_filter`), get(`${p}/pointwise_filter`), get(`${p}/bias`), stride, 'same')
  let x: Feature = { name: normaliseRgb(g, face, MEAN_RGB), channels: 3, height: LANDMARK_SIZE, width: LANDMARK_SIZE }
  for (let block = 0; block < 4; block++) {
    const p = `dense${block}`
    const out1 = relu(block === 0 ? tfConv(g, x, get(`${p}/conv0/filters`), get(`${p}/conv0/bias`), 2, 'same') : sep(x, `${p}/conv0`, 2))
    const out2 = sep(out1, `${p}/conv1`, 1)
    const out3 = sep(relu(add(g, out1, out2)), `${p}/conv2`, 1)
    const sum3 = add(g, out1, add(g, out2, out3))
    const out4 = sep(relu(sum3), `${p}/conv3`, 1)
    x = relu(add(g, out1, add(g, out2, add(g, out3, out4))))
  }
  x = pool(g, 'AveragePool', x, 7, 2, 'valid')
  const flat = g.op('Reshape', [x.name, g.ints([1, -1])])
  const fcW = get('fc/weights')
  const y = g.op('Add', [g.op('MatMul', [flat, g.constant(fcW.values, fcW.shape, 'float32', 'fc')]), g.constant(get('fc/bias').values, [136], 'float32', 'fc_bias')])
  g.outputAs(y, 'landmarks', 'float32', [1, 136])
  return g.build()
}
