import assert from 'node:assert/strict'
import { test } from 'node:test'
import { request } from 'undici'
import type { Peer } from '../src/index.js'
import { ifMatchRoute, startOrigin } from './helpers/origin.js'
import { deferred, ownedBy, startLocalPeers, withCluster } from './helpers/peers.js'

test('a 412 with max-age answered to an If-Match request is not copied hot: a plain GET through the non-owner gets the 200', async () => {
  // Some origins put the same Cache-Control on every response, a 412 included.
  await withCluster({ peers: 2, options: { hotThreshold: 1 }, route: ifMatchRoute({ 'cache-control': 'max-age=60' }) }, async ({ origin, peers: [a, b] }) => {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/p${i}`) as [string]
    const precondition = await request(url, { dispatcher: a, headers: { 'if-match': '"v0"' } })
    await precondition.body.dump()
    assert.equal(precondition.statusCode, 412)
    const plain = await request(url, { dispatcher: a })
    assert.deepEqual([plain.statusCode, await plain.body.text()], [200, 'v1'])
    assert.doesNotMatch(String(plain.headers['cache-status']), /detail=hot/)
    // The owner stored neither: the plain GET reached the origin too.
    assert.equal(origin.count(), 2)
    assert.equal(a.stats().hotHits, 0)
  })
})

test('a forward in flight when an unsafe request invalidates its URL is not copied hot: the next GET goes to the owner and the origin', { timeout: 20_000 }, async () => {
  let version = 1
  let gets = 0
  const seen = deferred()
  const release = deferred()
  const origin = await startOrigin((req, res) => {
    if (req.method === 'POST') {
      version++
      res.writeHead(204)
      res.end()
      return
    }
    gets++
    const body = `v${version}`
    const answer = (): void => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': body.length })
      res.end(body)
    }
    if (gets > 1) return answer()
    // The first GET read v1; it answers only after the POST has changed the resource.
    seen.resolve()
    release.promise.then(answer, () => {})
  })
  const cluster = await startLocalPeers(3, { hotThreshold: 1 })
  const [a, b, c] = cluster.peers as [Peer, Peer, Peer]
  try {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/p${i}`) as [string]
    // a's handler has answered c's DELETE once this resolves.
    const deleted = deferred()
    cluster.servers[0]?.on('request', (req, res) => {
      if (req.method === 'DELETE') res.on('finish', () => deleted.resolve())
    })
    const first = request(url, { dispatcher: a }).then(async (res) => await res.body.text())
    await seen.promise
    // Through a third peer, so that the invalidation reaches a as a DELETE.
    await (await request(url, { dispatcher: c, method: 'POST', body: 'x' })).body.dump()
    await deleted.promise
    release.resolve()
    assert.equal(await first, 'v1')
    const after = await request(url, { dispatcher: a })
    assert.equal(await after.body.text(), 'v2')
    assert.doesNotMatch(String(after.headers['cache-status']), /detail=hot/)
    assert.equal(gets, 2)
    assert.equal(a.stats().hotHits, 0)
  } finally {
    release.resolve()
    await cluster.close()
    await origin.close()
  }
})
