import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { promisify } from 'node:util'
import { Agent, fetch as undiciFetch, request } from 'undici'
import { Peer, type NodeHandler } from '../src/index.js'
import { REQUEST_STYLES, startCluster, type Cluster, type PeerProcess } from './fixtures/peer-process.js'

const run = promisify(execFile)

interface Cert { dir: string, key: string, cert: string }

/** A fresh self-signed certificate for 127.0.0.1 and localhost, valid one day. */
async function makeCert (): Promise<Cert> {
  const dir = await mkdtemp(join(tmpdir(), 'forwardcache-tls-'))
  try {
    await run('/usr/bin/openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
      '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'
    ])
    return { dir, key: await readFile(join(dir, 'k.pem'), 'utf8'), cert: await readFile(join(dir, 'c.pem'), 'utf8') }
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}

interface HttpsOrigin {
  url: string
  count (path: string): number
  close (): Promise<void>
}

/** An HTTPS origin that counts requests per path and answers `secret of {path}`, max-age=300. */
async function startHttpsOrigin (cert: Cert): Promise<HttpsOrigin> {
  const counts = new Map<string, number>()
  const server = https.createServer({ key: cert.key, cert: cert.cert }, (req, res) => {
    const path = req.url ?? '/'
    counts.set(path, (counts.get(path) ?? 0) + 1)
    const body = `secret of ${path}`
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': Buffer.byteLength(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  server.keepAliveTimeout = 1000
  server.listen(0, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { server.once('listening', resolve); server.once('error', reject) })
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    count: (path) => counts.get(path) ?? 0,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  }
}

/** A plain-HTTP server for a peer's handler(), listening before the Peer exists. */
interface PeerServer {
  url: string
  server: http.Server
  /** Requests this server received on the peer protocol, as `METHOD q`. */
  received: string[]
  mount (handler: NodeHandler): void
  close (): Promise<void>
}

async function startPeerServer (): Promise<PeerServer> {
  let handler: NodeHandler | undefined
  const received: string[] = []
  const server = http.createServer((req, res) => {
    const q = new URLSearchParams((req.url ?? '').split('?')[1] ?? '').get('q')
    received.push(`${req.method ?? ''} ${q ?? ''}`)
    if (handler !== undefined) return handler(req, res)
    res.writeHead(503)
    res.end()
  })
  server.keepAliveTimeout = 1000
  server.listen(0, '127.0.0.1')
  await new Promise<void>((resolve) => server.once('listening', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    received,
    mount: (h) => { handler = h },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  }
}

describe('an HTTPS origin behind forwardcache', () => {
  let cert: Cert
  let origin: HttpsOrigin

  before(async () => {
    cert = await makeCert()
    origin = await startHttpsOrigin(cert)
  })

  after(async () => {
    await origin?.close()
    if (cert !== undefined) await rm(cert.dir, { recursive: true, force: true })
  })

  test('the test certificate is not trusted by default (so only a peer given the CA can fetch)', async () => {
    const plain = new Agent()
    try {
      await assert.rejects(request(`${origin.url}/untrusted`, { dispatcher: plain }), (err: Error & { code?: string }) => {
        assert.match(`${err.code ?? ''} ${err.message}`, /SELF_SIGNED|self[- ]signed|certificate/i)
        return true
      })
      assert.equal(origin.count('/untrusted'), 0)
    } finally {
      await plain.close()
    }
  })

  describe('two peers in this process; only the owner trusts the CA', () => {
    let a: PeerServer
    let b: PeerServer
    let owner: Peer
    let other: Peer
    let originAgent: Agent
    /** Paths whose owner is `owner`, found by asking the ring. */
    const paths: string[] = []

    before(async () => {
      a = await startPeerServer()
      b = await startPeerServer()
      const pool = [a.url, b.url]
      originAgent = new Agent({ connect: { ca: cert.cert } })
      // The owner reaches the HTTPS origin with an Agent that trusts the test CA; the other
      // peer has its default Agent, which would fail the TLS handshake: it can only get an
      // https URL by forwarding it, over plain HTTP, to the owner.
      owner = new Peer({ self: a.url, peers: pool, origin: originAgent })
      other = new Peer({ self: b.url, peers: [...pool].reverse() })
      a.mount(owner.handler())
      b.mount(other.handler())
      await Promise.all([owner.ready, other.ready])
      for (let i = 0; paths.length < 4 && i < 200; i++) {
        const path = `/assets/${i}.js`
        const url = origin.url + path
        assert.equal(owner.ownerOf(url), other.ownerOf(url), 'both peers agree on the owner')
        if (owner.ownerOf(url) === a.url) paths.push(path)
      }
      assert.equal(paths.length, 4, 'found https URLs owned by the peer that trusts the CA')
    })

    after(async () => {
      await Promise.all([owner?.close(), other?.close()])
      await originAgent?.close()
      await Promise.all([a?.close(), b?.close()])
    })

    test('owner first: the origin is fetched once over TLS, the non-owner gets a hit forwarded over plain HTTP', async () => {
      const path = paths[0] as string
      const url = origin.url + path
      const s0 = { forwards: other.stats().forwards, served: owner.stats().servedForPeers }

      const first = await request(url, { dispatcher: owner })
      assert.equal(first.statusCode, 200)
      assert.equal(await first.body.text(), `secret of ${path}`)
      assert.match(String(first.headers['cache-status']), /^forwardcache; fwd=uri-miss; fwd-status=200; stored/)
      assert.equal(origin.count(path), 1)

      const second = await request(url, { dispatcher: other })
      assert.equal(second.statusCode, 200)
      assert.equal(await second.body.text(), `secret of ${path}`)
      assert.match(String(second.headers['cache-status']), /^forwardcache; hit\b/)
      assert.match(String(second.headers.age), /^[0-9]+$/)
      assert.equal(origin.count(path), 1, 'the HTTPS origin was reached once')

      assert.equal(other.stats().forwards - s0.forwards, 1, 'the non-owner forwarded')
      assert.equal(owner.stats().servedForPeers - s0.served, 1, 'the owner served it for its peer')
      assert.deepEqual(a.received.filter((r) => r.endsWith(url)), [`GET ${url}`], 'the owner\'s plain-HTTP handler got the forward')
      assert.deepEqual(b.received.filter((r) => r.endsWith(url)), [], 'nothing was forwarded to the non-owner')
    })

    test('non-owner first: the forward fills the owner\'s cache, and the owner then answers from it', async () => {
      const path = paths[1] as string
      const url = origin.url + path

      const first = await undiciFetch(url, { dispatcher: other })
      assert.equal(first.status, 200)
      assert.equal(await first.text(), `secret of ${path}`)
      assert.match(first.headers.get('cache-status') ?? '', /^forwardcache; fwd=uri-miss; fwd-status=200; stored/)
      assert.equal(origin.count(path), 1)

      const second = await undiciFetch(url, { dispatcher: owner })
      assert.equal(second.status, 200)
      assert.equal(await second.text(), `secret of ${path}`)
      assert.match(second.headers.get('cache-status') ?? '', /^forwardcache; hit\b/)

      const third = await undiciFetch(url, { dispatcher: other })
      assert.equal(await third.text(), `secret of ${path}`)
      assert.match(third.headers.get('cache-status') ?? '', /^forwardcache; hit\b/)
      assert.equal(origin.count(path), 1, 'the HTTPS origin was reached once')
      assert.deepEqual(a.received.filter((r) => r.endsWith(url)), [`GET ${url}`, `GET ${url}`])
    })

    test('a HEAD through the non-owner after a GET is a hit, without the origin', async () => {
      const path = paths[2] as string
      const url = origin.url + path
      const get = await request(url, { dispatcher: other })
      assert.equal(await get.body.text(), `secret of ${path}`)
      const head = await request(url, { dispatcher: other, method: 'HEAD' })
      assert.equal(head.statusCode, 200)
      assert.equal(await head.body.text(), '')
      assert.match(String(head.headers['cache-status']), /^forwardcache; hit\b/)
      assert.equal(origin.count(path), 1)
    })
  })

  describe('three peers in child processes, given the CA over IPC', () => {
    let cluster: Cluster

    before(async () => {
      cluster = await startCluster(3, {
        options: { caPem: cert.cert },
        poolFor: (i, urls) => (i === 1 ? [...urls].reverse() : [...urls])
      })
    })

    after(async () => {
      await cluster?.close()
    })

    test('each https URL reaches the HTTPS origin once for the whole cluster, through every peer and request style', async () => {
      for (let u = 0; u < 6; u++) {
        const path = `/cluster/${u}.css`
        const url = origin.url + path
        let n = 0
        for (let k = 0; k < cluster.peers.length; k++) {
          const peer = cluster.peers[(u + k) % cluster.peers.length] as PeerProcess
          for (const style of REQUEST_STYLES) {
            const res = await peer.request({ url, style })
            const what = `${style} via ${peer.url} for ${path}`
            assert.equal(res.status, 200, what)
            assert.equal(res.body, `secret of ${path}`, what)
            if (n++ > 0) assert.match(res.headers['cache-status'] ?? '', /^forwardcache; hit\b/, what)
            assert.equal(origin.count(path), 1, what)
          }
        }
      }
    })
  })
})
