import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { Peer, type PeerOptions } from '../../src/index.js'
import { startOrigin, type CountingOrigin, type Route } from './origin.js'

/** Peers in this very process, each mounted on its own real http server on 127.0.0.1. */
export interface LocalCluster {
  readonly peers: Peer[]
  readonly servers: http.Server[]
  /** Base URLs, in the order of `peers`. */
  readonly urls: string[]
  /** Destroys every peer (abortive: nothing here may hang a test) and stops every server. */
  close (): Promise<void>
}

export async function listen (handler?: http.RequestListener, port = 0): Promise<{ server: http.Server, url: string }> {
  const server = http.createServer(handler)
  server.keepAliveTimeout = 1000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

export async function stopServer (server: http.Server): Promise<void> {
  if (!server.listening) return
  server.closeAllConnections()
  await new Promise<void>((resolve) => server.close(() => resolve()))
}

/**
 * Starts `n` servers, then one Peer on each with the pool `urls + extra` (each server's handler
 * is its peer's handler()).
 */
export async function startLocalPeers (n: number, options: Omit<PeerOptions, 'self' | 'peers'> = {}, extra: string[] = []): Promise<LocalCluster> {
  const servers: http.Server[] = []
  const peers: Peer[] = []
  const close = async (): Promise<void> => {
    await Promise.all(peers.map((p) => p.destroy().catch(() => {})))
    await Promise.all(servers.map(stopServer))
  }
  try {
    const urls: string[] = []
    for (let i = 0; i < n; i++) {
      const l = await listen()
      servers.push(l.server)
      urls.push(l.url)
    }
    for (let i = 0; i < n; i++) {
      const peer = new Peer({ ...options, self: urls[i] as string, peers: [...urls, ...extra] })
      peers.push(peer)
      ;(servers[i] as http.Server).on('request', peer.handler())
    }
    await Promise.all(peers.map((p) => p.ready))
    return { peers, servers, urls, close }
  } catch (err) {
    await close()
    throw err
  }
}

/** A Peer mounted on a real http server of its own on 127.0.0.1. */
export interface MountedPeer {
  readonly peer: Peer
  readonly server: http.Server
  /** The server's base URL: the peer's `self`. */
  readonly url: string
  /** Destroys the peer, then stops its server. */
  close (): Promise<void>
}

/**
 * Listens on `port` (0: any free one), starts a Peer there whose pool is `pool(self)`, with
 * `options`, and serves its handler once it is ready.
 */
export async function mountPeer (pool: (self: string) => string[], options: Omit<PeerOptions, 'self' | 'peers'> = {}, port = 0): Promise<MountedPeer> {
  const { server, url } = await listen(undefined, port)
  let peer: Peer | undefined
  const close = async (): Promise<void> => {
    await peer?.destroy()
    await stopServer(server)
  }
  try {
    peer = new Peer({ ...options, self: url, peers: pool(url) })
    server.on('request', peer.handler())
    await peer.ready
    return { peer, server, url, close }
  } catch (err) {
    await close()
    throw err
  }
}

/** `n` peers as a tuple, so that a test names each one without a cast. */
export type PeerTuple<N extends 1 | 2 | 3> = N extends 1 ? [Peer] : N extends 2 ? [Peer, Peer] : [Peer, Peer, Peer]

/** What a test run by {@link withCluster} is given. */
export interface ClusterFixture<N extends 1 | 2 | 3> {
  origin: CountingOrigin
  cluster: LocalCluster
  peers: PeerTuple<N>
}

/**
 * Starts an origin (answering `route`, else startOrigin's default), then `peers` local peers
 * with `options` and the pool `urls + extra`; runs `fn`, then stops the peers and the origin
 * whether it passed or failed.
 */
export async function withCluster<N extends 1 | 2 | 3> (
  setup: { peers: N, options?: Omit<PeerOptions, 'self' | 'peers'>, extra?: string[], route?: Route },
  fn: (fixture: ClusterFixture<N>) => Promise<void>
): Promise<void> {
  const origin = await startOrigin(setup.route)
  try {
    const cluster = await startLocalPeers(setup.peers, setup.options, setup.extra)
    try {
      await fn({ origin, cluster, peers: cluster.peers as PeerTuple<N> })
    } finally {
      await cluster.close()
    }
  } finally {
    await origin.close()
  }
}

/** The first `k` URLs `make(0), make(1), ...` that `router` routes to `owner`. */
export function ownedBy (router: { ownerOf: (url: string) => string | undefined }, owner: string, make: (i: number) => string, k = 1): string[] {
  const out: string[] = []
  for (let i = 0; out.length < k; i++) {
    if (i > 100_000) throw new Error(`no URL owned by ${owner} in 100000 tries`)
    const url = make(i)
    if (router.ownerOf(url) === owner) out.push(url)
  }
  return out
}

/** A TCP server that accepts connections and never answers a byte: a hung peer. */
export interface Blackhole {
  readonly url: string
  /** Connections accepted so far. */
  accepted (): number
  close (): Promise<void>
}

export async function startBlackhole (): Promise<Blackhole> {
  const sockets = new Set<net.Socket>()
  let accepted = 0
  const server = net.createServer((socket) => {
    accepted++
    sockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
    socket.resume() // read and ignore whatever is sent
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    accepted: () => accepted,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    })
  }
}

/** A loopback port that was free a moment ago (a server bound it, then let it go). */
export async function freePort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/**
 * Polls `condition` every `every` ms until it holds, failing after `timeoutMs`. Only for
 * behaviour driven by timers inside the library (probes), where no event is exposed.
 */
export async function waitFor (condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string, every = 10): Promise<void> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    if (await condition()) return
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, every))
  }
}

/**
 * `promise`, or a failure after `ms`: only a bound on a hang (the bug some tests look for),
 * so that the test fails and its finally still stops everything.
 */
export async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const bound = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting for ${what} after ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, bound])
  } finally {
    clearTimeout(timer)
  }
}

/** A promise with its resolve function outside, for gates and events. */
export function deferred<T = void> (): { promise: Promise<T>, resolve: (v: T) => void } {
  let resolve!: (v: T) => void
  const promise = new Promise<T>((r) => { resolve = r })
  return { promise, resolve }
}
