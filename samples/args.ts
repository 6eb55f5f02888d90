// The benches' and oracle's command-line options: `--name value`, else the fallback.
export function option(name: string): string | undefined
export function option(name: string, fallback: string): string
export function option(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : fallback
}
