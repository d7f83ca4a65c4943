import assert from 'node:assert/strict'
import diagnosticsChannel from 'node:diagnostics_channel'
import type http from 'node:http'
import { test } from 'node:test'
import type { Peer } from '../src/index.js'
import { InvalidationLog } from '../src/invalidation-log.js'
import { startOrigin } from './helpers/origin.js'
import { deleteGate, pathOf, send, versionedPaths } from './helpers/versioned.js'
import { ownedBy, startLocalPeers, waitFor } from './helpers/peers.js'

// Follow-ups to pool-wide invalidation delivery: what the counters and the channels say about
// the DELETEs owed to peers.

/**
 * The messages of `channel` about `peer`, collected until `stop()`: the code before a channel
 * existed publishes none, and its test must fail on the assertions, not hang.
 */
function collect<T extends { peer: string }> (channel: string, peer: string): { messages: T[], stop: () => void } {
  const messages: T[] = []
  const listener = (message: unknown): void => {
    if ((message as T).peer === peer) messages.push(message as T)
  }
  diagnosticsChannel.subscribe(channel, listener)
  return { messages, stop: () => diagnosticsChannel.unsubscribe(channel, listener) }
}

interface ReplayMessage { self: string, peer: string, sent: number, failed: number, complete: boolean }

test('a replay that gives up counts in invalidationErrors only the DELETEs it sent that failed, not those it never sent', { timeout: 20_000 }, async () => {
  const server = await startOrigin(versionedPaths().route)
  // No timed retry while the test looks: the keys given up stay owed, unsent.
  const cluster = await startLocalPeers(2, { hotSize: 0, ejectAfter: 2, ejectBackoff: 60_000 })
  const [a, b] = cluster.peers as [Peer, Peer]
  const replays = collect<ReplayMessage>('forwardcache:replay', b.self)
  try {
    const urls = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 10)
    a.setPeers([a.self])
    for (const url of urls) assert.equal((await send(a, url, 'POST')).status, 204)
    const gate = deleteGate(cluster.servers[1] as http.Server, Infinity)
    a.setPeers([a.self, b.self])
    await waitFor(() => replays.messages.length === 1, 3000, 'the replay to B')
    const refused = gate.refused()
    // Four at a time, two failures in a row end it: some of the ten were never sent.
    assert.ok(refused >= 2 && refused < urls.length, `${refused} sent`)
    assert.deepEqual(replays.messages[0], { self: a.self, peer: b.self, sent: 0, failed: urls.length, complete: true })
    assert.equal(a.stats().invalidationReplays, refused)
    assert.equal(a.stats().invalidationErrors, refused, 'the DELETEs sent and refused, and no more')
    assert.match(a.metrics(), new RegExp(`^forwardcache_invalidation_errors_total ${refused}$`, 'm'))
  } finally {
    replays.stop()
    await cluster.close()
    await server.close()
  }
})

interface DeliveryMessage { self: string, peer: string, sent: number, failed: number, remaining: number }

test('forwardcache:delivery: one message per round of sending a peer the DELETEs that failed to reach it', { timeout: 20_000 }, async () => {
  const origin = versionedPaths()
  const server = await startOrigin(origin.route)
  // Timed retries only (nothing else is sent to B): 20 ms, then 40 ms.
  const cluster = await startLocalPeers(2, { hotSize: 0, ejectBackoff: 20 })
  const [a, b] = cluster.peers as [Peer, Peer]
  const deliveries = collect<DeliveryMessage>('forwardcache:delivery', b.self)
  try {
    const [url] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`) as [string]
    // The POST's DELETE and the first timed retry are refused; the second gets through.
    const gate = deleteGate(cluster.servers[1] as http.Server, 2)
    assert.equal((await send(a, url, 'POST')).status, 204)
    await waitFor(() => gate.answered() === 1, 3000, 'the second timed retry')
    await waitFor(() => deliveries.messages.length === 2, 3000, 'its message')
    assert.deepEqual(deliveries.messages, [
      { self: a.self, peer: b.self, sent: 0, failed: 1, remaining: 1 },
      { self: a.self, peer: b.self, sent: 1, failed: 0, remaining: 0 }
    ])
    assert.equal(a.stats().invalidationErrors, 2)
    assert.equal(a.stats().invalidationReplays, 2)
  } finally {
    deliveries.stop()
    await cluster.close()
    await server.close()
  }
})

test('the invalidation log: a peer it does not know joining after a departure was forgotten with invalidations since is a gap, once per departure forgotten', () => {
  const log = new InvalidationLog(10, 1000, 2)
  log.left('http://b')
  log.add('k1')
  log.left('http://c')
  log.left('http://d')
  assert.equal(log.departed, 2, 'b forgotten')
  // b may come back as any peer the log does not know: what it missed cannot be sent.
  assert.deepEqual(log.rejoined('http://b'), { keys: [], complete: false })
  // One departure was forgotten: one gap, not one for every peer that joins from now on.
  assert.equal(log.rejoined('http://new'), undefined)

  // A departure forgotten before anything was invalidated since it left: nothing was missed.
  log.left('http://e')
  assert.equal(log.departed, 2, 'c forgotten, at the sequence of the last invalidation')
  assert.equal(log.rejoined('http://c'), undefined)
  // ... until something is: then an unknown peer may be c, which missed it.
  log.add('k2')
  assert.deepEqual(log.rejoined('http://f'), { keys: [], complete: false })
  assert.equal(log.rejoined('http://g'), undefined)
  // Remembered peers are sent what they missed, as before.
  assert.deepEqual(log.rejoined('http://d'), { keys: ['k2'], complete: true })
})

test('a peer whose departure was pushed out by 1,024 later ones counts as a gap when it comes back', { timeout: 30_000 }, async () => {
  const origin = versionedPaths()
  const server = await startOrigin(origin.route)
  const cluster = await startLocalPeers(2, { hotSize: 0 })
  const [a, b] = cluster.peers as [Peer, Peer]
  const replays = collect<ReplayMessage>('forwardcache:replay', b.self)
  try {
    const [url] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`) as [string]
    assert.equal((await send(a, url)).body, `${pathOf(url)} v1`, 'B, the owner, stores v1')
    a.setPeers([a.self])
    assert.equal((await send(a, url, 'POST')).status, 204)
    // 1,024 peers that are never contacted (no request is routed or invalidated while they are
    // in the pool) join and leave: B's departure is the one forgotten.
    const others = Array.from({ length: 1024 }, (_, i) => `http://127.0.0.1:1/peer-${i}`)
    a.setPeers([a.self, ...others])
    a.setPeers([a.self])
    assert.equal(a.stats().invalidationGaps, 0)
    a.setPeers([a.self, b.self])
    await waitFor(() => a.ownerOf(url) === b.self, 3000, 'B on the ring')
    // Documented: B, taken for a new peer, was sent nothing and serves v1 until it goes stale;
    // but that is counted.
    assert.equal(a.stats().invalidationGaps, 1)
    assert.deepEqual(replays.messages, [{ self: a.self, peer: b.self, sent: 0, failed: 0, complete: false }])
    assert.equal((await send(a, url)).body, `${pathOf(url)} v1`)
  } finally {
    replays.stop()
    await cluster.close()
    await server.close()
  }
})
