import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { after, before, test } from 'node:test'
import { request } from 'undici'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { freePort } from './helpers/peers.js'

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url))

interface Running { proc: ChildProcess, lines: Array<Record<string, unknown>>, waitFor: (msg: string) => Promise<Record<string, unknown>> }

function run (args: string[]): Running {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: Array<Record<string, unknown>> = []
  const waiters: Array<{ msg: string, resolve: (l: Record<string, unknown>) => void }> = []
  let buffered = ''
  proc.stdout?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString()
    let nl
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>
      buffered = buffered.slice(nl + 1)
      lines.push(line)
      for (const w of [...waiters]) if (w.msg === line.msg) { waiters.splice(waiters.indexOf(w), 1); w.resolve(line) }
    }
  })
  return {
    proc,
    lines,
    waitFor: (msg) => {
      const seen = lines.find((l) => l.msg === msg)
      if (seen !== undefined) return Promise.resolve(seen)
      return new Promise((resolve) => waiters.push({ msg, resolve }))
    }
  }
}

/**
 * Starts commands on ports from freePort() and waits until every one listens, with the
 * `listening' lines. Between freePort() closing a port and a command binding it, another
 * process may take it: the commands are then stopped and started again on other ports.
 */
async function startListening (count: number, argsFor: (ports: number[]) => string[][]): Promise<{ ports: number[], started: Running[], lines: Array<Record<string, unknown>> }> {
  for (let attempt = 1; ; attempt++) {
    const ports: number[] = []
    for (let i = 0; i < count; i++) ports.push(await freePort())
    const started = argsFor(ports).map((args) => run(args))
    // 'close' comes after the command's output has all been read.
    const outcomes = await Promise.all(started.map((r) => Promise.race([
      r.waitFor('listening'),
      once(r.proc, 'close').then(() => r.lines.some((l) => String(l.error ?? '').includes('EADDRINUSE')) ? 'in use' : 'exited')
    ])))
    if (outcomes.every((o) => typeof o === 'object')) return { ports, started, lines: outcomes as Array<Record<string, unknown>> }
    for (const r of started) {
      if (r.proc.exitCode === null && r.proc.signalCode === null) {
        r.proc.kill('SIGKILL')
        await once(r.proc, 'exit')
      }
    }
    if (attempt >= 5 || outcomes.includes('exited')) throw new Error(`the command did not start: ${outcomes.map(String).join(', ')}`)
  }
}

let origin: CountingOrigin
const running: Running[] = []

before(async () => { origin = await startOrigin() })
after(async () => {
  for (const r of running) if (r.proc.exitCode === null) r.proc.kill('SIGKILL')
  await origin.close()
})

test('the forwardcache command runs peers that share one cache, exposes /metrics and stops cleanly on SIGTERM', async () => {
  const { ports, started, lines } = await startListening(2, (ports) => {
    const urls = ports.map((p) => `http://127.0.0.1:${p}`)
    return urls.map((url) => ['--self', url, '--peers', urls.join(','), '--host', '127.0.0.1'])
  })
  running.push(...started)
  const urls = ports.map((p) => `http://127.0.0.1:${p}`)
  assert.deepEqual(lines.map((l) => l.port), ports)
  // Callers that are not Node use /fetch?q=URL on any peer: routed to the owner.
  for (let i = 0; i < 4; i++) {
    for (const url of urls) {
      const res = await request(`${url}/fetch?q=${encodeURIComponent(origin.url + '/cli-asset')}`)
      assert.equal(res.statusCode, 200)
      assert.equal(await res.body.text(), 'body of /cli-asset')
    }
  }
  assert.equal(origin.count('/cli-asset'), 1)
  const health = await request(`${urls[0]}/healthz`)
  assert.equal(await health.body.text(), 'ok\n')
  const metrics = await (await request(`${urls[0]}/metrics`)).body.text()
  assert.match(metrics, /^# TYPE forwardcache_requests_total counter$/m)
  assert.match(metrics, /^forwardcache_local_requests_total 4$/m)
  for (const r of running) {
    r.proc.kill('SIGTERM')
    const [code] = await once(r.proc, 'exit')
    assert.equal(code, 0)
    assert.ok(r.lines.some((l) => l.msg === 'stopped'))
  }
})

test('the forwardcache command refuses bad arguments with usage and exit code 2', { timeout: 30_000 }, async () => {
  const self = 'http://127.0.0.1:1'
  const cases: Array<[string[], RegExp]> = [
    [['--peers', 'http://a'], /--self is required/],
    // An inherited name is not a level.
    [['--self', self, '--log-level', 'toString'], /unknown log level toString/],
    // Number('') is 0: a random port, not the one --self advertises.
    [['--self', self, '--port='], /bad --port/],
    [['--self', self, '--port', '0x50'], /bad --port/],
    [['--self', self, '--max-size', '1e9'], /bad --max-size/],
    // The handler may not hide this process's own routes, nor they it.
    [['--self', self, '--path', '/healthz'], /own routes/],
    [['--self', self, '--path', '/metrics/'], /own routes/],
    [['--self', self, '--path', '/fetch'], /own routes/]
  ]
  for (const [args, message] of cases) {
    const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    running.push({ proc, lines: [], waitFor: async () => ({}) })
    let stderr = ''
    proc.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    const [code] = await once(proc, 'exit')
    assert.equal(code, 2, args.join(' '))
    assert.match(stderr, message)
    assert.match(stderr, /usage: forwardcache/)
  }
})

test('a standalone peer whose --self has a path answers the peers under it; /fetch checks q as every other way in does', { timeout: 30_000 }, async () => {
  const { ports: [port], started: [r] } = await startListening(1, ([p]) => [['--self', `http://127.0.0.1:${String(p)}/cache`, '--host', '127.0.0.1']])
  if (r === undefined) throw new Error('not started')
  running.push(r)
  const self = `http://127.0.0.1:${String(port)}/cache`
  // What another peer sends to this one: its base URL, then the handler path.
  const url = `${origin.url}/under-a-base-path`
  const wire = await request(`${self}/proxy?q=${encodeURIComponent(url)}`)
  assert.equal(wire.statusCode, 200)
  assert.equal(await wire.body.text(), 'body of /under-a-base-path')
  const before = origin.count()
  for (const q of ['ftp://127.0.0.1/x', 'file:///etc/passwd', `http://user:pw@127.0.0.1:${new URL(origin.url).port}/u`, `${origin.url}/a\tb`]) {
    const res = await request(`http://127.0.0.1:${port}/fetch?q=${encodeURIComponent(q)}`)
    assert.equal(res.statusCode, 400, q)
    assert.match(await res.body.text(), /^bad q: /)
  }
  assert.equal(origin.count(), before)
  // A q written without encoding (as curl users do) keeps its own query: everything after the
  // first ?, not up to the second.
  const plain = await request(`http://127.0.0.1:${port}/fetch?q=${origin.url}/plain-q?a=1`)
  assert.equal(await plain.body.text(), 'body of /plain-q?a=1')
  assert.equal(origin.count('/plain-q?a=1'), 1)
  r.proc.kill('SIGTERM')
  await once(r.proc, 'exit')
})
