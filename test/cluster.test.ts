import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { PeerStats } from '../src/index.js'
import { REQUEST_STYLES, startCluster, type Cluster, type PeerProcess, type RequestResult, type RequestStyle } from './fixtures/peer-process.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'

const N_URLS = 30

/** Each child gets the pool in a different order (and one of them in another spelling). */
function poolFor (index: number, urls: string[]): string[] {
  switch (index % 3) {
    case 0: return [...urls]
    case 1: return [...urls].reverse()
    default: return [...urls.slice(1), ...urls.slice(0, 1)].map((u) => `${u}/`)
  }
}

type Counter = 'forwards' | 'servedForPeers' | 'originFetches' | 'misses' | 'localHits' | 'stored' | 'requests' | 'forwardErrors'

async function statsSum (peers: PeerProcess[]): Promise<Record<Counter, number>> {
  const all: PeerStats[] = await Promise.all(peers.map((p) => p.stats()))
  const names: Counter[] = ['forwards', 'servedForPeers', 'originFetches', 'misses', 'localHits', 'stored', 'requests', 'forwardErrors']
  const out = {} as Record<Counter, number>
  for (const name of names) out[name] = all.reduce((n, s) => n + s[name], 0)
  return out
}

function diff (a: Record<Counter, number>, b: Record<Counter, number>): Record<Counter, number> {
  const out = {} as Record<Counter, number>
  for (const k of Object.keys(a) as Counter[]) out[k] = b[k] - a[k]
  return out
}

function isHit (res: RequestResult): boolean {
  return /^forwardcache; hit\b/.test(res.headers['cache-status'] ?? '')
}

describe('a cluster of three peers in child processes', () => {
  let origin: CountingOrigin
  let cluster: Cluster
  let peers: PeerProcess[]

  before(async () => {
    origin = await startOrigin()
    cluster = await startCluster(3, { poolFor })
    peers = cluster.peers
  })

  after(async () => {
    await cluster?.close()
    await origin?.close()
  })

  /** The owner of each URL, as peer 0 sees it (the test below shows all three agree). */
  async function ownersOf (urls: string[]): Promise<string[]> {
    const owners = await (peers[0] as PeerProcess).ownerOf(urls)
    return owners.map((o) => {
      assert.ok(o !== null, 'every URL has an owner')
      return o
    })
  }

  test('every child names the same owner for every URL, whatever the order of its pool', async () => {
    const urls: string[] = []
    for (let i = 0; i < N_URLS; i++) urls.push(`${origin.url}/owner/${i}`)
    urls.push('https://example.com/a.js', 'http://example.org/b?c=d')
    const answers = await Promise.all(peers.map((p) => p.ownerOf(urls)))
    const [first, ...rest] = answers
    assert.ok(first !== undefined)
    for (const other of rest) assert.deepEqual(other, first)
    for (const owner of first) assert.ok(owner !== null && cluster.urls.includes(owner), `owner ${String(owner)} is a pool member`)
    // Spread: with 30 URLs each of the three peers owns some (each misses all with p ~ 5e-6).
    for (const u of cluster.urls) assert.ok(first.includes(u), `${u} owns at least one of ${N_URLS} URLs`)
    // The owner is a function of the normalised URL: another spelling of it, same owner.
    const respelled = urls.slice(0, N_URLS).map((u) => u.replace('http://', 'HTTP://').replace('/owner/', '/./owner/'))
    assert.deepEqual(await (peers[2] as PeerProcess).ownerOf(respelled), first.slice(0, N_URLS))
    // ... and so is an unreserved character percent-encoded, in either case (RFC 3986 section 6.2.2).
    const encoded = urls.slice(0, N_URLS).map((u, i) => u.replace('/owner/', i % 2 === 0 ? '/%6Fwner/' : '/%6fwn%65r/'))
    assert.deepEqual(await (peers[1] as PeerProcess).ownerOf(encoded), first.slice(0, N_URLS))
  })

  test('spellings of one URL that differ only in percent-encoding share one entry: one origin request, made with the decoded spelling', async () => {
    for (let i = 0; i < 6; i++) {
      const spellings = [`/%7Etilde/${i}`, `/~tilde/${i}`, `/%7etilde/${i}?a=%2f`, `/~tilde/${i}?a=%2F`]
      for (let k = 0; k < spellings.length; k++) {
        const path = spellings[k] as string
        const res = await (peers[(i + k) % peers.length] as PeerProcess).request({ url: origin.url + path, style: REQUEST_STYLES[k % REQUEST_STYLES.length] as RequestStyle })
        assert.equal(res.status, 200, path)
      }
      assert.equal(origin.count(`/~tilde/${i}`), 1, `/~tilde/${i} reached the origin once`)
      assert.equal(origin.count(`/~tilde/${i}?a=%2F`), 1, `/~tilde/${i}?a=%2F reached the origin once`)
      assert.equal(origin.count(`/%7Etilde/${i}`) + origin.count(`/%7etilde/${i}?a=%2f`), 0, 'the origin never saw an encoded tilde or lower-case hex')
    }
  })

  test('each cacheable URL reaches the origin exactly once for the whole cluster, through every peer and request style', async () => {
    const paths: string[] = []
    for (let i = 0; i < N_URLS; i++) paths.push(`/cacheable/${i}`)
    const urls = paths.map((p) => origin.url + p)
    const owners = await ownersOf(urls)
    const before = await statsSum(peers)
    let fromNonOwners = 0
    let made = 0

    for (let u = 0; u < urls.length; u++) {
      const url = urls[u] as string
      const path = paths[u] as string
      let first = true
      // Start at a different peer each time, so the first request is sometimes the owner's
      // and sometimes a forwarded one.
      for (let k = 0; k < peers.length; k++) {
        const peer = peers[(u + k) % peers.length] as PeerProcess
        for (const style of REQUEST_STYLES) {
          const res = await peer.request({ url, style })
          made++
          if (peer.url !== owners[u]) fromNonOwners++
          const what = `${style} via ${peer.url === owners[u] ? 'owner' : 'non-owner'} ${peer.url} for ${path}`
          assert.equal(res.status, 200, what)
          assert.equal(res.body, `body of ${path}`, what)
          if (first) {
            assert.match(res.headers['cache-status'] ?? '', /^forwardcache; fwd=uri-miss; fwd-status=200; stored/, what)
            first = false
          } else {
            assert.ok(isHit(res), `${what}: expected a hit, Cache-Status was ${String(res.headers['cache-status'])}`)
            assert.match(res.headers.age ?? '', /^[0-9]+$/, `${what}: a stored response carries Age`)
          }
          assert.equal(origin.count(path), 1, `${what}: the origin saw ${path} once`)
        }
      }
    }
    for (const path of paths) assert.equal(origin.count(path), 1, path)

    const d = diff(before, await statsSum(peers))
    assert.equal(d.requests, made, 'requests counts every GET/HEAD dispatched through a peer')
    assert.equal(d.forwards, fromNonOwners, 'the sum of forwards is the number of requests made from non-owners')
    assert.equal(d.forwardErrors, 0)
    assert.equal(d.servedForPeers, fromNonOwners, 'every forward was served by an owner')
    assert.equal(d.originFetches, N_URLS)
    assert.equal(d.misses, N_URLS)
    assert.equal(d.stored, N_URLS)
    assert.equal(d.localHits, made - N_URLS)
  })

  test('responses with Cache-Control no-store or private reach the origin on every request', async () => {
    const kinds: Array<[string, string]> = [['no-store', 'no-store'], ['private', 'private, max-age=300']]
    for (const [name, cacheControl] of kinds) {
      for (let i = 0; i < 3; i++) {
        const path = `/uncacheable/${name}/${i}`
        origin.route(path, (req, res) => {
          const body = `fresh ${path} #${origin.count(path)}`
          res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cacheControl, 'content-length': Buffer.byteLength(body) })
          res.end(req.method === 'HEAD' ? undefined : body)
        })
        let expected = 0
        for (const peer of peers) {
          for (const style of REQUEST_STYLES) {
            const res = await peer.request({ url: origin.url + path, style })
            expected++
            const what = `${style} via ${peer.url} for ${path}`
            assert.equal(res.status, 200, what)
            assert.equal(res.body, `fresh ${path} #${expected}`, what)
            assert.equal(origin.count(path), expected, `${what}: every request reaches the origin`)
            assert.doesNotMatch(res.headers['cache-status'] ?? '', /stored|; hit/, what)
          }
        }
      }
    }
  })

  test('a HEAD after a GET is answered from the cache, through every peer and style', async () => {
    const path = '/head-after-get'
    const url = origin.url + path
    const get = await (peers[1] as PeerProcess).request({ url, style: 'request' })
    assert.equal(get.status, 200)
    assert.equal(get.body, `body of ${path}`)
    assert.equal(origin.count(path), 1)
    for (const peer of peers) {
      for (const style of REQUEST_STYLES) {
        const res = await peer.request({ url, style, method: 'HEAD' })
        const what = `HEAD ${style} via ${peer.url}`
        assert.equal(res.status, 200, what)
        assert.equal(res.body, '', what)
        assert.ok(isHit(res), `${what}: expected a hit, Cache-Status was ${String(res.headers['cache-status'])}`)
        assert.equal(origin.count(path), 1, `${what}: the origin was not asked again`)
      }
    }
    assert.deepEqual(origin.log.filter((e) => e.url === path).map((e) => e.method), ['GET'])
  })

  test('a POST through a peer goes to the origin and invalidates the URL cluster-wide', async () => {
    // Three URLs per poster, so that each peer posts both as the owner and as a non-owner in
    // most runs, in each request style.
    const paths: string[] = []
    for (let k = 0; k < peers.length; k++) for (let j = 0; j < 3; j++) paths.push(`/post-invalidates/${k}/${j}`)
    const owners = await ownersOf(paths.map((p) => origin.url + p))
    for (let i = 0; i < paths.length; i++) {
      const path = paths[i] as string
      const url = origin.url + path
      const owner = owners[i] as string
      const poster = peers[Math.floor(i / 3)] as PeerProcess
      const style = REQUEST_STYLES[i % REQUEST_STYLES.length] as (typeof REQUEST_STYLES)[number]
      const role = poster.url === owner ? 'owner' : 'non-owner'
      // Cached cluster-wide.
      for (const peer of peers) {
        const res = await peer.request({ url, style: 'request' })
        assert.equal(res.body, `body of ${path}`)
      }
      assert.equal(origin.count(path), 1)

      const post = await poster.request({ url, style, method: 'POST', body: 'payload', headers: { 'content-type': 'text/plain' } })
      assert.equal(post.status, 200, `POST (${style}) via the ${role}`)
      assert.equal(post.body, `body of ${path}`)
      assert.equal(origin.count(path), 2, `POST (${style}) via the ${role} reached the origin`)
      assert.equal(origin.log.at(-1)?.method, 'POST')

      // The next GET, through another peer, is not served from the cache: once the POST's
      // response is in the caller's hands, the stale entry must be gone from the owner.
      const next = (role === 'owner' ? peers.find((p) => p !== poster) : peers.find((p) => p.url === owner)) as PeerProcess
      const again = await next.request({ url, style: 'undici-fetch' })
      assert.equal(again.status, 200)
      assert.equal(again.body, `body of ${path}`)
      assert.equal(origin.count(path), 3,
        `after a POST (${style}) via the ${role}, the next GET via ${next === poster ? 'the poster' : next.url === owner ? 'the owner' : 'a non-owner'} ` +
        `must reach the origin; it was served with Cache-Status: ${String(again.headers['cache-status'])}`)
      assert.equal(origin.log.at(-1)?.method, 'GET')

      // ... and is stored again for everyone.
      for (const peer of peers) {
        for (const s of REQUEST_STYLES) {
          const res = await peer.request({ url, style: s })
          assert.equal(res.body, `body of ${path}`)
          assert.ok(isHit(res), `re-cached after the POST: ${String(res.headers['cache-status'])}`)
        }
      }
      assert.equal(origin.count(path), 3)
    }
  })
})
