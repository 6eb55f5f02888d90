// The compiled `lookahead` CLI in a child process, as a user runs it, for the CLI tests: compiled once per
// test file, run in a temporary folder, with its exit code and output whether it fails or not.
import { execFile, execFileSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'

export const root = resolve(import.meta.dirname, '..')
const run = promisify(execFile)

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

export interface Cli {
  /** the temporary folder the CLI runs in (removed after the tests) */
  dir: string
  env: NodeJS.ProcessEnv
  lookahead(...args: string[]): Promise<CliResult>
}

/**
 * Registers the hooks of a describe block that runs the CLI. `cache`: 'fresh' gives the CLI an empty cache
 * in the folder (the demo world and gradient models are built as on first use); 'shared' the tests' cache.
 */
export function useCli(prefix: string, cache: 'fresh' | 'shared' = 'fresh'): Cli {
  const cli: Cli = {
    dir: '',
    env: {},
    async lookahead(...args) {
      try {
        const { stdout, stderr } = await run('node', [join(root, 'bin', 'run.js'), ...args], { env: cli.env, cwd: cli.dir, maxBuffer: 64 << 20 })
        return { code: 0, stdout, stderr }
      } catch (error) {
        const e = error as CliResult
        return { code: e.code, stdout: e.stdout, stderr: e.stderr }
      }
    },
  }
  before(async () => {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root }) // the CLI runs the compiled commands
    cli.dir = await mkdtemp(join(tmpdir(), prefix))
    const cacheDir = cache === 'fresh' ? join(cli.dir, 'cache') : process.env.LOOKAHEAD_CACHE
    cli.env = { ...process.env, LOOKAHEAD_CACHE: cacheDir, LOOKAHEAD_MODELS: '', FORCE_COLOR: '0' }
  })
  after(async () => { await rm(cli.dir, { recursive: true, force: true }) })
  return cli
}
