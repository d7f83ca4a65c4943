import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { Agent, errors, request } from 'undici'
import { Peer } from '../src/index.js'
import { rawRequest, startPeers, type MountedPeer } from './helpers/hostile.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { deferred, ownedBy } from './helpers/peers.js'

// Header poisoning, hop-by-hop handling, bad input and resource bounds. Requests go through a
// two-peer cluster: A is asked, B owns the URL, so every rule is checked at every hop (caller
// -> A, A -> B, B -> origin). B's server records what reaches it before its handler runs.

let origin: CountingOrigin
let a: MountedPeer
let b: MountedPeer
const agent = new Agent()
let n = 0

before(async () => {
  origin = await startOrigin()
  origin.route('/echo', (req, res) => {
    const body = JSON.stringify({ host: req.headers.host, method: req.method, xfh: req.headers['x-forwarded-host'] ?? null })
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  ;[a, b] = await startPeers([{}, {}]) as [MountedPeer, MountedPeer]
})

after(async () => {
  await a.close()
  await b.close()
  await origin.close()
  await agent.close()
})

/** A URL on `path` that A routes to B. */
const ownedByB = (path: string): string => ownedBy(a.peer, b.url, (i) => `${origin.url}${path}?n=${n++}&i=${i}`)[0] as string
const pathOf = (url: string): string => { const u = new URL(url); return u.pathname + u.search }

describe('no poisoning through unkeyed request headers', () => {
  const poison: Record<string, string> = {
    host: 'evil.example',
    'x-forwarded-host': 'evil.example',
    'x-forwarded-proto': 'https',
    'x-forwarded-port': '8443',
    'x-forwarded-scheme': 'https',
    'x-forwarded-prefix': '/evil',
    'x-forwarded-server': 'evil.example',
    forwarded: 'for=198.51.100.1;host=evil.example;proto=https',
    'x-host': 'evil.example',
    'x-original-url': '/admin',
    'x-rewrite-url': '/admin',
    'x-original-host': 'evil.example',
    'x-http-method-override': 'DELETE',
    'x-http-method': 'DELETE',
    'x-method-override': 'DELETE'
  }
  const overrideNames = Object.keys(poison).filter((h) => h !== 'host')

  function assertClean (path: string): void {
    const seen = origin.log.filter((r) => r.url === path)
    assert.ok(seen.length >= 1)
    for (const r of seen) {
      assert.equal(r.headers.host, new URL(origin.url).host)
      assert.equal(r.method, 'GET')
      for (const h of overrideNames) assert.equal(r.headers[h], undefined, `${h} reached the origin`)
    }
  }

  test('a local caller\'s override headers reach neither the owner peer nor the origin, and the entry is the normal one', async () => {
    const url = ownedByB('/echo')
    const path = pathOf(url)
    const poisoned = await request(url, { headers: poison, dispatcher: a.peer })
    const body = await poisoned.body.text()
    assert.deepEqual(JSON.parse(body), { host: new URL(origin.url).host, method: 'GET', xfh: null })
    const atB = b.seen.filter((r) => r.url.includes(encodeURIComponent(path)))
    assert.equal(atB.length, 1)
    for (const h of overrideNames) assert.equal(atB[0]?.headers[h], undefined, `${h} reached the owner`)
    assertClean(path)
    const clean = await request(url, { dispatcher: a.peer })
    assert.equal(await clean.body.text(), body)
    assert.match(String(clean.headers['cache-status']), /hit/)
    assert.equal(origin.count(path), 1)
  })

  test('override headers sent on the wire are dropped too', async () => {
    const url = `${origin.url}/echo?wire=${n++}`
    const lines = Object.entries(poison).map(([k, v]) => `${k}: ${v}\r\n`).join('')
    const res = await rawRequest(Number(new URL(b.url).port),
      `GET /proxy?q=${encodeURIComponent(url)} HTTP/1.1\r\n${lines}Connection: close\r\n\r\n`)
    assert.equal(res.kind, 'response')
    assert.ok(res.kind === 'response' && res.status === 200)
    assertClean(pathOf(url))
  })

  test('a method override never turns a GET into anything else', async () => {
    const url = ownedByB('/echo')
    const res = await request(url, { headers: { 'x-http-method-override': 'PURGE' }, dispatcher: a.peer })
    assert.equal(JSON.parse(await res.body.text()).method, 'GET')
  })
})

describe('hop-by-hop fields are removed at every hop', () => {
  const hop: Record<string, string> = {
    connection: 'keep-alive, x-secret-hop, X-Other-Hop',
    'x-secret-hop': 'must not travel',
    'x-other-hop': 'must not travel either',
    'keep-alive': 'timeout=5',
    'proxy-connection': 'keep-alive',
    'proxy-authorization': 'Basic c2VjcmV0OnNlY3JldA==',
    te: 'trailers',
    trailer: 'x-t',
    upgrade: 'h2c'
  }
  const removed = ['x-secret-hop', 'x-other-hop', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'upgrade']

  function assertNoHop (headers: Record<string, unknown>, where: string): void {
    for (const h of removed) assert.equal(headers[h], undefined, `${h} reached ${where}`)
    assert.doesNotMatch(String(headers.connection ?? ''), /x-secret-hop|x-other-hop/i, `Connection tokens reached ${where}`)
  }

  test('caller -> A -> B -> origin', async () => {
    const url = ownedByB('/hop')
    const res = await request(url, { headers: { ...hop, 'x-end-to-end': 'kept' }, dispatcher: a.peer })
    assert.equal(res.statusCode, 200)
    await res.body.dump()
    const atB = b.seen.find((r) => r.url.includes(encodeURIComponent(pathOf(url))))
    assert.ok(atB !== undefined)
    assertNoHop(atB.headers, 'the owner')
    assert.equal(atB.headers['x-end-to-end'], 'kept')
    const atOrigin = origin.log.find((r) => r.url === pathOf(url))
    assert.ok(atOrigin !== undefined)
    assertNoHop(atOrigin.headers, 'the origin')
    assert.equal(atOrigin.headers['x-end-to-end'], 'kept')
  })

  test('wire caller -> handler -> origin', async () => {
    const url = `${origin.url}/hop?wire=${n++}`
    const lines = Object.entries(hop).filter(([k]) => k !== 'connection').map(([k, v]) => `${k}: ${v}\r\n`).join('')
    const res = await rawRequest(Number(new URL(b.url).port),
      `GET /proxy?q=${encodeURIComponent(url)} HTTP/1.1\r\nHost: x\r\nConnection: close, x-secret-hop, X-Other-Hop\r\n${lines}\r\n`)
    assert.ok(res.kind === 'response' && res.status === 200, JSON.stringify(res))
    const atOrigin = origin.log.find((r) => r.url === pathOf(url))
    assert.ok(atOrigin !== undefined)
    assertNoHop(atOrigin.headers, 'the origin')
  })

  test('hop-by-hop response fields from the origin do not reach the caller', async () => {
    origin.route('/hop-response', (_req, res) => {
      res.writeHead(200, { connection: 'x-resp-hop', 'x-resp-hop': 'secret', 'keep-alive': 'timeout=1', 'cache-control': 'max-age=60', 'content-length': 2 })
      res.end('ok')
    })
    const url = ownedByB('/hop-response')
    for (let i = 0; i < 2; i++) {
      const res = await request(url, { dispatcher: a.peer })
      await res.body.dump()
      assert.equal(res.headers['x-resp-hop'], undefined)
      assert.equal(res.headers['keep-alive'], undefined)
    }
  })
})

describe('Connection may not name Host, Content-Length or Authorization', () => {
  for (const token of ['host', 'Content-Length', 'AUTHORIZATION', 'keep-alive, authorization']) {
    test(`Connection: ${token} — InvalidArgumentError locally, 400 on the wire, nothing sent on`, async () => {
      const url = ownedByB('/conn')
      const seen = b.seen.length
      await assert.rejects(request(url, { headers: { connection: token, authorization: 'Bearer x' }, dispatcher: a.peer }), errors.InvalidArgumentError)
      await assert.rejects(request(url, { headers: { connection: token }, dispatcher: a.peer }), errors.InvalidArgumentError)
      const res = await rawRequest(Number(new URL(b.url).port),
        `GET /proxy?q=${encodeURIComponent(url)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\nConnection: ${token}\r\n\r\n`)
      assert.ok(res.kind === 'response', JSON.stringify(res))
      assert.equal(res.status, 400)
      assert.equal(b.seen.length, seen + 1, 'only the raw request reached B')
      assert.equal(origin.count(pathOf(url)), 0)
    })
  }
})

describe('bad input is refused before any byte reaches a peer or the origin', () => {
  const badLocal: Array<[string, (url: URL) => Parameters<Peer['request']>[0]]> = [
    ['CR LF in a header value', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: { 'x-a': 'one\r\nX-Injected: 1' } })],
    ['a bare LF in a header value', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: { 'x-a': 'one\nX-Injected: 1' } })],
    ['a bare CR in a header value', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: { 'x-a': 'one\rtwo' } })],
    ['NUL in a header value', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: { 'x-a': 'one\0two' } })],
    ['CR LF in one of several values', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: { 'x-a': ['fine', 'x\r\ny'] } })],
    ['CR LF in a header name', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: { 'x-a\r\nx-injected': '1' } })],
    ['a space in a header name', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: { 'x a': '1' } })],
    ['a colon in a header name', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: { 'x:a': '1' } })],
    ['an empty header name', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: { '': '1' } })],
    ['NUL in a header name (flat array form)', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: ['x-a\0', '1'] })],
    ['CR LF in the path', (u) => ({ origin: u.origin, path: u.pathname + '\r\nX-Injected: 1', method: 'GET' })],
    ['LF in the path', (u) => ({ origin: u.origin, path: u.pathname + '\nHost: evil', method: 'GET' })],
    ['NUL in the path', (u) => ({ origin: u.origin, path: u.pathname + '\0', method: 'GET' })],
    ['a TAB in the path (WHATWG URL would drop it silently)', (u) => ({ origin: u.origin, path: u.pathname + '\tx', method: 'GET' })],
    ['a control character in the origin', (u) => ({ origin: u.origin + '\r\n', path: u.pathname, method: 'GET' })],
    ['a path without a leading slash', (u) => ({ origin: u.origin, path: 'relative', method: 'GET' })],
    ['a GET with a string body', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', body: 'payload' })],
    ['a GET with a Buffer body', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', body: Buffer.from('payload') })],
    ['a GET with a stream body', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', body: Readable.from(['payload']) })],
    ['a HEAD with a body', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'HEAD', body: 'payload' })],
    ['request headers over 16 KiB', (u) => ({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers: { 'x-big': 'a'.repeat(17 * 1024) } })],
    ['an unparsable origin', () => ({ origin: 'http://exa mple.com', path: '/', method: 'GET' })]
  ]
  for (const [name, make] of badLocal) {
    test(`${name}: InvalidArgumentError to a local caller`, async () => {
      const url = new URL(ownedByB('/bad'))
      const seen = b.seen.length
      const fetched = origin.count()
      const forwards = a.peer.stats().forwards
      await assert.rejects(a.peer.request(make(url)), errors.InvalidArgumentError)
      assert.equal(b.seen.length, seen)
      assert.equal(origin.count(), fetched)
      assert.equal(a.peer.stats().forwards, forwards)
    })
  }

  test('a GET with a body on the wire: 400, nothing fetched', async () => {
    const url = `${origin.url}/wire-body`
    for (const [method, body] of [['GET', 'payload'], ['HEAD', 'payload']] as const) {
      const res = await request(`${b.url}/proxy?q=${encodeURIComponent(url)}`, { method, body, dispatcher: agent })
      await res.body.dump()
      assert.equal(res.statusCode, 400, method)
    }
    assert.equal(origin.count('/wire-body'), 0)
  })

  const controlInQ: Array<[string, string]> = [
    ['CR LF', '/q-crlf\r\nX-Injected: 1'],
    ['a bare LF', '/q-lf\nX-Injected: 1'],
    ['a TAB', '/q-tab\tx'],
    ['NUL', '/q-nul\0x']
  ]
  for (const [name, path] of controlInQ) {
    test(`${name} in the decoded q: 400 from the handler, nothing fetched`, async () => {
      const before = origin.count()
      const res = await request(`${b.url}/proxy?q=${encodeURIComponent(origin.url + path)}`, { dispatcher: agent })
      await res.body.dump()
      assert.equal(res.statusCode, 400)
      assert.equal(origin.count(), before)
    })
  }

  test('...but nothing CR/LF-shaped ever reaches the origin as a header: the stripped path is all it sees', async () => {
    const res = await request(`${b.url}/proxy?q=${encodeURIComponent(origin.url + '/q-inject\r\nX-Injected: 1')}`, { dispatcher: agent })
    await res.body.dump()
    for (const r of origin.log) {
      assert.equal(r.headers['x-injected'], undefined)
      assert.doesNotMatch(r.url, /[\r\n\0]/)
    }
  })
})

describe('bounds', () => {
  test('maxHandlerRequests: the request over the cap gets 503 with Retry-After, and nothing is fetched for it', async () => {
    const gate = deferred()
    const arrivals: Array<() => void> = []
    let arrived = 0
    origin.route('/held', (_req, res) => {
      arrived++
      for (const f of arrivals.splice(0)) f()
      gate.promise.then(() => {
        res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 4 })
        res.end('held')
      }, () => {})
    })
    const untilArrived = (k: number): Promise<void> => new Promise((resolve) => {
      const check = (): void => { if (arrived >= k) resolve(); else arrivals.push(check) }
      check()
    })
    const [p] = await startPeers([{ maxHandlerRequests: 2 }]) as [MountedPeer]
    try {
      const call = (i: number) => request(`${p.url}/proxy?q=${encodeURIComponent(`${origin.url}/held?i=${i}`)}`, { dispatcher: agent })
      const held = [call(1), call(2)]
      await untilArrived(2)
      const over = await call(3)
      assert.equal(over.statusCode, 503)
      assert.equal(over.headers['retry-after'], '1')
      assert.equal(over.headers['forwardcache-error'], 'overloaded')
      await over.body.dump()
      assert.equal(origin.count('/held?i=3'), 0)
      // Refusals for bad input do not take a slot and are still answered while full.
      const bad = await request(`${p.url}/proxy`, { dispatcher: agent })
      assert.equal(bad.statusCode, 400)
      await bad.body.dump()
      gate.resolve()
      for (const r of await Promise.all(held)) {
        assert.equal(r.statusCode, 200)
        await r.body.dump()
      }
      // The slots were given back.
      const again = await call(4)
      assert.equal(again.statusCode, 200)
      await again.body.dump()
    } finally {
      gate.resolve()
      await p.close()
    }
  })

  test('an overloaded owner makes the forwarder fetch from the origin itself', async () => {
    const gate = deferred()
    let arrived = deferred()
    origin.route('/held-owner', (_req, res) => {
      arrived.resolve()
      gate.promise.then(() => {
        res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 2 })
        res.end('ok')
      }, () => {})
    })
    const [pa, pb] = await startPeers([{}, { maxHandlerRequests: 1 }]) as [MountedPeer, MountedPeer]
    try {
      const [u1, u2] = ownedBy(pa.peer, pb.url, (i) => `${origin.url}/held-owner?i=${i}`, 2) as [string, string]
      const first = request(u1, { dispatcher: pa.peer })
      await arrived.promise
      arrived = deferred()
      const second = request(u2, { dispatcher: pa.peer })
      await arrived.promise
      gate.resolve()
      const r2 = await second
      await r2.body.dump()
      assert.equal(r2.statusCode, 200)
      assert.match(String(r2.headers['cache-status']), /fwd=bypass; detail=owner-unavailable/)
      assert.equal((await first).statusCode, 200)
    } finally {
      gate.resolve()
      await pa.close()
      await pb.close()
    }
  })

  test('cache bytes stay within maxSize, maxHostSize and maxEntrySize', async () => {
    const chunk = 'x'.repeat(4096)
    origin.route('/fill', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=600', 'content-length': chunk.length })
      res.end(chunk)
    })
    origin.route('/huge', (_req, res) => {
      // No Content-Length: the size is found out while streaming.
      res.writeHead(200, { 'cache-control': 'max-age=600' })
      res.end('y'.repeat(64 * 1024))
    })
    const maxSize = 64 * 1024
    const peer = new Peer({ self: 'http://127.0.0.1:1', maxSize, maxHostSize: 48 * 1024, maxEntrySize: 8 * 1024 })
    try {
      await peer.ready
      let peak = 0
      for (let i = 0; i < 200; i++) {
        const res = await request(`${origin.url}/fill?i=${i}`, { dispatcher: peer })
        await res.body.dump()
        peak = Math.max(peak, peer.stats().cacheBytes)
      }
      const hosts = (url: string) => peer.stats().perHost[new URL(url).host]
      assert.ok(peak <= 48 * 1024, `peak ${peak}`)
      assert.ok(peer.stats().evictions > 0)
      assert.ok((hosts(origin.url)?.bytes ?? 0) <= 48 * 1024)
      for (let i = 0; i < 2; i++) {
        const res = await request(`${origin.url}/huge`, { dispatcher: peer })
        assert.equal((await res.body.text()).length, 64 * 1024)
      }
      assert.equal(origin.count('/huge'), 2, 'a body over maxEntrySize streams through unstored')
      assert.ok(peer.stats().cacheBytes <= maxSize)
    } finally {
      await peer.destroy()
    }
  })
})
