import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { errors, request, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { clockedPeer } from './helpers/clocked-peer.js'

// One peer whose pool is itself: every URL is owned locally, so these tests exercise the
// shared cache alone. The clock is injected; nothing here sleeps.

const fx = clockedPeer()
const { get } = fx

describe('storage and freshness', () => {
  test('a fresh response is served from the cache with Age and Cache-Status', async () => {
    const a = await get('/fresh')
    fx.now += 10_000
    const b = await get('/fresh')
    assert.equal(fx.origin.count('/fresh'), 1)
    assert.equal(a.body, 'body of /fresh')
    assert.equal(b.body, 'body of /fresh')
    assert.match(String(a.headers['cache-status']), /^forwardcache; fwd=uri-miss; fwd-status=200; stored$/)
    assert.match(String(b.headers['cache-status']), /^forwardcache; hit; ttl=2[89]\d$/)
    assert.equal(b.headers.age, '10')
  })

  /**
   * Hits on `path`, each awaited and read with `read`, until an immediate set first has run
   * (at most 5000): how many hits the replays let through before the event loop turned.
   */
  async function hitsBeforeTurn (path: string, read: (body: Dispatcher.ResponseData['body']) => Promise<unknown>): Promise<number> {
    let turned = false
    setImmediate(() => { turned = true })
    let hits = 0
    while (!turned && hits < 5000) {
      const res = await request(fx.origin.url + path, { dispatcher: fx.peer })
      await read(res.body)
      hits++
    }
    assert.equal(turned, true, `the event loop did not turn during ${hits} hits`)
    return hits
  }

  test('a caller awaiting hit after hit in a loop still lets the event loop turn', async () => {
    await get('/loop')
    // Hits are replayed on microtasks: without a yield now and then, this loop would keep
    // the immediate (and every timer and socket of the process) waiting until it ended.
    const hits = await hitsBeforeTurn('/loop', async (body) => await body.text())
    assert.ok(hits > 0)
    assert.equal(fx.origin.count('/loop'), 1)
  })

  test('a hit counts once in the per-turn budget of replays, however its caller pauses and resumes it', async () => {
    // 128 KiB: more than a request() body buffers (64 KiB) before its reader attaches, so
    // every hit is paused after its chunk and resumed for its end.
    const body = Buffer.alloc(128 * 1024, 'p')
    fx.origin.route('/paused', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=100', 'content-length': body.length })
      res.end(body)
    })
    await get('/paused')
    const hits = await hitsBeforeTurn('/paused', async (res) => assert.equal((await res.arrayBuffer()).byteLength, body.length))
    // 256 starts a turn (src/cache/replay.ts); counting the resumes too let only half through.
    assert.ok(hits > 200 && hits <= 260, `${hits} hits before the event loop turned`)
    assert.equal(fx.origin.count('/paused'), 1)
  })

  test('a stale response is revalidated with its ETag and a 304 refreshes the stored entry', async () => {
    fx.origin.route('/etag', (req, res) => {
      if (req.headers['if-none-match'] === '"v1"') {
        res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=100', 'x-refreshed': 'yes' })
        return res.end()
      }
      res.writeHead(200, { etag: '"v1"', 'cache-control': 'max-age=100', 'content-length': 2 })
      res.end('v1')
    })
    await get('/etag')
    fx.now += 150_000
    const revalidated = await get('/etag')
    assert.equal(fx.origin.count('/etag'), 2)
    assert.equal(fx.origin.log.at(-1)?.headers['if-none-match'], '"v1"')
    assert.equal(revalidated.status, 200)
    assert.equal(revalidated.body, 'v1')
    assert.equal(revalidated.headers['x-refreshed'], 'yes')
    assert.match(String(revalidated.headers['cache-status']), /fwd=stale; fwd-status=304/)
    // The 304 made the entry fresh again: no origin request for the next 100 s.
    fx.now += 50_000
    const hit = await get('/etag')
    assert.equal(fx.origin.count('/etag'), 2)
    assert.equal(hit.body, 'v1')
    assert.equal(hit.headers['x-refreshed'], 'yes')
  })

  test('Last-Modified validation', async () => {
    const lm = new Date(fx.now - 3600_000).toUTCString()
    fx.origin.route('/lm', (req, res) => {
      if (req.headers['if-modified-since'] === lm) {
        res.writeHead(304, { 'cache-control': 'max-age=10' })
        return res.end()
      }
      res.writeHead(200, { 'last-modified': lm, 'cache-control': 'max-age=10', 'content-length': 5 })
      res.end('hello')
    })
    await get('/lm')
    fx.now += 20_000
    const r = await get('/lm')
    assert.equal(r.body, 'hello')
    assert.equal(fx.origin.count('/lm'), 2)
    assert.equal(fx.origin.log.at(-1)?.headers['if-modified-since'], lm)
  })

  test('heuristic freshness applies to a 200 with Last-Modified, not to a 302', async () => {
    const lm = new Date(Date.now() - 10 * 86400_000).toUTCString()
    fx.origin.route('/heuristic', (_req, res) => {
      res.writeHead(200, { 'last-modified': lm, 'content-length': 1 })
      res.end('h')
    })
    fx.origin.route('/redirect', (_req, res) => {
      res.writeHead(302, { 'last-modified': lm, location: '/heuristic', 'content-length': 0 })
      res.end()
    })
    await get('/heuristic')
    await get('/heuristic')
    assert.equal(fx.origin.count('/heuristic'), 1)
    await get('/redirect')
    await get('/redirect')
    assert.equal(fx.origin.count('/redirect'), 2)
  })

  test('several Vary variants of one URL are kept side by side', async () => {
    fx.origin.route('/vary', (req, res) => {
      const lang = String(req.headers['accept-language'] ?? 'none')
      res.writeHead(200, { vary: 'Accept-Language', 'cache-control': 'max-age=300', 'content-length': Buffer.byteLength(lang) })
      res.end(lang)
    })
    for (let i = 0; i < 3; i++) {
      assert.equal((await get('/vary', { 'accept-language': 'en' })).body, 'en')
      assert.equal((await get('/vary', { 'accept-language': 'fr' })).body, 'fr')
      assert.equal((await get('/vary')).body, 'none')
    }
    assert.equal(fx.origin.count('/vary'), 3)
  })

  test('HEAD is answered from a stored GET, with its length and no body', async () => {
    await get('/head')
    const head = await get('/head', {}, 'HEAD')
    assert.equal(fx.origin.count('/head'), 1)
    assert.equal(head.status, 200)
    assert.equal(head.body, '')
    assert.equal(head.headers['content-length'], String('body of /head'.length))
    assert.match(String(head.headers['cache-status']), /hit/)
  })

  for (const [name, cc] of [['no-store', 'no-store'], ['private', 'private, max-age=300'], ['No-Store in another casing', 'NO-STORE']] as const) {
    test(`a ${name} response is never served from the cache`, async () => {
      const path = `/cc-${name.replace(/\W/g, '')}`
      fx.origin.route(path, (_req, res) => {
        res.writeHead(200, { 'cache-control': cc, 'content-length': 1 })
        res.end('x')
      })
      await get(path)
      await get(path)
      assert.equal(fx.origin.count(path), 2)
    })
  }

  test('Set-Cookie without public is not stored; with public it is', async () => {
    fx.origin.route('/cookie', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=300', 'set-cookie': 'sid=1', 'content-length': 1 })
      res.end('c')
    })
    fx.origin.route('/cookie-public', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'public, max-age=300', 'set-cookie': 'theme=dark', 'content-length': 1 })
      res.end('c')
    })
    await get('/cookie')
    await get('/cookie')
    assert.equal(fx.origin.count('/cookie'), 2)
    await get('/cookie-public')
    await get('/cookie-public')
    assert.equal(fx.origin.count('/cookie-public'), 1)
  })

  test('qualified private="x-user" strips only that field and stores the rest', async () => {
    fx.origin.route('/qualified', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'private="x-user", max-age=300', 'x-user': 'alice', 'content-length': 1 })
      res.end('q')
    })
    const first = await get('/qualified')
    assert.equal(first.headers['x-user'], 'alice')
    const second = await get('/qualified')
    assert.equal(fx.origin.count('/qualified'), 1)
    assert.equal(second.headers['x-user'], undefined)
  })

  test('requests with Authorization bypass the cache', async () => {
    await get('/auth', { authorization: 'Bearer a' })
    await get('/auth', { authorization: 'Bearer b' })
    const anonymous = await get('/auth')
    assert.equal(fx.origin.count('/auth'), 3)
    assert.equal(anonymous.headers['cache-status'], 'forwardcache; fwd=uri-miss; fwd-status=200; stored')
  })

  test('a body over maxEntrySize streams through whole and is not stored', async () => {
    const small = new Peer({ self: 'http://127.0.0.1:1', maxEntrySize: 1024, now: () => fx.now })
    const big = Buffer.alloc(64 * 1024, 'b')
    fx.origin.route('/big', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=300' }) // chunked: no length to refuse early
      res.write(big.subarray(0, 32 * 1024))
      res.end(big.subarray(32 * 1024))
    })
    try {
      const a = await get('/big', {}, 'GET', small)
      const b = await get('/big', {}, 'GET', small)
      assert.equal(a.body.length, big.length)
      assert.equal(b.body.length, big.length)
      assert.equal(fx.origin.count('/big'), 2)
      assert.equal(small.stats().cacheEntries, 0)
    } finally {
      await small.close()
    }
  })

  test('a body cut short is an error for the caller and is never stored', async () => {
    fx.origin.route('/cut', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': 100 })
      res.write(Buffer.alloc(50, 'c'))
      setImmediate(() => res.socket?.destroy())
    })
    await assert.rejects(get('/cut'))
    await assert.rejects(get('/cut'))
    assert.equal(fx.origin.count('/cut'), 2)
  })
})

describe('request directives', () => {
  test('request no-cache validates; max-age=0 validates; max-stale serves stale', async () => {
    fx.origin.route('/directives', (req, res) => {
      if (req.headers['if-none-match'] === '"d"') {
        res.writeHead(304, { etag: '"d"', 'cache-control': 'max-age=60' })
        return res.end()
      }
      res.writeHead(200, { etag: '"d"', 'cache-control': 'max-age=60', 'content-length': 1 })
      res.end('d')
    })
    await get('/directives')
    await get('/directives', { 'cache-control': 'no-cache' })
    assert.equal(fx.origin.count('/directives'), 2)
    await get('/directives', { 'cache-control': 'max-age=0' })
    assert.equal(fx.origin.count('/directives'), 3)
    fx.now += 100_000
    const stale = await get('/directives', { 'cache-control': 'max-stale=60' })
    assert.equal(fx.origin.count('/directives'), 3)
    assert.equal(stale.body, 'd')
    assert.match(String(stale.headers['cache-status']), /hit; detail=stale/)
  })

  test('max-stale never overrides must-revalidate', async () => {
    fx.origin.route('/must', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=1, must-revalidate', 'content-length': 1 })
      res.end('m')
    })
    await get('/must')
    fx.now += 5000
    await get('/must', { 'cache-control': 'max-stale' })
    assert.equal(fx.origin.count('/must'), 2)
  })

  test('only-if-cached answers 504 on a miss and the stored response on a hit', async () => {
    const miss = await get('/oic', { 'cache-control': 'only-if-cached' })
    assert.equal(miss.status, 504)
    assert.equal(fx.origin.count('/oic'), 0)
    await get('/oic')
    const hit = await get('/oic', { 'cache-control': 'only-if-cached' })
    assert.equal(hit.status, 200)
    assert.equal(fx.origin.count('/oic'), 1)
  })

  test('a caller conditional request is answered 304 from the cache', async () => {
    fx.origin.route('/cond', (_req, res) => {
      res.writeHead(200, { etag: '"c1"', 'cache-control': 'max-age=300', 'content-length': 1 })
      res.end('c')
    })
    await get('/cond')
    const r = await get('/cond', { 'if-none-match': '"c1"' })
    assert.equal(r.status, 304)
    assert.equal(r.body, '')
    assert.equal(fx.origin.count('/cond'), 1)
    const other = await get('/cond', { 'if-none-match': '"zzz"' })
    assert.equal(other.status, 200)
    assert.equal(fx.origin.count('/cond'), 1)
  })
})

describe('other methods', () => {
  test('POST goes to the origin and invalidates the URL and its same-origin Location', async () => {
    fx.origin.route('/items', (req, res) => {
      if (req.method === 'POST') {
        req.resume()
        res.writeHead(201, { location: '/items/7', 'content-length': 0 })
        return res.end()
      }
      res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': 1 })
      res.end('i')
    })
    await get('/items')
    await get('/items/7')
    const post = await request(fx.origin.url + '/items', { method: 'POST', body: 'new', dispatcher: fx.peer })
    await post.body.dump()
    assert.equal(post.statusCode, 201)
    assert.equal(fx.origin.count('/items'), 2)
    await get('/items')
    await get('/items/7')
    assert.equal(fx.origin.count('/items'), 3)
    assert.equal(fx.origin.count('/items/7'), 2)
  })

  test('a failed POST invalidates nothing', async () => {
    fx.origin.route('/keep', (req, res) => {
      req.resume()
      const status = req.method === 'POST' ? 500 : 200
      res.writeHead(status, { 'cache-control': 'max-age=300', 'content-length': 1 })
      res.end('k')
    })
    await get('/keep')
    await (await request(fx.origin.url + '/keep', { method: 'POST', body: 'x', dispatcher: fx.peer })).body.dump()
    await get('/keep')
    assert.equal(fx.origin.count('/keep'), 2) // one GET, one POST
  })
})

describe('handler contracts and errors', () => {
  test('a compose()d interceptor (new handler contract) that pauses and resumes gets the whole body', async () => {
    const body = Buffer.alloc(256 * 1024, 'z')
    fx.origin.route('/large', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': body.length })
      res.end(body)
    })
    const run = (): Promise<{ status: number, bytes: number, pauses: number }> => new Promise((resolve, reject) => {
      let status = 0
      let bytes = 0
      let pauses = 0
      fx.peer.dispatch({ origin: fx.origin.url, path: '/large', method: 'GET' }, {
        onRequestStart () {},
        onResponseStart (_c, s) { status = s },
        onResponseData (controller, chunk) {
          bytes += chunk.length
          pauses++
          controller.pause()
          setImmediate(() => controller.resume())
        },
        onResponseEnd () { resolve({ status, bytes, pauses }) },
        onResponseError (_c, err) { reject(err) }
      })
    })
    const miss = await run()
    const hit = await run()
    assert.equal(miss.bytes, body.length)
    assert.equal(hit.bytes, body.length)
    assert.ok(hit.pauses >= 1)
    assert.equal(fx.origin.count('/large'), 1)
  })

  test('invalid input is refused with InvalidArgumentError before anything is sent', async () => {
    const before = fx.origin.count()
    await assert.rejects(request(fx.origin.url + '/x', { headers: { 'x-bad': 'a\r\nb' }, dispatcher: fx.peer }), errors.InvalidArgumentError)
    await assert.rejects(request(fx.origin.url + '/x', { method: 'GET', body: 'payload', dispatcher: fx.peer }), errors.InvalidArgumentError)
    await assert.rejects(fx.peer.request({ origin: 'ftp://127.0.0.1', path: '/x', method: 'GET' }), errors.InvalidArgumentError)
    await assert.rejects(fx.peer.request({ origin: 'http://user:pw@127.0.0.1', path: '/x', method: 'GET' }), errors.InvalidArgumentError)
    assert.equal(fx.origin.count(), before)
  })

  test('dispatch options are read the same from plain objects, class instances, null-prototype objects and URL origins', async () => {
    fx.origin.route('/shapes', (req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': 1 })
      res.end(new URL(req.url ?? '/', 'http://x').searchParams.get('v') ?? '-')
    })
    const body = async (opts: Dispatcher.DispatchOptions): Promise<string> => {
      const res = await fx.peer.request(opts as Dispatcher.RequestOptions)
      return await res.body.text()
    }
    // Plain object (what undici.request builds), with a query option.
    assert.equal(await body({ origin: fx.origin.url, path: '/shapes', method: 'GET', query: { v: 'a' } }), 'a')
    // A class instance whose fields are getters on its prototype: invisible to for-in.
    class Options {
      get origin (): string { return fx.origin.url }
      get path (): string { return '/shapes?v=b' }
      get method (): string { return 'GET' }
      get headers (): Record<string, string> { return { 'cache-control': 'no-cache' } }
    }
    assert.equal(await body(new Options() as unknown as Dispatcher.DispatchOptions), 'b')
    // A null-prototype object, and a URL as the origin.
    const bare = Object.assign(Object.create(null) as Record<string, unknown>, { origin: new URL(fx.origin.url), path: '/shapes?v=c', method: 'GET' })
    assert.equal(await body(bare as unknown as Dispatcher.DispatchOptions), 'c')
    const fetched = (): number => ['a', 'b', 'c'].reduce((n, v) => n + fx.origin.count(`/shapes?v=${v}`), 0)
    assert.equal(fetched(), 3)
    // The class instance's headers were seen: its no-cache made the second read revalidate.
    assert.equal(await body(new Options() as unknown as Dispatcher.DispatchOptions), 'b')
    assert.equal(fx.origin.count('/shapes?v=b'), 2)
    // An origin that is neither a string nor a URL is refused, not half-used.
    await assert.rejects(body({ origin: 42 as unknown as string, path: '/shapes', method: 'GET' }), /opts.origin must be a string or a URL/)
    assert.equal(fetched(), 4)
  })

  test('close() lets an in-flight request finish, then refuses new ones; destroy() fails them', async () => {
    const p = new Peer({ self: 'http://127.0.0.1:1' })
    let release: () => void = () => {}
    fx.origin.route('/slow', (_req, res) => {
      res.writeHead(200, { 'content-length': 4, 'cache-control': 'max-age=300' })
      res.write('sl')
      release = () => res.end('ow')
    })
    const inFlight = get('/slow', {}, 'GET', p)
    while (fx.origin.count('/slow') === 0) await new Promise((resolve) => setImmediate(resolve))
    const closing = p.close()
    await assert.rejects(get('/other', {}, 'GET', p), errors.ClientClosedError)
    release()
    assert.equal((await inFlight).body, 'slow')
    await closing
    assert.equal(p.inFlight, 0)

    const d = new Peer({ self: 'http://127.0.0.1:1' })
    fx.origin.route('/hang', (_req, res) => {
      res.writeHead(200, { 'content-length': 10 })
      res.write('partial')
    })
    const hanging = assert.rejects(get('/hang', {}, 'GET', d), errors.ClientDestroyedError)
    while (fx.origin.count('/hang') === 0) await new Promise((resolve) => setImmediate(resolve))
    await d.destroy()
    await hanging
    assert.equal(d.stats().cacheEntries, 0)
    await d.destroy() // idempotent
  })
})
