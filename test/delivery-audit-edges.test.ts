import assert from 'node:assert/strict'
import type http from 'node:http'
import { test } from 'node:test'
import v8 from 'node:v8'
import vm from 'node:vm'
import { InvalidationLog } from '../src/invalidation-log.js'
import { deleteGate, pathOf, send, versionedPaths } from './helpers/versioned.js'
import { ownedBy, waitFor, withCluster } from './helpers/peers.js'

// Edges of pool-wide invalidation delivery: a peer held off the ring while it is sent what it
// missed or what failed to reach it must not join the ring while it still owes DELETEs that
// nothing is sending.

test('a DELETE that fails once during a replay is sent again before the peer joins the ring', { timeout: 20_000 }, async () => {
  // No timed retry: only the end of the replay can send it again.
  await withCluster({ peers: 2, options: { hotSize: 0, ejectBackoff: 60_000 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const [url] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`) as [string]
    assert.equal((await send(a, url)).body, `${pathOf(url)} v1`, 'B, the owner, stores v1')
    a.setPeers([a.self])
    assert.equal((await send(a, url, 'POST')).status, 204)

    // B comes back; the replay's one DELETE is refused (a reset), not ejectAfter in a row.
    const g = deleteGate(cluster.servers[1] as http.Server)
    g.refuse(1)
    a.setPeers([a.self, b.self])
    await waitFor(() => a.ownerOf(url) === b.self, 3000, 'B back on the ring')
    assert.equal(g.answered(), 1, 'B got the DELETE before it took its keys back')
    assert.equal((await send(a, url)).body, `${pathOf(url)} v2`, 'B does not serve v1')
    const stats = a.stats()
    assert.equal(stats.invalidationErrors, 1)
    assert.equal(stats.invalidationReplays, 2)
  })
})

test('a peer readmitted while a delivery to it is failing is held until it has been sent what it owes', { timeout: 20_000 }, async () => {
  await withCluster({ peers: 2, options: { hotSize: 0, ejectAfter: 1, ejectBackoff: 100 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const [url, other] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 2) as [string, string]
    assert.equal((await send(a, url)).body, `${pathOf(url)} v1`, 'B, the owner, stores v1')

    // The POST's DELETE is refused; the timed retry's hangs (B unreachable for a while).
    const g = deleteGate(cluster.servers[1] as http.Server)
    g.refuse(1)
    g.hold()
    assert.equal((await send(a, url, 'POST')).status, 204)
    await waitFor(() => g.held(), 3000, 'the timed retry hanging')

    // B is ejected, then a probe readmits it while that delivery still runs.
    g.failForwards(true)
    assert.equal((await send(a, other)).status, 200)
    assert.deepEqual(a.ejectedPeers, [b.self])
    g.failForwards(false)
    await waitFor(() => a.ejectedPeers.length === 0, 3000, 'B readmitted')
    assert.notEqual(a.ownerOf(url), b.self, 'held off the ring: it owes a DELETE')
    // Shown as held, not as ejected, in the API and in the metrics.
    assert.deepEqual(a.heldPeers, [b.self])
    assert.deepEqual(a.ejectedPeers, [])
    assert.match(a.metrics(), /^forwardcache_peers\{state="held"\} 1$/m)
    assert.match(a.metrics(), /^forwardcache_peers\{state="healthy"\} 1$/m)

    // The delivery from before the readmission fails: B must still get the DELETE before its keys.
    g.fail()
    await waitFor(() => a.ownerOf(url) === b.self, 3000, 'B back on the ring')
    assert.equal(g.answered(), 1, 'B got the DELETE before it took its keys back')
    assert.deepEqual(a.heldPeers, [])
    assert.match(a.metrics(), /^forwardcache_peers\{state="held"\} 0$/m)
    assert.equal((await send(a, url)).body, `${pathOf(url)} v2`, 'B does not serve v1')
  })
})

test('a readmitted peer whose first DELETE fails once stays held until it is sent again', { timeout: 20_000 }, async () => {
  await withCluster({ peers: 2, options: { hotSize: 0, ejectAfter: 2, ejectBackoff: 100 }, route: versionedPaths().route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const [url, ...others] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 3) as [string, string, string]
    assert.equal((await send(a, url)).body, `${pathOf(url)} v1`, 'B, the owner, stores v1')

    // B is ejected; the POST's DELETE is owed to it.
    const g = deleteGate(cluster.servers[1] as http.Server)
    g.failForwards(true)
    for (const other of others) assert.equal((await send(a, other)).status, 200)
    assert.deepEqual(a.ejectedPeers, [b.self])
    assert.equal((await send(a, url, 'POST')).status, 204)

    // A probe readmits B; the first DELETE it is sent is reset, once (not ejectAfter in a row).
    g.failForwards(false)
    g.refuse(1)
    await waitFor(() => a.ownerOf(url) === b.self, 3000, 'B back on the ring')
    assert.equal(g.answered(), 1, 'B got the DELETE before it took its keys back')
    assert.equal((await send(a, url)).body, `${pathOf(url)} v2`, 'B does not serve v1')
  })
})

test('the log frees the URLs it handed to the last peers back once every peer that left is back', async () => {
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as () => void
  const log = new InvalidationLog(100, 100 * 2 ** 20, 4)
  log.left('http://b')
  for (let i = 0; i < 10; i++) log.add(`https://origin.test/${i}/${'a'.repeat(2 ** 20)}`)
  const ref = ((): WeakRef<object> => new WeakRef(log.rejoined('http://b')?.keys as object))()
  assert.equal(log.size, 0, 'the log itself is freed')
  // A WeakRef's target lives at least until the job that made it ends.
  await new Promise((resolve) => setImmediate(resolve))
  gc()
  assert.equal(ref.deref(), undefined, 'nothing holds the keys handed to B')
})
