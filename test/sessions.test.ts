// One session factory (the run's --device/--threads reach every session) and one face detection per image.
import assert from 'node:assert/strict'
import { detectFaces } from '../guides/face.js'
import { drawnFaces } from '../src/world/world.js'
import { sessionSettings, setSessionDefaults } from '../src/onnx/session.js'

describe('sessions and face detection', () => {
  after(() => setSessionDefaults({ device: 'cpu', threads: 0 }))

  it('fills a session\'s device and threads from the run\'s defaults', () => {
    setSessionDefaults({ threads: 1 })
    assert.deepEqual(sessionSettings(), { device: 'cpu', threads: 1 })
    assert.deepEqual(sessionSettings({ threads: 2 }), { device: 'cpu', threads: 2 })
  })

  it('detects the faces of an image once, however many guides and metrics look at it', async () => {
    const face = drawnFaces(128)[0]
    const image = { data: face.pixels, width: 128, height: 128 }
    const first = detectFaces(image)
    assert.equal(detectFaces(image), first, 'the same detection')
    assert.notEqual(detectFaces({ ...image }), first, 'another image is detected afresh')
    assert.ok(Array.isArray(await first))
  })
})
