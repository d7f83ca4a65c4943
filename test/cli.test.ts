import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { after, before, test } from 'node:test'
import { request } from 'undici'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url))

async function freePort (): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const { port } = s.address() as net.AddressInfo
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

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

let origin: CountingOrigin
const running: Running[] = []

before(async () => { origin = await startOrigin() })
after(async () => {
  for (const r of running) if (r.proc.exitCode === null) r.proc.kill('SIGKILL')
  await origin.close()
})

test('the forwardcache command runs peers that share one cache, exposes /metrics and stops cleanly on SIGTERM', async () => {
  const ports = [await freePort(), await freePort()]
  const urls = ports.map((p) => `http://127.0.0.1:${p}`)
  for (const url of urls) running.push(run(['--self', url, '--peers', urls.join(','), '--host', '127.0.0.1']))
  const started = await Promise.all(running.map((r) => r.waitFor('listening')))
  assert.deepEqual(started.map((l) => l.port), ports)
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

test('the forwardcache command refuses bad arguments with usage and exit code 2', async () => {
  const r = run(['--peers', 'http://a'])
  const [code] = await once(r.proc, 'exit')
  assert.equal(code, 2)
})
