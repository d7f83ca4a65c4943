import assert from 'node:assert/strict'
import dns from 'node:dns'
import { once } from 'node:events'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { Agent, request } from 'undici'
import { Client, Peer } from '../src/index.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { deferred } from './helpers/peers.js'

let origin: CountingOrigin
let peer: Peer
let server: http.Server
let base: string
const agent = new Agent()

async function listen (handler: http.RequestListener): Promise<{ server: http.Server, url: string }> {
  const s = http.createServer(handler)
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  return { server: s, url: `http://127.0.0.1:${(s.address() as AddressInfo).port}` }
}

async function stop (s: http.Server): Promise<void> {
  s.closeAllConnections()
  await new Promise<void>((resolve) => s.close(() => resolve()))
}

async function call (path: string, init: { method?: string, headers?: Record<string, string>, body?: string } = {}) {
  const res = await request(base + path, { method: init.method ?? 'GET', headers: init.headers ?? {}, body: init.body ?? null, dispatcher: agent })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

const q = (url: string): string => `/proxy?q=${encodeURIComponent(url)}`

/**
 * Writes `text` to the handler's server on a fresh connection and reads until the server
 * closes it (or, with `oneReply`, until one response has arrived).
 */
async function rawExchange (text: string, oneReply = false): Promise<string> {
  const { port } = server.address() as AddressInfo
  return await new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.write(text) })
    let data = ''
    socket.on('data', (chunk) => {
      data += chunk.toString('latin1')
      const end = data.indexOf('\r\n\r\n')
      const length = /content-length: (\d+)/i.exec(data)
      if (oneReply && end !== -1 && length !== null && data.length >= end + 4 + Number(length[1])) socket.destroy()
    })
    socket.on('close', () => resolve(data))
    socket.on('error', reject)
  })
}

before(async () => {
  origin = await startOrigin()
  const l = await listen(() => {})
  server = l.server
  base = l.url
  peer = new Peer({ self: base, peers: [base] })
  server.on('request', peer.handler())
  await peer.ready
})

after(async () => {
  await peer.close()
  await stop(server)
  await origin.close()
  await agent.close()
})

describe('handler() as owner', () => {
  test('serves the wire protocol from the origin, then from its cache', async () => {
    const a = await call(q(origin.url + '/wire'))
    const b = await call(q(origin.url + '/wire'))
    assert.equal(a.status, 200)
    assert.equal(a.body, 'body of /wire')
    assert.equal(b.body, 'body of /wire')
    assert.match(String(b.headers['cache-status']), /^forwardcache; hit/)
    assert.equal(origin.count('/wire'), 1)
    assert.equal(peer.stats().servedForPeers >= 2, true)
  })

  test('q is read as a form-encoded query: + is a space, other parameters are ignored, bad escapes are refused', async () => {
    // Peers send exactly q=encodeURIComponent(url); other clients (curl, other ports of the
    // protocol) may spell it differently, and every spelling must mean what URLSearchParams says.
    const plus = await call(`/proxy?q=${origin.url}/plus+sign`)
    assert.equal(plus.status, 200)
    assert.equal(plus.body, 'body of /plus%20sign')
    const extra = await call(`/proxy?x=1&q=${encodeURIComponent(origin.url + '/extra')}&y=2`)
    assert.equal(extra.status, 200)
    assert.equal(extra.body, 'body of /extra')
    const again = await call(q(origin.url + '/extra'))
    assert.match(String(again.headers['cache-status']), /^forwardcache; hit/)
    assert.equal(origin.count('/extra'), 1)
    for (let i = 0; i < 2; i++) {
      const bad = await call('/proxy?q=%ZZ')
      assert.equal(bad.status, 400)
      assert.equal(bad.headers['forwardcache-error'], 'bad-q')
    }
    const empty = await call('/proxy?q=')
    assert.equal(empty.headers['forwardcache-error'], 'missing-q')
  })

  test('HEAD on the wire is answered from the stored GET', async () => {
    await call(q(origin.url + '/wire-head'))
    const head = await call(q(origin.url + '/wire-head'), { method: 'HEAD' })
    assert.equal(head.status, 200)
    assert.equal(head.body, '')
    assert.equal(origin.count('/wire-head'), 1)
  })

  const refusals: Array<[string, string, { method?: string, headers?: Record<string, string>, body?: string }, number]> = [
    ['a POST', q('http://127.0.0.1:9/x'), { method: 'POST', body: 'x' }, 405],
    ['a PUT', q('http://127.0.0.1:9/x'), { method: 'PUT', body: 'x' }, 405],
    ['a missing q', '/proxy', {}, 400],
    ['an empty q', '/proxy?q=', {}, 400],
    ['a q that is not a URL', '/proxy?q=not%20a%20url', {}, 400],
    ['an ftp: q', q('ftp://127.0.0.1/x'), {}, 400],
    ['a q with userinfo', q('http://u:p@127.0.0.1:9/x'), {}, 400],
    ['a GET with a body', q('http://127.0.0.1:9/x'), { body: 'payload' }, 400],
    ['a request that went through two forwardcache hops', q('http://127.0.0.1:9/x'), { headers: { via: '1.1 forwardcache, 1.1 forwardcache' } }, 508]
  ]
  for (const [name, path, init, status] of refusals) {
    test(`refuses ${name} with ${status} and a reason, fetching nothing`, async () => {
      const before = origin.count()
      const res = await call(path, init)
      assert.equal(res.status, status)
      assert.ok(res.body.length > 0)
      assert.ok(res.headers['forwardcache-error'] !== undefined)
      assert.equal(origin.count(), before)
      if (status === 405) assert.equal(res.headers.allow, 'GET, HEAD, DELETE')
    })
  }

  test('refuses a Connection header that names Authorization (raw HTTP, as undici will not send it)', async () => {
    const before = origin.count()
    const { port } = server.address() as AddressInfo
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.end(`GET ${q(origin.url + '/x')} HTTP/1.1\r\nHost: a\r\nConnection: close, authorization\r\nAuthorization: Bearer t\r\n\r\n`)
      })
      let data = ''
      socket.on('data', (chunk) => { data += chunk.toString('latin1') })
      socket.on('end', () => resolve(data))
      socket.on('error', reject)
    })
    assert.match(reply, /^HTTP\/1\.1 400 /)
    assert.equal(origin.count(), before)
  })

  test('a body stored in several chunks is served whole, and the connection carries the next request', async () => {
    const part = 'x'.repeat(40_000)
    origin.route('/chunks', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': String(part.length * 3) })
      res.write(part)
      setImmediate(() => { res.write(part); setImmediate(() => res.end(part)) })
    })
    await call(q(origin.url + '/chunks'))
    const target = `GET ${q(origin.url + '/chunks')} HTTP/1.1\r\nHost: a\r\n`
    // Two requests on one connection: each answer must end exactly where its Content-Length says.
    const reply = await rawExchange(`${target}\r\n${target}Connection: close\r\n\r\n`)
    const answers = reply.split(/(?=HTTP\/1\.1 )/)
    assert.equal(answers.length, 2)
    for (const answer of answers) {
      assert.match(answer, /^HTTP\/1\.1 200 /)
      assert.match(answer, /cache-status: forwardcache; hit/)
      assert.equal(answer.slice(answer.indexOf('\r\n\r\n') + 4), part.repeat(3))
    }
    assert.equal(origin.count('/chunks'), 1)
  })

  test('the peer\'s hop-by-hop fields, and those its Connection names, do not reach the origin; repeated fields arrive joined', async () => {
    await rawExchange(`GET ${q(origin.url + '/hops')} HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, x-drop\r\n` +
      'Keep-Alive: timeout=5\r\nX-Drop: 1\r\nX-Keep: 1\r\nAccept-Language: da\r\nAccept-Language: en\r\n' +
      'X-Forwarded-Host: evil.example\r\nContent-Length: 0\r\n\r\n', true)
    const seen = origin.log.find((r) => r.url === '/hops')
    assert.ok(seen !== undefined)
    assert.equal(seen.headers['x-keep'], '1')
    assert.equal(seen.headers['x-drop'], undefined)
    assert.equal(seen.headers['keep-alive'], undefined)
    assert.equal(seen.headers['x-forwarded-host'], undefined)
    assert.equal(seen.headers['accept-language'], 'da, en')
  })

  test('a loop is seen in Via even when Connection names Via', async () => {
    const before = origin.count()
    const reply = await rawExchange(`GET ${q(origin.url + '/loop')} HTTP/1.1\r\nHost: a\r\nConnection: close, via\r\n` +
      'Via: 1.1 forwardcache, 1.1 forwardcache\r\n\r\n')
    assert.match(reply, /^HTTP\/1\.1 508 /)
    assert.equal(origin.count(), before)
  })

  test('paths outside its mount path get 404 without next(), and next() with it', async () => {
    assert.equal((await call('/elsewhere')).status, 404)
    const handler = peer.handler()
    const app = await listen((req, res) => handler(req, res, () => { res.end('the app') }))
    try {
      const res = await request(app.url + '/elsewhere', { dispatcher: agent })
      assert.equal(await res.body.text(), 'the app')
    } finally {
      await stop(app.server)
    }
  })

  test('an unreachable origin is a 502 marked as the owner\'s own error', async () => {
    const dead = await listen(() => {})
    const deadUrl = dead.url
    await stop(dead.server)
    const res = await call(q(deadUrl + '/gone'))
    assert.equal(res.status, 502)
    assert.equal(res.headers['forwardcache-error'], 'origin-unreachable')
  })

  test('DELETE drops the stored responses of a URL', async () => {
    await call(q(origin.url + '/purge'))
    const del = await call(q(origin.url + '/purge'), { method: 'DELETE' })
    assert.equal(del.status, 204)
    await call(q(origin.url + '/purge'))
    assert.equal(origin.count('/purge'), 2)
  })
})

describe('Client and fallbacks', () => {
  test('a Client forwards to the owner and caches nothing itself', async () => {
    const client = new Client({ peers: [base] })
    try {
      await client.ready
      for (let i = 0; i < 3; i++) {
        const res = await request(origin.url + '/via-client', { dispatcher: client })
        assert.equal(await res.body.text(), 'body of /via-client')
      }
      assert.equal(origin.count('/via-client'), 1)
      assert.equal(client.stats().forwards, 3)
      assert.equal(client.ownerOf(origin.url + '/via-client'), base)
    } finally {
      await client.close()
    }
  })

  test('when the owner is unreachable the request is served from the origin directly', async () => {
    const dead = await listen(() => {})
    const deadUrl = dead.url
    await stop(dead.server)
    const p = new Peer({ self: base, peers: [base, deadUrl] })
    try {
      await p.ready
      let path = ''
      for (let i = 0; path === ''; i++) if (p.ownerOf(`${origin.url}/fallback-${i}`) === deadUrl) path = `/fallback-${i}`
      const res = await request(origin.url + path, { dispatcher: p })
      assert.equal(res.statusCode, 200)
      assert.equal(await res.body.text(), `body of ${path}`)
      assert.match(String(res.headers['cache-status']), /fwd=bypass; detail=owner-unavailable/)
      assert.equal(p.stats().forwardErrors, 1)
      assert.equal(origin.count(path), 1)
    } finally {
      await p.close()
    }
  })

  test('the pool is normalised: spelling and order do not change ownership', async () => {
    const a = new Peer({ self: 'http://A.example:80/', peers: ['http://b.example', 'HTTP://a.example:80', 'http://c.example/'] })
    const b = new Peer({ self: 'http://b.example', peers: ['http://c.example', 'http://b.example:80', 'http://a.example'] })
    try {
      await Promise.all([a.ready, b.ready])
      assert.deepEqual(a.peers, ['http://a.example', 'http://b.example', 'http://c.example'])
      for (let i = 0; i < 200; i++) assert.equal(a.ownerOf(`https://x.test/${i}`), b.ownerOf(`https://x.test/${i}`))
    } finally {
      await Promise.all([a.close(), b.close()])
    }
  })

  test('bad options are refused with clear messages', () => {
    assert.throws(() => new Peer({ self: 'not a url' }), /opts.self/)
    assert.throws(() => new Peer({ self: 'http://a', vnodes: 0 }), /expected opts.vnodes to be a positive integer/)
    assert.throws(() => new Peer({ self: 'http://a', maxSize: -1 }), /expected opts.maxSize to be a positive integer/)
    assert.throws(() => new Peer({ self: 'http://a', peers: 'http://a' as unknown as string[] }), /expected opts.peers to be an array/)
    assert.throws(() => new Peer({ self: 'http://a', path: 'proxy' }), /opts.path/)
    assert.throws(() => new Client({} as unknown as { peers: string[] }), /opts.peers/)
  })
})

describe('admission without a secret', () => {
  test('a caller that hangs up while its address is being resolved leaves no request behind: no fetch, no slot, close() resolves', { timeout: 15_000 }, async () => {
    // The pool is named by host name, so an address is let in only once the name is
    // resolved. The system resolver cannot be made slow on purpose: the lookup is held
    // here until the caller has gone, as a slow DNS server would hold it.
    const realLookup = dns.promises.lookup
    const gate = deferred()
    let lookups = 0
    dns.promises.lookup = (async (...args: Parameters<typeof realLookup>) => {
      lookups++
      await gate.promise
      return await realLookup(...args)
    }) as typeof realLookup
    const big = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 32 << 20 })
      const chunk = Buffer.alloc(1 << 20, 97)
      let sent = 0
      const pump = (): void => {
        while (sent < 32) {
          sent++
          if (!res.write(chunk)) { res.once('drain', pump); return }
        }
        res.end()
      }
      pump()
    })
    const serverClosed: Array<Promise<unknown>> = []
    const { server: s, url } = await listen(() => {})
    s.on('connection', (socket) => serverClosed.push(once(socket, 'close')))
    const self = url.replace('127.0.0.1', 'localhost')
    const p = new Peer({ self, peers: [self], trustLoopback: false, maxHandlerRequests: 1 })
    s.removeAllListeners('request')
    s.on('request', p.handler())
    try {
      await p.ready
      const target = `${big.url}/large`
      const socket = net.connect(Number(new URL(url).port), '127.0.0.1')
      await once(socket, 'connect')
      socket.write(`GET /proxy?q=${encodeURIComponent(target)} HTTP/1.1\r\nHost: x\r\n\r\n`)
      while (lookups === 0) await new Promise((resolve) => setImmediate(resolve))
      socket.destroy()
      await Promise.all(serverClosed)
      gate.resolve()
      // The name is resolved now: the next caller from the same address gets in, and gets a
      // slot of the one there is.
      const res = await request(`${url}/proxy?q=${encodeURIComponent(`${origin.url}/after-hang-up`)}`, { dispatcher: agent })
      assert.equal(res.statusCode, 200)
      assert.equal(await res.body.text(), 'body of /after-hang-up')
      assert.equal(big.count(), 0)
      assert.equal(p.inFlight, 0)
    } finally {
      dns.promises.lookup = realLookup
      gate.resolve()
      await p.close()
      await stop(s)
      await big.close()
    }
  })
})

describe('handler() and the fields of the last request it let in', () => {
  // The handler keeps the end-to-end fields of the last request whose raw fields passed every
  // check, and reuses them for a request with exactly the same raw fields.
  test('a request whose fields differ from the last one is checked again', async () => {
    const url = origin.url + '/fields-again'
    const first = await call(q(url), { headers: { via: '1.1 forwardcache' } })
    assert.equal(first.status, 200)
    const same = await call(q(url), { headers: { via: '1.1 forwardcache' } })
    assert.match(String(same.headers['cache-status']), /^forwardcache; hit/)
    const loop = await call(q(url), { headers: { via: '1.1 forwardcache, 1.1 forwardcache' } })
    assert.equal(loop.status, 508)
    const withBody = await call(q(url), { headers: { via: '1.1 forwardcache' }, body: 'payload' })
    assert.equal(withBody.status, 400)
    assert.equal(withBody.headers['forwardcache-error'], 'body')
    // undici will not send Connection: host; a raw request does.
    const badConnection = await rawExchange(`GET ${q(url)} HTTP/1.1\r\nHost: x\r\nVia: 1.1 forwardcache\r\nConnection: host\r\n\r\n`, true)
    assert.match(badConnection, /^HTTP\/1\.1 400 /)
    const sameRaw = `GET ${q(url)} HTTP/1.1\r\nHost: x\r\nVia: 1.1 forwardcache\r\n\r\n`
    assert.match(await rawExchange(sameRaw, true), /^HTTP\/1\.1 200 [^]*cache-status: forwardcache; hit/i)
    assert.match(await rawExchange(sameRaw, true), /^HTTP\/1\.1 200 [^]*cache-status: forwardcache; hit/i)
    const back = await call(q(url), { headers: { via: '1.1 forwardcache' } })
    assert.equal(back.status, 200)
    assert.match(String(back.headers['cache-status']), /^forwardcache; hit/)
    assert.equal(origin.count('/fields-again'), 1)
  })

  test('what one request asked of the cache does not carry into the next', async () => {
    const url = origin.url + '/fields-no-cache'
    const ask = (headers: Record<string, string>) => call(q(url), { headers: { via: '1.1 forwardcache', ...headers } })
    assert.equal((await ask({ 'cache-control': 'no-cache' })).status, 200)
    assert.equal(origin.count('/fields-no-cache'), 1)
    // The same fields again: no-cache again, so the origin again (it gives no validator).
    assert.equal((await ask({ 'cache-control': 'no-cache' })).status, 200)
    assert.equal(origin.count('/fields-no-cache'), 2)
    const hit = await ask({})
    assert.match(String(hit.headers['cache-status']), /^forwardcache; hit/)
    assert.equal(origin.count('/fields-no-cache'), 2)
    // And back: no-cache is read from these fields, not from the request before.
    await ask({ 'cache-control': 'no-cache' })
    assert.equal(origin.count('/fields-no-cache'), 3)
  })

  test('a DELETE with the fields of the GET before it still invalidates', async () => {
    const url = origin.url + '/fields-delete'
    await call(q(url), { headers: { via: '1.1 forwardcache' } })
    const del = await call(q(url), { method: 'DELETE', headers: { via: '1.1 forwardcache' } })
    assert.equal(del.status, 204)
    const again = await call(q(url), { headers: { via: '1.1 forwardcache' } })
    assert.equal(again.status, 200)
    assert.equal(origin.count('/fields-delete'), 2)
  })

  test('a request still in progress when the handler returns is one close() waits for; a hit is not', async () => {
    const slowOrigin = await startOrigin()
    const release = deferred()
    const arrived = deferred()
    slowOrigin.route('/slow', (_req, res) => {
      arrived.resolve()
      void release.promise.then(() => {
        res.writeHead(200, { 'cache-control': 'max-age=300', 'content-length': '4' })
        res.end('slow')
      })
    })
    const l = await listen(() => {})
    const p = new Peer({ self: l.url, peers: [l.url] })
    l.server.on('request', p.handler())
    try {
      await p.ready
      const get = async (path: string) => {
        const res = await request(`${l.url}${q(slowOrigin.url + path)}`, { dispatcher: agent })
        return { status: res.statusCode, body: await res.body.text() }
      }
      assert.equal((await get('/stored')).status, 200)
      assert.equal((await get('/stored')).body, 'body of /stored')
      assert.equal(p.inFlight, 0, 'a hit written whole is not in flight')
      const slow = get('/slow')
      await arrived.promise
      assert.equal(p.inFlight, 1)
      let closed = false
      const closing = p.close().then(() => { closed = true })
      await new Promise((resolve) => setImmediate(resolve))
      assert.equal(closed, false, 'close() waits for the fetch in progress')
      release.resolve()
      assert.deepEqual(await slow, { status: 200, body: 'slow' })
      await closing
      assert.equal(p.inFlight, 0)
    } finally {
      release.resolve()
      await p.close()
      await stop(l.server)
      await slowOrigin.close()
    }
  })
})
