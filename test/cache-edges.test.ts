import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { Agent, request, type Dispatcher } from 'undici'
import { Peer, type CacheStore } from '../src/index.js'
import { startOrigin } from './helpers/origin.js'
import { deferred, stopServer } from './helpers/peers.js'

// Owner-side cache behaviour at the edges the conformance suite leaves out: 304s without a
// Date, coalescing of responses with per-user fields, invalidation racing a fill, a second
// tier that never answers, per-host counters, Authorization on the wire.

async function get (dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}, method: Dispatcher.HttpMethod = 'GET') {
  const res = await request(url, { dispatcher, headers, method })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

test('a 304 without Date refreshes the entry as of its arrival (RFC 9110 section 6.6.1): no revalidation on every later request', async () => {
  let clock = Date.parse('2030-01-01T00:00:00Z')
  const origin = await startOrigin((req, res) => {
    if (req.headers['if-none-match'] === '"v1"') {
      res.sendDate = false
      res.removeHeader('date')
      res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=10' })
      res.end()
      return
    }
    res.writeHead(200, { etag: '"v1"', 'cache-control': 'max-age=10', 'content-length': 2 })
    res.end('v1')
  }, () => clock)
  const peer = new Peer({ self: 'http://127.0.0.1:1', now: () => clock })
  try {
    const url = `${origin.url}/no-date-304`
    assert.equal((await get(peer, url)).body, 'v1')
    clock += 20_000
    const validated = await get(peer, url)
    assert.match(String(validated.headers['cache-status']), /fwd-status=304/)
    assert.equal(validated.headers.age, '0')
    assert.equal(origin.count(), 2)
    for (let s = 1; s <= 5; s++) {
      clock += 1000
      const hit = await get(peer, url)
      assert.equal(hit.body, 'v1')
      assert.equal(hit.headers.age, String(s))
    }
    assert.equal(origin.count(), 2)
  } finally {
    await peer.close()
    await origin.close()
  }
})

test('callers coalesced behind a response whose private="..." fields are stripped never get another caller\'s fields', async () => {
  const gate = deferred()
  const origin = await startOrigin(async (req, res) => {
    const user = /user=(\w+)/.exec(req.headers.cookie ?? '')?.[1] ?? 'anon'
    if (user === 'alice') await gate.promise
    res.writeHead(200, {
      'cache-control': 'max-age=60, private="set-cookie, x-user"',
      'set-cookie': `session=${user}`,
      'x-user': user,
      'content-length': 5
    })
    res.end('shell')
  })
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    const url = `${origin.url}/profile-shell`
    const alice = get(peer, url, { cookie: 'user=alice' })
    while (origin.count() === 0) await new Promise((resolve) => setImmediate(resolve))
    const others = ['bob', 'carol', 'dave'].map((u) => get(peer, url, { cookie: `user=${u}` }))
    // Let the others join alice's fill before it answers.
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(peer.stats().coalescedWaits, 3)
    gate.resolve()
    const [first, ...rest] = await Promise.all([alice, ...others])
    assert.equal(first?.headers['set-cookie'], 'session=alice')
    for (const r of rest) {
      assert.equal(r.body, 'shell')
      assert.doesNotMatch(String(r.headers['set-cookie']), /alice/)
      assert.notEqual(r.headers['x-user'], 'alice')
    }
    // What is stored has neither field.
    const later = await get(peer, url, { cookie: 'user=erin' })
    assert.match(String(later.headers['cache-status']), /hit/)
    assert.equal(later.headers['set-cookie'], undefined)
    assert.equal(later.headers['x-user'], undefined)
  } finally {
    gate.resolve()
    await peer.close()
    await origin.close()
  }
})

test('an invalidation while a fill is in flight keeps that fill out of the store (RFC 9111 section 4.4)', async () => {
  let value = 'old'
  const postDone = deferred()
  const origin = await startOrigin(async (req, res) => {
    if (req.method === 'POST') {
      value = 'new'
      res.writeHead(204)
      res.end()
      return
    }
    // Read before the POST, sent after it: a slow query, or a slow link.
    const body = value
    if (body === 'old') await postDone.promise
    res.writeHead(200, { 'cache-control': 'max-age=600', 'content-length': body.length })
    res.end(body)
  })
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    const url = `${origin.url}/item`
    const fill = get(peer, url)
    while (origin.count() === 0) await new Promise((resolve) => setImmediate(resolve))
    assert.equal((await get(peer, url, {}, 'POST')).status, 204)
    postDone.resolve()
    assert.equal((await fill).body, 'old')
    const after = await get(peer, url)
    assert.equal(after.body, 'new')
    assert.match(String(after.headers['cache-status']), /fwd=uri-miss/)
    assert.equal(origin.count(), 3)
    // Fills that start after the invalidation are stored as usual.
    assert.match(String((await get(peer, url)).headers['cache-status']), /hit/)
    assert.equal(origin.count(), 3)
  } finally {
    postDone.resolve()
    await peer.close()
    await origin.close()
  }
})

test('a second tier whose lookups never answer costs storeTimeout, then the origin answers, coalesced callers included', { timeout: 10_000 }, async () => {
  const origin = await startOrigin()
  let lookups = 0
  const hanging: CacheStore = {
    get: () => { lookups++; return new Promise(() => {}) },
    createWriteStream: () => undefined,
    delete: () => {}
  }
  assert.throws(() => new Peer({ self: 'http://127.0.0.1:1', store: hanging, storeTimeout: 0 }), /expected opts\.storeTimeout to be a positive integer/)
  const warnings: string[] = []
  const onWarning = (w: Error & { code?: string }): void => { if (w.code === 'FORWARDCACHE_STORE_ERROR') warnings.push(w.message) }
  process.on('warning', onWarning)
  const peer = new Peer({ self: 'http://127.0.0.1:1', store: hanging, storeTimeout: 50 })
  try {
    const url = `${origin.url}/behind-a-hung-store`
    const answers = await Promise.all([get(peer, url), get(peer, url), get(peer, url)])
    for (const a of answers) assert.equal(a.body, 'body of /behind-a-hung-store')
    assert.equal(lookups, 1)
    assert.equal(origin.count(), 1)
    assert.equal(peer.stats().flights, 0)
    await new Promise((resolve) => setImmediate(resolve))
    assert.match(warnings[0] ?? '', /did not answer a lookup within 50 ms/)
  } finally {
    process.off('warning', onWarning)
    await peer.close()
    await origin.close()
  }
})

test('per-host counters drop the least recently seen host, and count a coalesced request once', async () => {
  const gate = deferred()
  const origin = await startOrigin(async (_req, res) => {
    await gate.promise
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': 2 })
    res.end('ok')
  })
  // No origin is ever asked for these hosts: only-if-cached answers 504 from here.
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    const only = { 'cache-control': 'only-if-cached' }
    await get(peer, 'http://busy.example/', only)
    for (let i = 0; i < 1005; i++) {
      await get(peer, `http://h${i}.example/`, only)
      await get(peer, 'http://busy.example/', only)
    }
    const rows = peer.stats().perHost
    assert.equal(rows['busy.example']?.requests, 1006)
    assert.equal(rows['h0.example'], undefined)
    assert.equal(rows['h1004.example']?.requests, 1)
    assert.equal(Object.keys(rows).length, 1000)

    const url = `${origin.url}/once`
    const leader = get(peer, url)
    while (origin.count() === 0) await new Promise((resolve) => setImmediate(resolve))
    const joiner = get(peer, url, {}, 'HEAD')
    await new Promise((resolve) => setImmediate(resolve))
    gate.resolve()
    await Promise.all([leader, joiner])
    const row = peer.stats().perHost[new URL(origin.url).host]
    assert.deepEqual({ requests: row?.requests, hits: row?.hits, misses: row?.misses }, { requests: 2, hits: 1, misses: 1 })
  } finally {
    gate.resolve()
    await peer.close()
    await origin.close()
  }
})

test('a request with Authorization sent straight to handler() bypasses the store as a Peer\'s own callers do', async () => {
  const origin = await startOrigin((req, res) => {
    const body = `data for ${req.headers.authorization ?? 'anonymous'}`
    res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  const server = http.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const self = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const peer = new Peer({ self })
  server.on('request', peer.handler())
  const agent = new Agent()
  try {
    const url = `${origin.url}/account`
    const wire = await get(agent, `${self}/proxy?q=${encodeURIComponent(url)}`, { authorization: 'Bearer alice' })
    assert.equal(wire.body, 'data for Bearer alice')
    assert.match(String(wire.headers['cache-status']), /fwd=bypass; detail=authorization/)
    const anonymous = await get(peer, url)
    assert.equal(anonymous.body, 'data for anonymous')
    assert.equal(origin.count(), 2)
  } finally {
    await agent.close()
    await peer.close()
    await stopServer(server)
    await origin.close()
  }
})
