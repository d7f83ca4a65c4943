import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Agent, request, type Dispatcher } from 'undici'
import { addressForbidden, embeddedIPv4, guardedLookup } from '../src/security/address-policy.js'
import { PeerAddresses } from '../src/security/peer-addresses.js'
import { rawRequest, startCanary, startPeers, type Canary, type MountedPeer } from './helpers/hostile.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { ownedBy } from './helpers/peers.js'

// The address policy over every spelling of an IPv6 address, over the IPv6 ranges that lead
// to an IPv4 address (SIIT, 6to4, Teredo, NAT64), and over the IPv4 ranges the Internet never
// routes. A refusal is immediate; an address let through would be tried for up to the connect
// timeout (2 s here), so the error code tells the two apart. Then the request fields that
// would make an origin act on another path, scheme or method, on every way to an origin.

const FAST_MS = 1500

let canary: Canary
let guarded: MountedPeer // blockPrivateOrigins: true
let open: MountedPeer // the defaults
const agent = new Agent()

before(async () => {
  canary = await startCanary('127.0.0.1')
  ;[guarded] = await startPeers([{ originConnectTimeout: 2000, blockPrivateOrigins: true }]) as [MountedPeer]
  ;[open] = await startPeers([{ originConnectTimeout: 2000 }]) as [MountedPeer]
})

after(async () => {
  await guarded.close()
  await open.close()
  await canary.close()
  await agent.close()
})

async function local (peer: Dispatcher, url: string): Promise<{ code: string | undefined, ms: number }> {
  const t = performance.now()
  try {
    const res = await request(url, { dispatcher: peer })
    await res.body.dump()
    return { code: `status ${res.statusCode}`, ms: performance.now() - t }
  } catch (err) {
    return { code: (err as { code?: string }).code, ms: performance.now() - t }
  }
}

async function wire (base: string, url: string): Promise<{ status: number, error: unknown }> {
  const res = await request(`${base}/proxy?q=${encodeURIComponent(url)}`, { dispatcher: agent })
  await res.body.dump()
  return { status: res.statusCode, error: res.headers['forwardcache-error'] }
}

function lookup (host: string, blockPrivate: boolean): Promise<string | undefined> {
  return new Promise((resolve) => {
    guardedLookup(blockPrivate)(host, {}, (err) => resolve(err === null ? undefined : err.code))
  })
}

describe('every spelling of an IPv6 address gets the same answer', () => {
  // Each row: spellings of one address, and the verdicts [blockPrivateOrigins, defaults].
  const rows: Array<[string[], [boolean, boolean]]> = [
    [['::ffff:7f00:1', '::ffff:127.0.0.1', '0:0:0:0:0:ffff:7f00:1', '0000:0000:0000:0000:0000:FFFF:7F00:0001', '::FFFF:127.0.0.1', '[::ffff:7f00:1]'], [true, false]],
    // SIIT (IPv4-translated): the spelling inet_ntop and WHATWG URL write for it.
    [['::ffff:0:7f00:1', '::ffff:0:127.0.0.1', '0:0:0:0:ffff:0:7f00:1', '0:0:0:0:FFFF:0000:7F00:0001'], [true, false]],
    [['64:ff9b::7f00:1', '64:ff9b::127.0.0.1', '64:ff9b:0:0:0:0:7f00:1', '0064:FF9B:0000:0000:0000:0000:7F00:0001'], [true, false]],
    [['::7f00:1', '::127.0.0.1', '0:0:0:0:0:0:7f00:1'], [true, false]],
    [['::ffff:a9fe:a9fe', '0:0:0:0:0:ffff:169.254.169.254', '::ffff:0:a9fe:a9fe', '0:0:0:0:ffff:0:169.254.169.254', '64:ff9b:0::a9fe:a9fe'], [true, true]],
    [['fe80::1', 'FE80:0:0:0:0:0:0:1', 'fe80::1%eth0', 'fe80:0000::0001'], [true, true]],
    [['::1', '0:0:0:0:0:0:0:1', '0000::0001'], [true, false]],
    [['2001:4860:4860::8888', '2001:4860:4860:0:0:0:0:8888', '2001:4860:4860:0000::8888'], [false, false]]
  ]
  for (const [spellings, [withPrivate, withoutPrivate]] of rows) {
    test(`${spellings[0]}: ${withPrivate ? 'refused' : 'allowed'} with blockPrivateOrigins, ${withoutPrivate ? 'refused' : 'allowed'} without, in ${spellings.length} spellings`, () => {
      for (const s of spellings) {
        assert.equal(addressForbidden(s, true), withPrivate, `${s} with blockPrivateOrigins`)
        assert.equal(addressForbidden(s, false), withoutPrivate, `${s} without`)
      }
    })
  }

  test('an address that resolves in an odd spelling is refused on the DNS path too', async () => {
    // dns.lookup hands an IP literal back as it was written, as a resolver's AAAA answer
    // arrives: these reach the check in exactly these spellings.
    for (const host of ['0:0:0:0:ffff:0:7f00:1', '64:ff9b:0:0:0:0:7f00:1', '2002:7f00:1::1', '2001:0:4136:e378:8000:63bf:80ff:fffe', '64:ff9b:1::a00:1', '::ffff:0:10.0.0.1']) {
      assert.equal(await lookup(host, true), 'FC_ERR_FORBIDDEN_ADDRESS', host)
    }
    for (const host of ['::ffff:0:a9fe:a9fe', '2002:a9fe:a9fe::', '2001:0:4136:e378:8000:63bf:5601:5601']) {
      assert.equal(await lookup(host, false), 'FC_ERR_FORBIDDEN_ADDRESS', host)
    }
    assert.equal(await lookup('2002:808:808::1', true), undefined)
  })

  test('embeddedIPv4 (the same host, for the peer address check) reads any spelling but no tunnel', () => {
    assert.equal(embeddedIPv4('0:0:0:0:0:FFFF:7F00:0001'), '127.0.0.1')
    assert.equal(embeddedIPv4('[::ffff:127.0.0.1]'), '127.0.0.1')
    assert.equal(embeddedIPv4('64:ff9b:0:0:0:0:c633:6407'), '198.51.100.7')
    assert.equal(embeddedIPv4('0:0:0:0:0:0:0:1'), undefined, '::1 is IPv6 loopback, not 0.0.0.1')
    // A 6to4 or Teredo address is another host: it must not pass for loopback.
    assert.equal(embeddedIPv4('2002:7f00:1::1'), undefined)
    assert.equal(embeddedIPv4('2001:0:4136:e378:8000:63bf:80ff:fffe'), undefined)
    const addresses = new PeerAddresses()
    assert.equal(addresses.allowsNow('2002:7f00:1::1'), undefined)
    assert.equal(addresses.allowsNow('0:0:0:0:0:ffff:7f00:1'), true)
    assert.equal(addresses.allowsNow('::1'), true)
  })
})

describe('IPv6 ranges that lead to an IPv4 address are held to the IPv4 rules', () => {
  const privateCases: Array<[string, () => string]> = [
    ['SIIT [::ffff:0:127.0.0.1]', () => `http://[::ffff:0:127.0.0.1]:${canary.port}/`],
    ['6to4 [2002:7f00:1::1] (127.0.0.1 in bits 16-47)', () => `http://[2002:7f00:1::1]:${canary.port}/`],
    ['6to4 [2002:a00:1::] (10.0.0.1)', () => 'http://[2002:a00:1::]/'],
    ['Teredo [2001:0:4136:e378:8000:63bf:80ff:fffe] (client 127.0.0.1, inverted)', () => `http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:${canary.port}/`],
    ['NAT64 local-use [64:ff9b:1::7f00:1] (RFC 8215)', () => `http://[64:ff9b:1::7f00:1]:${canary.port}/`],
    ['NAT64 [64:ff9b:0:0:0:0:7f00:1]', () => `http://[64:ff9b:0:0:0:0:7f00:1]:${canary.port}/`]
  ]
  for (const [name, make] of privateCases) {
    test(`${name}: refused with blockPrivateOrigins, locally and on the wire`, async () => {
      const before = canary.connections()
      const viaPeer = await local(guarded.peer, make())
      assert.equal(viaPeer.code, 'FC_ERR_FORBIDDEN_ADDRESS')
      assert.ok(viaPeer.ms < FAST_MS, `took ${viaPeer.ms} ms`)
      assert.deepEqual(await wire(guarded.url, make()), { status: 403, error: 'forbidden-address' })
      assert.equal(canary.connections(), before)
    })
  }

  const metadataCases = [
    'http://[::ffff:0:a9fe:a9fe]/latest/meta-data/',
    'http://[2002:a9fe:a9fe::]/latest/meta-data/',
    'http://[2001:0:4136:e378:8000:63bf:5601:5601]/latest/meta-data/',
    'http://[2002:6464:64c8::1]/latest/meta-data/'
  ]
  for (const url of metadataCases) {
    test(`${url}: the metadata address inside is refused without blockPrivateOrigins`, async () => {
      const viaPeer = await local(open.peer, url)
      assert.equal(viaPeer.code, 'FC_ERR_FORBIDDEN_ADDRESS')
      assert.ok(viaPeer.ms < FAST_MS, `took ${viaPeer.ms} ms`)
      assert.deepEqual(await wire(open.url, url), { status: 403, error: 'forbidden-address' })
    })
  }
})

describe('IPv4 ranges the Internet never routes are refused with blockPrivateOrigins', () => {
  for (const host of ['240.0.0.1', '255.255.255.255', '224.0.0.1', '239.255.255.250', '192.0.0.8', '192.0.0.170', '192.0.2.1', '198.51.100.1', '203.0.113.1', '[2001:db8::1]', '[fec0::1]', '[ff02::1]']) {
    test(`${host}: refused with, left to the network without`, async () => {
      const viaPeer = await local(guarded.peer, `http://${host}/`)
      assert.equal(viaPeer.code, 'FC_ERR_FORBIDDEN_ADDRESS')
      assert.ok(viaPeer.ms < FAST_MS, `took ${viaPeer.ms} ms`)
      assert.equal(addressForbidden(host, false), false)
    })
  }

  test('their neighbours stay allowed', () => {
    for (const a of ['8.8.8.8', '192.0.1.1', '192.0.3.1', '223.255.255.255', '198.51.99.1', '203.0.114.1', '2002:808:808::1', '2001:0:4136:e378:8000:63bf:f7f7:f7f7', '64:ff9b::808:808', '64:ff9b:2::1', '::ffff:0:808:808', '2001:db9::1', '2606:4700::1111']) {
      assert.equal(addressForbidden(a, true), false, a)
    }
  })
})

describe('fields that override the path, scheme or method never reach a peer or an origin', () => {
  const overrides: Record<string, string> = {
    'X-Url-Scheme': 'https',
    'X-Scheme': 'https',
    'X-Forwarded-Protocol': 'https',
    'X-Forwarded-Uri': '/admin',
    'X-Original-URI': '/admin',
    'X-Forwarded-Path': '/admin',
    'X-Envoy-Original-Path': '/admin',
    'X-Original-Method': 'DELETE',
    'X-Forwarded-Method': 'DELETE',
    'X-HTTP-Method-Override': 'DELETE',
    'X-HTTP-Method': 'POST',
    'X-Method-Override': 'PUT'
  }
  const names = Object.keys(overrides).map((h) => h.toLowerCase())
  let origin: CountingOrigin
  let a: MountedPeer
  let b: MountedPeer
  let n = 0

  before(async () => {
    origin = await startOrigin()
    ;[a, b] = await startPeers([{}, {}]) as [MountedPeer, MountedPeer]
  })

  after(async () => {
    await a.close()
    await b.close()
    await origin.close()
  })

  const pathOf = (url: string): string => { const u = new URL(url); return u.pathname + u.search }

  /** What reached the origin for `url`: exactly one request, a plain GET/HEAD without the fields. */
  function assertCleanAtOrigin (url: string, method = 'GET'): void {
    const seen = origin.log.filter((r) => r.url === pathOf(url))
    assert.equal(seen.length, 1)
    assert.equal(seen[0]?.method, method)
    for (const h of names) assert.equal(seen[0]?.headers[h], undefined, `${h} reached the origin`)
  }

  /** The entry a caller without the fields gets is the one stored: a hit, not a new fetch. */
  async function assertHitAfter (url: string): Promise<void> {
    const res = await request(url, { dispatcher: a.peer })
    assert.equal(await res.body.text(), `body of ${pathOf(url)}`)
    assert.match(String(res.headers['cache-status']), /hit/)
    assert.equal(origin.count(pathOf(url)), 1)
  }

  test('a local caller, the URL owned by another peer: dropped before the forward and before the origin', async () => {
    const url = ownedBy(a.peer, b.url, (i) => `${origin.url}/fields?n=${n++}&i=${i}`)[0] as string
    const res = await request(url, { headers: overrides, dispatcher: a.peer })
    assert.equal(await res.body.text(), `body of ${pathOf(url)}`)
    const atB = b.seen.filter((r) => r.url.includes(encodeURIComponent(pathOf(url))))
    assert.equal(atB.length, 1)
    for (const h of names) assert.equal(atB[0]?.headers[h], undefined, `${h} reached the owner`)
    assertCleanAtOrigin(url)
    await assertHitAfter(url)
  })

  test('a local caller, the URL owned by this peer: dropped before the origin', async () => {
    const url = ownedBy(a.peer, a.url, (i) => `${origin.url}/fields?n=${n++}&i=${i}`)[0] as string
    const res = await request(url, { headers: overrides, dispatcher: a.peer })
    await res.body.dump()
    assertCleanAtOrigin(url)
    await assertHitAfter(url)
  })

  test('a HEAD forwarded to the owner: dropped too', async () => {
    const url = ownedBy(a.peer, b.url, (i) => `${origin.url}/fields?head=${n++}&i=${i}`)[0] as string
    const res = await request(url, { method: 'HEAD', headers: overrides, dispatcher: a.peer })
    await res.body.dump()
    const atB = b.seen.filter((r) => r.url.includes(encodeURIComponent(pathOf(url))))
    for (const h of names) assert.equal(atB[0]?.headers[h], undefined, `${h} reached the owner`)
    assertCleanAtOrigin(url, 'HEAD')
  })

  test('a request with credentials, which goes straight to the origin: dropped too', async () => {
    const url = `${origin.url}/fields?auth=${n++}`
    const res = await request(url, { headers: { ...overrides, authorization: 'Bearer x' }, dispatcher: a.peer })
    await res.body.dump()
    assertCleanAtOrigin(url)
  })

  test('a wire request to the handler: dropped before the origin', async () => {
    const url = `${origin.url}/fields?wire=${n++}`
    const lines = Object.entries(overrides).map(([k, v]) => `${k}: ${v}\r\n`).join('')
    const res = await rawRequest(Number(new URL(b.url).port),
      `GET /proxy?q=${encodeURIComponent(url)} HTTP/1.1\r\nHost: x\r\n${lines}Connection: close\r\n\r\n`)
    assert.ok(res.kind === 'response' && res.status === 200, JSON.stringify(res))
    assertCleanAtOrigin(url)
  })
})
