import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import http from 'node:http'

import { after, before, describe, test } from 'node:test'
import { Agent, errors, request } from 'undici'
import { Peer } from '../src/index.js'
import { PeerAddresses } from '../src/security/peer-addresses.js'
import { Signer } from '../src/security/signature.js'
import { forgeAuth, startPeers, type MountedPeer } from './helpers/hostile.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { listen, ownedBy, stopServer } from './helpers/peers.js'

// Peer authentication: every request between peers carries `forwardcache-auth`
// (HMAC-SHA256 over method, absolute URL, time and nonce). A request that fails the check is
// answered 401 before anything is fetched: the origin's counters must not move.

const SECRET = 'correct horse battery staple'
const OTHER = 'a different secret, 32 chars!!!!'
const WINDOW = 5000

let origin: CountingOrigin
const agent = new Agent()

before(async () => {
  origin = await startOrigin()
  // Never storable: a request that got through twice reaches the origin twice.
  origin.route('/nostore', (req, res) => {
    res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 7 })
    res.end(req.method === 'HEAD' ? undefined : 'nostore')
  })
})

after(async () => {
  await origin.close()
  await agent.close()
})

async function wire (base: string, url: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await request(`${base}/proxy?q=${encodeURIComponent(url)}`, { method, headers, dispatcher: agent })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

describe('peers that share a secret', () => {
  let peers: MountedPeer[]
  let a: MountedPeer
  let b: MountedPeer

  before(async () => {
    peers = await startPeers([{ secret: SECRET, authWindow: WINDOW }, { secret: SECRET, authWindow: WINDOW }])
    a = peers[0] as MountedPeer
    b = peers[1] as MountedPeer
  })
  after(async () => { await Promise.all(peers.map((p) => p.close())) })

  test('forward to the owner, which checks the signature and serves; the signature never reaches the origin', async () => {
    const [url] = ownedBy(a.peer, b.url, (i) => `${origin.url}/signed/${i}`)
    const path = new URL(url as string).pathname
    const first = await request(url as string, { dispatcher: a.peer })
    assert.equal(first.statusCode, 200)
    assert.equal(await first.body.text(), `body of ${path}`)
    const second = await request(url as string, { dispatcher: a.peer })
    await second.body.dump()
    assert.match(String(second.headers['cache-status']), /^forwardcache; hit/)
    assert.equal(origin.count(path), 1)
    assert.equal(b.peer.stats().servedForPeers, 2)
    assert.equal(a.peer.stats().forwardErrors, 0)
    // What the owner received was signed, and what the origin received was not.
    const atOwner = b.seen.filter((r) => r.url.includes(encodeURIComponent(path)))
    assert.equal(atOwner.length, 2)
    for (const r of atOwner) assert.match(String(r.headers['forwardcache-auth']), /^v1 t=\d+ n=[\w-]+ s=[\w-]{43}$/)
    assert.notEqual(atOwner[0]?.headers['forwardcache-auth'], atOwner[1]?.headers['forwardcache-auth'])
    for (const r of origin.log) assert.equal(r.headers['forwardcache-auth'], undefined)
  })

  test('a signature over the spelling sent in q is good, tidied or not; it binds that URL and no other', async () => {
    // A peer of an earlier version signs the URL as WHATWG URL serialises it (%7E, lower-case hex)
    // and sends that spelling; the owner checks it as sent and serves it under the tidied key.
    const untidy = `${origin.url}/%7eold-peer?x=%2f`
    const tidy = `${origin.url}/~old-peer?x=%2F`
    const before = origin.count('/~old-peer?x=%2F')
    const first = await wire(b.url, untidy, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', untidy, b.url) })
    assert.equal(first.status, 200)
    const second = await wire(b.url, tidy, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', tidy, b.url) })
    assert.equal(second.status, 200)
    assert.match(String(second.headers['cache-status']), /^forwardcache; hit/)
    assert.equal(origin.count('/~old-peer?x=%2F') - before, 1)
    // A signature for one spelling does not authorise another URL, nor the same one again.
    const other = `${origin.url}/%7eother`
    assert.equal((await wire(b.url, other, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', untidy, b.url) })).status, 401)
    const auth = forgeAuth(SECRET, 'GET', untidy, b.url)
    assert.equal((await wire(b.url, untidy, { 'forwardcache-auth': auth })).status, 200)
    assert.equal((await wire(b.url, untidy, { 'forwardcache-auth': auth })).status, 401)
    assert.equal(origin.count('/~other'), 0)
  })

  test('a URL the owner has already served still needs a valid signature every time', async () => {
    // The owner remembers the targets it was asked for; that must not let an unsigned or
    // forged request for the same q through.
    const url = `${origin.url}/signed-then-unsigned`
    const ok = await wire(b.url, url, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url) })
    assert.equal(ok.status, 200)
    assert.equal((await wire(b.url, url)).status, 401)
    assert.equal((await wire(b.url, url, { 'forwardcache-auth': forgeAuth(OTHER, 'GET', url, b.url) })).status, 401)
    assert.equal(origin.count('/signed-then-unsigned'), 1)
  })

  test('a forged header made with the shared secret is accepted (the test forger is faithful)', async () => {
    const url = `${origin.url}/forged-ok`
    const res = await wire(b.url, url, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url) })
    assert.equal(res.status, 200)
    assert.equal(origin.count('/forged-ok'), 1)
  })

  const now = (): number => Math.floor(Date.now() / 1000)
  const refused: Array<[string, (url: string) => Record<string, string>, string?]> = [
    ['no header', () => ({})],
    ['an empty header', () => ({ 'forwardcache-auth': '' })],
    ['a malformed header', () => ({ 'forwardcache-auth': 'v1 garbage' })],
    ['an unknown version', (url) => ({ 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url).replace(/^v1/, 'v2') })],
    ['a signature over another URL (tampered q)', (url) => ({ 'forwardcache-auth': forgeAuth(SECRET, 'GET', url.replace('/auth-', '/other-'), b.url) })],
    ['a signature over the same URL with a trailing slash', (url) => ({ 'forwardcache-auth': forgeAuth(SECRET, 'GET', url + '/', b.url) })],
    ['a signature for HEAD sent with GET (tampered method)', (url) => ({ 'forwardcache-auth': forgeAuth(SECRET, 'HEAD', url, b.url) })],
    ['a tampered signature (one character changed)', (url) => {
      const h = forgeAuth(SECRET, 'GET', url, b.url)
      const last = h.at(-2) === 'A' ? 'B' : 'A'
      return { 'forwardcache-auth': h.slice(0, -2) + last + h.slice(-1) }
    }],
    ['a tampered timestamp (signature kept)', (url) => ({ 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url).replace(/t=(\d+)/, (_m, t: string) => `t=${Number(t) + 1}`) })],
    ['a tampered nonce (signature kept)', (url) => ({ 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url, now(), 'AAAAAAAAAAAAAAAA').replace('n=AAAAAAAAAAAAAAAA', 'n=BBBBBBBBBBBBBBBB') })],
    ['a signature made with the wrong secret', (url) => ({ 'forwardcache-auth': forgeAuth(OTHER, 'GET', url, b.url) })],
    ['a signature made with an empty secret', (url) => ({ 'forwardcache-auth': forgeAuth('', 'GET', url, b.url) })],
    ['an expired signature (older than authWindow)', (url) => ({ 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url, now() - WINDOW / 1000 - 5) })],
    ['a signature from the future (beyond authWindow)', (url) => ({ 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url, now() + WINDOW / 1000 + 5) })],
    ['a signature dated at the epoch', (url) => ({ 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url, 0) })],
    ['two headers, one of them valid', (url) => ({ 'forwardcache-auth': `${forgeAuth(SECRET, 'GET', url, b.url)}, ${forgeAuth(SECRET, 'GET', url, b.url)}` })]
  ]

  let n = 0
  for (const [name, make] of refused) {
    test(`401 before any fetch for ${name}`, async () => {
      const path = `/auth-${n++}`
      const url = `${origin.url}${path}`
      const served = b.peer.stats().servedForPeers
      const res = await wire(b.url, url, make(url))
      assert.equal(res.status, 401)
      assert.equal(res.headers['forwardcache-error'], 'unauthorized')
      assert.equal(res.headers['cache-control'], 'no-store')
      assert.equal(origin.count(path), 0)
      assert.equal(b.peer.stats().servedForPeers, served)
    })
  }

  test('an expired-looking but in-window signature is accepted (the window is not off by 1000x)', async () => {
    const url = `${origin.url}/in-window`
    const res = await wire(b.url, url, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url, now() - 2) })
    assert.equal(res.status, 200)
  })

  test('a replayed header (the same one sent twice) is refused the second time', async () => {
    const url = `${origin.url}/nostore`
    const header = forgeAuth(SECRET, 'GET', url, b.url)
    const first = await wire(b.url, url, { 'forwardcache-auth': header })
    assert.equal(first.status, 200)
    assert.equal(origin.count('/nostore'), 1)
    const replay = await wire(b.url, url, { 'forwardcache-auth': header })
    assert.equal(replay.status, 401)
    assert.match(replay.body, /replayed/)
    assert.equal(origin.count('/nostore'), 1)
  })

  test('a header captured from real peer traffic cannot be replayed to the owner', async () => {
    const [url] = ownedBy(a.peer, b.url, (i) => `${origin.url}/nostore?capture=${i}`)
    const res = await request(url as string, { dispatcher: a.peer })
    await res.body.dump()
    const captured = b.seen.at(-1)
    assert.ok(captured !== undefined && typeof captured.headers['forwardcache-auth'] === 'string')
    const path = new URL(url as string).pathname + new URL(url as string).search
    const before = origin.count(path)
    const raw = await request(`${b.url}${captured.url}`, { headers: { 'forwardcache-auth': captured.headers['forwardcache-auth'] as string }, dispatcher: agent })
    await raw.body.dump()
    assert.equal(raw.statusCode, 401)
    assert.equal(origin.count(path), before)
  })

  test('an unsigned DELETE (invalidation) is refused and the stored entry survives', async () => {
    const url = `${origin.url}/keep-me`
    const first = await wire(b.url, url, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url) })
    assert.equal(first.status, 200)
    const del = await wire(b.url, url, {}, 'DELETE')
    assert.equal(del.status, 401)
    const forged = await wire(b.url, url, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url) }, 'DELETE')
    assert.equal(forged.status, 401, 'a GET signature does not authorise a DELETE')
    const hit = await wire(b.url, url, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url) })
    assert.match(String(hit.headers['cache-status']), /^forwardcache; hit/)
    assert.equal(origin.count('/keep-me'), 1)
    const signedDelete = await wire(b.url, url, { 'forwardcache-auth': forgeAuth(SECRET, 'DELETE', url, b.url) }, 'DELETE')
    assert.equal(signedDelete.status, 204)
    await wire(b.url, url, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, b.url) })
    assert.equal(origin.count('/keep-me'), 2)
  })

  test('a signature addressed to another peer is refused: a captured request cannot be replayed elsewhere', async () => {
    const url = `${origin.url}/audience`
    const res = await wire(b.url, url, { 'forwardcache-auth': forgeAuth(SECRET, 'GET', url, 'http://127.0.0.1:1') })
    assert.equal(res.status, 401)
    assert.equal(origin.count('/audience'), 0)
  })

  test('a peer with a secret ignores the loopback exemption: a local unsigned caller still gets 401', async () => {
    const res = await wire(b.url, `${origin.url}/loopback-unsigned`)
    assert.equal(res.status, 401)
    assert.equal(origin.count('/loopback-unsigned'), 0)
  })
})

const AUD = 'http://peer.example:3000'

describe('the replay table', () => {
  test('is bounded: 100,000 signatures per 2 x authWindow, then refusals until the oldest expire', () => {
    let now = 1_700_000_000_000
    const signer = new Signer([SECRET], 1000, () => now)
    const url = 'http://example.com/bounded'
    let refused = 0
    for (let i = 0; i < 100_000; i++) if (!signer.verify('GET', url, AUD, signer.sign('GET', url, AUD)).ok) refused++
    assert.equal(refused, 0)
    assert.deepEqual(signer.verify('GET', url, AUD, signer.sign('GET', url, AUD)), { ok: false, reason: 'too many signed requests in the window', overloaded: true })
    now += 2001
    assert.deepEqual(signer.verify('GET', url, AUD, signer.sign('GET', url, AUD)), { ok: true })
  })

  test('remembers a signature for its whole validity: a replay at the far edge of the window is still refused', () => {
    let now = 1_700_000_000_000
    const signer = new Signer([SECRET], 5000, () => now)
    const url = 'http://example.com/edge'
    // Signed 5 s in the future (the signer's clock is ahead), first used at once, replayed
    // 9.9 s later, when the signature is still within the window of the receiver's clock.
    const header = forgeAuth(SECRET, 'GET', url, AUD, Math.floor(now / 1000) + 5)
    assert.equal(signer.verify('GET', url, AUD, header).ok, true)
    now += 9900
    assert.deepEqual(signer.verify('GET', url, AUD, header), { ok: false, reason: 'replayed signature' })
  })
})

describe('key rotation', () => {
  const OLD = 'old secret old secret old secret'
  const NEW = 'new secret new secret new secret'

  async function pair (secretA: string | string[], secretB: string | string[]) {
    const [a, b] = await startPeers([{ secret: secretA }, { secret: secretB }]) as [MountedPeer, MountedPeer]
    return { a, b, close: async () => { await a.close(); await b.close() } }
  }

  const works: Array<[string | string[], string | string[]]> = [
    [[NEW, OLD], [OLD, NEW]],
    [[OLD], [NEW, OLD]],
    [[NEW, OLD], [NEW]],
    [[OLD, NEW], [OLD]]
  ]
  for (const [sa, sb] of works) {
    test(`A signs with ${JSON.stringify(sa).replace(/ secret/g, '')}, B accepts ${JSON.stringify(sb).replace(/ secret/g, '')}: forwarded and served by B`, async () => {
      const { a, b, close } = await pair(sa, sb)
      try {
        const [url] = ownedBy(a.peer, b.url, (i) => `${origin.url}/rotate-ok-${JSON.stringify([sa, sb]).length}-${i}`)
        const res = await request(url as string, { dispatcher: a.peer })
        assert.equal(res.statusCode, 200)
        await res.body.dump()
        assert.equal(b.peer.stats().servedForPeers, 1)
        assert.equal(a.peer.stats().forwardErrors, 0)
      } finally {
        await close()
      }
    })
  }

  test('A signs with a secret B no longer accepts: B answers 401, A falls back to the origin itself', async () => {
    const { a, b, close } = await pair([NEW], [OLD])
    try {
      const [url] = ownedBy(a.peer, b.url, (i) => `${origin.url}/rotate-bad-${i}`)
      const res = await request(url as string, { dispatcher: a.peer })
      assert.equal(res.statusCode, 200)
      await res.body.dump()
      assert.match(String(res.headers['cache-status']), /fwd=bypass; detail=owner-unavailable/)
      assert.equal(b.peer.stats().servedForPeers, 0)
      assert.equal(a.peer.stats().forwardErrors, 1)
      // By hand: B's old secret works, a retired one does not.
      const u2 = `${origin.url}/rotate-by-hand`
      assert.equal((await wire(b.url, u2, { 'forwardcache-auth': forgeAuth(OLD, 'GET', u2, b.url) })).status, 200)
      assert.equal((await wire(b.url, u2, { 'forwardcache-auth': forgeAuth(NEW, 'GET', u2, b.url) })).status, 401)
    } finally {
      await close()
    }
  })

  test('secrets shorter than 16 characters, empty lists and non-strings are refused at construction', () => {
    for (const secret of ['short', '', [], ['x'.repeat(16), 'short'], [42]] as unknown[]) {
      assert.throws(() => new Peer({ self: 'http://127.0.0.1:1', secret: secret as string }), errors.InvalidArgumentError)
    }
  })
})

describe('without a secret', () => {
  test('a pool change while a pool host name is being resolved does not let the departed host\'s addresses in', async () => {
    // 127.0.0.1 is let in only as an address of "localhost", a pool member that leaves the
    // pool while its name is being looked up for this very request.
    const l = await listen()
    const self = 'http://127.0.0.5:3000'
    const peer = new Peer({ self, peers: [self, 'http://localhost:4000'], trustLoopback: false })
    const handler = peer.handler()
    let first = true
    l.server.on('request', (req, res) => {
      handler(req, res)
      if (first) peer.setPeers([self])
      first = false
    })
    try {
      await peer.ready
      for (const path of ['/departed-1', '/departed-2']) {
        const res = await wire(l.url, `${origin.url}${path}`)
        assert.equal(res.status, 403, path)
        assert.equal(res.headers['forwardcache-error'], 'forbidden-peer')
      }
      assert.equal(origin.count('/departed-1') + origin.count('/departed-2'), 0)
    } finally {
      await peer.close()
      await stopServer(l.server)
    }
  })

  test('the handler serves loopback callers', async () => {
    const [p] = await startPeers([{}])
    try {
      const res = await wire((p as MountedPeer).url, `${origin.url}/no-secret-loopback`)
      assert.equal(res.status, 200)
      assert.equal(origin.count('/no-secret-loopback'), 1)
    } finally {
      await (p as MountedPeer).close()
    }
  })

  test('the handler refuses an address outside the pool (403) and serves the pool\'s own addresses', async () => {
    // One machine has only loopback to test with, so the remote address the handler sees is
    // set by hand on the real socket, before the handler reads it.
    const pool = 'http://198.51.100.7:3000'
    let remote = '203.0.113.9'
    const l = await listen()
    const peer = new Peer({ self: l.url, peers: [l.url, pool] })
    const handler = peer.handler()
    l.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      Object.defineProperty(req.socket, 'remoteAddress', { value: remote, configurable: true })
      handler(req, res)
    })
    try {
      await peer.ready
      for (const address of ['203.0.113.9', '::ffff:203.0.113.9', '10.0.0.1', '2001:db8::1', '198.51.100.8']) {
        remote = address
        const res = await wire(l.url, `${origin.url}/outsider`)
        assert.equal(res.status, 403, address)
        assert.equal(res.headers['forwardcache-error'], 'forbidden-peer')
      }
      assert.equal(origin.count('/outsider'), 0)
      for (const address of ['198.51.100.7', '::ffff:198.51.100.7', '::ffff:c633:6407', '127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) {
        remote = address
        const res = await wire(l.url, `${origin.url}/member`)
        assert.equal(res.status, 200, address)
      }
    } finally {
      await peer.destroy()
      await stopServer(l.server)
    }
  })

  test('a kept-alive connection let in once is checked again after the pool changes', async () => {
    // The handler remembers which connections it let in; a pool change must void that, or a
    // peer taken out of the pool would keep its open connection's access.
    const member = 'http://198.51.100.7:3000'
    const l = await listen()
    // undici keeps a connection only when the server's Keep-Alive hint is over its 2 s margin.
    l.server.keepAliveTimeout = 10_000
    let connections = 0
    l.server.on('connection', () => { connections++ })
    const peer = new Peer({ self: l.url, peers: [l.url, member] })
    const handler = peer.handler()
    l.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      Object.defineProperty(req.socket, 'remoteAddress', { value: '198.51.100.7', configurable: true })
      handler(req, res)
    })
    try {
      await peer.ready
      assert.equal((await wire(l.url, `${origin.url}/kept-alive`)).status, 200)
      assert.equal((await wire(l.url, `${origin.url}/kept-alive`)).status, 200)
      const opened = connections
      peer.setPeers([l.url, 'http://198.51.100.8:3000'])
      const res = await wire(l.url, `${origin.url}/kept-alive`)
      assert.equal(res.status, 403)
      assert.equal(res.headers['forwardcache-error'], 'forbidden-peer')
      assert.equal(connections, opened, 'refused on a connection that had been let in')
      peer.setPeers([l.url, member])
      assert.equal((await wire(l.url, `${origin.url}/kept-alive`)).status, 200, 'back in the pool, let in again')
      assert.equal(origin.count('/kept-alive'), 1)
    } finally {
      await peer.destroy()
      await stopServer(l.server)
    }
  })

  test('PeerAddresses: loopback and pool members in, everything else out', async () => {
    const addresses = new PeerAddresses()
    addresses.update(['http://10.1.2.3:3000', 'http://[fd00::7]:3000'])
    assert.equal(await addresses.allows(undefined), false)
    assert.equal(await addresses.allows('10.1.2.3'), true)
    assert.equal(await addresses.allows('::ffff:10.1.2.3'), true)
    assert.equal(await addresses.allows('fd00::7'), true)
    assert.equal(await addresses.allows('FD00::7'), true)
    assert.equal(await addresses.allows('10.1.2.4'), false)
    assert.equal(await addresses.allows('fd00::8'), false)
    assert.equal(await addresses.allows('0.0.0.0'), false)
    assert.equal(await addresses.allows('::'), false)
    addresses.update(['http://10.9.9.9:3000'])
    assert.equal(await addresses.allows('10.1.2.3'), false, 'a peer removed from the pool is out')
  })

  test('trustLoopback: false takes away the loopback exemption (a same-host proxy or sidecar)', async () => {
    const strict = new PeerAddresses(false)
    strict.update(['http://10.1.2.3:3000'])
    assert.equal(await strict.allows('127.0.0.1'), false)
    assert.equal(await strict.allows('::1'), false)
    assert.equal(await strict.allows('10.1.2.3'), true)
    const trusting = new PeerAddresses()
    trusting.update(['http://10.1.2.3:3000'])
    assert.equal(await trusting.allows('127.0.0.1'), true)
  })

  test('handler() warns once per process (FORWARDCACHE_UNAUTHENTICATED), and not at all with a secret', async () => {
    const entry = new URL('../src/index.js', import.meta.url).href
    const script = (secret: string | undefined): string => `
      import { Peer } from ${JSON.stringify(entry)}
      const codes = []
      process.on('warning', (w) => codes.push(w.code ?? w.name))
      const opts = ${secret === undefined ? '{}' : JSON.stringify({ secret })}
      const a = new Peer({ ...opts, self: 'http://127.0.0.1:1' })
      const b = new Peer({ ...opts, self: 'http://127.0.0.1:2', peers: ['http://127.0.0.1:2'] })
      await new Promise((r) => setImmediate(r))
      const beforeHandler = codes.length
      a.handler(); a.handler(); b.handler()
      await new Promise((r) => setImmediate(r))
      await a.destroy(); await b.destroy()
      console.log(JSON.stringify({ beforeHandler, codes }))
    `
    const run = (secret: string | undefined) => new Promise<{ beforeHandler: number, codes: string[] }>((resolve, reject) => {
      execFile(process.execPath, ['--input-type=module', '--no-warnings=ExperimentalWarning', '-e', script(secret)], { timeout: 10_000 }, (err, stdout, stderr) => {
        if (err !== null) return reject(new Error(`${err.message}\n${stderr}`))
        resolve(JSON.parse(stdout.trim().split('\n').at(-1) as string))
      })
    })
    const open = await run(undefined)
    assert.deepEqual(open.codes.filter((c) => c === 'FORWARDCACHE_UNAUTHENTICATED'), ['FORWARDCACHE_UNAUTHENTICATED'])
    const closed = await run(SECRET)
    assert.deepEqual(closed.codes.filter((c) => c === 'FORWARDCACHE_UNAUTHENTICATED'), [])
  })
})

test('a signature is accepted in its one canonical base64url spelling, never in the three others that decode to the same bytes', () => {
  const now = Date.parse('2030-01-01T00:00:00Z')
  const signer = new Signer([SECRET], WINDOW, () => now)
  const url = 'http://origin.example/x'
  const audience = 'http://b.example:8080'
  const header = signer.sign('GET', url, audience)
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  // 43 characters carry 258 bits of a 256-bit HMAC: the last one's two low bits are padding.
  const last = alphabet.indexOf(header.slice(-1))
  const others = [0, 1, 2, 3].map((k) => (last & ~3) | k).filter((i) => i !== last).map((i) => header.slice(0, -1) + (alphabet[i] as string))
  assert.equal(others.length, 3)
  for (const forged of others) {
    assert.equal(Buffer.from(forged.slice(-43), 'base64url').equals(Buffer.from(header.slice(-43), 'base64url')), true)
    assert.deepEqual(signer.verify('GET', url, audience, forged), { ok: false, reason: 'malformed signature' })
  }
  assert.deepEqual(signer.verify('GET', url, audience, header), { ok: true })
  assert.deepEqual(signer.verify('GET', url, audience, header), { ok: false, reason: 'replayed signature' })
  for (const forged of others) assert.equal(signer.verify('GET', url, audience, forged).ok, false)
})
