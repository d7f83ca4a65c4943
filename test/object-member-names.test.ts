import assert from 'node:assert/strict'
import { test } from 'node:test'
import { errors, request, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { startOrigin } from './helpers/origin.js'
import { deferred } from './helpers/peers.js'

// Field names that are also members of every JavaScript object (`constructor`, `__proto__`):
// read from a plain object they are found on Object.prototype, not among a request's fields.

async function get (dispatcher: Dispatcher, url: string, headers: Record<string, string> | string[] = {}) {
  // A bound, so that a request that would never be answered fails the test instead of hanging it.
  const res = await request(url, { dispatcher, headers, signal: AbortSignal.timeout(5000) })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

for (const field of ['constructor', '__proto__']) {
  test(`a response with Vary: ${field} is stored and matched on the request's own fields (RFC 9111 section 4.1)`, async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', vary: field, 'content-length': 2 })
      res.end('ok')
    })
    const peer = new Peer({ self: 'http://127.0.0.1:1' })
    try {
      const url = `${origin.url}/vary-${field}`
      // Deciding what to store read Object.prototype's member as the request's field and
      // threw at the end of the body: the caller, and every later one for the URL, waited for good.
      const first = await get(peer, url)
      assert.equal(first.body, 'ok')
      assert.match(String(first.headers['cache-status']), /stored/)
      const second = await get(peer, url)
      assert.match(String(second.headers['cache-status']), /hit/)
      assert.equal(origin.count(), 1)
      if (field === 'constructor') {
        // A request that does send the field is another variant.
        await get(peer, url, { constructor: 'a' })
        assert.equal(origin.count(), 2)
        const again = await get(peer, url, { constructor: 'a' })
        assert.match(String(again.headers['cache-status']), /hit/)
        assert.equal(origin.count(), 2)
      }
    } finally {
      await peer.close()
      await origin.close()
    }
  })
}

test('a request field named constructor reaches the origin as it was sent', async () => {
  const origin = await startOrigin()
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    await get(peer, `${origin.url}/named-constructor`, { constructor: 'x', 'x-other': 'y' })
    const seen = origin.log[0]?.headers
    // Not "function Object() { [native code] }, x": the member is no earlier field to join.
    assert.equal(seen?.constructor, 'x')
    assert.equal(seen?.['x-other'], 'y')
  } finally {
    await peer.close()
    await origin.close()
  }
})

test('a request field named __proto__ is refused with InvalidArgumentError (it could not be passed on)', async () => {
  const origin = await startOrigin()
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    await assert.rejects(get(peer, `${origin.url}/named-proto`, ['__proto__', 'x']), (err: Error) => {
      assert.ok(err instanceof errors.InvalidArgumentError, `${err.name}: ${err.message}`)
      assert.match(err.message, /__proto__/)
      return true
    })
    assert.equal(origin.count(), 0)
  } finally {
    await peer.close()
    await origin.close()
  }
})

test('a fault while deciding what to store ends the fill: its caller gets the whole response and the next caller is not left waiting', async () => {
  let clock = Date.parse('2030-01-01T00:00:00Z')
  let faulty = false
  const headersSent = deferred()
  const finish = deferred()
  let requests = 0
  const origin = await startOrigin((_req, res) => {
    requests++
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': 4 })
    if (requests > 1) return res.end('next')
    res.write('wh')
    headersSent.resolve()
    finish.promise.then(() => res.end('ol'), () => {})
  }, () => clock)
  // The clock is read again when the body has ended, to date the stored response: a clock
  // that fails then stands for any fault of the cache's own at that point.
  const peer = new Peer({
    self: 'http://127.0.0.1:1',
    now: () => {
      if (faulty) throw new Error('clock failure')
      return clock
    }
  })
  try {
    const url = `${origin.url}/store-fault`
    const first = get(peer, url)
    await headersSent.promise
    faulty = true
    finish.resolve()
    const answer = await first
    faulty = false
    assert.equal(answer.status, 200)
    assert.equal(answer.body, 'whol')
    assert.equal(peer.stats().cacheEntries, 0, 'nothing is stored when the decision failed')
    assert.equal(peer.stats().flights, 0, 'the fill\'s flight is closed')
    clock += 1000
    const next = await get(peer, url)
    assert.equal(next.body, 'next')
    assert.equal(origin.count(), 2)
  } finally {
    await peer.close()
    await origin.close()
  }
})
