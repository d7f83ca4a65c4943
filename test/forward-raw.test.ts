import assert from 'node:assert/strict'
import type http from 'node:http'
import { test } from 'node:test'
import { fetch, request, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { ownerAnswerRaw } from '../src/forward.js'
import { listen, stopServer } from './helpers/peers.js'

// A forwarding peer passes an owner's plain answer to a request() caller in the raw form it
// arrived in, without parsing it first (forward.ts, ownerAnswerRaw). These check what that
// path keeps and drops, and that callers of every kind see the same fields either way.

const raw = (...fields: string[]): Buffer[] => fields.map((f) => Buffer.from(f, 'latin1'))
const text = (fields: Buffer[] | undefined): string[] | undefined => fields?.map((f) => f.toString('latin1'))

test('ownerAnswerRaw keeps an owner\'s plain answer as it came, less node:http\'s hop-by-hop fields, in any case', () => {
  const plain = raw('content-type', 'text/plain', 'cache-status', 'forwardcache; hit', 'content-length', '2')
  assert.equal(ownerAnswerRaw(plain), plain, 'nothing to drop: the same list')
  assert.deepEqual(text(ownerAnswerRaw(raw(
    'Content-Type', 'text/plain', 'Connection', 'Keep-Alive', 'CACHE-STATUS', 'forwardcache; hit',
    'Keep-Alive', 'timeout=5', 'expires', '0', 'Transfer-Encoding', 'chunked', 'Content-Type-X', 'y'))),
  ['Content-Type', 'text/plain', 'CACHE-STATUS', 'forwardcache; hit', 'expires', '0', 'Content-Type-X', 'y'])
  assert.deepEqual(text(ownerAnswerRaw(raw('connection', 'close', 'cache-status', 'x'))), ['cache-status', 'x'])
})

test('ownerAnswerRaw leaves to the parsed path what it does not judge itself', () => {
  const cases: Array<[string, Buffer[]]> = [
    ['no Cache-Status (not a forwardcache owner\'s answer)', raw('content-type', 'text/plain', 'cache-statue', 'x')],
    ['the owner\'s own error', raw('cache-status', 'x', 'Forwardcache-Error', 'closing')],
    ['Connection naming other fields', raw('cache-status', 'x', 'connection', 'keep-alive, x-drop', 'x-drop', '1')],
    ['Connection naming one other field', raw('cache-status', 'x', 'connection', 'x-drop')],
    ['TE', raw('cache-status', 'x', 'TE', 'trailers')],
    ['Trailer', raw('cache-status', 'x', 'trailer', 'x-checksum')],
    ['Upgrade', raw('cache-status', 'x', 'upgrade', 'h2c')],
    ['Proxy-Connection', raw('cache-status', 'x', 'proxy-connection', 'keep-alive')],
    ['Proxy-Authenticate', raw('cache-status', 'x', 'Proxy-Authenticate', 'Basic')],
    ['Proxy-Authorization', raw('cache-status', 'x', 'proxy-authorization', 'Basic eA==')]
  ]
  for (const [what, fields] of cases) assert.equal(ownerAnswerRaw(fields), undefined, what)
})

/** A Peer whose every URL is owned by `owner` (one vnode each, the hash picks by hand). */
function forwarderTo (owner: string): Peer {
  const self = 'http://127.0.0.1:9'
  return new Peer({
    self,
    peers: [self, owner],
    hotSize: 0,
    vnodes: 1,
    // Points: self at 0, the owner at the top, every URL just below it.
    hash: (s) => s.endsWith(self) ? 0 : s.endsWith(owner) ? 0x7fffffff : 0x7ffffffe
  })
}

interface Seen { status: number, headers: Record<string, unknown>, body: string }

/** A GET through a handler of undici's new contract (what compose()d interceptors pass). */
function modernGet (dispatcher: Dispatcher, url: string): Promise<Seen> {
  const { origin, pathname } = new URL(url)
  return new Promise((resolve, reject) => {
    let status = 0
    let headers: Record<string, unknown> = {}
    const chunks: Buffer[] = []
    dispatcher.dispatch({ origin, path: pathname, method: 'GET' }, {
      onRequestStart () {},
      onResponseStart (_c, statusCode, fields) { status = statusCode; headers = fields },
      onResponseData (_c, chunk) { chunks.push(chunk) },
      onResponseEnd () { resolve({ status, headers, body: Buffer.concat(chunks).toString() }) },
      onResponseError (_c, err) { reject(err) }
    })
  })
}

test('an owner\'s answer reaches request(), fetch() and a new-contract handler with the same fields, its hop-by-hop ones dropped', { timeout: 20_000 }, async () => {
  const owner = await listen((req: http.IncomingMessage, res: http.ServerResponse) => {
    const named = (req.url ?? '').includes('named')
    const fields = ['Cache-Status', 'forwardcache; hit', 'Content-Type', 'text/plain', 'X-Kept', 'kept', 'Date', 'Sun, 06 Dec 2026 10:00:00 GMT']
    // node:http's own Connection and Keep-Alive, and chunked framing, come with every answer
    // here; this one also makes X-Drop hop-by-hop through Connection.
    if (named) fields.push('Connection', 'keep-alive, X-Drop', 'X-Drop', 'dropped')
    res.writeHead(200, fields)
    res.write('he')
    res.end('llo')
  })
  const peer = forwarderTo(owner.url)
  try {
    await peer.ready
    for (const name of ['plain', 'named']) {
      const url = `http://origin.test/${name}`
      const viaRequest = await request(url, { dispatcher: peer })
      const seen: Seen[] = [
        { status: viaRequest.statusCode, headers: viaRequest.headers, body: await viaRequest.body.text() },
        await modernGet(peer, url)
      ]
      const viaFetch = await fetch(url, { dispatcher: peer })
      seen.push({ status: viaFetch.status, headers: Object.fromEntries(viaFetch.headers), body: await viaFetch.text() })
      for (const [i, got] of seen.entries()) {
        assert.equal(got.status, 200, `${name}, caller ${i}`)
        assert.equal(got.body, 'hello', `${name}, caller ${i}`)
        assert.deepEqual(Object.keys(got.headers).sort(), ['cache-status', 'content-type', 'date', 'x-kept'], `${name}, caller ${i}`)
        assert.equal(got.headers['x-kept'], 'kept')
        assert.equal(got.headers['cache-status'], 'forwardcache; hit')
      }
    }
    assert.equal(peer.stats().forwardErrors, 0)
  } finally {
    await peer.destroy()
    await stopServer(owner.server)
  }
})
