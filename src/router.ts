import { stringify as stringifyQuery, type ParsedUrlQueryInput } from 'node:querystring'
import { Agent, Dispatcher } from 'undici'
import type { HotCache } from './cache/hot-cache.js'
import type { CacheRequest } from './cache/local-cache.js'
import { CACHE_NAME, coalescable, onlyIfCachedMiss, shareTest } from './cache/local-cache.js'
import { requestDirectives } from './cache/policy.js'
import { replay } from './cache/replay.js'
import { wrapCaller, type CallerHandler } from './dispatch/compat.js'
import { CallerController } from './dispatch/controller.js'
import { Fanout } from './dispatch/fanout.js'
import { FlightTable } from './dispatch/flight-table.js'
import { InFlight } from './dispatch/in-flight.js'
import { RawUpstream } from './dispatch/raw-upstream.js'
import { InvalidationDelivery } from './invalidation-delivery.js'
import { ClientClosedError, ClientDestroyedError, InvalidArgumentError } from './errors.js'
import { ERROR_HEADER, ForwardHandler, PassThroughHandler } from './forward.js'
import { loadedHash, loadedRawHash, loadHash, type RawHashFunction } from './hash.js'
import { PeerHealth } from './health.js'
import { addVia, cacheableRequestHeaders, forwardcacheHops, LOOP_MESSAGE, endToEndRequestHeaders, VIA, headerString, normaliseRequestHeaders, type RequestHeaders, type ResponseHeaders } from './headers.js'
import { LARGE_RING_POINTS, RING_BUILD_US_PER_POINT, resolvePeerList, type ResolvedRouterOptions } from './options.js'
import { PeerPools } from './pool.js'
import { Ring, type HashFunction } from './ring.js'
import { ForbiddenOriginError, guardedConnector, originMatcher } from './security/address-policy.js'
import { AUTH_HEADER, Signer } from './security/signature.js'
import { Counters } from './stats.js'
import { channels } from './observe/channels.js'
import { canonicalBytes, canonicalLength, escapePathBackslashes, normaliseOriginUrl, originBase } from './url.js'

type Handler = Dispatcher.DispatchHandler
type DispatchOptions = Dispatcher.DispatchOptions

/** A parsed target URL with the strings the cache needs from it, computed once. */
interface Target {
  readonly url: URL
  readonly key: string
  readonly host: string
  /** The ring `owner` was looked up on: a lookup on the current ring is reused, not rehashed. */
  ring: Ring | undefined
  owner: string | undefined
  /** The wire protocol's path and query for it (`{path}?q={key}`), once it has been forwarded. */
  wire: string | undefined
  /** The key of a coalesced GET of it with no Cache-Control or Pragma, once it has had one. */
  flight: string | undefined
}

// The context a Dispatcher hands to onRequestStart; nothing in it, so one for all requests.
const NO_CONTEXT = Object.freeze({})

// RFC 9110 section 9.2.1: methods that are safe never invalidate (RFC 9111 section 4.4).
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])


function isReadable (body: unknown): body is NodeJS.ReadableStream & { destroy?: () => void } {
  return typeof (body as { on?: unknown }).on === 'function' && typeof (body as { resume?: unknown }).resume === 'function'
}

/** The owner handler's answer to a request that would make a second forwardcache hop. */
function loopDetected (sink: CallerHandler, ctl: CallerController): void {
  const body = Buffer.from(`${LOOP_MESSAGE}\n`)
  replay(sink, ctl, 508, 'Loop Detected', {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(body.length),
    'cache-control': 'no-store',
    [ERROR_HEADER]: 'loop'
  }, [body])
}

/** Resolves when a GET's or HEAD's body stream ends empty; rejects at its first byte. */
function endOfEmptyBody (body: NodeJS.ReadableStream & { destroy?: () => void }, verb: string): Promise<void> {
  return new Promise((resolve, reject) => {
    body.on('data', (chunk: Buffer | string) => {
      if (chunk.length === 0) return
      reject(new InvalidArgumentError(`${verb} requests cannot have a body`))
      body.destroy?.()
    })
    body.on('end', () => resolve())
    body.on('error', reject)
    body.resume()
  })
}

function hasBody (body: unknown): boolean {
  if (body === undefined || body === null) return false
  if (typeof body === 'string') return body.length > 0
  if (body instanceof Uint8Array) return body.byteLength > 0
  return true
}

// The longest origin + path whose parsed target #url() keeps.
const MAX_REMEMBERED_URL = 2048

// What a Proxy made by Router.compose() answers with the instance it stands for.
const COMPOSED_TARGET = Symbol('forwardcache.composedTarget')

/**
 * What Peer and Client share: a Dispatcher that routes each GET/HEAD to the URL's owner on a
 * consistent-hash ring and sends everything else to the origin. Subclasses decide what
 * "owned by me" means: a Client owns nothing, a Peer serves its keys from its own cache.
 */
export abstract class Router extends Dispatcher {
  protected readonly options: ResolvedRouterOptions
  protected readonly counters = new Counters()
  protected readonly originDispatcher: Dispatcher
  readonly #ownsOrigin: boolean
  /** Signs requests to peers and checks them in handler(); undefined without a secret. */
  protected readonly signer: Signer | undefined
  /** The opts.origins allowlist as a predicate. */
  protected readonly originAllowed: (url: URL) => boolean
  readonly #pools: PeerPools
  readonly #health: PeerHealth
  // Pool-wide DELETEs, and their delivery to peers that missed them or failed to get them.
  readonly #delivery: InvalidationDelivery
  #peers: string[]
  #ring: Ring | undefined
  #hash: HashFunction | undefined
  // The same hash over UTF-8 bytes (the default hash only; an injected one hashes strings).
  #rawHash: RawHashFunction | undefined
  #closed = false
  #destroyed = false
  readonly #inFlight = new InFlight()
  // One object for every request's end, instead of a closure per request.
  readonly #completion = { finished: (ctl: Dispatcher.DispatchController | null): void => { this.#finished(ctl as CallerController | null) } }
  // Forwards in flight, by method and URL, that later identical requests may still join.
  readonly #forwards = new FlightTable<Fanout>()
  // The owner each coalesced forward failed at, for its joiners' retries.
  readonly #failedForwards = new WeakMap<Fanout, string>()
  #idle: Array<() => void> = []
  #warnedLargeRing = false

  /** Resolves once the ring's hash is loaded; dispatches made before then wait for it. */
  readonly ready: Promise<void>

  constructor (options: ResolvedRouterOptions) {
    super()
    this.options = options
    this.#peers = options.peers
    this.#checkRingSize(options.peers.length)
    this.#ownsOrigin = options.origin === undefined
    this.originDispatcher = options.origin ?? new Agent({
      connect: guardedConnector({ timeout: options.originConnectTimeout, blockPrivate: options.blockPrivateOrigins }),
      headersTimeout: options.originTimeout,
      bodyTimeout: options.bodyTimeout
    })
    this.signer = options.secrets.length > 0 ? new Signer(options.secrets, options.authWindow, Date.now) : undefined
    const allowlist = options.origins === undefined ? undefined : originMatcher(options.origins)
    this.originAllowed = allowlist ?? (() => true)
    this.#pools = new PeerPools({
      connectTimeout: options.peerConnectTimeout,
      headersTimeout: options.peerTimeout,
      bodyTimeout: options.bodyTimeout
    })
    this.#delivery = new InvalidationDelivery({
      send: (peer, key) => this.#sendDelete(peer, key),
      counters: this.counters,
      ejectAfter: options.ejectAfter,
      ejectBackoff: options.ejectBackoff,
      invalidationLogSize: options.invalidationLogSize,
      isSelf: (peer) => this.isSelf(peer),
      peers: () => this.#peers,
      isEjected: (peer) => this.#health.isEjected(peer),
      onHeldChanged: () => this.#rebuildRing(),
      self: () => this.selfUrl
    })
    this.#health = new PeerHealth({
      ejectAfter: options.ejectAfter,
      backoff: options.ejectBackoff,
      maxBackoff: 30_000,
      probe: (peer) => this.#probe(peer),
      onChange: () => this.#rebuildRing(),
      onReadmitted: (peer) => this.#delivery.readmitted(peer)
    })
    this.#hash = options.hash ?? loadedHash()
    if (options.hash === undefined) this.#rawHash = loadedRawHash()
    if (this.#hash !== undefined) {
      this.#rebuildRing()
      this.ready = Promise.resolve()
    } else {
      this.ready = loadHash().then((hash) => {
        this.#hash = hash
        this.#rawHash = loadedRawHash()
        this.#rebuildRing()
      })
    }
  }

  /**
   * Routing uses the pool minus the peers ejected for failing and those still being sent the
   * invalidations they missed; removing a member from a consistent-hash ring moves only that
   * member's keys.
   */
  #rebuildRing (): void {
    if (this.#hash === undefined) return
    const ejected = this.#health.ejected()
    const delivery = this.#delivery
    const members = ejected.size === 0 && !delivery.holding ? this.#peers : this.#peers.filter((p) => this.isSelf(p) || (!ejected.has(p) && !delivery.holds(p)))
    this.#ring = new Ring(members, this.options.vnodes, this.#hash)
  }

  /** A peer is healthy when its handler answers like one (a 400 for a request without q). */
  async #probe (peer: string): Promise<boolean> {
    try {
      const { pool, basePath } = this.#pools.get(peer)
      const res = await pool.request({
        path: `${basePath}${this.options.path}`,
        method: 'GET',
        headersTimeout: this.options.peerTimeout,
        bodyTimeout: this.options.peerTimeout
      })
      await res.body.dump()
      // A request without q is what a working owner refuses as missing-q. Any other answer
      // (closing, not-found on another path, forbidden-peer for this address) keeps it out.
      return res.headers[ERROR_HEADER] === 'missing-q'
    } catch {
      return false
    }
  }

  /** Peers taken out of routing for failing, until a probe readmits them. */
  get ejectedPeers (): string[] {
    return [...this.#health.ejected()].sort()
  }

  /**
   * Peers of the pool kept off this instance's ring, though not ejected, while they are sent
   * the invalidations they missed (back in the pool) or that failed to reach them (readmitted
   * after ejection): they take their keys back once those are sent. Sorted.
   */
  get heldPeers (): string[] {
    return [...this.#delivery.held()].sort()
  }

  /** The pool, normalised and sorted (ejected and held peers included). */
  get peers (): readonly string[] {
    return [...this.#peers].sort()
  }

  /**
   * Replaces the pool. The new ring is built whole and swapped in one assignment, so every
   * request is routed by either the old pool or the new one, never a mix.
   *
   * A peer that comes back (left the pool, by this call or by DNS discovery, and is in it
   * again) is sent the invalidations it missed while it was out, in the background, and joins
   * the ring once they have been sent: until then its keys stay with the peers that had them.
   */
  setPeers (peers: readonly string[]): void {
    const list = resolvePeerList(peers, 'peers', this.options.vnodes)
    this.#checkRingSize(list.length)
    this.onPeersChanged(list)
    const keep = new Set(list)
    const startReplays = this.#delivery.poolChanging(new Set(this.#peers), keep)
    this.#peers = list
    this.#health.retain(keep)
    this.#rebuildRing()
    this.#pools.retain(keep)
    startReplays()
  }

  /** Warns once per instance of a ring whose every rebuild would hold the event loop. */
  #checkRingSize (peers: number): void {
    const points = peers * this.options.vnodes
    if (points <= LARGE_RING_POINTS || this.#warnedLargeRing) return
    this.#warnedLargeRing = true
    const seconds = (points * RING_BUILD_US_PER_POINT / 1e6).toFixed(1)
    process.emitWarning(
      `forwardcache: a ring of ${points} points (${peers} peers × ${this.options.vnodes} vnodes) takes about ${seconds} s to build, ` +
      'on the event loop, at every pool change, ejection and readmission; fewer opts.vnodes keep it short',
      { code: 'FORWARDCACHE_LARGE_RING' }
    )
  }

  /** Hook for subclasses to check a new pool before it is used. */
  protected onPeersChanged (_peers: readonly string[]): void {}

  /**
   * The base URL of the peer that owns `url` (normalised as the cache key is), or undefined
   * when the pool is empty. Throws until `ready` has resolved, and for URLs that are not
   * absolute http(s) URLs.
   */
  ownerOf (url: string | URL): string | undefined {
    const ring = this.#ring
    if (ring === undefined) throw new Error('the hash is still loading: await peer.ready before calling ownerOf()')
    const n = typeof url === 'string' ? canonicalLength(url) : -1
    if (n < 0) return ring.get(normaliseOriginUrl(url).href)
    // A canonical URL is its own key: the bytes the check just read are hashed as they are,
    // instead of being encoded once more by the string hash (an injected hash takes strings).
    return this.#rawHash !== undefined ? ring.getByHash(this.#rawHash(canonicalBytes(n)) >>> 0) : ring.get(url as string)
  }

  /** This instance's URL for diagnostics ('' for a Client). */
  protected get selfUrl (): string {
    return ''
  }

  /** Copies of hot keys owned by other peers (Peer only). */
  protected hot: HotCache | undefined

  /** True when this instance serves `owner`'s keys itself. */
  protected abstract isSelf (owner: string): boolean

  /** Serves a GET/HEAD whose owner is this instance (or that no peer owns). */
  protected abstract serveOwned (req: CacheRequest, sink: CallerHandler, ctl: CallerController): void

  /** Drops stored responses for a URL this instance owns. */
  protected abstract invalidateOwned (url: URL): void

  /**
   * undici's Dispatcher entry point. GET and HEAD go to the owner of their URL (this
   * instance's cache, or the owning peer); requests with Authorization and other methods go
   * to the origin. Accepts handlers of both undici contracts. Never throws after validating
   * its arguments: errors (InvalidArgumentError, ClientClosedError, ...) go to the handler.
   */
  override dispatch (opts: DispatchOptions, handler: Handler): boolean {
    if (handler === null || typeof handler !== 'object') throw new InvalidArgumentError('handler must be an object')
    const isObject = opts !== null && typeof opts === 'object'
    let origin: unknown, path: unknown, method: unknown, headers: unknown, body: unknown, query: unknown, upgrade: unknown
    if (isObject) {
      if (Object.getPrototypeOf(opts) === Object.prototype) {
        // undici's request() and stream() build opts with an object spread, and in V8 11 (Node
        // 20) every such object gets a hidden class of its own once request() is optimised:
        // each property read by name misses the inline caches and costs a runtime lookup
        // (~70 ns a name, 7 names here). Object.assign copies the fields in one call into an
        // object of one stable shape, which is then read through the inline caches: about
        // half the cost of a for-in walk (~120 against ~250-350 ns), which was itself half
        // the cost of reading by name. It takes own enumerable fields, as undici's own spread
        // does.
        const fields = Object.assign({
          origin: undefined as unknown,
          path: undefined as unknown,
          method: undefined as unknown,
          headers: undefined as unknown,
          body: undefined as unknown,
          query: undefined as unknown,
          upgrade: undefined as unknown
        }, opts)
        origin = fields.origin
        path = fields.path
        method = fields.method
        headers = fields.headers
        body = fields.body
        query = fields.query
        upgrade = fields.upgrade
      } else {
        ({ origin, path, method, headers, body, query, upgrade } = opts)
      }
    }
    // Upgrades (WebSocket, through setGlobalDispatcher as well) and CONNECT are tunnels, not
    // cacheable exchanges: they go to the origin untouched, with the caller's own handler.
    if (isObject && !this.#closed && ((upgrade !== undefined && upgrade !== null && upgrade !== false) || method === 'CONNECT')) {
      // The origins allowlist holds for tunnels as for every other request.
      const tunnelOrigin = typeof origin === 'string' ? origin : (origin as { origin?: unknown } | undefined)?.origin
      let target: URL | undefined
      try { target = new URL(String(tunnelOrigin)) } catch {}
      if (target === undefined || this.originAllowed(target)) return this.originDispatcher.dispatch(opts, handler)
      const refused = wrapCaller(handler, this.#completion)
      refused.onResponseError(refused, new ForbiddenOriginError(target.origin))
      return false
    }
    const sink = wrapCaller(handler, this.#completion)
    const ctl: CallerController = sink
    try {
      if (this.#destroyed) throw new ClientDestroyedError()
      if (this.#closed) throw new ClientClosedError()
      if (!isObject) throw new InvalidArgumentError('opts must be an object')
      if (typeof path !== 'string' || !path.startsWith('/')) throw new InvalidArgumentError('opts.path must start with "/"')
      if (typeof method !== 'string' || method === '') throw new InvalidArgumentError('opts.method must be a string')
      if (origin === undefined || origin === null) throw new InvalidArgumentError('opts.origin is required')
      // CR, LF, NUL and other controls in the path are refused by normaliseOriginUrl.
      // A URL is read whole (href), as undici reads it: one with a path, query or fragment is
      // refused by originBase() below, not cut down to its origin.
      const originString = typeof origin === 'string'
        ? origin
        : origin instanceof URL ? origin.href : (origin as { origin?: unknown }).origin
      if (typeof originString !== 'string') throw new InvalidArgumentError('opts.origin must be a string or a URL')
      if (query !== undefined && query !== null) {
        // As undici serialises opts.query (node:querystring, core/util.js serializePathWithQuery):
        // a space is %20, an array one pair per element, null and undefined empty values.
        // URLSearchParams wrote + (a plus sign to RFC 3986, not a space), a=1%2C2 and a=null:
        // the origin was asked for something else than undici would have asked it.
        // After a fragment the query would be dropped with it; undici refuses that too.
        if (path.includes('#')) throw new InvalidArgumentError('opts.query cannot be used with a path that has a fragment')
        // A URLSearchParams (which node:querystring would read as no fields at all) keeps its
        // own serialisation.
        const qs = query instanceof URLSearchParams ? query.toString() : stringifyQuery(query as ParsedUrlQueryInput)
        if (qs !== '') path += (path.includes('?') ? '&' : '?') + qs
      }
      const target = this.#url(originString, path)
      const url = target.url
      if (!this.originAllowed(url)) throw new ForbiddenOriginError(url.origin)
      const verb = method === 'GET' || method === 'HEAD' ? method : method.toUpperCase()
      const requestHeaders = endToEndRequestHeaders(normaliseRequestHeaders(headers))
      this.#inFlight.add(ctl)
      sink.onRequestStart(ctl, NO_CONTEXT)
      if (verb === 'GET' || verb === 'HEAD') {
        let bodyChecked: Promise<void> | undefined
        if (hasBody(body)) {
          // undici's pipeline() hands every request a body stream, a GET's too: an empty one is
          // no body. The request waits for the stream's end, and a byte in it fails the
          // request before anything is sent anywhere.
          if (!isReadable(body)) throw new InvalidArgumentError(`${verb} requests cannot have a body`)
          bodyChecked = endOfEmptyBody(body, verb)
          // A caller that gives up while the stream has not ended is answered at once.
          ctl.attach({ pause () {}, resume () {}, abort (reason) { body.destroy?.(); sink.onResponseError(ctl, reason) } })
        }
        this.counters.values.requests++
        const req: CacheRequest = {
          method: verb,
          url,
          key: target.key,
          host: target.host,
          headers: cacheableRequestHeaders(requestHeaders),
          directives: requestDirectives(requestHeaders['cache-control'])
        }
        // Credentials never travel between peers and never key a shared entry: such requests
        // go straight to the origin from here.
        const bypass = requestHeaders.authorization !== undefined
        if (bodyChecked === undefined && (bypass || this.#ring !== undefined)) {
          if (bypass) this.direct(req, sink, ctl, 'authorization')
          else this.#route(req, target, sink, ctl)
        } else {
          // Waiting for the ring's hash to load, or for a body stream to end empty. A caller that
          // gives up meanwhile, or a destroy(), is answered at once, not once the hash has
          // loaded: destroy() would otherwise resolve with its requests still unanswered.
          if (bodyChecked === undefined) ctl.attach({ pause () {}, resume () {}, abort (reason) { sink.onResponseError(ctl, reason) } })
          Promise.all([bypass ? undefined : this.ready, bodyChecked]).then(
            () => bypass ? this.direct(req, sink, ctl, 'authorization') : this.#route(req, target, sink, ctl),
            (err: Error) => sink.onResponseError(ctl, err))
        }
      } else {
        this.#passThrough(opts, url, verb, requestHeaders, sink, ctl)
      }
    } catch (err) {
      sink.onResponseError(ctl, err as Error)
      return false
    }
    return true
  }

  /**
   * undici's compose(), with this instance's own methods still usable on what it returns.
   * undici returns a Proxy whose other properties are read off the instance unbound: called
   * through the Proxy, close(), destroy(), stats() and the rest would run with the Proxy as
   * `this`, and this class's private fields are not on the Proxy.
   */
  override compose (dispatchers: Dispatcher.DispatcherComposeInterceptor[]): Dispatcher.ComposedDispatcher
  override compose (...dispatchers: Dispatcher.DispatcherComposeInterceptor[]): Dispatcher.ComposedDispatcher
  override compose (...args: unknown[]): Dispatcher.ComposedDispatcher {
    // `this` is the instance, or a Proxy made here when compose() is chained: undici's
    // compose() then builds on that Proxy's dispatch, so earlier interceptors stay in.
    const composed = (super.compose as (...a: unknown[]) => Dispatcher.ComposedDispatcher)(...args)
    const dispatch = composed.dispatch
    const instance = (this as unknown as Record<symbol, Router | undefined>)[COMPOSED_TARGET] ?? this
    const proxy: Dispatcher.ComposedDispatcher = new Proxy(instance, {
      get: (target, key) => {
        if (key === 'dispatch') return dispatch
        if (key === COMPOSED_TARGET) return target
        if (key === 'compose') return (...more: unknown[]) => (Router.prototype.compose as (...a: unknown[]) => Dispatcher.ComposedDispatcher).apply(proxy, more)
        const value: unknown = Reflect.get(target, key, target)
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      }
    }) as unknown as Dispatcher.ComposedDispatcher
    return proxy
  }

  // Parsed target URLs by their raw spelling: parsing and normalising a URL costs more than
  // the rest of a cache hit, and callers ask for the same few URLs over and over.
  // Keyed by origin, then path, so a hit needs no string concatenation.
  #urls = new Map<string, Map<string, Target>>()
  #urlCount = 0

  // Callers mostly talk to one origin at a time: comparing with the last one is cheaper than
  // hashing a fresh origin string for the map.
  #lastOrigin = ''
  #lastPaths: Map<string, Target> | undefined

  #url (origin: string, path: string): Target {
    let paths: Map<string, Target> | undefined
    if (origin === this.#lastOrigin) {
      paths = this.#lastPaths
    } else {
      // Written only when the origin changes: a hit on the same origin stores nothing.
      paths = this.#urls.get(origin)
      if (paths !== undefined) {
        this.#lastOrigin = origin
        this.#lastPaths = paths
      }
    }
    let target = paths?.get(path)
    if (target !== undefined) return target
    const url = normaliseOriginUrl(originBase(origin) + (path.includes('\\') ? escapePathBackslashes(path) : path))
    target = { url, key: url.href, host: url.host, ring: undefined, owner: undefined, wire: undefined, flight: undefined }
    // Only URLs of ordinary length are remembered, as handler() remembers its targets: the
    // table holds each one several times over (the path, the key, the URL), and 4096 URLs of
    // a megabyte each (a caller that fetches URLs it is given) took gigabytes of heap.
    if (origin.length + path.length > MAX_REMEMBERED_URL) return target
    if (this.#urlCount >= 4096) {
      this.#urls.clear()
      this.#urlCount = 0
      this.#lastOrigin = ''
      this.#lastPaths = undefined
      paths = undefined
    }
    if (paths === undefined) {
      paths = new Map()
      this.#urls.set(origin, paths)
      this.#lastOrigin = origin
      this.#lastPaths = paths
    }
    paths.set(path, target)
    this.#urlCount++
    return target
  }

  /** The owner of a target on the ring as it is now; a lookup on the same ring is reused. */
  #ownerOf (target: Target): string | undefined {
    const ring = this.#ring as Ring
    if (target.ring !== ring) {
      target.owner = ring.get(target.key)
      target.ring = ring
    }
    return target.owner
  }

  #route (req: CacheRequest, target: Target, sink: CallerHandler, ctl: CallerController): void {
    if (ctl.aborted) return sink.onResponseError(ctl, ctl.reason as Error)
    // One hop, whichever peer owns the URL: a request that has been through forwardcache
    // already (an origin that fetches through the cluster and passes Via on) gets the 508 the
    // owner's handler gives a second hop, not an answer only when this peer is the owner.
    if (req.headers.via !== undefined && forwardcacheHops(req.headers.via) >= 1) return loopDetected(sink, ctl)
    const owner = this.#ownerOf(target)
    if (owner === undefined || this.isSelf(owner)) {
      this.serveOwned(req, sink, ctl)
      return
    }
    let hot = false
    if (this.hot !== undefined) {
      if (this.hot.tryServe(req, sink, ctl)) return
      hot = this.hot.count(req)
    }
    const wire = target.wire ??= this.#wirePath(target.key)
    if (coalescable(req)) {
      // At most one forward per key in flight from this peer: identical requests that arrive
      // before its response starts share it. Identical includes what they ask of the owner's
      // cache: a no-cache or max-age=0 request must not be handed an answer to a request that
      // took a stored or stale response, nor the other way round (RFC 9111 section 5.2.1).
      const cc = req.headers['cache-control']
      const pragma = req.headers.pragma
      // Made once per URL for the usual case: a flat string whose hash is kept, not a
      // concatenation to flatten and hash on every forward.
      const flightKey = cc === undefined && pragma === undefined
        ? req.method === 'GET' ? target.flight ??= `GET ${req.key}` : `${req.method} ${req.key}`
        : `${req.method} ${req.key}\n${cc ?? ''}\n${pragma ?? ''}`
      const existing = this.#forwards.get(flightKey)
      if (existing !== undefined && existing.join(sink, ctl, () => this.#retry(req, target, sink, ctl, existing), req.headers)) {
        this.counters.add('coalescedWaits')
        return
      }
      const fanout: Fanout = new Fanout(shareTest(req), {
        onSettled: () => { if (this.#forwards.get(flightKey) === fanout) this.#forwards.delete(flightKey) },
        stallMs: this.options.bodyTimeout
      })
      fanout.join(sink, ctl, () => {}, req.headers, true)
      this.#forwards.set(flightKey, fanout)
      this.#forward(owner, wire, req, fanout, fanout.ctl, hot)
      return
    }
    this.#forward(owner, wire, req, sink, ctl, hot)
  }

  /**
   * Sends a joiner its flight could not share on its own, to the owner on the ring as it is
   * now: the pool may have changed while it waited, and a peer that has left it must not get
   * a new connection (a Pool that nothing would close until the next setPeers).
   */
  #retry (req: CacheRequest, target: Target, sink: CallerHandler, ctl: CallerController, flight: Fanout): void {
    const owner = this.#ownerOf(target)
    if (owner === undefined || this.isSelf(owner)) return this.serveOwned(req, sink, ctl)
    // The flight's forward to this owner has just failed, and the leader went to the origin.
    // Sent to it again, each joiner would wait for the same failure (a connect or peerTimeout
    // each) and count it once more towards ejection: three callers of one URL sharing one
    // failed forward ejected the owner at the default ejectAfter.
    if (this.#failedForwards.get(flight) === owner) return this.direct(req, sink, ctl, 'owner-unavailable')
    this.#forward(owner, target.wire ??= this.#wirePath(target.key), req, sink, ctl, false)
  }

  /** The wire protocol's path and query asking an owner for `key`, less the owner's base path. */
  #wirePath (key: string): string {
    return `${this.options.path}?q=${encodeURIComponent(key)}`
  }

  #forward (owner: string, wire: string, req: CacheRequest, sink: CallerHandler, ctl: CallerController, hot: boolean): void {
    // The owner's answers are copied hot, never the origin's answer to a fallback: that one
    // the owner has not seen, let alone judged storable.
    const caller = sink
    if (hot && this.hot !== undefined) sink = this.hot.recorder(req, sink)
    this.counters.add('forwards')
    if (channels.forward.hasSubscribers) channels.forward.publish({ self: this.selfUrl, url: req.key, owner })
    const { pool, basePath } = this.#pools.get(owner)
    const started = performance.now()
    const handler = new ForwardHandler(sink, ctl, (err, peerFault) => {
      if (caller instanceof Fanout) this.#failedForwards.set(caller, owner)
      this.counters.add('forwardErrors')
      if (channels.forwardError.hasSubscribers) channels.forwardError.publish({ self: this.selfUrl, url: req.key, owner, error: err })
      // A peer that left the pool while this forward was in flight is no one's to eject.
      if (peerFault && this.#peers.includes(owner)) this.#health.failure(owner)
      this.direct(req, caller, ctl, 'owner-unavailable')
    }, () => {
      this.counters.latency.peer.observe((performance.now() - started) / 1000)
      this.#health.success(owner)
      // The owner answers: what failed to reach it earlier can be sent now.
      if (this.#delivery.owing) this.#delivery.answered(owner)
    }, this.options.peerTimeout)
    try {
      pool.dispatch({
        path: basePath === '' ? wire : basePath + wire,
        method: req.method,
        headers: this.#signed(req.method, req.key, owner, addVia({ ...req.headers })),
        headersTimeout: this.options.peerTimeout,
        bodyTimeout: this.options.bodyTimeout,
        // undici closes the connection after every HEAD, in case a server sends a body after
        // all; the owner is a forwardcache handler on node:http, which never does. Without
        // this, every HEAD forwarded to a peer cost a new connection.
        ...(req.method === 'HEAD' ? { reset: false } : {})
      }, new RawUpstream(handler))
    } catch (err) {
      handler.onResponseError(null, err as Error)
    }
  }

  #signed (method: string, url: string, audience: string, headers: RequestHeaders): RequestHeaders {
    if (this.signer !== undefined) headers[AUTH_HEADER] = this.signer.sign(method, url, audience)
    else delete headers[AUTH_HEADER]
    return headers
  }

  /** Fetches from the origin without the cache, marking why in Cache-Status. */
  protected direct (req: CacheRequest, sink: CallerHandler, ctl: CallerController, why: string): void {
    // Nothing from here on comes from a cache: a request that takes only stored responses
    // gets the 504 the owner would have given it.
    if (req.directives.has('only-if-cached')) return onlyIfCachedMiss(sink, ctl)
    this.counters.add('originFetches')
    const started = performance.now()
    const handler = new PassThroughHandler(sink, ctl, {
      onHeaders: () => this.counters.latency.origin.observe((performance.now() - started) / 1000),
      cacheStatus: `${CACHE_NAME}; fwd=bypass; detail=${why}`,
      headersTimeout: this.options.originTimeout,
      rawHeadersMatch: this.#ownsOrigin
    })
    try {
      this.originDispatcher.dispatch({
        origin: req.url.origin,
        path: req.url.pathname + req.url.search,
        method: req.method,
        headers: addVia({ ...req.headers }),
        headersTimeout: this.options.originTimeout,
        bodyTimeout: this.options.bodyTimeout
      }, handler)
    } catch (err) {
      handler.onResponseError(null, err as Error)
    }
  }

  #passThrough (opts: DispatchOptions, url: URL, method: string, headers: RequestHeaders, sink: CallerHandler, ctl: CallerController): void {
    this.counters.add('passThrough')
    this.counters.add('originFetches')
    const unsafe = !SAFE_METHODS.has(method)
    const started = performance.now()
    const headersTimeout = opts.headersTimeout ?? this.options.originTimeout
    // undici starts its headers timer again at every interim (1xx) response, so an origin
    // that sends 102s or 103s every few seconds and never a final answer would hold the caller
    // for good. Without a body to upload, the whole wait is for headers, and a deadline on it
    // is what headersTimeout means. With a body it would also count the upload, and is left
    // to undici (0 turns the wait off, as in undici).
    const bodyless = opts.body === undefined || opts.body === null
    const handler = new PassThroughHandler(sink, ctl, {
      onHeaders: () => this.counters.latency.origin.observe((performance.now() - started) / 1000),
      cacheStatus: `${CACHE_NAME}; fwd=method`,
      rawHeadersMatch: this.#ownsOrigin,
      ...(bodyless && headersTimeout > 0 ? { headersTimeout } : {}),
      onStatus: (status, resHeaders) => {
        // RFC 9111 section 4.4: a non-error response to an unsafe method invalidates the URL,
        // and the Location and Content-Location URLs when they share its origin.
        if (unsafe && status < 400) return this.#invalidateAfterUnsafe(url, resHeaders)
      }
    })
    const { query: _query, ...rest } = opts
    try {
      this.originDispatcher.dispatch({
        ...rest,
        // The peer's origin timeouts, unless the caller set its own for this request. They
        // are per-request options, so they hold for an origin Dispatcher of the user's too.
        headersTimeout,
        bodyTimeout: rest.bodyTimeout ?? this.options.bodyTimeout,
        origin: url.origin,
        path: url.pathname + url.search,
        headers: addVia({ ...headers })
      }, handler)
    } catch (err) {
      handler.onResponseError(null, err as Error)
    }
  }

  #invalidateAfterUnsafe (url: URL, headers: ResponseHeaders): Promise<void> | undefined {
    const targets = [url]
    for (const name of ['location', 'content-location']) {
      const value = headerString(headers, name)
      if (value === undefined) continue
      try {
        const other = normaliseOriginUrl(new URL(value, url))
        if (other.origin === url.origin && other.href !== url.href) targets.push(other)
      } catch {}
    }
    const remote: Array<Promise<void>> = []
    for (const target of targets) {
      const done = this.invalidate(target)
      if (done !== undefined) remote.push(done)
    }
    return remote.length === 0 ? undefined : Promise.all(remote).then(() => {})
  }

  /**
   * Drops a URL's stored responses everywhere in the pool: on its owner, and on every other
   * peer, which may hold a hot copy of it, or an entry from when it owned the URL (before a
   * pool change, or while the owner was ejected: an owner taken out of the ring for a while
   * would otherwise keep serving what it stored before the change once it is back). Returns a
   * promise that settles when the owner has answered (or failed to within peerTimeout), or
   * undefined when this peer owns the URL; it never rejects. The others are not waited for:
   * one that is down would hold every unsafe request for up to peerTimeout.
   */
  protected invalidate (url: URL): Promise<void> | undefined {
    this.hot?.invalidate(url)
    this.invalidateOwned(url)
    return this.#delivery.invalidate(url.href, this.#ring?.get(url.href))
  }

  /** Sends a peer the signed DELETE that invalidates `key` there: true when it answered 2xx; never rejects. */
  #sendDelete (peer: string, key: string): Promise<boolean> {
    const { pool, basePath } = this.#pools.get(peer)
    return pool.request({
      path: `${basePath}${this.options.path}?q=${encodeURIComponent(key)}`,
      method: 'DELETE',
      headers: this.#signed('DELETE', key, peer, { via: VIA }),
      headersTimeout: this.options.peerTimeout,
      bodyTimeout: this.options.peerTimeout
    }).then(async (res) => {
      await res.body.dump()
      return res.statusCode >= 200 && res.statusCode < 300
    }).catch(() => false)
  }

  /** Registers a request served on handler() so close() waits for it too. */
  protected track (ctl: CallerController): () => void {
    this.#inFlight.add(ctl)
    return () => this.#finished(ctl)
  }

  #finished (ctl: CallerController | null): void {
    this.#inFlight.delete(ctl)
    if (this.#inFlight.size === 0 && this.#idle.length > 0) {
      const waiting = this.#idle
      this.#idle = []
      for (const resolve of waiting) resolve()
    }
  }

  /** Requests in flight right now: for tests and stats. */
  get inFlight (): number {
    return this.#inFlight.size
  }

  /** Keys with a coalesced forward in flight from this peer. */
  protected get forwardFlights (): number {
    return this.#forwards.size
  }

  /** True once close() or destroy() has been called: new requests are refused. */
  get closed (): boolean { return this.#closed }
  /** True once destroy() has been called. */
  get destroyed (): boolean { return this.#destroyed }

  /** Rejects new requests with ClientClosedError once called; resolves when in-flight ones end. */
  override close (): Promise<void>
  override close (callback: () => void): void
  override close (callback?: () => void): Promise<void> | void {
    // Checked before anything changes, as undici does: a bad call must not half-close.
    if (callback !== undefined && typeof callback !== 'function') throw new InvalidArgumentError('invalid callback')
    const done = this.#close()
    if (callback === undefined) return done
    done.then(() => callback(), () => callback())
  }

  async #close (): Promise<void> {
    this.#closed = true
    this.#health.close()
    this.#delivery.close()
    if (this.#inFlight.size > 0) await new Promise<void>((resolve) => this.#idle.push(resolve))
    await this.#pools.close()
    if (this.#ownsOrigin) await this.originDispatcher.close().catch(() => {})
  }

  /** Fails in-flight requests (with `err`, or ClientDestroyedError) and releases everything. */
  override destroy (): Promise<void>
  override destroy (err: Error | null): Promise<void>
  override destroy (callback: () => void): void
  override destroy (err: Error | null, callback: () => void): void
  override destroy (errOrCallback?: Error | null | (() => void), callback?: () => void): Promise<void> | void {
    let err: Error | null = null
    if (typeof errOrCallback === 'function') callback = errOrCallback
    else if (errOrCallback instanceof Error) err = errOrCallback
    if (callback !== undefined && typeof callback !== 'function') throw new InvalidArgumentError('invalid callback')
    const done = this.#destroy(err ?? new ClientDestroyedError())
    if (callback === undefined) return done
    done.then(() => callback(), () => callback())
  }

  async #destroy (err: Error): Promise<void> {
    this.#closed = true
    this.#destroyed = true
    this.#health.close()
    this.#delivery.close()
    for (const ctl of this.#inFlight.toArray()) ctl.abort(err)
    await this.#pools.destroy(err)
    if (this.#ownsOrigin) await this.originDispatcher.destroy(err).catch(() => {})
    this.onDestroyed()
  }

  /** Hook for subclasses to release what they hold. */
  protected onDestroyed (): void {}
}
