import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, test } from 'node:test'
import { freePort } from './helpers/peers.js'

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url))
const children: ChildProcess[] = []
const cleanups: Array<() => void> = []
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  for (const f of cleanups) f()
})

/** Spawns the command; resolves with it once a log line with `msg` has been printed. */
function run (args: string[], msg: string, execArgv: string[] = []): { proc: ChildProcess, line: Promise<Record<string, unknown>> } {
  const proc = spawn(process.execPath, [...execArgv, CLI, ...args], { stdio: ['ignore', 'pipe', 'ignore'] })
  children.push(proc)
  let buffered = ''
  const line = new Promise<Record<string, unknown>>((resolve, reject) => {
    proc.on('exit', (code) => reject(new Error(`exited ${String(code)} before "${msg}": ${buffered}`)))
    proc.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      for (const l of buffered.split('\n')) {
        if (l === '') continue
        try {
          const parsed = JSON.parse(l) as Record<string, unknown>
          if (parsed.msg === msg) resolve(parsed)
        } catch {}
      }
    })
  })
  line.catch(() => {})
  return { proc, line }
}

/**
 * Starts the command on a port freePort() found, and resolves once it listens. Between
 * freePort() closing the port and the command binding it, another process (a concurrent
 * test's connection taking it as its local port) may take it: such a start is tried again on
 * another port.
 */
async function listening (args: (port: number) => string[]): Promise<{ proc: ChildProcess, port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const r = run(args(port), 'listening')
    try {
      await r.line
      return { proc: r.proc, port }
    } catch (err) {
      if (attempt >= 5 || !(err as Error).message.includes('EADDRINUSE')) throw err
    }
  }
}

test('--dns with a --self that has a path: the peers from DNS get that path, and self is listed once', { timeout: 20_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fc-dns-'))
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  const preload = path.join(dir, 'resolver.mjs')
  // The command makes its own node:dns Resolver: its methods are stubbed before it runs.
  writeFileSync(preload, `import dns from 'node:dns'
const P = dns.promises.Resolver.prototype
P.resolve4 = async () => ['127.0.0.1', '127.0.0.2']
P.resolve6 = async () => { const e = new Error('no AAAA'); e.code = 'ENODATA'; throw e }
`)
  const port = await freePort()
  const self = `http://127.0.0.1:${port}/cache`
  const r = run(['--self', self, '--host', '127.0.0.1', '--dns', 'peers.example'], 'pool from dns', ['--import', preload])
  const line = await r.line
  assert.deepEqual(line.peers, [self, `http://127.0.0.2:${port}/cache`])
  r.proc.kill('SIGTERM')
  await once(r.proc, 'exit')
})

/**
 * How many bytes a loopback connection takes in its kernel buffers while its reader reads
 * nothing: a body about that long (plus what node:http and a Readable hold) has wholly left
 * forwardcache's hands while part of it is still in the command's own buffers.
 */
async function loopbackCapacity (): Promise<number> {
  let written = 0
  const server = net.createServer((sock) => {
    sock.on('error', () => {})
    const chunk = Buffer.alloc(16 * 1024)
    const more = (): void => {
      while (sock.write(chunk, () => { written += chunk.length })) {}
      sock.once('drain', more)
    }
    more()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  client.pause()
  let last = -1
  while (written !== last) {
    last = written
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  client.destroy()
  server.close()
  return written
}

test('SIGTERM while a slow caller is still taking a /fetch body: the command exits only once the whole body has been written', { timeout: 90_000 }, async () => {
  const origin = http.createServer((req, res) => {
    const size = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('size'))
    res.writeHead(200, { 'content-length': size, 'cache-control': 'no-store' })
    res.end(Buffer.alloc(size, 97))
  })
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve))
  cleanups.push(() => origin.close())
  const originPort = (origin.address() as net.AddressInfo).port
  const capacity = await loopbackCapacity()
  // The window where it shows is a few tens of KiB past the kernel's buffers: around it.
  const sizes: number[] = []
  for (let d = -96; d <= 160; d += 16) sizes.push(capacity + d * 1024)
  const truncated: string[] = []
  for (let i = 0; i < sizes.length; i += 6) {
    await Promise.all(sizes.slice(i, i + 6).map(async (size) => {
      const { proc, port } = await listening((p) => ['--self', `http://127.0.0.1:${p}`, '--host', '127.0.0.1'])
      const r = { proc }
      const exited = new Promise<number | null>((resolve) => r.proc.on('exit', (code) => resolve(code)))
      const sock = net.connect(port, '127.0.0.1')
      const q = encodeURIComponent(`http://127.0.0.1:${originPort}/big?size=${size}`)
      sock.write(`GET /fetch?q=${q} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)
      const chunks: Buffer[] = []
      sock.on('data', (c: Buffer) => chunks.push(c))
      let sockErr = ''
      sock.on('error', (e) => { sockErr = e.message })
      sock.pause()
      await new Promise((resolve) => setTimeout(resolve, 500))
      r.proc.kill('SIGTERM')
      // The caller reads nothing for a while, then everything.
      await new Promise((resolve) => setTimeout(resolve, 1500))
      sock.resume()
      const code = await exited
      if (!sock.readableEnded) await Promise.race([once(sock, 'close'), new Promise((resolve) => setTimeout(resolve, 2000))])
      sock.destroy()
      const raw = Buffer.concat(chunks)
      const head = raw.indexOf('\r\n\r\n')
      const body = head === -1 ? 0 : raw.length - head - 4
      assert.equal(code, 0, `exit status with a body of ${size}`)
      if (body !== size) truncated.push(`${size}: got ${body} ${sockErr} ended=${String(sock.readableEnded)}`)
    }))
  }
  assert.deepEqual(truncated, [], 'the command exited 0 with /fetch bodies cut short')
})
