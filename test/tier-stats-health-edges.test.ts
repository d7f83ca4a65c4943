import assert from 'node:assert/strict'
import { test } from 'node:test'
import { cacheStores, request, type Dispatcher } from 'undici'
import { Peer, type CacheStore } from '../src/index.js'
import { startOrigin } from './helpers/origin.js'
import { deferred, waitFor } from './helpers/peers.js'

// The second tier, the counters and the Prometheus text at their edges: a lookup that races
// an invalidation, a malformed entry in a shared store, counters read while a lookup is out.

async function get (dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}, method: Dispatcher.HttpMethod = 'GET') {
  const res = await request(url, { dispatcher, headers, method, ...(method === 'POST' ? { body: 'x' } : {}) })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

/** A MemoryCacheStore whose lookups read at once but answer only when `hold` is released. */
function heldStore (): { store: CacheStore, inner: InstanceType<typeof cacheStores.MemoryCacheStore>, hold: () => () => void, lookups: () => number } {
  const inner = new cacheStores.MemoryCacheStore()
  let gate: Promise<void> | undefined
  let lookups = 0
  const store = {
    async get (key: Parameters<CacheStore['get']>[0]) {
      lookups++
      const found = inner.get(key)
      if (gate !== undefined) await gate
      return found
    },
    createWriteStream: (key: Parameters<CacheStore['createWriteStream']>[0], value: Parameters<CacheStore['createWriteStream']>[1]) => inner.createWriteStream(key, value),
    delete: (key: Parameters<CacheStore['delete']>[0]) => inner.delete(key)
  } as unknown as CacheStore
  return {
    store,
    inner,
    lookups: () => lookups,
    hold: () => {
      const d = deferred()
      gate = d.promise
      return () => { gate = undefined; d.resolve() }
    }
  }
}

test('an invalidation during a second-tier lookup: the entry the store read before it is not stored in the LRU', async () => {
  let version = 1
  const origin = await startOrigin((req, res) => {
    req.resume()
    if (req.method === 'POST') { version++; res.writeHead(204); res.end(); return }
    const body = `v${version}`
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': body.length })
    res.end(body)
  })
  const { store, inner, hold, lookups } = heldStore()
  const first = new Peer({ self: 'http://127.0.0.1:1', store })
  const second = new Peer({ self: 'http://127.0.0.1:1', store })
  try {
    const url = `${origin.url}/race`
    assert.equal((await get(first, url)).body, 'v1')
    await waitFor(() => inner.get({ origin: origin.url, method: 'GET', path: '/race', headers: {} }) !== undefined, 5000, 'the write-through')
    const before = lookups()
    const release = hold()
    const pending = get(second, url) // an LRU miss: the store reads v1, and answers late
    await waitFor(() => lookups() === before + 1, 5000, 'the lookup')
    assert.equal((await get(second, url, {}, 'POST')).status, 204) // drops /race from both tiers
    release()
    await pending
    // The POST has completed: what the origin says now is v2.
    const after = await get(second, url)
    assert.equal(after.body, 'v2', String(after.headers['cache-status']))
    assert.equal(origin.count('/race'), 3) // GET, POST, GET
  } finally {
    await Promise.all([first.close(), second.close()])
    await origin.close()
  }
})

test('a malformed entry in the store is a miss: no crash, no hang, no response without a status', async () => {
  const origin = await startOrigin()
  const now = Date.now()
  const entries: Array<Record<string, unknown>> = [
    // A header value that is not a string (a store shared with another writer, or JSON numbers)
    { statusCode: 200, statusMessage: 'OK', headers: { 'cache-control': 'max-age=300', 'x-count': 5 }, body: [Buffer.from('stored')], cachedAt: now, staleAt: now + 300e3, deleteAt: now + 600e3 },
    // No status code at all
    { statusMessage: 'OK', headers: { 'cache-control': 'max-age=300' }, body: [Buffer.from('stored')], cachedAt: now, staleAt: now + 300e3, deleteAt: now + 600e3 },
    // No cachedAt: freshness cannot be computed
    { statusCode: 200, statusMessage: 'OK', headers: { 'cache-control': 'max-age=300' }, body: [Buffer.from('stored')], staleAt: now + 300e3, deleteAt: now + 600e3 }
  ]
  let next = 0
  const store = {
    async get () { return entries[next] },
    createWriteStream () { return undefined },
    delete () {}
  } as unknown as CacheStore
  const rejections: unknown[] = []
  const onRejection = (reason: unknown): void => { rejections.push(reason) }
  process.on('unhandledRejection', onRejection)
  const warnings: string[] = []
  const onWarning = (w: Error): void => { warnings.push(w.message) }
  process.on('warning', onWarning)
  try {
    for (next = 0; next < entries.length; next++) {
      const peer = new Peer({ self: 'http://127.0.0.1:1', store })
      try {
        const path = `/malformed-${next}`
        const res = await Promise.race([
          get(peer, `${origin.url}${path}`),
          new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`entry ${next}: no answer in 3 s`)), 3000).unref())
        ])
        assert.equal(res.status, 200, `entry ${next}`)
        assert.equal(res.body, `body of ${path}`, `entry ${next}`)
        assert.equal(origin.count(path), 1, `entry ${next}`)
        const s = peer.stats()
        assert.ok(Number.isInteger(s.cacheBytes) && s.cacheBytes > 0, `entry ${next}: cacheBytes ${s.cacheBytes}`)
      } finally {
        // destroy(): on failure the request may still hang, and close() would wait for it.
        await peer.destroy()
      }
    }
    await new Promise((resolve) => setImmediate(resolve))
    assert.deepEqual(rejections, [])
  } finally {
    process.off('unhandledRejection', onRejection)
    process.off('warning', onWarning)
    await origin.close()
  }
})

test('a second-tier hit never makes the miss counters go down between two reads (Prometheus takes a decrease for a reset)', async () => {
  const origin = await startOrigin()
  const { store, inner, hold, lookups } = heldStore()
  const first = new Peer({ self: 'http://127.0.0.1:1', store })
  const second = new Peer({ self: 'http://127.0.0.1:1', store })
  const host = new URL(origin.url).host
  const missLine = (): number => Number(/^forwardcache_requests_total\{result="miss"\} (\d+)$/m.exec(second.metrics())?.[1])
  try {
    const url = `${origin.url}/scraped`
    await get(first, url)
    await waitFor(() => inner.get({ origin: origin.url, method: 'GET', path: '/scraped', headers: {} }) !== undefined, 5000, 'the write-through')
    const before = lookups()
    const release = hold()
    const pending = get(second, url)
    await waitFor(() => lookups() === before + 1, 5000, 'the lookup')
    const during = { total: missLine(), host: second.stats().perHost[host]?.misses ?? 0 }
    release()
    assert.match(String((await pending).headers['cache-status']), /second-tier/)
    const afterwards = { total: missLine(), host: second.stats().perHost[host]?.misses ?? 0 }
    assert.ok(afterwards.total >= during.total, `miss counter went from ${during.total} to ${afterwards.total}`)
    assert.ok(afterwards.host >= during.host, `host miss counter went from ${during.host} to ${afterwards.host}`)
    assert.deepEqual([second.stats().localHits, second.stats().misses, afterwards.host], [1, 0, 0])
    assert.equal(origin.count('/scraped'), 1)
  } finally {
    await Promise.all([first.close(), second.close()])
    await origin.close()
  }
})

test('a refetch after a mismatched 304 answered from the second tier counts no negative misses', async () => {
  let clock = Date.parse('2030-01-01T00:00:00Z')
  const now = (): number => clock
  let etag = '"1"'
  const origin = await startOrigin((req, res) => {
    const headers = { 'cache-control': 'max-age=10', etag }
    // An origin whose backends are out of step: a 304 to any validation, with its own ETag
    // (RFC 9111 section 4.3.4: it updates nothing; the cache asks again, unconditionally).
    if (req.headers['if-none-match'] !== undefined) { res.writeHead(304, headers); res.end(); return }
    const body = `body ${etag}`
    res.writeHead(200, { ...headers, 'content-length': body.length })
    res.end(body)
  }, now)
  const store = new cacheStores.MemoryCacheStore()
  const first = new Peer({ self: 'http://127.0.0.1:1', store, now })
  const second = new Peer({ self: 'http://127.0.0.1:1', store, now })
  const key = { origin: origin.url, method: 'GET', path: '/mismatch', headers: {} }
  try {
    const url = `${origin.url}/mismatch`
    await get(second, url)
    await waitFor(() => store.get(key) !== undefined, 5000, 'the write-through')
    assert.match(String((await get(first, url)).headers['cache-status']), /second-tier/)
    clock += 20_000
    etag = '"2"'
    await get(second, url, { 'cache-control': 'no-cache' }) // the store now holds "2", fresh
    await waitFor(() => (store.get(key) as { etag?: string } | undefined)?.etag === '"2"', 5000, 'the second write-through')
    const res = await get(first, url) // stale "1": validated, 304 "2", asked again, found in the store
    assert.equal(res.body, 'body "2"')
    const s = first.stats()
    const row = s.perHost[new URL(origin.url).host]
    assert.ok(s.misses >= 0 && (row?.misses ?? 0) >= 0, `misses ${s.misses}, host misses ${row?.misses}`)
    assert.deepEqual([s.requests, s.localHits, s.revalidations, s.misses], [2, 2, 1, 0])
  } finally {
    await Promise.all([first.close(), second.close()])
    await origin.close()
  }
})
