import assert from 'node:assert/strict'
import diagnosticsChannel from 'node:diagnostics_channel'
import { test } from 'node:test'
import { cacheStores, request } from 'undici'
import { Peer, type CacheStore } from '../src/index.js'
import { decideStorage } from '../src/cache/policy.js'
import type { EvictMessage } from '../src/observe/channels.js'
import { startOrigin } from './helpers/origin.js'
import { listen, ownedBy, startLocalPeers, stopServer } from './helpers/peers.js'

test('a 416 made from a stored 200 carries none of its freshness, validators or metadata, and the 200 stays stored', async () => {
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, {
      'content-type': 'text/plain',
      'cache-control': 'max-age=300',
      expires: new Date(Date.now() + 300_000).toUTCString(),
      etag: '"v1"',
      'last-modified': 'Tue, 01 Jan 2030 00:00:00 GMT',
      'content-language': 'en',
      'content-length': 5
    })
    res.end('hello')
  })
  const cluster = await startLocalPeers(2)
  const [a, b] = cluster.peers as [Peer, Peer]
  try {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/r${i}`) as [string]
    await (await request(url, { dispatcher: a })).body.dump()
    assert.equal(origin.count(), 1)
    // Through the non-owner and on the owner itself: both answers come from b's store.
    for (const peer of [a, b]) {
      const res = await request(url, { dispatcher: peer, headers: { range: 'bytes=10-' } })
      assert.equal(await res.body.text(), '')
      assert.equal(res.statusCode, 416)
      const h = res.headers
      // RFC 9110 section 15.5.17: the current length of the selected representation.
      assert.equal(h['content-range'], 'bytes */5')
      assert.equal(h['content-length'], '0')
      assert.ok(!Number.isNaN(Date.parse(String(h.date))), `a Date: ${String(h.date)}`)
      assert.match(String(h['cache-status']), /^forwardcache; hit/)
      assert.doesNotMatch(String(h['cache-status']), /ttl=/, 'the 416 has no freshness lifetime of its own')
      for (const name of ['cache-control', 'expires', 'etag', 'last-modified', 'age', 'content-type', 'content-language']) {
        assert.equal(h[name], undefined, `the 416 carries no ${name} of the stored 200`)
      }
      // As a downstream cache would judge it, for a plain GET of the URL: not storable.
      const asStored: Record<string, string> = {}
      for (const [k, v] of Object.entries(h)) if (typeof v === 'string') asStored[k] = v
      assert.equal(decideStorage('GET', {}, 416, asStored).store, false)
    }
    const plain = await request(url, { dispatcher: a })
    assert.deepEqual([plain.statusCode, await plain.body.text()], [200, 'hello'])
    assert.equal(plain.headers.etag, '"v1"')
    // A satisfiable range still gets the stored 200's fields (RFC 9110 section 15.3.7).
    const part = await request(url, { dispatcher: a, headers: { range: 'bytes=1-2' } })
    assert.deepEqual([part.statusCode, await part.body.text()], [206, 'el'])
    assert.equal(part.headers['content-range'], 'bytes 1-2/5')
    assert.equal(part.headers.etag, '"v1"')
    assert.equal(part.headers['cache-control'], 'max-age=300')
    assert.equal(origin.count(), 1, 'every answer after the first came from the store')
  } finally {
    await cluster.close()
    await origin.close()
  }
})

test('a 206 made from a stored 200 drops the 200\'s Content-Digest and Content-MD5, which are of the whole body', async () => {
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, {
      'cache-control': 'max-age=300',
      'content-digest': 'sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:',
      'repr-digest': 'sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:',
      'content-md5': 'XUFAKrxLKna5cZ2REBfFkg==',
      'content-length': 5
    })
    res.end('hello')
  })
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    const url = `${origin.url}/digest`
    await (await request(url, { dispatcher: peer })).body.dump()
    const part = await request(url, { dispatcher: peer, headers: { range: 'bytes=0-1' } })
    assert.deepEqual([part.statusCode, await part.body.text()], [206, 'he'])
    assert.equal(part.headers['content-digest'], undefined)
    assert.equal(part.headers['content-md5'], undefined)
    // RFC 9530 section 3: Repr-Digest is of the representation, which a part still belongs to.
    assert.equal(part.headers['repr-digest'], 'sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:')
    const whole = await request(url, { dispatcher: peer })
    assert.equal(await whole.body.text(), 'hello')
    assert.equal(whole.headers['content-digest'], 'sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:')
    assert.equal(origin.count(), 1)
  } finally {
    await peer.close()
    await origin.close()
  }
})

test('variants trimmed to stay within maxHostSize are published on forwardcache:evict, one message per variant', async () => {
  const body = 'x'.repeat(3000)
  const origin = await startOrigin((req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=300', vary: 'accept-language', 'content-length': body.length })
    res.end(body)
  })
  // Room for one variant of the URL, not two.
  const peer = new Peer({ self: 'http://127.0.0.1:1', maxSize: 100_000, maxHostSize: 5000, maxEntrySize: 5000 })
  const seen: EvictMessage[] = []
  const onEvict = (m: unknown): void => { seen.push(m as EvictMessage) }
  diagnosticsChannel.subscribe('forwardcache:evict', onEvict)
  try {
    const url = `${origin.url}/variants`
    for (const lang of ['en', 'fr', 'de']) {
      await (await request(url, { dispatcher: peer, headers: { 'accept-language': lang } })).body.dump()
    }
    const { evictions, cacheEntries } = peer.stats()
    assert.equal(cacheEntries, 1)
    assert.equal(evictions, 2)
    assert.equal(seen.length, evictions, 'every eviction counted is published')
    for (const m of seen) {
      assert.deepEqual([m.self, m.url, m.host], ['http://127.0.0.1:1', url, new URL(origin.url).host])
      assert.ok(m.bytes > body.length, `the evicted variant's bytes: ${m.bytes}`)
    }
    // The newest variant is the one kept.
    const de = await request(url, { dispatcher: peer, headers: { 'accept-language': 'de' } })
    await de.body.dump()
    assert.match(String(de.headers['cache-status']), /hit/)
    assert.equal(origin.count(), 3)
  } finally {
    diagnosticsChannel.unsubscribe('forwardcache:evict', onEvict)
    await peer.close()
    await origin.close()
  }
})

test('an owner\'s answer with an unknown forwardcache-error and a max-age is neither copied hot nor stored by the peer that asked', async () => {
  const origin = await startOrigin()
  let ownerAsked = 0
  // An owner (of a newer version, say) that answers with an error code this peer does not know,
  // under an origin's Cache-Control.
  const owner = await listen((req, res) => {
    if ((req.url ?? '').includes('?q=')) ownerAsked++
    req.resume()
    const body = 'owner trouble\n'
    res.writeHead(502, {
      'forwardcache-error': 'something-new',
      'cache-control': 'max-age=300',
      'cache-status': 'forwardcache; fwd=uri-miss',
      'content-length': Buffer.byteLength(body)
    })
    res.end(body)
  })
  const self = await listen()
  // The asking peer's own second tier: it must get nothing either.
  const memory = new cacheStores.MemoryCacheStore()
  let tierWrites = 0
  const tier: CacheStore = {
    get: (key) => memory.get(key),
    createWriteStream: (key, value) => {
      tierWrites++
      return memory.createWriteStream(key, value)
    },
    delete: (key) => memory.delete(key)
  }
  let peer: Peer | undefined
  try {
    const p = new Peer({ self: self.url, peers: [self.url, owner.url], hotThreshold: 1, store: tier })
    peer = p
    self.server.on('request', p.handler())
    await p.ready
    const [url] = ownedBy(p, owner.url, (i) => `${origin.url}/owner-error/${i}`) as [string]
    for (let i = 0; i < 3; i++) {
      const res = await request(url, { dispatcher: p })
      assert.equal(res.statusCode, 502)
      assert.equal(res.headers['forwardcache-error'], 'something-new')
      await res.body.dump()
    }
    assert.equal(ownerAsked, 3, 'every request went to the owner: nothing answered from a copy')
    const stats = p.stats()
    assert.equal(stats.hotHits, 0)
    assert.equal(stats.hotBytes, 0)
    assert.equal(stats.cacheEntries, 0)
    assert.equal(tierWrites, 0)
    assert.equal(origin.count(), 0)
  } finally {
    await peer?.destroy().catch(() => {})
    await stopServer(self.server)
    await stopServer(owner.server)
    await origin.close()
  }
})

test('an origin\'s own forwardcache-error field does not reach the asking peer as the owner\'s error: no fallback, nothing counted against the owner', async () => {
  const origin = await startOrigin((_req, res) => {
    // An origin (hostile, or itself fronted by something that speaks forwardcache's wire) that
    // answers with the field owners put on their own errors.
    res.writeHead(200, { 'forwardcache-error': 'closing', 'cache-control': 'max-age=300', 'content-length': 2 })
    res.end('ok')
  })
  const cluster = await startLocalPeers(2)
  const [a, b] = cluster.peers as [Peer, Peer]
  try {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/spoof${i}`) as [string]
    for (let i = 0; i < 3; i++) {
      const res = await request(url, { dispatcher: a })
      assert.deepEqual([res.statusCode, await res.body.text()], [200, 'ok'])
      assert.doesNotMatch(String(res.headers['cache-status']), /owner-unavailable/)
    }
    assert.equal(a.stats().forwardErrors, 0, 'the owner answered every time')
    assert.equal(a.ownerOf(url), b.self, 'the owner is still on the ring')
    assert.equal(origin.count(), 1, 'the owner fetched once and served the rest from its store')
  } finally {
    await cluster.close()
    await origin.close()
  }
})
