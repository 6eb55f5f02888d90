// The CLI's parts that need no models: progress without a terminal, output paths, the cache, reports.
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { checkFileOutput, checkFolderOutput, checkImageOutput } from '../src/cli/output.js'
import { LINE_INTERVAL_MS, Progress, progressMode } from '../src/cli/progress.js'
import { cleanCache, listCache } from '../src/cache.js'
import { cachedFolder } from '../src/fsutil.js'
import { ModelsFolder } from '../src/diffusion/models-folder.js'
import { UserError } from '../src/errors.js'
import { stat, summaryTable, type MethodSummary } from '../guides/report.js'

describe('CLI parts', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'lookahead-parts-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('shows a spinner only on a terminal that reports its width; plain lines, at most one per interval, elsewhere', () => {
    assert.equal(progressMode({ isTTY: true, columns: 80 }), 'spinner')
    assert.equal(progressMode({ isTTY: true, columns: 0 }), 'lines', 'ora loops forever at 0 columns')
    assert.equal(progressMode({ isTTY: false }), 'lines')
    const lines: string[] = []
    let now = 0
    const progress = new Progress('preparing', 'lines', line => lines.push(line), () => now)
    progress.text = 'step 1/50'
    now += LINE_INTERVAL_MS
    progress.text = 'step 2/50'
    progress.text = 'step 3/50'
    now += LINE_INTERVAL_MS
    progress.text = 'step 3/50'
    progress.interject('warning: x')
    assert.deepEqual(lines, ['preparing\n', 'step 2/50\n', 'step 3/50\n', 'warning: x\n'])
    const silent: string[] = []
    new Progress('x', 'silent', line => silent.push(line)).text = 'y'
    assert.deepEqual(silent, [])
  })

  it('checks output paths before any work: not a folder, not under a file, a format the extension names', async () => {
    await writeFile(join(dir, 'file.png'), '')
    const refused = (f: () => unknown, pattern: RegExp) => assert.throws(f, (e: unknown) => e instanceof UserError && pattern.test(e.message))
    refused(() => checkImageOutput(dir), /is a folder: name an image file/)
    refused(() => checkImageOutput(join(dir, 'file.png', 'out.png')), /file\.png is a file, not a folder/)
    refused(() => checkImageOutput(join(dir, 'out.gif')), /name a \.png, \.jpg or \.webp file/)
    assert.equal(checkImageOutput(join(dir, 'new', 'out.JPG')), 'jpeg')
    assert.equal(checkImageOutput(join(dir, 'out.webp')), 'webp')
    refused(() => checkFolderOutput(join(dir, 'file.png')), /is a file: name a folder/)
    checkFolderOutput(join(dir, 'new-folder'))
    refused(() => checkFileOutput(dir), /is a folder: name a file/)
  })

  it('never leaves a broken cache entry, and lists and cleans the cache by age', async () => {
    const root = join(dir, 'cache')
    const entry = join(root, 'grad-abc')
    await assert.rejects(cachedFolder(entry, async tmp => { await mkdir(tmp); await writeFile(join(tmp, 'model.onnx'), 'broken') }, async () => { throw new Error('does not load') }), /does not load/)
    assert.ok(!existsSync(entry))
    assert.deepEqual(await listCache(root), [], 'no temporary folder left either')
    await cachedFolder(entry, async tmp => { await mkdir(tmp); await writeFile(join(tmp, 'model.onnx'), 'x'.repeat(1000)) })
    await cachedFolder(join(root, 'old'), async tmp => { await mkdir(tmp); await writeFile(join(tmp, 'model.onnx'), 'y') })
    const week = 7 * 86400e3
    const past = (Date.now() - 2 * week) / 1000
    await utimes(join(root, 'old', 'model.onnx'), past, past)
    await utimes(join(root, 'old'), past, past)
    await mkdir(join(root, 'grad-def.tmp-0a1b2c3d')) // an interrupted build
    const listed = await listCache(root)
    assert.deepEqual(listed.map(e => [e.name, e.bytes, e.unfinished]), [['grad-abc', 1000, false], ['old', 1, false], ['grad-def.tmp-0a1b2c3d', 0, true]])
    const removed = await cleanCache(root, week)
    assert.deepEqual(removed.map(e => e.name).sort(), ['grad-def.tmp-0a1b2c3d', 'old'])
    assert.deepEqual((await listCache(root)).map(e => e.name), ['grad-abc'])
    await cleanCache(root)
    assert.deepEqual(await listCache(root), [])
  })

  it('reports n and no ± for a single value (a standard error needs two)', () => {
    assert.deepEqual(stat([0.5]), { mean: 0.5, n: 1 })
    assert.equal(stat([1, 3])!.se, 1)
    const summary: MethodSummary[] = [{ method: 'lcm', finalLoss: stat([0.25]) }, { method: 'x0', finalLoss: stat([0.5, 0.7]) }]
    assert.deepEqual(summaryTable(summary), [['method', 'loss on own preview'], ['lcm', '0.250 (n=1)'], ['x0', '0.600 ± 0.100 (n=2)']])
  })
})

describe('references and guide descriptions', () => {
  it('shrinks a huge reference when reading it, and says so', async () => {
    const { default: sharp } = await import('sharp')
    const { referenceImage, REFERENCE_MAX_SIDE } = await import('../guides/jobs.js')
    const dir = await mkdtemp(join(tmpdir(), 'lookahead-ref-'))
    try {
      const path = join(dir, 'huge.png')
      await sharp({ create: { width: 4100, height: 3000, channels: 3, background: '#808080' } }).png().toFile(path)
      const notes: string[] = []
      const image = await referenceImage(path, await ModelsFolder.at(dir), note => notes.push(note))
      assert.deepEqual([image.width, image.height], [REFERENCE_MAX_SIDE, Math.round(3000 * REFERENCE_MAX_SIDE / 4100)])
      assert.match(notes.join(), /shrinking the reference 4100×3000/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('describes a weighted loss by its terms as prepared, not as they were before', async () => {
    const { combineGuides } = await import('../guides/guide.js')
    const { pixelGuide } = await import('../src/guidance/guide.js')
    const a = { ...pixelGuide(), description: 'a (not prepared)', async prepare() { a.description = 'a: network A' } }
    const combined = combineGuides([{ guide: a, weight: 1 }, { guide: pixelGuide(), weight: 0.5 }])
    await combined.prepare({})
    assert.equal(combined.description, '1·(a: network A) + 0.5·(mean square of the image)')
  })
})
