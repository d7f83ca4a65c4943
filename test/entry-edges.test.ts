import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import net, { type AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'
import { after, before, describe, test } from 'node:test'
import { errors, request } from 'undici'
import { Peer } from '../src/index.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { startLocalPeers, ownedBy } from './helpers/peers.js'

// Entry points and their input handling: what a caller passes to dispatch() and to the
// constructor reaches the origin as undici itself would send it, or is refused up front.

let origin: CountingOrigin
let peer: Peer

before(async () => {
  origin = await startOrigin()
  peer = new Peer({ self: 'http://127.0.0.1:1' })
  await peer.ready
})

after(async () => {
  await peer.close()
  await origin.close()
})

/** The request lines (path and query) the origin received while `fn` ran. */
async function seen (fn: () => Promise<unknown>): Promise<string[]> {
  const from = origin.log.length
  await fn()
  return origin.log.slice(from).map((r) => r.url)
}

describe('dispatch input', () => {
  test('the query option reaches the origin as undici serialises it (node:querystring), not as URLSearchParams does', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      // undici: %20 for a space; URLSearchParams would send +, which RFC 3986 does not read as a space.
      [{ q: 'a b' }, '/qs1?q=a%20b'],
      // undici: one pair per array element; URLSearchParams would send a=1%2C2.
      [{ a: ['1', '2'] }, '/qs2?a=1&a=2'],
      // undici: empty values for null and undefined; URLSearchParams would send the words.
      [{ a: null, b: undefined, c: 1 }, '/qs3?a=&b=&c=1']
    ]
    for (const [i, [query, expected]] of cases.entries()) {
      const path = `/qs${i + 1}`
      const lines = await seen(async () => {
        const res = await peer.request({ origin: origin.url, path, method: 'GET', query })
        assert.equal(await res.body.text(), `body of ${expected}`)
      })
      assert.deepEqual(lines, [expected], JSON.stringify(query))
    }
    // A URLSearchParams keeps its own serialisation (node:querystring would find no fields in it).
    const res = await peer.request({ origin: origin.url, path: '/qs4', method: 'GET', query: new URLSearchParams({ v: 'a b' }) as unknown as Record<string, string> })
    assert.equal(await res.body.text(), 'body of /qs4?v=a+b')
  })

  test('a query option with a path that has a fragment is refused, not dropped with the fragment', async () => {
    const lines = await seen(async () => {
      await assert.rejects(peer.request({ origin: origin.url, path: '/frag#top', method: 'GET', query: { a: '1' } }), errors.InvalidArgumentError)
    })
    assert.deepEqual(lines, [])
  })

  test('an origin string with an empty query or fragment is the origin: the path is not lost or moved into the query', async () => {
    // undici's own Agent sends /origin-x for both.
    for (const suffix of ['#', '?']) {
      const lines = await seen(async () => {
        const res = await peer.request({ origin: origin.url + suffix, path: '/origin-x', method: 'GET' })
        assert.equal(await res.body.text(), 'body of /origin-x', suffix)
      })
      assert.ok(lines.every((l) => l === '/origin-x'), `${suffix}: ${lines.join(' ')}`)
    }
  })

  test('an origin with a path, a query or a fragment is refused as undici refuses it, not joined to the path', async () => {
    for (const bad of [origin.url + '/base', origin.url + '/?a=1', origin.url + '#frag', new URL(origin.url + '/base')]) {
      const lines = await seen(async () => {
        await assert.rejects(peer.request({ origin: bad, path: '/joined', method: 'GET' }), errors.InvalidArgumentError, String(bad))
      })
      assert.deepEqual(lines, [], String(bad))
    }
    // Trailing slashes alone are still the origin.
    const res = await peer.request({ origin: origin.url + '/', path: '/slash', method: 'GET' })
    assert.equal(await res.body.text(), 'body of /slash')
  })
})

describe('backslashes', () => {
  test('a backslash in a dispatched path reaches the origin as %5C, not as a slash, and is its own entry', async () => {
    // undici sends the path as given; WHATWG URL parsing would turn the backslash into a slash
    // for http(s), which names another resource. %5C is the same character, as RFC 3986 allows
    // it in a path. In the query, WHATWG keeps a backslash as it is.
    const lines = await seen(async () => {
      for (const path of ['/bs/a\\b?x=\\', '/bs/a/b?x=\\', '/bs/a\\b?x=\\']) {
        const res = await peer.request({ origin: origin.url, path, method: 'GET' })
        await res.body.text()
      }
    })
    assert.deepEqual(lines, ['/bs/a%5Cb?x=\\', '/bs/a/b?x=\\'])
  })
})

describe('long URLs', () => {
  test('URLs of a megabyte are not remembered by dispatch: 200 of them do not stay on the heap', async () => {
    v8.setFlagsFromString('--expose-gc')
    const gc = vm.runInNewContext('gc') as () => void
    const filler = 'a'.repeat(1_000_000)
    gc()
    const before = process.memoryUsage().heapUsed
    for (let i = 0; i < 200; i++) {
      // node:http answers 431 to a request line this long; what matters is what stays behind.
      const res = await peer.request({ origin: origin.url, path: `/long-${i}/${filler}`, method: 'GET' })
      await res.body.dump()
    }
    gc()
    const grown = process.memoryUsage().heapUsed - before
    // Remembered, they took about 2 MB each (400 MB); a few MB of noise is allowed.
    assert.ok(grown < 64 * 2 ** 20, `heap grew by ${Math.round(grown / 2 ** 20)} MiB`)
  })

  test('URLs of a megabyte owned by another peer are not kept by the hot counts', async () => {
    v8.setFlagsFromString('--expose-gc')
    const gc = vm.runInNewContext('gc') as () => void
    const cluster = await startLocalPeers(2)
    try {
      const [a] = cluster.peers as [Peer, Peer]
      const filler = 'a'.repeat(1_000_000)
      const urls = ownedBy(a, cluster.urls[1] as string, (i) => `${origin.url}/long-hot-${i}/${filler}`, 150)
      gc()
      const before = process.memoryUsage().heapUsed
      for (const url of urls) {
        // The owner's server answers 431 to a q this long, and A fetches from the origin itself.
        const u = new URL(url)
        const res = await a.request({ origin: u.origin, path: u.pathname, method: 'GET' })
        await res.body.dump()
      }
      assert.equal(a.stats().forwards, urls.length)
      gc()
      const grown = process.memoryUsage().heapUsed - before
      // Counted, they took about 1 MB each (150 MB).
      assert.ok(grown < 48 * 2 ** 20, `heap grew by ${Math.round(grown / 2 ** 20)} MiB`)
    } finally {
      await cluster.close()
    }
  })
})

describe('host names', () => {
  test('a host name longer than DNS allows is refused, and leaves no per-host row for metrics() to print', async () => {
    const label = 'a'.repeat(63)
    const longest = `${label}.${label}.${label}.${'b'.repeat(63)}` // 255 characters
    assert.equal(typeof peer.ownerOf(`http://${longest}/`), 'string')
    assert.throws(() => peer.ownerOf(`http://x${longest}/`), errors.InvalidArgumentError)
    const p = new Peer({ self: 'http://127.0.0.1:1', originConnectTimeout: 200 })
    try {
      const filler = 'h'.repeat(1_000_000)
      // 200 of them made metrics() throw RangeError: Invalid string length (the standalone
      // peer's /metrics crashed the process). getaddrinfo refuses such names anyway.
      for (let i = 0; i < 200; i++) {
        await assert.rejects(p.request({ origin: `http://h${i}${filler}.invalid`, path: '/', method: 'GET' }), errors.InvalidArgumentError)
      }
      assert.deepEqual(Object.keys(p.stats().perHost), [])
      assert.ok(p.metrics().length < 100_000)
    } finally {
      await p.destroy()
    }
  })
})

describe('options', () => {
  test('vnodes too large for a ring is refused by the constructor, not a crash when the ring is built', () => {
    assert.throws(() => new Peer({ self: 'http://a', vnodes: 2 ** 32 }), (err: Error) => err instanceof errors.InvalidArgumentError && /opts\.vnodes/.test(err.message))
    assert.throws(() => new Peer({ self: 'http://a', vnodes: 100_000_000 }), errors.InvalidArgumentError)
  })

  test('a pool larger than a ring holds is refused up front, by the constructor and by setPeers', async () => {
    const peers = Array.from({ length: 65_537 }, (_, i) => `http://10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:3000`)
    assert.throws(() => new Peer({ self: peers[0] as string, peers }), (err: Error) => err instanceof errors.InvalidArgumentError && /at most 65536 peers/.test(err.message))
    const p = new Peer({ self: 'http://127.0.0.1:1' })
    try {
      assert.throws(() => p.setPeers(peers), errors.InvalidArgumentError)
      // The pool is left as it was: nothing half applied.
      assert.deepEqual(p.peers, ['http://127.0.0.1:1'])
      const res = await p.request({ origin: origin.url, path: '/after-bad-pool', method: 'GET' })
      assert.equal(await res.body.text(), 'body of /after-bad-pool')
    } finally {
      await p.destroy()
    }
  })

  test('a handler path of only slashes is the root, and a path a request line cannot carry is refused', async () => {
    for (const path of ['/é', '/€', '/a\u00a0b']) {
      assert.throws(() => new Peer({ self: 'http://a', path }), (err: Error) => err instanceof errors.InvalidArgumentError && /opts\.path/.test(err.message), path)
    }
    // '//' was taken as '', a path no forward could be sent to and no handler matched: every
    // request went to the origin uncached.
    const cluster = await startLocalPeers(2, { path: '//' })
    try {
      const [a, b] = cluster.peers as [Peer, Peer]
      const [url] = ownedBy(a, cluster.urls[1] as string, (i) => `${origin.url}/root-path-${i}`)
      const res = await request(url as string, { dispatcher: a })
      await res.body.text()
      assert.match(String(res.headers['cache-status']), /fwd=uri-miss/)
      assert.equal(b.stats().servedForPeers, 1)
    } finally {
      await cluster.close()
    }
  })
})

describe('forwardcache command', () => {
  test('a port it cannot listen on is an error line and exit code 1, not an uncaught exception', { timeout: 30_000 }, async () => {
    const busy = net.createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    const port = (busy.address() as AddressInfo).port
    try {
      const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url))
      const proc = spawn(process.execPath, [cli, '--self', `http://127.0.0.1:${port}`, '--host', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      proc.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
      proc.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
      const [code] = await once(proc, 'exit')
      assert.equal(code, 1)
      assert.doesNotMatch(stderr, /Unhandled 'error' event|\n\s+at /)
      assert.match(stdout, /"level":"error".*EADDRINUSE/)
    } finally {
      busy.close()
    }
  })
})
