// `npm run build`'s last step: the help table of the compiled commands (help-table.ts).
import { writeHelpTable } from './help-table.js'

await writeHelpTable()
