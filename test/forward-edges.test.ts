import assert from 'node:assert/strict'
import type http from 'node:http'
import { test } from 'node:test'
import { fetch, request, type Dispatcher } from 'undici'
import { deadlineCounts } from '../src/dispatch/deadline.js'
import { Client, Peer } from '../src/index.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { deferred, freePort, listen, ownedBy, startLocalPeers, stopServer, within, type LocalCluster } from './helpers/peers.js'

// Forwarding at the edges: a flight every caller left while it was still connecting, interim
// (1xx) responses to unsafe methods, the origin's answer to a fallback, the peerTimeout
// timers of forwards that fell back, and coalesced readers whose stall timer ran out while
// all of them were paused.

interface Got { status: number, headers: Record<string, string | string[] | undefined>, body: string }

async function get (dispatcher: Dispatcher, url: string, signal?: AbortSignal): Promise<Got> {
  const res = await request(url, { dispatcher, ...(signal !== undefined ? { signal } : {}) })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

/** Two in-process peers and an origin; `owner` owns the URLs `ownedUrl()` makes. */
async function startTwoPeers (options: { bodyTimeout?: number } = {}): Promise<{
  origin: CountingOrigin
  forwarder: Peer
  owner: Peer
  ownedUrl: (name: string) => { url: string, path: string }
  close: () => Promise<void>
}> {
  const origin = await startOrigin()
  let cluster: LocalCluster
  try {
    cluster = await startLocalPeers(2, options)
  } catch (err) {
    await origin.close()
    throw err
  }
  const [forwarder, owner] = cluster.peers as [Peer, Peer]
  return {
    origin,
    forwarder,
    owner,
    ownedUrl: (name) => {
      const [url] = ownedBy(owner, owner.self, (i) => `${origin.url}/${name}/${i}`)
      return { url: url as string, path: new URL(url as string).pathname }
    },
    close: async () => {
      await cluster.close()
      await origin.close()
    }
  }
}

for (const via of ['owner', 'forwarding peer'] as const) {
  test(`a caller that joins a flight whose every caller left gets its own response, not their abort (via the ${via})`, { timeout: 20_000 }, async () => {
    const setup = await startTwoPeers()
    try {
      const { origin, ownedUrl } = setup
      const through = via === 'owner' ? setup.owner : setup.forwarder
      const { url, path } = ownedUrl('left-flight')
      // The first caller starts the flight and gives up at once, while its upstream (the
      // origin on the owner, the owner on the forwarding peer) is still being connected to.
      const ac = new AbortController()
      const first = get(through, url, ac.signal)
      ac.abort(new Error('the first caller gave up'))
      // A second caller asks for the same URL in the same tick: it must not join the
      // abandoned flight and be failed with the first caller's reason.
      const second = get(through, url)
      await assert.rejects(first, /the first caller gave up/)
      const got = await second.catch((err: unknown) => assert.fail(`the second caller failed: ${String(err)}`))
      assert.equal(got.status, 200)
      assert.equal(got.body, `body of ${path}`)
      assert.equal(origin.count(path), 1, 'the second caller had its own fetch (the first one never reached the origin)')
      for (const p of [setup.forwarder, setup.owner]) {
        assert.equal(p.stats().flights, 0, `${p.self}: no flight left`)
        assert.equal(p.inFlight, 0, `${p.self}: nothing in flight`)
      }
    } finally {
      await setup.close()
    }
  })
}

/**
 * A Peer with one remote peer, a plain server that answers every invalidation (DELETE) with
 * 204 and records the URL it was for, and an origin whose /interim-102 and /interim-103
 * answer a POST with that interim response, then 201 "created".
 */
async function startInterimSetup (): Promise<{
  origin: CountingOrigin
  peer: Peer
  /** URLs the remote owner was told to invalidate, one entry per DELETE. */
  invalidated: string[]
  remoteUrl: (path: string) => string
  close: () => Promise<void>
}> {
  const origin = await startOrigin()
  for (const code of [102, 103] as const) {
    origin.route(`/interim-${code}`, (req, res) => {
      req.resume()
      req.on('end', () => {
        if (code === 102) res.writeProcessing()
        else res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
        res.writeHead(201, { 'content-type': 'text/plain', 'content-length': 7 })
        res.end('created')
      })
    })
  }
  const invalidated: string[] = []
  const servers: http.Server[] = []
  let peer: Peer | undefined
  const close = async (): Promise<void> => {
    await peer?.destroy().catch(() => {})
    await Promise.all(servers.map(stopServer))
    await origin.close()
  }
  try {
    const owner = await listen((req, res) => {
      if (req.method === 'DELETE') invalidated.push(new URL(req.url ?? '/', 'http://owner').searchParams.get('q') ?? '')
      req.resume()
      res.writeHead(204)
      res.end()
    })
    servers.push(owner.server)
    const self = await listen()
    servers.push(self.server)
    peer = new Peer({ self: self.url, peers: [self.url, owner.url] })
    self.server.on('request', peer.handler())
    await peer.ready
    const p = peer
    return {
      origin,
      peer: p,
      invalidated,
      remoteUrl: (path) => ownedBy(p, owner.url, (i) => `${origin.url}${path}?n=${i}`)[0] as string,
      close
    }
  } catch (err) {
    await close()
    throw err
  }
}

/**
 * POSTs a URL owned by the remote peer to /interim-102 and /interim-103 through `post` (which
 * reads the whole answer), and checks each gets the 201 and its body, and the owner one
 * invalidation per POST.
 */
async function postThroughInterims (what: string, post: (url: string, dispatcher: Peer) => Promise<{ status: number, body: string }>): Promise<void> {
  const setup = await startInterimSetup()
  try {
    const { origin, peer, invalidated } = setup
    const urls: string[] = []
    for (const code of [102, 103]) {
      const url = setup.remoteUrl(`/interim-${code}`)
      urls.push(url)
      const res = await post(url, peer).catch((err: unknown) => assert.fail(`${what} failed after a ${code}: ${String(err)}`))
      assert.equal(res.status, 201, `after a ${code}`)
      assert.equal(res.body, 'created', `after a ${code}`)
    }
    assert.equal(origin.count(), 2, 'each POST reached the origin once')
    // The interim response is not the outcome: only the 201 invalidates.
    assert.deepEqual(invalidated, urls, 'one invalidation per POST, for its URL')
  } finally {
    await setup.close()
  }
}

test('a POST answered 102 or 103 before its 201, for a URL another peer owns: request() gets the 201 and its body, and the owner one invalidation per POST', { timeout: 20_000 }, async () => {
  await postThroughInterims('request()', async (url, dispatcher) => {
    const res = await request(url, { dispatcher, method: 'POST', body: 'payload', signal: AbortSignal.timeout(5000) })
    return { status: res.statusCode, body: await res.body.text() }
  })
})

test('a POST answered 102 or 103 before its 201, for a URL another peer owns: fetch() gets the 201 and its body, and does not hang', { timeout: 20_000 }, async () => {
  await postThroughInterims('fetch()', async (url, dispatcher) => {
    // fetch() answers false to every 1xx; the signal only bounds a hang.
    const res = await fetch(url, { dispatcher, method: 'POST', body: 'payload', signal: AbortSignal.timeout(3000) })
    return { status: res.status, body: await res.text() }
  })
})

test('the origin\'s answer to a fallback around an overloaded owner is not kept as a hot copy: each such request reaches the origin', { timeout: 20_000 }, async () => {
  const origin = await startOrigin()
  const servers: http.Server[] = []
  let peer: Peer | undefined
  try {
    // An owner that is overloaded for now: every request for its keys falls back.
    let ownerAsked = 0
    const owner = await listen((req, res) => {
      if ((req.url ?? '').includes('?q=')) ownerAsked++
      req.resume()
      res.writeHead(503, { 'forwardcache-error': 'overloaded', 'retry-after': '1', 'content-length': 0 })
      res.end()
    })
    servers.push(owner.server)
    const self = await listen()
    servers.push(self.server)
    // hotThreshold 1: every key asked for is hot, so the first answer would be copied.
    peer = new Peer({ self: self.url, peers: [self.url, owner.url], hotThreshold: 1 })
    self.server.on('request', peer.handler())
    await peer.ready
    const [url] = ownedBy(peer, owner.url, (i) => `${origin.url}/fallback-hot/${i}`) as [string]
    const path = new URL(url).pathname
    const statuses: string[] = []
    for (let i = 0; i < 3; i++) {
      const got = await get(peer, url)
      assert.equal(got.status, 200)
      assert.equal(got.body, `body of ${path}`)
      statuses.push(String(got.headers['cache-status']))
    }
    assert.equal(origin.count(path), 3, `every request fell back to the origin, none was served from a copy: ${statuses.join(' | ')}`)
    assert.equal(ownerAsked, 3, 'the owner was asked every time')
    for (const s of statuses) assert.match(s, /fwd=bypass; detail=owner-unavailable/)
    assert.equal(peer.stats().hotHits, 0)
    assert.equal(peer.stats().hotBytes, 0, 'nothing the owner did not answer is held as a hot copy')
  } finally {
    await peer?.destroy().catch(() => {})
    await Promise.all(servers.map(stopServer))
    await origin.close()
  }
})

// A peerTimeout no other deadline in this process uses, so the counts are the forwards' only.
const PEER_TIMEOUT = 4321

const unavailableOwners: Array<[string, () => Promise<{ url: string, close: () => Promise<void> }>]> = [
  ['refuses the connection', async () => ({ url: `http://127.0.0.1:${await freePort()}`, close: async () => {} })],
  ['answers overloaded', async () => {
    const { server, url } = await listen((req, res) => {
      req.resume()
      res.writeHead(503, { 'forwardcache-error': 'overloaded', 'content-length': 0 })
      res.end()
    })
    return { url, close: () => stopServer(server) }
  }]
]

for (const [how, startOwner] of unavailableOwners) {
  test(`a forward that falls back to the origin because the owner ${how} leaves no peerTimeout deadline waiting`, { timeout: 20_000 }, async () => {
    const origin = await startOrigin()
    let owner: { url: string, close: () => Promise<void> } | undefined
    let client: Client | undefined
    const before = deadlineCounts(PEER_TIMEOUT)
    try {
      owner = await startOwner()
      // ejectAfter high: every request is forwarded, none skips the owner as ejected.
      client = new Client({ peers: [owner.url], peerTimeout: PEER_TIMEOUT, ejectAfter: 1000 })
      await client.ready
      const N = 8
      const c = client
      const all = await Promise.all(Array.from({ length: N }, (_, i) => get(c, `${origin.url}/deadline/${i}`)))
      for (const got of all) {
        assert.equal(got.status, 200)
        assert.match(String(got.headers['cache-status']), /detail=owner-unavailable/)
      }
      assert.equal(origin.count(), N, 'every request fell back to the origin')
      assert.equal(client.stats().forwardErrors, N)
      const counts = deadlineCounts(PEER_TIMEOUT)
      assert.equal(counts.made - before.made, N, 'each forward waited for the owner with its own peerTimeout')
      // Each fallback has answered: nothing may still wait for the owner's headers (and hold
      // the request, its handler and its caller for a whole peerTimeout).
      assert.equal(counts.waiting, before.waiting, `peerTimeout deadlines still waiting after every request was answered: ${counts.waiting - before.waiting} of ${N}`)
    } finally {
      await client?.destroy().catch(() => {})
      await owner?.close()
      await origin.close()
    }
  })
}

/** A new-contract handler that records what it gets; `done` resolves at the end or error. */
class Reader implements Dispatcher.DispatchHandler {
  controller: Dispatcher.DispatchController | undefined
  status = 0
  bytes = 0
  error: Error | undefined
  ended = false
  readonly done = deferred()
  readonly #onStart: ((r: Reader) => void) | undefined
  readonly #onData: ((r: Reader) => void) | undefined

  constructor (hooks: { onStart?: (r: Reader) => void, onData?: (r: Reader) => void } = {}) {
    this.#onStart = hooks.onStart
    this.#onData = hooks.onData
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
  }

  onResponseStart (controller: Dispatcher.DispatchController, status: number): void {
    this.controller = controller
    this.status = status
    this.#onStart?.(this)
  }

  onResponseData (_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bytes += chunk.length
    this.#onData?.(this)
  }

  onResponseEnd (): void {
    this.ended = true
    this.done.resolve()
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    this.error = err
    this.done.resolve()
  }
}

// The stall time (bodyTimeout). Under 1000 ms, so the owner's own fill waits for it too.
const STALL_MS = 300
const BIG = 4 * 1024 * 1024
// How far one coalesced reader may fall behind the others before the upstream waits for it.
const MAX_LAG = 1024 * 1024

/**
 * Resolves once every timer of `ms` armed before this call has run: Node runs the timers of
 * one duration in the order they were armed. The library's stall timer gives no event.
 */
function afterTimersOf (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

for (const via of ['owner', 'forwarding peer'] as const) {
  test(`a coalesced reader held back by one that stopped is not stuck when it was paused too as the stall time ran out: the stopped one is cut off, the reader gets the whole body (via the ${via})`, { timeout: 20_000 }, async () => {
    const setup = await startTwoPeers({ bodyTimeout: STALL_MS })
    const readers: Reader[] = []
    try {
      const { origin, ownedUrl } = setup
      const through = via === 'owner' ? setup.owner : setup.forwarder
      const { path } = ownedUrl('stall')
      const body = Buffer.alloc(BIG, 120)
      origin.route(path, (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'max-age=60', 'content-length': BIG })
        res.end(body)
      })
      const held = deferred()
      let pausedOnce = false
      // A stops reading at once; B reads until A lags more than the upstream lets it (the
      // upstream then waits, and the stall timer starts), and pauses itself right then, once.
      const a = new Reader({ onStart: (r) => r.controller?.pause() })
      const b = new Reader({
        onData: (r) => {
          if (pausedOnce || r.bytes <= MAX_LAG) return
          pausedOnce = true
          r.controller?.pause()
          held.resolve()
        }
      })
      readers.push(a, b)
      const opts = { origin: origin.url, path, method: 'GET' as const }
      through.dispatch(opts, a)
      through.dispatch(opts, b) // joins A's flight
      await within(held.promise, 10_000, 'B to be more than 1 MiB ahead of A')
      // The stall timer runs out while both readers are paused: nobody to cut off yet.
      await afterTimersOf(STALL_MS)
      assert.deepEqual([a.error, b.error], [undefined, undefined], 'both readers are still on')
      // B reads again, and is still held back by A: A must be timed again and cut off.
      b.controller?.resume()
      await afterTimersOf(STALL_MS)
      assert.equal(a.error?.name, 'StalledReaderError', `the stopped reader is cut off a stall time after the other read again (A: ${a.error?.message ?? 'no error'}, B has ${b.bytes} of ${BIG} bytes)`)
      await within(b.done.promise, 10_000, 'the end of B\'s body')
      assert.equal(b.error, undefined, `B: ${b.error?.message ?? ''}`)
      assert.equal(b.status, 200)
      assert.equal(b.bytes, BIG, 'the reader got the whole body')
      assert.ok(b.ended)
      assert.equal(origin.count(path), 1, 'one origin fetch for both readers')
    } finally {
      await setup.close()
      // The cluster's close fails whatever was left; nothing may stay pending.
      await within(Promise.all(readers.map((r) => r.done.promise)), 5000, 'the readers to end once the peers are destroyed')
    }
  })
}

test('HEAD requests forwarded to an owner reuse one connection, as GETs do', { timeout: 20_000 }, async () => {
  const cluster = await startLocalPeers(2)
  const origin = await startOrigin()
  try {
    const asking = cluster.peers[0] as Peer
    const urls = ownedBy(asking, cluster.urls[1] as string, (i) => `${origin.url}/head${i}`, 4)
    const owner = cluster.servers[1] as http.Server
    // Long enough that undici keeps the connection (it closes one whose Keep-Alive hint is
    // within its 2 s threshold, as the helpers' 1 s is).
    owner.keepAliveTimeout = 10_000
    let connections = 0
    owner.on('connection', () => { connections++ })
    // Filled by GETs, then asked with HEADs, which the owner answers from its store.
    for (const url of urls) assert.equal((await get(asking, url)).body, `body of ${new URL(url).pathname}`)
    for (let round = 0; round < 2; round++) {
      for (const url of urls) {
        const res = await request(url, { dispatcher: asking, method: 'HEAD' })
        assert.equal(res.statusCode, 200)
        assert.equal(res.headers['content-length'], String(Buffer.byteLength(`body of ${new URL(url).pathname}`)))
        assert.match(String(res.headers['cache-status']), /hit/)
        await res.body.text()
      }
    }
    assert.equal(origin.count(), 4)
    // A second connection can open when a request is dispatched while the first one is
    // still finishing its response; before, every HEAD closed its connection (8 here).
    assert.ok(connections <= 2, `${connections} connections`)
  } finally {
    await cluster.close()
    await origin.close()
  }
})

test('a bodyless unsafe request whose origin sends 102s and never a final answer fails at originTimeout; undici alone would wait for good', { timeout: 20_000 }, async () => {
  const origin = await startOrigin()
  const timers = new Set<NodeJS.Timeout>()
  origin.route('/flood', (req, res) => {
    req.resume()
    // Each interim response restarts undici's own headers timer.
    const timer = setInterval(() => res.writeProcessing(), 50)
    timers.add(timer)
    res.on('close', () => { clearInterval(timer); timers.delete(timer) })
  })
  const peer = new Peer({ self: 'http://127.0.0.1:1', originTimeout: 300 })
  try {
    await peer.ready
    for (const method of ['DELETE', 'POST'] as const) {
      const started = performance.now()
      const err = await request(`${origin.url}/flood`, { dispatcher: peer, method, signal: AbortSignal.timeout(5000) })
        .then(() => assert.fail(`${method}: answered`), (e: unknown) => e as Error & { code?: string })
      assert.equal(err.code, 'UND_ERR_HEADERS_TIMEOUT', `${method}: ${String(err)}`)
      // The deadline, not the test's 5 s guard.
      assert.ok(performance.now() - started < 3000, `${method}: failed after ${Math.round(performance.now() - started)} ms`)
    }
    assert.equal(origin.count('/flood'), 2)
  } finally {
    for (const timer of timers) clearInterval(timer)
    await peer.destroy()
    await origin.close()
  }
})
