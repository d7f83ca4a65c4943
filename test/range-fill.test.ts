import assert from 'node:assert/strict'
import type http from 'node:http'
import { test } from 'node:test'
import { Agent, request } from 'undici'
import { Peer } from '../src/index.js'
import { fillsWholeForRange, parseByteRange, resolveByteRange } from '../src/cache/byte-range.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { deferred, ownedBy, startLocalPeers, waitFor } from './helpers/peers.js'

// A Range request that misses is filled whole: the origin is asked for the whole response,
// the caller gets its range from it as it streams in, and the stored response answers every
// later range (src/cache/local-cache.ts, LocalCache.#fillsWhole).

const BODY = '0123456789abcdefghij'

/** A route answering BODY with a strong ETag and a Last-Modified date, fresh for 300 s. */
function bodyRoute (extra: http.OutgoingHttpHeaders = {}): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  return (req, res) => {
    res.writeHead(200, {
      'cache-control': 'max-age=300',
      etag: '"v1"',
      'last-modified': 'Tue, 01 Jan 2030 00:00:00 GMT',
      'content-length': BODY.length,
      ...extra
    })
    res.end(req.method === 'HEAD' ? undefined : BODY)
  }
}

async function withOrigin (fn: (origin: CountingOrigin, peer: Peer) => Promise<void>, options: { maxEntrySize?: number, fillRanges?: boolean } = {}): Promise<void> {
  const origin = await startOrigin(bodyRoute())
  const peer = new Peer({ self: 'http://127.0.0.1:1', ...options })
  try {
    await peer.ready
    await fn(origin, peer)
  } finally {
    await peer.destroy()
    await origin.close()
  }
}

/** An origin answering every path with `size` bytes, fresh for 300 s. */
async function bigOrigin (size: number): Promise<CountingOrigin> {
  const body = Buffer.alloc(size, 'y')
  return await startOrigin((_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': size })
    res.end(body)
  })
}

async function get (url: string, peer: Peer, headers: Record<string, string> = {}): Promise<{ status: number, body: string, headers: Record<string, string | string[] | undefined> }> {
  const res = await request(url, { dispatcher: peer, headers })
  return { status: res.statusCode, body: await res.body.text(), headers: res.headers }
}

test('byte ranges: parsed as RFC 9110 section 14.1.2 has them, one range of bytes only', () => {
  assert.deepEqual(parseByteRange('bytes=0-9'), { first: 0, last: 9 })
  assert.deepEqual(parseByteRange('BYTES= 5 - '), { first: 5, last: undefined })
  assert.deepEqual(parseByteRange('bytes=-4'), { suffix: 4 })
  for (const other of ['bytes=0-1,3-4', 'items=0-9', 'bytes=9-1', 'bytes=-', 'bytes=a-b', 'bytes', 'bytes=1']) {
    assert.equal(parseByteRange(other), undefined, other)
  }
  assert.deepEqual(resolveByteRange({ first: 5, last: undefined }, 20), { start: 5, end: 19 })
  assert.deepEqual(resolveByteRange({ first: 5, last: 100 }, 20), { start: 5, end: 19 })
  assert.deepEqual(resolveByteRange({ suffix: 4 }, 20), { start: 16, end: 19 })
  assert.deepEqual(resolveByteRange({ suffix: 40 }, 20), { start: 0, end: 19 })
  assert.equal(resolveByteRange({ first: 20, last: undefined }, 20), 'unsatisfiable')
  assert.equal(resolveByteRange({ suffix: 0 }, 20), 'unsatisfiable')
  // Filled whole only when the range starts within what may be stored, and is not a suffix.
  assert.equal(fillsWholeForRange('bytes=0-9', 100), true)
  assert.equal(fillsWholeForRange('bytes=99-', 100), true)
  assert.equal(fillsWholeForRange('bytes=100-', 100), false)
  assert.equal(fillsWholeForRange('bytes=-5', 100), false)
  assert.equal(fillsWholeForRange('bytes=0-1,3-4', 100), false)
})

test('a range that misses is fetched whole, answered 206 from it, and every later range and the whole response are hits', async () => {
  await withOrigin(async (origin, peer) => {
    const url = `${origin.url}/media`
    const first = await get(url, peer, { range: 'bytes=2-5' })
    assert.equal(first.status, 206)
    assert.equal(first.body, '2345')
    assert.equal(first.headers['content-range'], `bytes 2-5/${BODY.length}`)
    assert.equal(first.headers['content-length'], '4')
    assert.equal(first.headers.etag, '"v1"')
    assert.match(String(first.headers['cache-status']), /fwd=uri-miss; fwd-status=200; stored/)
    assert.equal(origin.count('/media'), 1)
    const sent = origin.log[0]?.headers
    assert.equal(sent?.range, undefined, 'the origin is asked for the whole response')
    for (const [range, body, contentRange] of [['bytes=10-', 'abcdefghij', 'bytes 10-19/20'], ['bytes=-3', 'hij', 'bytes 17-19/20'], ['bytes=0-0', '0', 'bytes 0-0/20']] as const) {
      const r = await get(url, peer, { range })
      assert.deepEqual([r.status, r.body, r.headers['content-range']], [206, body, contentRange], range)
      assert.match(String(r.headers['cache-status']), /^forwardcache; hit/)
    }
    const whole = await get(url, peer)
    assert.deepEqual([whole.status, whole.body], [200, BODY])
    assert.equal(origin.count('/media'), 1, 'one origin request for all of them')
  })
})

test('a range that misses on a non-owner is filled whole by the owner, and the other peer\'s ranges are hits', async () => {
  const origin = await startOrigin(bodyRoute())
  const cluster = await startLocalPeers(2)
  const [a, b] = cluster.peers as [Peer, Peer]
  try {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/m${i}`) as [string]
    const first = await get(url, a, { range: 'bytes=0-3' })
    assert.deepEqual([first.status, first.body, first.headers['content-range']], [206, '0123', 'bytes 0-3/20'])
    const second = await get(url, b, { range: 'bytes=4-7' })
    assert.deepEqual([second.status, second.body], [206, '4567'])
    const third = await get(url, a, { range: 'bytes=16-' })
    assert.deepEqual([third.status, third.body], [206, 'ghij'])
    assert.equal(origin.count(), 1)
    assert.equal(origin.log[0]?.headers.range, undefined)
  } finally {
    await cluster.close()
    await origin.close()
  }
})

test('If-Range on a miss is judged against the whole response: a strong tag or the exact date gives the range, anything else the whole 200', async () => {
  await withOrigin(async (origin, peer) => {
    const cases: Array<[string, number, string]> = [
      ['"v1"', 206, '2345'],
      ['Tue, 01 Jan 2030 00:00:00 GMT', 206, '2345'],
      ['"v0"', 200, BODY],
      ['W/"v1"', 200, BODY],
      ['Wed, 02 Jan 2030 00:00:00 GMT', 200, BODY]
    ]
    for (const [i, [ifRange, status, body]] of cases.entries()) {
      const url = `${origin.url}/if-range-${i}`
      const r = await get(url, peer, { range: 'bytes=2-5', 'if-range': ifRange })
      assert.deepEqual([r.status, r.body], [status, body], ifRange)
      const sent = origin.log.at(-1)?.headers
      assert.equal(sent?.['if-range'], undefined, 'If-Range qualifies the range, which the origin is not asked for')
      assert.equal(sent?.range, undefined)
      // Stored either way: the same range and If-Range again are answered alike from the store.
      const again = await get(url, peer, { range: 'bytes=2-5', 'if-range': ifRange })
      assert.deepEqual([again.status, again.body], [status, body], `${ifRange}, from the store`)
      assert.equal(origin.count(`/if-range-${i}`), 1)
    }
  })
})

test('an unsatisfiable range on a miss gets a 416 with the length, and the whole response is stored', async () => {
  await withOrigin(async (origin, peer) => {
    const url = `${origin.url}/short`
    const r = await get(url, peer, { range: 'bytes=50-' })
    assert.equal(r.status, 416)
    assert.equal(r.body, '')
    assert.equal(r.headers['content-range'], `bytes */${BODY.length}`)
    assert.equal(r.headers.etag, undefined, 'none of the 200\'s fields')
    assert.equal(r.headers['cache-control'], undefined)
    const whole = await get(url, peer)
    assert.deepEqual([whole.status, whole.body], [200, BODY])
    assert.match(String(whole.headers['cache-status']), /^forwardcache; hit/)
    assert.equal(origin.count('/short'), 1)
  })
})

test('a range of a response that will not be stored is served, and the rest of the body is not read', async () => {
  // 64 MiB written with backpressure: what the origin manages to write before the Peer drops
  // the connection says whether the Peer went on reading after the caller's range.
  const size = 64 * 1024 * 1024
  const chunk = Buffer.alloc(64 * 1024, 'x')
  const first = Buffer.from(chunk)
  first.write('HEAD', 0)
  const written: number[] = []
  const origin = await startOrigin((req, res) => {
    // Too large for maxEntrySize below, or no-store: either way nothing is kept.
    res.writeHead(200, { 'cache-control': req.url === '/too-large' ? 'max-age=300' : 'no-store', 'content-length': size })
    let sent = 0
    let closed = false
    res.on('close', () => { closed = true; written.push(sent) })
    const pump = (): void => {
      while (!closed && sent < size) {
        const ok = res.write(sent === 0 ? first : chunk)
        sent += chunk.length
        if (!ok) { res.once('drain', pump); return }
      }
      if (!closed) res.end()
    }
    pump()
  })
  const peer = new Peer({ self: 'http://127.0.0.1:1', maxEntrySize: 1024 * 1024 })
  try {
    for (const path of ['/too-large', '/no-store']) {
      const r = await get(`${origin.url}${path}`, peer, { range: 'bytes=0-3' })
      assert.deepEqual([r.status, r.body, r.headers['content-range']], [206, 'HEAD', `bytes 0-3/${size}`], path)
    }
    assert.equal(origin.log.every((l) => l.headers.range === undefined), true)
    await waitFor(() => written.length === 2, 5000, 'both origin responses closed')
    for (const n of written) assert.ok(n < size / 2, `the origin wrote ${n} of ${size} bytes before the Peer let go`)
    assert.equal(peer.stats().cacheEntries, 0)
    // Not stored: the same URL goes to the origin again.
    const again = await get(`${origin.url}/no-store`, peer, { range: 'bytes=1-2' })
    assert.deepEqual([again.status, again.body], [206, 'EA'])
    assert.equal(origin.count(), 3)
    assert.equal(peer.inFlight, 0)
  } finally {
    await peer.destroy()
    await origin.close()
  }
})

test('a range starting past maxEntrySize, a suffix range and several ranges go to the origin as they are, and nothing is stored', async () => {
  await withOrigin(async (origin, peer) => {
    origin.route('/ranged', (req, res) => {
      // An origin that does ranges itself, for the ones passed on.
      res.writeHead(206, { 'cache-control': 'max-age=300', 'content-range': 'bytes 0-0/20', 'content-length': 1 })
      res.end(req.headers.range === undefined ? '?' : '0')
    })
    for (const range of ['bytes=16-', 'bytes=-4', 'bytes=0-1,4-5']) {
      const r = await get(`${origin.url}/ranged`, peer, { range })
      assert.deepEqual([r.status, r.body], [206, '0'], range)
      assert.equal(origin.log.at(-1)?.headers.range, range, `${range} reaches the origin`)
    }
    assert.equal(origin.count('/ranged'), 3)
    assert.equal(peer.stats().cacheEntries, 0)
  }, { maxEntrySize: 16 })
})

test('a range on a body without Content-Length gets the whole 200, stored, and the next range is a 206 hit', async () => {
  await withOrigin(async (origin, peer) => {
    origin.route('/chunked', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=300' })
      res.write(BODY.slice(0, 10))
      res.end(BODY.slice(10))
    })
    const url = `${origin.url}/chunked`
    const first = await get(url, peer, { range: 'bytes=0-3' })
    assert.deepEqual([first.status, first.body], [200, BODY], 'RFC 9110 section 14.2: a Range may be ignored')
    const second = await get(url, peer, { range: 'bytes=0-3' })
    assert.deepEqual([second.status, second.body, second.headers['content-range']], [206, '0123', 'bytes 0-3/20'])
    assert.equal(origin.count('/chunked'), 1)
  })
})

test('ranges and a plain GET arriving together for one cold URL make one origin request', async () => {
  await withOrigin(async (origin, peer) => {
    origin.route('/slow', (req, res) => { setTimeout(() => bodyRoute()(req, res), 50) })
    const url = `${origin.url}/slow`
    const answers = await Promise.all([
      get(url, peer, { range: 'bytes=0-1' }),
      get(url, peer, { range: 'bytes=2-3' }),
      get(url, peer, { range: 'bytes=18-' }),
      get(url, peer),
      get(url, peer, { range: 'bytes=4-5' })
    ])
    assert.deepEqual(answers.map((a) => [a.status, a.body]), [[206, '01'], [206, '23'], [206, 'ij'], [200, BODY], [206, '45']])
    assert.equal(origin.count('/slow'), 1, 'the first range\'s fill answered the others from the store')
  })
})

test('the caller gets its range as soon as its last byte arrives; the rest is read for the store as work close() waits for', async () => {
  const gate = deferred()
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': BODY.length })
    res.write(BODY.slice(0, 10))
    void gate.promise.then(() => res.end(BODY.slice(10)))
  })
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    const url = `${origin.url}/held`
    const r = await get(url, peer, { range: 'bytes=0-4' })
    assert.deepEqual([r.status, r.body], [206, '01234'], 'answered while the origin still holds the rest')
    assert.equal(peer.inFlight, 1, 'the rest of the fill is still tracked')
    let closed = false
    const closing = peer.close().then(() => { closed = true })
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(closed, false, 'close() waits for the rest of the body')
    gate.resolve()
    await closing
    assert.equal(peer.inFlight, 0)
  } finally {
    gate.resolve()
    await peer.destroy()
    await origin.close()
  }
})

test('the rest of a fill is stored once it arrives, and destroy() aborts it while it does not', async () => {
  const gate = deferred()
  let aborted = 0
  const origin = await startOrigin((req, res) => {
    res.on('close', () => { if (!res.writableFinished) aborted++ })
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': BODY.length })
    res.write(BODY.slice(0, 10))
    if (req.url === '/kept') void gate.promise.then(() => res.end(BODY.slice(10)))
  })
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    const kept = await get(`${origin.url}/kept`, peer, { range: 'bytes=0-1' })
    assert.deepEqual([kept.status, kept.body], [206, '01'])
    gate.resolve()
    await waitFor(() => peer.stats().cacheEntries === 1, 5000, 'the whole response stored')
    const hit = await get(`${origin.url}/kept`, peer, { range: 'bytes=10-11' })
    assert.deepEqual([hit.status, hit.body], [206, 'ab'])
    assert.match(String(hit.headers['cache-status']), /^forwardcache; hit/)

    const never = await get(`${origin.url}/never`, peer, { range: 'bytes=0-1' })
    assert.deepEqual([never.status, never.body], [206, '01'])
    assert.equal(peer.inFlight, 1)
    await peer.destroy()
    assert.equal(peer.inFlight, 0)
    await waitFor(() => aborted === 1, 5000, 'the origin saw the held response aborted')
    assert.equal(origin.count(), 2)
  } finally {
    gate.resolve()
    await peer.destroy()
    await origin.close()
  }
})

test('a caller that paused with its range\'s last byte does not hold the rest of the fill', async () => {
  const size = 4 * 1024 * 1024
  const origin = await bigOrigin(size)
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    // A reader that pauses after every chunk and resumes on the next turn, as a stream()
    // into a slow writable does: paused when its last byte comes, then ended.
    const range = 256 * 1024
    const got = await new Promise<{ status: number, bytes: number }>((resolve, reject) => {
      let status = 0
      let bytes = 0
      peer.dispatch({ origin: origin.url, path: '/big', method: 'GET', headers: { range: `bytes=0-${range - 1}` } }, {
        onResponseStart (_c: unknown, s: number) { status = s },
        onResponseData (c: { pause: () => void, resume: () => void }, chunk: Buffer) {
          bytes += chunk.length
          c.pause()
          setImmediate(() => c.resume())
        },
        onResponseEnd () { resolve({ status, bytes }) },
        onResponseError (_c: unknown, err: Error) { reject(err) }
      } as unknown as Parameters<Peer['dispatch']>[1])
    })
    assert.deepEqual(got, { status: 206, bytes: range })
    await waitFor(() => peer.stats().cacheEntries === 1, 5000, 'the whole response stored')
    assert.equal(peer.inFlight, 0)
    assert.equal(origin.count(), 1)
  } finally {
    await peer.destroy()
    await origin.close()
  }
})

/** An origin sending `size` bytes; for its first request, the rest after the first KiB only once `gate` resolves. */
async function heldFirstOrigin (size: number, gate: Promise<void>): Promise<CountingOrigin> {
  const body = Buffer.alloc(size, 'm')
  let n = 0
  return await startOrigin((req, res) => {
    if (req.method === 'POST') { res.writeHead(204); res.end(); return }
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': size })
    if (n++ > 0) { res.end(body); return }
    res.write(body.subarray(0, 1024))
    void gate.then(() => res.end(body.subarray(1024)))
  })
}

test('requests for a URL whose range fill reads on wait for it a quarter of peerTimeout at most', async () => {
  const gate = deferred()
  const origin = await heldFirstOrigin(64 * 1024, gate.promise)
  const peer = new Peer({ self: 'http://127.0.0.1:1', peerTimeout: 400 })
  try {
    const url = `${origin.url}/held`
    const first = await get(url, peer, { range: 'bytes=0-1' })
    assert.equal(first.status, 206)
    assert.equal(peer.inFlight, 1, 'the fill reads on, held by the origin')
    // Held for good, these would wait for the peer's bodyTimeout: 5 s is the bound here.
    const whole = await request(url, { dispatcher: peer, signal: AbortSignal.timeout(5000) })
    assert.deepEqual([whole.statusCode, (await whole.body.arrayBuffer()).byteLength], [200, 64 * 1024])
    const range = await request(url, { dispatcher: peer, headers: { range: 'bytes=10-11' }, signal: AbortSignal.timeout(5000) })
    assert.deepEqual([range.statusCode, await range.body.text()], [206, 'mm'])
    assert.equal(origin.count('/held'), 2, 'the GET fetched and stored; the range was its hit')
  } finally {
    gate.resolve()
    await peer.destroy()
    await origin.close()
  }
})

test('a forwarded range waits on the owner\'s range fill less than the asking peer\'s peerTimeout: no forward error, no ejection', async () => {
  const gate = deferred()
  const origin = await heldFirstOrigin(64 * 1024, gate.promise)
  const cluster = await startLocalPeers(2, { peerTimeout: 500 })
  const [a, b] = cluster.peers as [Peer, Peer]
  try {
    const [url] = ownedBy(a, b.self, (i) => `${origin.url}/movie${i}`) as [string]
    await (await request(url, { dispatcher: a, headers: { range: 'bytes=0-1' } })).body.dump()
    for (let i = 0; i < 3; i++) {
      const r = await request(url, { dispatcher: a, headers: { range: `bytes=${100 + i}-${101 + i}` } })
      assert.deepEqual([r.statusCode, await r.body.text()], [206, 'mm'])
    }
    assert.deepEqual({ errors: a.stats().forwardErrors, ejected: a.ejectedPeers }, { errors: 0, ejected: [] })
  } finally {
    gate.resolve()
    await cluster.close()
    await origin.close()
  }
})

test('a range ending at the body\'s last byte is stored whatever the background budget, since nothing is left to read', async () => {
  const size = 300 * 1024
  const origin = await bigOrigin(size)
  // A budget of 256 KiB, under the 300 KiB response.
  const peer = new Peer({ self: 'http://127.0.0.1:1', maxSize: 1024 * 1024 })
  try {
    for (let i = 0; i < 2; i++) {
      const r = await request(`${origin.url}/v`, { dispatcher: peer, headers: { range: 'bytes=0-' } })
      assert.equal(r.statusCode, 206)
      assert.equal((await r.body.arrayBuffer()).byteLength, size)
      await waitFor(() => peer.inFlight === 0, 5000, 'idle')
    }
    assert.equal(origin.count('/v'), 1)
  } finally {
    await peer.destroy()
    await origin.close()
  }
})

test('close() called while a range is sent waits for the rest of the fill, with an origin Dispatcher of the caller\'s', async () => {
  const gate = deferred()
  const origin = await heldFirstOrigin(64 * 1024, gate.promise)
  const agent = new Agent()
  const peer = new Peer({ self: 'http://127.0.0.1:1', origin: agent })
  try {
    let closed = false
    let closing: Promise<void> | undefined
    await new Promise<void>((resolve, reject) => {
      peer.dispatch({ origin: origin.url, path: '/r', method: 'GET', headers: { range: 'bytes=0-4' } }, {
        onResponseStart () { closing = peer.close().then(() => { closed = true }) },
        onResponseData () {},
        onResponseEnd () { resolve() },
        onResponseError (_c: unknown, err: Error) { reject(err) }
      } as unknown as Parameters<Peer['dispatch']>[1])
    })
    await new Promise((resolve) => setImmediate(resolve))
    assert.deepEqual({ closed, inFlight: peer.inFlight }, { closed: false, inFlight: 1 }, 'close() waits for the fill')
    gate.resolve()
    await closing
    assert.equal(peer.inFlight, 0)
  } finally {
    gate.resolve()
    await peer.destroy()
    await agent.destroy()
    await origin.close()
  }
})

test('a range fill reading on stops when its URL is invalidated', async () => {
  const gate = deferred()
  const origin = await heldFirstOrigin(64 * 1024, gate.promise)
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    await (await request(`${origin.url}/inv`, { dispatcher: peer, headers: { range: 'bytes=0-3' } })).body.dump()
    assert.equal(peer.inFlight, 1)
    await (await request(`${origin.url}/inv`, { dispatcher: peer, method: 'POST', body: 'x' })).body.dump()
    assert.equal(peer.inFlight, 0, 'stopped at once, not read on for nothing')
    gate.resolve()
    assert.equal(peer.stats().cacheEntries, 0)
  } finally {
    gate.resolve()
    await peer.destroy()
    await origin.close()
  }
})

test('fillRanges: false sends ranges to the origin as they are; a stored whole response still answers them', async () => {
  await withOrigin(async (origin, peer) => {
    origin.route('/off', (req, res) => {
      if (req.headers.range === 'bytes=2-5') {
        res.writeHead(206, { 'cache-control': 'max-age=300', 'content-range': `bytes 2-5/${BODY.length}`, 'content-length': 4 })
        res.end(BODY.slice(2, 6))
        return
      }
      bodyRoute()(req, res)
    })
    const url = `${origin.url}/off`
    for (let i = 0; i < 2; i++) {
      const r = await get(url, peer, { range: 'bytes=2-5' })
      assert.deepEqual([r.status, r.body], [206, '2345'])
    }
    assert.equal(origin.count('/off'), 2, 'each range went to the origin, and its 206 was not stored')
    assert.equal(origin.log.at(-1)?.headers.range, 'bytes=2-5')
    await get(url, peer)
    const hit = await get(url, peer, { range: 'bytes=2-5' })
    assert.deepEqual([hit.status, hit.body], [206, '2345'])
    assert.match(String(hit.headers['cache-status']), /^forwardcache; hit/)
    assert.equal(origin.count('/off'), 3)
    assert.throws(() => new Peer({ self: 'http://127.0.0.1:1', fillRanges: 'no' as unknown as boolean }), /expected opts.fillRanges to be a boolean/)
  }, { fillRanges: false })
})

test('range fills reading on with no caller hold at most a quarter of maxSize at once; past that a range is served and not stored', async () => {
  const size = 200 * 1024
  const body = Buffer.alloc(size, 'w')
  const gate = deferred()
  const aborted: string[] = []
  const origin = await startOrigin((req, res) => {
    res.on('close', () => { if (!res.writableFinished) aborted.push(req.url ?? '') })
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': size })
    res.write(body.subarray(0, 1024))
    void gate.promise.then(() => res.end(body.subarray(1024)))
  })
  // A budget of 256 KiB: room for one 200 KiB fill, not two.
  const peer = new Peer({ self: 'http://127.0.0.1:1', maxSize: 1024 * 1024 })
  try {
    const one = await get(`${origin.url}/one`, peer, { range: 'bytes=0-1' })
    assert.deepEqual([one.status, one.body], [206, 'ww'])
    assert.equal(peer.inFlight, 1, '/one reads on for the store')
    const two = await get(`${origin.url}/two`, peer, { range: 'bytes=0-1' })
    assert.deepEqual([two.status, two.body], [206, 'ww'])
    await waitFor(() => aborted.includes('/two'), 5000, '/two was not read on')
    gate.resolve()
    await waitFor(() => peer.inFlight === 0, 5000, '/one finished')
    assert.equal(peer.stats().cacheEntries, 1)
    const hit = await get(`${origin.url}/one`, peer, { range: 'bytes=100-101' })
    assert.match(String(hit.headers['cache-status']), /^forwardcache; hit/)
    // The budget is back: /two fills now.
    await get(`${origin.url}/two`, peer, { range: 'bytes=0-1' })
    await waitFor(() => peer.stats().cacheEntries === 2, 5000, '/two stored')
    assert.deepEqual([origin.count('/one'), origin.count('/two')], [1, 2])
  } finally {
    gate.resolve()
    await peer.destroy()
    await origin.close()
  }
})

test('an invalidation while the caller still receives its range: the caller gets it, nothing is read on, and those waiting go at once', async () => {
  const size = 64 * 1024
  const body = Buffer.alloc(size, 'm')
  const gate1 = deferred()
  const gate2 = deferred()
  let closedEarly = false
  let n = 0
  const origin = await startOrigin((req, res) => {
    if (req.method === 'POST') { res.writeHead(204); res.end(); return }
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': size })
    if (n++ > 0) { res.end(body); return }
    res.on('close', () => { if (!res.writableFinished) closedEarly = true })
    res.write(body.subarray(0, 1024))
    void gate1.promise.then(() => {
      res.write(body.subarray(1024, 4096))
      void gate2.promise.then(() => res.end(body.subarray(4096)))
    })
  })
  // rangeWaitMs: 2 s, longer than this test waits for anything.
  const peer = new Peer({ self: 'http://127.0.0.1:1', peerTimeout: 8000 })
  try {
    const url = `${origin.url}/inv-early`
    // The range lies past the first KiB: the caller is still being answered when the POST comes.
    const res = await request(url, { dispatcher: peer, headers: { range: 'bytes=2000-2001' } })
    assert.equal(res.statusCode, 206)
    const waiter = request(url, { dispatcher: peer, signal: AbortSignal.timeout(1000) })
    await (await request(url, { dispatcher: peer, method: 'POST', body: 'x' })).body.dump()
    const got = await waiter
    assert.deepEqual([got.statusCode, (await got.body.arrayBuffer()).byteLength], [200, size], 'the waiting GET went its own way')
    gate1.resolve()
    assert.equal(await res.body.text(), 'mm', 'the caller got its range')
    await waitFor(() => closedEarly, 5000, 'the fill stopped after the range')
    assert.equal(peer.inFlight, 0)
  } finally {
    gate1.resolve()
    gate2.resolve()
    await peer.destroy()
    await origin.close()
  }
})
