import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { after, before, describe, test } from 'node:test'
import { cacheStores, request } from 'undici'
import { RedisCacheStore } from 'undici-cache-redis'
import { Peer, type CacheStore } from '../src/index.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'

let origin: CountingOrigin
before(async () => {
  origin = await startOrigin()
  origin.route('/lang', (req, res) => {
    const lang = String(req.headers['accept-language'] ?? 'none')
    res.writeHead(200, { vary: 'Accept-Language', 'cache-control': 'max-age=300', 'content-length': Buffer.byteLength(lang) })
    res.end(lang)
  })
  origin.route('/items', (req, res) => {
    req.resume()
    if (req.method === 'POST') { res.writeHead(204); res.end(); return }
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': 5 })
    res.end('items')
  })
})
after(async () => { await origin.close() })

async function get (peer: Peer, path: string, headers: Record<string, string> = {}): Promise<{ body: string, status: string }> {
  const res = await request(origin.url + path, { dispatcher: peer, headers })
  return { body: await res.body.text(), status: String(res.headers['cache-status']) }
}

/** Polls until `check` holds: store writes finish after the response has ended. */
async function eventually (check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5000
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in 5 s')
    await new Promise((resolve) => setImmediate(resolve))
  }
}

/** The same behaviour for every store: a peer with an empty LRU finds what another stored. */
function behavesAsSecondTier (name: string, makeStore: () => Promise<{ store: CacheStore, close: () => Promise<void> } | undefined>): void {
  describe(`second tier: ${name}`, () => {
    test('an LRU miss is served from the store, variants and invalidation included', async (t) => {
      const made = await makeStore()
      if (made === undefined) return t.skip(`${name} is not available here`)
      const { store, close } = made
      const prefix = `/${name.replace(/\W/g, '')}-${Date.now()}`
      const first = new Peer({ self: 'http://127.0.0.1:1', store })
      const second = new Peer({ self: 'http://127.0.0.1:1', store })
      try {
        assert.equal((await get(first, `${prefix}/a`)).body, `body of ${prefix}/a`)
        await get(first, '/lang?' + prefix, { 'accept-language': 'en' })
        await get(first, '/lang?' + prefix, { 'accept-language': 'fr' })
        // The second peer's own LRU is empty: it must find all three in the store.
        await eventually(async () => (await store.get({ origin: origin.url, method: 'GET', path: `${prefix}/a`, headers: {} })) !== undefined)
        const a = await get(second, `${prefix}/a`)
        assert.equal(a.body, `body of ${prefix}/a`)
        assert.match(a.status, /hit; detail=second-tier/)
        // A hit, counted as one: not also as the LRU's miss.
        const host = new URL(origin.url).host
        assert.deepEqual([second.stats().localHits, second.stats().misses], [1, 0])
        assert.deepEqual([second.stats().perHost[host]?.hits, second.stats().perHost[host]?.misses], [1, 0])
        await eventually(async () => (await store.get({ origin: origin.url, method: 'GET', path: '/lang?' + prefix, headers: { 'accept-language': 'fr' } })) !== undefined)
        assert.equal((await get(second, '/lang?' + prefix, { 'accept-language': 'fr' })).body, 'fr')
        const en = await get(second, '/lang?' + prefix, { 'accept-language': 'en' })
        assert.equal(en.body, 'en', en.status)
        assert.match(en.status, /second-tier/)
        assert.equal(origin.count(`${prefix}/a`), 1)
        assert.equal(origin.count('/lang?' + prefix), 2)
        // A range that misses the LRU is answered from the whole response in the store.
        await get(first, `${prefix}/r`)
        await eventually(async () => (await store.get({ origin: origin.url, method: 'GET', path: `${prefix}/r`, headers: {} })) !== undefined)
        const ranged = await request(`${origin.url}${prefix}/r`, { dispatcher: second, headers: { range: 'bytes=0-3' } })
        assert.deepEqual([ranged.statusCode, await ranged.body.text()], [206, 'body'])
        assert.match(String(ranged.headers['cache-status']), /second-tier/)
        assert.equal(origin.count(`${prefix}/r`), 1)
        // A successful POST drops the URL from both tiers.
        await get(first, `/items?${prefix}`)
        await eventually(async () => (await store.get({ origin: origin.url, method: 'GET', path: `/items?${prefix}`, headers: {} })) !== undefined)
        await (await request(`${origin.url}/items?${prefix}`, { method: 'POST', body: 'x', dispatcher: first })).body.dump()
        await eventually(async () => (await store.get({ origin: origin.url, method: 'GET', path: `/items?${prefix}`, headers: {} })) === undefined)
        await get(second, `/items?${prefix}`)
        assert.equal(origin.count(`/items?${prefix}`), 3) // GET, POST, and the GET after it
      } finally {
        await Promise.all([first.close(), second.close()])
        await close()
      }
    })
  })
}

behavesAsSecondTier('MemoryCacheStore', async () => ({ store: new cacheStores.MemoryCacheStore(), close: async () => {} }))

let redis: ChildProcess | undefined
behavesAsSecondTier('Redis (undici-cache-redis)', async () => {
  // A real redis-server on loopback (Debian's package, installed by .ci/run); skipped only
  // when none can be started here.
  if (spawnSync('redis-server', ['--version']).status !== 0) return undefined
  const probe = net.createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const port = (probe.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  const deadline = Date.now() + 5000
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true) })
      s.on('error', () => resolve(false))
    })
    if (ok) break
    if (Date.now() > deadline) { redis.kill(); return undefined }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const store = new RedisCacheStore({ clientOpts: { host: '127.0.0.1', port, keyPrefix: 'fc-test:' }, tracking: false })
  return {
    store: store as unknown as CacheStore,
    close: async () => {
      await store.close()
      redis?.kill()
    }
  }
})
