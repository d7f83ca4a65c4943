import assert from 'node:assert/strict'
import diagnosticsChannel from 'node:diagnostics_channel'
import { test } from 'node:test'
import { request, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { deferred, ownedBy, startLocalPeers } from './helpers/peers.js'

// Stale stand-ins handed to coalesced callers that did not allow them, an old
// entry that outlives the origin's no-store, and hot hits missing from diagnostics_channel.

async function get (dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { dispatcher, headers })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

async function turn (): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve))
}

/**
 * An origin that answers `old` with `cacheControl` until `fail()`; then every request waits
 * for `release()` and gets a 503.
 */
async function failingOrigin (cacheControl: string, now: () => number) {
  let failing = false
  let gate = deferred()
  const origin: CountingOrigin = await startOrigin(async (_req, res) => {
    if (!failing) {
      res.writeHead(200, { 'cache-control': cacheControl, 'content-length': 3 })
      res.end('old')
      return
    }
    await gate.promise
    res.writeHead(503, { 'content-length': 4 })
    res.end('down')
  }, now)
  return {
    origin,
    fail: () => { failing = true; gate = deferred() },
    release: () => gate.resolve()
  }
}

/** A leader and a joiner coalesced on one failing fill of a stale entry. */
async function coalescedOnFailure (peer: Peer, o: Awaited<ReturnType<typeof failingOrigin>>, url: string,
  leaderHeaders: Record<string, string>, joinerHeaders: Record<string, string>) {
  const before = o.origin.count()
  const leader = get(peer, url, leaderHeaders)
  while (o.origin.count() === before) await turn()
  const joiner = get(peer, url, joinerHeaders)
  await turn()
  assert.equal(peer.stats().coalescedWaits, 1, 'the joiner waited for the leader\'s fill')
  o.release()
  const [l, j] = await Promise.all([leader, joiner])
  return { leader: l, joiner: j, failedFetches: o.origin.count() - before }
}

test('a joiner that sent Cache-Control: no-cache is not handed the leader\'s stale-if-error stand-in (RFC 9111 section 5.2.1.4)', async () => {
  let clock = Date.parse('2030-01-01T00:00:00Z')
  const o = await failingOrigin('max-age=1, stale-if-error=600', () => clock)
  const peer = new Peer({ self: 'http://127.0.0.1:1', now: () => clock })
  try {
    const url = `${o.origin.url}/sie-no-cache-joiner`
    assert.equal((await get(peer, url)).body, 'old')
    clock += 10_000
    o.fail()
    const { leader, joiner, failedFetches } = await coalescedOnFailure(peer, o, url, {}, { 'cache-control': 'no-cache' })
    // The leader allowed it: the stale copy stands in for the 503.
    assert.equal(leader.status, 200)
    assert.match(String(leader.headers['cache-status']), /detail=stale-if-error/)
    // Alone, the no-cache caller gets the origin's 503 (staleIfErrorAllows refuses no-cache);
    // coalesced, it must not get the stored response either.
    assert.ok(failedFetches >= 1 && failedFetches <= 2, `origin asked ${failedFetches} times during the failure`)
    assert.equal(joiner.status, 503, `the no-cache joiner got ${joiner.status} ${joiner.body} (${String(joiner.headers['cache-status'])})`)
    assert.equal(joiner.body, 'down')
    assert.equal(o.origin.count(), 1 + failedFetches)
  } finally {
    await peer.close()
    await o.origin.close()
  }
})

test('a joiner is not handed a stale stand-in that only the leader\'s own request stale-if-error allowed (RFC 9111 section 4.2.4)', async () => {
  let clock = Date.parse('2030-01-01T00:00:00Z')
  // The response allows no stale use at all; only the leader's request asks for it.
  const o = await failingOrigin('max-age=1', () => clock)
  const peer = new Peer({ self: 'http://127.0.0.1:1', now: () => clock })
  try {
    const url = `${o.origin.url}/sie-request-directive`
    assert.equal((await get(peer, url)).body, 'old')
    clock += 10_000
    o.fail()
    const { leader, joiner, failedFetches } = await coalescedOnFailure(peer, o, url, { 'cache-control': 'stale-if-error=600' }, {})
    assert.equal(leader.status, 200)
    assert.match(String(leader.headers['cache-status']), /detail=stale-if-error/)
    // Neither the joiner nor the origin permitted a stale response, and the origin answered
    // (not disconnected): the joiner gets the 503, as it does when it asks alone.
    assert.ok(failedFetches >= 1 && failedFetches <= 2, `origin asked ${failedFetches} times during the failure`)
    assert.equal(joiner.status, 503, `the joiner got ${joiner.status} ${joiner.body} (${String(joiner.headers['cache-status'])})`)
    assert.equal(joiner.body, 'down')
    assert.equal(o.origin.count(), 1 + failedFetches)
  } finally {
    await peer.close()
    await o.origin.close()
  }
})

test('a plain fill answered no-store drops the stale entry it was fetched for: a later 503 does not bring the old body back', async () => {
  let clock = Date.parse('2030-01-01T00:00:00Z')
  let phase: 'old' | 'no-store' | 'down' = 'old'
  const origin = await startOrigin((_req, res) => {
    if (phase === 'old') {
      // No validator: the stale entry is refilled with a plain GET, not revalidated.
      res.writeHead(200, { 'cache-control': 'max-age=1, stale-if-error=600', 'content-length': 3 })
      res.end('old')
    } else if (phase === 'no-store') {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 3 })
      res.end('new')
    } else {
      res.writeHead(503, { 'content-length': 4 })
      res.end('down')
    }
  }, () => clock)
  const peer = new Peer({ self: 'http://127.0.0.1:1', now: () => clock })
  try {
    const url = `${origin.url}/no-store-after-stale`
    assert.equal((await get(peer, url)).body, 'old')
    clock += 10_000
    phase = 'no-store'
    assert.equal((await get(peer, url)).body, 'new')
    assert.equal(origin.count(), 2)
    phase = 'down'
    const after = await get(peer, url)
    assert.equal(origin.count(), 3)
    // With a validator, a 200 no-store to the revalidation drops the entry (section 4.3.3),
    // and the 503 goes through; the plain fill must not keep the old entry either.
    assert.equal(after.status, 503, `got ${after.status} ${after.body} (${String(after.headers['cache-status'])})`)
    assert.equal(after.body, 'down')
    assert.equal(peer.stats().cacheEntries, 0, 'the old entry outlived the origin\'s no-store')
  } finally {
    await peer.close()
    await origin.close()
  }
})

test('a stale-while-revalidate background fill answered no-store drops the old entry: the next caller goes to the origin', async () => {
  let clock = Date.parse('2030-01-01T00:00:00Z')
  let noStore = false
  const origin = await startOrigin((_req, res) => {
    if (!noStore) {
      res.writeHead(200, { 'cache-control': 'max-age=1, stale-while-revalidate=600', 'content-length': 3 })
      res.end('old')
      return
    }
    res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 3 })
    res.end('new')
  }, () => clock)
  const peer = new Peer({ self: 'http://127.0.0.1:1', now: () => clock })
  try {
    const url = `${origin.url}/swr-no-store`
    assert.equal((await get(peer, url)).body, 'old')
    clock += 10_000
    noStore = true
    // Within the window: served stale, validated in the background.
    const stale = await get(peer, url)
    assert.equal(stale.body, 'old')
    assert.match(String(stale.headers['cache-status']), /stale-while-revalidate/)
    while (origin.count() < 2 || peer.stats().flights > 0) await turn()
    // The origin's latest word is no-store: nothing stored may answer the next caller.
    const next = await get(peer, url)
    assert.equal(origin.count(), 3, 'the next caller was answered from the entry the origin had since marked no-store')
    assert.equal(next.body, 'new')
  } finally {
    await peer.close()
    await origin.close()
  }
})

test('a hot hit publishes forwardcache:hit, as an owner hit does', async () => {
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': 3 })
    res.end('hot')
  })
  const cluster = await startLocalPeers(2, { hotThreshold: 1 })
  const [a, b] = cluster.peers as [Peer, Peer]
  const hits: Array<{ self: string, url: string, status: number, age: number }> = []
  const onHit = (message: unknown): void => { hits.push(message as typeof hits[number]) }
  diagnosticsChannel.subscribe('forwardcache:hit', onHit)
  try {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/hot-dc-${i}`) as [string]
    await get(a, url) // forwarded to b, copied hot on its way back
    assert.equal(hits.length, 0)
    const hot = await get(a, url)
    assert.match(String(hot.headers['cache-status']), /hit; detail=hot/)
    assert.equal(a.stats().hotHits, 1)
    assert.equal(origin.count(), 1)
    assert.equal(b.stats().servedForPeers, 1, 'the hot hit did not reach the owner')
    // An owner hit publishes one message; the hot hit, served from a's cache, should too.
    await get(b, url)
    const fromB = hits.filter((h) => h.self === b.self)
    assert.equal(fromB.length, 1)
    const fromA = hits.filter((h) => h.self === a.self)
    assert.equal(fromA.length, 1, 'no forwardcache:hit message for the hot hit')
    assert.equal(fromA[0]?.url, url)
    assert.equal(fromA[0]?.status, 200)
  } finally {
    diagnosticsChannel.unsubscribe('forwardcache:hit', onHit)
    await cluster.close()
    await origin.close()
  }
})

test('Pragma: no-cache (without Cache-Control) refuses a stale-if-error stand-in as Cache-Control: no-cache does (RFC 9111 section 5.4)', async () => {
  let clock = Date.parse('2030-01-01T00:00:00Z')
  const o = await failingOrigin('max-age=1, stale-if-error=600', () => clock)
  const peer = new Peer({ self: 'http://127.0.0.1:1', now: () => clock })
  try {
    const url = `${o.origin.url}/sie-pragma`
    assert.equal((await get(peer, url)).body, 'old')
    clock += 10_000
    o.fail()
    o.release()
    const cc = await get(peer, url, { 'cache-control': 'no-cache' })
    assert.equal(cc.status, 503)
    assert.equal(o.origin.count(), 2)
    const pragma = await get(peer, url, { pragma: 'no-cache' })
    assert.equal(o.origin.count(), 3)
    assert.equal(pragma.status, 503, `got ${pragma.status} ${pragma.body} (${String(pragma.headers['cache-status'])})`)
    assert.equal(pragma.body, 'down')
  } finally {
    await peer.close()
    await o.origin.close()
  }
})
