// Debian's headless chromium, to check that report pages render offline: the DOM after load, and a screenshot.
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** The browser, or undefined where it is not installed (Debian: apt-get install chromium). */
export const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find(existsSync)

/** Runs chromium headless on a local page with its own throw-away profile; resolves with its stdout. */
async function headless(page: string, ...args: string[]): Promise<string> {
  const profile = await mkdtemp(join(tmpdir(), 'lookahead-chromium-'))
  try {
    const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--no-first-run', `--user-data-dir=${profile}`]
    const { stdout } = await run(CHROMIUM!, [...flags, ...args, `file://${page}`], { maxBuffer: 64 << 20 })
    return stdout
  } finally {
    await rm(profile, { recursive: true, force: true })
  }
}

/** The page's DOM after it has loaded, as chromium serialises it. */
export const dumpDom = (page: string) => headless(page, '--dump-dom')

/** A PNG screenshot of the page in a window of width × height. */
export async function screenshot(page: string, out: string, width: number, height: number): Promise<void> {
  await headless(page, `--window-size=${width},${height}`, `--screenshot=${out}`)
}
