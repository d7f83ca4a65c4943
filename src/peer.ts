import { HotCache } from './cache/hot-cache.js'
import { LocalCache, type CacheRequest } from './cache/local-cache.js'
import { SecondTier } from './cache/second-tier.js'
import { Store } from './cache/store.js'
import type { CallerHandler } from './dispatch/compat.js'
import type { CallerController } from './dispatch/controller.js'
import { createHandler, type NodeHandler } from './http-handler.js'
import { resolvePeerOptions, type PeerOptions, type ResolvedPeerOptions } from './options.js'
import { Router } from './router.js'
import { channels } from './observe/channels.js'
import { renderPeerMetrics } from './observe/prometheus.js'
import { PeerAddresses } from './security/peer-addresses.js'
import type { PeerStats } from './stats.js'

let warnedUnauthenticated = false

/**
 * A member of the cluster: an undici Dispatcher that serves the URLs it owns from its own
 * RFC 9111 shared cache and forwards the others to their owners, plus the HTTP handler the
 * other members reach it on.
 */
export class Peer extends Router {
  readonly #opts: ResolvedPeerOptions
  readonly #store: Store
  readonly #cache: LocalCache
  #warnedSelf = false
  #storeWarnedAt = 0
  readonly #addresses: PeerAddresses

  constructor (opts: PeerOptions) {
    const resolved = resolvePeerOptions(opts)
    super(resolved)
    this.#opts = resolved
    this.#addresses = new PeerAddresses(resolved.trustLoopback)
    this.#store = new Store({
      ...resolved,
      onEvict: (host, url, bytes) => {
        if (channels.evict.hasSubscribers) channels.evict.publish({ self: resolved.self, url, host, bytes })
      }
    })
    this.#cache = new LocalCache({
      self: resolved.self,
      store: this.#store,
      origin: this.originDispatcher,
      counters: this.counters,
      now: resolved.now,
      maxEntrySize: resolved.maxEntrySize,
      fillRanges: resolved.fillRanges,
      originTimeout: resolved.originTimeout,
      bodyTimeout: resolved.bodyTimeout,
      track: (ctl) => this.track(ctl),
      staleOnDisconnect: resolved.staleOnDisconnect,
      // A quarter of the cache may be filling in the background for ranges at once.
      rangeFillBudget: Math.floor(resolved.maxSize / 4),
      // Well under an asking peer's peerTimeout (the same option, as a pool shares it).
      rangeWaitMs: Math.max(1, Math.floor(resolved.peerTimeout / 4)),
      ...(resolved.store === undefined
        ? {}
        : {
            secondTier: new SecondTier(resolved.store, resolved.maxEntrySize, (err) => {
              // A store that is down fails every request: say so once a minute, not each time.
              const now = Date.now()
              if (now - this.#storeWarnedAt < 60_000) return
              this.#storeWarnedAt = now
              process.emitWarning(`forwardcache: second-tier store failed (requests go on without it): ${err.message}`, { code: 'FORWARDCACHE_STORE_ERROR' })
            }, resolved.storeTimeout)
          })
    })
    if (resolved.hotSize > 0) {
      this.hot = new HotCache({ maxSize: resolved.hotSize, maxEntrySize: resolved.maxEntrySize, threshold: resolved.hotThreshold, now: resolved.now, self: resolved.self })
    }
    this.onPeersChanged(resolved.peers)
  }

  override setPeers (peers: readonly string[]): void {
    super.setPeers(peers)
    this.#addresses.update(this.peers)
  }

  /** This peer's base URL, normalised. */
  get self (): string {
    return this.#opts.self
  }

  protected override onPeersChanged (peers: readonly string[]): void {
    if (!peers.includes(this.#opts.self) && !this.#warnedSelf) {
      this.#warnedSelf = true
      process.emitWarning(
        `forwardcache: the pool does not contain this peer (${this.#opts.self}); it will own no keys and forward every request`,
        { code: 'FORWARDCACHE_SELF_NOT_IN_POOL' }
      )
    }
  }

  protected override get selfUrl (): string {
    return this.#opts.self
  }

  protected override isSelf (owner: string): boolean {
    return owner === this.#opts.self
  }

  protected override serveOwned (req: CacheRequest, sink: CallerHandler, ctl: CallerController): void {
    this.#cache.serve(req, sink, ctl)
  }

  protected override invalidateOwned (url: URL): void {
    this.#cache.invalidate(url)
  }

  /**
   * The endpoint other peers forward to: `(req, res, next?)` for node:http, Express, Connect
   * or Fastify's middie. Requests outside `path` go to `next()`, or get 404 without it.
   */
  handler (): NodeHandler {
    if (this.signer === undefined && !warnedUnauthenticated) {
      warnedUnauthenticated = true
      process.emitWarning(
        'forwardcache: no opts.secret, so requests between peers are unauthenticated; handler() will serve only the pool\'s addresses and loopback',
        { code: 'FORWARDCACHE_UNAUTHENTICATED' }
      )
    }
    if (this.peers.length > 0) this.#addresses.update(this.peers)
    return createHandler({
      self: this.#opts.self,
      signer: this.signer,
      addresses: this.#addresses,
      originAllowed: this.originAllowed,
      maxRequests: this.#opts.maxHandlerRequests,
      stallMs: this.#opts.bodyTimeout,
      path: this.options.path,
      counters: this.counters,
      isClosed: () => this.closed,
      track: (ctl) => this.track(ctl),
      // Peers never send Authorization; a caller of the wire protocol that does gets what a
      // Peer's own callers get: the origin's answer, never stored, never from the store.
      serve: (req, sink, ctl) => {
        if (req.headers.authorization !== undefined) this.direct(req, sink, ctl, 'authorization')
        else this.#cache.serve(req, sink, ctl)
      },
      // A DELETE reaches every peer: the owner drops its entry, the others their hot copies.
      invalidate: (url) => {
        this.hot?.invalidate(url)
        this.#cache.invalidate(url)
      }
    })
  }

  /** Plain counters: totals since creation, plus the cache's current size. */
  stats (): PeerStats {
    const c = this.#store.counters()
    const perHost: PeerStats['perHost'] = {}
    const hostBytes = this.#store.hostBytes()
    for (const [host, row] of this.counters.hosts) perHost[host] = { ...row, bytes: hostBytes[host] ?? 0 }
    return {
      ...this.counters.values,
      cacheBytes: c.bytes,
      cacheEntries: c.entries,
      evictions: c.evictions,
      hosts: c.hosts,
      flights: this.#cache.flights + this.forwardFlights,
      hotHits: this.hot?.hits ?? 0,
      hotBytes: this.hot?.counters.bytes ?? 0,
      perHost
    }
  }

  /** The counters, gauges and latency histograms in Prometheus' text exposition format. */
  metrics (): string {
    const ejected = this.ejectedPeers
    const held = this.heldPeers.filter((p) => !ejected.includes(p)).length
    return renderPeerMetrics(this.stats(), this.counters.latency, { healthy: this.peers.length - ejected.length - held, ejected: ejected.length, held })
  }

  protected override onDestroyed (): void {
    this.hot?.clear()
    this.#store.clear()
  }
}
