import assert from 'node:assert/strict'
import type dns from 'node:dns'
import { test } from 'node:test'
import { request } from 'undici'
import type { Dispatcher } from 'undici'
import { Client, ClientDestroyedError, DnsDiscovery, InvalidArgumentError, Peer, type DnsResolver } from '../src/index.js'
import { startOrigin } from './helpers/origin.js'
import { freePort, listen, ownedBy, stopServer } from './helpers/peers.js'

/** A handler of undici's new contract that records how its request ended. */
function recorder (): Dispatcher.DispatchHandler & { errors: Error[], controller: Dispatcher.DispatchController | undefined } {
  const h = {
    errors: [] as Error[],
    controller: undefined as Dispatcher.DispatchController | undefined,
    onRequestStart (controller: Dispatcher.DispatchController) { h.controller = controller },
    onResponseStart () {},
    onResponseData () {},
    onResponseEnd () {},
    onResponseError (_c: Dispatcher.DispatchController, err: Error) { h.errors.push(err) }
  }
  return h
}

// First in this file: the hash loads once per process, and this needs it not loaded yet.
test('destroy() and a caller\'s abort before the hash has loaded end the waiting requests at once', async () => {
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    assert.throws(() => peer.ownerOf('http://example.com/'), /still loading/, 'the hash is not loaded yet')
    const aborted = recorder()
    const destroyed = recorder()
    peer.dispatch({ origin: 'http://127.0.0.1:9', path: '/a', method: 'GET' }, aborted)
    peer.dispatch({ origin: 'http://127.0.0.1:9', path: '/b', method: 'GET' }, destroyed)
    assert.equal(peer.inFlight, 2)
    const reason = new Error('caller gave up')
    aborted.controller?.abort(reason)
    assert.deepEqual(aborted.errors, [reason], 'the aborting caller is answered at once')
    const done = peer.destroy()
    assert.equal(destroyed.errors.length, 1, 'destroy() answers the waiting caller at once')
    assert.ok(destroyed.errors[0] instanceof ClientDestroyedError)
    await done
    assert.equal(peer.inFlight, 0)
    await peer.ready
    assert.equal(destroyed.errors.length, 1, 'and once only')
    assert.equal(aborted.errors.length, 1)
  } finally {
    await peer.destroy()
  }
})

/** A resolver whose A lookups stay pending until the test answers them, in any order. */
function gatedResolver (): { resolver: DnsResolver, lookups: Array<{ answer: (a: string[]) => void, fail: (e: Error) => void }> } {
  const lookups: Array<{ answer: (a: string[]) => void, fail: (e: Error) => void }> = []
  const resolver: DnsResolver = {
    resolve4: () => new Promise<string[]>((resolve, reject) => { lookups.push({ answer: resolve, fail: reject }) }),
    resolve6: async () => { throw Object.assign(new Error('no AAAA'), { code: 'ENODATA' }) },
    resolveSrv: async (): Promise<dns.SrvRecord[]> => []
  }
  return { resolver, lookups }
}

test('DNS discovery: an older lookup answering after a newer one does not put its stale pool back', async () => {
  const self = 'http://10.0.0.1:3000'
  const peer = new Peer({ self })
  const { resolver, lookups } = gatedResolver()
  const errors: Error[] = []
  const discovery = new DnsDiscovery(peer, { name: 'cache', port: 3000, resolver, interval: 3_600_000, onError: (e) => errors.push(e) })
  try {
    const older = discovery.refresh()
    const newer = discovery.refresh()
    assert.equal(lookups.length, 2)
    lookups[1]?.answer(['10.0.0.1', '10.0.0.3'])
    await newer
    assert.deepEqual(peer.peers, ['http://10.0.0.1:3000', 'http://10.0.0.3:3000'])
    // The first lookup's answer predates 10.0.0.2 leaving and 10.0.0.3 joining.
    lookups[0]?.answer(['10.0.0.1', '10.0.0.2'])
    await older
    assert.deepEqual(peer.peers, ['http://10.0.0.1:3000', 'http://10.0.0.3:3000'], 'the stale answer was dropped')

    // An older answer still applies when nothing newer has been: the newer lookup failed,
    // and the pool it would have replaced is older still.
    const before = discovery.refresh()
    const failing = discovery.refresh()
    lookups[3]?.fail(Object.assign(new Error('SERVFAIL'), { code: 'ESERVFAIL' }))
    await failing
    lookups[2]?.answer(['10.0.0.1', '10.0.0.4'])
    await before
    assert.deepEqual(peer.peers, ['http://10.0.0.1:3000', 'http://10.0.0.4:3000'])
    assert.equal(errors.length, 1)
  } finally {
    discovery.stop()
    await peer.close()
  }
})

test('peers × vnodes is capped at 10,485,760 ring points, in the constructor, setPeers() and discovery', async () => {
  const addresses = Array.from({ length: 1049 }, (_, i) => `10.0.${i >> 8}.${i & 255}`)
  const urls = addresses.map((a) => `http://${a}:3000`)
  const tooMany = (err: Error): boolean => err instanceof InvalidArgumentError && /^expected opts\.vnodes × (opts\.)?peers to be at most 10485760 ring points, got 10000 × 1049$/.test(err.message)
  // 1,049 peers at 10,000 vnodes, each limit met alone: 10.49 M points, over the cap.
  assert.throws(() => new Peer({ self: urls[0] as string, peers: urls, vnodes: 10_000 }), tooMany)
  assert.throws(() => new Client({ peers: urls, vnodes: 10_000 }), tooMany)
  // Other spellings of a peer are the same ring member, counted once (the message says 1049).
  assert.throws(() => new Client({ peers: [...urls, 'HTTP://10.0.0.0:3000/', 'http://10.0.0.1:3000'], vnodes: 10_000 }), tooMany)
  const p = new Peer({ self: 'http://10.0.0.0:3000', peers: urls.slice(0, 2), vnodes: 10_000 })
  const { resolver, lookups } = gatedResolver()
  const errors: Error[] = []
  const discovery = new DnsDiscovery(p, { name: 'cache', port: 3000, resolver, interval: 3_600_000, includeSelf: false, onError: (e) => errors.push(e) })
  try {
    assert.throws(() => p.setPeers(urls), tooMany)
    assert.deepEqual(p.peers, urls.slice(0, 2), 'the pool is left as it was')
    // Discovery reports the refusal at every resolution that brings the same answer.
    for (let i = 0; i < 2; i++) {
      const done = discovery.refresh()
      lookups[i]?.answer(addresses)
      await done
    }
    assert.equal(errors.length, 2)
    assert.ok(errors.every(tooMany))
    assert.deepEqual(p.peers, urls.slice(0, 2))
  } finally {
    discovery.stop()
    await p.destroy()
  }
})

test('a ring over 1,048,576 points is allowed with one FORWARDCACHE_LARGE_RING warning per instance', async () => {
  const urls = Array.from({ length: 106 }, (_, i) => `http://10.1.0.${i}:3000`)
  const warnings: Array<{ code: string | undefined, message: string }> = []
  const onWarning = (w: Error & { code?: string }): void => { warnings.push({ code: w.code, message: w.message }) }
  process.on('warning', onWarning)
  // A trivial hash: what is under test is the warning, not a second of xxhash per build.
  const hash = (s: string): number => s.length
  const small = new Client({ peers: urls.slice(0, 104), vnodes: 10_000, hash })
  const p = new Peer({ self: 'http://10.1.0.0:3000', peers: urls.slice(0, 2), vnodes: 10_000, hash })
  try {
    // 104 x 10,000 = 1,040,000 points: under the line, no warning.
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(warnings.length, 0)
    // 105 x 10,000 = 1,050,000: over it. The pool is taken, and the warning says what it costs.
    p.setPeers(urls.slice(0, 105))
    assert.equal(p.peers.length, 105)
    p.setPeers(urls)
    const big = new Client({ peers: urls, vnodes: 10_000, hash })
    await new Promise((resolve) => setImmediate(resolve))
    await big.close()
    assert.deepEqual(warnings.map((w) => w.code), ['FORWARDCACHE_LARGE_RING', 'FORWARDCACHE_LARGE_RING'], 'once for p, once for big')
    assert.match(warnings[0]?.message ?? '', /^forwardcache: a ring of 1050000 points \(105 peers × 10000 vnodes\) takes about 0\.5 s to build/)
  } finally {
    process.off('warning', onWarning)
    await small.close()
    await p.destroy()
  }
})

test('one failed forward counts once towards ejecting its owner, however many callers shared it', async () => {
  const origin = await startOrigin((_req, res) => {
    // Not shareable: each coalesced caller has to be served on its own.
    res.writeHead(200, { 'cache-control': 'no-store', 'content-length': '2' })
    res.end('ok')
  })
  const self = await listen()
  const dead = `http://127.0.0.1:${await freePort()}`
  const peer = new Peer({ self: self.url, peers: [self.url, dead], ejectAfter: 3 })
  self.server.on('request', peer.handler())
  try {
    await peer.ready
    const [url] = ownedBy(peer, dead, (i) => `${origin.url}/shared-${i}`) as [string]
    const { pathname } = new URL(url)
    // Dispatched together, before the forward to the dead owner has failed: one forward, two
    // callers joining it.
    const responses = await Promise.all([0, 1, 2].map(() => request(url, { dispatcher: peer })))
    for (const res of responses) {
      assert.equal(res.statusCode, 200)
      assert.equal(await res.body.text(), 'ok')
    }
    const stats = peer.stats()
    assert.equal(stats.coalescedWaits, 2)
    assert.equal(stats.forwardErrors, 1, 'the joiners were not sent to the owner that had just failed')
    assert.deepEqual(peer.ejectedPeers, [], 'one failed forward is one failure, not three')
    assert.equal(origin.count(pathname), 3)
    // The next two failures, each a forward of its own, do eject it.
    for (let i = 0; i < 2; i++) await (await request(url, { dispatcher: peer })).body.text()
    assert.deepEqual(peer.ejectedPeers, [dead])
  } finally {
    await peer.destroy()
    await stopServer(self.server)
    await origin.close()
  }
})
