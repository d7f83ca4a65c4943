import assert from 'node:assert/strict'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import express from 'express'
import { request } from 'undici'
import { Peer } from '../src/index.js'
import { Signer } from '../src/security/signature.js'
import { listen, stopServer, waitFor } from './helpers/peers.js'

// Edges of the owner side (handler()) found by the owner/security audit.

const BIG = Buffer.alloc(8 * 1024 * 1024, 0x61)

interface Origin { url: string, hits: Map<string, number>, seen: http.IncomingHttpHeaders[], close: () => Promise<void> }

async function startOrigin (): Promise<Origin> {
  const hits = new Map<string, number>()
  const seen: http.IncomingHttpHeaders[] = []
  const l = await listen((req, res) => {
    const path = req.url ?? '/'
    hits.set(path, (hits.get(path) ?? 0) + 1)
    seen.push(req.headers)
    if (path.startsWith('/big')) {
      res.writeHead(200, { 'cache-control': 'public, max-age=600', 'content-length': BIG.length })
      res.end(BIG)
      return
    }
    // What Rack, Spring, CodeIgniter or phpMyAdmin do: these fields say the request came in
    // over TLS, and the absolute URLs of the page (or a redirect) follow.
    const https = req.headers['x-forwarded-ssl'] === 'on' || (req.headers['front-end-https'] ?? 'off') !== 'off'
    const body = `canonical: ${https ? 'https' : 'http'}://example.test${path}\n`
    res.writeHead(200, { 'cache-control': 'public, max-age=600', 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  return { url: l.url, hits, seen, close: () => stopServer(l.server) }
}

const q = (url: string): string => `/proxy?q=${encodeURIComponent(url)}`

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

describe('handler() slots and callers that stop reading', () => {
  test('a caller that stops reading a large response gives its maxHandlerRequests slot back after bodyTimeout', { timeout: 15_000 }, async () => {
    const l = await listen()
    const peer = new Peer({ self: l.url, peers: [l.url], maxHandlerRequests: 1, bodyTimeout: 300, maxEntrySize: 32 * 1024 * 1024, maxSize: 64 * 1024 * 1024 })
    l.server.on('request', peer.handler())
    const port = (l.server.address() as AddressInfo).port
    const stalled = net.connect(port, '127.0.0.1')
    stalled.on('error', () => {})
    try {
      // Sends a request for 8 MiB and never reads a byte of the answer.
      stalled.write(`GET ${q(`${origin.url}/big-stalled`)} HTTP/1.1\r\nHost: x\r\n\r\n`)
      stalled.pause()
      await waitFor(() => origin.hits.get('/big-stalled') === 1, 5000, 'the origin fetch')
      // While it holds the only slot, the next caller is turned away...
      const during = await fetch(`${l.url}${q(`${origin.url}/during-stall`)}`)
      await during.text()
      assert.equal(during.status, 503)
      assert.equal(origin.hits.get('/during-stall'), undefined)
      // ...but not for longer than bodyTimeout (twice at most) after the caller stopped reading.
      let last = ''
      await waitFor(async () => {
        const res = await fetch(`${l.url}${q(`${origin.url}/after-stall`)}`)
        last = `${res.status} ${await res.text()}`
        return res.status === 200
      }, 5000, 'the stalled caller to give its slot back', 100)
      assert.match(last, /^200 .*after-stall/)
      assert.equal(origin.hits.get('/after-stall'), 1)
    } finally {
      stalled.destroy()
      await peer.destroy()
      await stopServer(l.server)
    }
  })

  test('a caller that reads slowly but steadily is not cut off', { timeout: 15_000 }, async () => {
    const l = await listen()
    const peer = new Peer({ self: l.url, peers: [l.url], bodyTimeout: 2000, maxEntrySize: 32 * 1024 * 1024, maxSize: 64 * 1024 * 1024 })
    l.server.on('request', peer.handler())
    const port = (l.server.address() as AddressInfo).port
    try {
      const received = await new Promise<number>((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1')
        let bytes = 0
        s.on('data', (chunk) => {
          bytes += chunk.length
          // Pauses between reads, each far shorter than bodyTimeout.
          s.pause()
          setTimeout(() => s.resume(), 10)
        })
        s.on('error', reject)
        s.on('close', () => resolve(bytes))
        s.write(`GET ${q(`${origin.url}/big-slow`)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
      })
      assert.ok(received > BIG.length, `the whole body arrived (${received} bytes)`)
    } finally {
      await peer.destroy()
      await stopServer(l.server)
    }
  })
})

describe('no poisoning through scheme overrides', () => {
  for (const [name, value] of [['x-forwarded-ssl', 'on'], ['front-end-https', 'on']] as const) {
    test(`${name} reaches no origin, through handler() or a Peer, and the cached page stays the plain one`, async () => {
      const l = await listen()
      const peer = new Peer({ self: l.url, peers: [l.url] })
      l.server.on('request', peer.handler())
      try {
        const wire = `${origin.url}/page-wire-${name}`
        const res = await fetch(`${l.url}${q(wire)}`, { headers: { [name]: value } })
        assert.equal(await res.text(), `canonical: http://example.test/page-wire-${name}\n`)
        const local = `${origin.url}/page-local-${name}`
        const res2 = await request(local, { dispatcher: peer, headers: { [name]: value } })
        assert.equal(await res2.body.text(), `canonical: http://example.test/page-local-${name}\n`)
        for (const h of origin.seen) assert.equal(h[name], undefined, `${name} reached the origin`)
        // And everyone else is served the same, cached, page.
        const clean = await fetch(`${l.url}${q(wire)}`)
        assert.equal(await clean.text(), `canonical: http://example.test/page-wire-${name}\n`)
        assert.equal(origin.hits.get(`/page-wire-${name}`), 1)
      } finally {
        await peer.destroy()
        await stopServer(l.server)
      }
    })
  }
})

describe('signatures at the edge of authWindow', () => {
  test('a signature first used exactly authWindow before its time cannot be replayed at the last millisecond it is good', () => {
    const W = 30_000
    let now = 1_000_000_000
    const secret = '0123456789abcdef0123456789abcdef'
    const sender = new Signer([secret], W, () => now)
    const receiver = new Signer([secret], W, () => now)
    const url = 'http://origin.test/x'
    const self = 'http://127.0.0.1:1'
    const header = sender.sign('GET', url, self)
    const t = Number(/t=(\d+)/.exec(header)?.[1]) * 1000
    // The receiver's clock is exactly authWindow behind the signer's: still accepted.
    now = t - W
    assert.deepEqual(receiver.verify('GET', url, self, header), { ok: true })
    for (const at of [t, t + W - 1, t + W]) {
      now = at
      assert.equal(receiver.verify('GET', url, self, header).ok, false, `replayed ${at - t} ms after its time`)
    }
    now = t + W + 1
    assert.deepEqual(receiver.verify('GET', url, self, header), { ok: false, reason: 'expired signature' })
  })
})

describe('handler() under a framework', () => {
  test('headers Express (or a middleware) set before handler() do not join the origin\'s response on the asking peer', async () => {
    const app = express()
    // A middleware mounted before the handler, as apps do for their own routes.
    app.use((_req, res, next) => { res.setHeader('x-internal-app', 'billing-v2'); next() })
    const b = await listen(app)
    const a = await listen()
    const pa = new Peer({ self: a.url, peers: [a.url, b.url] })
    const pb = new Peer({ self: b.url, peers: [a.url, b.url] })
    a.server.on('request', pa.handler())
    app.use(pb.handler())
    try {
      await pa.ready
      let url = ''
      for (let i = 0; url === ''; i++) if (pa.ownerOf(`${origin.url}/fw-${i}`) === b.url) url = `${origin.url}/fw-${i}`
      for (let i = 0; i < 2; i++) {
        const res = await request(url, { dispatcher: pa })
        await res.body.text()
        assert.equal(res.statusCode, 200)
        assert.match(String(res.headers['cache-status']), /forwardcache/)
        assert.equal(res.headers['x-powered-by'], undefined, 'the owner\'s framework shows through')
        assert.equal(res.headers['x-internal-app'], undefined, 'a middleware\'s header shows through')
      }
      assert.equal(origin.hits.get(new URL(url).pathname), 1)
    } finally {
      await pa.destroy()
      await pb.destroy()
      await stopServer(a.server)
      await stopServer(b.server)
    }
  })
})
