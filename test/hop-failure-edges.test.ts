import assert from 'node:assert/strict'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { test } from 'node:test'
import { request } from 'undici'
import { Peer } from '../src/index.js'
import { freePort, listen, ownedBy, startLocalPeers, stopServer } from './helpers/peers.js'
import { rawOrigin } from './helpers/raw-origin.js'

// The asking peer's side of a hop (or a fallback) whose other end misbehaves.

/** A TCP server that answers every request with a 103 every `everyMs`, and never a final response. */
async function earlyHintsForever (everyMs: number): Promise<{ url: string, close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    let timer: NodeJS.Timeout | undefined
    socket.on('close', () => { sockets.delete(socket); clearInterval(timer) })
    socket.once('data', () => {
      timer = setInterval(() => socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n'), everyMs)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/** Settles with the outcome of `p`, or 'hang' after `ms`. */
function within<T> (p: Promise<T>, ms: number): Promise<T | 'hang'> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([p, new Promise<'hang'>((resolve) => { timer = setTimeout(() => resolve('hang'), ms) })]).finally(() => clearTimeout(timer))
}

/** A request's error code, or what it was answered, or 'hang' after 4 s. */
function errorCodeOrAnswer (peer: Peer, url: string): Promise<string | undefined> {
  return within(request(url, { dispatcher: peer }).then(
    async (res) => `answered ${res.statusCode}: ${await res.body.text()}`,
    (err: { code?: string }) => err.code
  ), 4000)
}

test('an owner that sends 103s every 100 ms and never a final response: the caller gets the origin\'s answer after peerTimeout, not a hang', { timeout: 15_000 }, async () => {
  const origin = await listen((_req, res) => res.end('from-origin'))
  const owner = await earlyHintsForever(100)
  const self = 'http://127.0.0.1:1'
  const peer = new Peer({ self, peers: [self, owner.url], peerTimeout: 300 })
  try {
    await peer.ready
    const [url] = ownedBy(peer, owner.url, (i) => `${origin.url}/hints${i}`)
    const outcome = await within(request(url as string, { dispatcher: peer }).then(async (res) => ({
      status: res.statusCode, cacheStatus: res.headers['cache-status'], body: await res.body.text()
    })), 4000)
    assert.deepEqual(outcome, { status: 200, cacheStatus: 'forwardcache; fwd=bypass; detail=owner-unavailable', body: 'from-origin' })
  } finally {
    await peer.destroy()
    await owner.close()
    await stopServer(origin.server)
  }
})

test('an origin that sends 103s forever on the fallback path: the caller gets HeadersTimeoutError after originTimeout, not a hang', { timeout: 15_000 }, async () => {
  const origin = await earlyHintsForever(100)
  const gone = `http://127.0.0.1:${await freePort()}`
  const self = 'http://127.0.0.1:1'
  const peer = new Peer({ self, peers: [self, gone], originTimeout: 300, ejectAfter: 100 })
  try {
    await peer.ready
    const [url] = ownedBy(peer, gone, (i) => `${origin.url}/hints${i}`)
    const outcome = await errorCodeOrAnswer(peer, url as string)
    assert.equal(outcome, 'UND_ERR_HEADERS_TIMEOUT')
  } finally {
    await peer.destroy()
    await origin.close()
  }
})

test('a URL whose headers fit the owner\'s parser but not once the owner adds its own: the owner is not ejected for it', { timeout: 15_000 }, async () => {
  // undici counts names and values against 16 KiB (node:http's maxHeaderSize): 16,370 bytes
  // pass at the owner; its Cache-Status, Date and Connection push the relay over at the asker.
  const pad = 16_370 - 'content-length'.length - 1 - 'x-pad'.length
  const origin = await rawOrigin(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: ${'a'.repeat(pad)}\r\n\r\nok`)
  const c = await startLocalPeers(2, { ejectAfter: 2 })
  try {
    const [a] = c.peers as [Peer, Peer]
    const [url] = ownedBy(a, c.urls[1] as string, (i) => `${origin.url}/big${i}`)
    for (let i = 0; i < 3; i++) {
      const res = await request(url as string, { dispatcher: a })
      assert.equal(await res.body.text(), 'ok')
      assert.equal(res.headers['cache-status'], 'forwardcache; fwd=bypass; detail=owner-unavailable')
    }
    assert.equal(a.stats().forwardErrors, 3)
    assert.deepEqual(a.ejectedPeers, [], 'one URL\'s headers took the owner out of routing for all of its keys')
  } finally {
    await c.close()
    await origin.close()
  }
})

test('an origin that sends 103s forever to the peer that owns the URL: its fill fails with HeadersTimeoutError after originTimeout, not a hang', { timeout: 15_000 }, async () => {
  const origin = await earlyHintsForever(100)
  const self = 'http://127.0.0.1:1'
  const peer = new Peer({ self, peers: [self], originTimeout: 300 })
  try {
    await peer.ready
    const outcome = await errorCodeOrAnswer(peer, `${origin.url}/hints`)
    assert.equal(outcome, 'UND_ERR_HEADERS_TIMEOUT')
  } finally {
    await peer.destroy()
    await origin.close()
  }
})
