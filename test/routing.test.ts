import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { request, type Dispatcher } from 'undici'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { ownedBy, startLocalPeers, type LocalCluster } from './helpers/peers.js'

// A Peer remembers each URL's owner with its parsed form; a new pool must still route every
// request by the new ring at once, and back.

async function get (dispatcher: Dispatcher, url: string): Promise<string> {
  const res = await request(url, { dispatcher })
  await res.body.dump()
  return String(res.headers['cache-status'])
}

describe('routing after setPeers', () => {
  let origin: CountingOrigin
  let cluster: LocalCluster

  before(async () => {
    origin = await startOrigin()
    cluster = await startLocalPeers(2)
  })
  after(async () => {
    await cluster?.close()
    await origin?.close()
  })

  test('a URL already routed once goes to its new owner right after setPeers, and back after the next one', async () => {
    const [a, b] = cluster.peers
    const [aUrl, bUrl] = cluster.urls as [string, string]
    assert.ok(a !== undefined && b !== undefined)
    const url = ownedBy(a, bUrl, (i) => `${origin.url}/moving/${i}`)[0] as string

    // Alone in its pool, A owns the URL: a fill, then hits from its own store.
    a.setPeers([aUrl])
    assert.match(await get(a, url), /fwd=uri-miss/)
    assert.match(await get(a, url), /forwardcache; hit/)
    assert.equal(b.stats().servedForPeers, 0)

    // With B back in the pool the same URL must go to B, the first request already.
    a.setPeers([aUrl, bUrl])
    await get(a, url)
    assert.equal(b.stats().servedForPeers, 1)
    await get(a, url)
    assert.equal(b.stats().servedForPeers, 2)

    // And alone again: A's own store answers, B sees nothing more.
    a.setPeers([aUrl])
    assert.match(await get(a, url), /forwardcache; hit/)
    assert.equal(b.stats().servedForPeers, 2)
    assert.equal(origin.count(new URL(url).pathname), 2, 'one fill on A, one on B')
  })
})
