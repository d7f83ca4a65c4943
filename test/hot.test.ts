import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { request } from 'undici'
import { Peer } from '../src/index.js'
import { ifMatchRoute, startOrigin } from './helpers/origin.js'
import { ownedBy, startLocalPeers, withCluster } from './helpers/peers.js'
import { rawOrigin } from './helpers/raw-origin.js'

test('a non-owner keeps a hot copy of a key asked for often, serves it only while fresh, and stays within maxSize / 8', async () => {
  let clock = Date.now()
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': 3 })
    res.end('hot')
  }, () => clock)
  const servers = await Promise.all([0, 1].map(async () => {
    const s = http.createServer()
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
    return s
  }))
  const urls = servers.map((s) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`)
  const [a, b] = urls.map((self, i) => {
    const p = new Peer({ self, peers: urls, hotThreshold: 3, now: () => clock })
    servers[i]?.on('request', p.handler())
    return p
  }) as [Peer, Peer]
  try {
    await a.ready
    let url = ''
    for (let i = 0; url === ''; i++) if (a.ownerOf(`${origin.url}/k${i}`) === b.self) url = `${origin.url}/k${i}`
    const statuses: string[] = []
    for (let i = 0; i < 6; i++) {
      const res = await request(url, { dispatcher: a })
      assert.equal(await res.body.text(), 'hot')
      statuses.push(String(res.headers['cache-status']))
    }
    // Requests 1-3 went to the owner (the 3rd was copied on its way); 4-6 are hot hits.
    assert.equal(b.stats().servedForPeers, 3)
    assert.equal(a.stats().hotHits, 3)
    assert.match(statuses[5] as string, /hit; detail=hot/)
    assert.equal(origin.count(), 1)
    assert.ok(a.stats().hotBytes > 0)
    // Stale hot copies are never served: the owner decides.
    clock += 120_000
    await (await request(url, { dispatcher: a })).body.dump()
    assert.equal(b.stats().servedForPeers, 4)
    assert.throws(() => new Peer({ self: 'http://x', maxSize: 800, hotSize: 101 }), /hotSize/)
  } finally {
    await Promise.all([a.close(), b.close()])
    for (const s of servers) s.close()
    await origin.close()
  }
})

test('a body the owner would not store (close-delimited) is not copied hot either', async () => {
  // Raw bytes, because node:http always frames its responses.
  const origin = await rawOrigin('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nConnection: close\r\n\r\nunframed')
  const cluster = await startLocalPeers(2, { hotThreshold: 2 })
  const [a, b] = cluster.peers as [Peer, Peer]
  try {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/k${i}`) as [string]
    for (let i = 0; i < 5; i++) {
      const res = await request(url, { dispatcher: a })
      assert.equal(await res.body.text(), 'unframed')
      assert.match(String(res.headers['cache-status']), /detail=unframed/)
    }
    assert.equal(b.stats().servedForPeers, 5)
    assert.equal(a.stats().hotHits, 0)
    assert.equal(a.stats().hotBytes, 0)
    assert.equal(origin.seen.length, 5)
  } finally {
    await cluster.close()
    await origin.close()
  }
})

test('a hot copy never answers a request with a precondition or a range: the owner does', async () => {
  await withCluster({ peers: 2, options: { hotThreshold: 1 }, route: ifMatchRoute() }, async ({ origin, peers: [a, b] }) => {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/p${i}`) as [string]
    const get = async (dispatcher: Peer, headers: Record<string, string> = {}): Promise<{ status: number, body: string, cacheStatus: string }> => {
      const res = await request(url, { dispatcher, headers })
      return { status: res.statusCode, body: await res.body.text(), cacheStatus: String(res.headers['cache-status']) }
    }
    await get(a)
    assert.match((await get(a)).cacheStatus, /detail=hot/)
    assert.equal((await get(b, { 'if-match': '"v0"' })).status, 412)
    assert.equal((await get(a, { 'if-match': '"v0"' })).status, 412)
    assert.equal((await get(a, { 'if-unmodified-since': 'Thu, 01 Jan 1970 00:00:00 GMT' })).status, 200)
    const range = await get(a, { range: 'bytes=0-0' })
    assert.deepEqual([range.status, range.body], [206, 'v'])
    // Only the plain GET was answered from the hot copy; the rest went to the owner.
    assert.equal(a.stats().hotHits, 1)
    assert.equal(b.stats().servedForPeers, 4)
  })
})
