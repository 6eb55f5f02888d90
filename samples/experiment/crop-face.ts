// The best face of an image cropped as the world's faces are (world build --crop-faces): the experiment's
// reference, so that its place in the world is found from the same framing as the components'.
// Usage: tsx samples/experiment/crop-face.ts IMAGE SIZE OUT.png
import { detectFaces } from '../../guides/face.js'
import { loadImage, saveImage } from '../../src/image/image.js'
import { faceCrop } from '../../src/world/world.js'

const [input, size, output] = process.argv.slice(2)
if (!output) throw new Error('usage: tsx samples/experiment/crop-face.ts IMAGE SIZE OUT.png')
const image = await loadImage(input)
const [face] = await detectFaces(image)
if (!face) throw new Error(`no face found in ${input}`)
await saveImage(await faceCrop(image, face.box, Number(size)), output)
