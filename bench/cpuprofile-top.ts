/**
 * Top self-time functions of a V8 .cpuprofile (from `node --cpu-prof`):
 *
 *   node dist/bench/cpuprofile-top.js FILE.cpuprofile [count] [path-filter]
 *
 * e.g. `... 25 /dist/src/` lists only the library's own functions, with their share of all
 * samples.
 */
import { readFileSync } from 'node:fs'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
}
interface Profile { nodes: ProfileNode[], samples: number[] }

function main (): void {
  const [file, countArg, filter] = process.argv.slice(2)
  if (file === undefined) {
    console.error('usage: node dist/bench/cpuprofile-top.js FILE.cpuprofile [count] [path-filter]')
    process.exit(2)
  }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const hits = new Map<number, number>()
  for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1)
  const total = profile.samples.length
  const self = new Map<string, number>()
  for (const node of profile.nodes) {
    const n = hits.get(node.id) ?? 0
    if (n === 0) continue
    const { functionName, url, lineNumber } = node.callFrame
    if (filter !== undefined && !url.includes(filter)) continue
    const where = url === '' ? '' : ` ${url.replace(/^file:\/\//, '').split('/').slice(-3).join('/')}:${lineNumber + 1}`
    const key = `${functionName === '' ? '(anonymous)' : functionName}${where}`
    self.set(key, (self.get(key) ?? 0) + n)
  }
  const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(countArg ?? 25))
  const inFilter = [...self.values()].reduce((a, b) => a + b, 0)
  console.log(`${total} samples${filter !== undefined ? `; ${((inFilter / total) * 100).toFixed(1)}% in ${filter}` : ''}`)
  for (const [key, n] of rows) console.log(`${((n / total) * 100).toFixed(1).padStart(6)}%  ${key}`)
}

main()
