import assert from 'node:assert/strict'
import diagnosticsChannel from 'node:diagnostics_channel'
import type http from 'node:http'
import { test } from 'node:test'
import type { Peer } from '../src/index.js'
import { startOrigin } from './helpers/origin.js'
import { deleteGate, send, versionedPaths } from './helpers/versioned.js'
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
