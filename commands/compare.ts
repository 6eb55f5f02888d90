import { Flags } from '@oclif/core'
import { join } from 'node:path'
import { exitOnInterrupt, LookaheadCommand } from '../src/cli/base.js'
import { guidanceFlags, jobFromFlags, modelFlags, promptArg, samplingFlags, seedList } from '../src/cli/flags.js'
import { check } from '../src/errors.js'
import { writeFileAtomic } from '../src/fsutil.js'
import { METHODS, type Method } from '../src/guidance/engine.js'
import { composeGrid, saveImage } from '../src/image/image.js'
import { compareMethods, jobSettings, resolveModels, runsCsv, summaryTable } from '../guides/jobs.js'

export default class Compare extends LookaheadCommand {
  static description = 'Compare previews (none, x0, lcm) over many seeds: a labelled grid, and metrics per method with means and standard errors (stdout, CSV, JSON)'

  static examples = ['<%= config.bin %> compare --world demo --ref face.png --seeds 0-15 --previews none,x0,lcm -o results/']

  static args = { prompt: promptArg }

  static flags = {
    ...modelFlags,
    ...samplingFlags,
    ...guidanceFlags,
    seeds: Flags.string({ description: 'seeds: a range 0-15 or a list 0,3,7', default: '0-7' }),
    previews: Flags.string({ description: 'methods to compare, from none, x0, lcm', default: 'none,x0,lcm' }),
    'grid-rows': Flags.integer({ description: 'seeds shown in the grid image', default: 8, min: 1 }),
    output: Flags.string({ char: 'o', description: 'folder for grid.png, runs.csv, summary.json', required: true }),
  }

  async run() {
    const { args, flags } = await this.parse(Compare)
    exitOnInterrupt()
    const methods = flags.previews.split(',').map(m => m.trim()) as Method[]
    for (const m of methods) check(METHODS.includes(m), `--previews: unknown method ${m} (use ${METHODS.join(', ')})`)
    const seeds = seedList(flags.seeds)
    const job = await jobFromFlags(args.prompt, flags, await resolveModels(flags), this.device(flags))
    const spinner = this.spinner('preparing')
    job.warn = message => { spinner.clear(); this.warning(message); spinner.render() }
    const comparison = await compareMethods(job, seeds, methods, (done, total, seed, method) => {
      spinner.text = `run ${done + 1}/${total}: seed ${seed}, ${method}`
    }).finally(() => spinner.stop())

    const shown = seeds.slice(0, flags['grid-rows'])
    const grid = composeGrid(shown.map(seed => methods.map(method => ({
      image: comparison.runs.find(r => r.seed === seed && r.method === method)!.result.image,
      label: `seed ${seed} ${method}`,
    }))))
    await saveImage(grid, join(flags.output, 'grid.png'))
    await writeFileAtomic(join(flags.output, 'runs.csv'), runsCsv(comparison))
    const { runs, ...rest } = comparison
    const report = {
      settings: jobSettings(job),
      ...rest,
      runs: runs.map(({ seed, method, result }) => ({ seed, method, metrics: result.metrics, iterations: result.iterations, timings: result.timings })),
    }
    await writeFileAtomic(join(flags.output, 'summary.json'), `${JSON.stringify(report, null, 1)}\n`)

    if (!this.jsonEnabled()) {
      const table = summaryTable(comparison.summary, seeds.length)
      const widths = table[0].map((_, c) => Math.max(...table.map(row => row[c].length)))
      for (const row of table) this.log(row.map((cell, c) => cell.padEnd(widths[c])).join('  '))
      this.log(`${seeds.length} seeds; [n]: images with a detected face, where fewer`)
      if (comparison.referenceIdentity) this.log(`reference identity in the world: ${comparison.referenceIdentity}`)
      this.note(`wrote ${join(flags.output, 'grid.png')}, runs.csv, summary.json`)
    }
    return report
  }
}
