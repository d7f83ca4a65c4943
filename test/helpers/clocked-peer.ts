import { after, before } from 'node:test'
import { request, type Dispatcher } from 'undici'
import { Peer } from '../../src/index.js'
import { startOrigin, type CountingOrigin } from './origin.js'

/** What {@link clockedPeer} gives a test file: `origin` and `peer` are set in its before() hook. */
export interface ClockedPeer {
  /**
   * The test clock, in ms since the epoch. The origin's Date and the peer's `now` both read
   * it, so `fx.now += ms` ages every stored response without a sleep.
   */
  now: number
  origin: CountingOrigin
  /** One peer whose pool is itself: every URL is owned locally. */
  peer: Peer
  /** Requests `path` on the origin through `dispatcher` (the peer by default) and reads the body. */
  get: (path: string, headers?: Record<string, string>, method?: 'GET' | 'HEAD', dispatcher?: Dispatcher) =>
    Promise<{ status: number, headers: Dispatcher.ResponseData['headers'], body: string }>
}

/**
 * Registers before() and after() hooks (call it at the top level of a test file) that start a
 * counting origin and one Peer sharing an injected clock, starting at `start` (ms), and stop
 * them after the file's tests.
 */
export function clockedPeer (start: number = Date.now()): ClockedPeer {
  const fx: ClockedPeer = {
    now: start,
    // Placeholders until before() runs: a test file only reads them from its tests.
    origin: undefined as unknown as CountingOrigin,
    peer: undefined as unknown as Peer,
    get: async (path, headers = {}, method = 'GET', dispatcher = fx.peer) => {
      const res = await request(fx.origin.url + path, { method, headers, dispatcher })
      const body = await res.body.text()
      return { status: res.statusCode, headers: res.headers, body }
    }
  }
  before(async () => {
    fx.origin = await startOrigin(undefined, () => fx.now)
    fx.peer = new Peer({ self: 'http://127.0.0.1:1', now: () => fx.now })
    await fx.peer.ready
  })
  after(async () => {
    await fx.peer.close()
    await fx.origin.close()
  })
  return fx
}
