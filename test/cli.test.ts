// The `lookahead` CLI as a user runs it: compiled, in a child process, with its exit codes and one-line errors.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { root, useCli } from './cli-harness.js'

const run = promisify(execFile)

describe('lookahead CLI', function () {
  this.timeout(240000)
  const cli = useCli('lookahead-cli-')
  const lookahead = cli.lookahead
  let dir: string
  let env: NodeJS.ProcessEnv
  before(() => { ({ dir, env } = cli) })

  it('lists its commands', async () => {
    const { code, stdout } = await lookahead('--help')
    assert.equal(code, 0)
    for (const command of ['guide', 'compare', 'figure', 'preview', 'generate', 'grad', 'models', 'world', 'info']) assert.match(stdout, new RegExp(`\\b${command}\\b`))
  })

  it('guides a demo-world image (the README command, smaller) and reports JSON', async () => {
    const out = join(dir, 'guided.png')
    const { code, stdout } = await lookahead('guide', '--world', 'demo', '--loss', 'id', '--ref', 'world:dev', '--steps', '20', '--guide-step', '4', '--iters', '3', '--lr', '0.01', '-o', out, '--json')
    assert.equal(code, 0)
    const result = JSON.parse(stdout)
    assert.equal(result.iterations.length, 3)
    assert.ok(result.iterations.every((i: { round: number }) => i.round === 0), 'each iteration names its round')
    assert.ok(Number.isFinite(result.finalLoss) && result.finalLoss !== result.iterations[2].loss, 'the loss after the last update')
    assert.equal(result.settings.size, 256)
    assert.equal(result.settings.cfg, 1, 'a world without text samples without CFG')
    assert.ok(result.iterations.every((i: { loss: number }) => Number.isFinite(i.loss)))
    assert.ok(result.metrics.world.name, 'the demo world places the final latent')
    assert.equal((await readFile(out)).subarray(1, 4).toString(), 'PNG')
  })

  it('fails with one line and exit 1 on bad input, writing nothing', async () => {
    const notImage = join(dir, 'not-an-image.png')
    await writeFile(notImage, 'plain text')
    const cases: [string[], RegExp][] = [
      [['guide', '--world', 'demo', '--ref', join(dir, 'missing.png'), '-o', join(dir, 'a.png')], /cannot read image .*missing\.png/],
      [['guide', '--world', 'demo', '--ref', notImage, '-o', join(dir, 'b.png')], /cannot read image .*not-an-image\.png/],
      [['guide', '--world', 'demo', '--ref', 'world:nobody', '-o', join(dir, 'c.png')], /the demo world's faces are/],
      [['guide', '--world', 'demo', '--ref', 'world:dev', '--guide-step', '60', '-o', join(dir, 'd.png')], /--guide-steps 60: step 60 is outside 0…49/],
      [['guide', '--world', 'demo', '--ref', 'world:dev', '--lr', 'fast', '-o', join(dir, 'e.png')], /--lr fast: expected a positive number/],
      [['generate', 'x', '--models', join(dir, 'nowhere'), '-o', join(dir, 'f.png')], /models folder .*nowhere does not exist/],
    ]
    for (const [args, message] of cases) {
      const { code, stderr } = await lookahead(...args)
      assert.equal(code, 1, `${args.join(' ')}: exit ${code}, ${stderr}`)
      assert.match(stderr, message)
      assert.equal(stderr.trim().split('\n').length, 1, `one line: ${stderr}`)
      assert.ok(!existsSync(args[args.length - 1]), 'no output file')
    }
  })

  it('checks settings and output paths before any work, and under --json answers errors in JSON with their exit code', async () => {
    const cache = join(dir, 'cache-untouched')
    const cases: [string[], RegExp, number][] = [
      [['guide', '--world', 'demo', '--ref', 'world:dev', '--size', '128', '-o', join(dir, 's.png')], /--size 128: this demo world's models work at 256 only/, 1],
      [['guide', '--world', 'demo', '--ref', 'world:dev', '-o', dir], /is a folder/, 1],
      [['guide', '--world', 'demo', '--ref', 'world:dev', '-o', join(dir, 'o.gif')], /name a \.png, \.jpg or \.webp file/, 1],
      [['guide', '--world', 'demo', '--ref', 'world:dev', '--guide-steps', '10,10', '-o', join(dir, 't.png')], /10 is named twice/, 1],
      [['compare', '--world', 'demo', '--ref', 'world:dev', '--seed', '3', '-o', join(dir, 'c')], /Nonexistent flag: --seed/, 2],
    ]
    for (const [args, message, exit] of cases) {
      for (const json of [false, true]) {
        const result = await run('node', [join(root, 'bin', 'run.js'), ...args, ...(json ? ['--json'] : [])], { env: { ...env, LOOKAHEAD_CACHE: cache }, cwd: dir }).then(
          r => ({ code: 0, ...r }), (e: { code: number; stdout: string; stderr: string }) => e)
        assert.equal(result.code, exit, `${args.join(' ')}: ${result.stderr}`)
        const text = json ? result.stdout : result.stderr
        assert.equal(text.trim().split('\n').length, 1, text)
        if (json) assert.deepEqual(JSON.parse(text).error.exit, exit)
        assert.match(text, message)
      }
    }
    assert.ok(!existsSync(cache), 'nothing was built')
  })

  it('compares methods writing each run as it finishes, resumes a folder, and prints n', async () => {
    const out = join(dir, 'comparison')
    const base = ['compare', '--world', 'demo', '--previews', 'none']
    const first = await lookahead(...base, '--steps', '6', '--seeds', '0', '-o', out)
    assert.equal(first.code, 0, first.stderr)
    assert.match(first.stdout, /\(n=1\)/)
    assert.doesNotMatch(first.stdout, /±/, 'no standard error from one image')
    const again = await lookahead(...base, '--steps', '6', '--seeds', '0', '-o', out)
    assert.equal(again.code, 1)
    assert.match(again.stderr, /holds a comparison already: --resume/)
    const resumed = await lookahead(...base, '--steps', '6', '--seeds', '0-2', '--resume', out, '--json')
    assert.equal(resumed.code, 0, resumed.stderr)
    assert.equal((await readFile(join(out, 'runs.jsonl'), 'utf8')).trim().split('\n').length, 3, 'seed 0 was kept, 1 and 2 run')
    const summary = JSON.parse(await readFile(join(out, 'summary.json'), 'utf8'))
    assert.deepEqual([summary.settings.seeds, summary.settings.methods, summary.settings.seed, summary.settings.preview], [[0, 1, 2], ['none'], undefined, undefined])
    const changed = await lookahead(...base, '--steps', '7', '--seeds', '0-2', '--resume', out)
    assert.equal(changed.code, 1)
    assert.match(changed.stderr, /other settings \(steps: 6 there, 7 now\)/)
  })

  it('answers `help`, shows the cache in `info`, and lists the cache', async () => {
    assert.equal((await lookahead('help', 'guide')).code, 0)
    assert.match((await lookahead('info')).stdout, new RegExp(`cache\\s+${join(dir, 'cache')}`))
    const listed = await lookahead('cache', '--json')
    assert.equal(listed.code, 0)
    assert.ok(JSON.parse(listed.stdout).entries.some((e: { name: string }) => e.name === 'demo-world'))
  })

  it('refuses --device cuda at once where the CUDA provider is not installed', async function () {
    const { cudaInstalled } = await import('../src/onnx/session.js')
    if (cudaInstalled()) this.skip()
    const { code, stderr } = await lookahead('guide', '--world', 'demo', '--ref', 'world:dev', '--device', 'cuda', '-o', join(dir, 'cuda.png'))
    assert.equal(code, 1)
    assert.match(stderr, /the CUDA provider is not installed: reinstall with `ONNXRUNTIME_NODE_INSTALL=cuda12/)
    assert.equal(stderr.trim().split('\n').length, 1)
  })

  it('refuses impossible flag combinations', async () => {
    const { code, stderr } = await lookahead('guide', '--world', 'demo', '--models', dir, '-o', join(dir, 'x.png'))
    assert.notEqual(code, 0)
    assert.match(stderr, /cannot also be provided|exclude/)
  })

  it('estimates a guided run with --dry-run, recomputation included, and says when nothing fits the memory limit', async () => {
    const base = ['guide', '--world', 'demo', '--ref', 'world:dev', '--dry-run', '--json']
    const kept = JSON.parse((await lookahead(...base)).stdout)
    const recomputed = JSON.parse((await lookahead(...base, '--recompute', '4')).stdout)
    assert.equal(kept.guidanceEvaluations, 32)
    assert.equal(recomputed.guidanceEvaluations, 39.5) // (S − 1)/S of one more forward per pass
    assert.ok(kept.memory.lowerBound > 0 && kept.memory.lowerBound <= kept.memory.peak, JSON.stringify(kept.memory))
    const tight = await lookahead(...base.slice(0, -1), '--memory-limit', '0.000001')
    assert.equal(tight.code, 0)
    assert.match(tight.stderr, /exceeds 0.000001 GB: no recomputation fits \(a demo world runs at its own size only\)/)
    const zero = await lookahead(...base, '--recompute', '0')
    assert.notEqual(zero.code, 0)
  })

  it('stops on Ctrl-C with exit 130 and no output file', async () => {
    const out = join(dir, 'interrupted.png')
    const { spawn } = await import('node:child_process')
    const child = spawn('node', [join(root, 'bin', 'run.js'), 'guide', '--world', 'demo', '--ref', 'world:dev', '--iters', '50', '-o', out], { env, cwd: dir })
    let stderr = ''
    child.stderr.on('data', chunk => { stderr += chunk })
    await new Promise(done => setTimeout(done, 3000))
    child.kill('SIGINT')
    const code = await new Promise(done => child.on('exit', (c, signal) => done(c ?? signal)))
    assert.equal(code, 130, stderr)
    assert.match(stderr, /interrupted/)
    assert.ok(!existsSync(out))
  })
})
