import assert from 'node:assert/strict'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { Agent, request } from 'undici'
import { Peer } from '../src/index.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'
import { deferred, listen, ownedBy, startBlackhole, stopServer, waitFor } from './helpers/peers.js'
import { rawOrigin } from './helpers/raw-origin.js'

// Faults of the adversarial review that only a script had shown: slow readers of a shared
// fill, and what the handler does with responses node:http cannot write as they came.

let origin: CountingOrigin
const agent = new Agent()

before(async () => { origin = await startOrigin() })
after(async () => {
  await agent.close()
  await origin.close()
})

/** A Peer owning every URL, mounted in its own node:http server. */
async function mounted (options: { bodyTimeout?: number } = {}): Promise<{ peer: Peer, base: string, server: http.Server, stop: () => Promise<void> }> {
  const l = await listen()
  const peer = new Peer({ self: l.url, peers: [l.url], ...options })
  l.server.on('request', peer.handler())
  await peer.ready
  return { peer, base: l.url, server: l.server, stop: async () => { await peer.destroy(); await stopServer(l.server) } }
}

const q = (url: string): string => `/proxy?q=${encodeURIComponent(url)}`

/** Sends `text` on a fresh connection to `port` and reads until the server closes it. */
function rawExchange (port: number, text: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.write(text) })
    let data = ''
    socket.on('data', (chunk) => { data += chunk.toString('latin1') })
    socket.on('close', () => resolve(data))
    socket.on('error', reject)
  })
}

const MiB = 1024 * 1024

describe('slow readers of a shared fill', () => {
  test('a caller that stops reading is cut off after bodyTimeout; the caller reading on gets the whole body', { timeout: 10_000 }, async () => {
    const size = 3 * MiB
    const gate = deferred()
    origin.route('/stall-shared', (_req, res) => {
      void gate.promise.then(() => {
        res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': String(size) })
        res.end(Buffer.alloc(size, 0x61))
      })
    })
    const peer = new Peer({ self: 'http://127.0.0.1:1', bodyTimeout: 300 })
    await peer.ready
    try {
      const url = origin.url + '/stall-shared'
      const stopped = request(url, { dispatcher: peer })
      const reading = request(url, { dispatcher: peer })
      await waitFor(() => peer.stats().coalescedWaits === 1, 5000, 'the second caller to join the fill')
      gate.resolve()
      const [a, b] = await Promise.all([stopped, reading])
      // The first caller never reads: its stream fills, pauses, and holds the fill back.
      const failed = new Promise<Error>((resolve) => a.body.once('error', resolve))
      let got = 0
      for await (const chunk of b.body) got += (chunk as Buffer).length
      assert.equal(got, size)
      const err = await failed
      assert.equal((err as Error & { code?: string }).code, 'FC_ERR_STALLED_READER')
      assert.equal(err.name, 'StalledReaderError')
      assert.equal(origin.count('/stall-shared'), 1)
    } finally {
      await peer.destroy()
    }
  })

  test('a caller arriving after the fill started is released once the fill has stayed paused', { timeout: 10_000 }, async () => {
    const size = 3 * MiB
    origin.route('/stall-late', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': String(size) })
      res.end(Buffer.alloc(size, 0x62))
    })
    const peer = new Peer({ self: 'http://127.0.0.1:1', bodyTimeout: 300 })
    await peer.ready
    try {
      const url = origin.url + '/stall-late'
      // The first caller takes the response start and then reads nothing, so the fill pauses.
      const first = await request(url, { dispatcher: peer })
      const late = await request(url, { dispatcher: peer })
      let got = 0
      for await (const chunk of late.body) got += (chunk as Buffer).length
      assert.equal(got, size)
      assert.equal(origin.count('/stall-late'), 2)
      // The paused caller was only held, not cut off: it is the only reader of its fill.
      let firstGot = 0
      for await (const chunk of first.body) firstGot += (chunk as Buffer).length
      assert.equal(firstGot, size)
    } finally {
      await peer.destroy()
    }
  })
})

describe('the handler writes what node:http would refuse', () => {
  test('a reason phrase outside latin1 is dropped, not a crash', { timeout: 10_000 }, async () => {
    const raw = await rawOrigin('HTTP/1.1 200 Gr\u00fc\u00dfe \u2603\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\nConnection: close\r\n\r\nok'
      .replace('\u2603', Buffer.from('\u2603', 'utf8').toString('latin1')))
    const m = await mounted()
    try {
      const res = await request(m.base + q(raw.url + '/reason'), { dispatcher: agent })
      assert.equal(res.statusCode, 200)
      assert.equal(await res.body.text(), 'ok')
      const again = await request(m.base + q(raw.url + '/reason'), { dispatcher: agent })
      assert.equal(await again.body.text(), 'ok')
      assert.match(String(again.headers['cache-status']), /hit/)
      assert.equal(raw.seen.length, 1)
    } finally {
      await m.stop()
      await raw.close()
    }
  })

  test('an Early Hints response with a Link node:http refuses is skipped; the final response arrives', { timeout: 10_000 }, async () => {
    const raw = await rawOrigin('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload; title="a b"\r\n\r\n' +
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\nConnection: close\r\n\r\nfinal')
    const m = await mounted()
    try {
      const reply = await rawExchange((m.server.address() as AddressInfo).port,
        `GET ${q(raw.url + '/hints')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
      // node:http's writeEarlyHints throws on a quoted title with a space (RFC 8288 allows it).
      assert.match(reply, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nfinal$/)
    } finally {
      await m.stop()
      await raw.close()
    }
  })

  test('Expect on a GET is not forwarded, and the GET is answered', { timeout: 10_000 }, async () => {
    const m = await mounted()
    try {
      const port = (m.server.address() as AddressInfo).port
      const reply = await rawExchange(port,
        `GET ${q(origin.url + '/expect')} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`)
      assert.match(reply, /\r\n\r\nbody of \/expect$/)
      const seen = origin.log.filter((e) => e.url === '/expect')
      assert.equal(seen.length, 1)
      assert.equal(seen[0]?.headers.expect, undefined)
    } finally {
      await m.stop()
    }
  })

  test('a request in flight when the Peer is destroyed is answered 503 closing', { timeout: 10_000 }, async () => {
    origin.route('/held-at-destroy', () => {})
    const l = await listen()
    const peer = new Peer({ self: l.url, peers: [l.url] })
    l.server.on('request', peer.handler())
    await peer.ready
    try {
      const reply = rawExchange((l.server.address() as AddressInfo).port,
        `GET ${q(origin.url + '/held-at-destroy')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
      await waitFor(() => origin.count('/held-at-destroy') === 1, 5000, 'the request to reach the origin')
      await peer.destroy()
      const text = await reply
      assert.match(text, /^HTTP\/1\.1 503 /)
      assert.match(text, /\r\nforwardcache-error: closing\r\n/i)
      assert.match(text, /\r\nretry-after: 1\r\n/i)
    } finally {
      await stopServer(l.server)
    }
  })

})

describe('bodies whose end the origin does not mark', () => {
  const HEAD = 'HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nConnection: close\r\n'

  /** Two GETs of one URL through a Peer owning it: the first response, and the origin's count. */
  async function twice (reply: string, reset: boolean): Promise<{ first: { status: number, body: string, cacheStatus: string } | Error, second: string, seen: number }> {
    const raw = await rawOrigin(reply, { reset })
    const self = 'http://127.0.0.1:1'
    const peer = new Peer({ self })
    await peer.ready
    try {
      let first: { status: number, body: string, cacheStatus: string } | Error
      try {
        const res = await request(raw.url + '/framing', { dispatcher: peer })
        first = { status: res.statusCode, body: await res.body.text(), cacheStatus: String(res.headers['cache-status']) }
      } catch (err) {
        first = err as Error
      }
      let second = ''
      try {
        const again = await request(raw.url + '/framing', { dispatcher: peer })
        second = String(again.headers['cache-status'])
        await again.body.text()
      } catch {
        // The origin cuts the second body as it did the first.
      }
      return { first, second, seen: raw.seen.length }
    } finally {
      await peer.destroy()
      await raw.close()
    }
  }

  test('a close-delimited body cut by a reset is passed on but never stored', { timeout: 10_000 }, async () => {
    // undici ends such a body cleanly on ECONNRESET: half of it is all anyone would ever get.
    const r = await twice(HEAD + '\r\nhalf of the bo', true)
    assert.ok(!(r.first instanceof Error), String(r.first))
    assert.equal(r.first.status, 200)
    assert.match(r.first.cacheStatus, /detail=unframed/)
    assert.doesNotMatch(r.second, /hit/)
    assert.equal(r.seen, 2)
  })

  test('a close-delimited body that ends with a FIN is not stored either: the two cannot be told apart', { timeout: 10_000 }, async () => {
    const r = await twice(HEAD + '\r\nthe whole body', false)
    assert.ok(!(r.first instanceof Error), String(r.first))
    assert.equal(r.first.body, 'the whole body')
    assert.equal(r.seen, 2)
  })

  test('a chunked body cut by a reset is an error, and is not stored', { timeout: 10_000 }, async () => {
    const r = await twice(HEAD + 'Transfer-Encoding: chunked\r\n\r\n10\r\nhalf of the', true)
    assert.ok(r.first instanceof Error, 'the cut body is reported as an error, not passed on as whole')
    assert.equal(r.seen, 2)
  })

  test('the same bodies framed by Content-Length or chunked are stored', { timeout: 10_000 }, async () => {
    const sized = await twice(HEAD + 'Content-Length: 14\r\n\r\nthe whole body', false)
    assert.equal(sized.seen, 1)
    assert.match(sized.second, /hit/)
    const chunked = await twice(HEAD + 'Transfer-Encoding: chunked\r\n\r\ne\r\nthe whole body\r\n0\r\n\r\n', false)
    assert.equal(chunked.seen, 1)
    assert.match(chunked.second, /hit/)
  })
})

describe('an unsafe method held for its invalidation', () => {
  test('a caller that aborts while the owner is being told is rejected at once', { timeout: 10_000 }, async () => {
    // The owner never answers, and peerTimeout is far beyond this test's own timeout: the
    // caller must not wait for the invalidation it gave up on.
    const owner = await startBlackhole()
    const self = 'http://127.0.0.1:1'
    const peer = new Peer({ self, peers: [self, owner.url], peerTimeout: 60_000 })
    await peer.ready
    try {
      const [path] = ownedBy(peer, owner.url, (i) => `${origin.url}/posted-${i}`)
      const url = path as string
      const aborter = new AbortController()
      const pending = request(url, { method: 'POST', body: 'x', dispatcher: peer, signal: aborter.signal })
      await waitFor(() => owner.accepted() === 1, 5000, 'the invalidation to reach the owner')
      assert.equal(origin.count(new URL(url).pathname), 1)
      aborter.abort()
      await assert.rejects(pending, { name: 'AbortError' })
    } finally {
      await peer.destroy()
      await owner.close()
    }
  })
})
