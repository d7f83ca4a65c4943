import assert from 'node:assert/strict'
import type http from 'node:http'
import { test } from 'node:test'
import { request, type Dispatcher } from 'undici'
import type { Peer } from '../src/index.js'
import { startOrigin } from './helpers/origin.js'
import { ownedBy, startLocalPeers, stopServer, waitFor, withCluster } from './helpers/peers.js'

// Where peers meet: requests coalesced on a non-owner, answers from something in front of the
// owner's handler, invalidations that must reach every peer (hot copies, an ejected owner),
// and only-if-cached when the owner cannot be asked.

interface Got { status: number, headers: Record<string, string | string[] | undefined>, body: string }

async function get (dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}, method: Dispatcher.HttpMethod = 'GET'): Promise<Got> {
  const res = await request(url, { dispatcher, headers, method })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

/** GETs of `path` (path and query) the origin has answered, leaving out other methods. */
function gets (log: Array<{ method: string, url: string }>, path: string): number {
  return log.filter((r) => r.method === 'GET' && r.url === path).length
}

/** An origin route whose GETs answer the current version (v1, v2, ...); a POST or PUT makes the next. */
function versioned (): { route: (req: http.IncomingMessage, res: http.ServerResponse) => void, readonly version: number } {
  let version = 1
  return {
    get version () { return version },
    route: (req, res) => {
      if (req.method === 'POST' || req.method === 'PUT') {
        version++
        res.writeHead(204)
        res.end()
        return
      }
      const body = `v${version}`
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    }
  }
}

function pathOf (url: string): string {
  const u = new URL(url)
  return u.pathname + u.search
}

test('a non-owner coalesces only requests that ask the same of the owner\'s cache: no-cache, max-age=0 and Pragma joiners, and a plain joiner of a max-stale leader, each get a fresh answer', { timeout: 20_000 }, async () => {
  let clock = Date.now()
  // Every GET gets a new version: v1, v2, ... per path.
  const origin = await startOrigin((req, res) => {
    const body = `v${gets(origin.log, req.url ?? '')}`
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=10', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }, () => clock)
  const cluster = await startLocalPeers(2, { hotSize: 0, now: () => clock })
  const [a, b] = cluster.peers as [Peer, Peer]
  try {
    const cases: Array<{ name: string, leader: Record<string, string>, joiner: Record<string, string>, advance: number }> = [
      { name: 'no-cache', leader: {}, joiner: { 'cache-control': 'no-cache' }, advance: 5000 },
      { name: 'max-age-0', leader: {}, joiner: { 'cache-control': 'max-age=0' }, advance: 5000 },
      { name: 'pragma', leader: {}, joiner: { pragma: 'no-cache' }, advance: 5000 },
      // Stale by 10 s: only the leader's max-stale lets the owner serve it.
      { name: 'max-stale', leader: { 'cache-control': 'max-stale' }, joiner: {}, advance: 20_000 }
    ]
    // Every case is run before the verdict, so a failure names all the cases that went wrong.
    const seen: Array<{ name: string, joiner: string, collapsed: boolean, originFetches: number }> = []
    for (const c of cases) {
      const [url] = ownedBy(a, b.self, (i) => `${origin.url}/${c.name}/${i}`) as [string]
      const fill = await get(a, url)
      assert.equal(fill.body, 'v1', `${c.name}: the owner stores v1`)
      clock += c.advance
      // Dispatched in the same tick: the joiner arrives while the leader's forward is in flight.
      const [leader, joiner] = await Promise.all([get(a, url, c.leader), get(a, url, c.joiner)])
      assert.equal(leader.status, 200, c.name)
      assert.equal(joiner.status, 200, c.name)
      seen.push({
        name: c.name,
        joiner: joiner.body,
        collapsed: /collapsed/.test(String(joiner.headers['cache-status'])),
        originFetches: gets(origin.log, pathOf(url))
      })
    }
    // The joiner's own request reached the owner, which asked the origin again for it.
    assert.deepEqual(seen, cases.map((c) => ({ name: c.name, joiner: 'v2', collapsed: false, originFetches: 2 })))
  } finally {
    await cluster.close()
    await origin.close()
  }
})

test('an owner whose http server answers 431 without forwardcache\'s fields is a hop failure: the asking peer fetches the origin itself and does not eject the owner', { timeout: 20_000 }, async () => {
  await withCluster({ peers: 2, options: { hotSize: 0, ejectAfter: 2 } }, async ({ origin, peers: [a, b] }) => {
    // An ordinary percent-encoded query: about 12.6 KB on the origin's request line, but the
    // hop spells the URL again inside q= (each % as %25), past node:http's 16 KiB header limit.
    const euro = '%E2%82%AC'.repeat(1400)
    const longUrls = ownedBy(a, b.self, (i) => `${origin.url}/search/${i}?q=${euro}`, 3)
    for (const url of longUrls) {
      const r = await get(a, url)
      assert.equal(r.status, 200, `the caller gets the origin's answer, not the owner server's ${r.status}`)
      assert.equal(r.body, `body of ${pathOf(url)}`)
      assert.match(String(r.headers['cache-status']), /fwd=bypass; detail=owner-unavailable/)
    }
    assert.equal(origin.count(), 3, 'each request was fetched from the origin once, by the asking peer')
    assert.equal(b.stats().servedForPeers, 0, 'the owner\'s handler never saw them')
    // Three such answers with ejectAfter 2: the owner stays in the ring and still gets its keys.
    assert.deepEqual(a.ejectedPeers, [])
    const [plain] = ownedBy(a, b.self, (i) => `${origin.url}/plain/${i}`) as [string]
    const r = await get(a, plain)
    assert.equal(r.status, 200)
    assert.match(String(r.headers['cache-status']), /fwd=uri-miss/)
    assert.equal(b.stats().servedForPeers, 1)
    assert.equal(origin.count(), 4)
  })
})

test('a POST through one non-owner drops the hot copies a third peer keeps, not only the owner\'s entry', { timeout: 20_000 }, async () => {
  const versions = versioned()
  await withCluster({ peers: 3, options: { hotThreshold: 2 }, route: versions.route }, async ({ origin, peers: [a, b, c] }) => {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/doc/${i}`) as [string]
    // C asks often enough to keep a hot copy, and answers from it.
    for (let i = 0; i < 2; i++) assert.equal((await get(c, url)).body, 'v1')
    const hot = await get(c, url)
    assert.equal(hot.body, 'v1')
    assert.match(String(hot.headers['cache-status']), /hit; detail=hot/)
    assert.equal(c.stats().hotHits, 1)
    assert.equal(gets(origin.log, pathOf(url)), 1)

    const post = await get(a, url, {}, 'POST')
    assert.equal(post.status, 204)
    assert.equal(versions.version, 2)
    // The owner's DELETE is awaited before the POST's answer; C's is not: poll, bounded.
    assert.equal((await get(b, url)).body, 'v2', 'the owner dropped its entry')
    await waitFor(async () => (await get(c, url)).body === 'v2', 3000, 'C to answer v2 after the POST through A')
    assert.equal(gets(origin.log, pathOf(url)), 2, 'v1 once, v2 once: C\'s new answer came from the owner\'s store')
  })
})

test('a PUT while the owner is ejected reaches it too: readmitted, it does not serve the pre-PUT copy', { timeout: 20_000 }, async () => {
  const versions = versioned()
  // The first request for each /slow/ path (the owner's fill) never gets an answer; the asking
  // peer's fallback, the second, is answered at once. So the owner, healthy, times out.
  const held: http.ServerResponse[] = []
  const origin = await startOrigin((req, res) => {
    const path = req.url ?? ''
    if (path.startsWith('/slow/') && origin.count(path) === 1) {
      held.push(res)
      return
    }
    versions.route(req, res)
  })
  const cluster = await startLocalPeers(2, { hotSize: 0, peerTimeout: 200, ejectAfter: 3, ejectBackoff: 1000 })
  const [a, b] = cluster.peers as [Peer, Peer]
  try {
    const [doc] = ownedBy(a, b.self, (i) => `${origin.url}/doc/${i}`) as [string]
    assert.equal((await get(a, doc)).body, 'v1', 'the owner stores v1')
    assert.equal(b.stats().servedForPeers, 1)

    for (const slow of ownedBy(a, b.self, (i) => `${origin.url}/slow/${i}`, 3)) {
      const r = await get(a, slow)
      assert.match(String(r.headers['cache-status']), /detail=owner-unavailable/)
    }
    assert.deepEqual(a.ejectedPeers, [b.self], 'three timeouts ejected the owner')

    const put = await get(a, doc, {}, 'PUT')
    assert.equal(put.status, 204)
    assert.equal(versions.version, 2)

    // Readmitted, the owner is first sent the PUT's DELETE (owed to it while it was ejected),
    // and takes its keys back once it has been.
    await waitFor(() => a.ejectedPeers.length === 0 && a.ownerOf(doc) === b.self, 10_000, 'a probe to readmit the owner')
    const served = b.stats().servedForPeers
    const after = await get(a, doc)
    assert.equal(b.stats().servedForPeers, served + 1, 'the request went to the readmitted owner')
    assert.equal(after.body, 'v2', `the readmitted owner does not serve the pre-PUT copy (${String(after.headers['cache-status'])})`)
    assert.equal((await get(b, doc)).body, 'v2')
    assert.equal(gets(origin.log, pathOf(doc)), 2, 'v1 once, v2 once')
  } finally {
    await cluster.close()
    await origin.close()
  }
})

test('an only-if-cached request whose owner is unreachable gets a 504 from the asking peer, and the origin is not asked', { timeout: 20_000 }, async () => {
  await withCluster({ peers: 2, options: { hotSize: 0 } }, async ({ origin, cluster, peers: [a, b] }) => {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/r/${i}`) as [string]
    const onlyIfCached = { 'cache-control': 'only-if-cached' }
    // The owner's own answer, for comparison.
    const fromOwner = await get(b, url, onlyIfCached)
    assert.equal(fromOwner.status, 504)
    assert.match(String(fromOwner.headers['cache-status']), /fwd=miss; detail=only-if-cached/)

    // The owner's handler goes away (a restart, a crash): the asking peer falls back.
    await stopServer(cluster.servers[1] as http.Server)
    const r = await get(a, url, onlyIfCached)
    assert.equal(r.status, 504, `only-if-cached is not fetched from the origin (${String(r.headers['cache-status'])})`)
    assert.match(String(r.headers['cache-status']), /fwd=miss; detail=only-if-cached/)
    assert.equal(origin.count(), 0)

    // A request without the directive still falls back to the origin.
    const plain = await get(a, url)
    assert.equal(plain.status, 200)
    assert.match(String(plain.headers['cache-status']), /fwd=bypass; detail=owner-unavailable/)
    assert.equal(origin.count(), 1)
  })
})
