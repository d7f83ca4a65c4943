import assert from 'node:assert/strict'
import { test } from 'node:test'
import { request } from 'undici'
import { Peer } from '../src/index.js'
import { clockedPeer } from './helpers/clocked-peer.js'

// Behaviours the common caches get wrong, each held by its own test (with an injected clock).
const fx = clockedPeer()
const { get } = fx

async function until (check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000
  while (!check()) {
    if (Date.now() > deadline) throw new Error('not reached in 5 s')
    await new Promise((resolve) => setImmediate(resolve))
  }
}

test('stale-while-revalidate: stale hits are served at once and exactly one background revalidation refreshes the entry', async () => {
  let version = 1
  fx.origin.route('/swr', (req, res) => {
    if (req.headers['if-none-match'] === `"v${version}"`) {
      res.writeHead(304, { etag: `"v${version}"`, 'cache-control': 'max-age=10, stale-while-revalidate=60', 'x-version': String(version) })
      return res.end()
    }
    res.writeHead(200, { etag: `"v${version}"`, 'cache-control': 'max-age=10, stale-while-revalidate=60', 'content-length': 2, 'x-version': String(version) })
    res.end(`v${version}`)
  })
  await get('/swr')
  fx.now += 20_000
  version = 1
  const stale = await Promise.all(Array.from({ length: 25 }, () => get('/swr')))
  for (const r of stale) {
    assert.equal(r.body, 'v1')
    assert.match(String(r.headers['cache-status']), /stale-while-revalidate/)
  }
  await until(() => fx.origin.count('/swr') === 2 && fx.peer.stats().flights === 0)
  assert.equal(fx.origin.count('/swr'), 2, 'one fill and exactly one background revalidation')
  assert.equal(fx.origin.log.filter((l) => l.url === '/swr').at(-1)?.headers['if-none-match'], '"v1"')
  // The 304 refreshed it: fresh again, no origin request.
  const fresh = await get('/swr')
  assert.match(String(fresh.headers['cache-status']), /^forwardcache; hit; ttl=/)
  assert.equal(fx.origin.count('/swr'), 2)
})

test('a 304 on the background path refreshes headers too, and close() waits for background work', async () => {
  const p = new Peer({ self: 'http://127.0.0.1:1', now: () => fx.now })
  let release: () => void = () => {}
  fx.origin.route('/swr-slow', (req, res) => {
    if (req.headers['if-none-match'] !== undefined) {
      release = () => { res.writeHead(304, { etag: '"s"', 'cache-control': 'max-age=100, stale-while-revalidate=60', 'x-refreshed': '1' }); res.end() }
      return
    }
    res.writeHead(200, { etag: '"s"', 'cache-control': 'max-age=1, stale-while-revalidate=60', 'content-length': 1 })
    res.end('s')
  })
  await (await request(fx.origin.url + '/swr-slow', { dispatcher: p })).body.dump()
  fx.now += 5000
  await (await request(fx.origin.url + '/swr-slow', { dispatcher: p })).body.dump()
  await until(() => fx.origin.count('/swr-slow') === 2)
  assert.equal(p.inFlight, 1, 'the background revalidation is in flight')
  let closed = false
  const closing = p.close().then(() => { closed = true })
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(closed, false)
  release()
  await closing
  assert.equal(p.inFlight, 0)
})

test('a HEAD response updates the stored GET it matches, and drops it when the representation changed', async () => {
  let etag = '"h1"'
  fx.origin.route('/head-update', (req, res) => {
    res.writeHead(200, { etag, 'cache-control': 'max-age=10', 'content-length': 4, 'x-meta': req.method === 'HEAD' ? 'from-head' : 'from-get' })
    res.end(req.method === 'HEAD' ? undefined : 'body')
  })
  await get('/head-update')
  fx.now += 20_000
  // Stale: the HEAD goes to the origin (unconditional: HEAD 200 is the validation).
  const head = await get('/head-update', {}, 'HEAD')
  assert.equal(head.headers['x-meta'], 'from-head')
  const afterHead = await get('/head-update')
  assert.equal(afterHead.body, 'body')
  assert.equal(afterHead.headers['x-meta'], 'from-head', 'the stored GET took the HEAD response headers')
  assert.match(String(afterHead.headers['cache-status']), /^forwardcache; hit/)
  const countBefore = fx.origin.count('/head-update')
  fx.now += 20_000
  etag = '"h2"'
  await get('/head-update', {}, 'HEAD')
  await get('/head-update')
  assert.equal(fx.origin.count('/head-update'), countBefore + 2, 'a changed ETag dropped the stored GET')
})
