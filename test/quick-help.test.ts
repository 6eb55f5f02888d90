// The help that bin/run.js lays out without oclif (src/cli/quick.ts) against oclif's own: the same text for the
// root, every command and every topic, asked for in each way, at several widths, with and without colour.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync, utimesSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { root, useCli } from './cli-harness.js'

type Quick = typeof import('../src/cli/quick.js')
type Table = typeof import('../src/cli/help-table.js')

const run = promisify(execFile)
const WIDTHS = [40, 80, 133]

/** oclif's help for each request at each width, in one process: dispatched as oclif's main and help command do. */
async function oclifHelp(requests: string[][], color: boolean): Promise<Record<string, string>> {
  const script = `
    const { Config, Help } = await import('@oclif/core')
    const { normalizeArgv } = await import('@oclif/core/help')
    const config = await Config.load(${JSON.stringify(root)})
    const [requests, widths] = JSON.parse(process.argv[1])
    const write = process.stdout.write.bind(process.stdout)
    let text = ''
    process.stdout.write = chunk => { text += chunk; return true }
    // oclif's Help renames the commands and topics it lists (topics joined by spaces): as loaded for each
    const ids = config.commands.map(c => [c, c.id, c.aliases])
    const names = config.topics.map(t => [t, t.name])
    const out = {}
    for (const argv of requests) for (const width of widths) {
      for (const [c, id, aliases] of ids) Object.assign(c, { id, aliases })
      for (const [t, name] of names) t.name = name
      text = ''
      const help = new Help(config, { maxWidth: width })
      if (argv.length === 0 || argv.includes('--help')) await help.showHelp(argv)
      else {
        const [id, ...rest] = normalizeArgv(config, argv)
        await help.showHelp(id === 'help' ? rest : [id]) // the help command, or a topic named alone
      }
      out[JSON.stringify([argv, width])] = text
    }
    write(JSON.stringify(out))`
  const { stdout } = await run('node', ['--input-type=module', '-e', script, JSON.stringify([requests, WIDTHS])], {
    cwd: root, env: { ...process.env, FORCE_COLOR: color ? '1' : '0' }, maxBuffer: 64 << 20,
  })
  return JSON.parse(stdout)
}

describe('quick help', function () {
  this.timeout(300e3)
  const cli = useCli('lookahead-quick-help-')
  let quick: Quick
  let table: Awaited<ReturnType<Table['helpTable']>>
  const pjson = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))

  before(async () => {
    // the compiled modules, as bin/run.js loads them (useCli has built them)
    quick = await import(join(root, 'dist', 'src', 'cli', 'quick.js'))
    const { helpTable }: Table = await import(join(root, 'dist', 'src', 'cli', 'help-table.js'))
    table = await helpTable(root)
  })

  it('is oclif\'s help for every command and topic, every way of asking, at every width, in colour or not', async () => {
    // (oclif reads the word help among others its own way: `help --help` is the root's help)
    const requests = [[], ['--help'], ['help'],
      ...table.commands.filter(c => c.id !== 'help').flatMap(c => [[...c.id.split(':'), '--help'], ['help', ...c.id.split(':')]]),
      ...table.topics.flatMap(t => [t.name.split(':'), [...t.name.split(':'), '--help'], ['help', ...t.name.split(':')]])]
    assert.ok(table.commands.some(c => c.id === 'world:build') && table.topics.some(t => t.name === 'world'), 'the table has the world topic and its command')
    for (const color of [false, true]) {
      const oclif = await oclifHelp(requests, color)
      for (const argv of requests) {
        for (const width of WIDTHS) {
          const expected = oclif[JSON.stringify([argv, width])]
          assert.ok(expected.includes('USAGE'), `oclif's help for ${JSON.stringify(argv)}`)
          assert.equal(quick.helpText(argv, table, { width, color, pjson }), expected, `lookahead ${argv.join(' ')} at ${width} columns${color ? ', in colour' : ''}`)
        }
      }
    }
  })

  it('leaves to oclif what it reads its own way', () => {
    for (const argv of [['guide'], ['guide', '--json', '--help'], ['help', 'help'], ['help', '--help'], ['help', 'nothing'], ['world', 'nothing', '--help'], ['grad', 'model.onnx']]) {
      assert.equal(quick.helpText(argv, table, { width: 80, color: false, pjson }), undefined, argv.join(' '))
    }
  })

  it('decides colour as supports-color and ansis do, or leaves it to oclif', () => {
    const tty = (env: NodeJS.ProcessEnv) => quick.colorOn(env, true, true)
    assert.equal(quick.colorOn({ TERM: 'xterm-256color' }, false, true), false, 'stdout piped')
    assert.equal(quick.colorOn({ TERM: 'xterm-256color' }, true, false), false, 'stderr piped: supports-color says no for stderr')
    assert.equal(tty({ TERM: 'xterm-256color' }), true)
    assert.equal(tty({ TERM: 'xterm-256color', NO_COLOR: '1' }), false)
    assert.equal(tty({ TERM: 'xterm-mono' }), false, 'ansis reads -mono')
    assert.equal(tty({ TERM: 'dumb', COLORTERM: 'truecolor' }), false, 'supports-color reads dumb first')
    assert.equal(tty({ TERM: 'foo', TERM_PROGRAM: 'Apple_Terminal' }), true)
    assert.equal(tty({}), false)
    assert.equal(quick.colorOn({ FORCE_COLOR: '1' }, false, false), true)
    assert.equal(quick.colorOn({ FORCE_COLOR: '0' }, true, true), false)
    assert.equal(quick.colorOn({ FORCE_COLOR: 'true' }, true, true), undefined)
    assert.equal(tty({ TERM: 'xterm', CI: 'true' }), undefined)
  })

  it('answers from the table while it is newer than the build, else through oclif', async () => {
    const tablePath = join(root, 'dist', 'help-table.json')
    await run('node', [join(root, 'dist', 'src', 'cli', 'write-help-table.js')])
    const real = (await cli.lookahead('grad', '--help')).stdout
    assert.equal(real, quick.helpText(['grad', '--help'], table, { width: 80, color: false, pjson }))
    // a table that says something else shows that bin/run.js reads it
    const marked = { ...table, commands: table.commands.map(c => (c.id === 'grad' ? { ...c, summary: 'from the table' } : c)) }
    await writeFile(tablePath, JSON.stringify(marked))
    assert.match((await cli.lookahead('grad', '--help')).stdout, /^from the table\n/)
    assert.match((await cli.lookahead('--help')).stdout, /grad\s+from the table/)
    // the same table older than the compiled quick.js (a build since): oclif's help
    const built = new Date()
    utimesSync(tablePath, new Date(built.getTime() - 60e3), new Date(built.getTime() - 60e3))
    utimesSync(join(root, 'dist', 'src', 'cli', 'quick.js'), built, built)
    assert.equal((await cli.lookahead('grad', '--help')).stdout, real)
    await run('node', [join(root, 'dist', 'src', 'cli', 'write-help-table.js')])
  })
})
