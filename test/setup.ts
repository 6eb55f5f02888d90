// Loaded before every test file (.mocharc.json "require"): tests never write the user's cache. Without
// $LOOKAHEAD_CACHE they share one under the temporary folder (kept between runs, so the demo world and the
// gradient models are built once).
import { tmpdir } from 'node:os'
import { join } from 'node:path'

process.env.LOOKAHEAD_CACHE ||= join(tmpdir(), 'lcm-lookahead-test-cache')
