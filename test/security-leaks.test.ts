import assert from 'node:assert/strict'
import type http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { request, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { prng, startPeers, type MountedPeer } from './helpers/hostile.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { deferred, ownedBy, waitFor } from './helpers/peers.js'

// No cross-user leaks. The origin names the user it thinks it is talking to (from
// Authorization, else from the Cookie) in the body and in Set-Cookie. A response is leaked
// when a user receives a body or a Set-Cookie that names the other user.

const USERS = ['alice', 'bob'] as const
type User = typeof USERS[number]
const other = (u: User): User => (u === 'alice' ? 'bob' : 'alice')

function identity (req: http.IncomingMessage): string {
  const auth = /^Bearer (\w+)$/.exec(req.headers.authorization ?? '')
  if (auth !== null) return auth[1] as string
  return /(?:^|;\s*)user=(\w+)/.exec(req.headers.cookie ?? '')?.[1] ?? 'anonymous'
}

type CacheControl = string | string[]
interface RouteSpec {
  cc: CacheControl
  vary?: string
  setCookie?: boolean
  /** The body names the user; false for content that is the same for everyone. */
  personal: boolean
}

/** Routes of the interleaving test, in the canonical (lower-case) spelling. */
const CANONICAL: Record<string, RouteSpec> = {
  '/pub': { cc: 'public, max-age=60', personal: false },
  '/priv': { cc: 'private, max-age=60', personal: true },
  '/nostore': { cc: 'no-store', personal: true },
  '/dupcc': { cc: ['max-age=60', 'no-store'], personal: true },
  '/vary': { cc: 'max-age=60', vary: 'Cookie', personal: true },
  '/cookie': { cc: 'max-age=60', setCookie: true, personal: true },
  '/auth': { cc: 'max-age=60', personal: true },
  '/varystar': { cc: 'max-age=60', vary: '*', personal: true },
  '/qualified': { cc: 'max-age=60, private="set-cookie"', setCookie: true, personal: false }
}

/** The same routes with directive names in other casings and split over several lines. */
const MIXED: Record<string, RouteSpec> = {
  '/m-pub': { cc: 'Public, Max-Age=60', personal: false },
  '/m-priv': { cc: 'max-age=60, PRIVATE', personal: true },
  '/m-priv2': { cc: ['Max-Age=60', 'Private'], personal: true },
  '/m-nostore': { cc: 'No-Store, max-age=60', personal: true },
  '/m-dupcc': { cc: ['max-age=60', 'NO-STORE'], personal: true },
  '/m-vary': { cc: 'MAX-AGE=60', vary: 'COOKIE', personal: true },
  '/m-cookie': { cc: 'Max-Age=60', setCookie: true, personal: true },
  '/m-varystar': { cc: 'max-age=60', vary: 'Accept, *', personal: true },
  '/m-qualified': { cc: 'max-age=60, Private="Set-Cookie"', setCookie: true, personal: false }
}

function mount (origin: CountingOrigin, routes: Record<string, RouteSpec>): void {
  for (const [path, spec] of Object.entries(routes)) {
    origin.route(path, (req, res) => {
      const user = identity(req)
      const body = spec.personal ? `user=${user} ${req.url}` : `shared ${req.url}`
      res.setHeader('cache-control', spec.cc)
      if (spec.vary !== undefined) res.setHeader('vary', spec.vary)
      if (spec.setCookie === true) res.setHeader('set-cookie', [`session=${user}; HttpOnly`, 'theme=dark'])
      res.setHeader('content-length', Buffer.byteLength(body))
      res.end(body)
    })
  }
}

interface Delivery { user: User, status: number, body: string, setCookie: string[], cacheStatus: string, path: string }

async function fetchAs (dispatcher: Dispatcher, url: string, user: User, withAuth: boolean): Promise<Delivery> {
  const headers: Record<string, string> = { cookie: `user=${user}; theme=dark` }
  if (withAuth) headers.authorization = `Bearer ${user}`
  const res = await request(url, { headers, dispatcher })
  const sc = res.headers['set-cookie']
  return {
    user,
    status: res.statusCode,
    body: await res.body.text(),
    setCookie: sc === undefined ? [] : Array.isArray(sc) ? sc : [sc],
    cacheStatus: String(res.headers['cache-status'] ?? ''),
    path: new URL(url).pathname
  }
}

/** Names the other user anywhere the user can see. */
function leaked (d: Delivery): boolean {
  const o = other(d.user)
  return d.body.includes(`user=${o}`) || d.setCookie.some((c) => c.includes(`session=${o}`))
}

let origin: CountingOrigin

before(async () => {
  origin = await startOrigin()
  mount(origin, CANONICAL)
  mount(origin, MIXED)
})
after(async () => { await origin.close() })

describe('1,000 interleaved requests from two users through a 3-peer cluster', () => {
  let cluster: MountedPeer[]
  before(async () => { cluster = await startPeers([{}, {}, {}]) })
  after(async () => { await Promise.all(cluster.map((p) => p.close())) })

  async function interleave (routes: Record<string, RouteSpec>, seed: number, t: { diagnostic: (s: string) => void }): Promise<Delivery[]> {
    const random = prng(seed)
    const paths = Object.keys(routes)
    const plan = Array.from({ length: 1000 }, () => {
      const path = paths[Math.floor(random() * paths.length)] as string
      const user = USERS[Math.floor(random() * 2)] as User
      const withAuth = path.endsWith('/auth') || random() < 0.2
      const via = cluster[Math.floor(random() * cluster.length)] as MountedPeer
      const id = Math.floor(random() * 4)
      return { url: `${origin.url}${path}?id=${id}&seed=${seed}`, user, withAuth, via }
    })
    const out: Delivery[] = []
    // Batches of 25 in flight at once, so that identical URLs meet on the owner and on the
    // forwarders (coalescing) as well as in the stores.
    for (let i = 0; i < plan.length; i += 25) {
      const batch = plan.slice(i, i + 25)
      out.push(...await Promise.all(batch.map((p) => fetchAs(p.via.peer, p.url, p.user, p.withAuth))))
    }
    const wrong = out.filter(leaked)
    const hits = out.filter((d) => /hit/.test(d.cacheStatus)).length
    const hot = out.filter((d) => /detail=hot/.test(d.cacheStatus)).length
    t.diagnostic(`seed ${seed}: ${out.length} requests, ${wrong.length} delivered to the wrong user, ${hits} cache hits (${hot} from hot copies on non-owners), ` +
      `${out.filter((d) => d.status !== 200).length} non-200`)
    const byPath: Record<string, number> = {}
    for (const d of wrong) byPath[d.path] = (byPath[d.path] ?? 0) + 1
    if (wrong.length > 0) t.diagnostic(`leaks by route: ${JSON.stringify(byPath)}`)
    if (wrong.length > 0) t.diagnostic(`first leaks: ${JSON.stringify(wrong.slice(0, 3).map((d) => ({ user: d.user, path: d.path, body: d.body, setCookie: d.setCookie, cacheStatus: d.cacheStatus })))}`)
    return out
  }

  test('canonical spellings: 0 responses delivered to the wrong user', async (t) => {
    const out = await interleave(CANONICAL, 1, t)
    assert.equal(out.length, 1000)
    assert.equal(out.filter((d) => d.status !== 200).length, 0)
    assert.equal(out.filter(leaked).length, 0)
    // Each personalised body names its own user.
    for (const d of out) {
      const spec = CANONICAL[d.path] as RouteSpec
      if (spec.personal) assert.ok(d.body.includes(`user=${d.user}`), JSON.stringify(d))
    }
    // The cache did work where it may: the shared routes were hits at least sometimes.
    assert.ok(out.some((d) => d.path === '/pub' && /hit/.test(d.cacheStatus)))
    assert.ok(out.some((d) => d.path === '/vary' && /hit/.test(d.cacheStatus)))
    assert.ok(out.some((d) => d.path === '/qualified' && /hit/.test(d.cacheStatus)))
  })

  test('mixed casings and split Cache-Control lines: 0 responses delivered to the wrong user', async (t) => {
    const out = await interleave(MIXED, 2, t)
    assert.equal(out.length, 1000)
    assert.equal(out.filter(leaked).length, 0)
  })
})

describe('Authorization bypasses the ring and the stores', () => {
  test('an Authorization request goes straight to the origin from the peer that was asked', async () => {
    const [a, b] = await startPeers([{}, {}]) as [MountedPeer, MountedPeer]
    try {
      const [url] = ownedBy(a.peer, b.url, (i) => `${origin.url}/auth?bypass=${i}`)
      const path = new URL(url as string).pathname + new URL(url as string).search
      for (const user of USERS) {
        const d = await fetchAs(a.peer, url as string, user, true)
        assert.equal(d.body, `user=${user} ${path}`)
        assert.equal(d.cacheStatus, 'forwardcache; fwd=bypass; detail=authorization')
      }
      assert.equal(b.peer.stats().servedForPeers, 0)
      assert.equal(b.seen.length, 0, 'no request reached the owner')
      assert.equal(a.peer.stats().forwards, 0)
      assert.equal(a.peer.stats().cacheEntries + b.peer.stats().cacheEntries, 0)
      assert.equal(origin.count(path), 2)
      assert.equal(origin.log.at(-1)?.headers.authorization, 'Bearer bob')
      // The next unauthenticated caller does not get either user's response.
      const anon = await request(url as string, { dispatcher: a.peer })
      assert.equal(await anon.body.text(), `user=anonymous ${path}`)
    } finally {
      await a.close()
      await b.close()
    }
  })

  test('an Authorization request that arrives on the wire is served but not stored', async () => {
    const [p] = await startPeers([{}]) as [MountedPeer]
    try {
      const url = `${origin.url}/auth?wire=1`
      for (const user of USERS) {
        const res = await request(`${p.url}/proxy?q=${encodeURIComponent(url)}`, { headers: { authorization: `Bearer ${user}` } })
        assert.equal(await res.body.text(), `user=${user} /auth?wire=1`)
      }
      const anon = await request(`${p.url}/proxy?q=${encodeURIComponent(url)}`)
      assert.equal(await anon.body.text(), 'user=anonymous /auth?wire=1')
      assert.equal(origin.count('/auth?wire=1'), 3)
    } finally {
      await p.close()
    }
  })
})

describe('shared-cache storage rules, one rule at a time', () => {
  let peer: Peer
  let n = 0
  before(async () => {
    peer = new Peer({ self: 'http://127.0.0.1:1' })
    await peer.ready
  })
  after(async () => { await peer.destroy() })

  /** Serves `spec` on a fresh path; alice asks, then bob. Returns both deliveries and the origin count. */
  async function aliceThenBob (spec: RouteSpec): Promise<{ alice: Delivery, bob: Delivery, fetched: number }> {
    const path = `/rule-${n++}`
    mount(origin, { [path]: spec })
    const alice = await fetchAs(peer, origin.url + path, 'alice', false)
    const bob = await fetchAs(peer, origin.url + path, 'bob', false)
    return { alice, bob, fetched: origin.count(path) }
  }

  // Never stored, whatever the spelling.
  const notStored: Array<[string, RouteSpec, string?]> = [
    ['private', { cc: 'private', personal: true }],
    ['private, max-age=60', { cc: 'private, max-age=60', personal: true }],
    ['Private', { cc: 'Private, max-age=60', personal: true }],
    ['PRIVATE', { cc: 'max-age=60, PRIVATE', personal: true }],
    ['s-maxage=60 with private on a second line', { cc: ['s-maxage=60', 'private'], personal: true }],
    ['public on one line, private on another', { cc: ['public, max-age=60', 'private'], personal: true }],
    ['private after a qualified private="x"', { cc: 'private="x", private, max-age=60', personal: true }],
    ['no-store', { cc: 'no-store', personal: true }],
    ['max-age=60, no-store', { cc: 'max-age=60, no-store', personal: true }],
    ['public, max-age=60, no-store', { cc: 'public, max-age=60, no-store', personal: true }],
    ['No-Store', { cc: 'No-Store, max-age=60', personal: true }],
    ['NO-STORE', { cc: 'max-age=60, NO-STORE', personal: true }],
    ['duplicated lines max-age=60 / no-store', { cc: ['max-age=60', 'no-store'], personal: true }],
    ['duplicated lines max-age=60 / No-Store', { cc: ['max-age=60', 'No-Store'], personal: true }],
    ['no-store with an empty quoted value', { cc: 'max-age=60, no-store=""', personal: true }],
    ['No-Store= with an empty bare value', { cc: 'max-age=60, No-Store=', personal: true }],
    ['Set-Cookie with max-age', { cc: 'max-age=60', setCookie: true, personal: true }],
    ['Set-Cookie with s-maxage', { cc: 's-maxage=60', setCookie: true, personal: true }],
    ['Set-Cookie with immutable', { cc: 'max-age=60, immutable', setCookie: true, personal: true }],
    ['Set-Cookie with must-revalidate', { cc: 'max-age=60, must-revalidate', setCookie: true, personal: true }],
    ['Vary: *', { cc: 'max-age=60', vary: '*', personal: true }],
    ['Vary: Accept, *', { cc: 'max-age=60', vary: 'Accept, *', personal: true }],
    ['Vary: " * "', { cc: 'public, max-age=60', vary: ' * ', personal: true }]
  ]
  for (const [name, spec, todo] of notStored) {
    test(`${name}: never stored, bob gets bob`, todo === undefined ? {} : { todo }, async () => {
      const { alice, bob, fetched } = await aliceThenBob(spec)
      assert.ok(alice.body.includes('user=alice'))
      assert.ok(!leaked(bob), `bob received ${JSON.stringify(bob)}`)
      assert.ok(bob.body.includes('user=bob'))
      assert.equal(fetched, 2)
      assert.doesNotMatch(bob.cacheStatus, /hit/)
    })
  }

  test('CDN-Cache-Control does not lift Cache-Control: private or no-store', async () => {
    for (const cc of ['private', 'no-store']) {
      const path = `/rule-cdn-${n++}`
      origin.route(path, (req, res) => {
        const body = `user=${identity(req)} ${req.url}`
        res.writeHead(200, { 'cache-control': cc, 'cdn-cache-control': 'max-age=60', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      })
      await fetchAs(peer, origin.url + path, 'alice', false)
      const bob = await fetchAs(peer, origin.url + path, 'bob', false)
      assert.ok(!leaked(bob), `${cc}: bob received ${JSON.stringify(bob)}`)
      assert.equal(origin.count(path), 2)
    }
  })

  test('Vary: Cookie stores one variant per user', async () => {
    const path = `/rule-vary-${n++}`
    mount(origin, { [path]: { cc: 'max-age=60', vary: 'Cookie', personal: true } })
    const a1 = await fetchAs(peer, origin.url + path, 'alice', false)
    const b1 = await fetchAs(peer, origin.url + path, 'bob', false)
    const a2 = await fetchAs(peer, origin.url + path, 'alice', false)
    const b2 = await fetchAs(peer, origin.url + path, 'bob', false)
    for (const d of [a1, b1, a2, b2]) assert.ok(!leaked(d) && d.body.includes(`user=${d.user}`), JSON.stringify(d))
    assert.match(a2.cacheStatus, /hit/)
    assert.match(b2.cacheStatus, /hit/)
    assert.equal(origin.count(path), 2)
  })

  test('private="set-cookie" stores the response without the cookie', async () => {
    const { alice, bob, fetched } = await aliceThenBob({ cc: 'max-age=60, private="set-cookie"', setCookie: true, personal: false })
    assert.ok(alice.setCookie.some((c) => c.startsWith('session=alice')), 'the requester gets its own cookie')
    assert.equal(fetched, 1)
    assert.match(bob.cacheStatus, /hit/)
    assert.deepEqual(bob.setCookie, [])
  })

  test('Private="Set-Cookie" (other casing) also strips the cookie', async () => {
    const { bob, fetched } = await aliceThenBob({ cc: 'Max-Age=60, Private="Set-Cookie"', setCookie: true, personal: false })
    assert.deepEqual(bob.setCookie, [])
    assert.ok(fetched <= 2)
  })

  test('no-cache="set-cookie" stores the response without the cookie', async () => {
    const { bob, fetched } = await aliceThenBob({ cc: 'max-age=60, no-cache="set-cookie"', setCookie: true, personal: false })
    assert.equal(fetched, 1)
    assert.deepEqual(bob.setCookie, [])
  })

  test('Set-Cookie with public is stored and replayed (the origin said so; documented)', async () => {
    const { bob, fetched } = await aliceThenBob({ cc: 'public, max-age=60', setCookie: true, personal: false })
    assert.equal(fetched, 1)
    assert.ok(bob.setCookie.some((c) => c.startsWith('session=alice')), 'RFC 9111 allows it; the docs warn about it')
  })

  test('a 206 is never stored and never replaces a full entry', async () => {
    const full = 'the whole representation'
    let answer206 = true
    origin.route('/ranged', (req, res) => {
      const headers = { 'cache-control': 'max-age=60', etag: '"r1"', 'accept-ranges': 'bytes' }
      if (req.headers.range !== undefined || answer206) {
        res.writeHead(206, { ...headers, 'content-range': `bytes 0-3/${full.length}`, 'content-length': 4 })
        return res.end(full.slice(0, 4))
      }
      res.writeHead(200, { ...headers, 'content-length': full.length })
      res.end(full)
    })
    const url = `${origin.url}/ranged`
    // A 206 to a plain GET (a misbehaving origin) is passed on but not stored.
    const first = await request(url, { dispatcher: peer })
    assert.equal(first.statusCode, 206)
    await first.body.dump()
    answer206 = false
    const second = await request(url, { dispatcher: peer })
    assert.equal(second.statusCode, 200)
    assert.equal(await second.body.text(), full)
    assert.equal(origin.count('/ranged'), 2)
    // Now a full entry is stored; a Range request must not replace it.
    const ranged = await request(url, { headers: { range: 'bytes=0-3' }, dispatcher: peer })
    await ranged.body.dump()
    const after = await request(url, { dispatcher: peer })
    assert.equal(after.statusCode, 200)
    assert.equal(await after.body.text(), full)
  })

  test('a 206 to a revalidating Range request does not leave a partial body behind', async () => {
    let clock = Date.now()
    const local = new Peer({ self: 'http://127.0.0.1:1', now: () => clock })
    const full = 'full body of the stale entry'
    try {
      await local.ready
      origin.route('/ranged-stale', (req, res) => {
        res.setHeader('date', new Date(clock).toUTCString())
        const headers = { 'cache-control': 'max-age=10', etag: '"s1"' }
        if (req.headers.range !== undefined) {
          res.writeHead(206, { ...headers, 'content-range': `bytes 0-3/${full.length}`, 'content-length': 4 })
          return res.end(full.slice(0, 4))
        }
        res.writeHead(200, { ...headers, 'content-length': full.length })
        res.end(full)
      })
      const url = `${origin.url}/ranged-stale`
      await (await request(url, { dispatcher: local })).body.dump()
      clock += 60_000
      const ranged = await request(url, { headers: { range: 'bytes=0-3' }, dispatcher: local })
      await ranged.body.dump()
      const after = await request(url, { dispatcher: local })
      assert.equal(after.statusCode, 200)
      assert.equal(await after.body.text(), full)
    } finally {
      await local.destroy()
    }
  })

  test('a conditional request is answered 304 from a full fill; the 304 is never stored as the entry', async () => {
    origin.route('/cond', (req, res) => {
      if (req.headers['if-none-match'] === '"c1"') {
        res.writeHead(304, { etag: '"c1"', 'cache-control': 'max-age=60' })
        return res.end()
      }
      res.writeHead(200, { etag: '"c1"', 'cache-control': 'max-age=60', 'content-length': 9 })
      res.end('full body')
    })
    const url = `${origin.url}/cond`
    const conditional = await request(url, { headers: { 'if-none-match': '"c1"' }, dispatcher: peer })
    assert.equal(conditional.statusCode, 304)
    await conditional.body.dump()
    assert.equal(origin.log.at(-1)?.headers['if-none-match'], undefined, 'the fill is unconditional')
    const plain = await request(url, { dispatcher: peer })
    assert.equal(plain.statusCode, 200)
    assert.equal(await plain.body.text(), 'full body')
    assert.equal(origin.count('/cond'), 1)
  })

  test('a 304 from an origin that ignores conditionals is passed on but never stored', async () => {
    origin.route('/always304', (_req, res) => {
      res.writeHead(304, { etag: '"x"', 'cache-control': 'max-age=60' })
      res.end()
    })
    const url = `${origin.url}/always304`
    for (let i = 0; i < 2; i++) {
      const res = await request(url, { dispatcher: peer })
      await res.body.dump()
      assert.equal(res.statusCode, 304)
    }
    assert.equal(origin.count('/always304'), 2)
  })
})

describe('coalesced waiters never receive a response that was not for them', () => {
  const shapes: Array<[string, RouteSpec, string?]> = [
    ['private', { cc: 'private, max-age=60', personal: true }],
    ['Set-Cookie', { cc: 'max-age=60', setCookie: true, personal: true }],
    ['Vary: Cookie', { cc: 'max-age=60', vary: 'Cookie', personal: true }],
    ['PRIVATE (upper case)', { cc: 'max-age=60, PRIVATE', personal: true }]
  ]
  let k = 0
  for (const [name, spec, todo] of shapes) {
    for (const side of ['owner', 'forwarder'] as const) {
      test(`${name}, joined on the ${side}`, todo === undefined ? {} : { todo }, async () => {
        const [a, b] = await startPeers([{}, {}]) as [MountedPeer, MountedPeer]
        const gate = deferred()
        const arrived = deferred()
        const path = `/coalesce-${k++}`
        origin.route(path, (req, res) => {
          arrived.resolve()
          gate.promise.then(() => {
            const user = identity(req)
            const body = `user=${user} ${req.url}`
            res.setHeader('cache-control', spec.cc)
            if (spec.vary !== undefined) res.setHeader('vary', spec.vary)
            if (spec.setCookie === true) res.setHeader('set-cookie', `session=${user}`)
            res.end(body)
          }, () => {})
        })
        try {
          const [url] = ownedBy(a.peer, b.url, (i) => `${origin.url}${path}?i=${i}`)
          // On the owner: both callers ask B directly. On the forwarder: both ask A.
          const via = side === 'owner' ? b.peer : a.peer
          const alice = fetchAs(via, url as string, 'alice', false)
          await arrived.promise
          const bob = fetchAs(via, url as string, 'bob', false)
          await waitFor(() => via.stats().coalescedWaits === 1, 5000, 'bob to join alice\'s request')
          gate.resolve()
          const [da, db] = await Promise.all([alice, bob])
          assert.ok(da.body.includes('user=alice'))
          assert.ok(!leaked(db), `bob received ${JSON.stringify(db)}`)
          assert.ok(db.body.includes('user=bob'))
        } finally {
          gate.resolve()
          await a.close()
          await b.close()
        }
      })
    }
  }
})
