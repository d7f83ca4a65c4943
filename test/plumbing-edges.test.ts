import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { startOrigin } from './helpers/origin.js'
import { ownedBy, startLocalPeers, within } from './helpers/peers.js'

// The plumbing between callers' handlers and responses, at its edges: handlers of the
// caller's that throw, while the response they are in is shared with other callers, or
// while it is held back for an invalidation.

interface Throws { onHeaders?: boolean, onData?: boolean, onError?: boolean }

/**
 * Dispatches a GET with a handler of undici's legacy contract that records what it is told,
 * and throws from the methods `throws` names. Resolves with the record once told the end.
 */
function legacyGet (dispatcher: Dispatcher, origin: string, path: string, throws: Throws = {}, method = 'GET'): Promise<string[]> {
  return new Promise((resolve) => {
    const events: string[] = []
    dispatcher.dispatch({ origin, path, method, headers: {}, ...(method === 'GET' ? {} : { body: 'x' }) }, {
      onConnect () {},
      onHeaders (status: number) {
        events.push(`headers ${status}`)
        if (throws.onHeaders === true) throw new Error('thrown by onHeaders')
        return true
      },
      onData (chunk: Buffer) {
        events.push(`data ${chunk.toString()}`)
        if (throws.onData === true) throw new Error('thrown by onData')
        return true
      },
      onComplete () {
        events.push('complete')
        resolve(events)
      },
      onError (err: Error) {
        events.push(`error ${err.message}`)
        resolve(events)
        if (throws.onError === true) throw new Error('thrown by onError')
      }
    } as unknown as Dispatcher.DispatchHandler)
  })
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

test('a coalesced caller whose handler throws fails alone: the others sharing the fill get the whole body', async () => {
  const origin = await startOrigin()
  origin.route('/shared', (_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' })
      res.write('aaaa')
      setTimeout(() => res.end('bbbb'), 100)
    }, 100)
  })
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    await peer.ready
    const leader = legacyGet(peer, origin.url, '/shared')
    await sleep(20)
    // Joiners of the leader's fill, before its response has started.
    const throwsAtHeaders = legacyGet(peer, origin.url, '/shared', { onHeaders: true })
    const throwsAtData = legacyGet(peer, origin.url, '/shared', { onData: true })
    const reader = legacyGet(peer, origin.url, '/shared')
    const got = await within(Promise.all([leader, throwsAtHeaders, throwsAtData, reader]), 3000, 'the callers')
    assert.deepEqual(got[0], ['headers 200', 'data aaaa', 'data bbbb', 'complete'])
    assert.deepEqual(got[1], ['headers 200', 'error thrown by onHeaders'])
    assert.deepEqual(got[2], ['headers 200', 'data aaaa', 'error thrown by onData'])
    assert.deepEqual(got[3], ['headers 200', 'data aaaa', 'data bbbb', 'complete'])
    assert.equal(origin.count('/shared'), 1)
    // The fill was stored whole: the next caller is a hit.
    assert.deepEqual(await legacyGet(peer, origin.url, '/shared'), ['headers 200', 'data aaaabbbb', 'complete'])
    assert.equal(origin.count('/shared'), 1)
    assert.equal(peer.inFlight, 0)
  } finally {
    await peer.destroy()
    await origin.close()
  }
})

test('a coalesced forward\'s leader whose handler throws fails alone: the joiner gets the whole body', async () => {
  const cluster = await startLocalPeers(2)
  const origin = await startOrigin()
  try {
    const [url] = ownedBy(cluster.peers[0] as Peer, cluster.urls[1] as string, (i) => `${origin.url}/fwd${i}`)
    const path = new URL(url as string).pathname
    origin.route(path, (_req, res) => {
      setTimeout(() => {
        res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' })
        res.write('aaaa')
        setTimeout(() => res.end('bbbb'), 100)
      }, 100)
    })
    const first = cluster.peers[0] as Peer
    const leader = legacyGet(first, origin.url, path, { onData: true })
    await sleep(20)
    const joiner = legacyGet(first, origin.url, path)
    const got = await within(Promise.all([leader, joiner]), 3000, 'the callers')
    assert.deepEqual(got[0], ['headers 200', 'data aaaa', 'error thrown by onData'])
    assert.deepEqual(got[1], ['headers 200', 'data aaaa', 'data bbbb', 'complete'])
    assert.equal(origin.count(path), 1)
    assert.equal(first.inFlight, 0)
  } finally {
    await cluster.close()
    await origin.close()
  }
})

test('a fill that fails reaches every caller sharing it, even when one\'s onError throws; nothing stays in flight', async () => {
  const origin = await startOrigin()
  origin.route('/breaks', (_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' })
      res.write('aaaa')
      setTimeout(() => res.destroy(), 100)
    }, 100)
  })
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  // The throw goes on to undici, which leaves it uncaught, as it does for a handler of its
  // own: caught here for the length of this test, instead of by the test runner.
  const saved = process.listeners('uncaughtException')
  const uncaught: Error[] = []
  const catcher = (err: Error): void => { uncaught.push(err) }
  process.removeAllListeners('uncaughtException')
  process.on('uncaughtException', catcher)
  try {
    await peer.ready
    const leader = legacyGet(peer, origin.url, '/breaks', { onError: true })
    await sleep(20)
    const joiner = legacyGet(peer, origin.url, '/breaks')
    const got = await within(Promise.all([leader, joiner]), 3000, 'the callers')
    assert.equal(got[0].at(-1)?.startsWith('error '), true)
    assert.equal(got[1].at(-1)?.startsWith('error '), true, `the joiner was told: ${got[1].join(', ')}`)
    await sleep(20)
    assert.equal(peer.inFlight, 0)
    await within(peer.close(), 3000, 'close()')
    assert.deepEqual(uncaught.map((e) => e.message), ['thrown by onError'])
  } finally {
    process.off('uncaughtException', catcher)
    for (const l of saved) process.on('uncaughtException', l)
    await peer.destroy()
    await origin.close()
  }
})

test('an unsafe request held for its invalidation: a handler that throws is failed with its error, and the process lives on', async () => {
  const cluster = await startLocalPeers(2)
  const origin = await startOrigin()
  try {
    const urls = ownedBy(cluster.peers[0] as Peer, cluster.urls[1] as string, (i) => `${origin.url}/made${i}`, 2)
    for (const url of urls) {
      origin.route(new URL(url).pathname, (_req, res) => {
        res.writeHead(201, { 'content-type': 'text/plain' })
        res.end('made')
      })
    }
    const first = cluster.peers[0] as Peer
    // The owner is another peer: the response waits for its invalidation, on a promise.
    const atHeaders = await within(legacyGet(first, origin.url, new URL(urls[0] as string).pathname, { onHeaders: true }, 'POST'), 3000, 'the caller')
    assert.deepEqual(atHeaders, ['headers 201', 'error thrown by onHeaders'])
    const atData = await within(legacyGet(first, origin.url, new URL(urls[1] as string).pathname, { onData: true }, 'POST'), 3000, 'the caller')
    assert.deepEqual(atData, ['headers 201', 'data made', 'error thrown by onData'])
    await sleep(20)
    assert.equal(first.inFlight, 0)
  } finally {
    await cluster.close()
    await origin.close()
  }
})
