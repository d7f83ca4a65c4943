import assert from 'node:assert/strict'
import type http from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { Client } from '../src/index.js'
import { Undelivered } from '../src/invalidation-log.js'
import { deleteGate, pathOf, send, versionedPaths } from './helpers/versioned.js'
import { listen, ownedBy, startBlackhole, stopServer, waitFor, withCluster } from './helpers/peers.js'

// A successful unsafe request invalidates its URL on every peer of the pool. A DELETE that
// failed to reach a peer in the pool (its server briefly down, a reset, a 5xx) was counted in
// invalidationErrors and forgotten: that peer served the invalidated entry until it went stale.

test('a DELETE that failed to reach the owner is sent again once a forward to it succeeds', { timeout: 20_000 }, async () => {
  // A long ejectBackoff: no timed retry before the forward shows B answering.
  await withCluster({ peers: 2, options: { hotSize: 0, ejectBackoff: 60_000 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const [url, other] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 2) as [string, string]
    assert.equal((await send(a, url)).body, `${pathOf(url)} v1`, 'B, the owner, stores v1')
    const gate = deleteGate(cluster.servers[1] as http.Server, 1)

    assert.equal((await send(a, url, 'POST')).status, 204)
    assert.equal(gate.refused(), 1)
    assert.equal(a.stats().invalidationErrors, 1)

    assert.equal((await send(a, other)).body, `${pathOf(other)} v1`, 'a forward to B succeeds')
    await waitFor(() => gate.answered() === 1, 3000, 'the DELETE sent again to B')
    assert.equal((await send(b, url)).body, `${pathOf(url)} v2`, 'B dropped its pre-POST entry')
    assert.equal((await send(a, url)).body, `${pathOf(url)} v2`)
    const stats = a.stats()
    assert.equal(stats.invalidationReplays, 1)
    assert.equal(stats.invalidationErrors, 1)
    assert.equal(stats.invalidationGaps, 0)
  })
})

test('an owner that was down and ejected is sent the DELETEs it missed when a probe readmits it, before it takes its keys back', { timeout: 20_000 }, async () => {
  await withCluster({ peers: 2, options: { hotSize: 0, ejectAfter: 1, ejectBackoff: 50 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    let restarted: http.Server | undefined
    try {
      const [url, other] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 2) as [string, string]
      assert.equal((await send(a, url)).body, `${pathOf(url)} v1`)
      const port = (cluster.servers[1]?.address() as AddressInfo).port

      // B's server goes down: the forward fails and B is ejected. The POST's DELETE is not sent
      // to an ejected peer: it is owed to B at once.
      await stopServer(cluster.servers[1] as http.Server)
      assert.equal((await send(a, other)).status, 200, 'from the origin')
      assert.deepEqual(a.ejectedPeers, [b.self])
      assert.equal((await send(a, url, 'POST')).status, 204)
      assert.equal(a.stats().invalidationErrors, 0)

      // The same peer, on the same port again, with its cache as it was.
      restarted = (await listen(b.handler(), port)).server
      await waitFor(() => a.ejectedPeers.length === 0 && a.ownerOf(url) === b.self, 5000, 'B readmitted and back on the ring')
      assert.equal(a.stats().invalidationReplays, 1)
      assert.equal((await send(a, url)).body, `${pathOf(url)} v2`, 'B, owner again, dropped v1')
      assert.equal(b.stats().servedForPeers, 2)
      assert.equal((await send(b, url)).body, `${pathOf(url)} v2`)
    } finally {
      if (restarted !== undefined) await stopServer(restarted)
    }
  })
})

test('a Client: a DELETE that failed is sent again with the next one that succeeds', { timeout: 20_000 }, async () => {
  await withCluster({ peers: 2, options: { hotSize: 0 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const client = new Client({ peers: [a.self, b.self], ejectBackoff: 60_000 })
    try {
      await client.ready
      const [url, later] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 2) as [string, string]
      assert.equal((await send(client, url)).body, `${pathOf(url)} v1`)
      const gate = deleteGate(cluster.servers[1] as http.Server, 1)
      assert.equal((await send(client, url, 'POST')).status, 204)
      assert.equal(client.stats().invalidationErrors, 1)

      // Another URL's invalidation reaches B: so does the one that failed.
      assert.equal((await send(client, later, 'POST')).status, 204)
      await waitFor(() => gate.answered() === 2, 3000, 'the failed DELETE sent again to B')
      assert.equal((await send(b, url)).body, `${pathOf(url)} v2`)
      assert.equal(client.stats().invalidationReplays, 1)
    } finally {
      await client.destroy()
    }
  })
})

test('with no other traffic to the peer, a timed retry delivers; the attempts are bounded, and a later forward still delivers', { timeout: 20_000 }, async () => {
  await withCluster({ peers: 2, options: { hotSize: 0, ejectBackoff: 10 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const [url, other] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 2) as [string, string]
    await send(a, url)
    const gate = deleteGate(cluster.servers[1] as http.Server, 1)
    await send(a, url, 'POST')
    await waitFor(() => gate.answered() === 1, 3000, 'the timed retry')
    assert.equal((await send(b, url)).body, `${pathOf(url)} v2`)

    // Refused every time: the first try, then five timed attempts (10 + 20 + 40 + 80 + 160 ms).
    gate.refuse(Infinity)
    await send(a, url, 'POST')
    await waitFor(() => gate.refused() === 1 + 6, 3000, 'five timed attempts')
    await new Promise((resolve) => setTimeout(resolve, 600))
    assert.equal(gate.refused(), 1 + 6, 'no sixth')
    assert.equal(a.stats().invalidationErrors, 1 + 6)
    // The key is still owed: B answers a forward, and is sent it.
    gate.refuse(0)
    await send(a, other)
    await waitFor(() => gate.answered() === 2, 3000, 'delivery after the forward')
    assert.equal((await send(b, url)).body, `${pathOf(url)} v3`)
  })
})

for (const how of ['close', 'destroy'] as const) {
  test(`${how}() stops the timed retries`, { timeout: 20_000 }, async () => {
    await withCluster({ peers: 2, options: { hotSize: 0, ejectBackoff: 20 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
      const [url] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`) as [string]
      const gate = deleteGate(cluster.servers[1] as http.Server, Infinity)
      await send(a, url, 'POST')
      assert.equal(gate.refused(), 1)
      await a[how]()
      await new Promise((resolve) => setTimeout(resolve, 200))
      assert.equal(gate.refused(), 1, 'no retry after close')
    })
  })
}

test('undelivered invalidations are bounded by invalidationLogSize; what is dropped is a gap', { timeout: 20_000 }, async () => {
  await withCluster({ peers: 2, options: { hotSize: 0, ejectBackoff: 60_000, invalidationLogSize: 2 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const [other, ...urls] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 4) as [string, string, string, string]
    for (const url of urls) await send(a, url)
    const gate = deleteGate(cluster.servers[1] as http.Server, 3)
    for (const url of urls) await send(a, url, 'POST')
    assert.equal(a.stats().invalidationGaps, 1, 'the oldest was dropped: one gap for B')
    await send(a, other)
    await waitFor(() => gate.answered() === 2, 3000, 'the two kept sent again')
    const [oldest, ...newest] = urls as [string, string, string]
    for (const url of newest) assert.equal((await send(b, url)).body, `${pathOf(url)} v2`)
    // Documented: what was dropped stays on B until it goes stale.
    assert.equal((await send(b, oldest)).body, `${pathOf(oldest)} v1`)
    assert.equal(a.stats().invalidationReplays, 2)
  })
})

test('the undelivered set: one budget for all peers, oldest dropped first, a newer failure outlives an older delivery', () => {
  const u = new Undelivered(3, 30)
  assert.equal(u.has('p'), false)
  assert.equal(u.add('p', 'k1'), 0)
  assert.equal(u.add('q', 'k1'), 0, 'a URL failed to two peers is kept once')
  assert.equal(u.add('p', 'k2'), 0)
  assert.equal(u.size, 2)
  const [[, seq1]] = u.owed('q') as [[string, number]]
  u.delivered('q', 'k1', seq1)
  assert.equal(u.has('q'), false)
  assert.deepEqual(u.owed('p').map(([k]) => k), ['k1', 'k2'])

  // k1 fails again after the snapshot: delivering the older failure keeps it owed.
  const before = u.owed('p')
  u.add('p', 'k1')
  for (const [key, seq] of before) u.delivered('p', key, seq)
  assert.deepEqual(u.owed('p').map(([k]) => k), ['k1'])

  // Past three keys (or 30 characters), the oldest goes, one gap per peer that loses one.
  u.add('q', 'k3')
  u.add('q', 'k4')
  assert.equal(u.add('r', 'k5'), 1, 'k1 dropped: p loses it')
  assert.equal(u.has('p'), false)
  assert.equal(u.add('q', 'x'.repeat(27)), 1, 'k3 and k4 dropped: one gap for q')
  assert.deepEqual(u.owed('q').map(([k]) => k), ['x'.repeat(27)])

  // A peer that leaves takes its keys along.
  assert.deepEqual(u.take('q'), ['x'.repeat(27)])
  assert.deepEqual(u.take('r'), ['k5'])
  assert.equal(u.size, 0)
})

test('a peer that leaves while owed a DELETE gets it once, with what it missed, when it comes back', { timeout: 20_000 }, async () => {
  await withCluster({ peers: 2, options: { hotSize: 0, ejectBackoff: 60_000 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const [url, other] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 2) as [string, string]
    await send(a, url)
    const gate = deleteGate(cluster.servers[1] as http.Server, 1)
    await send(a, url, 'POST')
    assert.equal(gate.refused(), 1)
    a.setPeers([a.self])
    a.setPeers([a.self, b.self])
    await waitFor(() => gate.answered() === 1 && a.ownerOf(url) === b.self, 3000, 'the replay to B')
    assert.equal((await send(a, url)).body, `${pathOf(url)} v2`)
    // Nothing is owed any more: a successful forward sends nothing else.
    await send(a, other)
    await send(a, other, 'POST')
    await waitFor(() => gate.answered() === 2, 3000, 'the second POST\'s DELETE')
    assert.equal(a.stats().invalidationReplays, 1)
  })
})

test('a peer that answers GETs but refuses every DELETE is not sent a burst after each forward', { timeout: 20_000 }, async () => {
  await withCluster({ peers: 2, options: { hotSize: 0, ejectBackoff: 60_000 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const [url, other] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 2) as [string, string]
    const gate = deleteGate(cluster.servers[1] as http.Server, Infinity)
    await send(a, url, 'POST')
    assert.equal(gate.refused(), 1)
    await send(a, other)
    await waitFor(() => gate.refused() === 2, 3000, 'the delivery the forward starts')
    for (let i = 0; i < 5; i++) await send(a, other)
    assert.equal(b.stats().servedForPeers, 6)
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.equal(gate.refused(), 2, 'the next waits for ejectBackoff')
  })
})

test('an ejected peer is owed its DELETEs instead of being sent them: no connection per invalidation to a peer that never answers', { timeout: 20_000 }, async () => {
  const hung = await startBlackhole()
  try {
    // A long ejectBackoff: no probe while the test runs.
    await withCluster({ peers: 1, options: { hotSize: 0, ejectAfter: 1, peerTimeout: 300, ejectBackoff: 60_000 }, extra: [hung.url], route: versionedPaths().route }, async ({ origin: server, peers: [a] }) => {
      const [owned] = ownedBy(a, hung.url, (i) => `${server.url}/doc/${i}`)
      assert.equal((await send(a, owned as string)).status, 200, 'from the origin, around the hung owner')
      assert.deepEqual(a.ejectedPeers, [hung.url])
      const accepted = hung.accepted()
      for (let i = 0; i < 5; i++) assert.equal((await send(a, `${server.url}/posted/${i}`, 'POST')).status, 204)
      // Nothing to wait for when it is right: long enough for five connections to be accepted,
      // and for their DELETEs to time out (peerTimeout), when it is not.
      await new Promise((resolve) => setTimeout(resolve, 600))
      assert.equal(hung.accepted(), accepted, 'connections opened to the ejected peer')
      assert.equal(a.stats().invalidationErrors, 0)
    })
  } finally {
    await hung.close()
  }
})
