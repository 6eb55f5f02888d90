import { Flags } from '@oclif/core'
import chalk from 'chalk'
import { join } from 'node:path'
import { exitOnInterrupt, LookaheadCommand } from '../src/cli/base.js'
import { check } from '../src/errors.js'
import { jobFlags, modelFlags, promptArg, settingFlags, settingsFromFlags } from '../src/cli/flags.js'
import { checkFolderOutput } from '../src/cli/output.js'
import { JOB_SETTINGS } from '../src/cli/settings.js'

/** Every job setting but the seed and the preview: compare runs every --previews method on every --seeds seed. */
const SETTINGS = JOB_SETTINGS.filter(k => k !== 'seed' && k !== 'preview')

export default class Compare extends LookaheadCommand {
  static description = 'Compare methods (none, x0, lcm, best of N unguided at lcm\'s cost) over many seeds: each run written as it finishes (resumable), a labelled grid, metrics and cost in UNet evaluations per method with means and standard errors (stdout, CSV, JSON), and a report page (report.html)'

  static examples = [
    '<%= config.bin %> compare --world demo --ref world:dev --seeds 0-15 --previews none,x0,lcm,best -o results/',
    '<%= config.bin %> compare --world demo --ref world:dev --seeds 0-15 --previews lcm --preview-steps 2 -o results-2steps/',
    '<%= config.bin %> compare --world demo --ref world:dev --seeds 0-31 --resume results/',
  ]

  static args = { prompt: promptArg }

  static flags = {
    ...modelFlags,
    ...jobFlags(['seed', 'preview']),
    ...settingFlags(['seeds', 'previews', 'gridRows']),
    output: Flags.string({ char: 'o', description: 'folder for report.html, grid.png, runs/, runs.jsonl, runs.csv, summary.json', exclusive: ['resume'] }),
    resume: Flags.string({ description: 'continue the comparison in this folder: its finished runs are kept, the rest are run (same settings; more seeds or methods may be added)', exclusive: ['output'] }),
  }

  async run() {
    const { args, flags } = await this.parse(Compare)
    const dir = flags.resume ?? flags.output
    check(dir, 'say where to write the comparison: -o DIR (or --resume DIR to continue one)')
    checkFolderOutput(dir, flags.resume ? '--resume' : '-o')
    const { seeds, previews, gridRows } = settingsFromFlags(['seeds', 'previews', 'gridRows'], flags, 'sdxl')
    await this.runtime(flags)
    exitOnInterrupt(`the finished runs are kept in ${dir} (--resume ${dir} continues)`)
    const { jobFromFlags } = await import('../src/cli/job.js')
    const { compareMethods, finishedRuns, writeComparison } = await import('../guides/compare.js')
    const { missingReasons, summaryTable } = await import('../guides/report.js')
    // warnings name the run they come from (a guide is prepared once and warns from every run)
    let current = ''
    const planned = await jobFromFlags(args.prompt, SETTINGS, flags, {
      warn: message => spinner.interject(`${chalk.yellow('warning:')} ${current}${message}`),
      note: message => this.note(message),
    }, previews)
    const resume = flags.resume !== undefined
    await finishedRuns(dir, planned.job, resume) // refuses a folder it cannot continue, before any work
    const job = await planned.ready()
    // progress begins once every check has passed
    const spinner = this.spinner('preparing')
    job.note = message => { if (!this.jsonEnabled()) spinner.interject(message) }
    const comparison = await compareMethods(job, {
      seeds, methods: previews, dir, resume,
      onRun: (done, total, seed, method) => {
        current = `seed ${seed}, ${method}: `
        spinner.text = `run ${done + 1}/${total}: seed ${seed}, ${method}`
      },
    }).finally(() => spinner.stop())
    const report = await writeComparison(dir, job, comparison, gridRows)

    if (!this.jsonEnabled()) {
      const table = summaryTable(comparison.summary)
      const widths = table[0].map((_, c) => Math.max(...table.map(row => row[c].length)))
      for (const row of table) this.log(row.map((cell, c) => cell.padEnd(widths[c])).join('  '))
      this.log(`${seeds.length} seeds × ${previews.length} methods; (n=…): the images a metric was measured on`)
      for (const reason of missingReasons(comparison.runs)) this.log(`missing: ${reason}`)
      if (comparison.referenceIdentity) this.log(`reference identity in the world: ${comparison.referenceIdentity}`)
      this.note(`wrote ${join(dir, 'report.html')}, grid.png, runs.csv, runs.jsonl, summary.json`)
    }
    return report
  }
}
