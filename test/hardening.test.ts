import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Agent, interceptors, request } from 'undici'
import { InvalidArgumentError, Peer } from '../src/index.js'
import { clockedPeer } from './helpers/clocked-peer.js'

// Faults found by an adversarial review: each test failed before its fix.

const fx = clockedPeer()

describe('review fixes', () => {
  test('a 304 carrying Set-Cookie refreshes the entry but its cookie reaches only the caller that asked', async () => {
    let n = 0
    fx.origin.route('/cookie304', (req, res) => {
      n++
      if (req.headers['if-none-match'] === '"v1"') {
        res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=10', 'set-cookie': 'session=alice' })
        res.end()
        return
      }
      res.writeHead(200, { etag: '"v1"', 'cache-control': 'max-age=10', 'content-length': '2' })
      res.end('v1')
    })
    const url = fx.origin.url + '/cookie304'
    await (await request(url, { dispatcher: fx.peer })).body.text()
    fx.now += 20_000
    const alice = await request(url, { dispatcher: fx.peer })
    await alice.body.text()
    assert.equal(alice.headers['set-cookie'], 'session=alice')
    const bob = await request(url, { dispatcher: fx.peer })
    assert.equal(await bob.body.text(), 'v1')
    assert.match(String(bob.headers['cache-status']), /hit/)
    assert.equal(bob.headers['set-cookie'], undefined)
    assert.equal(n, 2)
  })

  test('a 304 that now says private drops the entry', async () => {
    let n = 0
    fx.origin.route('/private304', (req, res) => {
      n++
      if (req.headers['if-none-match'] === '"p"') {
        res.writeHead(304, { etag: '"p"', 'cache-control': 'private, max-age=600' })
        res.end()
        return
      }
      res.writeHead(200, { etag: '"p"', 'cache-control': 'max-age=10', 'content-length': '1' })
      res.end('p')
    })
    const url = fx.origin.url + '/private304'
    await (await request(url, { dispatcher: fx.peer })).body.text()
    fx.now += 20_000
    await (await request(url, { dispatcher: fx.peer })).body.text()
    const third = await request(url, { dispatcher: fx.peer })
    await third.body.text()
    assert.doesNotMatch(String(third.headers['cache-status']), /hit/)
    assert.equal(n, 3)
  })

  test('If-Match reaches the origin; If-Range with a range the cache fills whole is judged on the whole response, and with one it passes on reaches the origin', async () => {
    fx.origin.route('/precond', (req, res) => {
      if (req.headers['if-match'] !== undefined) { res.writeHead(412, { 'content-length': '0' }); res.end(); return }
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': '4', 'x-if-range': String(req.headers['if-range']) })
      res.end('full')
    })
    const url = fx.origin.url + '/precond'
    const pre = await request(url, { dispatcher: fx.peer, headers: { 'if-match': '"old"' } })
    await pre.body.text()
    assert.equal(pre.statusCode, 412)
    // The response has no validator "old" could match (RFC 9110 section 13.1.5): the whole 200.
    const ranged = await request(url + '?r', { dispatcher: fx.peer, headers: { range: 'bytes=1-', 'if-range': '"old"' } })
    assert.deepEqual([ranged.statusCode, await ranged.body.text()], [200, 'full'])
    assert.equal(ranged.headers['x-if-range'], 'undefined')
    // A suffix range goes to the origin as it is, and its If-Range with it.
    const suffix = await request(url + '?s', { dispatcher: fx.peer, headers: { range: 'bytes=-2', 'if-range': '"old"' } })
    await suffix.body.text()
    assert.equal(suffix.headers['x-if-range'], '"old"')
  })

  test('a response without Date is stored and served with one', async () => {
    fx.origin.route('/nodate', (_req, res) => {
      res.sendDate = false
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': '1' })
      res.end('d')
    })
    await (await request(fx.origin.url + '/nodate', { dispatcher: fx.peer })).body.text()
    const hit = await request(fx.origin.url + '/nodate', { dispatcher: fx.peer })
    await hit.body.text()
    assert.match(String(hit.headers['cache-status']), /hit/)
    assert.ok(typeof hit.headers.date === 'string')
  })

  test('a caller arriving during a response that will not be stored does not wait for its end', async () => {
    const enders: Array<() => void> = []
    const release = (): void => { for (const end of enders.splice(0)) end() }
    fx.origin.route('/nostore-slow', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-length': '2' })
      res.write('a')
      enders.push(() => res.end('b'))
    })
    const url = fx.origin.url + '/nostore-slow'
    const first = await request(url, { dispatcher: fx.peer })
    const second = await request(url, { dispatcher: fx.peer })
    assert.equal(second.statusCode, 200)
    release()
    await first.body.text()
    assert.equal(await second.body.text(), 'ab')
    assert.equal(fx.origin.count('/nostore-slow'), 2)
  })

  test('undici\'s retry interceptor over a Peer retries a 503', async () => {
    let n = 0
    fx.origin.route('/flaky', (_req, res) => {
      n++
      if (n < 3) { res.writeHead(503, { 'content-length': '2' }); res.end('no'); return }
      res.writeHead(200, { 'content-length': '2' })
      res.end('ok')
    })
    const res = await request(fx.origin.url + '/flaky', { dispatcher: fx.peer.compose(interceptors.retry({ maxRetries: 5, minTimeout: 1 })) })
    assert.equal(res.statusCode, 200)
    assert.equal(await res.body.text(), 'ok')
    assert.equal(n, 3)
  })

  test('timeouts a timer cannot honour, and malformed origins, are refused in the constructor', () => {
    assert.throws(() => new Peer({ self: 'http://127.0.0.1:1', originTimeout: 2 ** 31 }), InvalidArgumentError)
    assert.throws(() => new Peer({ self: 'http://127.0.0.1:1', origins: ['http://'] }), InvalidArgumentError)
    assert.throws(() => new Peer({ self: 'http://127.0.0.1:1', origins: [''] }), InvalidArgumentError)
  })

  test('a POST through a custom origin Agent honours originTimeout', async () => {
    fx.origin.route('/silent', () => {})
    const agent = new Agent({ headersTimeout: 60_000 })
    const p = new Peer({ self: 'http://127.0.0.1:1', origin: agent, originTimeout: 200 })
    await p.ready
    try {
      await assert.rejects(request(fx.origin.url + '/silent', { method: 'POST', body: 'x', dispatcher: p }), { code: 'UND_ERR_HEADERS_TIMEOUT' })
    } finally {
      await p.destroy()
      await agent.destroy()
    }
  })
})
