import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { PassThrough, Readable, Writable } from 'node:stream'
import { pipeline as pipelineStreams } from 'node:stream/promises'
import { promisify } from 'node:util'
import { after, before, test } from 'node:test'
import middie from '@fastify/middie'
import express from 'express'
import Fastify from 'fastify'
import { Agent, Dispatcher, interceptors, request, setGlobalDispatcher, getGlobalDispatcher, upgrade } from 'undici'
import { Peer, type NodeHandler } from '../src/index.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'

let origin: CountingOrigin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const q = (url: string): string => `/proxy?q=${encodeURIComponent(url)}`

async function exercise (base: string, label: string): Promise<void> {
  const target = `${origin.url}/mounted-${label}`
  for (let i = 0; i < 3; i++) {
    const res = await request(base + q(target))
    assert.equal(res.statusCode, 200)
    assert.equal(await res.body.text(), `body of /mounted-${label}`)
  }
  assert.equal(origin.count(`/mounted-${label}`), 1)
  const app = await request(`${base}/app`)
  assert.equal(await app.body.text(), `the ${label} app`)
}

async function listening (server: http.Server): Promise<string> {
  if (!server.listening) await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

test('handler() mounted in node:http', async () => {
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  const handler: NodeHandler = peer.handler()
  const server = http.createServer((req, res) => handler(req, res, () => res.end('the node:http app')))
  try {
    await exercise(await listening(server), 'node:http')
  } finally {
    server.close()
    await peer.close()
  }
})

test('handler() mounted in Express with app.use, other routes untouched', async () => {
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  const app = express()
  app.use(peer.handler())
  app.get('/app', (_req, res) => { res.send('the express app') })
  const server = http.createServer(app)
  try {
    await exercise(await listening(server), 'express')
  } finally {
    server.close()
    await peer.close()
  }
})

test('handler() mounted in Fastify with @fastify/middie', async () => {
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  const app = Fastify()
  await app.register(middie)
  app.use(peer.handler())
  app.get('/app', async () => 'the fastify app')
  try {
    const address = await app.listen({ port: 0, host: '127.0.0.1' })
    await exercise(address, 'fastify')
  } finally {
    await app.close()
    await peer.close()
  }
})

test('a Peer composes with undici interceptors (retry, redirect) in the documented order', async () => {
  origin.route('/old', (_req, res) => {
    res.writeHead(301, { location: '/new', 'cache-control': 'max-age=300', 'content-length': 0 })
    res.end()
  })
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  // Interceptors wrap the Peer from the outside: redirects and retries are the caller's
  // business, so every hop they make is its own cached request. (dns() does not belong here:
  // it rewrites the origin to an IP address, which would change the cache key and Host; give
  // it to the origin Agent instead, see the next test.)
  const dispatcher = peer.compose(interceptors.retry({ maxRetries: 1 }), interceptors.redirect({ maxRedirections: 2 }))
  try {
    for (let i = 0; i < 2; i++) {
      const res = await request(`${origin.url}/old`, { dispatcher })
      assert.equal(res.statusCode, 200)
      assert.equal(await res.body.text(), 'body of /new')
    }
    assert.equal(origin.count('/old'), 1)
    assert.equal(origin.count('/new'), 1)
  } finally {
    await peer.close()
  }
})

test('what compose() returns keeps the Peer\'s own methods, and compose() chains keep every interceptor', async () => {
  const seen: string[] = []
  const tag = (name: string): Dispatcher.DispatcherComposeInterceptor => (dispatch) => (opts, handler) => {
    seen.push(name)
    return dispatch(opts, handler)
  }
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  const once = peer.compose(tag('inner'))
  const twice = once.compose(tag('outer')) as unknown as Peer
  try {
    const res = await request(`${origin.url}/composed`, { dispatcher: twice })
    assert.equal(await res.body.text(), 'body of /composed')
    assert.deepEqual(seen, ['outer', 'inner'])
    // Methods that read the Peer's private state, called on what compose() returned.
    assert.equal(twice.stats().requests, 1)
    assert.equal(twice.ownerOf(`${origin.url}/composed`), 'http://127.0.0.1:1')
    assert.match(twice.metrics(), /forwardcache_requests_total/)
    assert.equal(typeof twice.handler(), 'function')
    await twice.close()
    assert.equal(peer.closed, true)
  } finally {
    await peer.destroy()
  }
})

test('peer.pipeline() serves a GET (undici passes it an empty body stream); a GET whose stream carries bytes fails', async () => {
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    for (let i = 0; i < 2; i++) {
      let got = ''
      await pipelineStreams(
        Readable.from([]),
        peer.pipeline({ origin: origin.url, path: '/piped', method: 'GET' }, ({ body }) => body),
        new Writable({ write (chunk: Buffer, _enc, cb) { got += chunk.toString(); cb() } })
      )
      assert.equal(got, 'body of /piped')
    }
    assert.equal(origin.count('/piped'), 1)
    await assert.rejects(
      request(`${origin.url}/piped-with-bytes`, { dispatcher: peer, method: 'GET', body: Readable.from([Buffer.from('x')]) }).then((r) => r.body.text()),
      { name: 'InvalidArgumentError', message: /GET requests cannot have a body/ }
    )
    assert.equal(origin.count('/piped-with-bytes'), 0)
    // A GET whose body stream never ends waits for it, and its caller can still give up.
    const ac = new AbortController()
    const waiting = request(`${origin.url}/piped-never-ends`, { dispatcher: peer, method: 'GET', body: new PassThrough(), signal: ac.signal })
    ac.abort()
    await assert.rejects(waiting, { name: 'AbortError' })
    assert.equal(peer.inFlight, 0)
  } finally {
    await peer.close()
  }
})

test('the dns interceptor goes on the origin Agent: keys and Host keep the host name', async () => {
  let host = ''
  origin.route('/dns-named', (req, res) => {
    host = String(req.headers.host)
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': 2 })
    res.end('ok')
  })
  const agent = new Agent().compose(interceptors.dns())
  const peer = new Peer({ self: 'http://127.0.0.1:1', origin: agent })
  const named = origin.url.replace('127.0.0.1', 'localhost')
  try {
    for (let i = 0; i < 2; i++) assert.equal(await (await request(`${named}/dns-named`, { dispatcher: peer })).body.text(), 'ok')
    assert.equal(origin.count('/dns-named'), 1)
    assert.match(host, /^localhost:/)
  } finally {
    await peer.close()
    await agent.close()
  }
})

test('the types: a Peer is an undici Dispatcher accepted by setGlobalDispatcher', async () => {
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  const previous = getGlobalDispatcher()
  try {
    const asDispatcher: Dispatcher = peer
    setGlobalDispatcher(peer)
    assert.equal(getGlobalDispatcher(), asDispatcher)
    // @ts-expect-error self is required
    assert.throws(() => new Peer({}))
    // @ts-expect-error vnodes is a number
    assert.throws(() => new Peer({ self: 'http://a', vnodes: '4' }))
  } finally {
    setGlobalDispatcher(previous instanceof Agent ? previous : new Agent())
    await peer.close()
  }
})

test('the ESM build can be require()d from CommonJS (Node >= 20.19)', async (t) => {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number)
  if (major === 20 && minor < 19) return t.skip('require(esm) needs Node 20.19')
  const entry = fileURLToPath(new URL('../src/index.js', import.meta.url))
  const script = `const fc = require(${JSON.stringify(entry)}); const p = new fc.Peer({ self: 'http://127.0.0.1:1' }); p.ready.then(() => { console.log(typeof fc.Peer, typeof fc.Client, p.ownerOf('http://x/')); return p.close() })`
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', script])
  assert.equal(stdout.trim(), 'function function http://127.0.0.1:1')
})

test('upgrades (WebSocket and the like) pass through a Peer to the origin untouched', async () => {
  const server = http.createServer()
  server.on('upgrade', (_req, socket) => {
    socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello through the tunnel')
  })
  const url = await listening(server)
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    const { socket, headers } = await upgrade(`${url}/ws`, { dispatcher: peer, protocol: 'echo' })
    assert.equal(headers.upgrade, 'echo')
    let data = ''
    for await (const chunk of socket) data += String(chunk)
    assert.equal(data, 'hello through the tunnel')
    // The origins allowlist holds for tunnels too: nothing connects to an origin not on it.
    let upgrades = 0
    server.on('upgrade', () => { upgrades++ })
    const listed = new Peer({ self: 'http://127.0.0.1:1', origins: ['example.com'] })
    try {
      await assert.rejects(upgrade(`${url}/ws`, { dispatcher: listed, protocol: 'echo' }), { name: 'ForbiddenOriginError' })
      await assert.rejects(listed.connect({ origin: url, path: '/' }), { name: 'ForbiddenOriginError' })
      assert.equal(upgrades, 0)
    } finally {
      await listed.close()
    }
  } finally {
    server.close()
    server.closeAllConnections()
    await peer.close()
  }
})
