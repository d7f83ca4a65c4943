import type { Dispatcher } from 'undici'
import { InvalidArgumentError } from './errors.js'
import type { HashFunction } from './ring.js'
import type { CacheStore } from './cache/second-tier.js'
import { parseOriginRule, type OriginRule } from './security/address-policy.js'
import { normalisePeerUrl } from './url.js'

/** Where a peer's handler() answers when `path` is not given. */
export const DEFAULT_PATH = '/proxy'

/** Options shared by Peer and Client. */
export interface RouterOptions {
  /**
   * Base URLs of every peer in the pool (for a Peer, itself included). Order does not matter;
   * spellings are normalised (scheme and host case, default port, trailing slash). At most
   * 65,536 peers, and at most 10,485,760 ring points: peers × `vnodes` (65,536 peers at the
   * default 160, 1,048 at 10,000).
   */
  peers?: readonly string[] | undefined
  /**
   * Where each peer's `handler()` answers, appended to the peer's base URL: printable ASCII,
   * no query or fragment.
   * @default '/proxy'
   */
  path?: string | undefined
  /**
   * Virtual nodes per peer on the hash ring. More spreads keys more evenly, at a little memory
   * (8 bytes a point, kept; as much again while the ring is rebuilt). At most 10,000, and
   * `peers.length` × vnodes at most 10,485,760 (80 MiB of ring), in the constructor and in
   * `setPeers()`.
   * @default 160
   */
  vnodes?: number | undefined
  /**
   * How this instance reaches origins. Never the global dispatcher, which may be this very
   * instance. Responses it delivers with neither Content-Length nor Transfer-Encoding are passed on
   * but never stored, since their end cannot be told from a cut connection.
   * @default a new undici Agent with the origin timeouts below
   */
  origin?: Dispatcher | undefined
  /**
   * Milliseconds to wait for a TCP (and TLS) connection to a peer before giving up on it and
   * fetching from the origin directly.
   * @default 1000
   */
  peerConnectTimeout?: number | undefined
  /**
   * Milliseconds to wait for an owner peer's response headers before fetching from the origin
   * directly. It covers the owner's own origin fetch, so keep it above the origins' latency.
   * @default 5000
   */
  peerTimeout?: number | undefined
  /**
   * Milliseconds of silence allowed between body chunks, from a peer or an origin.
   * @default 30000
   */
  bodyTimeout?: number | undefined
  /**
   * Milliseconds to wait for a connection to an origin (used by the default `origin` Agent).
   * @default 5000
   */
  originConnectTimeout?: number | undefined
  /**
   * Milliseconds to wait for an origin's response headers. For a request without a body
   * (every GET and HEAD, and a bodyless request of another method), this is the whole wait
   * for the final response, however many interim (1xx) responses come first.
   * @default 30000
   */
  originTimeout?: number | undefined
  /**
   * Consecutive failures of the hop to a peer (refused, timed out, shutting down) after which
   * that peer is taken out of routing until a probe finds it healthy again.
   * @default 3
   */
  ejectAfter?: number | undefined
  /**
   * Milliseconds before the first probe of an ejected peer; doubles after every failed probe,
   * up to 30 s.
   * @default 1000
   */
  ejectBackoff?: number | undefined
  /**
   * Shared secret(s) that sign every request between peers (HMAC-SHA256 over method, URL,
   * time and nonce). With a list, requests are signed with the first and any is accepted, so
   * secrets can be rotated without downtime. Without one, a peer's handler serves only the
   * pool's addresses and loopback.
   * @default undefined
   */
  secret?: string | readonly string[] | undefined
  /**
   * Milliseconds a signature stays valid either side of the receiver's clock.
   * @default 30000
   */
  authWindow?: number | undefined
  /**
   * Origins this instance may fetch: host names (`'example.com'`), `host:port`, suffixes
   * (`'*.example.com'`), full origins (`'https://example.com'`) or RegExps over the origin.
   * @default undefined (any origin that passes the address policy)
   */
  origins?: readonly OriginRule[] | undefined
  /**
   * Also refuse origins on loopback and private ranges (10/8, 172.16/12, 192.168/16, 100.64/10,
   * fc00::/7, ...) and on ranges the Internet never routes (240/4, multicast, documentation,
   * ...), in any IPv6 spelling or form that leads to them (IPv4-mapped, NAT64, 6to4, Teredo).
   * Link-local and cloud metadata addresses are always refused. Applies to the default
   * `origin` Agent: a Dispatcher you pass as `origin` brings its own policy.
   * @default false
   */
  blockPrivateOrigins?: boolean | undefined
  /**
   * Concurrent requests handler() serves; more get 503 with Retry-After.
   * @default 1024
   */
  maxHandlerRequests?: number | undefined
  /**
   * URLs whose pool-wide invalidation this instance remembers for peers that were out of its
   * pool at the time (dropped by `setPeers()` or a DNS answer), to send them when they come
   * back; also at most 512 characters of URL per entry on average. Logging starts when a peer
   * leaves and stops once every peer that left has come back (or is forgotten, past 1,024
   * departed peers). A peer that comes back after more invalidations than this counts in
   * `invalidationGaps`. Size it to the unsafe requests this instance sees while a peer is out:
   * one DNS `interval` or a restart, say. At most 1,000,000.
   *
   * The same bound, separately, holds the invalidations whose DELETE failed to reach a peer in
   * the pool (for all such peers together), kept to be sent again when that peer answers; one
   * dropped to stay within it counts in `invalidationGaps` too.
   * @default 10000
   */
  invalidationLogSize?: number | undefined
  /**
   * The ring's hash, for tests that need owners they can work out by hand.
   * @default xxHash32 (xxhash-wasm)
   */
  hash?: HashFunction | undefined
}

/** Options of a Peer. */
export interface PeerOptions extends RouterOptions {
  /** This peer's base URL as the other peers reach it. Required. */
  self: string
  /**
   * Total bytes of responses this peer keeps (bodies, headers and bookkeeping).
   * @default 134217728 (128 MiB)
   */
  maxSize?: number | undefined
  /**
   * Bytes one origin host may use, so that one busy host cannot flush the others.
   * @default maxSize
   */
  maxHostSize?: number | undefined
  /**
   * Origin hosts with stored responses at once; a new host past that evicts the least
   * recently used host's responses (each host has an LRU of its own).
   * @default 10000
   */
  maxHosts?: number | undefined
  /**
   * Bytes one response may use; larger ones stream through uncached. Also where a byte range
   * that misses stops being fetched whole: one starting below it is (the whole response is
   * stored for later ranges), one starting at or past it goes to the origin as it is.
   * @default min(16 MiB, maxHostSize)
   */
  maxEntrySize?: number | undefined
  /**
   * Fetch the whole response for a byte range that misses (`bytes=N-` or `bytes=N-M`, `N` below
   * maxEntrySize), answer the range from it and store it, so that later ranges are hits. The
   * cost: a range of an uncached response costs the origin everything up to the range's end,
   * and up to the whole response when it is stored (a 1-byte range of a 16 MiB file: 16 MiB).
   * Turn off for origins where that bandwidth matters more than caching what is only ever
   * fetched in ranges; ranges then go to the origin as they are, and only a stored whole
   * response answers them.
   * @default true
   */
  fillRanges?: boolean | undefined
  /**
   * Seconds past its freshness that a stored response may be served when the origin cannot be
   * reached at all (refused, reset, timed out; RFC 9111 section 4.2.4 "disconnected"). A 5xx
   * answer is not a disconnection: only stale-if-error serves stale for those. Never for
   * responses with must-revalidate, proxy-revalidate, s-maxage or no-cache. 0 turns it off.
   * @default 3600
   */
  staleOnDisconnect?: number | undefined
  /**
   * Without a secret, let loopback callers use handler() even when loopback is not in the
   * pool. Turn off when a same-host reverse proxy or sidecar makes every request arrive from
   * loopback, which would otherwise make the handler an open relay.
   * @default true
   */
  trustLoopback?: boolean | undefined
  /**
   * A second tier behind the per-host LRU: any undici CacheStore (MemoryCacheStore,
   * SqliteCacheStore, or Redis through undici-cache-redis). Responses this peer stores are
   * written through; an LRU miss looks there before the origin.
   * @default undefined
   */
  store?: CacheStore | undefined
  /**
   * How long a lookup in `store` may take, ms, body included. Past it the request goes to
   * the origin as if the store had missed: a store whose connection hangs must not hold
   * requests (and the callers coalesced behind them) for ever.
   * @default 1000
   */
  storeTimeout?: number | undefined
  /**
   * Bytes for copies of hot keys owned by other peers, so one hot URL does not pin its
   * owner's network; at most maxSize / 8. 0 turns hot copies off.
   * @default floor(maxSize / 8)
   */
  hotSize?: number | undefined
  /**
   * Requests for a key (among the 10,000 most recently counted) after which this peer keeps a
   * hot copy of the owner's response. Hot copies are served only while fresh.
   * @default 8
   */
  hotThreshold?: number | undefined
  /**
   * The clock, in milliseconds since the epoch, for freshness and age. Injected by tests.
   * @default Date.now
   */
  now?: (() => number) | undefined
}

/** Options of a Client: the pool is required, there is no self and no cache. */
export interface ClientOptions extends RouterOptions {
  peers: readonly string[]
}

export interface ResolvedRouterOptions {
  peers: string[]
  path: string
  vnodes: number
  origin: Dispatcher | undefined
  peerConnectTimeout: number
  peerTimeout: number
  bodyTimeout: number
  originConnectTimeout: number
  originTimeout: number
  hash: HashFunction | undefined
  ejectAfter: number
  ejectBackoff: number
  secrets: readonly string[]
  authWindow: number
  origins: readonly OriginRule[] | undefined
  blockPrivateOrigins: boolean
  maxHandlerRequests: number
  invalidationLogSize: number
}

export interface ResolvedPeerOptions extends ResolvedRouterOptions {
  self: string
  maxSize: number
  maxHostSize: number
  maxEntrySize: number
  fillRanges: boolean
  maxHosts: number
  hotSize: number
  hotThreshold: number
  store: CacheStore | undefined
  storeTimeout: number
  trustLoopback: boolean
  staleOnDisconnect: number
  now: () => number
}

function positiveInteger (opts: Record<string, unknown>, name: string, fallback: number): number {
  const v = opts[name]
  if (v === undefined) return fallback
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
    throw new InvalidArgumentError(`expected opts.${name} to be a positive integer`)
  }
  return v
}

// Points per peer on the ring. The ring is built synchronously (and, before the hash has
// loaded, in a promise nobody may be waiting on): a count past what memory holds crashed the
// process later, and one that fits froze the event loop (10^8 points: about 50 s). The
// deployment guide measures up to 500.
const MAX_VNODES = 10_000

function resolveVnodes (opts: Record<string, unknown>): number {
  const v = positiveInteger(opts, 'vnodes', 160)
  if (v > MAX_VNODES) throw new InvalidArgumentError(`expected opts.vnodes to be at most ${MAX_VNODES}`)
  return v
}

// The most URLs the invalidation log may be asked to keep: about 512 MiB of URLs at most.
const MAX_INVALIDATION_LOG = 1_000_000

function resolveLogSize (opts: Record<string, unknown>): number {
  const v = positiveInteger(opts, 'invalidationLogSize', 10_000)
  if (v > MAX_INVALIDATION_LOG) throw new InvalidArgumentError(`expected opts.invalidationLogSize to be at most ${MAX_INVALIDATION_LOG}`)
  return v
}

// The longest delay a Node timer keeps: past it, setTimeout fires after 1 ms instead.
const MAX_TIMER_MS = 2 ** 31 - 1

/** A duration in ms that a timer can honour. */
function milliseconds (opts: Record<string, unknown>, name: string, fallback: number): number {
  const v = positiveInteger(opts, name, fallback)
  if (v > MAX_TIMER_MS) throw new InvalidArgumentError(`expected opts.${name} to be at most ${MAX_TIMER_MS} (ms)`)
  return v
}

function resolveBoolean (opts: Record<string, unknown>, name: string, fallback: boolean): boolean {
  const v = opts[name]
  if (v === undefined) return fallback
  if (typeof v !== 'boolean') throw new InvalidArgumentError(`expected opts.${name} to be a boolean`)
  return v
}

function resolveSecrets (secret: unknown): string[] {
  if (secret === undefined) return []
  const list = typeof secret === 'string' ? [secret] : secret
  if (!Array.isArray(list) || list.length === 0 || list.some((s) => typeof s !== 'string' || s.length < 16)) {
    throw new InvalidArgumentError('expected opts.secret to be a string of at least 16 characters, or a non-empty array of them')
  }
  return [...list] as string[]
}

function resolveOrigins (origins: unknown): OriginRule[] | undefined {
  if (origins === undefined) return undefined
  if (!Array.isArray(origins) || origins.some((r) => typeof r !== 'string' && !(r instanceof RegExp))) {
    throw new InvalidArgumentError('expected opts.origins to be an array of host names, origins or RegExps')
  }
  origins.forEach((r: unknown, i) => {
    if (typeof r !== 'string') return
    const bad = (): never => { throw new InvalidArgumentError(`expected opts.origins[${i}] to be a host name, an origin or a RegExp, got ${JSON.stringify(r)}`) }
    if (r.trim() === '' || r !== r.trim() || parseOriginRule(r) === undefined) bad()
  })
  return [...origins] as OriginRule[]
}

// The most members a Ring holds (it packs a member's index in 16 bits).
const MAX_PEERS = 65_536

// The most points a ring may have, peers × vnodes: the largest pool at the default vnodes.
// Each limit alone allowed 655 M points. A point costs 8 bytes for as long as its ring is in
// use (its hash and its owner's index, src/ring.ts) and 8 more while the ring is built, next
// to the ring in use: at this cap 80 MiB kept and up to 240 MiB during a rebuild, against
// 5 GiB kept and 15 GiB at 655 M. A build takes about 0.5 µs a point on the event loop
// (seconds at this cap; 655 M points would hold it for minutes at every pool change).
export const MAX_RING_POINTS = MAX_PEERS * 160

// Past this many points a ring build holds the event loop for about half a second (0.45 µs a
// point measured on a 2-CPU host: 4.7 s at MAX_RING_POINTS), and the ring is rebuilt on every
// pool change, ejection, readmission and hold. Allowed, but worth a warning.
export const LARGE_RING_POINTS = 2 ** 20

// Microseconds a ring build takes per point, for the warning's estimate.
export const RING_BUILD_US_PER_POINT = 0.45

/**
 * The pool, normalised and without duplicates; refused when it holds more peers than a ring
 * does, or more than MAX_RING_POINTS points at `vnodes` each.
 */
export function resolvePeerList (peers: unknown, what: string, vnodes: number): string[] {
  if (!Array.isArray(peers)) throw new InvalidArgumentError(`expected ${what} to be an array of URLs`)
  const list = [...new Set(peers.map((p, i) => normalisePeerUrl(p as string, `${what}[${i}]`)))]
  // Checked here, before anything uses the list: the Ring's own RangeError came from the
  // constructor's ring build (before the hash had loaded, a rejected promise that crashed the
  // process), or from setPeers() after the new pool had half replaced the old one.
  if (list.length > MAX_PEERS) throw new InvalidArgumentError(`expected ${what} to hold at most ${MAX_PEERS} peers`)
  if (list.length * vnodes > MAX_RING_POINTS) {
    throw new InvalidArgumentError(`expected opts.vnodes × ${what} to be at most ${MAX_RING_POINTS} ring points, got ${vnodes} × ${list.length}`)
  }
  return list
}

export function resolveRouterOptions (opts: RouterOptions, defaultPeers: string[]): ResolvedRouterOptions {
  if (opts === null || typeof opts !== 'object') throw new InvalidArgumentError('expected opts to be an object')
  const o = opts as Record<string, unknown>
  const path = opts.path ?? DEFAULT_PATH
  // Printable ASCII only: the path goes on the request line to every peer as it is, and is
  // matched as it is against the request line the handler receives. A character outside
  // ASCII (sent as one latin1 byte, or refused by undici) never matched: every forward
  // failed and every request went to the origin uncached (RFC 3986 section 3.3 allows
  // non-ASCII only percent-encoded).
  if (typeof path !== 'string' || !path.startsWith('/') || /[?#]|[^\x21-\x7e]/.test(path)) {
    throw new InvalidArgumentError('expected opts.path to be a path starting with "/", of printable ASCII, without query or fragment')
  }
  if (opts.origin !== undefined && (opts.origin === null || typeof (opts.origin as Dispatcher).dispatch !== 'function')) {
    throw new InvalidArgumentError('expected opts.origin to be an undici Dispatcher')
  }
  if (opts.hash !== undefined && typeof opts.hash !== 'function') {
    throw new InvalidArgumentError('expected opts.hash to be a function')
  }
  const vnodes = resolveVnodes(o)
  return {
    peers: opts.peers === undefined ? defaultPeers : resolvePeerList(opts.peers, 'opts.peers', vnodes),
    // Trailing slashes dropped; a path of slashes alone is the root, not '' (no request line
    // starts with '', so no forward could be sent and no handler request matched).
    path: path.length > 1 ? (path.replace(/\/+$/, '') || '/') : path,
    vnodes,
    origin: opts.origin,
    peerConnectTimeout: milliseconds(o, 'peerConnectTimeout', 1000),
    peerTimeout: milliseconds(o, 'peerTimeout', 5000),
    bodyTimeout: milliseconds(o, 'bodyTimeout', 30_000),
    originConnectTimeout: milliseconds(o, 'originConnectTimeout', 5000),
    originTimeout: milliseconds(o, 'originTimeout', 30_000),
    hash: opts.hash,
    ejectAfter: positiveInteger(o, 'ejectAfter', 3),
    ejectBackoff: milliseconds(o, 'ejectBackoff', 1000),
    secrets: resolveSecrets(opts.secret),
    authWindow: milliseconds(o, 'authWindow', 30_000),
    origins: resolveOrigins(opts.origins),
    blockPrivateOrigins: resolveBoolean(o, 'blockPrivateOrigins', false),
    maxHandlerRequests: positiveInteger(o, 'maxHandlerRequests', 1024),
    invalidationLogSize: resolveLogSize(o)
  }
}

export function resolvePeerOptions (opts: PeerOptions): ResolvedPeerOptions {
  if (opts === null || typeof opts !== 'object') throw new InvalidArgumentError('expected opts to be an object')
  const self = normalisePeerUrl(opts.self, 'opts.self')
  const base = resolveRouterOptions(opts, [self])
  const o = opts as unknown as Record<string, unknown>
  const maxSize = positiveInteger(o, 'maxSize', 128 * 1024 * 1024)
  const maxHostSize = positiveInteger(o, 'maxHostSize', maxSize)
  const maxEntrySize = positiveInteger(o, 'maxEntrySize', Math.min(16 * 1024 * 1024, maxHostSize))
  if (maxHostSize > maxSize) throw new InvalidArgumentError('expected opts.maxHostSize to be at most opts.maxSize')
  if (maxEntrySize > maxHostSize) throw new InvalidArgumentError('expected opts.maxEntrySize to be at most opts.maxHostSize')
  if (opts.now !== undefined && typeof opts.now !== 'function') throw new InvalidArgumentError('expected opts.now to be a function')
  const hotSize = o.hotSize === 0 ? 0 : positiveInteger(o, 'hotSize', Math.floor(maxSize / 8))
  if (hotSize > maxSize / 8) throw new InvalidArgumentError('expected opts.hotSize to be at most opts.maxSize / 8')
  const hotThreshold = positiveInteger(o, 'hotThreshold', 8)
  const store = opts.store
  if (store !== undefined && (store === null || typeof store.get !== 'function' || typeof store.createWriteStream !== 'function' || typeof store.delete !== 'function')) {
    throw new InvalidArgumentError('expected opts.store to be an undici CacheStore (get, createWriteStream, delete)')
  }
  const storeTimeout = milliseconds(o, 'storeTimeout', 1000)
  const trustLoopback = resolveBoolean(o, 'trustLoopback', true)
  const fillRanges = resolveBoolean(o, 'fillRanges', true)
  const staleOnDisconnect = o.staleOnDisconnect === 0 ? 0 : positiveInteger(o, 'staleOnDisconnect', 3600)
  const maxHosts = positiveInteger(o, 'maxHosts', 10_000)
  return { ...base, self, maxSize, maxHostSize, maxEntrySize, fillRanges, maxHosts, hotSize, hotThreshold, store, storeTimeout, trustLoopback, staleOnDisconnect, now: opts.now ?? Date.now }
}
