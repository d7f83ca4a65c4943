import assert from 'node:assert/strict'
import diagnosticsChannel from 'node:diagnostics_channel'
import type dns from 'node:dns'
import type http from 'node:http'
import { test } from 'node:test'
import { Client, DnsDiscovery, Peer, type DnsResolver } from '../src/index.js'
import { InvalidationLog } from '../src/invalidation-log.js'
import { pathOf, send, versionedPaths } from './helpers/versioned.js'
import { deferred, ownedBy, withCluster } from './helpers/peers.js'

// A successful unsafe request invalidates its URL on every peer of the pool. A peer that was
// out of the asking peer's pool at that moment (one DNS answer without it, a setPeers() that
// dropped it and put it back) never got that DELETE, and once back it served what it held.

interface ReplayMessage { self: string, peer: string, sent: number, failed: number, complete: boolean }

/**
 * The next `forwardcache:replay` message of `self` about `peer`, or undefined after `ms`: the
 * code before the fix publishes none, and its test must fail on the bodies, not hang.
 */
function nextReplay (self: string, peer: string, ms = 3000): Promise<ReplayMessage | undefined> {
  const channel = diagnosticsChannel.channel('forwardcache:replay')
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(undefined), ms)
    const listener = (message: unknown): void => {
      const m = message as ReplayMessage
      if (m.self === self && m.peer === peer) done(m)
    }
    function done (m: ReplayMessage | undefined): void {
      clearTimeout(timer)
      channel.unsubscribe(listener)
      resolve(m)
    }
    channel.subscribe(listener)
  })
}

test('a peer out of the pool when a POST invalidated a URL it stores does not serve the old body once it is back', { timeout: 20_000 }, async () => {
  const origin = versionedPaths()
  await withCluster({ peers: 2, options: { hotSize: 0 }, route: origin.route }, async ({ origin: server, peers: [a, b] }) => {
    const [url] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`) as [string]
    const path = pathOf(url)
    assert.equal((await send(a, url)).body, `${path} v1`, 'B, the owner, stores v1')
    assert.equal((await send(a, url)).body, `${path} v1`)
    assert.equal(origin.gets(path), 1)

    // A's pool loses B for a while (a DNS answer without it), and a POST goes through A.
    a.setPeers([a.self])
    assert.equal((await send(a, url, 'POST')).status, 204)
    const replayed = nextReplay(a.self, b.self)
    a.setPeers([a.self, b.self])
    const message = await replayed

    // B never changed its own pool: it owns the URL and answers from its cache.
    assert.equal((await send(b, url)).body, `${path} v2`, 'B dropped its pre-POST entry')
    assert.equal((await send(a, url)).body, `${path} v2`, 'so does A, which forwards to B again')
    assert.equal(origin.gets(path), 2, 'v1 once, v2 once')
    assert.equal(b.stats().servedForPeers, 3)
    assert.deepEqual(message, { self: a.self, peer: b.self, sent: 1, failed: 0, complete: true })
    const stats = a.stats()
    assert.equal(stats.invalidationReplays, 1)
    assert.equal(stats.invalidationGaps, 0)
    assert.equal(stats.invalidationErrors, 0)
  })
})

test('signed with a secret, the missed invalidations of the URL and its Content-Location are sent, once each however often they happened', { timeout: 20_000 }, async () => {
  const related = new Map<string, string>()
  const origin = versionedPaths(related)
  await withCluster({ peers: 2, options: { hotSize: 0, secret: 'a-secret-of-sixteen-chars' }, route: origin.route }, async ({ origin: server, peers: [a, b] }) => {
    const [doc, view] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 2) as [string, string]
    related.set(pathOf(doc), pathOf(view))
    for (const url of [doc, view]) assert.equal((await send(a, url)).body, `${pathOf(url)} v1`)

    a.setPeers([a.self])
    for (let i = 0; i < 3; i++) assert.equal((await send(a, doc, 'POST')).status, 204)
    const replayed = nextReplay(a.self, b.self)
    a.setPeers([b.self, a.self])
    assert.deepEqual(await replayed, { self: a.self, peer: b.self, sent: 2, failed: 0, complete: true })
    assert.equal((await send(b, doc)).body, `${pathOf(doc)} v4`)
    assert.equal((await send(b, view)).body, `${pathOf(view)} v4`)
    assert.equal(a.stats().invalidationReplays, 2)
    assert.equal(a.stats().invalidationErrors, 0, 'B accepted the signatures')
  })
})

test('a peer that comes back after more invalidations than the log keeps is sent the newest, and counted as a gap', { timeout: 20_000 }, async () => {
  const origin = versionedPaths()
  await withCluster({ peers: 2, options: { hotSize: 0, invalidationLogSize: 2 }, route: origin.route }, async ({ origin: server, peers: [a, b] }) => {
    const urls = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 3)
    for (const url of urls) await send(a, url)
    a.setPeers([a.self])
    for (const url of urls) assert.equal((await send(a, url, 'POST')).status, 204)
    const replayed = nextReplay(a.self, b.self)
    a.setPeers([a.self, b.self])
    assert.deepEqual(await replayed, { self: a.self, peer: b.self, sent: 2, failed: 0, complete: false })
    const [oldest, ...newest] = urls as [string, string, string]
    for (const url of newest) assert.equal((await send(b, url)).body, `${pathOf(url)} v2`)
    // Documented: what the log forgot stays on B until it goes stale.
    assert.equal((await send(b, oldest)).body, `${pathOf(oldest)} v1`)
    assert.equal(a.stats().invalidationGaps, 1)
    assert.equal(a.stats().invalidationReplays, 2)
  })
})

/**
 * Holds the DELETEs `server` receives until `release()`, or answers them `status`. `arrived()`
 * resolves at the first one, and rejects after `ms` (the code before the fix sends none).
 */
function gateDeletes (server: http.Server, ms = 3000): { release: () => void, answer: (status: number) => void, arrived: () => Promise<void> } {
  const handler = server.listeners('request')[0] as http.RequestListener
  server.removeAllListeners('request')
  let holding = true
  let queue: Array<[http.IncomingMessage, http.ServerResponse]> = []
  const arrived = deferred()
  server.on('request', (req, res) => {
    if (req.method !== 'DELETE' || !holding) return handler(req, res)
    queue.push([req, res])
    arrived.resolve()
  })
  return {
    arrived: () => new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no DELETE reached the peer within ${ms} ms`)), ms)
      arrived.promise.then(() => { clearTimeout(timer); resolve() }, () => {})
    }),
    release: () => {
      holding = false
      for (const [req, res] of queue) handler(req, res)
      queue = []
    },
    answer: (status) => {
      for (const [, res] of queue) res.writeHead(status).end()
      queue = []
    }
  }
}

test('a peer that comes back takes its keys back only once it has been sent what it missed', { timeout: 20_000 }, async () => {
  const origin = versionedPaths()
  await withCluster({ peers: 2, options: { hotSize: 0 }, route: origin.route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const gate = gateDeletes(cluster.servers[1] as http.Server)
    try {
      const [url] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`) as [string]
      const path = pathOf(url)
      await send(a, url)
      a.setPeers([a.self])
      await send(a, url, 'POST')
      const replayed = nextReplay(a.self, b.self)
      a.setPeers([a.self, b.self])
      await gate.arrived()
      // B has not dropped v1 yet: A keeps the URL, as it did while B was out.
      assert.equal((await send(a, url)).body, `${path} v2`)
      assert.equal(b.stats().servedForPeers, 1, 'A did not forward to B')
      assert.equal(a.stats().localHits + a.stats().misses, 1, 'A served it as owner')
      gate.release()
      assert.deepEqual(await replayed, { self: a.self, peer: b.self, sent: 1, failed: 0, complete: true })
      assert.equal((await send(a, url)).body, `${path} v2`)
      assert.equal(b.stats().servedForPeers, 2, 'B owns it again, and refilled it')
      assert.equal(origin.gets(path), 3)
    } finally {
      gate.release()
    }
  })
})

test('a peer that leaves again before its replay ends gets all of it when it comes back next', { timeout: 20_000 }, async () => {
  const origin = versionedPaths()
  await withCluster({ peers: 2, options: { hotSize: 0 }, route: origin.route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const gate = gateDeletes(cluster.servers[1] as http.Server)
    try {
      // More than the four sent at once: some are in flight, some not sent yet, when B leaves.
      const urls = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 6)
      for (const url of urls) await send(a, url)
      a.setPeers([a.self])
      for (const url of urls) await send(a, url, 'POST')
      a.setPeers([a.self, b.self])
      await gate.arrived()
      a.setPeers([a.self])
      gate.answer(503)
      const replayed = nextReplay(a.self, b.self)
      gate.release()
      a.setPeers([a.self, b.self])
      assert.deepEqual(await replayed, { self: a.self, peer: b.self, sent: 6, failed: 0, complete: true })
      for (const url of urls) assert.equal((await send(b, url)).body, `${pathOf(url)} v2`)
    } finally {
      gate.release()
    }
  })
})

test('invalidations a peer refuses are counted as errors; a replay gives up after ejectAfter in a row and the peer joins the ring', { timeout: 20_000 }, async () => {
  const origin = versionedPaths()
  await withCluster({ peers: 2, options: { hotSize: 0, ejectAfter: 2 }, route: origin.route }, async ({ origin: server, cluster, peers: [a, b] }) => {
    const bServer = cluster.servers[1] as http.Server
    const handler = bServer.listeners('request')[0] as http.RequestListener
    bServer.removeAllListeners('request')
    bServer.on('request', (req, res) => {
      if (req.method === 'DELETE') res.writeHead(500).end()
      else handler(req, res)
    })
    const urls = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 10)
    const [inPool, ...missed] = urls as [string, ...string[]]
    assert.equal((await send(a, inPool, 'POST')).status, 204, 'the owner\'s refusal does not fail the POST')
    assert.equal(a.stats().invalidationErrors, 1)

    a.setPeers([a.self])
    for (const url of missed) await send(a, url, 'POST')
    const replayed = nextReplay(a.self, b.self)
    a.setPeers([a.self, b.self])
    // The in-pool refusal was kept for B and went into the log when B left: ten to replay.
    // Four sent at once, all refused: after the first refusal a fifth goes, after the second
    // nothing more. The five never sent are not errors (they stay owed), but the replay's
    // message counts them as failed.
    assert.deepEqual(await replayed, { self: a.self, peer: b.self, sent: 0, failed: 10, complete: true })
    const stats = a.stats()
    assert.equal(stats.invalidationReplays, 5)
    assert.equal(stats.invalidationErrors, 1 + 5)
    assert.match(a.metrics(), /forwardcache_invalidation_errors_total 6\n/)
    assert.match(a.metrics(), /forwardcache_invalidation_replays_total 5\n/)
    await send(a, inPool)
    assert.equal(b.stats().servedForPeers, 1, 'B is on the ring again')
  })
})

test('DNS discovery: a peer missing from one answer is sent what it missed when the next lists it; so does a Client', { timeout: 20_000 }, async () => {
  const origin = versionedPaths()
  await withCluster({ peers: 2, options: { hotSize: 0 }, route: origin.route }, async ({ origin: server, peers: [a, b] }) => {
    const client = new Client({ peers: [a.self, b.self] })
    const records = (urls: string[]): dns.SrvRecord[] => urls.map((u) => ({ name: '127.0.0.1', port: Number(new URL(u).port), priority: 0, weight: 0 }))
    let answer = records([a.self, b.self])
    const resolver: DnsResolver = {
      resolve4: async () => [],
      resolve6: async () => [],
      resolveSrv: async () => answer
    }
    const discoveries = [a, client].map((target) => new DnsDiscovery(target, { name: '_http._tcp.cache', srv: true, resolver, interval: 3_600_000 }))
    try {
      await client.ready
      for (const d of discoveries) await d.start()
      const [viaPeer, viaClient] = ownedBy(a, b.self, (i) => `${server.url}/doc/${i}`, 2) as [string, string]
      for (const url of [viaPeer, viaClient]) await send(a, url)

      answer = records([a.self])
      for (const d of discoveries) await d.refresh()
      assert.deepEqual(client.peers, [a.self])
      await send(a, viaPeer, 'POST')
      await send(client, viaClient, 'POST')
      const replays = [nextReplay(a.self, b.self), nextReplay('', b.self)]
      answer = records([a.self, b.self])
      for (const d of discoveries) await d.refresh()
      for (const m of await Promise.all(replays)) assert.deepEqual({ ...m, self: undefined }, { self: undefined, peer: b.self, sent: 1, failed: 0, complete: true })
      assert.equal((await send(b, viaPeer)).body, `${pathOf(viaPeer)} v2`)
      assert.equal((await send(b, viaClient)).body, `${pathOf(viaClient)} v2`)
      assert.equal(client.stats().invalidationReplays, 1)
    } finally {
      for (const d of discoveries) d.stop()
      await client.destroy()
    }
  })
})

test('the invalidation log: nothing logged while no peer is out, bounded by entries and by characters, freed when everyone is back', () => {
  const log = new InvalidationLog(3, 30, 2)
  assert.equal(log.active, false, 'a pool that does not change logs nothing')
  assert.equal(log.rejoined('http://new'), undefined, 'a peer never seen to leave is a new one')

  log.left('http://b')
  assert.equal(log.active, true)
  for (const k of ['k1', 'k2', 'k1', 'k3']) log.add(k)
  log.left('http://c')
  log.add('k4')
  // k1 moved to the end when it was invalidated again; four keys, three kept: k2 forgotten.
  assert.equal(log.size, 3)
  assert.deepEqual(log.rejoined('http://b'), { keys: ['k1', 'k3', 'k4'], complete: false })
  // C left after k3: the rest is trimmed once B, who needed it, is back.
  assert.equal(log.size, 1)
  assert.deepEqual(log.rejoined('http://c'), { keys: ['k4'], complete: true })
  assert.equal(log.active, false)
  assert.equal(log.size, 0, 'freed once nobody is out')

  // Characters: one long URL pushes the older ones out.
  log.left('http://b')
  log.add('short')
  log.add('x'.repeat(28))
  assert.deepEqual(log.rejoined('http://b'), { keys: ['x'.repeat(28)], complete: false })

  // Peers that left and came back together share one array of keys.
  log.left('http://b')
  log.left('http://c')
  log.add('k5')
  const b = log.rejoined('http://b')
  const c = log.rejoined('http://c')
  assert.deepEqual(b, { keys: ['k5'], complete: true })
  assert.equal(b?.keys, c?.keys)

  // Departures: past maxDeparted, the earliest is forgotten and taken for a new peer later.
  log.left('http://b')
  log.left('http://c')
  log.left('http://d')
  assert.equal(log.departed, 2)
  assert.equal(log.rejoined('http://b'), undefined)
  assert.deepEqual(log.rejoined('http://c'), { keys: [], complete: true })
})

test('invalidationLogSize is validated', () => {
  for (const bad of [0, -1, 1.5, '10', 1_000_001]) {
    assert.throws(() => new Peer({ self: 'http://127.0.0.1:1', invalidationLogSize: bad as number }), /expected opts\.invalidationLogSize to be (a positive integer|at most 1000000)/)
  }
})
