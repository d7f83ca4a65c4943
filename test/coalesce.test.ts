import assert from 'node:assert/strict'
import type http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { request, type Dispatcher } from 'undici'
import type { Peer } from '../src/index.js'
import { startCluster, type Cluster, type PeerProcess } from './fixtures/peer-process.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { deferred, ownedBy, startLocalPeers, type LocalCluster } from './helpers/peers.js'

// Request coalescing (single-flight), on the owner and on the forwarding peer.

interface Got { status: number, headers: Record<string, string | string[] | undefined>, body: string }

async function get (dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Got> {
  const res = await request(url, { dispatcher, headers, ...(signal !== undefined ? { signal } : {}) })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

/** A route that holds every request until `release()`; `arrived` resolves at the first one. */
function holdRoute (origin: CountingOrigin, path: string): { arrived: Promise<void>, held: http.ServerResponse[], release: (body: string) => void } {
  const held: http.ServerResponse[] = []
  const arrived = deferred()
  origin.route(path, (_req, res) => {
    held.push(res)
    arrived.resolve()
  })
  return {
    arrived: arrived.promise,
    held,
    release: (body) => {
      for (const res of held) {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      }
    }
  }
}

describe('coalescing across two peers in child processes', () => {
  let origin: CountingOrigin
  let cluster: Cluster

  before(async () => {
    origin = await startOrigin()
    cluster = await startCluster(2)
  })

  after(async () => {
    await cluster?.close()
    await origin?.close()
  })

  test('10,000 concurrent identical misses over two peers: one origin fetch, every caller gets the body, nothing left in flight', { timeout: 20_000 }, async (t) => {
    const path = '/coalesce/10k'
    const body = `the one body of ${path} `.padEnd(150, '.')
    // The origin holds the response for ~50 ms, so the misses pile up behind one fetch.
    origin.route(path, (_req, res) => {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      }, 50)
    })
    const url = origin.url + path
    const peers = cluster.peers as [PeerProcess, PeerProcess]
    const owner = (await peers[0].ownerOf([url]))[0]
    const started = performance.now()
    const results = await Promise.all(peers.map((p) => p.burst({ urls: [url], n: 5000 })))
    const wall = performance.now() - started

    for (const [i, r] of results.entries()) {
      assert.equal(r.failed, 0, `peer ${i}: ${r.failed} failed: ${r.errors.join(' | ')}`)
      assert.deepEqual(r.bodies, { [`200 ${body}`]: 5000 }, `peer ${i}: every caller gets status 200 and the body`)
    }
    assert.equal(origin.count(path), 1, 'the origin saw one request for 10,000 callers')

    const inspected = await Promise.all(peers.map((p) => p.inspect()))
    for (const [i, s] of inspected.entries()) {
      assert.equal(s.stats.flights, 0, `peer ${i}: no flight left`)
      assert.equal(s.inFlight, 0, `peer ${i}: no request left in flight`)
    }
    const ownerIdx = peers.findIndex((p) => p.url === owner)
    const forwarder = inspected[1 - ownerIdx]
    const ownerStats = inspected[ownerIdx]
    assert.ok(forwarder !== undefined && ownerStats !== undefined)
    assert.equal(ownerStats.stats.originFetches, 1)
    assert.equal(forwarder.stats.originFetches, 0, 'the forwarding peer never fell back to the origin')
    assert.equal(forwarder.stats.forwardErrors, 0)
    // Single-flight on both sides: most callers waited for another's fetch or forward.
    assert.ok(forwarder.stats.coalescedWaits + forwarder.stats.forwards >= 5000)
    assert.ok(forwarder.stats.coalescedWaits > 0, 'the forwarding peer coalesced its callers')
    assert.ok(ownerStats.stats.coalescedWaits > 0, 'the owner coalesced its callers')
    t.diagnostic(`10,000 misses: origin fetches ${origin.count(path)}, wall ${wall.toFixed(0)} ms ` +
      `(child bursts ${results.map((r) => r.ms.toFixed(0)).join(' / ')} ms); ` +
      `forwarder: forwards ${forwarder.stats.forwards}, coalescedWaits ${forwarder.stats.coalescedWaits}; ` +
      `owner: coalescedWaits ${ownerStats.stats.coalescedWaits}, servedForPeers ${ownerStats.stats.servedForPeers}, localHits ${ownerStats.stats.localHits}`)
  })
})

describe('coalescing on the owner and on the forwarding peer (in-process peers)', () => {
  let origin: CountingOrigin
  let local: LocalCluster
  let forwarder: Peer
  let owner: Peer
  let n = 0

  before(async () => {
    origin = await startOrigin()
    local = await startLocalPeers(2)
    ;[forwarder, owner] = local.peers as [Peer, Peer]
  })

  after(async () => {
    await local?.close()
    await origin?.close()
  })

  /** A fresh URL owned by `owner`, so a request through `forwarder` is forwarded to it. */
  function ownedUrl (name: string): { url: string, path: string } {
    const [url] = ownedBy(owner, owner.self, (i) => `${origin.url}/${name}/${n}-${i}`)
    n++
    return { url: url as string, path: new URL(url as string).pathname }
  }

  function assertIdle (): void {
    for (const p of [forwarder, owner]) {
      assert.equal(p.stats().flights, 0, `${p.self}: no flight left`)
      assert.equal(p.inFlight, 0, `${p.self}: nothing in flight`)
    }
  }

  const ways = [['owner', () => owner], ['forwarding peer', () => forwarder]] as const

  for (const [via, through] of ways) {
    const unshared: Array<[string, Record<string, string>]> = [
      ['private', { 'cache-control': 'private, max-age=300' }],
      ['Set-Cookie (without public)', { 'cache-control': 'max-age=300', 'set-cookie': 'session=abc' }]
    ]
    for (const [kind, fields] of unshared) {
      test(`a ${kind} response is not shared: each concurrent caller reaches the origin (via the ${via})`, { timeout: 20_000 }, async () => {
        const { url, path } = ownedUrl('unshared')
        origin.route(path, (_req, res) => {
          const body = `${kind} #${origin.count(path)}`
          setTimeout(() => {
            res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), ...fields })
            res.end(body)
          }, 50)
        })
        const N = 6
        const all = await Promise.all(Array.from({ length: N }, () => get(through(), url)))
        for (const r of all) assert.equal(r.status, 200)
        assert.equal(origin.count(path), N, 'every request reached the origin')
        assert.equal(new Set(all.map((r) => r.body)).size, N, `each caller got its own response: ${all.map((r) => r.body).join(', ')}`)
        assertIdle()
      })
    }

    test(`callers that joined a fetch get its response marked collapsed, the one that led it does not (via the ${via})`, { timeout: 20_000 }, async () => {
      const { url, path } = ownedUrl('collapsed')
      const hold = holdRoute(origin, path)
      const N = 5
      const pending = [get(through(), url)]
      await hold.arrived
      // The fetch is in flight: these join it (legacy callers, as undici.request is).
      for (let i = 1; i < N; i++) pending.push(get(through(), url))
      await new Promise<void>((resolve) => setImmediate(resolve))
      hold.release('one body for all')
      const all = await Promise.all(pending)
      assert.equal(origin.count(path), 1)
      const statuses = all.map((r) => String(r.headers['cache-status']))
      for (const r of all) {
        assert.equal(r.status, 200)
        assert.equal(r.body, 'one body for all')
      }
      // RFC 9211 section 2.8, on every joiner and only on them.
      assert.equal(statuses.filter((v) => v.endsWith('; collapsed')).length, N - 1, statuses.join(' | '))
      assert.ok(!statuses[0]!.includes('collapsed'), statuses[0])
      assertIdle()
    })

    test(`Vary mismatch: concurrent requests with different Accept-Language each get their own variant (via the ${via})`, { timeout: 20_000 }, async () => {
      const { url, path } = ownedUrl('vary')
      origin.route(path, (req, res) => {
        const body = `lang=${String(req.headers['accept-language'])}`
        setTimeout(() => {
          res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', vary: 'Accept-Language', 'content-length': Buffer.byteLength(body) })
          res.end(body)
        }, 50)
      })
      const langs = ['en', 'fr', 'de', 'en', 'fr', 'de', 'en']
      const all = await Promise.all(langs.map((lang) => get(through(), url, { 'accept-language': lang })))
      for (const [i, r] of all.entries()) {
        assert.equal(r.status, 200)
        assert.equal(r.body, `lang=${langs[i] as string}`, `caller ${i} asked for ${langs[i] as string}`)
      }
      const fetched = origin.count(path)
      assert.ok(fetched >= 3 && fetched <= langs.length, `one fetch per language at least, at most one per caller: ${fetched}`)
      // Variants are stored side by side: a second round is all hits.
      const again = await Promise.all(langs.map((lang) => get(through(), url, { 'accept-language': lang })))
      for (const [i, r] of again.entries()) assert.equal(r.body, `lang=${langs[i] as string}`)
      assert.equal(origin.count(path), fetched)
      assertIdle()
    })

    test(`a waiter that aborts does not cancel the fetch for the others (via the ${via})`, { timeout: 20_000 }, async () => {
      const { url, path } = ownedUrl('abort-one')
      const hold = holdRoute(origin, path)
      const controllers = Array.from({ length: 5 }, () => new AbortController())
      const calls = controllers.map((c) => get(through(), url, {}, c.signal))
      await hold.arrived
      // The first caller (the one whose request started the fetch) and one that joined it.
      const aborted = [calls[0], calls[3]].map((call) => assert.rejects(call as Promise<Got>))
      controllers[0]?.abort()
      controllers[3]?.abort()
      await Promise.all(aborted)
      const [originRes] = hold.held
      assert.ok(originRes !== undefined)
      assert.equal(originRes.destroyed, false, 'the origin request is still open')
      hold.release('shared body')
      for (const i of [1, 2, 4]) {
        const r = await (calls[i] as Promise<Got>)
        assert.equal(r.status, 200)
        assert.equal(r.body, 'shared body')
      }
      assert.equal(origin.count(path), 1)
      assertIdle()
    })

    test(`when every waiter aborts, the origin request is aborted (via the ${via})`, { timeout: 20_000 }, async () => {
      const { url, path } = ownedUrl('abort-all')
      const closedEarly = deferred<boolean>()
      const arrived = deferred()
      origin.route(path, (_req, res) => {
        res.on('close', () => closedEarly.resolve(!res.writableEnded))
        arrived.resolve()
      })
      const controllers = Array.from({ length: 4 }, () => new AbortController())
      const calls = controllers.map((c) => get(through(), url, {}, c.signal))
      await arrived.promise
      const aborted = calls.map((call) => assert.rejects(call))
      for (const c of controllers) c.abort()
      await Promise.all(aborted)
      assert.equal(await closedEarly.promise, true, 'the origin saw its request closed before it answered')
      assert.equal(origin.count(path), 1)
      // Forwarding peer and owner both let go of the key once the upstream is gone.
      assert.equal(forwarder.stats().flights, 0)
      assert.equal(forwarder.inFlight, 0)
    })

    test(`an origin failure reaches every waiter as an error (via the ${via})`, { timeout: 20_000 }, async () => {
      const { url, path } = ownedUrl('fail')
      origin.route(path, (req) => { req.socket.destroy() })
      const N = 6
      const settled = await Promise.allSettled(Array.from({ length: N }, () => get(through(), url)))
      for (const [i, s] of settled.entries()) assert.equal(s.status, 'rejected', `caller ${i} gets an error`)
      // The owner fetches once for all; a forwarding peer, told by the owner that the origin
      // failed, tries the origin itself once (fallback), never once per caller.
      const fetched = origin.count(path)
      if (via === 'owner') assert.equal(fetched, 1)
      else assert.ok(fetched >= 1 && fetched <= 2, `origin fetches via the forwarding peer: ${fetched}`)
      assertIdle()
    })
  }
})
