import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Agent, interceptors, request } from 'undici'
import { InvalidArgumentError, Peer } from '../src/index.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'

// Faults found by an adversarial review: each test failed before its fix.

let origin: CountingOrigin
let clock = Date.now()
let peer: Peer

before(async () => {
  origin = await startOrigin(undefined, () => clock)
  peer = new Peer({ self: 'http://127.0.0.1:1', now: () => clock })
  await peer.ready
})

after(async () => {
  await peer.close()
  await origin.close()
})

describe('review fixes', () => {
  test('a 304 carrying Set-Cookie refreshes the entry but its cookie reaches only the caller that asked', async () => {
    let n = 0
    origin.route('/cookie304', (req, res) => {
      n++
      if (req.headers['if-none-match'] === '"v1"') {
        res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=10', 'set-cookie': 'session=alice' })
        res.end()
        return
      }
      res.writeHead(200, { etag: '"v1"', 'cache-control': 'max-age=10', 'content-length': '2' })
      res.end('v1')
    })
    const url = origin.url + '/cookie304'
    await (await request(url, { dispatcher: peer })).body.text()
    clock += 20_000
    const alice = await request(url, { dispatcher: peer })
    await alice.body.text()
    assert.equal(alice.headers['set-cookie'], 'session=alice')
    const bob = await request(url, { dispatcher: peer })
    assert.equal(await bob.body.text(), 'v1')
    assert.match(String(bob.headers['cache-status']), /hit/)
    assert.equal(bob.headers['set-cookie'], undefined)
    assert.equal(n, 2)
  })

  test('a 304 that now says private drops the entry', async () => {
    let n = 0
    origin.route('/private304', (req, res) => {
      n++
      if (req.headers['if-none-match'] === '"p"') {
        res.writeHead(304, { etag: '"p"', 'cache-control': 'private, max-age=600' })
        res.end()
        return
      }
      res.writeHead(200, { etag: '"p"', 'cache-control': 'max-age=10', 'content-length': '1' })
      res.end('p')
    })
    const url = origin.url + '/private304'
    await (await request(url, { dispatcher: peer })).body.text()
    clock += 20_000
    await (await request(url, { dispatcher: peer })).body.text()
    const third = await request(url, { dispatcher: peer })
    await third.body.text()
    assert.doesNotMatch(String(third.headers['cache-status']), /hit/)
    assert.equal(n, 3)
  })

  test('If-Match and If-Range reach the origin', async () => {
    origin.route('/precond', (req, res) => {
      if (req.headers['if-match'] !== undefined) { res.writeHead(412, { 'content-length': '0' }); res.end(); return }
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': '4', 'x-if-range': String(req.headers['if-range']) })
      res.end('full')
    })
    const url = origin.url + '/precond'
    const pre = await request(url, { dispatcher: peer, headers: { 'if-match': '"old"' } })
    await pre.body.text()
    assert.equal(pre.statusCode, 412)
    const ranged = await request(url + '?r', { dispatcher: peer, headers: { range: 'bytes=1-', 'if-range': '"old"' } })
    await ranged.body.text()
    assert.equal(ranged.headers['x-if-range'], '"old"')
  })

  test('a response without Date is stored and served with one', async () => {
    origin.route('/nodate', (_req, res) => {
      res.sendDate = false
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': '1' })
      res.end('d')
    })
    await (await request(origin.url + '/nodate', { dispatcher: peer })).body.text()
    const hit = await request(origin.url + '/nodate', { dispatcher: peer })
    await hit.body.text()
    assert.match(String(hit.headers['cache-status']), /hit/)
    assert.ok(typeof hit.headers.date === 'string')
  })

  test('a caller arriving during a response that will not be stored does not wait for its end', async () => {
    const enders: Array<() => void> = []
    const release = (): void => { for (const end of enders.splice(0)) end() }
    origin.route('/nostore-slow', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-length': '2' })
      res.write('a')
      enders.push(() => res.end('b'))
    })
    const url = origin.url + '/nostore-slow'
    const first = await request(url, { dispatcher: peer })
    const second = await request(url, { dispatcher: peer })
    assert.equal(second.statusCode, 200)
    release()
    await first.body.text()
    assert.equal(await second.body.text(), 'ab')
    assert.equal(origin.count('/nostore-slow'), 2)
  })

  test('undici\'s retry interceptor over a Peer retries a 503', async () => {
    let n = 0
    origin.route('/flaky', (_req, res) => {
      n++
      if (n < 3) { res.writeHead(503, { 'content-length': '2' }); res.end('no'); return }
      res.writeHead(200, { 'content-length': '2' })
      res.end('ok')
    })
    const res = await request(origin.url + '/flaky', { dispatcher: peer.compose(interceptors.retry({ maxRetries: 5, minTimeout: 1 })) })
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
    origin.route('/silent', () => {})
    const agent = new Agent({ headersTimeout: 60_000 })
    const p = new Peer({ self: 'http://127.0.0.1:1', origin: agent, originTimeout: 200 })
    await p.ready
    try {
      await assert.rejects(request(origin.url + '/silent', { method: 'POST', body: 'x', dispatcher: p }), { code: 'UND_ERR_HEADERS_TIMEOUT' })
    } finally {
      await p.destroy()
      await agent.destroy()
    }
  })
})
