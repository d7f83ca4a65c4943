import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { request, type Dispatcher } from 'undici'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { ownedBy, startLocalPeers, type LocalCluster } from './helpers/peers.js'

// A Peer remembers each URL's owner with its parsed form; a new pool must still route every
// request by the new ring at once, and back.

async function get (dispatcher: Dispatcher, url: string): Promise<string> {
  const res = await request(url, { dispatcher })
  await res.body.dump()
  return String(res.headers['cache-status'])
}

describe('routing after setPeers', () => {
  let origin: CountingOrigin
  let cluster: LocalCluster

  before(async () => {
    origin = await startOrigin()
    cluster = await startLocalPeers(2)
  })
  after(async () => {
    await cluster?.close()
    await origin?.close()
  })

  test('a URL already routed once goes to its new owner right after setPeers, and back after the next one', async () => {
    const [a, b] = cluster.peers
    const [aUrl, bUrl] = cluster.urls as [string, string]
    assert.ok(a !== undefined && b !== undefined)
    const url = ownedBy(a, bUrl, (i) => `${origin.url}/moving/${i}`)[0] as string

    // Alone in its pool, A owns the URL: a fill, then hits from its own store.
    a.setPeers([aUrl])
    assert.match(await get(a, url), /fwd=uri-miss/)
    assert.match(await get(a, url), /forwardcache; hit/)
    assert.equal(b.stats().servedForPeers, 0)

    // With B back in the pool the same URL must go to B, the first request already.
    a.setPeers([aUrl, bUrl])
    await get(a, url)
    assert.equal(b.stats().servedForPeers, 1)
    await get(a, url)
    assert.equal(b.stats().servedForPeers, 2)

    // And alone again: A's own store answers, B sees nothing more.
    a.setPeers([aUrl])
    assert.match(await get(a, url), /forwardcache; hit/)
    assert.equal(b.stats().servedForPeers, 2)
    assert.equal(origin.count(new URL(url).pathname), 2, 'one fill on A, one on B')
  })
})

describe('forwarded responses, as a caller of either handler contract sees them', () => {
  let origin: CountingOrigin
  let cluster: LocalCluster

  before(async () => {
    origin = await startOrigin()
    origin.route('/fields', (_req, res) => {
      // Repeated fields, and a field that Connection makes hop-by-hop: the hop's own
      // Connection and Keep-Alive, and what they name, never reach the caller.
      res.setHeader('x-multi', ['one', 'two'])
      res.setHeader('x-hop', 'secret')
      res.setHeader('connection', 'keep-alive, x-hop')
      res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': '2', 'x-name': 'value' })
      res.end('ok')
    })
    cluster = await startLocalPeers(2)
  })
  after(async () => {
    await cluster?.close()
    await origin?.close()
  })

  test('a legacy caller (undici.request) gets the end-to-end fields of the owner\'s answer, miss and hit alike', async () => {
    const [a, b] = cluster.peers
    assert.ok(a !== undefined && b !== undefined)
    const url = ownedBy(a, cluster.urls[1] as string, (i) => `${origin.url}/fields?k=${i}`)[0] as string
    for (const expected of [/fwd=uri-miss/, /forwardcache; hit/]) {
      const answer: Dispatcher.ResponseData = await request(url, { dispatcher: a })
      assert.equal(await answer.body.text(), 'ok')
      assert.match(String(answer.headers['cache-status']), expected)
      assert.deepEqual(answer.headers['x-multi'], ['one', 'two'])
      assert.equal(answer.headers['x-name'], 'value')
      assert.equal(answer.headers['content-length'], '2')
      for (const hop of ['connection', 'keep-alive', 'x-hop']) assert.equal(answer.headers[hop], undefined, hop)
    }
    assert.equal(b.stats().servedForPeers, 2)
    assert.equal(origin.count(new URL(url).pathname + new URL(url).search), 1)
  })

  test('a new-contract caller gets the same fields as an object', async () => {
    const [a] = cluster.peers
    assert.ok(a !== undefined)
    const url = new URL(ownedBy(a, cluster.urls[1] as string, (i) => `${origin.url}/fields?n=${i}`)[0] as string)
    const seen = await new Promise<Record<string, string | string[]>>((resolve, reject) => {
      let headers: Record<string, string | string[]> = {}
      a.dispatch({ origin: url.origin, path: url.pathname + url.search, method: 'GET' }, {
        onRequestStart () {},
        onResponseStart (_c, _status, h) { headers = h as Record<string, string | string[]> },
        onResponseData () {},
        onResponseEnd () { resolve(headers) },
        onResponseError (_c, err) { reject(err) }
      })
    })
    assert.deepEqual(seen['x-multi'], ['one', 'two'])
    assert.match(String(seen['cache-status']), /fwd=uri-miss/)
    for (const hop of ['connection', 'keep-alive', 'x-hop']) assert.equal(seen[hop], undefined, hop)
  })
})
