// The file layouts users have: weights that are symlinks (a Hugging Face cache: snapshots/…/model.onnx_data →
// blobs/<sha>), and a cache on another file system than the models (no hard links: writeModel falls back to symlinks).
import assert from 'node:assert/strict'
import { lstat, mkdir, mkdtemp, rename, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GraphBuilder } from '../src/onnx/builder.js'
import { embedModel } from '../src/onnx/compose.js'
import { seededNormal } from '../src/onnx/layers.js'
import { fileLinks, readModel, writeModel, writeModelWithExternalData } from '../src/onnx/proto.js'
import { closeSessions, openSession, ort } from '../src/onnx/session.js'

const randn = (n: number, seed: number) => Float32Array.from({ length: n }, seededNormal(seed))

/** y = tanh(x·W), W in external data. */
function dense(seed: number) {
  const g = new GraphBuilder('dense', 17)
  const x = g.input('x', 'float32', [2, 16])
  g.outputAs(g.op('Tanh', [g.op('MatMul', [x, g.constant(randn(16 * 16, seed), [16, 16])])]), 'y', 'float32', [2, 16])
  return g.build()
}

const x = new ort.Tensor('float32', randn(32, 9), [2, 16])
const outputOf = async (path: string) => Array.from((await (await openSession(path)).run({ x })).y.data as Float32Array)

/** A model folder laid out as the Hugging Face cache does: the data file is a symlink into blobs/. */
async function symlinkedModel(root: string, name: string, seed: number): Promise<string> {
  const path = join(root, 'snapshots', name, 'model.onnx')
  await writeModelWithExternalData(dense(seed), path)
  await mkdir(join(root, 'blobs'), { recursive: true })
  await rename(`${path}_data`, join(root, 'blobs', `sha-${name}`))
  await symlink(join('..', '..', 'blobs', `sha-${name}`), `${path}_data`)
  return path
}

describe('file layouts', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-layouts-')) })
  afterEach(closeSessions)
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('opens a model whose weights file is a symlink out of its folder (the Hugging Face cache layout)', async () => {
    const plain = join(dir, 'plain', 'model.onnx')
    await writeModelWithExternalData(dense(1), plain)
    const linked = await symlinkedModel(join(dir, 'hub'), 'a', 1)
    assert.ok((await lstat(`${linked}_data`)).isSymbolicLink())
    assert.deepEqual(await outputOf(linked), await outputOf(plain))
  })

  it('opens a derived model of symlinked weights written into a cache (the weights hard-linked at their real path)', async () => {
    const linked = await symlinkedModel(join(dir, 'hub3'), 'a', 3)
    const derived = join(dir, 'cache3', 'model.onnx')
    const g = new GraphBuilder('neg', 17)
    g.outputAs(g.op('Neg', [embedModel(g, await readModel(linked), { x: g.input('x', 'float32', [2, 16]) }, 'a/').y]), 'y', 'float32', [2, 16])
    await writeModel({ model: g.build(), dir }, derived)
    assert.ok(!(await lstat(join(dir, 'cache3', 'model.onnx_data'))).isSymbolicLink())
    assert.deepEqual(await outputOf(derived), (await outputOf(linked)).map(v => -v))
  })

  it('opens a derived model written into a cache on another file system (hard links fail: symlinks to two weight folders)', async () => {
    const [first, second] = [await symlinkedModel(join(dir, 'hub2'), 'a', 1), join(dir, 'other', 'model.onnx')]
    await writeModelWithExternalData(dense(2), second)
    const g = new GraphBuilder('chain', 17)
    const input = g.input('x', 'float32', [2, 16])
    g.outputAs(embedModel(g, await readModel(second), { x: embedModel(g, await readModel(first), { x: input }, 'a/').y }, 'b/').y, 'y', 'float32', [2, 16])
    const derived = join(dir, 'cache', 'chain', 'model.onnx')
    const { link } = fileLinks
    fileLinks.link = async () => { throw Object.assign(new Error('EXDEV: cross-device link not permitted'), { code: 'EXDEV' }) }
    try {
      await writeModel({ model: g.build(), dir }, derived)
    } finally {
      fileLinks.link = link
    }
    assert.ok((await lstat(join(dir, 'cache', 'chain', 'model.onnx_data'))).isSymbolicLink())
    const y = (await (await openSession(first)).run({ x })).y
    const expected = Array.from((await (await openSession(second)).run({ x: y })).y.data as Float32Array)
    assert.deepEqual(await outputOf(derived), expected)
  })
})
