import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import dns from 'node:dns'
import type net from 'node:net'
import { test } from 'node:test'
import { request, type Dispatcher } from 'undici'
import { DnsDiscovery, Peer } from '../src/index.js'
import { startOrigin } from './helpers/origin.js'
import { deferred, listen, ownedBy, startLocalPeers, stopServer } from './helpers/peers.js'

// Discovery's stop() with a lookup in flight, a coalesced joiner retried
// after its owner left the pool, and the one-hop rule at the Dispatcher's own entry.

async function get (dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, body: string }> {
  const res = await request(url, { dispatcher, headers })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

test('DnsDiscovery.stop() ends a lookup in flight: a silent DNS server does not keep the process waiting for the resolver\'s timeout', { timeout: 20_000 }, async () => {
  // A DNS server on loopback that reads every query and never answers.
  const silent = dgram.createSocket('udp4')
  await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve))
  const resolver = new dns.promises.Resolver({ timeout: 3000, tries: 1 })
  resolver.setServers([`127.0.0.1:${silent.address().port}`])
  const peer = new Peer({ self: 'http://127.0.0.2:4000' })
  const discovery = new DnsDiscovery(peer, { name: 'cache.test', port: 4000, resolver, interval: 3_600_000 })
  try {
    const started = performance.now()
    const settled = discovery.start().then(() => performance.now(), () => performance.now())
    discovery.stop()
    // An in-flight c-ares query holds the event loop: stop() leaves it running, so a process
    // that stopped its discovery (to exit, say) waits for the resolver's whole timeout (with
    // the default Resolver, the system's: seconds per try, several tries).
    const bound = new Promise<'pending'>((resolve) => setTimeout(() => resolve('pending'), 500).unref())
    const first = await Promise.race([settled, bound])
    const at = await settled
    assert.notEqual(first, 'pending', `the lookup in flight at stop() settled only after ${Math.round(at - started)} ms`)
    assert.deepEqual(peer.peers, ['http://127.0.0.2:4000'], 'nothing applied after stop()')
  } finally {
    discovery.stop()
    resolver.cancel()
    await peer.close()
    await new Promise<void>((resolve) => silent.close(() => resolve()))
  }
})

test('a coalesced joiner retried after its owner left the pool opens no connection to the departed peer (no Pool left behind for it)', { timeout: 20_000 }, async () => {
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 2 })
    res.end('ok')
  })
  // Owner B: answers as an owner's handler does (Cache-Status), with a response no joiner may
  // share (no-store), once the test lets it.
  const gate = deferred()
  const firstAtB = deferred()
  const bRequests: string[] = []
  const bSockets: net.Socket[] = []
  const b = await listen((req, res) => {
    bRequests.push(req.url ?? '')
    const answer = (): void => {
      res.writeHead(200, { 'cache-control': 'no-store', 'cache-status': 'forwardcache; fwd=uri-miss', 'content-length': 2 })
      res.end('ok')
    }
    if (bRequests.length === 1) {
      firstAtB.resolve()
      gate.promise.then(answer, () => {})
    } else {
      answer()
    }
  })
  b.server.keepAliveTimeout = 60_000
  b.server.on('connection', (s: net.Socket) => { bSockets.push(s) })
  const a = await listen()
  const peer = new Peer({ self: a.url, peers: [a.url, b.url], hotSize: 0 })
  a.server.on('request', peer.handler())
  const closed = (s: net.Socket): Promise<void> => new Promise((resolve) => { if (s.destroyed) resolve(); else s.once('close', () => resolve()) })
  try {
    await peer.ready
    const [url] = ownedBy(peer, b.url, (i) => `${origin.url}/departed-${i}`) as [string]
    const leader = get(peer, url)
    await firstAtB.promise
    const joiner = get(peer, url)
    assert.equal(peer.stats().coalescedWaits, 1, 'the joiner waits for the leader\'s forward')
    peer.setPeers([a.url]) // B leaves; its Pool is closed once the leader's request is done
    gate.resolve()
    assert.equal((await leader).status, 200)
    assert.equal((await joiner).status, 200)
    await closed(bSockets[0] as net.Socket) // the departed peer's Pool, closed by setPeers
    assert.deepEqual(bRequests.length, 1, 'the joiner was sent to a peer that had left the pool')
    assert.equal(bSockets.filter((s) => !s.destroyed).length, 0, 'a connection to the departed peer stays open (a Pool nothing closes until the next setPeers)')
  } finally {
    await peer.destroy()
    await Promise.all([stopServer(a.server), stopServer(b.server), origin.close()])
  }
})

test('the one-hop rule holds at the Dispatcher too: a request that already went through forwardcache is answered the same whichever peer owns its URL', { timeout: 20_000 }, async () => {
  const origin = await startOrigin()
  const cluster = await startLocalPeers(2, { hotSize: 0 })
  const [a] = cluster.peers as [Peer, Peer]
  const [aUrl, bUrl] = cluster.urls as [string, string]
  try {
    const [ownA1, ownA2] = ownedBy(a, aUrl, (i) => `${origin.url}/hop-a-${i}`, 2) as [string, string]
    const [ownB1, ownB2] = ownedBy(a, bUrl, (i) => `${origin.url}/hop-b-${i}`, 2) as [string, string]
    // Two forwardcache hops already: a loop by the code's own definition (handler: 508 'loop').
    const twice = { via: '1.1 forwardcache, 1.1 forwardcache' }
    const remote2 = await get(a, ownB1, twice)
    assert.equal(remote2.status, 508)
    const local2 = await get(a, ownA1, twice)
    assert.equal(local2.status, 508, `a URL this peer owns is served (${local2.status}) where one another peer owns gets 508`)
    assert.equal(origin.count(new URL(ownA1).pathname), 0, 'a looping request reached the origin')
    // One hop already (an origin that fetches through the cluster and passes Via on).
    const once = { via: '1.1 forwardcache' }
    const remote1 = await get(a, ownB2, once)
    const local1 = await get(a, ownA2, once)
    assert.equal(local1.status, remote1.status, `Via: 1.1 forwardcache: ${local1.status} when this peer owns the URL, ${remote1.status} when another one does`)
  } finally {
    await cluster.close()
    await origin.close()
  }
})
