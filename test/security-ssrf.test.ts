import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Agent, errors, request, type Dispatcher } from 'undici'
import { originMatcher } from '../src/security/address-policy.js'
import { Peer } from '../src/index.js'
import { startCanary, startPeers, type Canary, type MountedPeer } from './helpers/hostile.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { ownedBy } from './helpers/peers.js'

// Origin policy and SSRF. Two canaries (an http server on 127.0.0.1 and one on [::1]) stand
// for internal services: during the refusal cases they must accept 0 connections. Every
// refusal must be fast: the origin connect timeout is 20 s, so a refusal that waited for a
// connection attempt to time out would blow the 5 s bound.

const FAST_MS = 5000
const slow = { originConnectTimeout: 20_000, originTimeout: 20_000 }

let origin: CountingOrigin
let canary4: Canary
let canary6: Canary
let guarded: MountedPeer // blockPrivateOrigins: true
let open: MountedPeer // the defaults
const agent = new Agent()

const canaryConnections = (): number => canary4.connections() + canary6.connections()

before(async () => {
  origin = await startOrigin()
  canary4 = await startCanary('127.0.0.1')
  canary6 = await startCanary('::1')
  ;[guarded] = await startPeers([{ ...slow, blockPrivateOrigins: true }]) as [MountedPeer]
  ;[open] = await startPeers([{ ...slow }]) as [MountedPeer]
})

after(async () => {
  await guarded.close()
  await open.close()
  await canary4.close()
  await canary6.close()
  await origin.close()
  await agent.close()
})

/** A request through the Peer as a local caller; the error when it fails. */
async function local (peer: Dispatcher, url: string): Promise<{ status: number, headers: Record<string, unknown>, body: string } | { error: Error & { code?: string } }> {
  try {
    const res = await request(url, { dispatcher: peer })
    return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
  } catch (err) {
    return { error: err as Error & { code?: string } }
  }
}

/** A request to a peer's handler over the wire protocol. */
async function wire (base: string, url: string, headers: Record<string, string> = {}) {
  const res = await request(`${base}/proxy?q=${encodeURIComponent(url)}`, { headers, dispatcher: agent })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

async function timed<T> (fn: () => Promise<T>): Promise<{ value: T, ms: number }> {
  const t = performance.now()
  const value = await fn()
  return { value, ms: performance.now() - t }
}

describe('blockPrivateOrigins: loopback and private addresses are refused before connecting', () => {
  const cases: Array<[string, () => string]> = [
    ['127.0.0.1', () => `http://127.0.0.1:${canary4.port}/internal`],
    ['localhost (a name: the resolved address is checked)', () => `http://localhost:${canary4.port}/internal`],
    ['[::ffff:127.0.0.1] (IPv4-mapped)', () => `http://[::ffff:127.0.0.1]:${canary4.port}/internal`],
    ['[::ffff:7f00:1] (IPv4-mapped, hex)', () => `http://[::ffff:7f00:1]:${canary4.port}/internal`],
    ['127.1 (short form)', () => `http://127.1:${canary4.port}/internal`],
    ['2130706433 (decimal)', () => `http://2130706433:${canary4.port}/internal`],
    ['0x7f000001 (hex)', () => `http://0x7f000001:${canary4.port}/internal`],
    ['0177.0.0.1 (octal)', () => `http://0177.0.0.1:${canary4.port}/internal`],
    ['0.0.0.0 (reaches this host on Linux)', () => `http://0.0.0.0:${canary4.port}/internal`],
    ['[::1]', () => `http://[::1]:${canary6.port}/internal`],
    ['[0:0:0:0:0:0:0:1]', () => `http://[0:0:0:0:0:0:0:1]:${canary6.port}/internal`],
    ['[::] (reaches this host on Linux)', () => `http://[::]:${canary6.port}/internal`],
    ['[::127.0.0.1] (IPv4-compatible)', () => `http://[::127.0.0.1]:${canary4.port}/internal`],
    ['[64:ff9b::127.0.0.1] (NAT64)', () => `http://[64:ff9b::127.0.0.1]:${canary4.port}/internal`],
    ['10.0.0.1', () => 'http://10.0.0.1/internal'],
    ['172.16.5.4', () => 'http://172.16.5.4/internal'],
    ['192.168.1.1', () => 'http://192.168.1.1/internal'],
    ['100.64.0.1 (carrier-grade NAT)', () => 'http://100.64.0.1/internal'],
    ['[fd12:3456::1] (unique local)', () => 'http://[fd12:3456::1]/internal']
  ]

  for (const [name, make] of cases) {
    test(`${name}: local caller gets ForbiddenAddressError, handler answers 403, nothing connects`, async () => {
      const url = make()
      const before = canaryConnections()
      const viaPeer = await timed(() => local(guarded.peer, url))
      assert.ok('error' in viaPeer.value, `expected an error, got ${JSON.stringify(viaPeer.value)}`)
      assert.equal(viaPeer.value.error.code, 'FC_ERR_FORBIDDEN_ADDRESS')
      assert.ok(viaPeer.ms < FAST_MS, `took ${viaPeer.ms} ms`)
      const viaWire = await timed(() => wire(guarded.url, url))
      assert.equal(viaWire.value.status, 403)
      assert.equal(viaWire.value.headers['forwardcache-error'], 'forbidden-address')
      assert.doesNotMatch(viaWire.value.body, /CANARY/)
      assert.ok(viaWire.ms < FAST_MS, `took ${viaWire.ms} ms`)
      assert.equal(canaryConnections(), before)
    })
  }
})

describe('link-local and cloud metadata addresses are always refused, fast', () => {
  const metadata = [
    'http://169.254.169.254/latest/meta-data/',
    'http://[fe80::1]/',
    'http://[::ffff:169.254.169.254]/',
    'http://[::ffff:a9fe:a9fe]/',
    'http://[fd00:ec2::254]/',
    'http://[fd00:ec2::23]/',
    'http://2852039166/latest/meta-data/',
    'http://0xa9fea9fe/latest/meta-data/',
    'http://0251.0376.0251.0376/latest/meta-data/',
    'http://169.254.169.254.:80/latest/meta-data/',
    'http://[::a9fe:a9fe]/',
    'http://[64:ff9b::a9fe:a9fe]/',
    'http://169.254.0.1/',
    'http://100.100.100.200/latest/meta-data/',
    'http://192.0.0.192/opc/v1/instance/'
  ]
  for (const url of metadata) {
    test(`${url}: refused with and without blockPrivateOrigins`, async () => {
      for (const peer of [open, guarded]) {
        const viaPeer = await timed(() => local(peer.peer, url))
        assert.ok('error' in viaPeer.value, `expected an error, got ${JSON.stringify(viaPeer.value)}`)
        assert.equal(viaPeer.value.error.code, 'FC_ERR_FORBIDDEN_ADDRESS')
        assert.ok(viaPeer.ms < FAST_MS, `took ${viaPeer.ms} ms`)
        const viaWire = await timed(() => wire(peer.url, url))
        assert.equal(viaWire.value.status, 403)
        assert.equal(viaWire.value.headers['forwardcache-error'], 'forbidden-address')
        assert.ok(viaWire.ms < FAST_MS, `took ${viaWire.ms} ms`)
      }
    })
  }

  test('a zone-scoped link-local URL is not even a URL: 400 / InvalidArgumentError', async () => {
    const url = 'http://[fe80::1%25eth0]/'
    const viaPeer = await local(open.peer, url)
    assert.ok('error' in viaPeer)
    assert.equal((await wire(open.url, url)).status, 400)
  })
})

describe('a refusal by the owner is final: the forwarder does not work around it', () => {
  test('A forwards a canary URL to its owner B, B refuses (403), the caller gets 403 and the canary nothing', async () => {
    const pair = await startPeers([{ ...slow, blockPrivateOrigins: true }, { ...slow, blockPrivateOrigins: true }]) as [MountedPeer, MountedPeer]
    try {
      const [a, b] = pair
      const urls = ownedBy(a.peer, b.url, (i) => `http://127.0.0.1:${canary4.port}/owned-by-b/${i}`, 3)
      const before = canaryConnections()
      for (const url of urls) {
        const res = await local(a.peer, url)
        assert.ok('status' in res, 'the owner\'s refusal is an answer, passed on')
        assert.equal(res.status, 403)
        assert.equal(res.headers['forwardcache-error'], 'forbidden-address')
      }
      assert.equal(b.peer.stats().servedForPeers, 3)
      assert.equal(a.peer.stats().forwardErrors, 0)
      assert.equal(canaryConnections(), before)
    } finally {
      await Promise.all(pair.map((p) => p.close()))
    }
  })
})

describe('the origins allowlist', () => {
  let listed: MountedPeer
  let other: CountingOrigin

  before(async () => {
    other = await startOrigin()
    const port = new URL(origin.url).port
    ;[listed] = await startPeers([{ ...slow, origins: [`127.0.0.1:${port}`] }]) as [MountedPeer]
  })
  after(async () => {
    await listed.close()
    await other.close()
  })

  test('a listed origin is served', async () => {
    const res = await local(listed.peer, `${origin.url}/listed`)
    assert.ok('status' in res)
    assert.equal(res.status, 200)
    assert.equal((await wire(listed.url, `${origin.url}/listed-wire`)).status, 200)
  })

  const refusals: Array<[string, () => string]> = [
    ['another port on the same host', () => `${other.url}/not-listed`],
    ['the same server by another name', () => `http://localhost:${new URL(origin.url).port}/by-name`],
    ['the canary', () => `${canary4.url}/internal`],
    ['a metadata address', () => 'http://169.254.169.254/latest/meta-data/'],
    ['a public host name', () => 'http://example.com/']
  ]
  for (const [name, make] of refusals) {
    test(`${name}: ForbiddenOriginError to a local caller, 403 from the handler, never fetched`, async () => {
      const url = make()
      const before = { other: other.count(), origin: origin.count(), canary: canaryConnections() }
      const res = await timed(() => local(listed.peer, url))
      assert.ok('error' in res.value)
      assert.equal(res.value.error.code, 'FC_ERR_FORBIDDEN_ORIGIN')
      assert.ok(res.ms < FAST_MS)
      const w = await wire(listed.url, url)
      assert.equal(w.status, 403)
      assert.equal(w.headers['forwardcache-error'], 'forbidden-origin')
      assert.deepEqual({ other: other.count(), origin: origin.count(), canary: canaryConnections() }, before)
    })
  }

  test('originMatcher: rules match whole host names, not prefixes or substrings', () => {
    const m = (rules: Array<string | RegExp>, url: string): boolean => originMatcher(rules)(new URL(url))
    assert.equal(m(['example.com'], 'https://example.com/x'), true)
    assert.equal(m(['example.com'], 'https://EXAMPLE.com/x'), true)
    assert.equal(m(['Example.COM'], 'https://example.com/x'), true)
    assert.equal(m(['example.com'], 'https://example.com.evil.net/'), false)
    assert.equal(m(['example.com'], 'https://evilexample.com/'), false)
    assert.equal(m(['example.com'], 'https://a.example.com/'), false)
    assert.equal(m(['example.com:8080'], 'http://example.com:8080/'), true)
    assert.equal(m(['example.com:8080'], 'http://example.com:8081/'), false)
    assert.equal(m(['*.example.com'], 'https://a.example.com/'), true)
    assert.equal(m(['*.example.com'], 'https://a.b.example.com/'), true)
    assert.equal(m(['*.example.com'], 'https://example.com/'), false)
    assert.equal(m(['*.example.com'], 'https://badexample.com/'), false)
    assert.equal(m(['*.example.com'], 'https://a.example.com.evil.net/'), false)
    assert.equal(m(['https://example.com'], 'https://example.com:443/'), true)
    assert.equal(m(['https://example.com'], 'http://example.com/'), false)
    assert.equal(m(['https://example.com'], 'https://example.com:8443/'), false)
    assert.equal(m([/^https:\/\/[a-z]+\.example\.com$/], 'https://cdn.example.com/'), true)
    assert.equal(m([/^https:\/\/[a-z]+\.example\.com$/], 'https://cdn.example.com.evil.net/'), false)
    assert.equal(m(['[::1]'], 'http://[::1]:8080/'), true)
    assert.equal(m([], 'https://example.com/'), false)
  })

  test('originMatcher: host rules are read as URLs spell hosts, ports as effective ports, and a /g RegExp answers the same every time', () => {
    const m = (rules: Array<string | RegExp>, url: string): boolean => originMatcher(rules)(new URL(url))
    assert.equal(m(['[::1]:8080'], 'http://[::1]:8080/'), true)
    assert.equal(m(['[::1]:8080'], 'http://[::1]:8081/'), false)
    assert.equal(m(['[0:0::1]'], 'http://[::1]/'), true)
    assert.equal(m(['example.com:443'], 'https://example.com/'), true)
    assert.equal(m(['example.com:443'], 'http://example.com/'), false)
    assert.equal(m(['example.com:80'], 'http://example.com/'), true)
    assert.equal(m(['example.com:80'], 'https://example.com/'), false)
    assert.equal(m(['bücher.example'], 'http://bücher.example/'), true)
    assert.equal(m(['*.bücher.example'], 'http://www.xn--bcher-kva.example/'), true)
    const global = /^http:\/\/example\.com$/g
    assert.deepEqual([1, 2, 3, 4].map(() => m([global], 'http://example.com/')), [true, true, true, true])
    // A rule that is no host at all is refused when the Peer is made, not silently never matched.
    for (const bad of ['::1', 'example.com/path', 'user@example.com', 'exa mple.com']) {
      assert.throws(() => new Peer({ self: 'http://127.0.0.1:1', origins: [bad] }), /expected opts\.origins\[0\]/, bad)
    }
  })
})

describe('URL shapes: only http/https, no userinfo, fragments dropped', () => {
  const schemes = ['ftp://127.0.0.1/x', 'file:///etc/passwd', 'gopher://127.0.0.1:25/_HELO', 'ws://127.0.0.1/x', 'wss://127.0.0.1/x',
    'data:text/plain,hello', 'javascript:alert(1)', 'dict://127.0.0.1:11211/stats', 'ldap://127.0.0.1/', 'jar:http://127.0.0.1/x.jar!/']
  for (const url of schemes) {
    test(`${url.split(':')[0]}: refused (InvalidArgumentError / 400)`, async () => {
      const u = new URL(url)
      const before = canaryConnections()
      await assert.rejects(open.peer.request({ origin: u.protocol + '//' + u.host, path: u.pathname.startsWith('/') ? u.pathname : '/' + u.pathname, method: 'GET' }), errors.InvalidArgumentError)
      assert.equal((await wire(open.url, url)).status, 400)
      assert.equal(canaryConnections(), before)
    })
  }

  test('userinfo is refused, in every spelling', async () => {
    const port = new URL(origin.url).port
    for (const auth of ['user:pass@', 'user@', ':pass@', 'user:@', '%75ser:pass@']) {
      const url = `http://${auth}127.0.0.1:${port}/userinfo`
      await assert.rejects(open.peer.request({ origin: `http://${auth}127.0.0.1:${port}`, path: '/userinfo', method: 'GET' }), errors.InvalidArgumentError, auth)
      assert.equal((await wire(open.url, url)).status, 400, auth)
    }
    assert.equal(origin.count('/userinfo'), 0)
  })

  test('fragments never reach the origin or the key', async () => {
    const a = await open.peer.request({ origin: origin.url, path: '/frag#one', method: 'GET' })
    assert.equal(a.statusCode, 200)
    assert.equal(await a.body.text(), 'body of /frag')
    const b = await wire(open.url, `${origin.url}/frag#two`)
    assert.equal(b.status, 200)
    assert.match(String(b.headers['cache-status']), /^forwardcache; hit/)
    const c = await open.peer.request({ origin: origin.url, path: '/frag?x=1#three', method: 'GET' })
    await c.body.dump()
    assert.equal(origin.count('/frag'), 1)
    assert.equal(origin.count('/frag?x=1'), 1)
    assert.equal(open.peer.ownerOf(`${origin.url}/frag#z`), open.peer.ownerOf(`${origin.url}/frag`))
    for (const r of origin.log) assert.doesNotMatch(r.url, /#/)
  })

  test('an unparsable URL is refused', async () => {
    for (const o of ['not a url', 'http://', 'http://[::1', 'http://a b/', 'http://exa\u0000mple.com']) {
      await assert.rejects(open.peer.request({ origin: o, path: '/', method: 'GET' }), errors.InvalidArgumentError, o)
      assert.equal((await wire(open.url, o + '/')).status, 400, o)
    }
  })
})

describe('redirects are returned, never followed', () => {
  before(() => {
    origin.route('/redirect-canary', (_req, res) => {
      res.writeHead(302, { location: `${canary4.url}/internal`, 'content-length': 0 })
      res.end()
    })
    origin.route('/redirect-metadata', (_req, res) => {
      res.writeHead(307, { location: 'http://169.254.169.254/latest/meta-data/', 'content-length': 0 })
      res.end()
    })
    origin.route('/redirect-cached', (_req, res) => {
      res.writeHead(301, { location: `${canary4.url}/internal`, 'cache-control': 'max-age=60', 'content-length': 0 })
      res.end()
    })
  })

  for (const [path, status] of [['/redirect-canary', 302], ['/redirect-metadata', 307], ['/redirect-cached', 301]] as const) {
    test(`${status} from the origin reaches the caller as ${status}`, async () => {
      const before = canaryConnections()
      const res = await local(open.peer, `${origin.url}${path}`)
      assert.ok('status' in res)
      assert.equal(res.status, status)
      assert.ok(typeof res.headers.location === 'string')
      const w = await wire(open.url, `${origin.url}${path}`)
      assert.equal(w.status, status)
      assert.equal(origin.count(path), status === 301 ? 1 : 2)
      assert.equal(canaryConnections(), before)
    })
  }
})

describe('one hop: loops end', () => {
  test('a request that already went through two forwardcache hops gets 508, in any spelling of Via', async () => {
    const vias = [
      '1.1 forwardcache, 1.1 forwardcache',
      '1.1 ForwardCache, 1.1 FORWARDCACHE',
      '1.0 fred, 1.1 forwardcache, 1.1 p.example.net, 1.1 forwardcache',
      '1.1 forwardcache,1.1 forwardcache (node)'
    ]
    for (const via of vias) {
      const w = await wire(open.url, `${origin.url}/looped`, { via })
      assert.equal(w.status, 508, via)
      assert.equal(w.headers['forwardcache-error'], 'loop')
    }
    assert.equal(origin.count('/looped'), 0)
    const one = await wire(open.url, `${origin.url}/one-hop`, { via: '1.1 forwardcache' })
    assert.equal(one.status, 200, 'one hop is ordinary peer traffic')
  })

  const nested = (base: string, target: string, depth: number): string => {
    let url = target
    for (let i = 0; i < depth; i++) url = `${base}/proxy?q=${encodeURIComponent(url)}`
    return url
  }

  test('an origin URL pointing back at the peer\'s own /proxy ends in 508 after a bounded number of hops', async () => {
    for (const depth of [2, 6]) {
      const before = open.seen.length
      const viaPeer = await timed(() => local(open.peer, nested(open.url, `${origin.url}/loop-${depth}`, depth)))
      assert.ok('status' in viaPeer.value)
      assert.equal(viaPeer.value.status, 508)
      assert.ok(viaPeer.ms < FAST_MS)
      assert.ok(open.seen.length - before <= 2, `handler entered ${open.seen.length - before} times`)
      const viaWire = await wire(open.url, nested(open.url, `${origin.url}/loop-${depth}-w`, depth))
      assert.equal(viaWire.status, 508)
      assert.equal(origin.count(`/loop-${depth}`), 0)
      assert.equal(origin.count(`/loop-${depth}-w`), 0)
    }
  })

  test('the same loop across two peers ends in 508', async () => {
    const pair = await startPeers([{ ...slow }, { ...slow }]) as [MountedPeer, MountedPeer]
    try {
      const [a, b] = pair
      const [url] = ownedBy(a.peer, b.url, (i) => nested(a.url, `${origin.url}/loop-pair-${i}`, 3))
      const res = await local(a.peer, url as string)
      assert.ok('status' in res)
      assert.equal(res.status, 508)
      assert.ok(a.seen.length + b.seen.length <= 4, `${a.seen.length + b.seen.length} handler entries`)
    } finally {
      await Promise.all(pair.map((p) => p.close()))
    }
  })

  test('with blockPrivateOrigins a peer on a private address cannot be used as an origin at all', async () => {
    const url = nested(guarded.url, 'http://example.com/', 2)
    const res = await local(guarded.peer, url)
    assert.ok('error' in res)
    assert.equal(res.error.code, 'FC_ERR_FORBIDDEN_ADDRESS')
    assert.equal((await wire(guarded.url, url)).status, 403)
  })
})

describe('control: the canaries do work', () => {
  test('without blockPrivateOrigins the same peer does reach a loopback canary (so 0 above means refused)', async () => {
    const control = await startCanary('127.0.0.1')
    try {
      const res = await local(open.peer, `${control.url}/control`)
      assert.ok('status' in res)
      assert.equal(res.status, 200)
      assert.equal(control.connections(), 1)
    } finally {
      await control.close()
    }
  })

  test('the refusal cases above left the canaries untouched', () => {
    assert.equal(canaryConnections(), 0)
  })
})
