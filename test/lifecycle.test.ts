import assert from 'node:assert/strict'
import type http from 'node:http'
import { after, afterEach, before, describe, test } from 'node:test'
import { errors, request, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { progress, startCluster, type Cluster, type PeerProcess } from './fixtures/peer-process.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { deferred, waitFor } from './helpers/peers.js'

// The pool changing under load, and a peer closed or destroyed with requests in flight.

interface Got { status: number, headers: Record<string, string | string[] | undefined>, body: string }

async function get (dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}): Promise<Got> {
  const res = await request(url, { dispatcher, headers })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}


describe('pool changes under load (peers in child processes)', () => {
  let origin: CountingOrigin
  let cluster: Cluster

  before(async () => {
    origin = await startOrigin()
    // Six children; the first five start with a pool of five, the sixth knows all six.
    cluster = await startCluster(6, { poolFor: (i, urls) => (i < 5 ? urls.slice(0, 5) : [...urls]) })
  })

  after(async () => {
    await cluster?.close()
    await origin?.close()
  })

  test('setPeers 5 -> 6 -> 5 under load fails no request and moves about 1/6 of the keys, all to the new peer', { timeout: 20_000 }, async (t) => {
    const five = cluster.peers.slice(0, 5)
    const first = five[0] as PeerProcess
    const sixth = cluster.peers[5] as PeerProcess
    const keys = Array.from({ length: 10_000 }, (_, i) => `${origin.url}/key/${i}`)
    const urls = keys.slice(0, 400)
    const owners5 = await first.ownerOf(keys)

    await Promise.all(five.map((p) => p.trafficStart({ urls, concurrency: 16, expectDefaultBody: true })))
    await progress(five, five.map(() => 150), 'traffic on five peers')
    await Promise.all(five.map((p) => p.setPeers(cluster.urls)))
    const owners6 = await first.ownerOf(keys)
    const at6 = await Promise.all(five.map((p) => p.trafficStatus()))
    await progress(five, at6.map((r) => r.ok + 250), 'traffic on six peers')
    const servedBySixth = (await sixth.inspect()).stats.servedForPeers
    // And back: the sixth leaves the pool while requests to it may be in flight.
    await Promise.all(five.map((p) => p.setPeers(cluster.urls.slice(0, 5))))
    const at5 = await Promise.all(five.map((p) => p.trafficStatus()))
    await progress(five, at5.map((r) => r.ok + 250), 'traffic on five peers again')
    const final = await Promise.all(five.map((p) => p.trafficStop()))

    const failed = final.reduce((s, r) => s + r.failed, 0)
    const total = final.reduce((s, r) => s + r.ok + r.failed, 0)
    let moved = 0
    for (const [i, before] of owners5.entries()) {
      const now = owners6[i]
      if (now === before) continue
      moved++
      assert.equal(now, sixth.url, `${keys[i] as string} moved only to the new peer`)
    }
    const fraction = moved / keys.length
    t.diagnostic(`setPeers 5->6->5 under load: ${failed} failed of ${total} requests; moved-key fraction 5->6: ${fraction.toFixed(4)} ` +
      `(${moved} of ${keys.length}, ideal ${(1 / 6).toFixed(4)}); the new peer served ${servedBySixth} forwards`)
    assert.equal(failed, 0, final.flatMap((r) => r.errors).join(' | '))
    assert.ok(fraction >= 0.10 && fraction <= 0.25, `moved fraction ${fraction}`)
    assert.ok(servedBySixth > 0, 'the new peer took its share of the traffic')
    assert.deepEqual(await first.ownerOf(keys), owners5, 'back to five peers, every key is back with its old owner')
    for (const s of await Promise.all(five.map((p) => p.inspect()))) {
      assert.equal(s.inFlight, 0)
      assert.equal(s.stats.flights, 0)
      assert.equal(s.stats.forwardErrors, 0)
    }
  })
})

describe('close() and destroy() with requests in flight', () => {
  let origin: CountingOrigin
  let peer: Peer | undefined

  before(async () => { origin = await startOrigin() })
  afterEach(async () => {
    await peer?.destroy()
    peer = undefined
  })
  after(async () => { await origin?.close() })

  /** A route that holds its requests until release(); `arrived` resolves at the first. */
  function hold (path: string): { arrived: Promise<void>, release: () => void } {
    const arrived = deferred()
    const held: http.ServerResponse[] = []
    origin.route(path, (_req, res) => {
      held.push(res)
      arrived.resolve()
    })
    return {
      arrived: arrived.promise,
      release: () => {
        for (const res of held) {
          const body = `slow body of ${path}`
          res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': Buffer.byteLength(body) })
          res.end(body)
        }
      }
    }
  }

  test('close() lets every in-flight request finish (coalesced waiters and a slow reader included), then new ones reject with ClientClosedError', { timeout: 20_000 }, async () => {
    const p = peer = new Peer({ self: 'http://127.0.0.1:1' })
    await p.ready
    // A stored 1 MiB response, replayed from memory to a caller that does not read it yet:
    // only the Peer itself knows that request is still in flight.
    const big = 'b'.repeat(1 << 20)
    origin.route('/close/big', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': big.length })
      res.end(big)
    })
    assert.equal((await get(p, origin.url + '/close/big')).body.length, big.length)
    const slow = hold('/close/slow')
    const other = hold('/close/other')
    const finished: string[] = []
    const track = (name: string, call: Promise<Got>): Promise<Got> => call.then((r) => { finished.push(name); return r })
    const calls = [
      ...Array.from({ length: 5 }, (_, i) => track(`slow${i}`, get(p, origin.url + '/close/slow'))),
      track('other', get(p, origin.url + '/close/other'))
    ]
    const unread = await request(origin.url + '/close/big', { dispatcher: p })
    assert.match(String(unread.headers['cache-status']), /; hit/)
    await Promise.all([slow.arrived, other.arrived])
    assert.equal(p.stats().coalescedWaits, 4, 'four callers wait for the first one\'s fetch')
    assert.equal(p.inFlight, 7)

    let closedWith: { finished: number, inFlight: number } | undefined
    const closing = p.close().then(() => { closedWith = { finished: finished.length, inFlight: p.inFlight } })
    assert.equal(p.closed, true)
    await assert.rejects(get(p, origin.url + '/close/new'), errors.ClientClosedError)
    assert.equal(origin.count('/close/new'), 0)

    slow.release()
    other.release()
    const done = await Promise.all(calls)
    for (const [i, r] of done.entries()) {
      assert.equal(r.status, 200)
      assert.equal(r.body, i < 5 ? 'slow body of /close/slow' : 'slow body of /close/other')
    }
    assert.equal(p.inFlight, 1, 'the unread replay is still in flight')
    // Nothing but the unread body keeps close() pending now; give it a moment to (wrongly) resolve.
    const early = await Promise.race([closing.then(() => 'closed'), new Promise((resolve) => setTimeout(resolve, 200, 'pending'))])
    assert.equal(early, 'pending', 'close() waits for the request whose body is still being delivered')
    assert.equal(closedWith, undefined)
    assert.equal((await unread.body.text()).length, big.length)
    await closing
    assert.deepEqual(closedWith, { finished: 6, inFlight: 0 }, 'close() resolved only after all seven had finished')
    assert.equal(origin.count('/close/slow'), 1)
    assert.equal(p.inFlight, 0)
    assert.equal(p.stats().flights, 0)
    await assert.rejects(get(p, origin.url + '/close/big'), errors.ClientClosedError, 'even a stored URL is refused')
    // Idempotent, promise and callback forms.
    await p.close()
    await new Promise<void>((resolve) => p.close(resolve))
  })

  test('destroy() fails in-flight requests with ClientDestroyedError and stores no partial entry', { timeout: 20_000 }, async () => {
    const p = peer = new Peer({ self: 'http://127.0.0.1:1' })
    await p.ready
    const path = '/destroy/partial'
    const arrived = deferred<http.ServerResponse>()
    origin.route(path, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': 100 })
      res.write('x'.repeat(50))
      arrived.resolve(res)
    })
    // The first caller's response has started (its headers are here) before the peer is
    // destroyed; three more wait on the same fetch.
    const firstHeaders = request(origin.url + path, { dispatcher: p })
    const others = Array.from({ length: 3 }, () => get(p, origin.url + path))
    const originRes = await arrived.promise
    const first = await firstHeaders
    assert.equal(first.statusCode, 200)
    const storedBefore = p.stats().stored
    const entriesBefore = p.stats().cacheEntries

    // Every rejection has its handler before destroy() is called.
    const failures = [first.body.text(), ...others].map((call) => assert.rejects(call, errors.ClientDestroyedError))
    await p.destroy()
    assert.equal(p.destroyed, true)
    await Promise.all(failures)
    // The origin finishing its body afterwards changes nothing.
    if (!originRes.destroyed) originRes.end('y'.repeat(50))
    assert.equal(p.stats().stored, storedBefore)
    assert.equal(p.stats().cacheEntries, entriesBefore)
    assert.equal(p.stats().cacheEntries, 0)
    assert.equal(p.inFlight, 0)
    assert.equal(p.stats().flights, 0)
    await assert.rejects(get(p, origin.url + path), errors.ClientDestroyedError)
    // Idempotent, promise and callback forms.
    await p.destroy()
    await new Promise<void>((resolve) => p.destroy(resolve))
  })

  test('destroy() also fails a stored response still being replayed to a slow reader', { timeout: 20_000 }, async () => {
    const p = peer = new Peer({ self: 'http://127.0.0.1:1' })
    await p.ready
    const big = 'b'.repeat(1 << 20)
    origin.route('/destroy/big', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': big.length })
      res.end(big)
    })
    assert.equal((await get(p, origin.url + '/destroy/big')).body.length, big.length)
    const unread = await request(origin.url + '/destroy/big', { dispatcher: p })
    assert.match(String(unread.headers['cache-status']), /; hit/)
    assert.equal(p.inFlight, 1)
    const failed = assert.rejects(unread.body.text(), errors.ClientDestroyedError)
    await p.destroy()
    await failed
    assert.equal(p.inFlight, 0)
    // destroy() releases the store too.
    assert.equal(p.stats().cacheEntries, 0)
    assert.equal(p.stats().cacheBytes, 0)
  })
})

test('close() and destroy() refuse a callback that is not a function before changing anything, as undici does', async () => {
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  const bad = 'x' as unknown as () => void
  assert.throws(() => peer.close(bad), errors.InvalidArgumentError)
  assert.equal(peer.closed, false)
  assert.throws(() => peer.destroy(null, bad), errors.InvalidArgumentError)
  assert.equal(peer.closed, false)
  await peer.close()
  assert.equal(peer.closed, true)
})
