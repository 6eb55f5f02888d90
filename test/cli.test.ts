// The `lookahead` CLI as a user runs it: compiled, in a child process, with its exit codes and one-line errors.
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'

const root = resolve(import.meta.dirname, '..')
const run = promisify(execFile)

describe('lookahead CLI', function () {
  this.timeout(240000)
  let dir: string
  let env: NodeJS.ProcessEnv

  /** Runs the CLI; resolves with its exit code and output whether it fails or not. */
  async function lookahead(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const { stdout, stderr } = await run('node', [join(root, 'bin', 'run.js'), ...args], { env, cwd: dir })
      return { code: 0, stdout, stderr }
    } catch (error) {
      const e = error as { code: number; stdout: string; stderr: string }
      return { code: e.code, stdout: e.stdout, stderr: e.stderr }
    }
  }

  before(async () => {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root }) // the CLI runs the compiled commands
    dir = await mkdtemp(join(tmpdir(), 'lookahead-cli-'))
    env = { ...process.env, LOOKAHEAD_CACHE: join(dir, 'cache'), LOOKAHEAD_MODELS: '', FORCE_COLOR: '0' }
  })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('lists its commands', async () => {
    const { code, stdout } = await lookahead('--help')
    assert.equal(code, 0)
    for (const command of ['guide', 'compare', 'preview', 'generate', 'grad', 'models', 'world', 'info']) assert.match(stdout, new RegExp(`\\b${command}\\b`))
  })

  it('guides a demo-world image (the README command, smaller) and reports JSON', async () => {
    const out = join(dir, 'guided.png')
    const { code, stdout } = await lookahead('guide', '--world', 'demo', '--loss', 'id', '--ref', 'world:dev', '--steps', '20', '--guide-step', '4', '--iters', '3', '--lr', '0.01', '-o', out, '--json')
    assert.equal(code, 0)
    const result = JSON.parse(stdout)
    assert.equal(result.iterations.length, 3)
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
      [['guide', '--world', 'demo', '--ref', 'world:dev', '--guide-step', '60', '-o', join(dir, 'd.png')], /guide step 60 is outside 0…49/],
      [['guide', '--world', 'demo', '--ref', 'world:dev', '--lr', 'fast', '-o', join(dir, 'e.png')], /--lr fast: expected a number/],
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
    assert.equal(kept.guidanceEvaluations, 33)
    assert.equal(recomputed.guidanceEvaluations, 41.25) // (S − 1)/S of one more forward per pass
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
