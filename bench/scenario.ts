/**
 * The scenario runner: measures ONE cell in this fresh process and reports a CellResult.
 *
 *   node dist/bench/scenario.js '{"scenario":"local-hit","size":1024,"concurrency":32,...}'
 *
 * Forked by run.js it sends the result over IPC; run by hand it prints it as JSON (handy with
 * `node --cpu-prof dist/bench/scenario.js ...`). The origin (and, for forwarded-hit and hot-hit,
 * the owner peer) run in helper processes it forks; they exit with it.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { Agent, cacheStores, interceptors, request, type Dispatcher } from 'undici'
import { Peer, type PeerStats } from '../src/index.js'
import { DEFAULT_PATH } from '../src/options.js'
import {
  HIT_KEYS, Helper, MiB, PAIRS, SPLIT_PAIRS, hitUrls, cpuMicros, isScenario, maxRssBytes, originPath, percentile, sortedSample,
  type BodyRead, type CellResult, type CellSpec, type SideInit, type SplitSide, type Tally
} from './common.js'
import { MapCache, floorOf } from './floor.js'
import { load, readBody, setReadMode, type LoadResult } from './load.js'


async function fetchAll (dispatcher: Dispatcher, urls: readonly string[]): Promise<void> {
  for (const url of urls) {
    const res = await request(url, { dispatcher })
    await readBody(res.body)
  }
}

function result (spec: CellSpec, r: LoadResult, originRequests: number | null, extra: Record<string, number | string>): CellResult {
  const sorted = sortedSample(r.latencies)
  return {
    spec,
    requests: r.requests,
    elapsedMs: r.elapsedMs,
    opsPerSec: r.requests / (r.elapsedMs / 1000),
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxRssBytes: maxRssBytes(),
    originRequests,
    errors: r.errors,
    extra: { ...extra, cacheStatus: r.firstCacheStatus }
  }
}

function delta (after: PeerStats, before: PeerStats, name: 'localHits' | 'forwards' | 'forwardErrors' | 'originFetches' | 'misses' | 'coalescedWaits' | 'servedForPeers'): number {
  return after[name] - before[name]
}

async function listenPeer (peer: Peer | null): Promise<{ server: http.Server, url: string }> {
  const server = http.createServer()
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  if (peer !== null) server.on('request', peer.handler())
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

// ---------------------------------------------------------------------------------------------
// Throughput scenarios: the same load, through different dispatchers
// ---------------------------------------------------------------------------------------------

/**
 * A hit cell's warm-up: `warmupMs` of traffic and at least `warmupRequests` requests, within
 * `warmupMaxMs`. Answers how much it ran, for the cell's extra fields.
 */
async function warmUp (spec: CellSpec, dispatcher: Dispatcher, next: () => string): Promise<{ warmupRequests: number, warmupMs: number }> {
  const r = await load(dispatcher, next, spec.size, spec.concurrency, spec.warmupMs, { requests: spec.warmupRequests, maxMs: spec.warmupMaxMs })
  return { warmupRequests: r.requests, warmupMs: Math.round(r.elapsedMs) }
}

/**
 * A warm cache: the HIT_KEYS URLs are fetched once, traffic runs for the warm-up (see
 * warmUp()), the origin's counter is reset, then the measured window runs.
 */
async function hitScenario (spec: CellSpec, origin: Helper, dispatcher: Dispatcher, urls: readonly string[],
  extraOf?: () => Promise<Record<string, number | string>>): Promise<CellResult> {
  let i = 0
  const next = (): string => urls[i++ % urls.length] as string
  await fetchAll(dispatcher, urls)
  const warm = await warmUp(spec, dispatcher, next)
  await origin.call('reset')
  // CPU time of every process of the cell over the measured window (clientCpuUs: this one),
  // for the CPU-per-request table: on a shared VM, a request's latency at one in flight is
  // mostly the two processes waking each other, while CPU time shows what each end costs.
  const sample = async (): Promise<Record<string, number | string>> => ({
    ...(extraOf === undefined ? {} : await extraOf()),
    originCpuUs: await origin.call<number>('cpu'),
    clientCpuUs: cpuMicros()
  })
  const before = await sample()
  const r = await load(dispatcher, next, spec.size, spec.concurrency, spec.durationMs)
  const after = await sample()
  const originRequests = await origin.call<number>('count')
  const extra: Record<string, number | string> = { keys: urls.length, ...warm }
  for (const [k, v] of Object.entries(after)) {
    const b = before[k]
    extra[k] = typeof v === 'number' && typeof b === 'number' ? v - b : v
  }
  return result(spec, r, originRequests, extra)
}

/** Every request a URL never asked for before, so every one is a miss that fills the cache. */
async function missScenario (spec: CellSpec, origin: Helper, dispatcher: Dispatcher): Promise<CellResult> {
  let i = 0
  const next = (): string => `${origin.url}${originPath(spec.size, 0, `miss-${i++}`)}`
  await load(dispatcher, next, spec.size, spec.concurrency, spec.warmupMs)
  await origin.call('reset')
  const r = await load(dispatcher, next, spec.size, spec.concurrency, spec.durationMs)
  const originRequests = await origin.call<number>('count')
  return result(spec, r, originRequests, {})
}

async function throughput (spec: CellSpec): Promise<CellResult> {
  if (spec.scenario === 'floor') {
    const { floor, urls } = floorOf(spec.size)
    let i = 0
    const next = (): string => urls[i++ % urls.length] as string
    const warm = await warmUp(spec, floor, next)
    const r = await load(floor, next, spec.size, spec.concurrency, spec.durationMs)
    return result(spec, r, null, { keys: urls.length, ...warm })
  }

  const origin = await Helper.start('origin')
  const cleanup: Array<() => unknown> = [() => origin.stop()]
  try {
    switch (spec.scenario) {
      case 'direct': {
        const agent = new Agent()
        cleanup.push(() => agent.destroy())
        return await hitScenario(spec, origin, agent, hitUrls(origin.url, spec.size, 'hit'))
      }
      case 'undici-cache': {
        const agent = new Agent()
        cleanup.push(() => agent.destroy())
        const cached = agent.compose(interceptors.cache({ type: 'shared' }))
        return await hitScenario(spec, origin, cached, hitUrls(origin.url, spec.size, 'hit'))
      }
      case 'undici-cache-miss': {
        const agent = new Agent()
        cleanup.push(() => agent.destroy())
        return await missScenario(spec, origin, agent.compose(interceptors.cache({ type: 'shared' })))
      }
      case 'local-hit': {
        // The only peer in its pool: it owns every URL.
        const peer = new Peer({ self: 'http://127.0.0.1:1' })
        cleanup.push(() => peer.destroy())
        await peer.ready
        return await hitScenario(spec, origin, peer, hitUrls(origin.url, spec.size, 'hit'), async () => {
          const s = peer.stats()
          return { localHits: s.localHits, forwards: s.forwards }
        })
      }
      case 'miss': {
        const peer = new Peer({ self: 'http://127.0.0.1:1' })
        cleanup.push(() => peer.destroy())
        await peer.ready
        const r = await missScenario(spec, origin, peer)
        const s = peer.stats()
        r.extra.cacheBytes = s.cacheBytes
        r.extra.evictions = s.evictions
        return r
      }
      case 'forwarded-hit':
      case 'hot-hit': {
        const owner = await Helper.start('peer')
        cleanup.push(() => owner.stop())
        const { server, url: selfA } = await listenPeer(null)
        cleanup.push(() => server.close())
        const peers = [selfA, owner.url]
        // forwarded-hit: hot copies off, so every request really goes to the owner.
        // hot-hit: the defaults, so after hotThreshold requests A keeps its own fresh copy.
        const peerA = new Peer({
          self: selfA,
          peers,
          ...(spec.scenario === 'forwarded-hit' ? { hotSize: 0 } : {}),
          ...(spec.secret === '' ? {} : { secret: spec.secret })
        })
        server.on('request', peerA.handler())
        cleanup.push(() => peerA.destroy())
        await Promise.all([peerA.ready, owner.call('init', { peers, secret: spec.secret })])
        const urls: string[] = []
        for (let k = 0; urls.length < HIT_KEYS; k++) {
          const u = `${origin.url}${originPath(spec.size, 0, `fwd-${k}`)}`
          if (peerA.ownerOf(u) === owner.url) urls.push(u)
        }
        return await hitScenario(spec, origin, peerA, urls, async () => {
          const a = peerA.stats()
          const b = await owner.call<PeerStats>('stats')
          return {
            ownerCpuUs: await owner.call<number>('cpu'),
            forwards: a.forwards,
            forwardErrors: a.forwardErrors,
            hotHits: a.hotHits,
            ownerLocalHits: b.localHits,
            ownerServedForPeers: b.servedForPeers
          }
        })
      }
      case 'owner-wire': {
        // forwarded-hit without Peer A: an undici Agent speaking the wire protocol straight to
        // the owner's handler, so forwarded-hit / owner-wire is what A's routing adds and
        // owner-wire / direct is what B's handler and cache cost next to a bare origin.
        if (spec.secret !== '') throw new Error('owner-wire sends unsigned requests: run it without --secret')
        const owner = await Helper.start('peer')
        cleanup.push(() => owner.stop())
        await owner.call('init', { peers: [owner.url], secret: '' })
        const agent = new Agent()
        cleanup.push(() => agent.destroy())
        const urls = hitUrls(origin.url, spec.size, 'wire').map((u) => `${owner.url}${DEFAULT_PATH}?q=${encodeURIComponent(u)}`)
        return await hitScenario(spec, origin, agent, urls, async () => {
          const b = await owner.call<PeerStats>('stats')
          return { ownerCpuUs: await owner.call<number>('cpu'), ownerLocalHits: b.localHits, ownerServedForPeers: b.servedForPeers }
        })
      }
      default:
        throw new Error(`not a throughput scenario: ${spec.scenario}`)
    }
  } finally {
    for (const f of cleanup.reverse()) {
      try { await f() } catch {}
    }
  }
}

// ---------------------------------------------------------------------------------------------
// pairs: the compared scenarios of one size and concurrency, alternating in ONE process
// ---------------------------------------------------------------------------------------------

interface Side {
  dispatcher: Dispatcher
  next: () => string
}

/**
 * On this kind of shared VM the same cell differs by up to 1.5x from one process to the next,
 * which buries differences of 10-20% between scenarios measured in separate processes. Here
 * both sides of a pair live in one process and take turns in bursts of `durationMs` (the
 * first side alternating between going first and second), so drift hits both alike. Each
 * side is warmed first: a hit side as a hit cell is (warmUp()), a miss side with `warmupMs`
 * of traffic.
 */
async function pairs (spec: CellSpec): Promise<CellResult> {
  const origin = await Helper.start('origin')
  const owner = await Helper.start('peer')
  const cleanup: Array<() => unknown> = [() => origin.stop(), () => owner.stop()]
  try {
    const cycle = (urls: readonly string[]): (() => string) => {
      let i = 0
      return () => urls[i++ % urls.length] as string
    }
    const fresh = (prefix: string): (() => string) => {
      let i = 0
      return () => `${origin.url}${originPath(spec.size, 0, `${prefix}-${i++}`)}`
    }
    const sides = new Map<string, Side>()

    const floor = floorOf(spec.size)
    sides.set('floor', { dispatcher: floor.floor, next: cycle(floor.urls) })
    const floorHit = floorOf(spec.size, { date: new Date().toUTCString(), age: '0', 'cache-status': 'forwardcache; hit; ttl=3599' })
    sides.set('floor-hit-fields', { dispatcher: floorHit.floor, next: cycle(floorHit.urls) })

    const local = new Peer({ self: 'http://127.0.0.1:1' })
    cleanup.push(() => local.destroy())
    const missPeer = new Peer({ self: 'http://127.0.0.1:1' })
    cleanup.push(() => missPeer.destroy())
    const direct = new Agent()
    cleanup.push(() => direct.destroy())
    const undiciAgent = new Agent()
    cleanup.push(() => undiciAgent.destroy())
    const undiciMissAgent = new Agent()
    cleanup.push(() => undiciMissAgent.destroy())
    sides.set('local-hit', { dispatcher: local, next: cycle(hitUrls(origin.url, spec.size, 'hit')) })
    sides.set('undici-cache', { dispatcher: undiciAgent.compose(interceptors.cache({ type: 'shared' })), next: cycle(hitUrls(origin.url, spec.size, 'uhit')) })
    sides.set('direct', { dispatcher: direct, next: cycle(hitUrls(origin.url, spec.size, 'direct')) })
    sides.set('miss', { dispatcher: missPeer, next: fresh('miss') })
    sides.set('undici-cache-miss', { dispatcher: undiciMissAgent.compose(interceptors.cache({ type: 'shared' })), next: fresh('umiss') })

    const { server, url: selfA } = await listenPeer(null)
    cleanup.push(() => server.close())
    const poolAB = [selfA, owner.url]
    const peerA = new Peer({ self: selfA, peers: poolAB, hotSize: 0, ...(spec.secret === '' ? {} : { secret: spec.secret }) })
    server.on('request', peerA.handler())
    cleanup.push(() => peerA.destroy())
    await Promise.all([local.ready, missPeer.ready, peerA.ready, owner.call('init', { peers: poolAB, secret: spec.secret })])
    const fwdUrls: string[] = []
    for (let k = 0; fwdUrls.length < HIT_KEYS; k++) {
      const u = `${origin.url}${originPath(spec.size, 0, `fwd-${k}`)}`
      if (peerA.ownerOf(u) === owner.url) fwdUrls.push(u)
    }
    sides.set('forwarded-hit', { dispatcher: peerA, next: cycle(fwdUrls) })

    // Every side is warmed (its cache filled, its code paths run) before anything is
    // measured, but the miss sides only just before their own pair, which comes last in PAIRS:
    // warmed with the rest, undici-cache-miss filled undici's store, which never evicts a
    // response alone under its URL, with hundreds of MiB at 1 MiB, and every pair ran beside
    // that heap. The side that allocates more per request pays more for a larger heap's
    // collections: on Node 24, local-hit / floor at 1 MiB with 32 in flight was 0.81-0.84
    // alone and 0.70-0.80 beside it (bench/README.md).
    const extra: Record<string, number | string> = { bursts: PAIR_BURSTS, burstMs: spec.durationMs }
    const warmed = new Set<string>()
    const warm = async (name: string): Promise<void> => {
      if (warmed.has(name)) return
      warmed.add(name)
      const side = sides.get(name) as Side
      const first = side.next()
      await fetchAll(side.dispatcher, [first, ...Array.from({ length: HIT_KEYS - 1 }, () => side.next())])
      if (name === 'miss' || name === 'undici-cache-miss') await load(side.dispatcher, side.next, spec.size, spec.concurrency, spec.warmupMs)
      else extra[`${name}|warmup`] = (await warmUp(spec, side.dispatcher, side.next)).warmupRequests
    }
    for (const name of sides.keys()) if (name !== 'miss' && name !== 'undici-cache-miss') await warm(name)
    const localBefore = local.stats()
    const aBefore = peerA.stats()
    const ownerBefore = await owner.call<PeerStats>('stats')

    let errors = 0
    let requests = 0
    const record = (name: string, r: Alternation): void => {
      const sorted = sortedSample(r.ratios)
      extra[`${name}|ratio`] = (r.a.requests / r.a.ms) / (r.b.requests / r.b.ms)
      extra[`${name}|q1`] = percentile(sorted, 0.25) ?? 0
      extra[`${name}|q3`] = percentile(sorted, 0.75) ?? 0
      extra[`${name}|first`] = r.a.requests / r.a.ms * 1000
      extra[`${name}|second`] = r.b.requests / r.b.ms * 1000
      errors += r.a.errors + r.b.errors
      requests += r.a.requests + r.b.requests
    }
    const inProcess = (side: Side) => async (ms: number): Promise<Tally> => {
      const r = await load(side.dispatcher, side.next, spec.size, spec.concurrency, ms)
      return { requests: r.requests, ms: r.elapsedMs, errors: r.errors }
    }
    for (const [name, first, second] of PAIRS) {
      await warm(first)
      await warm(second)
      record(name, await alternate(inProcess(sides.get(first) as Side), inProcess(sides.get(second) as Side), spec.durationMs))
    }
    for (const [name, first, second] of SPLIT_PAIRS) {
      const helpers = await Promise.all([Helper.start('side'), Helper.start('side')])
      cleanup.push(() => { for (const h of helpers) h.stop() })
      const [a, b] = helpers
      const init = (h: Helper, side: SplitSide): Promise<unknown> =>
        h.call('init', { side, origin: origin.url, size: spec.size, concurrency: spec.concurrency, read: spec.read } satisfies SideInit)
      await Promise.all([init(a, first), init(b, second)])
      const inHelper = (h: Helper) => async (ms: number): Promise<Tally> => await h.call<Tally>('burst', { ms })
      // Warmed one after the other, as the same-process sides are.
      await inHelper(a)(spec.warmupMs)
      await inHelper(b)(spec.warmupMs)
      record(name, await alternate(inHelper(a), inHelper(b), spec.durationMs))
    }
    // The hit sides must really have hit: no origin fetch by the local peer, none by the owner.
    extra.localHitOriginFetches = local.stats().originFetches - localBefore.originFetches
    extra.ownerOriginFetches = (await owner.call<PeerStats>('stats')).originFetches - ownerBefore.originFetches
    extra.forwardErrors = peerA.stats().forwardErrors - aBefore.forwardErrors
    return {
      spec,
      requests,
      elapsedMs: 0,
      opsPerSec: 0,
      p50Ms: null,
      p99Ms: null,
      maxRssBytes: maxRssBytes(),
      originRequests: null,
      errors,
      extra
    }
  } finally {
    for (const f of cleanup.reverse()) {
      try { await f() } catch {}
    }
  }
}

/** Bursts of each side of a pair. */
const PAIR_BURSTS = 20

interface Alternation { a: Tally, b: Tally, ratios: number[] }

/**
 * PAIR_BURSTS bursts of `durationMs` of each side, the first side alternating between going
 * first and second, with the ratio of each round's two rates.
 */
async function alternate (a: (ms: number) => Promise<Tally>, b: (ms: number) => Promise<Tally>, durationMs: number): Promise<Alternation> {
  const ta: Tally = { requests: 0, ms: 0, errors: 0 }
  const tb: Tally = { requests: 0, ms: 0, errors: 0 }
  const add = (t: Tally, r: Tally): number => {
    t.requests += r.requests
    t.ms += r.ms
    t.errors += r.errors
    return r.requests / r.ms
  }
  const ratios: number[] = []
  for (let k = 0; k < PAIR_BURSTS; k++) {
    let ra: number
    let rb: number
    if (k % 2 === 0) {
      ra = add(ta, await a(durationMs))
      rb = add(tb, await b(durationMs))
    } else {
      rb = add(tb, await b(durationMs))
      ra = add(ta, await a(durationMs))
    }
    ratios.push(ra / rb)
  }
  return { a: ta, b: tb, ratios }
}

// ---------------------------------------------------------------------------------------------
// coalesce: many concurrent requests for one cold URL
// ---------------------------------------------------------------------------------------------

const COALESCE_REQUESTS = 100
const COALESCE_HOLD_MS = 50

async function burst (targets: readonly Dispatcher[], url: string): Promise<LoadResult> {
  const latencies: number[] = []
  let errors = 0
  let firstCacheStatus = ''
  const start = performance.now()
  await Promise.all(Array.from({ length: COALESCE_REQUESTS }, async (_, i) => {
    const t0 = performance.now()
    try {
      const res = await request(url, { dispatcher: targets[i % targets.length] as Dispatcher })
      const bytes = await readBody(res.body)
      latencies.push(performance.now() - t0)
      if (res.statusCode !== 200 || bytes !== 1024) errors++
      if (firstCacheStatus === '') {
        const cs = res.headers['cache-status']
        firstCacheStatus = Array.isArray(cs) ? cs.join(', ') : (cs ?? '(none)')
      }
    } catch {
      errors++
    }
  }))
  return { requests: latencies.length, elapsedMs: performance.now() - start, latencies, errors, firstCacheStatus }
}

async function coalesce (spec: CellSpec): Promise<CellResult> {
  const origin = await Helper.start('origin')
  const cleanup: Array<() => unknown> = [() => origin.stop()]
  try {
    // A warm-up URL first, so connections and code are warm and only the cold key is cold.
    const warmUrl = `${origin.url}${originPath(1024, 0, 'coalesce-warm')}`
    const url = `${origin.url}${originPath(1024, COALESCE_HOLD_MS, `coalesce-${spec.round}`)}`
    if (spec.scenario === 'coalesce-undici-cache') {
      const agent = new Agent()
      cleanup.push(() => agent.destroy())
      const cached = agent.compose(interceptors.cache({ type: 'shared' }))
      await fetchAll(cached, [warmUrl, warmUrl])
      await origin.call('reset')
      const r = await burst([cached], url)
      const originRequests = await origin.call<number>('count')
      return { ...result(spec, r, originRequests, { wallMs: r.elapsedMs }), opsPerSec: 0 }
    }
    // Two in-process peers with real HTTP servers: half the burst through each.
    const a = await listenPeer(null)
    const b = await listenPeer(null)
    cleanup.push(() => a.server.close(), () => b.server.close())
    const peers = [a.url, b.url]
    const secret = spec.secret === '' ? {} : { secret: spec.secret }
    const peerA = new Peer({ self: a.url, peers, ...secret })
    const peerB = new Peer({ self: b.url, peers, ...secret })
    a.server.on('request', peerA.handler())
    b.server.on('request', peerB.handler())
    cleanup.push(() => peerA.destroy(), () => peerB.destroy())
    await Promise.all([peerA.ready, peerB.ready])
    // Warm both peers' paths: one URL each peer owns, through both.
    const warm: string[] = []
    for (let k = 0; warm.length < 2; k++) {
      const u = `${origin.url}${originPath(1024, 0, `coalesce-warm-${k}`)}`
      if ((warm.length === 0 && peerA.ownerOf(u) === a.url) || (warm.length === 1 && peerA.ownerOf(u) === b.url)) warm.push(u)
    }
    await fetchAll(peerA, warm)
    await fetchAll(peerB, warm)
    await origin.call('reset')
    const before = [peerA.stats(), peerB.stats()] as const
    const r = await burst([peerA, peerB], url)
    const originRequests = await origin.call<number>('count')
    const after = [peerA.stats(), peerB.stats()] as const
    const owner = peerA.ownerOf(url) === a.url ? 'A' : 'B'
    return {
      ...result(spec, r, originRequests, {
        wallMs: r.elapsedMs,
        owner,
        coalescedWaits: delta(after[0], before[0], 'coalescedWaits') + delta(after[1], before[1], 'coalescedWaits'),
        forwards: delta(after[0], before[0], 'forwards') + delta(after[1], before[1], 'forwards'),
        forwardErrors: delta(after[0], before[0], 'forwardErrors') + delta(after[1], before[1], 'forwardErrors')
      }),
      opsPerSec: 0
    }
  } finally {
    for (const f of cleanup.reverse()) {
      try { await f() } catch {}
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ring: ownerOf() throughput
// ---------------------------------------------------------------------------------------------

const RING_URLS = 65_536

async function ring (spec: CellSpec): Promise<CellResult> {
  const peers = Array.from({ length: spec.peers }, (_, i) => `http://10.${(i >> 8) & 255}.${i & 255}.1:3000`)
  const peer = new Peer({ self: peers[0] as string, peers })
  await peer.ready
  // Rebuilding the ring (what setPeers() costs with this many members).
  const b0 = performance.now()
  peer.setPeers(peers)
  const buildMs = performance.now() - b0
  const urls = Array.from({ length: RING_URLS }, (_, i) => `https://cdn.example.com/assets/${i}/app-${(i * 2654435761) >>> 0}.js?v=${i & 15}`)
  const counts = new Map<string, number>()
  const run = (ms: number): { calls: number, elapsedMs: number } => {
    let calls = 0
    const start = performance.now()
    const deadline = start + ms
    let k = 0
    while (true) {
      for (let j = 0; j < 1024; j++) {
        const owner = peer.ownerOf(urls[k] as string) as string
        k = (k + 1) & (RING_URLS - 1)
        if (j === 0) counts.set(owner, (counts.get(owner) ?? 0) + 1)
      }
      calls += 1024
      if (performance.now() >= deadline) break
    }
    return { calls, elapsedMs: performance.now() - start }
  }
  run(spec.warmupMs)
  const m = run(spec.durationMs)
  await peer.destroy()
  return {
    spec,
    requests: m.calls,
    elapsedMs: m.elapsedMs,
    opsPerSec: m.calls / (m.elapsedMs / 1000),
    p50Ms: null,
    p99Ms: null,
    maxRssBytes: maxRssBytes(),
    originRequests: null,
    errors: 0,
    extra: { nsPerCall: (m.elapsedMs * 1e6) / m.calls, ringBuildMs: buildMs, ownersSeen: counts.size }
  }
}

// ---------------------------------------------------------------------------------------------
// memory: RSS after filling a cache with 100 x 1 MiB
// ---------------------------------------------------------------------------------------------

const MEMORY_ENTRIES = 100

function gc (): void {
  const g = (globalThis as { gc?: () => void }).gc
  if (g !== undefined) { g(); g() }
}

async function memory (spec: CellSpec): Promise<CellResult> {
  const origin = await Helper.start('origin')
  const cleanup: Array<() => unknown> = [() => origin.stop()]
  try {
    interface Cache { dispatcher: Dispatcher, ready: Promise<void>, storedBytes: () => number, entries: () => number | null, destroy: () => Promise<void> }
    const make = (): Cache => {
      if (spec.scenario === 'memory') {
        const peer = new Peer({ self: 'http://127.0.0.1:1' })
        return {
          dispatcher: peer,
          ready: peer.ready,
          storedBytes: () => peer.stats().cacheBytes,
          entries: () => peer.stats().cacheEntries,
          destroy: () => peer.destroy()
        }
      }
      if (spec.scenario === 'memory-floor') {
        const map = new MapCache(new Agent())
        return {
          dispatcher: map,
          ready: Promise.resolve(),
          storedBytes: () => map.storedBytes,
          entries: () => map.entries,
          destroy: () => map.destroy()
        }
      }
      const agent = new Agent()
      const store = new cacheStores.MemoryCacheStore()
      return {
        dispatcher: agent.compose(interceptors.cache({ type: 'shared', store })),
        ready: Promise.resolve(),
        // The store's byte count is not in undici's typings but is there at run time.
        storedBytes: () => (store as unknown as { size: number }).size,
        entries: () => null,
        destroy: () => agent.destroy()
      }
    }
    // Warm the code paths with small bodies through a throwaway cache, so that the measured
    // one holds only the 100 entries.
    const warm = make()
    await warm.ready
    await fetchAll(warm.dispatcher, Array.from({ length: 20 }, (_, k) => `${origin.url}${originPath(1024, 0, `mem-warm-${k}`)}`))
    await warm.destroy()
    const cache = make()
    cleanup.push(() => cache.destroy())
    const dispatcher = cache.dispatcher
    await cache.ready
    gc()
    const rssBefore = process.memoryUsage().rss
    let sampledPeak = rssBefore
    const urls = Array.from({ length: MEMORY_ENTRIES }, (_, k) => `${origin.url}${originPath(spec.size, 0, `mem-${k}`)}`)
    await origin.call('reset')
    const t0 = performance.now()
    const latencies: number[] = []
    let errors = 0
    for (const u of urls) {
      const s = performance.now()
      const res = await request(u, { dispatcher })
      const bytes = await readBody(res.body)
      latencies.push(performance.now() - s)
      if (res.statusCode !== 200 || bytes !== spec.size) errors++
      sampledPeak = Math.max(sampledPeak, process.memoryUsage().rss)
    }
    const elapsedMs = performance.now() - t0
    const originRequests = await origin.call<number>('count')
    // A second pass must be all hits: the entries really are stored.
    await origin.call('reset')
    await fetchAll(dispatcher, urls)
    const rehitOrigin = await origin.call<number>('count')
    gc()
    const rssAfterGc = process.memoryUsage().rss
    sampledPeak = Math.max(sampledPeak, rssAfterGc)
    const stored = cache.storedBytes()
    const target = 1.3 * stored + 30 * MiB
    const peak = maxRssBytes()
    const sorted = sortedSample(latencies)
    return {
      spec,
      requests: latencies.length,
      elapsedMs,
      opsPerSec: latencies.length / (elapsedMs / 1000),
      p50Ms: percentile(sorted, 0.5),
      p99Ms: percentile(sorted, 0.99),
      maxRssBytes: peak,
      originRequests,
      errors,
      extra: {
        storedBytes: stored,
        storedFrom: spec.scenario === 'memory' ? 'peer.stats().cacheBytes' : spec.scenario === 'memory-floor' ? 'body bytes in the Map' : 'MemoryCacheStore size',
        entries: cache.entries() ?? '-',
        rssBeforeFill: rssBefore,
        rssAfterFillGc: rssAfterGc,
        sampledPeakRss: sampledPeak,
        targetBytes: target,
        peakOverTarget: peak / target,
        refetchOriginRequests: rehitOrigin,
        gcExposed: (globalThis as { gc?: unknown }).gc !== undefined ? 'yes' : 'no'
      }
    }
  } finally {
    for (const f of cleanup.reverse()) {
      try { await f() } catch {}
    }
  }
}

// ---------------------------------------------------------------------------------------------

export async function runCell (spec: CellSpec): Promise<CellResult> {
  switch (spec.scenario) {
    case 'coalesce':
    case 'coalesce-undici-cache':
      return await coalesce(spec)
    case 'ring':
      return await ring(spec)
    case 'memory':
    case 'memory-undici-cache':
    case 'memory-floor':
      return await memory(spec)
    case 'pairs':
      return await pairs(spec)
    default:
      return await throughput(spec)
  }
}

async function main (): Promise<void> {
  const raw = process.argv[2]
  if (raw === undefined) throw new Error('usage: node dist/bench/scenario.js \'{"scenario":"local-hit","size":1024,"concurrency":1}\'')
  const given = JSON.parse(raw) as Partial<CellSpec> & { scenario: string }
  if (!isScenario(given.scenario)) throw new Error(`unknown scenario ${given.scenario}`)
  const spec: CellSpec = {
    scenario: given.scenario,
    size: given.size ?? 1024,
    concurrency: given.concurrency ?? 1,
    peers: given.peers ?? 0,
    durationMs: given.durationMs ?? 1000,
    warmupMs: given.warmupMs ?? 300,
    warmupRequests: given.warmupRequests ?? 0,
    warmupMaxMs: given.warmupMaxMs ?? 0,
    round: given.round ?? 0,
    read: given.read ?? 'stream',
    secret: given.secret ?? ''
  }
  setReadMode(spec.read)
  const res = await runCell(spec)
  if (process.send !== undefined) {
    await new Promise<void>((resolve) => process.send?.({ result: res }, () => resolve()))
  } else {
    console.log(JSON.stringify(res, null, 2))
  }
  // Sockets kept alive by the dispatchers and servers must not keep this process around.
  process.exit(0)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
