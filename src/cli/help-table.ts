// The table that `lookahead --help` lays out (quick.ts): every command's help as oclif's CommandHelp makes it,
// section by section, before it is laid out to a width. Written at build (`npm run build`), from the
// compiled commands as oclif loads them, so the help has one source: the commands and the settings table.
import { writeFileSync } from 'node:fs'
import { CommandHelp, Config, type Command, type Interfaces } from '@oclif/core'
import { HELP_TABLE, plain, ROOT, type CommandTable, type Example, type FlagRow, type HelpTable, type Row } from './quick.js'

const LINE_FEED = /\r\n|\n/
/** oclif's own order (code units, not the locale's) */
const order = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)
const byName = <T>(key: (item: T) => string) => (a: T, b: T) => order(key(a), key(b))

/** oclif's CommandHelp, giving its parts instead of laying them out; its texts without colour (quick.ts adds it). */
class TableHelp extends CommandHelp {
  /** `id`: oclif's (topics joined by ':'); the command's is the one shown (as Help.formatCommand gives it) */
  table(id: string): CommandTable {
    const cmd = this.command
    const { bin } = this.config
    // as CommandHelp.usage builds each line (it measures the line with the template in it)
    const usage = (cmd.usage ? [cmd.usage].flat() : [this.defaultUsage()]).map(u => {
      const rest = u.replace('<%= command.id %>', '').replace(new RegExp(`^${id}`), '').replace(new RegExp(`^${cmd.id}`), '').trim()
      return `$ ${bin} <%= command.id %> ${rest}`.trim()
    })
    const args = Object.values(cmd.args ?? {}).filter(a => !a.hidden)
    const flags = Object.entries(cmd.flags ?? {}).filter(([, f]) => !f.hidden).map(([name, f]) => ({ ...f, name }))
      .sort((a, b) => Number(!a.char) - Number(!b.char) || order(a.char ?? '', b.char ?? '') || order(a.name, b.name)) // flags with a letter first
    const { flagGroups, mainFlags } = this.groupFlags(flags)
    const flagSections = [['', mainFlags] as const, ...Object.entries(flagGroups)].map(([group, members]) => ({
      header: group ? `${group.toUpperCase()} FLAGS` : 'FLAGS',
      rows: (this.flags(members) ?? []).map(([label, text]): FlagRow => {
        const [name, value] = splitValue(plain(label))
        return [name, value, this.render(plain(text ?? ''))]
      }),
    })).filter(s => s.rows.length > 0)
    const description = [...(cmd.summary ? `${cmd.summary}\n`.split(LINE_FEED) : []), ...(cmd.description ?? '').split(LINE_FEED)].join('\n')
    return {
      id,
      summary: firstLine(cmd, this.render),
      usage,
      args: this.args(args)?.map(([name, text]): Row => [plain(name), text ? plain(this.render(text)) : null]),
      flags: flagSections,
      description: cmd.description ? this.render(description) : undefined,
      aliases: this.aliases(cmd.aliases),
      examples: [cmd.examples ?? []].flat().map(e => this.example(e)),
    }
  }

  /** as CommandHelp.examples reads one: a description over commands, else lines shown as they are */
  private example(e: Command.Example): Example {
    const { bin } = this.config
    const command = (line: string) => {
      const text = this.render(line)
      return text.startsWith(bin) ? `$ ${text}` : text.startsWith(`$ ${bin}`) ? `$${text.replace('$', '')}` : text
    }
    const isCommand = (line: string) => plain(command(line)).startsWith(`$ ${bin}`)
    if (typeof e !== 'string') return { description: this.render(e.description), commands: [command(e.command)] }
    const lines = e.split(LINE_FEED).filter(Boolean)
    if (lines.length >= 2 && !isCommand(lines[0]) && lines.slice(1).every(isCommand)) return { description: this.render(lines[0]), commands: lines.slice(1).map(command) }
    return { text: lines.map(command).join('\n') }
  }
}

/** '-o, --output=<value>' → ['-o, --output', '<value>']; a switch has no value */
function splitValue(label: string): [string, string | null] {
  const at = label.indexOf('=')
  return at < 0 ? [label, null] : [label.slice(0, at), label.slice(at + 1)]
}

/** Help.summary: the first line of the summary, or of the description */
function firstLine(c: { summary?: string; description?: string }, render: (text: string) => string): string | undefined {
  if (c.summary) return render(c.summary.split('\n')[0])
  return c.description ? plain(render(c.description).split('\n')[0]) : undefined
}

/** What quick.ts does not lay out: then the help table is not written and oclif answers every help request. */
function unsupported(c: Command.Loadable): string | undefined {
  if (c.hasDynamicHelp) return 'a flag whose help is computed'
  if (c.state || c.deprecationOptions || c.deprecateAliases) return 'a state or a deprecation'
  if (Object.values(c.flags ?? {}).some(f => f.summary && f.description)) return 'a flag with a summary and a description (FLAG DESCRIPTIONS)'
  if (Object.values(c.flags ?? {}).some(f => f.helpLabel)) return 'a flag with its own label'
  return undefined
}

/** The table of the package at `root`, as oclif's Help lists and lays out its commands. */
export async function helpTable(root: string): Promise<HelpTable> {
  const config = await Config.load(root)
  const loaded = config.commands.filter(c => !c.hidden).sort(byName(c => c.id))
  for (const c of loaded) {
    const why = unsupported(c)
    if (why) throw new Error(`help table: ${c.id} has ${why}, which src/cli/quick.ts does not lay out`)
  }
  const render = new CommandHelp(loaded[0], config, {} as Interfaces.HelpOptions).render
  const commands = loaded.map(c => new TableHelp({ ...c, id: c.id.replaceAll(':', config.topicSeparator) }, config, {} as Interfaces.HelpOptions).table(c.id))
  // oclif lists every command as a topic too: a topic is one with something under it
  const topics = config.topics.filter(t => !t.hidden && config.topics.some(s => s.name.startsWith(`${t.name}:`))).sort(byName(t => t.name))
    .map(t => ({ name: t.name, description: render(t.description ?? '') }))
  return { description: render(config.pjson.oclif.description || config.pjson.description || ''), commands, topics }
}

/** Writes the table of this package (run after tsc: it reads the compiled commands). */
export async function writeHelpTable(): Promise<void> {
  writeFileSync(HELP_TABLE, `${JSON.stringify(await helpTable(ROOT))}\n`)
}
