// The test photos and the CLIP vocabulary live in ../shared/fixtures beside the checkout, never in the project.
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), '../../shared/fixtures')

/** The fixture's path; where it is absent, skips the running test or hook and says why. */
export function fixtureOrSkip(context: Mocha.Context, relative: string): string {
  const path = join(fixtures, relative)
  if (!existsSync(path)) {
    console.log(`      skipped: ${path} is absent (fixtures live in ../shared/fixtures beside the checkout)`)
    context.skip()
  }
  return path
}
