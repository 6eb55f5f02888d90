// The picture commands as a user runs them, in the demo world (short schedules): guide's per-iteration
// previews and animation, compare's report page (rendered by headless chromium where present), fig. 5 and fig. 2.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import sharp from 'sharp'
import { CHROMIUM, dumpDom } from './chromium.js'
import { useCli } from './cli-harness.js'

/** A short schedule: 12 steps, guided at step 3. */
const SHORT = ['--world', 'demo', '--ref', 'world:dev', '--steps', '12', '--guide-steps', '3']

describe('picture commands', function () {
  this.timeout(240000)
  // the tests' shared cache: the demo world and the id loss's gradient model are built once for all tests
  const cli = useCli('lookahead-pictures-cli-', 'shared')
  const lookahead = cli.lookahead
  let dir: string
  before(() => { dir = cli.dir })

  it('guide --save-iterations and --animate: a PNG and an index entry per iteration, a labelled frame each', async () => {
    const frames = join(dir, 'iterations')
    const animation = join(dir, 'run.gif')
    const { code, stdout, stderr } = await lookahead('guide', ...SHORT, '--iters', '3', '-o', join(dir, 'guided.png'), '--save-iterations', frames, '--animate', animation, '--json')
    assert.equal(code, 0, stderr)
    const result = JSON.parse(stdout)
    assert.equal(result.pictures.animation, animation)
    const index = JSON.parse(await readFile(join(frames, 'index.json'), 'utf8'))
    assert.deepEqual(index.iterations.map((i: { loss: number }) => i.loss), result.iterations.map((i: { loss: number }) => i.loss), 'the losses guide reports')
    assert.ok(index.iterations.every((i: { step: number; ms: number }) => i.step === 3 && i.ms > 0))
    assert.deepEqual((await readdir(frames)).sort(), ['final.png', 'index.json', 'reference.png', 'step003-iter000.png', 'step003-iter001.png', 'step003-iter002.png'])
    // the first preview is the unguided preview at step 3: guidance changes the later ones
    const [first, last] = await Promise.all(['step003-iter000.png', 'step003-iter002.png'].map(f => sharp(join(frames, f)).raw().toBuffer()))
    assert.notDeepEqual(first, last)
    const meta = await sharp(animation, { animated: true }).metadata()
    assert.equal(meta.pages, 4, 'three iterations and the final image')
  })

  it('refuses an animation format it cannot write, and pictures of an unguided run, with one line', async () => {
    for (const args of [['--animate', join(dir, 'run.mp4')], ['--preview', 'none', '--save-iterations', join(dir, 'none')]]) {
      const { code, stderr } = await lookahead('guide', ...SHORT, '-o', join(dir, 'refused.png'), ...args)
      assert.equal(code, 1)
      assert.equal(stderr.trim().split('\n').length, 1, stderr)
      assert.match(stderr, /\.webp or \.gif|need --preview x0 or lcm/)
    }
    assert.ok(!existsSync(join(dir, 'refused.png')) && !existsSync(join(dir, 'none')))
  })

  it('compare writes report.html beside a grid with the reference column, and chromium renders its tables and chart', async () => {
    const out = join(dir, 'compare')
    const { code, stderr } = await lookahead('compare', ...SHORT, '--iters', '2', '--seeds', '0,1', '--previews', 'none,lcm', '-o', out)
    assert.equal(code, 0, stderr)
    const grid = await sharp(join(out, 'grid.png')).metadata()
    assert.equal(grid.width, 3 * 256 + 4 * 4, 'the reference, none, lcm')
    const html = await readFile(join(out, 'report.html'), 'utf8')
    assert.doesNotMatch(html, /https?:|<script|<link/i)
    if (!CHROMIUM) {
      console.log('      skipped the rendering: no chromium (Debian: apt-get install chromium)')
      return
    }
    const dom = await dumpDom(join(out, 'report.html'))
    const tables = [...dom.matchAll(/<table>([\s\S]*?)<\/table>/g)].map(m => m[1])
    assert.equal(tables[0].match(/<tr>/g)?.length, 3, 'a header, none, lcm')
    assert.equal(tables[1].match(/<tr>/g)?.length, 2, 'a header, lcm − none')
    assert.equal(dom.match(/<path class="mean"/g)?.length, 1, 'the guided method\'s loss curve')
  })

  it('figure: a row per loss whose network is present, the absent one named, the reference first', async () => {
    const out = join(dir, 'fig5.png')
    const { code, stdout, stderr } = await lookahead('figure', ...SHORT, '--iters', '2', '--losses', 'id,lpips', '--previews', 'none,lcm', '-o', out, '--json')
    assert.equal(code, 0, stderr)
    const result = JSON.parse(stdout)
    assert.deepEqual(result.skipped.map((s: { loss: string }) => s.loss), ['lpips'])
    assert.match(result.skipped[0].reason, /no guides.lpips_alex.model.onnx in .*the lpips guide needs it.*Guide networks/)
    assert.deepEqual(result.runs.map((r: { loss: string; method: string }) => `${r.loss} ${r.method}`), ['id none', 'id lcm'])
    const meta = await sharp(out).metadata()
    assert.equal(meta.width, 3 * 256 + 4 * 4, 'the reference, none, lcm')
  })

  it('preview: the reference and the final image once, and each preview\'s distance to the final image', async () => {
    const out = join(dir, 'fig2.png')
    const { code, stdout, stderr } = await lookahead('preview', '--world', 'demo', '--ref', 'world:dev', '--steps', '12', '--at', '1,6', '-o', out, '--json')
    assert.equal(code, 0, stderr)
    const result = JSON.parse(stdout)
    assert.deepEqual(result.steps.map((s: { step: number }) => s.step), [1, 6])
    for (const { distanceToFinal } of result.steps) assert.ok(distanceToFinal.x0 > 0 && distanceToFinal.lcm > 0 && distanceToFinal.x0 < 2)
    const meta = await sharp(out).metadata()
    assert.equal(meta.width, 4 * 256 + 5 * 4, 'the reference, x0, lcm, the final image')
  })
})
