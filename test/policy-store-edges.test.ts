import assert from 'node:assert/strict'
import { test } from 'node:test'
import { request } from 'undici'
import { Peer } from '../src/index.js'
import { clockedPeer } from './helpers/clocked-peer.js'

// Edges of the cache's decisions and storage: which stored response may answer what, and
// what a served response may say. Each with a real origin and an injected clock.
const fx = clockedPeer(Date.parse('2030-01-01T00:00:00Z'))
const { get } = fx

test('a HEAD 200 does not refresh a stored 404: the GET after it goes to the origin (RFC 9111 section 4.3.5)', async () => {
  let exists = false
  fx.origin.route('/head-over-404', (req, res) => {
    if (!exists) {
      res.writeHead(404, { 'cache-control': 'max-age=10', 'content-length': 9 })
      res.end('not found')
      return
    }
    // No validators and no Content-Length: nothing in the HEAD response tells the stored 404 apart.
    res.writeHead(200, { 'cache-control': 'max-age=3600' })
    res.end(req.method === 'HEAD' ? undefined : 'hello')
  })
  assert.equal((await get('/head-over-404')).status, 404)
  fx.now += 20_000
  exists = true
  const head = await get('/head-over-404', {}, 'HEAD')
  assert.equal(head.status, 200)
  assert.equal(fx.origin.count('/head-over-404'), 2)
  const after = await get('/head-over-404')
  assert.equal(after.status, 200, 'the stored 404 was not freshened by a HEAD that describes a 200')
  assert.equal(after.body, 'hello')
  assert.equal(fx.origin.count('/head-over-404'), 3)
})

test('a caller\'s conditional request is not answered 304 from a stored 404 (RFC 9110 section 13.2.1)', async () => {
  fx.origin.route('/cond-404', (_req, res) => {
    res.writeHead(404, { 'cache-control': 'max-age=600', etag: '"gone"', 'content-length': 9 })
    res.end('not found')
  })
  // On a miss, the origin's 404 passes through; from the store it must be the same answer.
  assert.equal((await get('/cond-404', { 'if-none-match': '*' })).status, 404)
  const inm = await get('/cond-404', { 'if-none-match': '*' })
  assert.equal(inm.status, 404)
  assert.equal(inm.body, 'not found')
  assert.equal((await get('/cond-404', { 'if-none-match': '"gone"' })).status, 404)
  fx.now += 1000
  assert.equal((await get('/cond-404', { 'if-modified-since': new Date(fx.now).toUTCString() })).status, 404)
  assert.equal(fx.origin.count('/cond-404'), 1, 'all but the first from the store')
  // A stored 200 still answers 304.
  fx.origin.route('/cond-200', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=600', etag: '"here"', 'content-length': 4 })
    res.end('here')
  })
  assert.equal((await get('/cond-200')).status, 200)
  assert.equal((await get('/cond-200', { 'if-none-match': '"here"' })).status, 304)
  assert.equal((await get('/cond-200', { 'if-none-match': '*' })).status, 304)
  assert.equal(fx.origin.count('/cond-200'), 1)
})

test('a Range header of 15,000 spaces costs no more than an ordinary one (no quadratic parse on a hit)', async () => {
  fx.origin.route('/range-spaces', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=600', 'content-length': 10 })
    res.end('0123456789')
  })
  assert.equal((await get('/range-spaces')).status, 200)
  const ordinary = await get('/range-spaces', { range: 'bytes=2-4' })
  assert.equal(ordinary.status, 206)
  assert.equal(ordinary.body, '234')
  assert.equal((await get('/range-spaces', { range: 'bytes= 2 - 4 ' })).body, '234')
  const started = performance.now()
  for (let i = 0; i < 8; i++) {
    const odd = await get('/range-spaces', { range: `bytes=${' '.repeat(15_000)}x` })
    assert.equal(odd.status, 200, 'an invalid Range is ignored')
    assert.equal(odd.body, '0123456789')
  }
  const ms = performance.now() - started
  assert.ok(ms < 1000, `8 hits with an odd Range took ${Math.round(ms)} ms`)
  assert.equal(fx.origin.count('/range-spaces'), 1)
})

test('a 204 served from the store has no Content-Length, as the miss had none (RFC 9110 section 8.6)', async () => {
  fx.origin.route('/no-content', (_req, res) => {
    res.writeHead(204, { 'cache-control': 'max-age=600' })
    res.end()
  })
  const miss = await get('/no-content')
  assert.equal(miss.status, 204)
  assert.equal(miss.headers['content-length'], undefined)
  const hit = await get('/no-content')
  assert.equal(hit.status, 204)
  assert.match(String(hit.headers['cache-status']), /hit/)
  assert.equal(hit.headers['content-length'], undefined)
  const head = await get('/no-content', {}, 'HEAD')
  assert.equal(head.status, 204)
  assert.equal(head.headers['content-length'], undefined)
  assert.equal(fx.origin.count('/no-content'), 1)
})

test('CDN-Cache-Control: public does not lift the Set-Cookie rule: the second user never gets the first one\'s cookie', async () => {
  let n = 0
  fx.origin.route('/cdn-cookie', (_req, res) => {
    n++
    res.writeHead(200, {
      'cache-control': 'max-age=60',
      'cdn-cache-control': 'public, max-age=600',
      'set-cookie': `session=user${n}`,
      'content-length': 2
    })
    res.end('hi')
  })
  const first = await get('/cdn-cookie')
  assert.equal(first.headers['set-cookie'], 'session=user1')
  const second = await get('/cdn-cookie')
  assert.equal(second.headers['set-cookie'], 'session=user2', `the second caller got ${String(second.headers['set-cookie'])}`)
  assert.equal(fx.origin.count('/cdn-cookie'), 2)
  // Cache-Control: public still stores it, as before (RFC 9111 allows it; the origin said so).
  fx.origin.route('/cc-public-cookie', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'public, max-age=60', 'set-cookie': 'session=x', 'content-length': 2 })
    res.end('hi')
  })
  await get('/cc-public-cookie')
  assert.match(String((await get('/cc-public-cookie')).headers['cache-status']), /hit/)
  assert.equal(fx.origin.count('/cc-public-cookie'), 1)
})

test('a changed response too large to store, of unknown length, still drops the stored one it replaces (RFC 9111 section 4.3.3)', async () => {
  const small = new Peer({ self: 'http://127.0.0.1:1', maxEntrySize: 4096, now: () => fx.now })
  let version = 1
  fx.origin.route('/grown', (_req, res) => {
    if (version === 1) {
      res.writeHead(200, { 'cache-control': 'max-age=10, stale-if-error=3600', etag: '"v1"', 'content-length': 2 })
      res.end('v1')
      return
    }
    // Chunked: the size is only known once the recorder has given up on it.
    res.writeHead(200, { 'cache-control': 'max-age=10, stale-if-error=3600', etag: '"v2"' })
    res.end(Buffer.alloc(5000, 'x'))
  })
  const at = async (headers: Record<string, string> = {}) => {
    const res = await request(fx.origin.url + '/grown', { headers, dispatcher: small })
    return { status: res.statusCode, body: await res.body.text() }
  }
  try {
    assert.equal((await at()).body, 'v1')
    fx.now += 20_000
    version = 2
    assert.equal((await at()).body.length, 5000)
    assert.equal(fx.origin.count('/grown'), 2)
    // The origin's latest answer was v2: the stored v1 is gone, not kept as a stale stand-in.
    const later = await at({ 'cache-control': 'max-stale' })
    assert.equal(later.body.length, 5000, 'v1 was served after the origin had replaced it')
    assert.equal(fx.origin.count('/grown'), 3)
  } finally {
    await small.close()
  }
})

test('a 304 to a Range request refreshes the stored response instead of dropping it (RFC 9111 section 4.3.4)', async () => {
  fx.origin.route('/range-304', (req, res) => {
    if (req.headers['if-none-match'] === '"r1"') {
      res.writeHead(304, { etag: '"r1"', 'cache-control': 'max-age=10' })
      res.end()
      return
    }
    res.writeHead(200, { etag: '"r1"', 'cache-control': 'max-age=10', 'content-length': 10 })
    res.end('0123456789')
  })
  assert.equal((await get('/range-304')).body, '0123456789')
  fx.now += 20_000
  const validated = await get('/range-304', { range: 'bytes=0-1' })
  assert.equal(validated.status, 206)
  assert.equal(validated.body, '01')
  assert.match(String(validated.headers['cache-status']), /fwd-status=304/)
  assert.equal(fx.origin.count('/range-304'), 2)
  for (const [range, body] of [['bytes=2-3', '23'], ['bytes=4-5', '45']]) {
    const hit = await get('/range-304', { range: range as string })
    assert.equal(hit.status, 206)
    assert.equal(hit.body, body)
    assert.match(String(hit.headers['cache-status']), /hit/)
  }
  assert.equal(fx.origin.count('/range-304'), 2, 'the refreshed entry answers the later ranges')
})

test('the request values a response varies on are charged: Vary on a large field cannot hold many times maxSize', async () => {
  const maxSize = 256 * 1024
  const small = new Peer({ self: 'http://127.0.0.1:1', maxSize, now: () => fx.now })
  fx.origin.route('/vary-big', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=600', vary: 'x-big', 'content-length': 1 })
    res.end('x')
  })
  try {
    const valueLength = 14_000
    for (let i = 0; i < 100; i++) {
      const res = await request(fx.origin.url + '/vary-big', { headers: { 'x-big': String(i).padStart(6, '0') + 'a'.repeat(valueLength - 6) }, dispatcher: small })
      await res.body.text()
    }
    assert.equal(fx.origin.count('/vary-big'), 100)
    const s = small.stats()
    assert.equal(s.stored, 100)
    // Every stored variant keeps its 14,000-byte value for Vary matching.
    assert.ok(s.cacheEntries * valueLength <= s.cacheBytes, `${s.cacheEntries} variants hold ${s.cacheEntries * valueLength} bytes of request values, charged ${s.cacheBytes}`)
    assert.ok(s.cacheBytes <= maxSize)
    // Variants dropped to keep the URL within its host's budget are evictions.
    assert.equal(s.evictions, s.stored - s.cacheEntries)
  } finally {
    await small.close()
  }
})

test('Vary naming a field every object inherits (constructor, __proto__, toString) is answered and stored, not left hanging', async () => {
  for (const field of ['Constructor', '__proto__', 'toString']) {
    const path = `/vary-inherited-${field}`
    fx.origin.route(path, (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=600', vary: field, 'content-length': 2 })
      res.end('hi')
    })
    for (let i = 0; i < 2; i++) {
      const res = await request(fx.origin.url + path, { dispatcher: fx.peer, signal: AbortSignal.timeout(3000) })
      assert.equal(res.statusCode, 200)
      assert.equal(await res.body.text(), 'hi')
    }
    assert.equal(fx.origin.count(path), 1, `Vary: ${field}: the second request is a hit`)
  }
  assert.equal(fx.peer.stats().flights, 0)
})
