#!/usr/bin/env node
// `lookahead --version` and the help answer without loading oclif (quick.ts); everything else goes through
// oclif, whose commands load the engine only when they run.
import { answerQuickly } from '../dist/src/cli/quick.js'

if (!answerQuickly(process.argv.slice(2))) {
  const { execute } = await import('@oclif/core')
  await execute({ dir: import.meta.url })
}
