import assert from 'node:assert/strict'
import type http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { Agent, request, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { progress, startCluster, type Cluster, type PeerProcess } from './fixtures/peer-process.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import {
  freePort, listen, mountPeer, ownedBy, startBlackhole, startLocalPeers, stopServer, waitFor,
  type Blackhole, type LocalCluster
} from './helpers/peers.js'

// What callers see when peers and origins fail: an owner killed, blackholed, down and back;
// bodies cut short; origins that hang, fail or are down.

interface Got { status: number, headers: Record<string, string | string[] | undefined>, body: string }

async function get (dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}): Promise<Got> {
  const res = await request(url, { dispatcher, headers })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

async function timed<T> (p: Promise<T>): Promise<{ ms: number, value?: T, error?: unknown }> {
  const started = performance.now()
  try {
    const value = await p
    return { ms: performance.now() - started, value }
  } catch (error) {
    return { ms: performance.now() - started, error }
  }
}

/** An origin route that announces 100 bytes, sends 50 and cuts the connection. */
function cutShort (_req: http.IncomingMessage, res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': 100 })
  res.write('x'.repeat(50), () => res.socket?.destroy())
}

/**
 * For a describe() whose tests start what they need as they go: before() starts `origin`, and
 * after() runs what the tests pushed to `cleanup`, last first, then stops the origin.
 */
function originAndCleanup (): { origin: CountingOrigin, cleanup: Array<() => Promise<void>> } {
  const fx = {
    // Set in before(): the tests only read it once they run.
    origin: undefined as unknown as CountingOrigin,
    cleanup: [] as Array<() => Promise<void>>
  }
  before(async () => { fx.origin = await startOrigin() })
  after(async () => {
    for (const c of fx.cleanup.reverse()) await c()
    await fx.origin?.close()
  })
  return fx
}

describe('an owner peer killed with SIGKILL mid-traffic', () => {
  let origin: CountingOrigin
  let cluster: Cluster

  before(async () => {
    origin = await startOrigin()
    cluster = await startCluster(3, { options: { ejectAfter: 2, ejectBackoff: 60_000, peerConnectTimeout: 500 } })
  })

  after(async () => {
    await cluster?.close()
    await origin?.close()
  })

  test('callers on the surviving peers see 0 failed requests; the dead peer is ejected and only its keys move', { timeout: 20_000 }, async (t) => {
    const [a, b, victim] = cluster.peers as [PeerProcess, PeerProcess, PeerProcess]
    const survivors = [a, b]
    const urls = Array.from({ length: 300 }, (_, i) => `${origin.url}/kill/${i}`)
    const ownersBefore = await a.ownerOf(urls)
    const victimKeys = ownersBefore.filter((o) => o === victim.url).length
    assert.ok(victimKeys > 0, 'the victim owns some of the URLs')

    await Promise.all(survivors.map((p) => p.trafficStart({ urls, concurrency: 16, expectDefaultBody: true })))
    const beforeKill = await progress(survivors, [300, 300], 'traffic before the kill')
    const statsBefore = await Promise.all(survivors.map((p) => p.inspect()))
    await victim.kill()
    const atKill = await Promise.all(survivors.map((p) => p.trafficStatus()))
    await progress(survivors, atKill.map((r) => r.ok + 800), 'traffic after the kill')
    const final = await Promise.all(survivors.map((p) => p.trafficStop()))

    const failed = final.reduce((n, r) => n + r.failed, 0)
    const total = final.reduce((n, r) => n + r.ok + r.failed, 0)
    const afterKill = final.reduce((n, r, i) => n + r.ok + r.failed - (atKill[i]?.ok ?? 0) - (atKill[i]?.failed ?? 0), 0)
    const statsAfter = await Promise.all(survivors.map((p) => p.inspect()))
    const fallbacks = statsAfter.reduce((n, s, i) => n + s.stats.forwardErrors - (statsBefore[i]?.stats.forwardErrors ?? 0), 0)
    t.diagnostic(`SIGKILL: ${failed} failed of ${total} requests on the survivors (${afterKill} after the kill, ` +
      `${beforeKill.reduce((n, r) => n + r.ok, 0)} before); ${fallbacks} forwards fell back to the origin`)
    assert.equal(failed, 0, `failures seen by callers: ${final.flatMap((r) => r.errors).join(' | ')}`)
    assert.ok(fallbacks > 0, 'some requests were routed to the dead owner and fell back')

    for (const [i, s] of statsAfter.entries()) {
      assert.deepEqual(s.ejectedPeers, [victim.url], `survivor ${i} ejected the dead peer`)
      assert.equal(s.inFlight, 0)
      assert.equal(s.stats.flights, 0)
    }
    // Only the dead peer's keys moved, to the survivors.
    const ownersAfter = await a.ownerOf(urls)
    for (const [i, before] of ownersBefore.entries()) {
      if (before === victim.url) assert.ok(ownersAfter[i] === a.url || ownersAfter[i] === b.url)
      else assert.equal(ownersAfter[i], before)
    }
    // Once ejected, the dead peer costs nothing: no more failed forwards.
    const again = await Promise.all(survivors.map((p) => p.burst({ urls, n: urls.length })))
    for (const r of again) assert.equal(r.failed, 0, r.errors.join(' | '))
    const statsLater = await Promise.all(survivors.map((p) => p.inspect()))
    for (const [i, s] of statsLater.entries()) assert.equal(s.stats.forwardErrors, statsAfter[i]?.stats.forwardErrors)
  })
})

describe('a blackholed owner (accepts TCP, never answers)', () => {
  const PEER_TIMEOUT = 300
  let origin: CountingOrigin
  let hole: Blackhole
  let local: LocalCluster
  let a: Peer
  let b: Peer
  let n = 0

  before(async () => {
    origin = await startOrigin()
    hole = await startBlackhole()
    local = await startLocalPeers(2, { peerTimeout: PEER_TIMEOUT, ejectAfter: 3, ejectBackoff: 60_000 }, [hole.url])
    ;[a, b] = local.peers as [Peer, Peer]
  })

  after(async () => {
    await local?.close()
    await hole?.close()
    await origin?.close()
  })

  const holeUrl = (): string => ownedBy(a, hole.url, (i) => `${origin.url}/hole/${n++}-${i}`)[0] as string

  test('a request for its key falls back to the origin once peerTimeout has passed, and succeeds', { timeout: 20_000 }, async (t) => {
    const url = holeUrl()
    const r = await timed(get(a, url))
    t.diagnostic(`fallback from a blackholed owner (peerTimeout ${PEER_TIMEOUT} ms): ${r.ms.toFixed(0)} ms`)
    assert.equal(r.error, undefined, `the request succeeded: ${String(r.error)}`)
    assert.equal(r.value?.status, 200)
    assert.equal(r.value?.body, `body of ${new URL(url).pathname}`)
    assert.ok(r.ms >= PEER_TIMEOUT - 20, `it waited for peerTimeout: ${r.ms.toFixed(0)} ms`)
    assert.ok(r.ms < PEER_TIMEOUT + 1500, `and not much longer: ${r.ms.toFixed(0)} ms`)
    assert.match(String(r.value?.headers['cache-status']), /fwd=bypass; detail=owner-unavailable/)
    assert.equal(a.stats().forwardErrors, 1)
    assert.ok(hole.accepted() >= 1, 'the request did reach the blackhole')
  })

  test('after ejectAfter failures it is ejected: only its keys move, and they are served without waiting', { timeout: 20_000 }, async (t) => {
    const keys = Array.from({ length: 2000 }, (_, i) => `${origin.url}/moved/${i}`)
    const ownersBefore = keys.map((k) => a.ownerOf(k))
    assert.deepEqual(a.ejectedPeers, [])
    // Two more failures make three (ejectAfter).
    for (let i = 0; i < 2; i++) {
      const r = await get(a, holeUrl())
      assert.equal(r.status, 200)
    }
    assert.deepEqual(a.ejectedPeers, [hole.url])
    assert.equal(a.stats().forwardErrors, 3)

    let moved = 0
    for (const [i, key] of keys.entries()) {
      const now = a.ownerOf(key)
      if (ownersBefore[i] === hole.url) {
        moved++
        assert.ok(now === a.self || now === b.self, `${key} moved to a live peer`)
      } else {
        assert.equal(now, ownersBefore[i], `${key} kept its owner`)
      }
    }
    assert.ok(moved > 0)

    // Its former keys: served quickly, and the blackhole is not contacted again.
    const accepted = hole.accepted()
    const formerKeys = keys.filter((_, i) => ownersBefore[i] === hole.url).slice(0, 10)
    let slowest = 0
    for (const key of formerKeys) {
      const r = await timed(get(a, key))
      slowest = Math.max(slowest, r.ms)
      assert.equal(r.value?.status, 200, String(r.error))
      assert.equal(r.value?.body, `body of ${new URL(key).pathname}`)
      assert.doesNotMatch(String(r.value?.headers['cache-status']), /owner-unavailable/)
    }
    t.diagnostic(`ejected after 3 failures: ${moved} of ${keys.length} keys moved; their slowest request then took ${slowest.toFixed(0)} ms`)
    assert.ok(slowest < PEER_TIMEOUT, 'no request waits for the blackhole any more')
    assert.equal(a.stats().forwardErrors, 3, 'forwardErrors stopped growing')
    assert.equal(hole.accepted(), accepted, 'no new connection to the blackhole')
  })
})

describe('sub-second timeouts are honoured', () => {
  // undici's own headersTimeout runs on its "fast timers" (1 s resolution, 499 ms ticks:
  // undici/lib/dispatcher/client-h1.js TIMEOUT_HEADERS = 2 | USE_FAST_TIMER): handed a 300 ms
  // peerTimeout or originTimeout, it fires 0.5 to 1.5 s late. The options promise milliseconds.
  const TIMEOUT = 300
  const SLACK = 200
  const fx = originAndCleanup()

  test(`a blackholed owner is given up on within peerTimeout + ${SLACK} ms`, { timeout: 20_000 }, async (t) => {
    const hole = await startBlackhole()
    fx.cleanup.push(() => hole.close())
    const local = await startLocalPeers(1, { peerTimeout: TIMEOUT }, [hole.url])
    fx.cleanup.push(() => local.close())
    const peer = local.peers[0] as Peer
    const [url] = ownedBy(peer, hole.url, (i) => `${fx.origin.url}/precise-peer/${i}`) as [string]
    const r = await timed(get(peer, url))
    t.diagnostic(`peerTimeout ${TIMEOUT} ms: fell back after ${r.ms.toFixed(0)} ms`)
    assert.equal(r.value?.status, 200, String(r.error))
    assert.ok(r.ms < TIMEOUT + SLACK, `fell back after ${r.ms.toFixed(0)} ms`)
  })

  test(`an origin that never answers fails within originTimeout + ${SLACK} ms`, { timeout: 20_000 }, async (t) => {
    const peer = new Peer({ self: 'http://127.0.0.1:1', originTimeout: TIMEOUT })
    fx.cleanup.push(() => peer.destroy())
    fx.origin.route('/precise-origin', () => {})
    const r = await timed(get(peer, fx.origin.url + '/precise-origin'))
    t.diagnostic(`originTimeout ${TIMEOUT} ms: failed after ${r.ms.toFixed(0)} ms`)
    assert.ok(r.error !== undefined)
    assert.ok(r.ms < TIMEOUT + SLACK, `failed after ${r.ms.toFixed(0)} ms`)
  })
})

describe('readmission of an ejected peer', () => {
  const fx = originAndCleanup()

  for (const [status, code, why] of [[404, 'not-found', 'its handler is on another path'], [403, 'forbidden-peer', 'it does not count this peer\'s address as the pool\'s']] as const) {
    test(`an owner that answers ${status} ${code} (${why}) is ejected, its keys are served from the origin, and probes keep it out`, { timeout: 20_000 }, async () => {
      let probes = 0
      let forwards = 0
      const { server: xServer, url: xUrl } = await listen((req, res) => {
        if ((req.url ?? '').includes('?q=')) forwards++
        else probes++
        res.writeHead(status, { 'forwardcache-error': code, 'content-length': 2 })
        res.end('no')
      })
      fx.cleanup.push(() => stopServer(xServer))
      const { peer: peerA, close } = await mountPeer((self) => [self, xUrl], { ejectAfter: 1, ejectBackoff: 20 })
      fx.cleanup.push(close)
      const [url, later] = ownedBy(peerA, xUrl, (i) => `${fx.origin.url}/misconfigured-${code}/${i}`, 2) as [string, string]
      const first = await get(peerA, url)
      assert.equal(first.status, 200)
      assert.equal(first.body, `body of ${new URL(url).pathname}`)
      assert.match(String(first.headers['cache-status']), /fwd=bypass; detail=owner-unavailable/)
      assert.deepEqual(peerA.ejectedPeers, [xUrl])
      await waitFor(() => probes >= 2, 10_000, 'two probes of the ejected owner')
      assert.deepEqual(peerA.ejectedPeers, [xUrl], 'a probe answered with another forwardcache error does not readmit it')
      // Its keys are this peer's own meanwhile: cached here, not asked of it again.
      assert.equal((await get(peerA, later)).status, 200)
      assert.equal((await get(peerA, later)).status, 200)
      assert.equal(forwards, 1)
      assert.equal(fx.origin.count(new URL(later).pathname), 1)
    })
  }

  test('a peer that was down is probed and readmitted once it answers again', { timeout: 20_000 }, async (t) => {
    const port = await freePort()
    const xUrl = `http://127.0.0.1:${port}`
    const { peer: peerA, url: aUrl, close: closeA } = await mountPeer((self) => [self, xUrl], { ejectAfter: 1, ejectBackoff: 50 })
    fx.cleanup.push(closeA)

    const [first, second] = ownedBy(peerA, xUrl, (i) => `${fx.origin.url}/readmit/${i}`, 2) as [string, string]
    const down = await get(peerA, first)
    assert.equal(down.status, 200, 'served from the origin while the owner is down')
    assert.deepEqual(peerA.ejectedPeers, [xUrl])

    // The peer comes back on the same address.
    const { peer: peerX, close: closeX } = await mountPeer((self) => [aUrl, self], {}, port)
    fx.cleanup.push(closeX)
    const started = performance.now()
    await waitFor(() => peerA.ejectedPeers.length === 0, 10_000, 'the probe to readmit the peer')
    t.diagnostic(`readmitted ${(performance.now() - started).toFixed(0)} ms after the peer came back (ejectBackoff 50 ms)`)

    const forwards = peerA.stats().forwards
    const forwardErrors = peerA.stats().forwardErrors
    const r = await get(peerA, second)
    assert.equal(r.status, 200)
    assert.equal(r.body, `body of ${new URL(second).pathname}`)
    assert.equal(peerA.stats().forwards, forwards + 1, 'the key is forwarded to its owner again')
    assert.equal(peerA.stats().forwardErrors, forwardErrors)
    assert.equal(peerX.stats().servedForPeers, 1, 'the readmitted owner served it')
  })
})

describe('nothing is retried once body bytes have been sent', () => {
  const fx = originAndCleanup()

  test('an owner that dies mid-body is an error for the caller, not a fetch from the origin', { timeout: 20_000 }, async () => {
    // A fake owner: answers the wire protocol (with the Cache-Status every owner's answer
    // has) with half a body, then cuts the connection.
    const fake = await listen((_req, res) => {
      res.setHeader('cache-status', 'forwardcache; fwd=uri-miss; fwd-status=200')
      cutShort(_req, res)
    })
    fx.cleanup.push(() => stopServer(fake.server))
    const { peer, close } = await mountPeer((self) => [self, fake.url])
    fx.cleanup.push(close)
    const [url] = ownedBy(peer, fake.url, (i) => `${fx.origin.url}/owner-dies/${i}`) as [string]
    const path = new URL(url).pathname

    const settled = await Promise.allSettled([get(peer, url), get(peer, url), get(peer, url)])
    for (const s of settled) assert.equal(s.status, 'rejected', 'never a short successful body')
    assert.equal(fx.origin.count(path), 0, 'no second fetch from the origin')
    assert.equal(peer.stats().originFetches, 0)
    assert.equal(peer.stats().forwardErrors, 0, 'the response had started: not a failed forward to fall back from')
    assert.equal(peer.stats().flights, 0)
    assert.equal(peer.inFlight, 0)
  })
})

describe('origin faults', () => {
  const ORIGIN_TIMEOUT = 300
  let origin: CountingOrigin
  let local: LocalCluster
  let forwarder: Peer
  let owner: Peer
  let n = 0
  const hanging: http.ServerResponse[] = []
  const wire = new Agent()

  before(async () => {
    origin = await startOrigin()
    local = await startLocalPeers(2, { originTimeout: ORIGIN_TIMEOUT, peerTimeout: 3000 })
    ;[forwarder, owner] = local.peers as [Peer, Peer]
  })

  after(async () => {
    await local?.close()
    await wire.close()
    await origin?.close()
  })

  const ownedUrl = (name: string): string => ownedBy(owner, owner.self, (i) => `${origin.url}/${name}/${n++}-${i}`)[0] as string

  for (const via of ['owner', 'forwarding peer'] as const) {
    test(`a body cut short by the origin is an error for the caller and is not stored (via the ${via})`, { timeout: 20_000 }, async () => {
      const through = via === 'owner' ? owner : forwarder
      const url = ownedUrl('cut')
      const path = new URL(url).pathname
      origin.route(path, cutShort)
      await assert.rejects(get(through, url), 'the body read rejects')
      assert.equal(origin.count(path), 1, 'one fetch: nothing retried after the body started')
      await assert.rejects(get(through, url))
      assert.equal(origin.count(path), 2, 'the next request reaches the origin again: nothing was stored')
      for (const p of [owner, forwarder]) {
        assert.equal(p.stats().flights, 0)
        assert.equal(p.inFlight, 0)
      }
      assert.equal(owner.stats().stored, 0)
    })
  }

  test('an origin that never answers fails within originTimeout: through the owner, on the wire, and through a forwarding peer', { timeout: 20_000 }, async (t) => {
    const url = ownedUrl('hang')
    origin.route(new URL(url).pathname, (_req, res) => { hanging.push(res) })

    const direct = await timed(get(owner, url))
    assert.ok(direct.error !== undefined, 'the caller of the owner gets an error')
    assert.ok(direct.ms >= ORIGIN_TIMEOUT - 20 && direct.ms < ORIGIN_TIMEOUT + 1500, `within originTimeout: ${direct.ms.toFixed(0)} ms`)

    const onWire = await timed(get(wire, `${owner.self}/proxy?q=${encodeURIComponent(url)}`))
    assert.equal(onWire.value?.status, 504, `the owner answers 504 on the wire: ${String(onWire.error)}`)
    assert.equal(onWire.value?.headers['forwardcache-error'], 'origin-timeout')
    assert.ok(onWire.ms < ORIGIN_TIMEOUT + 1500, `in ${onWire.ms.toFixed(0)} ms`)

    const forwarded = await timed(get(forwarder, url))
    const failedAs = forwarded.error !== undefined ? 'an error' : `status ${String(forwarded.value?.status)}`
    assert.ok(forwarded.error !== undefined || (forwarded.value?.status ?? 0) >= 500, `a failure, not a success: ${failedAs}`)
    // The owner's 504 plus the forwarding peer's own try at the origin: two origin timeouts.
    assert.ok(forwarded.ms < 2 * ORIGIN_TIMEOUT + 1500, `in ${forwarded.ms.toFixed(0)} ms`)
    t.diagnostic(`originTimeout ${ORIGIN_TIMEOUT} ms: owner caller failed after ${direct.ms.toFixed(0)} ms, wire 504 after ${onWire.ms.toFixed(0)} ms, ` +
      `forwarding peer's caller got ${failedAs} after ${forwarded.ms.toFixed(0)} ms`)
    for (const p of [owner, forwarder]) {
      assert.equal(p.stats().flights, 0)
      assert.equal(p.inFlight, 0)
    }
  })
})

describe('stale-if-error (RFC 5861)', () => {
  let clock = Date.now()
  let origin: CountingOrigin
  let peer: Peer
  let failing = false
  let failStatus = 500

  before(async () => {
    origin = await startOrigin((req, res) => {
      if (failing) {
        res.writeHead(failStatus, { 'content-type': 'text/plain', 'cache-control': 'no-store', 'content-length': 4 })
        res.end('boom')
        return
      }
      const body = `v1 of ${req.url ?? ''}`
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=1, stale-if-error=60', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    }, () => clock)
    peer = new Peer({ self: 'http://127.0.0.1:1', now: () => clock })
    await peer.ready
  })

  after(async () => {
    await peer?.destroy()
    await origin?.close()
  })

  test('a stale response is served when the origin answers 500, within the stale-if-error window only', { timeout: 20_000 }, async () => {
    const url = origin.url + '/sie/500'
    assert.equal((await get(peer, url)).body, 'v1 of /sie/500')
    clock += 5_000
    failing = true
    const stale = await get(peer, url)
    assert.equal(origin.count('/sie/500'), 2, 'the origin was asked')
    assert.equal(stale.status, 200)
    assert.equal(stale.body, 'v1 of /sie/500')
    assert.match(String(stale.headers['cache-status']), /stale-if-error/)
    clock += 120_000
    const late = await get(peer, url)
    assert.equal(late.status, 500, 'past the window the error goes through')
    failing = false
  })

  test('only 500, 502, 503 and 504 count as errors a stale response may stand in for: 501 and 505 go through', async () => {
    for (const [status, stands] of [[503, true], [504, true], [502, true], [501, false], [505, false], [507, false]] as const) {
      const url = `${origin.url}/sie/status-${status}`
      assert.equal((await get(peer, url)).body, `v1 of /sie/status-${status}`)
      clock += 5_000
      failing = true
      failStatus = status
      const res = await get(peer, url)
      failing = false
      failStatus = 500
      assert.equal(res.status, stands ? 200 : status, String(status))
      if (stands) assert.match(String(res.headers['cache-status']), /stale-if-error/)
    }
  })

  test('a stale response is served when the origin is down (connection refused), within staleOnDisconnect only', { timeout: 20_000 }, async () => {
    const url = origin.url + '/sie/down'
    assert.equal((await get(peer, url)).body, 'v1 of /sie/down')
    clock += 5_000
    await origin.close()
    const stale = await get(peer, url)
    assert.equal(stale.status, 200)
    assert.equal(stale.body, 'v1 of /sie/down')
    assert.match(String(stale.headers['cache-status']), /stale-if-error/)
    // Past stale-if-error=60 but within staleOnDisconnect (3600 s): a disconnected origin
    // still gets the stale copy (RFC 9111 section 4.2.4).
    clock += 120_000
    assert.equal((await get(peer, url)).body, 'v1 of /sie/down')
    clock += 3_600_000
    await assert.rejects(get(peer, url), 'past staleOnDisconnect the caller gets the connection error')
  })
})
