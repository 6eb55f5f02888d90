// `lookahead --version` and the help (`lookahead`, `--help`, `help [COMMAND]`, `COMMAND --help`, a topic alone)
// without loading oclif, whose config imports every command: a third of a second before the first line. The
// help's text comes from oclif at build (help-table.ts writes its table: each section's rows and paragraphs);
// here it is only laid out to the terminal's width, as oclif's help formatter and wrap-ansi lay it out, so the
// output is oclif's at every width and in colour (test/quick-help.test.ts compares them). Whatever this does
// not decide the way oclif would (another form of the arguments, a colour setting it does not read, a table
// older than the compiled commands) goes through oclif. Only node's own modules are imported here.
import { existsSync, readFileSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

// (the table is JSON: null where a row has no text, or a flag no value)
/** A row of a list: its name column and its text. */
export type Row = [string, string | null]

/** A flag's row: its label without the value it takes, that value (underlined in colour), its text. */
export type FlagRow = [string, string | null, string]

export type Example = { text: string } | { description: string; commands: string[] }

/** One command's help, as oclif's CommandHelp has it before laying it out (templates rendered). */
export interface CommandTable {
  /** oclif's id, topics joined by ':' */
  id: string
  /** the first line of the description: the command lists' text and the help's first line */
  summary?: string
  /** each usage line, '$ BIN <%= command.id %> …' (oclif measures it before rendering the id) */
  usage: string[]
  args?: Row[]
  flags: { header: string; rows: FlagRow[] }[]
  description?: string
  aliases?: string
  examples: Example[]
}

export interface TopicTable {
  name: string
  description: string
}

export interface HelpTable {
  /** the package's description */
  description: string
  /** not hidden, sorted by id */
  commands: CommandTable[]
  /** those with something under them, not hidden, sorted by name */
  topics: TopicTable[]
}

// dist/src/cli/quick.js → the package root
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
export const HELP_TABLE = join(ROOT, 'dist', 'help-table.json')

export interface PackageJson {
  name: string
  version: string
  oclif: Record<string, unknown> & { bin?: string; dirname?: string; topicSeparator?: string }
}

export const readPackage = (): PackageJson => JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))

/** oclif's user agent: the --version line and the root help's VERSION. */
const userAgent = ({ name, version }: PackageJson) => `${name}/${version} ${process.platform}-${process.arch} node-${process.version}`

/** Answers `argv` here when it is --version or a help request laid out here; false: oclif must run it. */
export function answerQuickly(argv: string[]): boolean {
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-v')) {
    process.stdout.write(`${userAgent(readPackage())}\n`)
    return true
  }
  if (argv.some(a => a.startsWith('-') && a !== '--help')) return false // a command's run (or a form oclif reads its own way)
  const pjson = readPackage()
  const color = colorOn(process.env, process.stdout.isTTY, process.stderr.isTTY)
  if (color === undefined || !plainConfig(pjson)) return false
  const table = freshTable()
  const text = table && helpText(argv, table, { width: terminalWidth(), color, pjson })
  if (!text) return false
  process.stdout.write(text)
  return true
}

export interface LayoutOptions {
  /** the columns oclif wraps to */
  width: number
  color: boolean
  pjson: PackageJson
}

/** The help `argv` asks for, as oclif prints it; undefined where this does not lay it out. */
export function helpText(argv: string[], table: HelpTable, options: LayoutOptions): string | undefined {
  const words = argv.filter(a => a !== '--help')
  if (words.some(w => w.startsWith('-'))) return undefined
  const subject = helpSubject(argv, words, table)
  return subject && new Layout(options).help(subject, table)
}

/** Whether oclif's help of this package is the one laid out here: none of the settings this does not read. */
function plainConfig(pjson: PackageJson): boolean {
  const unread = ['helpClass', 'helpOptions', 'additionalHelpFlags', 'theme', 'plugins', 'state', 'flexibleTaxonomy']
  if (unread.some(key => pjson.oclif[key] !== undefined) || process.platform === 'win32') return false
  // nor a user's theme, where oclif's config looks for one
  const configDir = process.env.LOOKAHEAD_CONFIG_DIR || join(process.env.XDG_CONFIG_HOME || join(homedir(), '.config'), pjson.oclif.dirname ?? pjson.name)
  return !existsSync(join(configDir, 'theme.json'))
}

/**
 * The table, unless it is missing or older than this file: tsc rewrites every output on each build, so a
 * table written before the last build may describe other commands (a packed package's files share one date).
 */
function freshTable(): HelpTable | undefined {
  if (!existsSync(HELP_TABLE) || statSync(HELP_TABLE).mtimeMs < statSync(fileURLToPath(import.meta.url)).mtimeMs) return undefined
  return JSON.parse(readFileSync(HELP_TABLE, 'utf8'))
}

type Subject = { root: true } | { command: CommandTable } | { topic: TopicTable }

/**
 * What oclif shows help for, where it is plain: `lookahead`, `lookahead --help`, `help WORDS`, `WORDS --help`
 * and a topic alone, WORDS naming a command or topic exactly; undefined for other forms.
 */
function helpSubject(argv: string[], words: string[], table: HelpTable): Subject | undefined {
  const asked = words.length < argv.length
  const topic = (ws: string[]) => table.topics.find(t => t.name === ws.join(':'))
  const command = (ws: string[]) => table.commands.find(c => c.id === ws.join(':'))
  let named: string[]
  if (asked) named = words
  else if (words[0] === 'help') named = words.slice(1)
  else if (words.length === 0 || (topic(words) && !command(words))) named = words
  else return undefined
  if (named.includes('help')) return undefined // oclif skips these words in its own way
  if (named.length === 0) return { root: true }
  const found = command(named)
  if (found) return { command: found }
  const t = topic(named)
  return t && { topic: t }
}

/**
 * Whether oclif's help is in colour (bold headings, underlined values), as supports-color (both stdout and
 * stderr) and ansis decide it together; undefined where they read settings this does not.
 */
export function colorOn(env: NodeJS.ProcessEnv, stdoutTTY: boolean | undefined, stderrTTY: boolean | undefined): boolean | undefined {
  if ('FORCE_COLOR' in env) return /^[0-3]$/.test(env.FORCE_COLOR!) ? env.FORCE_COLOR !== '0' && !env.NO_COLOR : undefined
  if (!stdoutTTY || !stderrTTY) return false
  if (['CI', 'TEAMCITY_VERSION', 'TF_BUILD'].some(key => key in env) || Object.keys(env).some(key => key.startsWith('TEAMCI'))) return undefined
  const term = env.TERM ?? ''
  const supportsColor = term !== 'dumb' && (env.COLORTERM === 'truecolor' || env.TERM_PROGRAM === 'iTerm.app' || env.TERM_PROGRAM === 'Apple_Terminal' ||
    /-256(color)?$/i.test(term) || /^screen|^xterm|^vt100|^vt220|^rxvt|color|ansi|cygwin|linux/i.test(term) || 'COLORTERM' in env)
  const ansis = !env.NO_COLOR && (['24bit', 'truecolor', 'ansi256', 'ansi'].includes(env.COLORTERM ?? '') || !/-mono|dumb/i.test(term))
  return supportsColor && ansis
}

/** oclif's help width: $OCLIF_COLUMNS, else the terminal's (40 at least), else 80. */
function terminalWidth(): number {
  const columns = Number.parseInt(process.env.OCLIF_COLUMNS ?? '', 10)
  if (columns) return columns
  if (!process.stdout.isTTY) return 80
  const width = process.stdout.getWindowSize()[0]
  return width < 1 ? 80 : Math.max(width, 40)
}

const SGR = /\u001B\[\d+m/g
/** `text` without its colour codes (SGR) */
export const plain = (text: string) => text.replace(SGR, '')
const PRINTABLE_ASCII = /^[\x20-\x7E]*$/

/** Columns on a terminal, as string-width counts them for narrow text (the help's: test/quick-help.test.ts). */
function textWidth(text: string): number {
  if (PRINTABLE_ASCII.test(text)) return text.length
  let width = 0
  for (const char of plain(text)) {
    const code = char.codePointAt(0)!
    if (!(code <= 0x1F || (code >= 0x7F && code <= 0x9F) || (code >= 0x300 && code <= 0x36F))) width++
  }
  return width
}

/** indent-string: every line that is not blank. */
const indent = (text: string, spaces: number) => text.replace(/^(?!\s*$)/gm, ' '.repeat(spaces))

/** wrap-ansi's hard wrap, trimmed, of a line whose escapes, if any, sit inside words (help-table.ts's labels). */
function wrapLine(line: string, columns: number): string {
  if (line.trim() === '') return ''
  const rows = ['']
  line.split(' ').forEach((word, index) => {
    rows[rows.length - 1] = rows[rows.length - 1].trimStart()
    let rowWidth = textWidth(rows[rows.length - 1])
    if (index !== 0 && rowWidth > 0) {
      rows[rows.length - 1] += ' '
      rowWidth++
    }
    const width = textWidth(word)
    if (width > columns) {
      // a word longer than a row is cut: on this row where that takes no more breaks than from the next
      const remaining = columns - rowWidth
      if (Math.floor((width - 1) / columns) < 1 + Math.floor((width - remaining - 1) / columns)) rows.push('')
      cutWord(rows, word, columns)
      return
    }
    if (rowWidth + width > columns && rowWidth > 0 && width > 0) rows.push('')
    rows[rows.length - 1] += word
  })
  return rows.map(row => row.replace(/ +$/, '')).join('\n')
}

function cutWord(rows: string[], word: string, columns: number): void {
  let visible = textWidth(rows[rows.length - 1])
  const chars = [...word]
  let escape = false
  chars.forEach((char, index) => {
    const width = textWidth(char)
    if (visible + width <= columns) rows[rows.length - 1] += char
    else {
      rows.push(char)
      visible = 0
    }
    if (char === '\u001B') escape = true
    if (escape) {
      if (char === 'm') escape = false
      return
    }
    visible += width
    if (visible === columns && index < chars.length - 1) {
      rows.push('')
      visible = 0
    }
  })
  if (!visible && rows[rows.length - 1].length > 0 && rows.length > 1) rows[rows.length - 2] += rows.pop()
}

/** oclif's HelpFormatter, CommandHelp, RootHelp and Help, laid out at one width. */
class Layout {
  private readonly maxWidth: number
  private readonly color: boolean
  private readonly pjson: PackageJson
  private readonly bin: string
  private readonly separator: string

  constructor({ width, color, pjson }: LayoutOptions) {
    this.maxWidth = width
    this.color = color
    this.pjson = pjson
    this.bin = pjson.oclif.bin ?? pjson.name
    this.separator = pjson.oclif.topicSeparator ?? ':'
  }

  help(subject: Subject, table: HelpTable): string {
    const lines: string[] = []
    const children = (name: string) => {
      const depth = name === '' ? 0 : name.split(':').length
      const under = (id: string) => (name === '' || id.startsWith(`${name}:`)) && id.split(':').length === depth + 1
      const topics = table.topics.filter(t => under(t.name))
      const commands = table.commands.filter(c => under(c.id))
      if (topics.length > 0) lines.push(this.section('TOPICS', this.list(topics.map(t => [this.shown(t.name), t.description.split('\n')[0] || null]))), '')
      if (commands.length > 0) lines.push(this.section('COMMANDS', this.list(commands.map(c => [this.shown(c.id), c.summary ?? null]))), '')
    }
    if ('root' in subject) {
      const [summary, ...rest] = table.description.split('\n')
      lines.push(this.paragraphs([
        summary,
        this.section('VERSION', this.wrap(userAgent(this.pjson))),
        this.section('USAGE', this.wrap(`$ ${this.bin} [COMMAND]`)),
        rest.join('\n') ? this.section('DESCRIPTION', this.wrap(rest.join('\n'))) : undefined,
      ]), '')
      children('')
    } else if ('command' in subject) {
      const c = subject.command
      if (c.summary) lines.push(`${c.summary}\n`)
      lines.push(this.command(c), '')
      children(c.id)
    } else {
      const [summary, ...rest] = subject.topic.description.split('\n')
      lines.push(`${this.paragraphs([
        summary,
        this.section('USAGE', `$ ${this.bin} ${this.shown(`${subject.topic.name}:COMMAND`)}`),
        rest.join('\n') ? this.section('DESCRIPTION', this.wrap(rest.join('\n'))) : undefined,
      ])}\n`)
      children(subject.topic.name)
    }
    return lines.map(line => `${line}\n`).join('')
  }

  /** CommandHelp.generate */
  private command(c: CommandTable): string {
    const id = this.shown(c.id)
    const usage = c.usage.map(line => {
      const allowed = this.maxWidth - 2
      if (line.length <= allowed) return this.wrap(commandId(line, id))
      const split = line.slice(0, allowed).lastIndexOf(' ')
      return `${line.slice(0, Math.max(0, split))}\n${indent(this.wrap(commandId(line.slice(Math.max(0, split)), id), 4), 2)}`
    }).join('\n')
    const flags = c.flags.map(({ header, rows }) => this.section(header, this.list(rows.map(([label, value, text]) => [value === null ? label : `${label}=${value.includes('|') ? value : this.style(4, 24, value)}`, text]))))
    return this.paragraphs([
      this.section('USAGE', commandId(usage, id)),
      c.args && this.section('ARGUMENTS', this.list(c.args)),
      flags.join('\n\n'),
      c.description && this.section('DESCRIPTION', this.wrap(c.description)),
      c.aliases && this.section('ALIASES', c.aliases),
      c.examples.length > 0 ? this.section('EXAMPLES', c.examples.map(e => this.example(e)).join('\n\n')) : undefined,
    ])
  }

  /** CommandHelp.examples, one: a description over its commands (each wrapped, its breaks escaped), or text */
  private example(e: Example): string {
    if ('text' in e) return e.text
    const commands = e.commands.map(command => indent(this.wrap(command, 8), 2).split(/\r\n|\n/).join(' \\\n  ')).join('\n')
    return `${this.wrap(e.description, 4)}\n\n${commands}`
  }

  private shown = (id: string) => id.replaceAll(':', this.separator)

  private paragraphs = (parts: (string | false | undefined)[]) => parts.filter(Boolean).join('\n\n')

  private style = (open: number, close: number, text: string) => (this.color ? `\u001B[${open}m${text}\u001B[${close}m` : text)

  /** HelpFormatter.section: a bold heading over its indented body */
  private section = (header: string, body: string) => `${this.style(1, 22, header)}\n${indent(body, 2)}`

  /** HelpFormatter.wrap: to the width less `spacing` columns */
  private wrap(text: string, spacing = 2): string {
    return text.normalize().replace(/\r\n/g, '\n').split('\n').map(line => wrapLine(line, this.maxWidth - spacing)).join('\n')
  }

  /** HelpFormatter.renderList at indentation 2: names in a column, texts beside them, or below where too long */
  private list(rows: Row[]): string {
    if (rows.length === 0) return ''
    const below = () => rows.filter(([left, right]) => left || right).map(([left, right]) =>
      `${left ? this.wrap(left.trim()) : ''}${right ? `\n${indent(this.wrap(right.trim(), 4), 4)}` : ''}\n\n`).join('').trim()
    const nameWidth = Math.max(...rows.flatMap(([left]) => (left ?? '').split('\n').map(textWidth)))
    const rendered: string[] = []
    for (const [left, right] of rows) {
      if (!right) {
        rendered.push(left.trim())
        continue
      }
      const [first, ...more] = this.wrap(right.trim(), nameWidth + 4).split('\n').map(s => s.trim())
      if (more.length > 4) return below()
      rendered.push(`${left}${' '.repeat(nameWidth - textWidth(left) + 2)}${first}${more.length > 0 ? `\n${indent(more.join('\n'), nameWidth + 2)}` : ''}`)
    }
    return rendered.filter(Boolean).join('\n').trim()
  }
}

/** The one template left in a usage line: oclif renders it after measuring the line. */
const commandId = (text: string, id: string) => text.replaceAll('<%= command.id %>', id)
