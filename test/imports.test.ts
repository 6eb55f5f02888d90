// The project's modules import each other one way (DESIGN.md, "Layers"): no module reaches itself through its
// static imports. A cycle lets a module run before the ones it needs are initialised (the order depends on which
// file is imported first), and it hides which of two modules is the lower one.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap(entry => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sources(path)
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : []
  })
}

/** The relative modules `code` imports or re-exports at load time (not `import type`); with `lazy`, also those it import()s. */
function imports(code: string, file: string, lazy = false): string[] {
  const specifiers = [...code.matchAll(/^(?:import|export)\s+(?!type\s)[^'"]*?\bfrom\s+'(\.{1,2}\/[^']+)'/gm)].map(m => m[1])
  if (lazy) specifiers.push(...[...code.matchAll(/\bimport\('(\.{1,2}\/[^']+)'\)/g)].map(m => m[1]))
  return specifiers.map(s => resolve(dirname(file), s.replace(/\.js$/, '.ts')))
}

/** Every project module that loading `file` can load, itself included (its lazy imports too). */
function reached(file: string): Set<string> {
  const seen = new Set<string>()
  const visit = (f: string) => {
    if (seen.has(f)) return
    seen.add(f)
    for (const next of imports(readFileSync(f, 'utf8'), f, true)) visit(next)
  }
  visit(file)
  return seen
}

/** One cycle in `imports` (each file → the files it imports), as a path that ends where it starts; undefined where none. */
function importCycle(imports: Map<string, string[]>): string[] | undefined {
  const done = new Set<string>()
  const path: string[] = []
  const visit = (file: string): string[] | undefined => {
    const at = path.indexOf(file)
    if (at >= 0) return [...path.slice(at), file]
    if (done.has(file) || !imports.has(file)) return undefined
    path.push(file)
    for (const next of imports.get(file)!) {
      const cycle = visit(next)
      if (cycle) return cycle
    }
    path.pop()
    done.add(file)
    return undefined
  }
  for (const file of imports.keys()) {
    const cycle = visit(file)
    if (cycle) return cycle
  }
  return undefined
}

describe('module imports', () => {
  it('finds a cycle through re-exports, and none where imports point one way', () => {
    const cyclic = new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']]])
    assert.deepEqual(importCycle(cyclic), ['a', 'b', 'c', 'a'])
    assert.equal(importCycle(new Map([['a', ['b', 'c']], ['b', ['c']], ['c', []]])), undefined)
    const code = "import { x } from './x.js'\nimport type { T } from './t.js'\nexport { y } from '../y.js'\nimport {\n  z,\n} from './z.js'\nconst lazy = () => import('./lazy.js')"
    assert.deepEqual(imports(code, '/p/m.ts'), ['/p/x.ts', '/y.ts', '/p/z.ts'])
    assert.deepEqual(imports(code, '/p/m.ts', true), ['/p/x.ts', '/y.ts', '/p/z.ts', '/p/lazy.ts'])
  })

  it('have no cycle in src/, guides/ and commands/', () => {
    const files = ['src', 'guides', 'commands'].flatMap(dir => sources(join(root, dir)))
    const cycle = importCycle(new Map(files.map(file => [file, imports(readFileSync(file, 'utf8'), file)])))
    assert.equal(cycle?.map(f => relative(root, f)).join(' → '), undefined)
  })

  it('`lookahead info` loads the runtime, not the engine, the guides or the package root (so it starts fast)', () => {
    const loaded = [...reached(join(root, 'commands', 'info.ts'))].map(f => relative(root, f))
    assert.ok(loaded.includes('src/onnx/session.ts'), loaded.join(', '))
    const heavy = ['src/index.ts', 'src/guidance/engine.ts', 'src/diffusion/pipeline.ts', 'src/onnx/autodiff.ts']
    assert.deepEqual(loaded.filter(f => heavy.includes(f) || f.startsWith('guides/')), [])
  })
})
