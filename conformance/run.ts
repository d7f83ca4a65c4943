// The RFC 9111 conformance run: http-tests/cache-tests against forwardcache.
//
//   CACHE_TESTS_DIR=/path/to/cache-tests node dist/conformance/run.js [--id=TEST_ID] [--out=FILE]
//
// Starts the suite's origin server on a free port, a forward shim (conformance/shim.ts: a Peer
// that owns every URL) in front of it, runs the suite's CLI against the shim, saves the CLI's
// JSON results (default .conformance/results.json), scores them the way cache-tests.fyi does
// and prints the failing tests. Everything it starts is stopped before it exits.
// With --id it runs that one test in the suite's verbose mode (request/response dump), unscored.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { startShim, type Shim } from './shim.js'

const here = path.dirname(fileURLToPath(import.meta.url))
// dist/conformance/run.js -> the project root
const root = path.resolve(here, '..', '..')
const SUITE_REPO = 'https://github.com/http-tests/cache-tests'
const REQUIRED_TOTAL = 160
const SCORED_TOTAL = 265

function readCommit (): string {
  for (const p of [path.join(root, 'conformance', 'SUITE_COMMIT'), path.join(here, 'SUITE_COMMIT')]) {
    try { return fs.readFileSync(p, 'utf8').trim() } catch {}
  }
  return '(see conformance/SUITE_COMMIT)'
}

function howToGetTheSuite (problem: string, commit: string): never {
  console.error(`conformance: ${problem}

The suite is the public repository http-tests/cache-tests, at commit ${commit}
(conformance/SUITE_COMMIT). Check it out OUTSIDE this project and install its dependencies:

  git clone ${SUITE_REPO}.git /path/to/cache-tests
  git -C /path/to/cache-tests checkout ${commit}
  (cd /path/to/cache-tests && npm install)

then run:

  CACHE_TESTS_DIR=/path/to/cache-tests npm run conformance
`)
  process.exit(2)
}

function args (): { id: string | undefined, out: string } {
  let id: string | undefined
  let out = path.join(root, '.conformance', 'results.json')
  for (const a of process.argv.slice(2)) {
    if (a.startsWith('--id=')) id = a.slice(5)
    else if (a.startsWith('--out=')) out = path.resolve(a.slice(6))
    else {
      console.error('usage: CACHE_TESTS_DIR=/path/to/cache-tests node dist/conformance/run.js [--id=TEST_ID] [--out=FILE]')
      process.exit(2)
    }
  }
  return { id, out }
}

function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo
      s.close(() => resolve(port))
    })
  })
}

/** Resolves once something accepts connections on 127.0.0.1:port. */
async function waitForPort (port: number, child: ChildProcess, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the suite's server exited with code ${child.exitCode}`)
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect(port, '127.0.0.1')
      sock.once('connect', () => { sock.destroy(); resolve(true) })
      sock.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`the suite's server did not listen on port ${port} within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

function stopChild (child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => { child.kill('SIGKILL') }, 3000)
    child.once('exit', () => { clearTimeout(timer); resolve() })
    child.kill('SIGTERM')
  })
}

// The environment `npm run server --port=P` and `npm run --silent cli --base=B` give the suite's
// scripts (its package.json: "server": "node test-engine/server/server.mjs",
// "cli": "node --no-warnings test-engine/cli.mjs"); set directly so that no npm process sits
// between us and the child we have to stop, and nothing but the CLI's JSON reaches stdout.
// The scripts read `npm_config_X || npm_package_config_X`, and an empty --id is falsy, so both
// spellings are set (npm sets the second from the package.json "config" block).
function suiteEnv (config: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const k of Object.keys(env)) if (k.startsWith('npm_config_') || k.startsWith('npm_package_config_')) delete env[k]
  for (const [k, v] of Object.entries(config)) {
    env[`npm_config_${k}`] = v
    env[`npm_package_config_${k}`] = v
  }
  return env
}

// ---------------------------------------------------------------- scoring

type Result = true | [string, string]
interface SuiteTest { id: string, kind?: string, browser_only?: boolean, cdn_only?: boolean, depends_on?: string[] }
interface SuiteSet { id: string, tests: SuiteTest[] }

/**
 * The counting of ../shared/conformance/score.mjs, for when that file is not there: the suite's
 * own determineTestResult with depends_on honoured; headline = pass over required + optimal.
 */
async function scoreBuiltIn (suiteDir: string, file: string, commit: string): Promise<void> {
  const tests = (await import(pathToFileURL(path.join(suiteDir, 'tests/index.mjs')).href) as { default: SuiteSet[] }).default
  const lib = await import(pathToFileURL(path.join(suiteDir, 'test-engine/lib/results.mjs')).href) as {
    determineTestResult: (suites: SuiteSet[], id: string, results: Record<string, Result>, honour: boolean) => unknown
    resultTypes: Record<string, unknown>
  }
  const typeName = new Map(Object.entries(lib.resultTypes).map(([k, v]) => [v, k]))
  const results = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, Result>
  const kindOf = (t: SuiteTest): string => t.kind === 'optimal' ? 'optional' : t.kind === 'check' ? 'check' : 'required'
  const counts: Record<string, Record<string, number>> = { required: {}, optional: {}, check: {} }
  const totals: Record<string, number> = { required: 0, optional: 0, check: 0 }
  const failures: string[] = []
  for (const s of tests) {
    for (const t of s.tests) {
      if (t.browser_only === true) continue
      const k = kindOf(t)
      const type = typeName.get(lib.determineTestResult(tests, t.id, results, true)) ?? 'unknown'
      totals[k] = (totals[k] ?? 0) + 1
      const c = counts[k] as Record<string, number>
      c[type] = (c[type] ?? 0) + 1
      if (type !== 'pass' && type !== 'yes' && type !== 'no') {
        const r = results[t.id]
        const detail = r === undefined ? 'not run' : r === true ? '(passed itself)' : r.join(': ')
        failures.push(`  ${k.padEnd(8)} ${type.padEnd(15)} ${t.id}  ${detail}`)
      }
    }
  }
  const pass = (k: string): number => (counts[k]?.pass ?? 0) + (counts[k]?.yes ?? 0)
  console.log(`== ${file}  (http-tests/cache-tests @ ${commit.slice(0, 12)})`)
  for (const k of ['required', 'optional', 'check']) {
    const parts = Object.entries(counts[k] ?? {}).map(([t, n]) => `${t} ${n}`).join(', ')
    console.log(`  ${k.padEnd(8)} ${k === 'check' ? `yes ${counts.check?.yes ?? 0}` : `passed ${pass(k)}`}/${totals[k]}   ${parts}`)
  }
  for (const f of failures) console.log(f)
  console.log(`cache-tests: ${pass('required') + pass('optional')}/${(totals.required ?? 0) + (totals.optional ?? 0)} passed (required ${pass('required')}/${totals.required})`)
}

async function score (suiteDir: string, file: string, commit: string): Promise<void> {
  const shared = path.resolve(root, '..', 'shared', 'conformance', 'score.mjs')
  if (!fs.existsSync(shared)) return scoreBuiltIn(suiteDir, file, commit)
  const child = spawn(process.execPath, [shared, file, '--failures'], {
    env: { ...process.env, SUITE_DIR: suiteDir },
    stdio: 'inherit'
  })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  if (code !== 0) throw new Error(`${shared} exited with code ${code}`)
}

// ---------------------------------------------------------------- main

async function main (): Promise<number> {
  const { id, out } = args()
  const commit = readCommit()
  const dir = process.env.CACHE_TESTS_DIR
  if (dir === undefined || dir === '') howToGetTheSuite('CACHE_TESTS_DIR is not set.', commit)
  const suiteDir = path.resolve(dir)
  if (!fs.existsSync(path.join(suiteDir, 'tests')) || !fs.existsSync(path.join(suiteDir, 'test-engine'))) {
    howToGetTheSuite(`${suiteDir} has no tests/ and test-engine/: it is not a copy of the suite.`, commit)
  }
  if (suiteDir === root || suiteDir.startsWith(root + path.sep)) {
    howToGetTheSuite(`${suiteDir} is inside this project; keep the suite outside it.`, commit)
  }
  if (!fs.existsSync(path.join(suiteDir, 'node_modules'))) {
    console.error(`conformance: warning: ${suiteDir}/node_modules is missing; run npm install there (tests with interim responses need its undici)`)
  }
  console.error(`conformance: suite ${suiteDir} (expected commit ${commit}), scored ${SCORED_TOTAL} tests, ${REQUIRED_TOTAL} required`)

  const work = path.dirname(out)
  fs.mkdirSync(work, { recursive: true })

  let server: ChildProcess | undefined
  let cli: ChildProcess | undefined
  let shim: Shim | undefined
  const stopAll = async (): Promise<void> => {
    await stopChild(cli)
    await shim?.close().catch(() => {})
    shim = undefined
    await stopChild(server)
    fs.rmSync(path.join(work, 'server.pid'), { force: true })
  }
  const onSignal = (): void => { stopAll().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  let stdout = ''
  try {
    const port = await freePort()
    server = spawn(process.execPath, ['test-engine/server/server.mjs'], {
      cwd: suiteDir,
      env: suiteEnv({ protocol: 'http', port: String(port), pidfile: path.join(work, 'server.pid') }),
      stdio: ['ignore', 'ignore', 'inherit']
    })
    await waitForPort(port, server, 15_000)
    const origin = `http://127.0.0.1:${port}`
    shim = await startShim({ origin })
    console.error(`conformance: origin (suite server) ${origin}, forwardcache shim ${shim.url}; running the suite's CLI (about a minute)`)

    cli = spawn(process.execPath, ['--no-warnings', 'test-engine/cli.mjs'], {
      cwd: suiteDir,
      env: suiteEnv({ base: shim.url, id: id ?? '' }),
      stdio: ['ignore', id === undefined ? 'pipe' : 'inherit', 'inherit']
    })
    cli.stdout?.setEncoding('utf8')
    cli.stdout?.on('data', (chunk: string) => { stdout += chunk })
    const started = Date.now()
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => { console.error('conformance: the CLI took over 10 minutes; stopping it'); cli?.kill('SIGTERM') }, 600_000)
      ;(cli as ChildProcess).once('exit', (c) => { clearTimeout(timer); resolve(c) })
    })
    if (code !== 0) throw new Error(`the suite's CLI exited with code ${code}`)
    if (id !== undefined) return 0
    console.error(`conformance: CLI finished in ${((Date.now() - started) / 1000).toFixed(1)} s`)
    const stats = shim.peer.stats()
    console.error(`conformance: peer stats: requests ${stats.requests}, hits ${stats.localHits}, misses ${stats.misses}, revalidations ${stats.revalidations}, origin fetches ${stats.originFetches}, stored entries ${stats.cacheEntries}`)
  } finally {
    await stopAll()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }

  let results: unknown
  try {
    results = JSON.parse(stdout)
  } catch {
    fs.writeFileSync(out + '.stdout.txt', stdout)
    throw new Error(`the CLI's output is not JSON (saved in ${out}.stdout.txt)`)
  }
  fs.writeFileSync(out, JSON.stringify(results, null, 2) + '\n')
  console.log(`conformance: results saved in ${path.relative(process.cwd(), out) || out}`)
  await score(suiteDir, out, commit)
  return 0
}

main().then((code) => { process.exitCode = code }, (err: Error) => {
  console.error(`conformance: ${err.message}`)
  process.exitCode = 1
})
